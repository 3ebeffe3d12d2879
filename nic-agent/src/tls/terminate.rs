//! TLS termination for programs that speak plain text (issue 13, item 2): a listener on a port
//! the agent was told to terminate (`--tls-port`) is TLS on the wire; the agent runs the
//! handshake and the record layer with the certificate and key it holds (rustls, TLS 1.2 and
//! 1.3, ALPN), and the host program (redis, memcached, an HTTP server without TLS) reads and
//! writes plain bytes through its ordinary socket. Keys never leave the agent.
//!
//! Sans-IO: [`Session`] is one connection's TLS state; the caller (`sock::pump_rx_tls`,
//! `sock::pump_tx_tls`) feeds it ciphertext received from the backend, takes plaintext for the
//! RX stream, gives it plaintext from the TX stream, and writes its ciphertext to the backend.
//!
//! ```text
//!   backend recv ─ciphertext─► Session::feed ──► Session::read_plain ─► RX stream (host reads)
//!   backend send ◄─ciphertext─ Session::write_tls ◄── Session::write_plain ◄─ TX stream (host)
//! ```
//!
//! Bounded memory: the caller feeds at most as much ciphertext as the RX stream has room for
//! plaintext (a record's plaintext is never longer than its ciphertext), so rustls's received
//! plaintext never piles up; its outgoing buffer is limited to [`SEND_LIMIT`] and the caller
//! stops taking bytes from the TX stream while it is full.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection};

/// Plaintext rustls may hold for sending (sealed, not yet written to the backend).
pub const SEND_LIMIT: usize = 256 * 1024;

/// The server configuration from certificate chains and keys (PEM files, in pairs), read once
/// at start-up. With several, a client's SNI picks the first certificate valid for the name it
/// asked for; the first pair answers clients that name none or a name no certificate has. Errors
/// name the file and what is wrong with it, including a key that does not belong to its
/// certificate.
pub fn server_config(
    certs: &[PathBuf],
    keys: &[PathBuf],
    alpn: &[String],
) -> anyhow::Result<Arc<ServerConfig>> {
    if certs.is_empty() || certs.len() != keys.len() {
        return Err(anyhow!(
            "--tls-cert and --tls-key: give them in pairs ({} certificates, {} keys)",
            certs.len(),
            keys.len()
        ));
    }
    // (`ring`'s provider, as the brief asks for: rustls deprecates it for lacking post-quantum
    // key exchange, which aws-lc-rs would add at the cost of a C build on the NIC.)
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut pairs = Vec::new();
    for (cert, key) in certs.iter().zip(keys) {
        pairs.push(Arc::new(certified_key(cert, key, &provider)?));
    }
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni(pairs)));
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(cfg))
}

fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("--tls-cert {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("--tls-cert {}: not a PEM certificate chain", cert.display()))?;
    if chain.is_empty() {
        return Err(anyhow!(
            "--tls-cert {}: no certificate in it",
            cert.display()
        ));
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("--tls-key {}: no PEM private key in it", key.display()))?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .with_context(|| format!("--tls-key {}: not a supported key type", key.display()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|_| {
        anyhow!(
            "--tls-cert {} and --tls-key {}: the key does not match the certificate",
            cert.display(),
            key.display()
        )
    })?;
    Ok(ck)
}

/// Picks the certificate by the client's SNI (the first valid for the name), else the first.
#[derive(Debug)]
struct BySni(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello.server_name().and_then(|name| {
            let name = ServerName::try_from(name).ok()?;
            self.0.iter().find(|ck| {
                ck.cert.first().is_some_and(|ee| {
                    webpki::EndEntityCert::try_from(ee)
                        .is_ok_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok())
                })
            })
        });
        chosen.or_else(|| self.0.first()).cloned()
    }
}

/// Why a session ended with an error.
pub fn errno_of(e: &rustls::Error) -> i32 {
    match e {
        // The peer broke TLS (bad record MAC, unexpected message, ...) or refused ours: the
        // connection is reset for the host program, as a TCP reset would be.
        rustls::Error::AlertReceived(_) => libc::ECONNRESET,
        _ => libc::EPROTO,
    }
}

/// One terminated connection.
pub struct Session {
    conn: ServerConnection,
    /// The peer's stream ended (close_notify, or TCP EOF).
    eof: bool,
    /// We queued close_notify.
    notified: bool,
    /// The handshake's completion was reported ([`Session::handshake_done`]).
    reported: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("handshaking", &self.conn.is_handshaking())
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

/// What reading plaintext found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plain {
    /// `n` bytes.
    Bytes(usize),
    /// Nothing now: more ciphertext is needed.
    Empty,
    /// The peer's stream ended (close_notify, or a TCP close after whole records).
    End,
}

impl Session {
    pub fn new(cfg: &Arc<ServerConfig>) -> Result<Session, rustls::Error> {
        let mut conn = ServerConnection::new(cfg.clone())?;
        conn.set_buffer_limit(Some(SEND_LIMIT));
        Ok(Session {
            conn,
            eof: false,
            notified: false,
            reported: false,
        })
    }

    /// Ciphertext received from the peer (`cipher` empty: the TCP stream ended). An error
    /// means the peer broke TLS: an alert is queued ([`Session::write_tls`] sends it) and the
    /// connection is over.
    pub fn feed(&mut self, mut cipher: &[u8]) -> Result<(), rustls::Error> {
        if cipher.is_empty() {
            // EOF: rustls notes it (a close without close_notify after whole records reads as
            // the end; inside a record it is an error at the next read).
            let _ = self.conn.read_tls(&mut cipher);
            self.eof = true;
            return self.conn.process_new_packets().map(|_| ());
        }
        while !cipher.is_empty() {
            match self.conn.read_tls(&mut cipher) {
                Ok(0) => break,
                Ok(_) => {
                    self.conn.process_new_packets()?;
                }
                // Its buffers are full (the caller feeds no more than the RX stream takes, so
                // only a peer flooding records that decrypt to nothing gets here).
                Err(_) => return Err(rustls::Error::General("TLS receive buffer full".into())),
            }
        }
        Ok(())
    }

    /// Plaintext for the RX stream.
    pub fn read_plain(&mut self, out: &mut [u8]) -> Plain {
        match self.conn.reader().read(out) {
            Ok(0) => Plain::End,
            Ok(n) => Plain::Bytes(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if self.eof {
                    Plain::End
                } else {
                    Plain::Empty
                }
            }
            // A TCP close without close_notify: the end, as most terminators treat it (the host
            // program has no way to tell either apart on a plain socket).
            Err(_) => Plain::End,
        }
    }

    /// Takes plaintext from the host program to send; returns how much it took (0 while the
    /// outgoing buffer is full).
    pub fn write_plain(&mut self, plain: &[u8]) -> usize {
        self.conn.writer().write(plain).unwrap_or(0)
    }

    /// Ciphertext (handshake, records, alerts) waiting for the backend.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Writes waiting ciphertext to `w` (the backend): `Ok(0)` when there was none.
    pub fn write_tls(&mut self, w: &mut dyn Write) -> io::Result<usize> {
        self.conn.write_tls(w)
    }

    /// The host program closed or shut its side: close_notify follows what it sent.
    pub fn close_notify(&mut self) {
        if !std::mem::replace(&mut self.notified, true) {
            self.conn.send_close_notify();
        }
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// True once, when the handshake has completed (for the agent's counters).
    pub fn handshake_done(&mut self) -> bool {
        !self.conn.is_handshaking() && !std::mem::replace(&mut self.reported, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Arc<ServerConfig>, rustls::ClientConfig) {
        let dir = std::env::temp_dir().join(format!("snstack-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        let st = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
            .arg(&k)
            .arg("-out")
            .arg(&c)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(st.success());
        let srv = server_config(
            std::slice::from_ref(&c),
            std::slice::from_ref(&k),
            &["redis".into()],
        )
        .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&c).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cli = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cli.alpn_protocols = vec![b"redis".to_vec()];
        let _ = std::fs::remove_dir_all(&dir);
        (srv, cli)
    }

    /// Moves ciphertext between the client and the session until neither has any; what the
    /// client receives goes into `got`.
    fn shuttle(cli: &mut rustls::ClientConnection, s: &mut Session, got: &mut Vec<u8>) {
        for _ in 0..20 {
            let mut buf = Vec::new();
            while cli.wants_write() {
                cli.write_tls(&mut buf).unwrap();
            }
            // Fed in small pieces: records split anywhere.
            for piece in buf.chunks(7) {
                s.feed(piece).unwrap();
            }
            let mut back = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut back).unwrap();
            }
            if buf.is_empty() && back.is_empty() {
                return;
            }
            let mut r = &back[..];
            while !r.is_empty() {
                cli.read_tls(&mut r).unwrap();
                cli.process_new_packets().unwrap();
                let mut b = [0u8; 65536];
                while let Ok(n) = cli.reader().read(&mut b) {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&b[..n]);
                }
            }
        }
    }

    #[test]
    fn a_client_gets_plain_bytes_through_both_ways() {
        let (srv, cli_cfg) = pair();
        let mut s = Session::new(&srv).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut cli = rustls::ClientConnection::new(Arc::new(cli_cfg), name).unwrap();
        cli.writer().write_all(b"PING\r\n").unwrap();
        let mut got = Vec::new();
        shuttle(&mut cli, &mut s, &mut got);
        assert!(!s.is_handshaking());
        assert_eq!(cli.alpn_protocol(), Some(&b"redis"[..]));
        let mut out = [0u8; 64];
        assert_eq!(s.read_plain(&mut out), Plain::Bytes(6));
        assert_eq!(&out[..6], b"PING\r\n");
        assert_eq!(s.read_plain(&mut out), Plain::Empty);
        let big = vec![b'x'; 100_000];
        let mut sent = 0;
        while got.len() < big.len() {
            sent += s.write_plain(&big[sent..]);
            shuttle(&mut cli, &mut s, &mut got);
        }
        assert_eq!(got, big);
        cli.send_close_notify();
        shuttle(&mut cli, &mut s, &mut got);
        assert_eq!(s.read_plain(&mut out), Plain::End);
    }

    #[test]
    fn garbage_from_the_peer_is_an_error_with_an_alert() {
        let (srv, _) = pair();
        let mut s = Session::new(&srv).unwrap();
        let e = s.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap_err();
        assert_eq!(errno_of(&e), libc::EPROTO);
        let mut alert = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut alert).unwrap();
        }
        assert_eq!(alert.first(), Some(&21), "an alert record goes out");
    }

    #[test]
    fn a_key_that_does_not_match_is_refused_at_start() {
        let dir = std::env::temp_dir().join(format!("snstack-tls-m-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for n in ["a", "b"] {
            let st = std::process::Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                ])
                .args(["-nodes", "-days", "1", "-subj", "/CN=x", "-keyout"])
                .arg(dir.join(format!("{n}.key")))
                .arg("-out")
                .arg(dir.join(format!("{n}.pem")))
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(st.success());
        }
        let e = server_config(&[dir.join("a.pem")], &[dir.join("b.key")], &[]).unwrap_err();
        assert!(format!("{e:#}").contains("does not match"), "{e:#}");
        let e = server_config(&[dir.join("nope.pem")], &[dir.join("b.key")], &[]).unwrap_err();
        assert!(format!("{e:#}").contains("nope.pem"), "{e:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sni_picks_the_certificate_for_the_name() {
        let dir = std::env::temp_dir().join(format!("snstack-tls-sni-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        let (mut certs, mut keys) = (Vec::new(), Vec::new());
        for name in ["localhost", "other.example"] {
            let (c, k) = (
                dir.join(format!("{name}.pem")),
                dir.join(format!("{name}.key")),
            );
            let st = std::process::Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                ])
                .args(["-nodes", "-days", "1", "-subj", &format!("/CN={name}")])
                .args(["-addext", &format!("subjectAltName=DNS:{name}")])
                .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
                .arg(&k)
                .arg("-out")
                .arg(&c)
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(st.success());
            for cert in CertificateDer::pem_file_iter(&c).unwrap() {
                roots.add(cert.unwrap()).unwrap();
            }
            certs.push(c);
            keys.push(k);
        }
        let srv = server_config(&certs, &keys, &[]).unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cli_cfg = Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        // Each name verifies only against its own certificate: the handshake succeeds only if
        // the server chose by SNI.
        for name in ["other.example", "localhost"] {
            let mut s = Session::new(&srv).unwrap();
            let sn = rustls::pki_types::ServerName::try_from(name).unwrap();
            let mut cli = rustls::ClientConnection::new(cli_cfg.clone(), sn).unwrap();
            let mut got = Vec::new();
            shuttle(&mut cli, &mut s, &mut got);
            assert!(!cli.is_handshaking() && !s.is_handshaking(), "{name}");
        }
        let e = server_config(&certs, &keys[..1], &[]).unwrap_err();
        assert!(format!("{e:#}").contains("pairs"), "{e:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

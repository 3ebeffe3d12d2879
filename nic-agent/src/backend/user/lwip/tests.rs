//! Pure logic of the lwIP engine (errnos, readiness, addresses, accept queue bounds).

use super::*;

#[test]
fn lwip_errors_map_to_linux_errnos() {
    assert_eq!(errno_of(l::ERR_RST, true), libc::ECONNREFUSED);
    assert_eq!(errno_of(l::ERR_RST, false), libc::ECONNRESET);
    assert_eq!(errno_of(l::ERR_ABRT, false), libc::ETIMEDOUT);
    assert_eq!(errno_of(l::ERR_ABRT, true), libc::ETIMEDOUT);
    assert_eq!(errno_of(l::ERR_USE, false), libc::EADDRINUSE);
    assert_eq!(errno_of(l::ERR_RTE, true), libc::ENETUNREACH);
    assert_eq!(errno_of(l::ERR_MEM, false), libc::ENOBUFS);
    assert_eq!(errno_of(l::ERR_OK, false), 0);
    assert_eq!(errno_of(-100, false), libc::EIO);
}

#[test]
fn readiness_of_connections() {
    let connecting = ConnView {
        connecting: true,
        sndbuf: 65535,
        ..ConnView::default()
    };
    assert_eq!(readiness(&connecting), Readiness::default());
    let refused = ConnView {
        err: libc::ECONNREFUSED,
        gone: true,
        ..connecting
    };
    let r = readiness(&refused);
    assert!(r.error && r.writable && r.readable && r.hup);
    let open = ConnView {
        sndbuf: 65535,
        ..ConnView::default()
    };
    let r = readiness(&open);
    assert!(r.writable && !r.readable && !r.hup && !r.error);
    let full = ConnView { sndbuf: 0, ..open };
    assert!(!readiness(&full).writable);
    let data = ConnView { rx_len: 10, ..full };
    assert!(readiness(&data).readable);
    let fin = ConnView { fin: true, ..full };
    let r = readiness(&fin);
    assert!(r.readable && r.hup && !r.error);
    // After our FIN the socket stays writable (the next send says EPIPE).
    let shut = ConnView {
        shut_wr: true,
        ..full
    };
    assert!(readiness(&shut).writable);
}

#[test]
fn addresses_are_ipv4_or_v4_mapped() {
    let a: SocketAddr = "10.0.0.2:80".parse().unwrap();
    assert_eq!(v4_of(&a), Some(Ipv4Addr::new(10, 0, 0, 2)));
    let m: SocketAddr = "[::ffff:10.0.0.2]:80".parse().unwrap();
    assert_eq!(v4_of(&m), Some(Ipv4Addr::new(10, 0, 0, 2)));
    let any6: SocketAddr = "[::]:80".parse().unwrap();
    assert_eq!(v4_of(&any6), Some(Ipv4Addr::UNSPECIFIED));
    let v6: SocketAddr = "[fd00::2]:80".parse().unwrap();
    assert_eq!(v4_of(&v6), None);
    let ip = u32::from(Ipv4Addr::new(10, 0, 0, 2));
    assert_eq!(sockaddr(libc::AF_INET, ip, 80), a);
    assert_eq!(sockaddr(libc::AF_INET6, ip, 80), m);
}

#[test]
fn accept_queue_bounds() {
    assert_eq!(accept_cap(-1), 4096);
    assert_eq!(accept_cap(0), 16);
    assert_eq!(accept_cap(511), 511);
    assert_eq!(accept_cap(100_000), 4096);
}

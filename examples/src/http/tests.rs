use super::*;
use std::path::PathBuf;

const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

struct Root(PathBuf);
impl Root {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("snstack-httpsrv-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("docs")).unwrap();
        std::fs::write(p.join("index.html"), b"<h1>home</h1>\n").unwrap();
        std::fs::write(p.join("docs/a.css"), b"p{}").unwrap();
        std::fs::write(p.join("big.bin"), vec![0xabu8; 300_000]).unwrap();
        std::fs::write(p.join("with space.txt"), b"sp").unwrap();
        Root(p)
    }
}
impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The reply as (head text, body bytes, action).
fn get(s: &mut Server, req: &str) -> (String, Vec<u8>, Action) {
    let mut head = Vec::new();
    let r = s.handle(req.as_bytes(), DATE, &mut head);
    (
        String::from_utf8(head).unwrap(),
        r.body.as_slice().to_vec(),
        r.action,
    )
}

fn status(head: &str) -> &str {
    &head[9..12]
}

#[test]
fn hello_keepalive_for_wrk() {
    let mut s = Server::new(None, 0).unwrap();
    let (h, b, a) = get(
        &mut s,
        "GET /hello HTTP/1.1\r\nHost: localhost:8080\r\n\r\n",
    );
    assert_eq!(
        h,
        "HTTP/1.1 200 OK\r\nServer: snstack-http\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Length: 14\r\n\r\n"
    );
    assert_eq!(b, HELLO);
    assert_eq!(a, Action::Continue);
    // A query string does not change the resource.
    let (h, _, _) = get(&mut s, "GET /hello?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(status(&h), "200");
}

#[test]
fn head_has_length_but_no_body() {
    let mut s = Server::new(None, 0).unwrap();
    let (h, b, a) = get(&mut s, "HEAD /hello HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(h.contains("Content-Length: 14\r\n"));
    assert!(b.is_empty());
    assert_eq!(a, Action::Continue);
    let (h, b, _) = get(&mut s, "HEAD /missing HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(status(&h), "404");
    assert!(h.contains("Content-Length: 14\r\n"));
    assert!(b.is_empty());
}

#[test]
fn connection_handling() {
    let mut s = Server::new(None, 0).unwrap();
    // curl --http1.0: no keep-alive asked, the server closes.
    let (h, _, a) = get(
        &mut s,
        "GET /hello HTTP/1.0\r\nHost: a\r\nUser-Agent: curl/8\r\n\r\n",
    );
    assert!(h.contains("Connection: close\r\n"));
    assert_eq!(a, Action::CloseAfterReply);
    // ab -k: HTTP/1.0 with Keep-Alive, echoed; Host is optional in 1.0.
    let (h, _, a) = get(
        &mut s,
        "GET /hello HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
    );
    assert!(h.contains("Connection: keep-alive\r\n"));
    assert_eq!(a, Action::Continue);
    // HTTP/1.1 with close.
    let (h, _, a) = get(
        &mut s,
        "GET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(h.contains("Connection: close\r\n"));
    assert_eq!(a, Action::CloseAfterReply);
    // HTTP/1.1 default: no Connection field at all.
    let (h, _, a) = get(&mut s, "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(!h.contains("Connection:"));
    assert_eq!(a, Action::Continue);
}

#[test]
fn errors() {
    let mut s = Server::new(None, 0).unwrap();
    let (h, _, a) = get(&mut s, "garbage\r\n\r\n");
    assert_eq!((status(&h), a), ("400", Action::CloseAfterReply));
    let (h, _, a) = get(&mut s, "GET /hello HTTP/1.1\r\n\r\n");
    assert_eq!(
        (status(&h), a),
        ("400", Action::CloseAfterReply),
        "1.1 without Host"
    );
    let (h, b, a) = get(
        &mut s,
        "POST /hello HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert_eq!((status(&h), a), ("405", Action::Continue));
    assert!(h.contains("Allow: GET, HEAD\r\n"));
    assert_eq!(b, b"405 Method Not Allowed\n");
    let (h, _, _) = get(&mut s, "BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(status(&h), "501");
    let (h, _, _) = get(&mut s, "GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(status(&h), "404", "no root: only /hello");
    let (h, _, a) = get(&mut s, "GET nohash HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((status(&h), a), ("400", Action::CloseAfterReply));
    // Every reply's Content-Length matches its body.
    for req in [
        "GET /x HTTP/1.1\r\nHost: a\r\n\r\n",
        "PUT / HTTP/1.1\r\nHost: a\r\n\r\n",
        "x\r\n\r\n",
    ] {
        let (h, b, _) = get(&mut s, req);
        assert!(
            h.contains(&format!("Content-Length: {}\r\n", b.len())),
            "{h}"
        );
    }
}

#[test]
fn static_files() {
    let root = Root::new("static");
    let mut s = Server::new(Some(&root.0), DEFAULT_CACHE_BYTES).unwrap();
    let (h, b, _) = get(&mut s, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(status(&h), "200");
    assert!(h.contains("Content-Type: text/html; charset=utf-8\r\n"));
    assert_eq!(b, b"<h1>home</h1>\n");
    let (h, b, _) = get(&mut s, "GET /docs/a.css HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(h.contains("Content-Type: text/css; charset=utf-8\r\nContent-Length: 3\r\n"));
    assert_eq!(b, b"p{}");
    let (h, b, _) = get(&mut s, "GET /with%20space.txt HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((status(&h), &b[..]), ("200", &b"sp"[..]));
    let (h, _, _) = get(&mut s, "GET /docs HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(status(&h), "404", "a directory without index.html");
    let (h, b, _) = get(
        &mut s,
        "GET http://example/big.bin HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert!(h.contains("Content-Length: 300000\r\n"));
    assert_eq!(b.len(), 300_000);
    // The body is shared with the cache, not copied.
    let mut head = Vec::new();
    let r1 = s.handle(b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n", DATE, &mut head);
    let r2 = s.handle(b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n", DATE, &mut head);
    match (r1.body, r2.body) {
        (Body::Shared(a), Body::Shared(b)) => assert!(Arc::ptr_eq(&a, &b)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn traversal_is_refused() {
    let root = Root::new("trav");
    let mut s = Server::new(Some(&root.0.join("docs")), DEFAULT_CACHE_BYTES).unwrap();
    for target in [
        "/../index.html",
        "/%2e%2e/index.html",
        "/docs/..%2F..%2Findex.html",
        "/a%00b",
        "/%zz",
    ] {
        let (h, _, a) = get(&mut s, &format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_eq!(
            (status(&h), a),
            ("400", Action::CloseAfterReply),
            "{target}"
        );
    }
    let (h, _, _) = get(&mut s, "GET /./a.css HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(status(&h), "200");
}

#[test]
fn parts_are_answered_once() {
    let mut s = Server::new(None, 0).unwrap();
    let mut sess = Session::default();
    let mut head = Vec::new();
    let req = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789";
    let (first, rest) = req.split_at(60);
    assert!(s
        .handle_message(&mut sess, first, true, DATE, &mut head)
        .is_some());
    assert!(s
        .handle_message(&mut sess, &rest[..2], true, DATE, &mut head)
        .is_none());
    assert!(s
        .handle_message(&mut sess, &rest[2..], false, DATE, &mut head)
        .is_none());
    let r = s
        .handle_message(
            &mut sess,
            b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n",
            false,
            DATE,
            &mut head,
        )
        .unwrap();
    assert_eq!(r.body.as_slice(), HELLO);
    // A first part without a whole head: 400 and close.
    let mut sess = Session::default();
    let r = s
        .handle_message(
            &mut sess,
            b"GET /hello HTTP/1.1\r\nHost: a\r\nX-Long: aaaa",
            true,
            DATE,
            &mut head,
        )
        .unwrap();
    assert_eq!(r.action, Action::CloseAfterReply);
}

#[test]
fn dates() {
    assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    assert_eq!(http_date(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT");
    assert_eq!(http_date(4_102_444_799), "Thu, 31 Dec 2099 23:59:59 GMT");
}

#[test]
fn never_panics() {
    let mut s = Server::new(None, 0).unwrap();
    let mut head = Vec::new();
    let mut x: u32 = 7;
    for _ in 0..3000 {
        let len = (x % 60) as usize;
        let mut msg = b"GET /".to_vec();
        for _ in 0..len {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            msg.push(b" /%.\r\n:HTTP/1.1Host\x00a"[(x >> 16) as usize % 21]);
        }
        head.clear();
        let r = s.handle(&msg, DATE, &mut head);
        assert!(head.starts_with(b"HTTP/1.1 "));
        let _ = r.body;
    }
}

#[test]
fn repeated_paths_get_their_own_file_and_misses_stay_misses() {
    let root = Root::new("memo");
    let mut s = Server::new(Some(&root.0), DEFAULT_CACHE_BYTES).unwrap();
    let req = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: a\r\n\r\n");
    for _ in 0..3 {
        for (path, code, body) in [
            ("/docs/a.css", "200", &b"p{}"[..]),
            ("/docs/a.css", "200", b"p{}"),
            ("/index.html", "200", b"<h1>home</h1>\n"),
            ("/docs/./a.css", "200", b"p{}"),
            ("/docs/nope.css", "404", b"404 Not Found\n"),
            ("/big.bin", "200", &[0xab; 300_000][..]),
            ("/big.bin", "200", &[0xab; 300_000][..]),
            ("/docs/a.css?v=2", "200", b"p{}"),
            ("/with%20space.txt", "200", b"sp"),
        ] {
            let (head, got, _) = get(&mut s, &req(path));
            assert_eq!(status(&head), code, "{path}");
            assert_eq!(got, body, "{path}");
            assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
        }
    }
}

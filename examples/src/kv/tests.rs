use super::*;

fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut m = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        m.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        m.extend_from_slice(a);
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// Runs one command given as space-separated words at time `now`: the reply as a string.
fn at(s: &mut Server, now: Millis, cmd: &str) -> String {
    let words: Vec<&[u8]> = cmd.split(' ').map(str::as_bytes).collect();
    let mut out = Vec::new();
    let action = s.handle(now, &encode(&words), &mut out);
    assert_eq!(action, Action::Continue, "{cmd}");
    String::from_utf8(out).unwrap()
}

fn run(s: &mut Server, cmd: &str) -> String {
    at(s, 0, cmd)
}

#[test]
fn ping_echo() {
    let mut s = Server::new();
    assert_eq!(run(&mut s, "PING"), "+PONG\r\n");
    assert_eq!(run(&mut s, "ping hello"), "$5\r\nhello\r\n");
    assert_eq!(
        run(&mut s, "PING a b"),
        "-ERR wrong number of arguments for 'ping' command\r\n"
    );
    assert_eq!(run(&mut s, "ECHO hi"), "$2\r\nhi\r\n");
    // redis-benchmark's PING_INLINE.
    let mut out = Vec::new();
    assert_eq!(s.handle(0, b"PING\r\n", &mut out), Action::Continue);
    assert_eq!(out, b"+PONG\r\n");
}

#[test]
fn get_set_basics() {
    let mut s = Server::new();
    assert_eq!(run(&mut s, "GET k"), "$-1\r\n");
    assert_eq!(run(&mut s, "SET k v"), "+OK\r\n");
    assert_eq!(run(&mut s, "get k"), "$1\r\nv\r\n");
    assert_eq!(
        run(&mut s, "GET"),
        "-ERR wrong number of arguments for 'get' command\r\n"
    );
    assert_eq!(
        run(&mut s, "GET a b"),
        "-ERR wrong number of arguments for 'get' command\r\n"
    );
    assert_eq!(
        run(&mut s, "SET k"),
        "-ERR wrong number of arguments for 'set' command\r\n"
    );
    // An empty key and an empty value are fine.
    let mut out = Vec::new();
    let _ = s.handle(0, &encode(&[b"SET", b"", b""]), &mut out);
    let _ = s.handle(0, &encode(&[b"GET", b""]), &mut out);
    assert_eq!(out, b"+OK\r\n$0\r\n\r\n");
}

#[test]
fn set_options() {
    let mut s = Server::new();
    assert_eq!(run(&mut s, "SET k v NX"), "+OK\r\n");
    assert_eq!(run(&mut s, "SET k w NX"), "$-1\r\n");
    assert_eq!(run(&mut s, "SET x w XX"), "$-1\r\n");
    assert_eq!(run(&mut s, "SET k w XX"), "+OK\r\n");
    assert_eq!(run(&mut s, "SET k u GET"), "$1\r\nw\r\n");
    assert_eq!(run(&mut s, "SET new u GET"), "$-1\r\n");
    assert_eq!(run(&mut s, "GET new"), "$1\r\nu\r\n");
    assert_eq!(run(&mut s, "SET k z NX GET"), "$1\r\nu\r\n");
    assert_eq!(run(&mut s, "GET k"), "$1\r\nu\r\n");
    assert_eq!(run(&mut s, "SET k v NX XX"), "-ERR syntax error\r\n");
    assert_eq!(run(&mut s, "SET k v EX 10 PX 10"), "-ERR syntax error\r\n");
    assert_eq!(run(&mut s, "SET k v EX"), "-ERR syntax error\r\n");
    assert_eq!(
        run(&mut s, "SET k v EX 10 KEEPTTL"),
        "-ERR syntax error\r\n"
    );
    assert_eq!(run(&mut s, "SET k v BOGUS"), "-ERR syntax error\r\n");
    assert_eq!(
        run(&mut s, "SET k v EX abc"),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(
        run(&mut s, "SET k v EX 0"),
        "-ERR invalid expire time in 'set' command\r\n"
    );
    assert_eq!(
        run(&mut s, "SET k v PX -5"),
        "-ERR invalid expire time in 'set' command\r\n"
    );
    assert_eq!(
        run(&mut s, "SET k v EX 9223372036854775807"),
        "-ERR invalid expire time in 'set' command\r\n"
    );
    assert_eq!(run(&mut s, "SET k v nx ex 10"), "$-1\r\n");
}

#[test]
fn expiry_ex_px_keepttl_persist() {
    let mut s = Server::new();
    assert_eq!(at(&mut s, 1000, "SET k v EX 10"), "+OK\r\n");
    assert_eq!(at(&mut s, 1000, "TTL k"), ":10\r\n");
    assert_eq!(at(&mut s, 1000, "PTTL k"), ":10000\r\n");
    assert_eq!(at(&mut s, 5600, "TTL k"), ":5\r\n");
    assert_eq!(at(&mut s, 5000, "SET k w KEEPTTL"), "+OK\r\n");
    assert_eq!(at(&mut s, 5000, "PTTL k"), ":6000\r\n");
    assert_eq!(at(&mut s, 10_999, "GET k"), "$1\r\nw\r\n");
    assert_eq!(at(&mut s, 11_000, "GET k"), "$-1\r\n");
    assert_eq!(at(&mut s, 11_000, "TTL k"), ":-2\r\n");
    assert_eq!(at(&mut s, 0, "SET p v PX 100"), "+OK\r\n");
    assert_eq!(at(&mut s, 0, "SET p v"), "+OK\r\n");
    assert_eq!(at(&mut s, 0, "TTL p"), ":-1\r\n");
    assert_eq!(at(&mut s, 0, "PERSIST p"), ":0\r\n");
    assert_eq!(at(&mut s, 0, "PEXPIRE p 100"), ":1\r\n");
    assert_eq!(at(&mut s, 50, "PERSIST p"), ":1\r\n");
    assert_eq!(at(&mut s, 500, "GET p"), "$1\r\nv\r\n");
    assert_eq!(at(&mut s, 0, "PERSIST missing"), ":0\r\n");
}

#[test]
fn expire_command() {
    let mut s = Server::new();
    assert_eq!(run(&mut s, "EXPIRE k 10"), ":0\r\n");
    run(&mut s, "SET k v");
    assert_eq!(run(&mut s, "EXPIRE k 10 XX"), ":0\r\n");
    assert_eq!(run(&mut s, "EXPIRE k 10 NX"), ":1\r\n");
    assert_eq!(run(&mut s, "EXPIRE k 20 NX"), ":0\r\n");
    assert_eq!(run(&mut s, "EXPIRE k 5 GT"), ":0\r\n");
    assert_eq!(run(&mut s, "EXPIRE k 50 GT"), ":1\r\n");
    assert_eq!(run(&mut s, "EXPIRE k 60 LT"), ":0\r\n");
    assert_eq!(run(&mut s, "EXPIRE k 40 LT"), ":1\r\n");
    assert_eq!(run(&mut s, "TTL k"), ":40\r\n");
    assert_eq!(
        run(&mut s, "EXPIRE k 1 NX XX"),
        "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n"
    );
    assert_eq!(
        run(&mut s, "EXPIRE k 1 GT LT"),
        "-ERR GT and LT options at the same time are not compatible\r\n"
    );
    assert_eq!(
        run(&mut s, "EXPIRE k 1 FOO"),
        "-ERR Unsupported option FOO\r\n"
    );
    assert_eq!(
        run(&mut s, "EXPIRE k x"),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(
        run(&mut s, "EXPIRE k 9223372036854775807"),
        "-ERR invalid expire time in 'expire' command\r\n"
    );
    assert_eq!(
        run(&mut s, "EXPIRE k"),
        "-ERR wrong number of arguments for 'expire' command\r\n"
    );
    // A deadline in the past deletes the key.
    assert_eq!(run(&mut s, "EXPIRE k -1"), ":1\r\n");
    assert_eq!(run(&mut s, "EXISTS k"), ":0\r\n");
    run(&mut s, "SET k v");
    assert_eq!(run(&mut s, "PEXPIRE k 0"), ":1\r\n");
    assert_eq!(run(&mut s, "DBSIZE"), ":0\r\n");
}

#[test]
fn active_expiry_through_the_server() {
    let mut s = Server::new();
    for i in 0..10 {
        at(&mut s, 0, &format!("SET k{i} v PX 10"));
    }
    at(&mut s, 0, "SET keep v");
    assert_eq!(s.expire_some(5, 100), 0);
    assert_eq!(s.expire_some(10, 100), 10);
    assert_eq!(s.store().len(), 1);
}

#[test]
fn counters() {
    let mut s = Server::new();
    assert_eq!(run(&mut s, "INCR n"), ":1\r\n");
    assert_eq!(run(&mut s, "INCRBY n 10"), ":11\r\n");
    assert_eq!(run(&mut s, "DECR n"), ":10\r\n");
    assert_eq!(run(&mut s, "DECRBY n 20"), ":-10\r\n");
    assert_eq!(run(&mut s, "GET n"), "$3\r\n-10\r\n");
    assert_eq!(run(&mut s, "DECRBY fresh 3"), ":-3\r\n");
    run(&mut s, "SET t abc");
    assert_eq!(
        run(&mut s, "INCR t"),
        "-ERR value is not an integer or out of range\r\n"
    );
    run(&mut s, "SET t 007");
    assert_eq!(
        run(&mut s, "INCR t"),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(
        run(&mut s, "INCRBY n x"),
        "-ERR value is not an integer or out of range\r\n"
    );
    run(&mut s, "SET big 9223372036854775807");
    assert_eq!(
        run(&mut s, "INCR big"),
        "-ERR increment or decrement would overflow\r\n"
    );
    assert_eq!(
        run(&mut s, "DECRBY n -9223372036854775808"),
        "-ERR decrement would overflow\r\n"
    );
    assert_eq!(
        run(&mut s, "INCR"),
        "-ERR wrong number of arguments for 'incr' command\r\n"
    );
    // INCR keeps the deadline.
    assert_eq!(at(&mut s, 0, "SET e 1 EX 100"), "+OK\r\n");
    assert_eq!(at(&mut s, 0, "INCR e"), ":2\r\n");
    assert_eq!(at(&mut s, 0, "TTL e"), ":100\r\n");
}

#[test]
fn multi_key_commands() {
    let mut s = Server::new();
    assert_eq!(run(&mut s, "MSET a 1 b 2 c 3"), "+OK\r\n");
    assert_eq!(
        run(&mut s, "MSET a 1 b"),
        "-ERR wrong number of arguments for 'mset' command\r\n"
    );
    assert_eq!(
        run(&mut s, "MGET a x c"),
        "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n3\r\n"
    );
    assert_eq!(run(&mut s, "EXISTS a a x b"), ":3\r\n");
    assert_eq!(run(&mut s, "DEL a a x b"), ":2\r\n");
    assert_eq!(run(&mut s, "DBSIZE"), ":1\r\n");
    assert_eq!(run(&mut s, "FLUSHALL"), "+OK\r\n");
    assert_eq!(run(&mut s, "DBSIZE"), ":0\r\n");
    assert_eq!(run(&mut s, "FLUSHDB ASYNC"), "+OK\r\n");
    assert_eq!(run(&mut s, "FLUSHDB NOW"), "-ERR syntax error\r\n");
}

#[test]
fn small_string_commands() {
    let mut s = Server::new();
    assert_eq!(run(&mut s, "SETNX a 1"), ":1\r\n");
    assert_eq!(run(&mut s, "SETNX a 2"), ":0\r\n");
    assert_eq!(run(&mut s, "APPEND a 23"), ":3\r\n");
    assert_eq!(run(&mut s, "STRLEN a"), ":3\r\n");
    assert_eq!(run(&mut s, "GETSET a x"), "$3\r\n123\r\n");
    assert_eq!(run(&mut s, "GETDEL a"), "$1\r\nx\r\n");
    assert_eq!(run(&mut s, "TYPE a"), "+none\r\n");
    assert_eq!(at(&mut s, 0, "SETEX a 5 v"), "+OK\r\n");
    assert_eq!(at(&mut s, 0, "TTL a"), ":5\r\n");
    assert_eq!(
        at(&mut s, 0, "PSETEX a 0 v"),
        "-ERR invalid expire time in 'psetex' command\r\n"
    );
    assert_eq!(run(&mut s, "TYPE a"), "+string\r\n");
}

#[test]
fn admin_commands_for_clients() {
    let mut s = Server::new();
    assert_eq!(run(&mut s, "SELECT 0"), "+OK\r\n");
    assert_eq!(run(&mut s, "SELECT 1"), "-ERR DB index is out of range\r\n");
    assert_eq!(
        run(&mut s, "SELECT x"),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(run(&mut s, "COMMAND DOCS"), "*0\r\n");
    assert_eq!(run(&mut s, "COMMAND"), "*0\r\n");
    assert_eq!(
        run(&mut s, "command count"),
        format!(":{}\r\n", COMMANDS.len())
    );
    assert_eq!(
        run(&mut s, "COMMAND FOO"),
        "-ERR unknown subcommand 'FOO'. Try COMMAND HELP.\r\n"
    );
    assert_eq!(run(&mut s, "CLIENT SETNAME x"), "+OK\r\n");
    assert_eq!(run(&mut s, "CLIENT SETINFO lib-name redis-py"), "+OK\r\n");
    assert_eq!(run(&mut s, "CLIENT GETNAME"), "$-1\r\n");
    assert_eq!(
        run(&mut s, "CLIENT SETNAME"),
        "-ERR wrong number of arguments for 'client|setname' command\r\n"
    );
    let info = run(&mut s, "INFO");
    assert!(info.starts_with('$') && info.contains("redis_version:") && info.ends_with("\r\n"));
    let len: usize = info[1..info.find('\r').unwrap()].parse().unwrap();
    assert_eq!(info.len(), len + info.find('\n').unwrap() + 1 + 2);
}

#[test]
fn config_get_as_redis_benchmark_asks() {
    let mut s = Server::new();
    // redis-benchmark 7 pipelines these two at start and reads element 1 of each.
    assert_eq!(
        run(&mut s, "CONFIG GET save"),
        "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"
    );
    assert_eq!(
        run(&mut s, "CONFIG GET appendonly"),
        "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
    );
    assert_eq!(run(&mut s, "CONFIG GET nosuch"), "*0\r\n");
    assert_eq!(
        run(&mut s, "CONFIG GET maxmemory*"),
        "*4\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n$16\r\nmaxmemory-policy\r\n$10\r\nnoeviction\r\n"
    );
    assert_eq!(
        run(&mut s, "CONFIG GET"),
        "-ERR wrong number of arguments for 'config|get' command\r\n"
    );
    assert_eq!(
        run(&mut s, "CONFIG"),
        "-ERR wrong number of arguments for 'config' command\r\n"
    );
    assert_eq!(
        run(&mut s, "CONFIG SET save x"),
        "-ERR Unknown option or number of arguments for CONFIG SET - 'save'\r\n"
    );
}

#[test]
fn globs() {
    assert!(glob_match(b"*", b"anything"));
    assert!(glob_match(b"save", b"save"));
    assert!(!glob_match(b"sav", b"save"));
    assert!(glob_match(b"s?ve", b"save"));
    assert!(glob_match(b"*o*y", b"appendonly"));
    assert!(glob_match(b"[a-c]ppend*", b"appendonly"));
    assert!(!glob_match(b"[^a]ppend*", b"appendonly"));
    assert!(glob_match(b"a\\*", b"a*"));
    assert!(!glob_match(b"a\\*", b"ab"));
    assert!(glob_match(b"", b""));
    assert!(!glob_match(b"", b"x"));
    assert!(glob_match(b"[", b"x") || !glob_match(b"[", b"x")); // never panics
}

#[test]
fn unknown_command_text_as_redis_7() {
    let mut s = Server::new();
    assert_eq!(
        run(&mut s, "FOO"),
        "-ERR unknown command 'FOO', with args beginning with: \r\n"
    );
    assert_eq!(
        run(&mut s, "foo a b"),
        "-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n"
    );
    let long = "x".repeat(200);
    let r = run(&mut s, &format!("{long} {long} y"));
    assert_eq!(
        r,
        format!(
            "-ERR unknown command '{}', with args beginning with: '{}' \r\n",
            "x".repeat(128),
            "x".repeat(128)
        )
    );
    let mut out = Vec::new();
    let _ = s.handle(0, &encode(&[b"bad\r\ncmd", b"a\nb"]), &mut out);
    assert_eq!(
        out,
        b"-ERR unknown command 'bad  cmd', with args beginning with: 'a b' \r\n"
    );
}

#[test]
fn quit_closes_after_ok() {
    let mut s = Server::new();
    let mut out = Vec::new();
    assert_eq!(
        s.handle(0, &encode(&[b"QUIT"]), &mut out),
        Action::CloseAfterReply
    );
    assert_eq!(out, b"+OK\r\n");
}

#[test]
fn malformed_requests_get_an_error_and_a_close() {
    let mut s = Server::new();
    let mut out = Vec::new();
    assert_eq!(
        s.handle(0, b"*2\r\n$3\r\nGET\r\n", &mut out),
        Action::CloseAfterReply
    );
    assert!(out.starts_with(b"-ERR Protocol error"));
    out.clear();
    assert_eq!(
        s.handle(0, b"SET \"a b\r\n", &mut out),
        Action::CloseAfterReply
    );
    assert_eq!(
        out,
        b"-ERR Protocol error: unbalanced quotes in request\r\n"
    );
    // Empty commands are skipped without a reply.
    out.clear();
    assert_eq!(s.handle(0, b"*0\r\n", &mut out), Action::Continue);
    assert_eq!(s.handle(0, b"\r\n", &mut out), Action::Continue);
    assert!(out.is_empty());
    // Arbitrary bytes never panic.
    let mut x: u32 = 12345;
    for _ in 0..2000 {
        let len = (x % 40) as usize;
        let mut msg = Vec::with_capacity(len);
        for _ in 0..len {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            msg.push(b"*$\r\n0123-GETSET \"'x"[(x >> 16) as usize % 18]);
        }
        let _ = s.handle(0, &msg, &mut out);
    }
}

#[test]
fn pipelined_burst_like_redis_benchmark() {
    let mut s = Server::new();
    let mut out = Vec::new();
    for i in 0..16 {
        let key = format!("key:{i:012}");
        let _ = s.handle(0, &encode(&[b"SET", key.as_bytes(), b"xxx"]), &mut out);
    }
    for i in 0..16 {
        let key = format!("key:{i:012}");
        let _ = s.handle(0, &encode(&[b"GET", key.as_bytes()]), &mut out);
    }
    let expect = "+OK\r\n".repeat(16) + &"$3\r\nxxx\r\n".repeat(16);
    assert_eq!(String::from_utf8(out).unwrap(), expect);
}

#[test]
fn one_megabyte_value_in_parts() {
    let mut s = Server::new();
    let mut sess = Session::default();
    let value = (0..1 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
    let msg = encode(&[b"SET", b"big", &value]);
    let mut out = Vec::new();
    let chunks: Vec<&[u8]> = msg.chunks(64 * 1024).collect();
    for (i, c) in chunks.iter().enumerate() {
        let part = i + 1 < chunks.len();
        assert_eq!(
            s.handle_message(&mut sess, 0, c, part, &mut out),
            Action::Continue
        );
        assert_eq!(out.is_empty(), part);
    }
    assert_eq!(out, b"+OK\r\n");
    out.clear();
    // The next whole request comes through without a copy, and gets the whole value back.
    assert_eq!(
        s.handle_message(&mut sess, 0, &encode(&[b"GET", b"big"]), false, &mut out),
        Action::Continue
    );
    let head = b"$1048576\r\n";
    assert_eq!(&out[..head.len()], head);
    assert_eq!(&out[head.len()..out.len() - 2], &value[..]);
}

#[test]
fn session_refuses_oversized_requests_and_recovers() {
    let mut sess = Session::default();
    let chunk = vec![b'x'; 64 << 20];
    let mut refused = 0;
    for _ in 0..9 {
        match sess.push(&chunk, true) {
            Ok(None) => {}
            Err(TooLarge) => refused += 1,
            Ok(Some(_)) => panic!("a part is never a whole request"),
        }
    }
    assert_eq!(refused, 1);
    // The last part of the refused request is swallowed, then requests flow again.
    assert_eq!(sess.push(b"tail", false), Ok(None));
    assert_eq!(sess.push(b"PING\r\n", false), Ok(Some(&b"PING\r\n"[..])));
    assert_eq!(sess.push(b"PI", true), Ok(None));
    assert_eq!(sess.push(b"NG\r\n", false), Ok(Some(&b"PING\r\n"[..])));
}

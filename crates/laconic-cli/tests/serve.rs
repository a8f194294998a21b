//! `laconic serve` end to end: the real binary on a free port, a request, then SIGTERM while a
//! streamed request is in flight: the request completes and the process exits 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../laconic-infer/tests/fixtures/llama")
}

/// Sends a request (with `Connection: close`) and calls `on_read` with everything received so
/// far after each read; returns the whole reply.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    mut on_read: impl FnMut(&str),
) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        on_read(&String::from_utf8_lossy(&reply));
    }
    String::from_utf8_lossy(&reply).into_owned()
}

/// Kills the server if a test fails before it exits.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_answers_then_drains_on_sigterm() {
    let child = Command::new(env!("CARGO_BIN_EXE_laconic"))
        .args(["serve", "--model"])
        .arg(fixture())
        .args(["--port", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run laconic serve");
    let mut server = Server(child);
    let stderr = server.0.stderr.take().expect("stderr");
    let (tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let addr: SocketAddr = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("no listening line ({e}): {log:?}"));
        log.push(line.clone());
        if let Some(rest) = line.strip_prefix("laconic serve: listening on http://") {
            assert!(rest.ends_with(" (model llama)"), "{line}");
            break rest
                .split(' ')
                .next()
                .and_then(|a| a.parse().ok())
                .expect("address");
        }
    };

    let health = http(addr, "GET", "/health", "", |_| {});
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains(r#""status":"ok""#), "{health}");

    let chat =
        r#"{"model":"llama","messages":[{"role":"user","content":"Hi"}],"max_tokens":8,"seed":1}"#;
    let reply = http(addr, "POST", "/v1/chat/completions", chat, |_| {});
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains(r#""object":"chat.completion""#), "{reply}");
    assert!(reply.contains(r#""model":"llama""#), "{reply}");

    // Four choices of 250 tokens streamed one after another; SIGTERM after the first event.
    let long = r#"{"prompt":"a","max_tokens":250,"n":4,"ignore_eos":true,"seed":2,"stream":true,"stream_options":{"include_usage":true}}"#;
    let pid = server.0.id().to_string();
    let mut signalled = false;
    let reply = http(addr, "POST", "/v1/completions", long, |so_far| {
        if !signalled && so_far.contains("data: ") {
            signalled = true;
            let ok = Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("run kill");
            assert!(ok.success());
        }
    });
    assert!(signalled, "the stream started: {reply}");
    assert_eq!(
        reply.matches(r#""finish_reason":"length""#).count(),
        4,
        "every choice finished: {reply}"
    );
    assert!(reply.contains(r#""completion_tokens":1000"#), "{reply}");
    assert!(reply.contains("data: [DONE]"), "{reply}");

    let t = Instant::now();
    let status = loop {
        if let Some(s) = server.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the server did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.join().expect("stderr reader");
    log.extend(lines.try_iter());
    assert!(status.success(), "exit status {status}: {log:?}");
    let log = log.join("\n");
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(
        log.contains("laconic serve: POST /v1/completions 200 1+1000 tokens"),
        "{log}"
    );
    assert!(log.contains("laconic serve: stopped"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

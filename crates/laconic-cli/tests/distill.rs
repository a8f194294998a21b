//! `laconic distill` against `laconic serve` over real sockets on loopback: the tiny fixture
//! model is the teacher, and a fault-injecting proxy between the two drops connections,
//! delays past the timeout, answers 500, 429 with `Retry-After`, malformed JSON and truncated
//! bodies. The retries and the final accounting must come out exact, and a run killed with
//! SIGKILL must resume to the same traces as an uninterrupted one.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

fn fixture_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../laconic-infer/tests/fixtures/llama")
}

/// `laconic serve` on a free port; killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_laconic"))
            .args(["serve", "--model"])
            .arg(fixture_model())
            .args(["--port", "0", "--model-name", "tiny"])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn laconic serve");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("serve exited before listening")
                .expect("stderr line");
            if let Some(rest) = line.split("http://").nth(1) {
                let hostport = rest.split_whitespace().next().expect("host:port");
                break hostport.trim_end_matches('/').parse().expect("address");
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, addr }
    }

    fn url(&self) -> String {
        format!("openai:http://{}/v1", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the proxy does to one chat-completion request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    Pass,
    /// Close the connection without a reply.
    Drop,
    /// Answer nothing for this long (past the client's timeout), then close.
    Delay(Duration),
    /// 500 with a JSON error.
    Status500,
    /// 429 with `Retry-After: 1`.
    Status429,
    /// 200 with a body that is not JSON.
    Malformed,
    /// The server's reply cut in the middle of its body.
    Truncated,
}

/// A fault-injecting HTTP proxy: one request per connection, `schedule(n)` decides the fate
/// of the n-th chat-completion request (other requests pass). It records every request.
struct Proxy {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<(Instant, Fault, String)>>>,
}

fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// `head` with its `Connection` header replaced by `Connection: close`.
fn close_connection(head: &str) -> String {
    let mut out: Vec<&str> = head
        .trim_end()
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    out.push("Connection: close");
    format!("{}\r\n\r\n", out.join("\r\n"))
}

fn forward(upstream: SocketAddr, head: &str, body: &[u8]) -> Vec<u8> {
    let mut up = TcpStream::connect(upstream).expect("connect upstream");
    up.write_all(close_connection(head).as_bytes())
        .expect("write");
    up.write_all(body).expect("write");
    let mut reply = Vec::new();
    up.read_to_end(&mut reply).expect("read upstream");
    // The reply goes back with `Connection: close`, since the proxy closes after it.
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("reply head");
    let head = String::from_utf8_lossy(&reply[..split]).into_owned();
    let mut out = close_connection(&head).into_bytes();
    out.extend_from_slice(&reply[split + 4..]);
    out
}

fn respond(stream: &mut TcpStream, status: &str, extra: &str, body: &str) {
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
}

impl Proxy {
    fn start(
        upstream: SocketAddr,
        schedule: impl Fn(usize, &str) -> Fault + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let counter = Arc::new(AtomicUsize::new(0));
        let schedule = Arc::new(schedule);
        let log2 = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (log, counter, schedule) = (log2.clone(), counter.clone(), schedule.clone());
                std::thread::spawn(move || {
                    let Some((head, body)) = read_request(&mut stream) else {
                        return;
                    };
                    let fault = if head.starts_with("POST") && head.contains("/chat/completions") {
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        let text = String::from_utf8_lossy(&body).into_owned();
                        let f = schedule(n, &text);
                        log.lock().expect("log").push((Instant::now(), f, text));
                        f
                    } else {
                        Fault::Pass
                    };
                    match fault {
                        Fault::Pass => {
                            let reply = forward(upstream, &head, &body);
                            let _ = stream.write_all(&reply);
                        }
                        Fault::Drop => {}
                        Fault::Delay(d) => std::thread::sleep(d),
                        Fault::Status500 => respond(
                            &mut stream,
                            "500 Internal Server Error",
                            "",
                            r#"{"error":{"message":"injected 500","type":"server_error"}}"#,
                        ),
                        Fault::Status429 => respond(
                            &mut stream,
                            "429 Too Many Requests",
                            "Retry-After: 1\r\n",
                            r#"{"error":{"message":"slow down","type":"rate_limit"}}"#,
                        ),
                        Fault::Malformed => {
                            respond(&mut stream, "200 OK", "", r#"{"choices": [{"message": "#)
                        }
                        Fault::Truncated => {
                            let reply = forward(upstream, &head, &body);
                            let _ = stream.write_all(&reply[..reply.len() - 40]);
                        }
                    }
                    let _ = stream.flush();
                    let _ = stream.shutdown(Shutdown::Both);
                });
            }
        });
        Self { addr, log }
    }

    fn url(&self) -> String {
        format!("openai:http://{}/v1", self.addr)
    }

    fn faults(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for (_, f, _) in self.log.lock().expect("log").iter() {
            let name = match f {
                Fault::Pass => continue,
                Fault::Drop | Fault::Truncated => "connection",
                Fault::Delay(_) => "timeout",
                Fault::Status500 => "5xx",
                Fault::Status429 => "429",
                Fault::Malformed => "malformed",
            };
            *m.entry(name.to_string()).or_default() += 1;
        }
        m
    }
}

/// Short GSM8K-style problems (the fixture model's context is 256 tokens).
fn write_problems(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("problems.jsonl");
    let mut text = String::new();
    for i in 0..n {
        let (a, b) = (i + 2, 3 * i + 1);
        text.push_str(
            &serde_json::json!({
                "question": format!("Tom has {a} apples and buys {b} more. How many apples?"),
                "answer": format!("{a} + {b} = {}\n#### {}", a + b, a + b),
            })
            .to_string(),
        );
        text.push('\n');
    }
    std::fs::write(&path, text).expect("problems");
    path
}

/// `laconic distill` as every test runs it: 3 samples, all correct ones kept, 24 tokens.
fn distill_command(problems: &Path, teacher: &str, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_laconic"));
    c.args(["distill", "--problems"])
        .arg(format!("gsm8k:{}", problems.display()))
        .args([
            "--teacher",
            teacher,
            "--samples",
            "3",
            "--select",
            "all-correct",
        ])
        .args([
            "--max-tokens",
            "24",
            "--temperature",
            "0.9",
            "--quiet",
            "--json",
        ])
        .arg("--out")
        .arg(out)
        .args(extra);
    c
}

fn distill(problems: &Path, teacher: &str, out: &Path, extra: &[&str]) -> Output {
    distill_command(problems, teacher, out, extra)
        .output()
        .expect("run laconic distill")
}

fn summary(o: &Output) -> Value {
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "summary JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// The samples file and the output as sorted lines, without what legitimately differs
/// between runs (arrival times, durations, the teacher's URL and attempt counts).
fn content(out: &Path) -> (Vec<String>, Vec<String>) {
    let read = |path: &Path, strip: &[&str]| -> Vec<String> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut lines: Vec<String> = text
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).expect("json line");
                for key in strip {
                    if let Some(o) = v
                        .pointer_mut(key.rsplit_once('/').map_or("", |x| x.0))
                        .and_then(Value::as_object_mut)
                    {
                        o.remove(key.rsplit('/').next().unwrap_or(key));
                    }
                }
                v.to_string()
            })
            .collect();
        lines.sort();
        lines
    };
    let mut samples = PathBuf::from(out);
    samples.as_mut_os_string().push(".samples.jsonl");
    (
        read(&samples, &["/created", "/seconds", "/sample/attempts"]),
        read(out, &["/provenance/created", "/provenance/teacher"]),
    )
}

#[test]
fn faults_are_retried_and_accounted_for_exactly() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let problems = write_problems(dir.path(), 6);
    let reference = dir.path().join("reference.jsonl");
    let o = distill(&problems, &server.url(), &reference, &[]);
    let s = summary(&o);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        (s["received"].as_u64(), s["failed"].as_u64()),
        (Some(18), Some(0))
    );

    // Every third request is hit by one kind of fault, in turn.
    let kinds = [
        Fault::Drop,
        Fault::Status500,
        Fault::Status429,
        Fault::Malformed,
        Fault::Truncated,
        // Well past the timeout, which is itself well above an answer's time on a loaded
        // machine, so that only this fault times out.
        Fault::Delay(Duration::from_millis(9000)),
    ];
    let proxy = Proxy::start(server.addr, move |n, _| {
        if n % 3 == 0 && n < 36 {
            kinds[(n / 3) % kinds.len()]
        } else {
            Fault::Pass
        }
    });
    let out = dir.path().join("faulty.jsonl");
    let o = distill(
        &problems,
        &proxy.url(),
        &out,
        &["--timeout", "6", "--backoff", "0.05", "--concurrency", "4"],
    );
    let s = summary(&o);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        (s["received"].as_u64(), s["failed"].as_u64()),
        (Some(18), Some(0))
    );
    let injected = proxy.faults();
    let retried: BTreeMap<String, usize> = s["retries"]
        .as_object()
        .expect("retries")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().expect("count") as usize))
        .collect();
    assert_eq!(
        retried, injected,
        "every injected fault retried once, under its own name"
    );
    // Requests 0, 3, ..., 24 of 27 (18 samples + 9 faults): every kind at least once.
    assert_eq!(injected.values().sum::<usize>(), 9, "{injected:?}");
    assert_eq!(injected.len(), 5, "{injected:?}");
    assert_eq!(
        content(&out),
        content(&reference),
        "faults changed the traces"
    );

    // After a 429 with Retry-After: 1, the same request comes back no sooner than 1 s later.
    let log = proxy.log.lock().expect("log").clone();
    assert_eq!(
        log.len(),
        18 + 9,
        "one request per sample plus one per fault"
    );
    for (i, (t, f, body)) in log.iter().enumerate() {
        if *f == Fault::Status429 {
            let (t2, _, _) = log[i + 1..]
                .iter()
                .find(|(_, _, b)| b == body)
                .expect("the 429'd request is retried");
            assert!(
                t2.duration_since(*t) >= Duration::from_millis(990),
                "retried after {:?}",
                t2.duration_since(*t)
            );
        }
    }
}

#[test]
fn a_problem_that_keeps_failing_is_reported_and_retried_by_the_next_run() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let problems = write_problems(dir.path(), 4);
    // Problem 2 ("Tom has 4 apples") always gets a 500.
    let proxy = Proxy::start(server.addr, |_, body| {
        if body.contains("Tom has 4 apples") {
            Fault::Status500
        } else {
            Fault::Pass
        }
    });
    let out = dir.path().join("out.jsonl");
    let o = distill(
        &problems,
        &proxy.url(),
        &out,
        &[
            "--max-retries",
            "2",
            "--backoff",
            "0.01",
            "--concurrency",
            "2",
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("1 problems are incomplete")
            && err.contains("gave up after 3 attempts")
            && err.contains("injected 500"),
        "{err}"
    );
    let s = summary(&o);
    assert_eq!(
        (
            s["received"].as_u64(),
            s["failed"].as_u64(),
            s["incomplete"].as_u64()
        ),
        (Some(9), Some(3), Some(1))
    );
    assert_eq!(s["retries"]["5xx"].as_u64(), Some(6));

    // The same command, straight to the server (the teacher's URL may change between runs;
    // its model may not), asks for the 3 missing samples only and ends where an
    // uninterrupted run ends.
    let before = proxy.log.lock().expect("log").len();
    let o = distill(&problems, &server.url(), &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = summary(&o);
    assert_eq!(
        (
            s["requested"].as_u64(),
            s["already_finished"].as_u64(),
            s["finished"].as_u64()
        ),
        (Some(3), Some(3), Some(1))
    );
    assert_eq!(
        proxy.log.lock().expect("log").len(),
        before,
        "the proxy saw nothing new"
    );
    let reference = dir.path().join("reference.jsonl");
    assert!(
        distill(&problems, &server.url(), &reference, &[])
            .status
            .success()
    );
    assert_eq!(content(&out), content(&reference));
}

#[test]
fn a_run_killed_mid_write_resumes_with_nothing_lost_or_duplicated() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let problems = write_problems(dir.path(), 8);
    let reference = dir.path().join("reference.jsonl");
    assert!(
        distill(&problems, &server.url(), &reference, &[])
            .status
            .success()
    );

    // Slow every request down so that the kill lands in the middle of the run.
    let slow = Proxy::start(server.addr, |_, _| {
        std::thread::sleep(Duration::from_millis(60));
        Fault::Pass
    });
    let out = dir.path().join("out.jsonl");
    let mut samples = PathBuf::from(&out);
    samples.as_mut_os_string().push(".samples.jsonl");
    let mut child = distill_command(&problems, &slow.url(), &out, &["--concurrency", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn distill");
    let t0 = Instant::now();
    loop {
        let n = std::fs::read_to_string(&samples).map_or(0, |t| t.lines().count());
        if n >= 10 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "distill made no progress"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "distill ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let received = std::fs::read_to_string(&samples)
        .expect("samples")
        .lines()
        .count();
    assert!(received < 24, "the kill came too late to test anything");
    // As if the kill had struck in the middle of a write: half a line at the end of both files.
    for path in [&out, &samples] {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .expect("open");
        f.write_all(br#"{"schema":1,"id":"half-writ"#)
            .expect("write");
    }

    let o = distill(&problems, &server.url(), &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = summary(&o);
    assert_eq!(
        s["requested"].as_u64(),
        Some(24 - received as u64),
        "asked again only for what was missing"
    );
    assert_eq!(content(&out), content(&reference));
}

/// `sample.content` of every line of a run's samples file, by (problem, index).
fn sample_texts(out: &Path) -> BTreeMap<(String, u64), String> {
    let mut samples = PathBuf::from(out);
    samples.as_mut_os_string().push(".samples.jsonl");
    std::fs::read_to_string(&samples)
        .expect("samples file")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json");
            (
                (
                    v["problem"].as_str().expect("problem").to_string(),
                    v["index"].as_u64().expect("index"),
                ),
                v["sample"]["content"]
                    .as_str()
                    .expect("content")
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn the_local_teacher_answers_as_the_server_does_and_a_file_teacher_gives_its_traces_back() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let problems = write_problems(dir.path(), 5);
    let http = dir.path().join("http.jsonl");
    assert!(
        distill(&problems, &server.url(), &http, &[])
            .status
            .success()
    );
    let local = dir.path().join("local.jsonl");
    let teacher = format!("local:{}", fixture_model().display());
    let o = distill(&problems, &teacher, &local, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (sample_texts(&http), sample_texts(&local));
    assert_eq!(a.len(), 15);
    assert_eq!(
        a, b,
        "in-process and HTTP teachers differ on the same prompts and seeds"
    );

    // The same problems with gold answers set to what the model answers in sample 0, so that
    // samples are kept; then those kept traces, used as a file teacher, come back whole.
    let mut samples = PathBuf::from(&http);
    samples.as_mut_os_string().push(".samples.jsonl");
    let extracted: BTreeMap<String, String> = std::fs::read_to_string(&samples)
        .expect("samples")
        .lines()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["index"] == 0).then_some(())?;
            Some((
                v["problem"].as_str()?.to_string(),
                v["extracted"].as_str()?.to_string(),
            ))
        })
        .collect();
    assert!(
        extracted.len() >= 3,
        "the model states a number in most answers: {extracted:?}"
    );
    let dir2 = dir.path().join("answered");
    std::fs::create_dir(&dir2).expect("mkdir");
    let mut lines = String::new();
    for (i, line) in std::fs::read_to_string(&problems)
        .expect("problems")
        .lines()
        .enumerate()
    {
        let mut v: Value = serde_json::from_str(line).expect("json");
        if let Some(answer) = extracted.get(&format!("gsm8k/problems/{i}")) {
            v["answer"] = Value::String(format!("as the model says\n#### {answer}"));
        }
        lines.push_str(&format!("{v}\n"));
    }
    let problems2 = dir2.join("problems.jsonl");
    std::fs::write(&problems2, lines).expect("write");
    let http2 = dir.path().join("http2.jsonl");
    assert!(
        distill(&problems2, &server.url(), &http2, &[])
            .status
            .success()
    );
    let again = dir.path().join("again.jsonl");
    let teacher = format!("file:traces:{}", http2.display());
    let o = distill(&problems2, &teacher, &again, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = summary(&o);
    let kept = |p: &Path| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("json");
                (
                    v["reasoning"].as_str().expect("reasoning").to_string(),
                    v["answer"].as_str().expect("answer").to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert!(
        kept(&http2).len() >= extracted.len(),
        "sample 0 of each answered problem is kept"
    );
    assert_eq!(kept(&again), kept(&http2));
    assert_eq!(s["rejected"].as_u64(), Some(0));
}

#[test]
fn an_unreachable_teacher_is_a_clear_error_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let problems = write_problems(dir.path(), 2);
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let t0 = Instant::now();
    let out = dir.path().join("out.jsonl");
    let o = distill(
        &problems,
        &format!("openai:http://127.0.0.1:{port}/v1"),
        &out,
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("cannot reach") && err.contains(&port.to_string()),
        "{err}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    assert!(
        !out.exists(),
        "nothing written for a run that could not start"
    );
}

//! `tally serve`'s connection limits, against the real binary over real sockets: idle
//! keep-alive connections and connections that send their headers slowly (or nothing) are
//! closed on time, a stalled request body is cut, and with more slow-header connections
//! than the process has file descriptors for, `/healthz` still answers.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tally_protocol::{SUBMISSION_HEADER, SigningKey, Submission};

const TALLY: &str = env!("CARGO_BIN_EXE_tally");

fn host() -> SigningKey {
    SigningKey::from_seed(&[4; 32])
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A `tally serve` child, killed when dropped.
struct Served {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tally serve` (under `ulimit -n` if `fds` is given) with 1 s header and body
/// timeouts, a 1.5 s idle timeout and the given extra environment, and waits until it
/// answers.
fn serve(fds: Option<u32>, env: &[(&str, &str)]) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    tally_attestor::generate_key_file(dir.path().join("agg.key")).unwrap();
    let text = format!(
        "listen = \"127.0.0.1:{port}\"\nstore = \"{}\"\nkey_file = \"{}\"\ncontract = \"tally1limits\"\nhosts = [\"{}\"]\n",
        dir.path().join("agg.db").display(),
        dir.path().join("agg.key").display(),
        host().public_key()
    );
    let cfg = dir.path().join("tally.toml");
    std::fs::write(&cfg, text).unwrap();
    let mut cmd = match fds {
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(TALLY);
            c
        }
        None => Command::new(TALLY),
    };
    cmd.args(["serve", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .env("TALLY_HEADER_READ_TIMEOUT_MS", "1000")
        .env("TALLY_BODY_READ_TIMEOUT_MS", "1000")
        .env("TALLY_IDLE_TIMEOUT_MS", "1500")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let served = Served {
        child: cmd.spawn().unwrap(),
        addr: ([127, 0, 0, 1], port).into(),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(served.addr, "/readyz", Duration::from_secs(2)).is_none() {
        assert!(Instant::now() < deadline, "tally serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    served
}

/// `GET path` on a new connection (closed after), within `patience`: the response text.
fn get(addr: SocketAddr, path: &str, patience: Duration) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, patience).ok()?;
    s.set_read_timeout(Some(patience)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    (!out.is_empty()).then_some(out)
}

/// Blocks until the server closes `s` (EOF or reset) and returns how long that took from
/// `since`; panics after `limit`.
fn closed_after(s: &mut TcpStream, since: Instant, limit: Duration) -> Duration {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return since.elapsed(),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return since.elapsed(),
        }
        assert!(since.elapsed() < limit, "still open after {limit:?}");
    }
}

/// Reads one complete response on a keep-alive connection (the `/healthz` answer "ok").
fn read_response(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&out).ends_with("ok") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the answer");
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn idle_keep_alive_connections_are_closed_on_time() {
    let served = serve(None, &[]);
    let mut s = TcpStream::connect(served.addr).unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
            .unwrap();
        let answer = read_response(&mut s);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // Kept alive across requests, then closed once idle for 1.5 s.
    let idle = Instant::now();
    let took = closed_after(&mut s, idle, Duration::from_secs(10));
    assert!(
        took >= Duration::from_millis(1_300) && took <= Duration::from_secs(4),
        "closed after {took:?}"
    );
}

#[test]
fn slow_and_silent_header_connections_are_closed_on_time() {
    let served = serve(None, &[]);
    // Nothing sent at all.
    let start = Instant::now();
    let mut silent = TcpStream::connect(served.addr).unwrap();
    // Headers dripped a byte every 200 ms: activity does not extend the deadline.
    let mut slow = TcpStream::connect(served.addr).unwrap();
    let dripper = {
        let mut w = slow.try_clone().unwrap();
        std::thread::spawn(move || {
            for b in b"GET /healthz HTTP/1.1\r\nhost: a-very-slow-client\r\n".iter() {
                if w.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    for s in [&mut silent, &mut slow] {
        let took = closed_after(s, start, Duration::from_secs(10));
        assert!(
            took >= Duration::from_millis(800) && took <= Duration::from_secs(4),
            "closed after {took:?}"
        );
    }
    dripper.join().unwrap();
    let metrics = get(served.addr, "/metrics", Duration::from_secs(5)).unwrap();
    assert!(
        metrics.contains("tally_connection_timeouts_total{timeout=\"header\"} 2"),
        "{metrics}"
    );
}

#[test]
fn a_stalled_request_body_is_cut_at_the_body_timeout() {
    let served = serve(None, &[]);
    let body = vec![b'x'; 1000];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let signed = Submission::of_body(host().public_key(), now, &body).sign(&host());
    let mut s = TcpStream::connect(served.addr).unwrap();
    write!(
        s,
        "POST /v1/receipts HTTP/1.1\r\nhost: t\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n{SUBMISSION_HEADER}: {}\r\n\r\n",
        body.len(),
        hex::encode(signed.encode())
    )
    .unwrap();
    s.write_all(&body[..10]).unwrap();
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
}

/// The probe of issue 14: with `ulimit -n 256`, about 240 connections sending their
/// headers slowly made `/healthz` time out. The server now serves at most what its
/// descriptors allow and closes slow connections at the header timeout, so a health check
/// queued behind them is answered within about that timeout.
#[test]
fn healthz_answers_while_more_slow_header_connections_than_descriptors_are_held() {
    let served = serve(Some(256), &[("TALLY_HEADER_READ_TIMEOUT_MS", "2000")]);
    let mut slow: Vec<TcpStream> = (0..240)
        .map(|_| {
            let mut s = TcpStream::connect(served.addr).unwrap();
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nhost: sl");
            s
        })
        .collect();
    let start = Instant::now();
    let answer = get(served.addr, "/healthz", Duration::from_secs(8)).expect("/healthz answers");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    // Every slow connection is closed, none served.
    for s in &mut slow {
        closed_after(s, start, Duration::from_secs(15));
    }
    assert!(get(served.addr, "/healthz", Duration::from_secs(2)).is_some());
}

/// `tally bench flood` runs end to end: against this build, unsigned and forged
/// submissions are refused with 401 (unread), the host's own junk answered per receipt.
#[test]
fn bench_flood_runs_and_shows_the_refusals() {
    let out = Command::new(TALLY)
        .args([
            "bench",
            "flood",
            "--receipts",
            "300",
            "--requests",
            "5",
            "--checked-requests",
            "1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = |row: &str| {
        text.lines()
            .find(|l| l.starts_with(row))
            .and_then(|l| l.split_whitespace().rev().nth(1).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {row} row in {text}"))
    };
    assert_eq!(status("unsigned"), "401", "{text}");
    assert_eq!(status("forged signature"), "401", "{text}");
    assert_eq!(status("host-signed junk"), "200", "{text}");
}

//! `tally bench flood`: what a flood of junk submissions costs an aggregator, in CPU time of
//! the server process.
//!
//! The probe of issue 14: one 7 MB `POST /v1/receipts` of 9,000 receipts with junk
//! signatures cost the aggregator a full CPU second, from anyone. This bench starts
//! `tally serve` as a child process (this binary, or `--server PATH`, e.g. an older build;
//! `--baseline PATH` runs the same flood against a second server and prints the ratio),
//! sends such requests and reads the child's CPU time (user + system, all threads, from
//! `/proc/<pid>/stat`) before and after each scenario:
//!
//! - **unsigned**: no `x-tally-submission` header, as an anonymous client sends;
//! - **forged**: the header names the registered host (its key is public) with a junk
//!   signature;
//! - **host's junk**: signed by the registered host itself, every receipt's signatures
//!   junk (an authenticated host hurting only itself; the submission is cut short).
//!
//! The receipts are well formed, name the registered host, model, chain and contract and
//! carry canonical signature scalars and valid curve points, so a server that checks them
//! does the full work of two signature verifications each.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use tally_protocol::merkle::InclusionProof;
use tally_protocol::{
    Digest, HostCheckpoint, Metered, Receipt, SUBMISSION_HEADER, Signature, SignedReceipt,
    SigningKey, Submission,
};

use crate::workload::{self, Rng};

/// What `tally bench flood` is asked to do.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct FloodArgs {
    /// Receipts per request (9,000 make about 7 MB).
    #[arg(long, default_value_t = 9_000)]
    receipts: usize,
    /// Requests per scenario against a server that refuses them unread.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Requests per scenario against a server that checks them (each costs seconds).
    #[arg(long, default_value_t = 3)]
    checked_requests: usize,
    /// The `tally` binary to run as the server (default: this one).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Another `tally` binary to flood the same way, for a ratio (e.g. a build from before
    /// submissions were authenticated).
    #[arg(long)]
    baseline: Option<PathBuf>,
}

/// A `tally serve` child on an ephemeral port, killed when dropped.
struct Server {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The host whose key the flood names (registered with the server).
fn host() -> SigningKey {
    SigningKey::from_seed(&Digest::sha256(b"bench flood host").0)
}

/// Starts `binary serve` with the host and the demo's first model registered, limits that
/// admit a 9,000-receipt request, and only settings every version of `tally serve` knows.
fn start(binary: &Path, receipts: usize) -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let key = dir.path().join("agg.key");
    tally_attestor::generate_key_file(&key)?;
    let model = &workload::models()[0];
    let schedule = dir.path().join("model.schedule.json");
    std::fs::write(&schedule, serde_json::to_vec(&model.schedule)?)?;
    let body_limit = (receipts * (SignedReceipt::MAX_ENCODED_LEN + 4)).max(1 << 20);
    let config = format!(
        r#"listen = "127.0.0.1:{port}"
store = "{db}"
key_file = "{key}"
chain_id = "{chain}"
contract = "{contract}"
hosts = ["{host}"]
body_limit_bytes = {body_limit}
max_receipts = {max}
request_timeout_ms = 300000
seal_interval_ms = 3600000

[[models]]
schedule = "{schedule}"
"#,
        db = dir.path().join("agg.db").display(),
        key = key.display(),
        chain = workload::CHAIN_ID,
        contract = workload::CONTRACT,
        host = host().public_key(),
        max = receipts.max(1),
        schedule = schedule.display(),
    );
    let path = dir.path().join("tally.toml");
    std::fs::write(&path, config)?;
    let child = Command::new(binary)
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {} serve", binary.display()))?;
    let server = Server {
        child,
        addr: ([127, 0, 0, 1], port).into(),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((status, _)) = request(server.addr, "GET", "/readyz", &[], &[])
            && status == 200
        {
            return Ok(server);
        }
        ensure!(
            Instant::now() < deadline,
            "{} serve did not become ready",
            binary.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// CPU time (user + system, every thread, living or exited) of process `pid`.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .context("reading /proc/<pid>/stat (Linux only)")?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .context("short /proc/<pid>/stat")?
            .parse()
            .context("a CPU time in /proc/<pid>/stat")
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(total as f64 / clock_ticks()))
}

/// Clock ticks per second of `/proc` times (`getconf CLK_TCK`, 100 if unknown).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// One HTTP/1.1 request on a fresh connection; the status and the body, or the status
/// alone if the server answered before reading the whole body and closed the connection.
fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(600)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut reader = s.try_clone()?;
    // The body is written from a thread of its own: a server that answers without reading
    // it (and closes) must not deadlock the client.
    let mut writer = s;
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&out);
    });
    let mut answer = Vec::new();
    let read = reader.read_to_end(&mut answer);
    let _ = sender.join();
    if answer.is_empty() {
        read?;
        bail!("no answer to {method} {path}");
    }
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("an HTTP status line")?;
    let body = match text.find("\r\n\r\n") {
        Some(i) => answer[i + 4..].to_vec(),
        None => Vec::new(),
    };
    Ok((status, body))
}

/// A request body of `n` well-formed receipts of the registered host whose payer and host
/// signatures are junk: canonical scalars over valid curve points, so checking each costs a
/// full verification.
fn junk_body(n: usize) -> anyhow::Result<Vec<u8>> {
    let model = &workload::models()[0];
    let guest = tally_sandbox::PINNED_HASH;
    let payer = SigningKey::from_seed(&[0x77; 32]);
    let host_key = host().public_key();
    let mut rng = Rng::new(0x0f100d);
    let now = workload::now_ms();
    let mut junk_sig = |point: &[u8; 32]| {
        let mut s = rng.bytes32();
        s[31] &= 0x0f; // below the group order: canonical
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(point);
        sig[32..].copy_from_slice(&s);
        Signature(sig)
    };
    let mut body = Vec::with_capacity(n * 1400);
    let mut proof_rng = Rng::new(0x0f100e);
    for i in 0..n as u64 {
        let request = Digest::sha256(&i.to_be_bytes());
        let mut auth =
            workload::authorize(&payer, &host_key, model, i + 1, request, now + 3_600_000);
        auth.signature = junk_sig(&payer.public_key().0);
        let facts = workload::facts(&mut Rng::new(i), model, request, now);
        let fee = 1_000;
        let receipt = Receipt {
            authorization: auth,
            facts,
            metered: Metered { units: 1, fee },
            guest,
            schedule: model.schedule.hash(),
            host_seq: i + 1,
            channel_total: fee * u128::from(i + 1),
            timestamp_ms: now,
        };
        // A proof of junk hashes whose root is computed, so the receipt is included and
        // costs the aggregator its checkpoint's signature check, which fails.
        let proof: Vec<Digest> = (0..i.count_ones())
            .map(|_| Digest(proof_rng.bytes32()))
            .collect();
        let root = InclusionProof {
            leaf_index: i,
            tree_size: i + 1,
            hashes: proof.clone(),
        }
        .compute_root(&receipt.leaf_hash())
        .unwrap_or(Digest::ZERO);
        let signed = SignedReceipt {
            receipt,
            checkpoint: HostCheckpoint {
                size: i + 1,
                root,
                signature: junk_sig(&host_key.0),
            },
            proof,
        };
        let bytes = signed.encode();
        body.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        body.extend_from_slice(&bytes);
    }
    Ok(body)
}

/// A flood scenario: how its requests are authenticated.
#[derive(Clone, Copy)]
enum Scenario {
    Unsigned,
    Forged,
    HostsJunk,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Unsigned => "unsigned",
            Scenario::Forged => "forged signature",
            Scenario::HostsJunk => "host-signed junk",
        }
    }

    fn headers(self, body: &[u8]) -> Vec<(&'static str, String)> {
        let mut h = vec![("content-type", "application/octet-stream".to_owned())];
        let key = host();
        let mut signed = Submission::of_body(key.public_key(), workload::now_ms(), body).sign(&key);
        match self {
            Scenario::Unsigned => return h,
            Scenario::Forged => signed.signature.0[40] ^= 0x01,
            Scenario::HostsJunk => {}
        }
        h.push((SUBMISSION_HEADER, hex::encode(signed.encode())));
        h
    }
}

/// What one scenario cost the server.
struct Cost {
    requests: usize,
    per_request: Duration,
    status: u16,
}

/// Sends `scenario`'s requests and measures the server's CPU time over them. A first
/// request tells how the server treats them: refused (cheap: `requests` of them) or
/// checked (`checked` of them).
fn flood(
    server: &Server,
    body: &[u8],
    scenario: Scenario,
    requests: usize,
    checked: usize,
) -> anyhow::Result<Cost> {
    let pid = server.child.id();
    let send = || -> anyhow::Result<u16> {
        let (status, _) = request(
            server.addr,
            "POST",
            "/v1/receipts",
            &scenario.headers(body),
            body,
        )?;
        Ok(status)
    };
    let before = cpu_time(pid)?;
    let status = send()?;
    let first = cpu_time(pid)? - before;
    let n = if first > Duration::from_millis(100) {
        checked.max(1)
    } else {
        requests.max(1)
    };
    let before = cpu_time(pid)?;
    for _ in 0..n {
        send()?;
    }
    // Let the server finish what it started before reading its clock.
    std::thread::sleep(Duration::from_millis(200));
    let spent = cpu_time(pid)? - before;
    Ok(Cost {
        requests: n,
        per_request: spent / u32::try_from(n).unwrap_or(u32::MAX),
        status,
    })
}

fn measure(binary: &Path, body: &[u8], args: &FloodArgs) -> anyhow::Result<Vec<Cost>> {
    eprintln!("flooding {} serve …", binary.display());
    let server = start(binary, args.receipts)?;
    let idle_before = cpu_time(server.child.id())?;
    std::thread::sleep(Duration::from_secs(1));
    let idle = cpu_time(server.child.id())? - idle_before;
    eprintln!(
        "  idle: {:.1} ms of CPU per second",
        idle.as_secs_f64() * 1e3
    );
    [Scenario::Unsigned, Scenario::Forged, Scenario::HostsJunk]
        .into_iter()
        .map(|s| flood(&server, body, s, args.requests, args.checked_requests))
        .collect()
}

pub(crate) fn run(args: FloodArgs) -> anyhow::Result<ExitCode> {
    ensure!(args.receipts > 0, "--receipts must be positive");
    let server = match &args.server {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    let body = junk_body(args.receipts)?;
    let costs = measure(&server, &body, &args)?;
    let baseline = match &args.baseline {
        Some(p) => Some(measure(p, &body, &args)?),
        None => None,
    };
    println!();
    println!(
        "tally bench flood — {} receipts with junk signatures per request ({:.1} MB), server CPU time (user + system, /proc/<pid>/stat) per request",
        args.receipts,
        body.len() as f64 / 1e6
    );
    println!(
        "{:<20} {:>9} {:>7} {:>16} {:>12} {:>9} {:>16} {:>10}",
        "scenario",
        "requests",
        "status",
        "CPU ms/request",
        "baseline",
        "status",
        "CPU ms/request",
        "ratio"
    );
    for (i, s) in [Scenario::Unsigned, Scenario::Forged, Scenario::HostsJunk]
        .into_iter()
        .enumerate()
    {
        let c = &costs[i];
        let ms = c.per_request.as_secs_f64() * 1e3;
        match baseline.as_ref().map(|b| &b[i]) {
            Some(b) => {
                let bms = b.per_request.as_secs_f64() * 1e3;
                println!(
                    "{:<20} {:>9} {:>7} {:>16.2} {:>12} {:>9} {:>16.2} {:>9.2}%",
                    s.name(),
                    c.requests,
                    c.status,
                    ms,
                    b.requests,
                    b.status,
                    bms,
                    100.0 * ms / bms.max(1e-9)
                );
            }
            None => println!(
                "{:<20} {:>9} {:>7} {:>16.2}",
                s.name(),
                c.requests,
                c.status,
                ms
            ),
        }
    }
    println!(
        "(ratio: this server's CPU per request / the baseline's; /proc times tick every 10 ms, so cheap scenarios send many requests)"
    );
    Ok(ExitCode::SUCCESS)
}

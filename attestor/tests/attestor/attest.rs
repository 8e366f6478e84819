//! The attestor end to end, with the real sandbox and the committed metering guest:
//! receipts, refusals, concurrency, reopening, a journal failure and `kill -9`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "clippy's allow-unwrap-in-tests covers #[test] functions, not the helpers here"
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tally_attestor::{
    AttestError, Attestor, AttestorConfig, ChannelState, GroupCommit, Journal, read_journal,
};
use tally_protocol::{
    Authorization, ChannelId, DecodeError, Digest, FinishStatus, MeterInput, Metered,
    PriceSchedule, Refusal, SignatureError, SignedAuthorization, SignedReceipt, SigningKey,
    UsageFacts,
};

use tally_sandbox::{MeterError, PINNED_HASH, Sandbox, SandboxConfig};

const CHAIN: &str = "tally-test-1";
const CONTRACT: &str = "tally1contract";
/// The tests' clock: calls are attested "at" this time unless a test says otherwise.
const NOW: u64 = 1_700_000_000_000;

/// One sandbox for the whole test binary (compiling the guest is the slow part).
fn sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    Arc::clone(SANDBOX.get_or_init(|| Arc::new(Sandbox::pinned(SandboxConfig::default()).unwrap())))
}

fn host_key() -> SigningKey {
    SigningKey::from_seed(&[200; 32])
}

fn payer_key(i: u8) -> SigningKey {
    SigningKey::from_seed(&[i; 32])
}

fn model() -> Digest {
    Digest::sha256(b"model: tally-test-7b")
}

fn schedule() -> PriceSchedule {
    tally_testkit::two_tier_schedule(model())
}

fn config(journal_path: &Path, group_commit: GroupCommit) -> AttestorConfig {
    AttestorConfig {
        chain_id: CHAIN.into(),
        contract: CONTRACT.into(),
        journal_path: journal_path.to_path_buf(),
        group_commit,
        schedules: vec![schedule()],
    }
}

async fn open(journal_path: &Path) -> Attestor {
    Attestor::open(
        config(journal_path, GroupCommit::default()),
        host_key(),
        sandbox(),
    )
    .await
    .unwrap()
}

/// One call: what the payer authorises and what the host reports, both editable before
/// the payer signs.
#[derive(Clone)]
struct Call {
    payer: u8,
    auth: Authorization,
    facts: UsageFacts,
}

fn call(payer: u8, seq: u64) -> Call {
    let request_digest = Digest::sha256(&[&[payer][..], &seq.to_be_bytes()].concat());
    let prompt_tokens = 1_000 + 37 * seq;
    let completion_tokens = 100 + (seq % 50) * 3;
    Call {
        payer,
        auth: Authorization {
            chain_id: CHAIN.into(),
            contract: CONTRACT.into(),
            payer: payer_key(payer).public_key(),
            host: host_key().public_key(),
            model: model(),
            seq,
            request_digest,
            max_fee: 1_000_000_000,
            cumulative_cap: 1_000_000_000_000,
            expires_at_ms: NOW + 60_000,
        },
        facts: UsageFacts {
            model: model(),
            request_digest,
            response_digest: Digest::sha256(b"an answer"),
            prompt_tokens,
            cached_prompt_tokens: prompt_tokens / 4,
            completion_tokens,
            reasoning_tokens: completion_tokens / 2,
            started_at_ms: NOW - 2_000,
            first_token_ms: 150,
            duration_ms: 1_900,
            finish: FinishStatus::Stop,
        },
    }
}

impl Call {
    fn signed(&self) -> SignedAuthorization {
        self.auth.clone().sign(&payer_key(self.payer))
    }

    /// What the metering function gives natively for this call.
    fn expected(&self) -> Result<Metered, Refusal> {
        tally_guest::meter(&MeterInput {
            facts: self.facts.clone(),
            schedule: schedule(),
            max_fee: self.auth.max_fee,
        })
    }

    fn fee(&self) -> u128 {
        self.expected().unwrap().fee
    }

    fn channel(&self) -> ChannelId {
        self.auth.channel()
    }

    async fn attest(&self, attestor: &Attestor) -> Result<SignedReceipt, AttestError> {
        attestor.attest_at(&self.signed(), &self.facts, NOW).await
    }
}

fn journal_len(attestor: &Attestor) -> u64 {
    std::fs::metadata(attestor.journal_path()).unwrap().len()
}

fn stored(attestor: &Attestor) -> Vec<SignedReceipt> {
    attestor
        .receipts()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Asserts `receipts` form one gap-free host log from `host_seq` 1, all valid bundles of
/// one log (none contradicts the last).
fn assert_chain(receipts: &[SignedReceipt]) {
    for (i, r) in receipts.iter().enumerate() {
        assert_eq!(r.receipt.host_seq, i as u64 + 1);
        r.verify().unwrap();
    }
    if let Some(last) = receipts.last() {
        for r in receipts {
            assert_eq!(
                r.contradiction(last).unwrap_err().code(),
                "no_contradiction",
                "receipt {} contradicts the log",
                r.receipt.host_seq
            );
        }
    }
}

/// Asserts every channel's receipts have strictly rising `seq` and running totals that add
/// up their fees, in chain order.
fn assert_channels(receipts: &[SignedReceipt]) -> HashMap<ChannelId, ChannelState> {
    let mut channels: HashMap<ChannelId, ChannelState> = HashMap::new();
    for r in receipts {
        let st = channels.entry(r.receipt.channel()).or_default();
        let seq = r.receipt.authorization.authorization.seq;
        assert!(
            seq > st.last_seq,
            "channel seq went from {} to {seq}",
            st.last_seq
        );
        assert_eq!(r.receipt.channel_total, st.total + r.receipt.metered.fee);
        *st = ChannelState {
            last_seq: seq,
            total: r.receipt.channel_total,
        };
    }
    channels
}

#[tokio::test]
async fn a_good_call_returns_a_durable_verified_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let attestor = open(&dir.path().join("journal")).await;
    assert_eq!(attestor.public_key(), host_key().public_key());
    assert_eq!(attestor.guest_hash(), PINNED_HASH);

    let first = call(1, 1);
    let r1 = first.attest(&attestor).await.unwrap();
    r1.verify().unwrap();
    let r = &r1.receipt;
    assert_eq!(r.metered, first.expected().unwrap());
    assert!(r.metered.fee > 0);
    assert_eq!(r.authorization, first.signed());
    assert_eq!(r.facts, first.facts);
    assert_eq!(r.guest, PINNED_HASH);
    assert_eq!(r.schedule, schedule().hash());
    assert_eq!(r.host_seq, 1);
    // At low load a group is one receipt: its own checkpoint, signed for it.
    assert_eq!((r1.checkpoint.size, r1.proof.len()), (1, 0));
    assert_eq!(r1.checkpoint.root, r.leaf_hash());
    assert_eq!(r.channel_total, r.metered.fee);
    assert_eq!(r.timestamp_ms, NOW);
    assert_eq!(r.host(), &host_key().public_key());

    let second = call(1, 2);
    let r2 = second.attest(&attestor).await.unwrap();
    r2.verify().unwrap();
    assert_eq!(r2.receipt.metered, second.expected().unwrap());
    assert_eq!(r2.receipt.host_seq, 2);
    assert_eq!(r2.checkpoint.size, 2);
    assert_eq!(
        r1.contradiction(&r2).unwrap_err().code(),
        "no_contradiction"
    );
    assert_eq!(r2.receipt.channel_total, first.fee() + second.fee());

    // Returned means durable: both are in the journal already.
    assert_eq!(stored(&attestor), vec![r1, r2.clone()]);
    assert_eq!(attestor.head(), 2);
    assert_eq!(attestor.log_frontier().size(), 2);
    assert_eq!(attestor.log_frontier().root(), r2.checkpoint.root);
    assert_eq!(
        attestor.channel(&first.channel()),
        Some(ChannelState {
            last_seq: 2,
            total: first.fee() + second.fee()
        })
    );
}

#[tokio::test]
async fn refused_calls_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let attestor = open(&dir.path().join("journal")).await;
    // Channel of payer 1 stands at seq 5 with one receipt.
    let accepted = call(1, 5);
    let r = accepted.attest(&attestor).await.unwrap();
    let total = r.receipt.channel_total;
    let len = journal_len(&attestor);
    let head = attestor.head();

    let check = |c: Call, signed: SignedAuthorization, expected: AttestError| {
        let attestor = &attestor;
        async move {
            let got = attestor.attest_at(&signed, &c.facts, NOW).await;
            assert_eq!(got, Err(expected.clone()), "expected {expected:?}");
            assert_eq!(
                journal_len(attestor),
                len,
                "{expected:?} wrote to the journal"
            );
            assert_eq!(attestor.head(), head, "{expected:?} moved the chain");
        }
    };
    let refuse = |c: Call, expected: AttestError| {
        let signed = c.signed();
        check(c, signed, expected)
    };
    let edit = |f: &dyn Fn(&mut Call)| {
        let mut c = call(1, 6);
        f(&mut c);
        c
    };

    let expired = edit(&|c| c.auth.expires_at_ms = NOW - 1);
    refuse(
        expired,
        AttestError::Expired {
            expires_at_ms: NOW - 1,
            now_ms: NOW,
        },
    )
    .await;
    refuse(call(1, 5), AttestError::Replayed { last_seq: 5 }).await;
    refuse(call(1, 4), AttestError::Replayed { last_seq: 5 }).await;
    refuse(call(1, 1), AttestError::Replayed { last_seq: 5 }).await;
    let c = call(1, 6);
    let cap = total + c.fee() - 1;
    refuse(
        edit(&|c| c.auth.cumulative_cap = cap),
        AttestError::OverCap {
            total,
            fee: c.fee(),
            cap,
        },
    )
    .await;
    // Signed by a key other than the payer's.
    let c = call(1, 6);
    let forged = c.auth.clone().sign(&payer_key(2));
    check(
        c.clone(),
        forged,
        AttestError::PayerSignature(SignatureError::Invalid),
    )
    .await;
    // A signature altered in transit.
    let mut altered = c.signed();
    altered.signature.0[10] ^= 1;
    check(
        c,
        altered,
        AttestError::PayerSignature(SignatureError::Invalid),
    )
    .await;
    refuse(
        edit(&|c| c.auth.host = payer_key(9).public_key()),
        AttestError::WrongHost,
    )
    .await;
    refuse(
        edit(&|c| c.auth.chain_id = "another-chain".into()),
        AttestError::WrongChain,
    )
    .await;
    refuse(
        edit(&|c| c.auth.contract = "tally1other".into()),
        AttestError::WrongContract,
    )
    .await;
    let other_model = Digest::sha256(b"another model");
    refuse(
        edit(&|c| {
            c.auth.model = other_model;
            c.facts.model = other_model;
        }),
        AttestError::ModelNotServed,
    )
    .await;
    refuse(
        edit(&|c| c.facts.model = other_model),
        AttestError::ModelMismatch,
    )
    .await;
    refuse(
        edit(&|c| c.facts.request_digest = Digest::sha256(b"another request")),
        AttestError::RequestDigestMismatch,
    )
    .await;
    refuse(
        edit(&|c| c.facts.cached_prompt_tokens = c.facts.prompt_tokens + 1),
        AttestError::Facts(DecodeError::Invalid {
            field: "cached_prompt_tokens",
            reason: "more than prompt_tokens",
        }),
    )
    .await;
    refuse(
        edit(&|c| c.auth.seq = 0),
        AttestError::Authorization(DecodeError::Invalid {
            field: "seq",
            reason: "sequence numbers start at 1",
        }),
    )
    .await;
    let c = call(1, 6);
    let fee = c.fee();
    refuse(
        edit(&|c| c.auth.max_fee = fee - 1),
        AttestError::Metering(MeterError::Refused(Refusal::FeeAboveMax { fee })),
    )
    .await;

    // The chain continues without a hole.
    let next = call(1, 6).attest(&attestor).await.unwrap();
    assert_eq!(next.receipt.host_seq, 2);
    assert_eq!(
        r.contradiction(&next).unwrap_err().code(),
        "no_contradiction"
    );
    assert_eq!(next.receipt.channel_total, total + fee);
    assert_chain(&stored(&attestor));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_form_one_gap_free_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let group_commit = GroupCommit {
        max_batch: 64,
        max_delay: Duration::from_millis(1),
    };
    let attestor = Arc::new(
        Attestor::open(config(&path, group_commit), host_key(), sandbox())
            .await
            .unwrap(),
    );
    const TASKS: u8 = 8;
    const CALLS: u64 = 200;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let attestor = Arc::clone(&attestor);
        tasks.push(tokio::spawn(async move {
            // Each task owns 4 channels (payers), whose seqs it advances in turn.
            let mut receipts = Vec::new();
            for i in 0..CALLS {
                let c = call(1 + t * 4 + (i % 4) as u8, 1 + i / 4);
                receipts.push(c.attest(&attestor).await.unwrap());
            }
            receipts
        }));
    }
    let mut returned = Vec::new();
    for t in tasks {
        returned.extend(t.await.unwrap());
    }
    let total = u64::from(TASKS) * CALLS;
    assert_eq!(returned.len() as u64, total);

    let stored = stored(&attestor);
    assert_eq!(stored.len() as u64, total);
    assert_chain(&stored);
    let channels = assert_channels(&stored);
    assert_eq!(channels.len(), usize::from(TASKS) * 4);
    for r in &returned {
        assert_eq!(&stored[r.receipt.host_seq as usize - 1], r);
    }
    for (id, st) in &channels {
        assert_eq!(attestor.channel(id), Some(*st));
    }
    let stats = attestor.journal_stats();
    assert_eq!(stats.records, total);
    assert!(stats.batches < total, "no group commit: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_calls_on_one_channel_never_reorder_it() {
    let dir = tempfile::tempdir().unwrap();
    let attestor = Arc::new(open(&dir.path().join("journal")).await);
    // 8 tasks race on one channel with interleaved seqs: a call may lose the race to a
    // higher seq (refused as a replay) but the channel's receipts stay in seq order.
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let attestor = Arc::clone(&attestor);
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..40 {
                let seq = 1 + t + 8 * i;
                outcomes.push((seq, call(3, seq).attest(&attestor).await));
            }
            outcomes
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        for (seq, outcome) in t.await.unwrap() {
            match outcome {
                Ok(r) => {
                    assert_eq!(r.receipt.authorization.authorization.seq, seq);
                    accepted += 1;
                }
                Err(AttestError::Replayed { last_seq }) => assert!(last_seq >= seq),
                Err(e) => panic!("seq {seq}: {e}"),
            }
        }
    }
    let stored = stored(&attestor);
    assert_eq!(stored.len(), accepted);
    assert_chain(&stored);
    assert_channels(&stored);
}

#[tokio::test]
async fn reopening_continues_the_chain_and_still_refuses_replays() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let attestor = open(&path).await;
    let mut last = None;
    for seq in 1..=5 {
        for payer in [1, 2] {
            last = Some(call(payer, seq).attest(&attestor).await.unwrap());
        }
    }
    let last = last.unwrap();
    let head = attestor.head();
    let ch1 = attestor.channel(&call(1, 1).channel()).unwrap();
    let before = stored(&attestor);
    drop(attestor);

    let attestor = open(&path).await;
    assert_eq!(attestor.head(), head);
    assert_eq!(head, 10);
    assert_eq!(attestor.log_frontier().root(), last.checkpoint.root);
    assert_eq!(attestor.channel(&call(1, 1).channel()), Some(ch1));
    assert_eq!(stored(&attestor), before);

    assert_eq!(
        call(1, 5).attest(&attestor).await,
        Err(AttestError::Replayed { last_seq: 5 })
    );
    assert_eq!(
        call(2, 3).attest(&attestor).await,
        Err(AttestError::Replayed { last_seq: 5 })
    );
    // The restored total still counts against the cap.
    let mut over = call(1, 6);
    over.auth.cumulative_cap = ch1.total + over.fee() - 1;
    assert_eq!(
        over.attest(&attestor).await,
        Err(AttestError::OverCap {
            total: ch1.total,
            fee: over.fee(),
            cap: ch1.total + over.fee() - 1
        })
    );
    let next = call(1, 6);
    let r = next.attest(&attestor).await.unwrap();
    assert_eq!(r.receipt.host_seq, 11);
    assert_eq!(
        last.contradiction(&r).unwrap_err().code(),
        "no_contradiction"
    );
    assert_eq!(r.receipt.channel_total, ch1.total + next.fee());
    assert_chain(&stored(&attestor));
}

#[tokio::test]
async fn timestamps_never_go_back_along_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let attestor = open(&dir.path().join("journal")).await;
    let c = call(1, 1);
    let first = attestor
        .attest_at(&c.signed(), &c.facts, NOW)
        .await
        .unwrap();
    assert_eq!(first.receipt.timestamp_ms, NOW);
    // The clock steps back a second: the receipt keeps the chain's time.
    let c = call(2, 1);
    let second = attestor
        .attest_at(&c.signed(), &c.facts, NOW - 1_000)
        .await
        .unwrap();
    assert_eq!(second.receipt.timestamp_ms, NOW);
    second.verify().unwrap();
    // So an authorisation that expired before the chain's time is refused, even though
    // the stepped-back clock has not reached its expiry.
    let mut c = call(3, 1);
    c.auth.expires_at_ms = NOW - 500;
    assert_eq!(
        attestor.attest_at(&c.signed(), &c.facts, NOW - 1_000).await,
        Err(AttestError::Expired {
            expires_at_ms: NOW - 500,
            now_ms: NOW
        })
    );
    // The chain's time survives a restart.
    let path = attestor.journal_path().to_path_buf();
    drop(attestor);
    let attestor = open(&path).await;
    let c = call(4, 1);
    let third = attestor.attest_at(&c.signed(), &c.facts, 5).await.unwrap();
    assert_eq!(third.receipt.timestamp_ms, NOW);
}

#[tokio::test]
async fn the_real_clock_is_used_by_attest() {
    let dir = tempfile::tempdir().unwrap();
    let attestor = open(&dir.path().join("journal")).await;
    let mut c = call(1, 1);
    c.auth.expires_at_ms = u64::MAX;
    let r = attestor.attest(&c.signed(), &c.facts).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(r.receipt.timestamp_ms <= now && r.receipt.timestamp_ms + 60_000 > now);
    // An authorisation that expired at the fixed test time has expired for real too.
    let c = call(1, 2);
    assert!(matches!(
        attestor.attest(&c.signed(), &c.facts).await,
        Err(AttestError::Expired { .. })
    ));
}

#[tokio::test]
async fn another_hosts_journal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let attestor = open(&path).await;
    call(1, 1).attest(&attestor).await.unwrap();
    drop(attestor);
    let other = SigningKey::from_seed(&[201; 32]);
    let err = Attestor::open(config(&path, GroupCommit::default()), other, sandbox())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        AttestError::ForeignJournal {
            host: host_key().public_key()
        }
    );
}

#[tokio::test]
async fn unusable_configurations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let check = |edit: &dyn Fn(&mut AttestorConfig), reason: &'static str| {
        let mut c = config(&path, GroupCommit::default());
        edit(&mut c);
        async move {
            let err = Attestor::open(c, host_key(), sandbox()).await.unwrap_err();
            assert_eq!(err, AttestError::InvalidConfig { reason });
        }
    };
    check(
        &|c| c.schedules.clear(),
        "no price schedule: the attestor would serve no model",
    )
    .await;
    check(
        &|c| c.schedules.push(schedule()),
        "two price schedules for one model",
    )
    .await;
    check(
        &|c| c.schedules[0].tiers.clear(),
        "a price schedule breaks the tier rules",
    )
    .await;
    check(
        &|c| c.chain_id = "has space".into(),
        "chain_id must be 1..=64 printable ASCII characters",
    )
    .await;
    check(
        &|c| c.contract = String::new(),
        "contract must be 1..=128 printable ASCII characters",
    )
    .await;
    assert!(
        !path.exists(),
        "a refused configuration created the journal"
    );
}

/// Re-runs this test binary as a child running only `test`, with `env` set and the shell
/// `prelude` before it (e.g. resource limits), and returns the child.
fn spawn_child(test: &str, env: (&str, &Path), prelude: &str) -> std::process::Child {
    let exe = std::env::current_exe().unwrap();
    let test = crate::test_name(module_path!(), test);
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{prelude} exec \"$0\" --exact {test} --nocapture --test-threads=1"
        ))
        .arg(exe)
        .env(env.0, env.1)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Parses the child's `ok <host_seq> <id>` lines.
fn parse_ok(line: &str) -> Option<(u64, String)> {
    let mut parts = line.strip_prefix("ok ")?.split(' ');
    let seq = parts.next()?.parse().ok()?;
    Some((seq, parts.next()?.to_string()))
}

/// Asserts every receipt the child reported as returned is stored, unchanged.
fn assert_returned_are_stored(returned: &[(u64, String)], stored: &[SignedReceipt]) {
    for (seq, id) in returned {
        let r = stored
            .get(*seq as usize - 1)
            .unwrap_or_else(|| panic!("returned receipt {seq} is lost"));
        assert_eq!(&r.id().to_string(), id, "returned receipt {seq} differs");
    }
}

const FULL_DISK_CHILD: &str = "TALLY_ATTEST_FULL_DISK_CHILD";

/// A write that fails (here: the file-size limit, `EFBIG`) poisons the attestor: that call
/// and every later one fail, nothing is returned after it, and reopening recovers exactly
/// the receipts that were returned, cutting the partly written batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_failure_poisons_the_attestor() {
    if let Some(path) = std::env::var_os(FULL_DISK_CHILD) {
        println!(); // Ends the harness's "test ... " line.
        let attestor = open(Path::new(&path)).await;
        for seq in 1.. {
            match call(1, seq).attest(&attestor).await {
                Ok(r) => println!("ok {} {}", r.receipt.host_seq, r.id()),
                Err(e) => {
                    println!("failed {e:?}");
                    break;
                }
            }
        }
        let after = call(2, 1).attest(&attestor).await;
        println!("then {after:?}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    // Ignore SIGXFSZ so an oversized write fails with EFBIG instead of killing the child;
    // 16 blocks of 512 or 1024 bytes hold 10 to 22 receipts.
    let child = spawn_child(
        "a_journal_failure_poisons_the_attestor",
        (FULL_DISK_CHILD, &path),
        "trap '' XFSZ; ulimit -f 16;",
    );
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let out = String::from_utf8(out.stdout).unwrap();
    let returned: Vec<_> = out.lines().filter_map(parse_ok).collect();
    assert!(returned.len() >= 5, "{out}");
    let failed = out.lines().find(|l| l.starts_with("failed ")).unwrap();
    assert!(
        failed.contains("Journal(Io { op: \"write\", kind: FileTooLarge"),
        "{failed}"
    );
    assert!(out.contains("then Err(Poisoned)"), "{out}");

    let (journal, recovered) = Journal::open(
        &path,
        GroupCommit::default(),
        tally_attestor::JournalSigner {
            key: host_key(),
            chain_id: CHAIN.into(),
            contract: CONTRACT.into(),
        },
    )
    .unwrap();
    drop(journal);
    assert!(recovered.truncated_bytes > 0, "no partial write to cut");
    let kept: Vec<_> = read_journal(&path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(kept.len(), returned.len(), "{out} {recovered:?}");
    assert_returned_are_stored(&returned, &kept);
    // The attestor reopens and continues the chain.
    let attestor = open(&path).await;
    let r = call(1, 1_000).attest(&attestor).await.unwrap();
    assert_eq!(r.receipt.host_seq, returned.len() as u64 + 1);
    assert_chain(&stored(&attestor));
}

const KILL_CHILD: &str = "TALLY_ATTEST_KILL_CHILD";

/// Runs this test binary as a child attesting on 4 tasks, prints `ok <host_seq> <id>`
/// for each returned receipt, kills it with SIGKILL mid-stream, and checks that every
/// returned receipt survived and the reopened attestor continues the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_returned_receipt() {
    if let Some(path) = std::env::var_os(KILL_CHILD) {
        println!(); // Ends the harness's "test ... " line.
        let attestor = Arc::new(open(Path::new(&path)).await);
        let tasks: Vec<_> = (0..4u8)
            .map(|t| {
                let attestor = Arc::clone(&attestor);
                tokio::spawn(async move {
                    for seq in 1.. {
                        let r = call(10 + t, seq).attest(&attestor).await.unwrap();
                        println!("ok {} {}", r.receipt.host_seq, r.id());
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let mut child = spawn_child("kill_9_loses_no_returned_receipt", (KILL_CHILD, &path), "");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut returned = Vec::new();
    while returned.len() < 200 {
        let line = lines.next().expect("child ended early").unwrap();
        returned.extend(parse_ok(&line));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    returned.extend(lines.map_while(Result::ok).filter_map(|l| parse_ok(&l)));

    let attestor = open(&path).await;
    let stored = stored(&attestor);
    assert_chain(&stored);
    assert_channels(&stored);
    assert_returned_are_stored(&returned, &stored);
    let r = call(1, 1).attest(&attestor).await.unwrap();
    assert_eq!(r.receipt.host_seq, stored.len() as u64 + 1);
    assert_eq!(
        stored.last().unwrap().contradiction(&r).unwrap_err().code(),
        "no_contradiction",
        "the reopened attestor continues the same log"
    );
}

//! The durable journal: recovery, torn tails, group commit, ordering, poisoning, and a
//! real `kill -9` of a process that is appending.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "clippy's allow-unwrap-in-tests covers #[test] functions, not the helpers here"
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tally_attestor::{
    ChannelState, Damage, Defect, GroupCommit, JOURNAL_MAGIC, Journal, JournalError, Recovered,
    check_journal, read_journal, write_journal,
};
use tally_protocol::{
    Authorization, ChannelId, Digest, FinishStatus, Metered, Receipt, ReceiptId, SignedReceipt,
    SigningKey, UsageFacts,
};

/// Builds a valid host chain of receipts without a sandbox (the journal does not meter).
struct Chain {
    host: SigningKey,
    payers: Vec<SigningKey>,
    model: Digest,
    last_seq: u64,
    last_id: ReceiptId,
    channels: HashMap<ChannelId, ChannelState>,
}

impl Chain {
    fn new() -> Chain {
        Chain::resume(&Recovered::default())
    }

    fn resume(r: &Recovered) -> Chain {
        Chain {
            host: SigningKey::from_seed(&[7; 32]),
            payers: (1..=5u8).map(|i| SigningKey::from_seed(&[i; 32])).collect(),
            model: Digest::sha256(b"model"),
            last_seq: r.last_host_seq,
            last_id: r.last_id,
            channels: r.channels.clone(),
        }
    }

    /// The next receipt of the chain; channels (one per payer) take turns.
    fn next(&mut self) -> SignedReceipt {
        let host_seq = self.last_seq + 1;
        let payer = &self.payers[(host_seq % 5) as usize];
        let host = self.host.public_key();
        let channel = ChannelId::new(&payer.public_key(), &host, &self.model);
        let st = self.channels.entry(channel).or_default();
        let fee = 1_000 + u128::from(host_seq);
        let request_digest = Digest::sha256(&host_seq.to_be_bytes());
        let authorization = Authorization {
            chain_id: "tally-test-1".into(),
            contract: "tally1contract".into(),
            payer: payer.public_key(),
            host,
            model: self.model,
            seq: st.last_auth_seq + 1,
            request_digest,
            max_fee: 1_000_000,
            cumulative_cap: u128::MAX,
            expires_at_ms: u64::MAX,
        }
        .sign(payer);
        let receipt = Receipt {
            authorization,
            facts: UsageFacts {
                model: self.model,
                request_digest,
                response_digest: Digest::sha256(b"response"),
                prompt_tokens: 100,
                cached_prompt_tokens: 10,
                completion_tokens: 50,
                reasoning_tokens: 0,
                started_at_ms: 1_700_000_000_000,
                first_token_ms: 5,
                duration_ms: 9,
                finish: FinishStatus::Stop,
            },
            metered: Metered { units: 150, fee },
            guest: Digest::sha256(b"guest"),
            schedule: Digest::sha256(b"schedule"),
            host_seq,
            prev_receipt: self.last_id,
            channel_total: st.total + fee,
            timestamp_ms: 1_700_000_000_000 + host_seq,
        };
        *st = ChannelState {
            last_auth_seq: receipt.authorization.authorization.seq,
            total: receipt.channel_total,
        };
        self.last_seq = host_seq;
        self.last_id = receipt.id();
        receipt.sign(&self.host)
    }

    fn take(&mut self, n: usize) -> Vec<SignedReceipt> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn gc() -> GroupCommit {
    GroupCommit {
        max_batch: 64,
        max_delay: Duration::ZERO,
    }
}

fn all(path: &Path) -> Vec<SignedReceipt> {
    read_journal(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Asserts `receipts` form one gap-free host chain from `host_seq` 1.
fn assert_chain(receipts: &[SignedReceipt]) {
    let mut prev = Digest::ZERO;
    for (i, r) in receipts.iter().enumerate() {
        assert_eq!(r.receipt.host_seq, i as u64 + 1);
        assert_eq!(r.receipt.prev_receipt, prev, "link at {}", i + 1);
        prev = r.id();
    }
}

/// The state recovery must rebuild from `receipts`.
fn expected_state(receipts: &[SignedReceipt]) -> Recovered {
    let mut st = Recovered::default();
    for r in receipts {
        st.last_host_seq = r.receipt.host_seq;
        st.last_id = r.id();
        st.last_timestamp_ms = r.receipt.timestamp_ms;
        st.host = Some(*r.receipt.host());
        st.count += 1;
        st.channels.insert(
            r.receipt.channel(),
            ChannelState {
                last_auth_seq: r.receipt.authorization.authorization.seq,
                total: r.receipt.channel_total,
            },
        );
    }
    st
}

/// Appends `receipts` one by one, each awaited.
async fn append_all(journal: &Journal, receipts: &[SignedReceipt]) {
    for r in receipts {
        journal.append(r).await.unwrap();
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[tokio::test]
async fn new_journal_holds_only_the_magic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let (journal, rec) = Journal::open(&path, gc()).unwrap();
    assert_eq!(rec, Recovered::default());
    drop(journal);
    assert_eq!(std::fs::read(&path).unwrap(), JOURNAL_MAGIC);
    let (_journal, rec) = Journal::open(&path, gc()).unwrap();
    assert_eq!(rec, Recovered::default());
}

#[tokio::test]
async fn append_then_reopen_restores_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let receipts = Chain::new().take(40);
    let (journal, _) = Journal::open(&path, gc()).unwrap();
    append_all(&journal, &receipts).await;
    let stats = journal.stats();
    assert_eq!((stats.records, stats.durable_host_seq), (40, 40));
    assert_eq!(stats.durable_len, file_len(&path));
    drop(journal);

    let (journal, rec) = Journal::open(&path, gc()).unwrap();
    assert_eq!(rec, expected_state(&receipts));
    assert_eq!(rec.channels.len(), 5);
    assert_eq!(all(&path), receipts);
    assert_chain(&all(&path));

    // The chain continues where it stopped.
    let more = Chain::resume(&rec).take(3);
    append_all(&journal, &more).await;
    drop(journal);
    let (_, rec) = Journal::open(&path, gc()).unwrap();
    assert_eq!(rec, expected_state(&[receipts, more].concat()));
}

#[tokio::test]
async fn receipts_of_an_open_journal_are_its_durable_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let receipts = Chain::new().take(10);
    let (journal, _) = Journal::open(&path, gc()).unwrap();
    append_all(&journal, &receipts).await;
    let read: Vec<_> = journal.receipts().unwrap().map(Result::unwrap).collect();
    assert_eq!(read, receipts);
}

/// Writes `bytes` as a journal file, opens it, and checks that exactly `kept` receipts
/// survive, the file ends after them, and the chain continues from there.
fn check_recovers_prefix(
    path: &Path,
    bytes: &[u8],
    receipts: &[SignedReceipt],
    kept: usize,
    boundary: u64,
) -> Recovered {
    std::fs::write(path, bytes).unwrap();
    let (journal, rec) = Journal::open(path, gc()).unwrap();
    drop(journal);
    assert_eq!(rec.count, kept as u64);
    assert_eq!(rec.truncated_bytes, bytes.len() as u64 - boundary);
    assert_eq!(file_len(path), boundary);
    let survivors = all(path);
    assert_eq!(survivors, receipts[..kept]);
    let mut expected = expected_state(&receipts[..kept]);
    expected.truncated_bytes = rec.truncated_bytes;
    expected.tail_defect = rec.tail_defect;
    assert_eq!(rec, expected);
    rec
}

/// Record boundaries (offsets where each record starts, then the file's end).
fn boundaries(receipts: &[SignedReceipt]) -> Vec<u64> {
    let mut at = JOURNAL_MAGIC.len() as u64;
    let mut out = vec![at];
    for r in receipts {
        at += 8 + r.encode().len() as u64;
        out.push(at);
    }
    out
}

#[tokio::test]
async fn torn_tail_is_cut_at_every_offset_of_the_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let receipts = Chain::new().take(4);
    let (journal, _) = Journal::open(&path, gc()).unwrap();
    append_all(&journal, &receipts).await;
    drop(journal);
    let full = std::fs::read(&path).unwrap();
    let b = boundaries(&receipts);
    let (start, end) = (b[3], b[4]);
    assert_eq!(end, full.len() as u64);

    let torn = dir.path().join("torn");
    for cut in start..end {
        let rec = check_recovers_prefix(&torn, &full[..cut as usize], &receipts, 3, start);
        let defect = if cut == start {
            None
        } else {
            Some(Defect::Truncated)
        };
        assert_eq!(rec.tail_defect, defect, "cut at {cut}");
    }
    // After a cut the journal takes the lost receipt again, and keeps it.
    let (journal, rec) = Journal::open(&torn, gc()).unwrap();
    assert_eq!(rec.count, 3);
    journal.append(&receipts[3]).await.unwrap();
    drop(journal);
    assert_eq!(std::fs::read(&torn).unwrap(), full);
}

#[tokio::test]
async fn corrupt_byte_in_the_last_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let receipts = Chain::new().take(4);
    let (journal, _) = Journal::open(&path, gc()).unwrap();
    append_all(&journal, &receipts).await;
    drop(journal);
    let full = std::fs::read(&path).unwrap();
    let b = boundaries(&receipts);
    let bad = dir.path().join("bad");
    for at in b[3]..b[4] {
        let mut bytes = full.clone();
        bytes[at as usize] ^= 0x40;
        let rec = check_recovers_prefix(&bad, &bytes, &receipts, 3, b[3]);
        assert!(
            matches!(
                rec.tail_defect,
                Some(Defect::Checksum | Defect::Length(_) | Defect::Truncated)
            ),
            "flip at {at}: {:?}",
            rec.tail_defect
        );
    }
}

#[tokio::test]
async fn a_complete_record_that_breaks_the_chain_is_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let receipts = Chain::new().take(3);
    // A well-framed receipt from another chain (host_seq 1 again) after the three: not a
    // torn write, so not something recovery may cut.
    let stray = Chain::new().next();
    let (journal, _) = Journal::open(&path, gc()).unwrap();
    append_all(&journal, &receipts).await;
    drop(journal);
    let mut bytes = std::fs::read(&path).unwrap();
    let payload = stray.encode();
    bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
    bytes.extend_from_slice(&payload);
    std::fs::write(&path, &bytes).unwrap();
    let b = boundaries(&receipts);
    assert_eq!(
        Journal::open(&path, gc()).unwrap_err(),
        JournalError::Damaged(Damage {
            offset: b[3],
            record: 4,
            defect: Defect::Chain,
            valid_after: None,
        })
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "left untouched");
}

/// The probe of issue 14: one flipped bit in record 20 of 37 made recovery cut 18 durable
/// receipts without a word, and the attestor then reused `host_seq` 20.
#[tokio::test]
async fn a_flipped_bit_before_valid_records_stops_recovery_and_names_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let receipts = Chain::new().take(37);
    let (journal, _) = Journal::open(&path, gc()).unwrap();
    append_all(&journal, &receipts).await;
    drop(journal);
    let b = boundaries(&receipts);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[b[19] as usize + 100] ^= 0x08;
    std::fs::write(&path, &bytes).unwrap();
    let damage = Damage {
        offset: b[19],
        record: 20,
        defect: Defect::Checksum,
        valid_after: Some(b[20]),
    };
    let err = Journal::open(&path, gc()).unwrap_err();
    assert_eq!(err, JournalError::Damaged(damage));
    let text = err.to_string();
    assert!(
        text.contains("record 20") && text.contains(&format!("offset {}", b[19])),
        "{text}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was cut");
    // The check reports the same without opening, and the intact prefix.
    let check = check_journal(&path).unwrap();
    assert_eq!(check.damage, Some(damage));
    assert_eq!(check.state, expected_state(&receipts[..19]));
    assert_eq!(check.valid_end, b[19]);
    assert!(
        check.verdict().starts_with("damaged"),
        "{}",
        check.verdict()
    );
    // A damaged length field says nothing about where the next record starts: found anyway.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[b[19] as usize + 100] ^= 0x08;
    bytes[b[19] as usize + 2] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    match Journal::open(&path, gc()).unwrap_err() {
        JournalError::Damaged(d) => {
            assert_eq!(
                (d.offset, d.record, d.valid_after),
                (b[19], 20, Some(b[20]))
            );
        }
        other => panic!("{other:?}"),
    }
}

/// The attestor does not start on a damaged journal: it would reuse `host_seq` 20 (a fork)
/// and accept again the authorisations of the receipts it dropped (double charges).
#[tokio::test]
async fn a_damaged_journal_stops_the_attestor() {
    use tally_attestor::{AttestError, Attestor, AttestorConfig};
    use tally_sandbox::{Sandbox, SandboxConfig};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let receipts = Chain::new().take(37);
    write_journal(&path, &receipts).unwrap();
    let b = boundaries(&receipts);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[b[19] as usize + 300] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let sandbox = Arc::new(Sandbox::pinned(SandboxConfig::default()).unwrap());
    let config = AttestorConfig {
        chain_id: "tally-test-1".into(),
        contract: "tally1contract".into(),
        journal_path: path.clone(),
        group_commit: gc(),
        schedules: vec![tally_protocol::PriceSchedule {
            model: Digest::sha256(b"model"),
            min_fee: 1,
            tiers: vec![tally_protocol::PriceTier {
                from_prompt_tokens: 0,
                prompt_per_mtok: 1,
                cached_per_mtok: 1,
                completion_per_mtok: 1,
            }],
        }],
    };
    let err = Attestor::open(config, SigningKey::from_seed(&[7; 32]), sandbox)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            AttestError::Journal(JournalError::Damaged(Damage { record: 20, offset, .. }))
                if *offset == b[19]
        ),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was cut");
}

/// A torn tail is still cut, reported in the recovery state, and the check says so.
#[tokio::test]
async fn a_torn_tail_is_reported_by_the_check_and_cut_by_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let receipts = Chain::new().take(5);
    let (journal, _) = Journal::open(&path, gc()).unwrap();
    append_all(&journal, &receipts).await;
    drop(journal);
    let b = boundaries(&receipts);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(b[5] as usize - 7);
    std::fs::write(&path, &bytes).unwrap();
    let check = check_journal(&path).unwrap();
    let d = check.damage.unwrap();
    assert!(d.is_torn_tail(), "{d}");
    assert_eq!((d.record, d.offset), (5, b[4]));
    assert!(
        check.verdict().starts_with("torn tail of"),
        "{}",
        check.verdict()
    );
    let (_j, rec) = Journal::open(&path, gc()).unwrap();
    assert_eq!(rec.count, 4);
    assert_eq!(rec.truncated_bytes, b[5] - 7 - b[4]);
    assert_eq!(rec.tail_defect, Some(Defect::Truncated));
}

#[tokio::test]
async fn write_journal_writes_a_chain_that_opens_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let receipts = Chain::new().take(9);
    let path = dir.path().join("fresh");
    write_journal(&path, &receipts).unwrap();
    assert_eq!(all(&path), receipts);
    let (_j, rec) = Journal::open(&path, gc()).unwrap();
    assert_eq!(rec, expected_state(&receipts));
    // An existing file is never overwritten; a gap is refused.
    assert!(matches!(
        write_journal(&path, &receipts),
        Err(JournalError::Io { .. })
    ));
    let mut gap = receipts.clone();
    gap.remove(3);
    assert_eq!(
        write_journal(dir.path().join("gap"), &gap),
        Err(JournalError::BrokenChain { host_seq: 5 })
    );
}

#[tokio::test]
async fn reader_reports_a_torn_tail_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let receipts = Chain::new().take(3);
    let (journal, _) = Journal::open(&path, gc()).unwrap();
    append_all(&journal, &receipts).await;
    drop(journal);
    let b = boundaries(&receipts);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(b[3] - 1).unwrap();
    let items: Vec<_> = read_journal(&path).unwrap().collect();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0].as_ref().unwrap(), &receipts[0]);
    assert_eq!(items[1].as_ref().unwrap(), &receipts[1]);
    assert_eq!(
        items[2],
        Err(JournalError::Corrupt {
            offset: b[2],
            defect: Defect::Truncated
        })
    );
}

#[test]
fn foreign_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    for content in [&b"NOTAJOURNAL, just a file"[..], b"XY", b"TALLYJ02"] {
        std::fs::write(&path, content).unwrap();
        assert_eq!(
            Journal::open(&path, gc()).unwrap_err(),
            JournalError::BadMagic
        );
        assert_eq!(std::fs::read(&path).unwrap(), content);
    }
    // A crash while creating the file can leave a prefix of the magic: that is a new journal.
    std::fs::write(&path, b"TALL").unwrap();
    let (_journal, rec) = Journal::open(&path, gc()).unwrap();
    assert_eq!(rec, Recovered::default());
    assert_eq!(std::fs::read(&path).unwrap(), JOURNAL_MAGIC);
}

#[test]
fn a_second_writer_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let (journal, _) = Journal::open(&path, gc()).unwrap();
    assert_eq!(
        Journal::open(&path, gc()).unwrap_err(),
        JournalError::Locked
    );
    drop(journal);
    Journal::open(&path, gc()).unwrap();
}

#[test]
fn journal_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    Journal::open(&path, gc()).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn group_commit_syncs_many_records_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let receipts = Chain::new().take(1000);
    // With a delay long enough to fill each batch, 1000 records take 16 syncs of at most 64.
    let (journal, _) = Journal::open(
        &path,
        GroupCommit {
            max_batch: 64,
            max_delay: Duration::from_secs(1),
        },
    )
    .unwrap();
    let pending: Vec<_> = receipts.iter().map(|r| journal.append(r)).collect();
    for p in pending {
        p.await.unwrap();
    }
    let stats = journal.stats();
    assert_eq!(stats.records, 1000);
    assert_eq!(stats.batches, 1000_u64.div_ceil(64), "{stats:?}");
    drop(journal);
    assert_eq!(all(&path), receipts);
}

#[tokio::test]
async fn max_delay_waits_for_more_records_unless_the_batch_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let receipts = Chain::new().take(4);

    // A lone record waits for the delay.
    let delay = Duration::from_millis(300);
    let (journal, _) = Journal::open(
        dir.path().join("a"),
        GroupCommit {
            max_batch: 100,
            max_delay: delay,
        },
    )
    .unwrap();
    let t = Instant::now();
    journal.append(&receipts[0]).await.unwrap();
    assert!(t.elapsed() >= delay);

    // A full batch does not.
    let (journal, _) = Journal::open(
        dir.path().join("b"),
        GroupCommit {
            max_batch: 4,
            max_delay: Duration::from_secs(30),
        },
    )
    .unwrap();
    let t = Instant::now();
    let pending: Vec<_> = receipts.iter().map(|r| journal.append(r)).collect();
    for p in pending {
        p.await.unwrap();
    }
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(journal.stats().batches, 1);
}

#[tokio::test]
async fn out_of_order_appends_wait_for_their_predecessors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let receipts = Chain::new().take(3);
    let (journal, _) = Journal::open(&path, gc()).unwrap();
    let third = journal.append(&receipts[2]);
    let second = journal.append(&receipts[1]);
    let waiting = tokio::time::timeout(Duration::from_millis(200), third).await;
    assert!(
        waiting.is_err(),
        "receipt 3 was acknowledged before 1 and 2"
    );
    assert_eq!(file_len(&path), JOURNAL_MAGIC.len() as u64);
    journal.append(&receipts[0]).await.unwrap();
    second.await.unwrap();
    // The timed-out future was dropped, but the record was queued and is written.
    let deadline = Instant::now() + Duration::from_secs(10);
    while journal.stats().durable_host_seq < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(journal);
    assert_eq!(all(&path), receipts);
}

#[tokio::test]
async fn concurrent_appends_in_any_order_form_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let receipts = Chain::new().take(400);
    let (journal, _) = Journal::open(&path, gc()).unwrap();
    let journal = Arc::new(journal);
    // 8 tasks, each with every 8th receipt, appending in reverse order of each block.
    let mut tasks = Vec::new();
    for t in 0..8 {
        let mine: Vec<_> = receipts.iter().skip(t).step_by(8).rev().cloned().collect();
        let journal = Arc::clone(&journal);
        tasks.push(tokio::spawn(async move {
            let pending: Vec<_> = mine.iter().map(|r| journal.append(r)).collect();
            for p in pending {
                p.await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    drop(journal);
    let stored = all(&path);
    assert_chain(&stored);
    assert_eq!(stored, receipts);
}

#[tokio::test]
async fn a_broken_link_poisons_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let receipts = Chain::new().take(3);
    let (journal, _) = Journal::open(&path, gc()).unwrap();
    journal.append(&receipts[0]).await.unwrap();
    // Receipt 3 with receipt 1's link where receipt 2's belongs... and a waiting 3.
    let pending_third = journal.append(&receipts[2]);
    let mut forged = receipts[1].clone();
    forged.receipt.prev_receipt = Digest::sha256(b"elsewhere");
    let err = JournalError::BrokenChain { host_seq: 2 };
    assert_eq!(journal.append(&forged).await, Err(err.clone()));
    let poisoned = JournalError::Poisoned(Box::new(err.clone()));
    assert_eq!(pending_third.await, Err(poisoned.clone()));
    assert_eq!(journal.append(&receipts[1]).await, Err(poisoned));
    assert_eq!(journal.poisoned(), Some(err));
    drop(journal);
    // What was durable before the failure is all there is.
    let (_, rec) = Journal::open(&path, gc()).unwrap();
    assert_eq!(rec, expected_state(&receipts[..1]));
}

#[tokio::test]
async fn a_duplicate_host_seq_poisons_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let receipts = Chain::new().take(2);
    let (journal, _) = Journal::open(&path, gc()).unwrap();
    journal.append(&receipts[0]).await.unwrap();
    let err = JournalError::BrokenChain { host_seq: 1 };
    assert_eq!(journal.append(&receipts[0]).await, Err(err.clone()));
    assert_eq!(
        journal.append(&receipts[1]).await,
        Err(JournalError::Poisoned(Box::new(err)))
    );
}

#[tokio::test]
async fn an_unencodable_receipt_is_refused_and_poisons() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let mut bad = Chain::new().next();
    bad.receipt.authorization.authorization.chain_id = "has spaces".into();
    let (journal, _) = Journal::open(&path, gc()).unwrap();
    assert!(matches!(
        journal.append(&bad).await,
        Err(JournalError::Unencodable(_))
    ));
    assert!(matches!(
        journal.append(&Chain::new().next()).await,
        Err(JournalError::Poisoned(_))
    ));
    assert_eq!(file_len(&path), JOURNAL_MAGIC.len() as u64);
}

#[tokio::test]
async fn dropping_the_journal_flushes_queued_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let receipts = Chain::new().take(50);
    let (journal, _) = Journal::open(&path, gc()).unwrap();
    let pending: Vec<_> = receipts.iter().map(|r| journal.append(r)).collect();
    drop(journal);
    for p in pending {
        p.await.unwrap();
    }
    assert_eq!(all(&path), receipts);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever happens to the bytes after the magic (a cut, a flipped byte), recovery
    /// either keeps every record before the damage and cuts a torn tail (when nothing
    /// valid follows the damage), or refuses, naming the damaged record, and changes
    /// nothing (when a valid record follows it). It never drops a record it could read.
    #[test]
    fn recovery_keeps_the_intact_prefix_or_refuses(cut in 8usize..6000, flip in proptest::option::of((8usize..6000, 1u8..=255))) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let receipts = Chain::new().take(8);
        let mut bytes = JOURNAL_MAGIC.to_vec();
        for r in &receipts {
            let p = r.encode();
            bytes.extend_from_slice(&(p.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&crc32fast::hash(&p).to_be_bytes());
            bytes.extend_from_slice(&p);
        }
        let b = boundaries(&receipts);
        prop_assert_eq!(*b.last().unwrap(), bytes.len() as u64);
        let cut = cut.min(bytes.len());
        bytes.truncate(cut);
        let mut damage = cut as u64;
        if let Some((at, mask)) = flip.filter(|(at, _)| *at < cut) {
            bytes[at] ^= mask;
            damage = damage.min(at as u64);
        }
        std::fs::write(&path, &bytes).unwrap();
        // Records that end before the damage are intact; the damaged one is the next; a
        // valid record follows it if one after it survived the cut whole.
        let intact = b.iter().skip(1).filter(|end| **end <= damage).count();
        let valid_after = (intact + 1..receipts.len())
            .find(|&j| b[j + 1] <= cut as u64)
            .map(|j| b[j]);
        match Journal::open(&path, gc()) {
            Ok((journal, rec)) => {
                drop(journal);
                prop_assert_eq!(valid_after, None);
                prop_assert_eq!(rec.count, intact as u64);
                prop_assert_eq!(file_len(&path), b[intact]);
                prop_assert_eq!(all(&path), receipts[..intact].to_vec());
            }
            Err(JournalError::Damaged(d)) => {
                prop_assert_eq!(d.valid_after, valid_after);
                prop_assert!(valid_after.is_some());
                prop_assert_eq!((d.record, d.offset), (intact as u64 + 1, b[intact]));
                prop_assert_eq!(std::fs::read(&path).unwrap(), bytes);
            }
            Err(e) => prop_assert!(false, "{e}"),
        }
    }
}

const CRASH_CHILD: &str = "TALLY_JOURNAL_CRASH_CHILD";

/// Child mode of [`kill_9_loses_no_acknowledged_receipt`]: appends receipts forever, many in
/// flight, and prints `ack <host_seq> <id>` once each is durable.
async fn append_until_killed(path: PathBuf) {
    let (journal, rec) = Journal::open(
        &path,
        GroupCommit {
            max_batch: 32,
            max_delay: Duration::ZERO,
        },
    )
    .unwrap();
    let mut chain = Chain::resume(&rec);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
    loop {
        let r = chain.next();
        let permit = Arc::clone(&in_flight).acquire_owned().await.unwrap();
        let durable = journal.append(&r);
        let (seq, id) = (r.receipt.host_seq, r.id());
        tokio::spawn(async move {
            durable.await.unwrap();
            println!("ack {seq} {id}");
            drop(permit);
        });
    }
}

/// Runs this test binary as a child that appends until it is killed with SIGKILL, three
/// times on one journal; after each kill, recovery must hold every receipt the child
/// acknowledged, as one intact chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_receipt() {
    if let Some(path) = std::env::var_os(CRASH_CHILD) {
        println!(); // Ends the harness's "test ... " line.
        append_until_killed(PathBuf::from(path)).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let mut acked: Vec<(u64, String)> = Vec::new();
    for (round, wait_for) in [150usize, 40, 300].into_iter().enumerate() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "kill_9_loses_no_acknowledged_receipt",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_CHILD, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let parse = |line: String| {
            let mut parts = line.strip_prefix("ack ")?.split(' ');
            let seq = parts.next()?.parse::<u64>().ok()?;
            Some((seq, parts.next()?.to_string()))
        };
        let mut this_round = 0;
        while this_round < wait_for {
            let line = lines.next().expect("child ended early").unwrap();
            if let Some(ack) = parse(line) {
                acked.push(ack);
                this_round += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL on Unix: no destructor, no flush, no fsync.
        child.wait().unwrap();
        // Acks printed before the kill are still in the pipe.
        acked.extend(lines.map_while(Result::ok).filter_map(parse));

        let (journal, rec) = Journal::open(&path, gc()).unwrap();
        drop(journal);
        let stored = all(&path);
        assert_chain(&stored);
        assert_eq!(rec, {
            let mut e = expected_state(&stored);
            e.truncated_bytes = rec.truncated_bytes;
            e.tail_defect = rec.tail_defect;
            e
        });
        for (seq, id) in &acked {
            let r = stored
                .get(*seq as usize - 1)
                .unwrap_or_else(|| panic!("round {round}: acknowledged receipt {seq} lost"));
            assert_eq!(
                &r.id().to_string(),
                id,
                "round {round}: receipt {seq} differs"
            );
        }
        assert!(stored.len() >= acked.len());
    }
}

/// The golden journal (`testdata/vectors.json`, `docs/protocol.md` §6): three records and a
/// torn fourth. Recovery keeps exactly the three and cuts the torn bytes.
#[tokio::test]
async fn golden_journal_vector_recovers_its_three_records() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/vectors.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let j = &v["journal"];
    let bytes = hex::decode(j["bytes"].as_str().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("golden.journal");
    std::fs::write(&path, &bytes).unwrap();
    let (journal, rec) = Journal::open(&path, gc()).unwrap();
    assert_eq!(rec.count, 3);
    assert_eq!(rec.last_host_seq, 3);
    assert_eq!(rec.truncated_bytes, j["torn_tail_len"].as_u64().unwrap());
    assert_eq!(
        rec.last_id.to_string(),
        v["log"]["receipt_ids"][2].as_str().unwrap()
    );
    drop(journal);
    assert_eq!(file_len(&path), j["intact_len"].as_u64().unwrap());
}

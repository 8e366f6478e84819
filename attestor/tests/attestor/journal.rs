//! The durable journal (version 2: group commits of receipt bundles): recovery, torn
//! tails and torn groups, one host signature per group commit, ordering, poisoning, and a
//! real `kill -9` of a process that is appending.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "clippy's allow-unwrap-in-tests covers #[test] functions, not the helpers here"
)]

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tally_attestor::{
    ChannelState, Damage, Defect, GroupCommit, JOURNAL_MAGIC, Journal, JournalError, JournalSigner,
    Recovered, check_journal, read_journal, write_journal,
};
use tally_protocol::merkle::CompactRange;
use tally_protocol::{
    Authorization, ChannelId, Digest, FinishStatus, Metered, Receipt, SignedReceipt, SigningKey,
    UsageFacts, sign_group,
};

const CHAIN_ID: &str = "tally-test-1";
const CONTRACT: &str = "tally1contract";

fn host_key() -> SigningKey {
    SigningKey::from_seed(&[7; 32])
}

fn signer() -> JournalSigner {
    JournalSigner {
        key: host_key(),
        chain_id: CHAIN_ID.into(),
        contract: CONTRACT.into(),
    }
}

fn open(path: &Path, gc: GroupCommit) -> Result<(Journal, Recovered), JournalError> {
    Journal::open(path, gc, signer())
}

/// Builds a valid host log of receipts without a sandbox (the journal does not meter).
struct Chain {
    host: SigningKey,
    payers: Vec<SigningKey>,
    model: Digest,
    last_seq: u64,
    channels: HashMap<ChannelId, ChannelState>,
}

impl Chain {
    fn new() -> Chain {
        Chain::resume(&Recovered::default())
    }

    fn resume(r: &Recovered) -> Chain {
        Chain {
            host: host_key(),
            payers: (1..=5u8).map(|i| SigningKey::from_seed(&[i; 32])).collect(),
            model: Digest::sha256(b"model"),
            last_seq: r.last_host_seq,
            channels: r.channels.clone(),
        }
    }

    /// The next receipt of the log; channels (one per payer) take turns.
    fn next(&mut self) -> Receipt {
        let host_seq = self.last_seq + 1;
        let payer = &self.payers[(host_seq % 5) as usize];
        let host = self.host.public_key();
        let channel = ChannelId::new(&payer.public_key(), &host, &self.model);
        let st = self.channels.entry(channel).or_default();
        let fee = 1_000 + u128::from(host_seq);
        let request_digest = Digest::sha256(&host_seq.to_be_bytes());
        let authorization = Authorization {
            chain_id: CHAIN_ID.into(),
            contract: CONTRACT.into(),
            payer: payer.public_key(),
            host,
            model: self.model,
            seq: st.last_seq + 1,
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
            channel_total: st.total + fee,
            timestamp_ms: 1_700_000_000_000 + host_seq,
        };
        *st = ChannelState {
            last_seq: receipt.authorization.authorization.seq,
            total: receipt.channel_total,
        };
        self.last_seq = host_seq;
        receipt
    }

    fn take(&mut self, n: usize) -> Vec<Receipt> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// `receipts` (from `host_seq` 1) as the bundles of group commits of the given sizes.
fn bundles(receipts: &[Receipt], groups: &[usize]) -> Vec<SignedReceipt> {
    let mut frontier = CompactRange::new();
    let mut out = Vec::new();
    let mut at = 0;
    for &g in groups {
        let (_, b) = sign_group(&host_key(), &mut frontier, receipts[at..at + g].to_vec()).unwrap();
        out.extend(b);
        at += g;
    }
    assert_eq!(at, receipts.len(), "groups cover the receipts");
    out
}

/// Groups of one: what a host at low load writes.
fn singles(receipts: &[Receipt]) -> Vec<SignedReceipt> {
    bundles(receipts, &vec![1; receipts.len()])
}

/// A journal file of `bundles`.
fn journal_bytes(bundles: &[SignedReceipt]) -> Vec<u8> {
    let mut bytes = JOURNAL_MAGIC.to_vec();
    for b in bundles {
        let p = b.encode();
        bytes.extend_from_slice(&(p.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&p).to_be_bytes());
        bytes.extend_from_slice(&p);
    }
    bytes
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

/// Asserts `bundles` form one gap-free host log from `host_seq` 1: every bundle verifies,
/// groups end at their checkpoint's size, and no two bundles contradict each other.
fn assert_log(bundles: &[SignedReceipt]) {
    for (i, b) in bundles.iter().enumerate() {
        assert_eq!(b.receipt.host_seq, i as u64 + 1);
        assert_eq!(b.verify(), Ok(()), "bundle {}", i + 1);
    }
    if let Some(last) = bundles.last() {
        for b in bundles {
            assert_eq!(
                b.contradiction(last).unwrap_err().code(),
                "no_contradiction",
                "bundle {} contradicts the last",
                b.receipt.host_seq
            );
        }
    }
}

/// The number of distinct host checkpoints (signatures) in `bundles`.
fn signatures(bundles: &[SignedReceipt]) -> usize {
    bundles
        .iter()
        .map(|b| b.checkpoint.signature.0)
        .collect::<BTreeSet<_>>()
        .len()
}

/// The state recovery must rebuild from the durable `bundles`.
fn expected_state(bundles: &[SignedReceipt]) -> Recovered {
    let mut st = Recovered::default();
    for b in bundles {
        let r = &b.receipt;
        st.last_host_seq = r.host_seq;
        st.frontier.append(r.leaf_hash(), |_, _, _| {});
        st.last_timestamp_ms = r.timestamp_ms;
        st.host = Some(*r.host());
        st.deployment = Some((CHAIN_ID.into(), CONTRACT.into()));
        st.count += 1;
        st.channels.insert(
            r.channel(),
            ChannelState {
                last_seq: r.authorization.authorization.seq,
                total: r.channel_total,
            },
        );
    }
    st
}

/// Appends `receipts` one by one, each awaited: groups of one.
async fn append_all(journal: &Journal, receipts: &[Receipt]) -> Vec<SignedReceipt> {
    let mut out = Vec::new();
    for r in receipts {
        out.push(journal.append(r.clone()).await.unwrap());
    }
    out
}

/// Appends `receipts` all at once and awaits them: as many per group as the writer takes.
async fn append_together(journal: &Journal, receipts: &[Receipt]) -> Vec<SignedReceipt> {
    let pending: Vec<_> = receipts.iter().map(|r| journal.append(r.clone())).collect();
    let mut out = Vec::new();
    for p in pending {
        out.push(p.await.unwrap());
    }
    out
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[tokio::test]
async fn new_journal_holds_only_the_magic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let (journal, rec) = open(&path, gc()).unwrap();
    assert_eq!(rec, Recovered::default());
    drop(journal);
    assert_eq!(std::fs::read(&path).unwrap(), JOURNAL_MAGIC);
    let (_journal, rec) = open(&path, gc()).unwrap();
    assert_eq!(rec, Recovered::default());
}

#[tokio::test]
async fn append_then_reopen_restores_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let mut chain = Chain::new();
    let (journal, _) = open(&path, gc()).unwrap();
    // Low load (each call waits for its receipt), then a burst.
    let mut written = append_all(&journal, &chain.take(20)).await;
    written.extend(append_together(&journal, &chain.take(20)).await);
    let stats = journal.stats();
    assert_eq!((stats.records, stats.durable_host_seq), (40, 40));
    assert_eq!(stats.durable_len, file_len(&path));
    assert_eq!(journal.frontier(), expected_state(&written).frontier);
    drop(journal);

    let (journal, rec) = open(&path, gc()).unwrap();
    assert_eq!(rec, expected_state(&written));
    assert_eq!(rec.channels.len(), 5);
    assert_eq!(
        all(&path),
        written,
        "the file holds the bundles the callers got"
    );
    assert_log(&written);

    // The log continues where it stopped.
    let more = append_all(&journal, &Chain::resume(&rec).take(3)).await;
    drop(journal);
    let (_, rec) = open(&path, gc()).unwrap();
    let everything = [written, more].concat();
    assert_eq!(rec, expected_state(&everything));
    assert_log(&everything);
}

#[tokio::test]
async fn at_low_load_a_group_is_one_receipt_and_under_load_one_signature_covers_many() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(&dir.path().join("j"), gc()).unwrap();
    let mut chain = Chain::new();
    let alone = append_all(&journal, &chain.take(5)).await;
    for b in &alone {
        assert_eq!(b.checkpoint.size, b.receipt.host_seq, "a group of one");
    }
    assert_eq!(
        signatures(&alone),
        5,
        "one signature per receipt, as in version 1"
    );
    drop(journal);
    let (journal, _) = open(
        &dir.path().join("j"),
        GroupCommit {
            max_batch: 64,
            max_delay: Duration::from_secs(1),
        },
    )
    .unwrap();
    let burst = append_together(&journal, &chain.take(64)).await;
    assert_eq!(signatures(&burst), 1, "one signature for the whole group");
    assert!(burst.iter().all(|b| b.checkpoint.size == 69));
    assert_eq!(journal.stats().batches, 1);
    assert_log(&[alone, burst].concat());
}

#[tokio::test]
async fn receipts_of_an_open_journal_are_its_durable_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let (journal, _) = open(&path, gc()).unwrap();
    let written = append_all(&journal, &Chain::new().take(10)).await;
    let read: Vec<_> = journal.receipts().unwrap().map(Result::unwrap).collect();
    assert_eq!(read, written);
}

/// Writes `bytes` as a journal file, opens it, and checks that exactly `kept` bundles
/// survive, the file ends after them, and the log continues from there.
fn check_recovers_prefix(
    path: &Path,
    bytes: &[u8],
    bundles: &[SignedReceipt],
    kept: usize,
    boundary: u64,
) -> Recovered {
    std::fs::write(path, bytes).unwrap();
    let (journal, rec) = open(path, gc()).unwrap();
    drop(journal);
    assert_eq!(rec.count, kept as u64);
    assert_eq!(rec.truncated_bytes, bytes.len() as u64 - boundary);
    assert_eq!(file_len(path), boundary);
    let survivors = all(path);
    assert_eq!(survivors, bundles[..kept]);
    let mut expected = expected_state(&bundles[..kept]);
    expected.truncated_bytes = rec.truncated_bytes;
    expected.tail_defect = rec.tail_defect;
    expected.dropped_receipts = rec.dropped_receipts;
    assert_eq!(rec, expected);
    rec
}

/// Record boundaries (offsets where each record starts, then the file's end).
fn boundaries(bundles: &[SignedReceipt]) -> Vec<u64> {
    let mut at = JOURNAL_MAGIC.len() as u64;
    let mut out = vec![at];
    for r in bundles {
        at += 8 + r.encode().len() as u64;
        out.push(at);
    }
    out
}

#[tokio::test]
async fn torn_tail_is_cut_at_every_offset_of_the_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let (journal, _) = open(&path, gc()).unwrap();
    let written = append_all(&journal, &Chain::new().take(4)).await;
    drop(journal);
    let full = std::fs::read(&path).unwrap();
    let b = boundaries(&written);
    let (start, end) = (b[3], b[4]);
    assert_eq!(end, full.len() as u64);

    let torn = dir.path().join("torn");
    for cut in start..end {
        let rec = check_recovers_prefix(&torn, &full[..cut as usize], &written, 3, start);
        let defect = if cut == start {
            None
        } else {
            Some(Defect::Truncated)
        };
        assert_eq!(rec.tail_defect, defect, "cut at {cut}");
        assert_eq!(rec.dropped_receipts, 0);
    }
    // After a cut the journal takes the lost receipt again, signs it again (the same
    // bytes: signing is deterministic) and keeps it.
    let (journal, rec) = open(&torn, gc()).unwrap();
    assert_eq!(rec.count, 3);
    let again = journal.append(written[3].receipt.clone()).await.unwrap();
    assert_eq!(again, written[3]);
    drop(journal);
    assert_eq!(std::fs::read(&torn).unwrap(), full);
}

/// A crash in the middle of a group commit's write: the group's complete records are
/// dropped with the torn bytes (nobody got them: the group's fsync never returned), and
/// their `host_seq`s are given to new receipts.
#[tokio::test]
async fn a_torn_group_is_dropped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let written = bundles(&Chain::new().take(6), &[1, 1, 4]);
    let full = journal_bytes(&written);
    let b = boundaries(&written);
    let path = dir.path().join("j");
    for cut in (b[2] + 1..b[6])
        .step_by(37)
        .chain([b[3], b[4], b[5], b[6] - 1])
    {
        let rec = check_recovers_prefix(&path, &full[..cut as usize], &written, 2, b[2]);
        let complete = b[3..6].iter().filter(|end| **end <= cut).count() as u64;
        assert_eq!(rec.dropped_receipts, complete, "cut at {cut}");
        let torn = !b.contains(&cut);
        assert_eq!(rec.tail_defect.is_some(), torn, "cut at {cut}");
    }
    // The whole group is kept once its last record is there.
    let rec = check_recovers_prefix(&path, &full, &written, 6, b[6]);
    assert_eq!(rec.dropped_receipts, 0);
    // And the log continues at host_seq 3 after a cut group.
    std::fs::write(&path, &full[..b[5] as usize]).unwrap();
    let (journal, rec) = open(&path, gc()).unwrap();
    assert_eq!((rec.count, rec.dropped_receipts), (2, 3));
    let next = journal.append(Chain::resume(&rec).next()).await.unwrap();
    assert_eq!(next.receipt.host_seq, 3);
    assert_eq!(next.checkpoint.size, 3);
}

#[tokio::test]
async fn corrupt_byte_in_the_last_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let (journal, _) = open(&path, gc()).unwrap();
    let written = append_all(&journal, &Chain::new().take(4)).await;
    drop(journal);
    let full = std::fs::read(&path).unwrap();
    let b = boundaries(&written);
    let bad = dir.path().join("bad");
    for at in b[3]..b[4] {
        let mut bytes = full.clone();
        bytes[at as usize] ^= 0x40;
        let rec = check_recovers_prefix(&bad, &bytes, &written, 3, b[3]);
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
async fn a_complete_record_that_breaks_the_log_is_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let (journal, _) = open(&path, gc()).unwrap();
    let written = append_all(&journal, &Chain::new().take(3)).await;
    drop(journal);
    let b = boundaries(&written);
    // Three well-framed bundles that do not continue the log: host_seq 1 again; the next
    // host_seq under a checkpoint that does not hold it; and a checkpoint another key
    // signed. None is a torn write, so none is something recovery may cut.
    let stray = singles(&Chain::new().take(1)).remove(0);
    let mut moved = bundles(
        &written
            .iter()
            .map(|w| w.receipt.clone())
            .chain([{
                let mut c = Chain::new();
                c.take(3);
                c.next()
            }])
            .collect::<Vec<_>>(),
        &[1, 1, 1, 1],
    )
    .remove(3);
    moved.checkpoint.root.0[0] ^= 1;
    let mut foreign = bundles(
        &written
            .iter()
            .map(|w| w.receipt.clone())
            .chain([{
                let mut c = Chain::new();
                c.take(3);
                c.next()
            }])
            .collect::<Vec<_>>(),
        &[1, 1, 1, 1],
    )
    .remove(3);
    foreign.checkpoint.signature = SigningKey::from_seed(&[9; 32]).sign(b"x");
    for bad in [stray, moved, foreign] {
        let bytes = [
            std::fs::read(&path).unwrap(),
            journal_bytes(&[bad])[8..].to_vec(),
        ]
        .concat();
        let p = dir.path().join("bad");
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(
            open(&p, gc()).unwrap_err(),
            JournalError::Damaged(Damage {
                offset: b[3],
                record: 4,
                defect: Defect::Log,
                valid_after: None,
            })
        );
        assert_eq!(std::fs::read(&p).unwrap(), bytes, "left untouched");
    }
}

/// The probe of issue 14: one flipped bit in record 20 of 37 made recovery cut 18 durable
/// receipts without a word, and the attestor then reused `host_seq` 20.
#[tokio::test]
async fn a_flipped_bit_before_valid_records_stops_recovery_and_names_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let (journal, _) = open(&path, gc()).unwrap();
    let written = append_all(&journal, &Chain::new().take(37)).await;
    drop(journal);
    let b = boundaries(&written);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[b[19] as usize + 100] ^= 0x08;
    std::fs::write(&path, &bytes).unwrap();
    let damage = Damage {
        offset: b[19],
        record: 20,
        defect: Defect::Checksum,
        valid_after: Some(b[20]),
    };
    let err = open(&path, gc()).unwrap_err();
    assert_eq!(err, JournalError::Damaged(damage));
    let text = err.to_string();
    assert!(
        text.contains("record 20") && text.contains(&format!("offset {}", b[19])),
        "{text}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was cut");
    // The check reports the same without opening, and the durable prefix.
    let check = check_journal(&path).unwrap();
    assert_eq!(check.damage, Some(damage));
    assert_eq!(check.state, expected_state(&written[..19]));
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
    match open(&path, gc()).unwrap_err() {
        JournalError::Damaged(d) => {
            assert_eq!(
                (d.offset, d.record, d.valid_after),
                (b[19], 20, Some(b[20]))
            );
        }
        other => panic!("{other:?}"),
    }
}

/// The attestor does not start on a damaged journal: it would sign a second log from
/// `host_seq` 20 (equivocation) and accept again the authorisations of the receipts it
/// dropped (double charges).
#[tokio::test]
async fn a_damaged_journal_stops_the_attestor() {
    use tally_attestor::{AttestError, Attestor, AttestorConfig};
    use tally_sandbox::{Sandbox, SandboxConfig};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let written = singles(&Chain::new().take(37));
    write_journal(&path, &written).unwrap();
    let b = boundaries(&written);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[b[19] as usize + 300] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let sandbox = Arc::new(Sandbox::pinned(SandboxConfig::default()).unwrap());
    let config = |path: PathBuf, contract: &str| AttestorConfig {
        chain_id: CHAIN_ID.into(),
        contract: contract.into(),
        journal_path: path,
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
    let err = Attestor::open(
        config(path.clone(), CONTRACT),
        host_key(),
        Arc::clone(&sandbox),
    )
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
    // An intact journal of another deployment, or another host, is not continued either.
    let other = dir.path().join("other");
    write_journal(&other, &written).unwrap();
    let err = Attestor::open(
        config(other.clone(), "tally1another"),
        host_key(),
        Arc::clone(&sandbox),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, AttestError::OtherDeployment { .. }),
        "{err:?}"
    );
    let err = Attestor::open(
        config(other, CONTRACT),
        SigningKey::from_seed(&[8; 32]),
        sandbox,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        AttestError::ForeignJournal {
            host: host_key().public_key()
        }
    );
}

/// A torn tail is still cut, reported in the recovery state, and the check says so.
#[tokio::test]
async fn a_torn_tail_is_reported_by_the_check_and_cut_by_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let (journal, _) = open(&path, gc()).unwrap();
    let written = append_all(&journal, &Chain::new().take(5)).await;
    drop(journal);
    let b = boundaries(&written);
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
    let (_j, rec) = open(&path, gc()).unwrap();
    assert_eq!(rec.count, 4);
    assert_eq!(rec.truncated_bytes, b[5] - 7 - b[4]);
    assert_eq!(rec.tail_defect, Some(Defect::Truncated));
}

#[tokio::test]
async fn write_journal_writes_a_log_that_opens_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let written = bundles(&Chain::new().take(9), &[2, 3, 1, 3]);
    let path = dir.path().join("fresh");
    write_journal(&path, &written).unwrap();
    assert_eq!(all(&path), written);
    let (_j, rec) = open(&path, gc()).unwrap();
    assert_eq!(rec, expected_state(&written));
    // An existing file is never overwritten; a gap is refused, and so is a bundle whose
    // proof does not lead to its checkpoint.
    assert!(matches!(
        write_journal(&path, &written),
        Err(JournalError::Io { .. })
    ));
    let mut gap = written.clone();
    gap.remove(3);
    assert_eq!(
        write_journal(dir.path().join("gap"), &gap),
        Err(JournalError::BrokenChain { host_seq: 5 })
    );
    let mut bad = written.clone();
    bad[4].proof[0].0[0] ^= 1;
    assert_eq!(
        write_journal(dir.path().join("bad"), &bad),
        Err(JournalError::BrokenChain { host_seq: 5 })
    );
}

#[tokio::test]
async fn reader_reports_a_torn_tail_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let (journal, _) = open(&path, gc()).unwrap();
    let written = append_all(&journal, &Chain::new().take(3)).await;
    drop(journal);
    let b = boundaries(&written);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(b[3] - 1).unwrap();
    let items: Vec<_> = read_journal(&path).unwrap().collect();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0].as_ref().unwrap(), &written[0]);
    assert_eq!(items[1].as_ref().unwrap(), &written[1]);
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
    // A version 1 journal (TALLYJ01) is refused like any other file.
    for content in [
        &b"NOTAJOURNAL, just a file"[..],
        b"XY",
        b"TALLYJ03",
        b"TALLYJ01\x00\x00\x00\x05",
    ] {
        std::fs::write(&path, content).unwrap();
        assert_eq!(open(&path, gc()).unwrap_err(), JournalError::BadMagic);
        assert_eq!(std::fs::read(&path).unwrap(), content);
    }
    // A crash while creating the file can leave a prefix of the magic: that is a new journal.
    std::fs::write(&path, b"TALL").unwrap();
    let (_journal, rec) = open(&path, gc()).unwrap();
    assert_eq!(rec, Recovered::default());
    assert_eq!(std::fs::read(&path).unwrap(), JOURNAL_MAGIC);
}

#[test]
fn a_second_writer_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let (journal, _) = open(&path, gc()).unwrap();
    assert_eq!(open(&path, gc()).unwrap_err(), JournalError::Locked);
    drop(journal);
    open(&path, gc()).unwrap();
}

#[test]
fn journal_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    open(&path, gc()).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn group_commit_syncs_and_signs_many_records_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let receipts = Chain::new().take(1000);
    // With a delay long enough to fill each batch, 1000 records take 16 syncs of at most 64,
    // and 16 host signatures.
    let (journal, _) = open(
        &path,
        GroupCommit {
            max_batch: 64,
            max_delay: Duration::from_secs(1),
        },
    )
    .unwrap();
    let written = append_together(&journal, &receipts).await;
    let stats = journal.stats();
    assert_eq!(stats.records, 1000);
    assert_eq!(stats.batches, 1000_u64.div_ceil(64), "{stats:?}");
    assert_eq!(signatures(&written), 16);
    drop(journal);
    assert_eq!(all(&path), written);
    assert_log(&written);
}

#[tokio::test]
async fn max_delay_waits_for_more_records_unless_the_batch_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let receipts = Chain::new().take(4);

    // A lone record waits for the delay.
    let delay = Duration::from_millis(300);
    let (journal, _) = open(
        &dir.path().join("a"),
        GroupCommit {
            max_batch: 100,
            max_delay: delay,
        },
    )
    .unwrap();
    let t = Instant::now();
    journal.append(receipts[0].clone()).await.unwrap();
    assert!(t.elapsed() >= delay);

    // A full batch does not.
    let (journal, _) = open(
        &dir.path().join("b"),
        GroupCommit {
            max_batch: 4,
            max_delay: Duration::from_secs(30),
        },
    )
    .unwrap();
    let t = Instant::now();
    append_together(&journal, &receipts).await;
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(journal.stats().batches, 1);
}

#[tokio::test]
async fn out_of_order_appends_wait_for_their_predecessors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let receipts = Chain::new().take(3);
    let (journal, _) = open(&path, gc()).unwrap();
    let third = journal.append(receipts[2].clone());
    let second = journal.append(receipts[1].clone());
    let waiting = tokio::time::timeout(Duration::from_millis(200), third).await;
    assert!(
        waiting.is_err(),
        "receipt 3 was acknowledged before 1 and 2"
    );
    assert_eq!(file_len(&path), JOURNAL_MAGIC.len() as u64);
    journal.append(receipts[0].clone()).await.unwrap();
    second.await.unwrap();
    // The timed-out future was dropped, but the receipt was queued and is written.
    let deadline = Instant::now() + Duration::from_secs(10);
    while journal.stats().durable_host_seq < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(journal);
    let stored = all(&path);
    assert_log(&stored);
    let got: Vec<_> = stored.into_iter().map(|b| b.receipt).collect();
    assert_eq!(got, receipts);
}

#[tokio::test]
async fn concurrent_appends_in_any_order_form_one_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let receipts = Chain::new().take(400);
    let (journal, _) = open(&path, gc()).unwrap();
    let journal = Arc::new(journal);
    // 8 tasks, each with every 8th receipt, appending in reverse order of each block.
    let mut tasks = Vec::new();
    for t in 0..8 {
        let mine: Vec<_> = receipts.iter().skip(t).step_by(8).rev().cloned().collect();
        let journal = Arc::clone(&journal);
        tasks.push(tokio::spawn(async move {
            let pending: Vec<_> = mine.into_iter().map(|r| journal.append(r)).collect();
            let mut got = Vec::new();
            for p in pending {
                got.push(p.await.unwrap());
            }
            got
        }));
    }
    let mut returned = Vec::new();
    for t in tasks {
        returned.extend(t.await.unwrap());
    }
    drop(journal);
    let stored = all(&path);
    assert_log(&stored);
    returned.sort_by_key(|b| b.receipt.host_seq);
    assert_eq!(
        stored, returned,
        "each caller got the bundle the file holds"
    );
}

#[tokio::test]
async fn another_hosts_receipt_poisons_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let receipts = Chain::new().take(3);
    let (journal, _) = open(&path, gc()).unwrap();
    journal.append(receipts[0].clone()).await.unwrap();
    // Receipt 3 waits; receipt 2 names another host.
    let pending_third = journal.append(receipts[2].clone());
    let mut forged = receipts[1].clone();
    forged.authorization.authorization.host = SigningKey::from_seed(&[8; 32]).public_key();
    let err = JournalError::BrokenChain { host_seq: 2 };
    assert_eq!(journal.append(forged).await, Err(err.clone()));
    let poisoned = JournalError::Poisoned(Box::new(err.clone()));
    assert_eq!(pending_third.await, Err(poisoned.clone()));
    assert_eq!(journal.append(receipts[1].clone()).await, Err(poisoned));
    assert_eq!(journal.poisoned(), Some(err));
    drop(journal);
    // What was durable before the failure is all there is.
    let (_, rec) = open(&path, gc()).unwrap();
    assert_eq!(rec.count, 1);
}

#[tokio::test]
async fn a_duplicate_host_seq_poisons_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let receipts = Chain::new().take(2);
    let (journal, _) = open(&path, gc()).unwrap();
    journal.append(receipts[0].clone()).await.unwrap();
    let err = JournalError::BrokenChain { host_seq: 1 };
    assert_eq!(journal.append(receipts[0].clone()).await, Err(err.clone()));
    assert_eq!(
        journal.append(receipts[1].clone()).await,
        Err(JournalError::Poisoned(Box::new(err)))
    );
}

#[tokio::test]
async fn an_unencodable_receipt_is_refused_and_poisons() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let mut bad = Chain::new().next();
    bad.authorization.authorization.chain_id = "has spaces".into();
    let (journal, _) = open(&path, gc()).unwrap();
    assert!(matches!(
        journal.append(bad).await,
        Err(JournalError::Unencodable(_))
    ));
    assert!(matches!(
        journal.append(Chain::new().next()).await,
        Err(JournalError::Poisoned(_))
    ));
    assert_eq!(file_len(&path), JOURNAL_MAGIC.len() as u64);
}

#[tokio::test]
async fn dropping_the_journal_flushes_queued_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let receipts = Chain::new().take(50);
    let (journal, _) = open(&path, gc()).unwrap();
    let pending: Vec<_> = receipts.iter().map(|r| journal.append(r.clone())).collect();
    drop(journal);
    let mut got = Vec::new();
    for p in pending {
        got.push(p.await.unwrap());
    }
    assert_eq!(all(&path), got);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever happens to the bytes after the magic (a cut, a flipped byte), recovery
    /// either keeps every complete group before the damage and cuts the rest (when nothing
    /// valid follows the damage), or refuses, naming the damaged record, and changes
    /// nothing (when a valid record follows it). It never drops a complete group it could
    /// read.
    #[test]
    fn recovery_keeps_the_complete_groups_or_refuses(cut in 8usize..9000, flip in proptest::option::of((8usize..9000, 1u8..=255))) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let written = bundles(&Chain::new().take(8), &[1, 2, 1, 3, 1]);
        let mut bytes = journal_bytes(&written);
        let b = boundaries(&written);
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
        // valid record follows it if one after it survived the cut whole. Recovery keeps
        // the intact records up to the last complete group.
        let intact = b.iter().skip(1).filter(|end| **end <= damage).count();
        let kept = (0..=intact)
            .rev()
            .find(|&k| k == 0 || written[k - 1].receipt.host_seq == written[k - 1].checkpoint.size)
            .unwrap_or(0);
        let valid_after = (intact + 1..written.len())
            .find(|&j| b[j + 1] <= cut as u64)
            .map(|j| b[j]);
        match open(&path, gc()) {
            Ok((journal, rec)) => {
                drop(journal);
                prop_assert_eq!(valid_after, None);
                prop_assert_eq!(rec.count, kept as u64);
                prop_assert_eq!(rec.dropped_receipts, (intact - kept) as u64);
                prop_assert_eq!(file_len(&path), b[kept]);
                prop_assert_eq!(all(&path), written[..kept].to_vec());
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
/// flight, and prints `ack <host_seq> <bundle hex>` once each is durable: the bundle a
/// client would hold.
async fn append_until_killed(path: PathBuf) {
    let (journal, rec) = open(
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
        let seq = r.host_seq;
        let durable = journal.append(r);
        tokio::spawn(async move {
            let bundle = durable.await.unwrap();
            println!("ack {seq} {}", hex::encode(bundle.encode()));
            drop(permit);
        });
    }
}

/// Runs this test binary as a child that appends until it is killed with SIGKILL, three
/// times on one journal; after each kill, recovery must hold every receipt the child
/// acknowledged, in the bundle the child handed out, as one log that no acknowledged
/// bundle contradicts: no receipt was returned before its checkpoint was durable, and
/// recovery never gave an acknowledged index to another receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_receipt() {
    if let Some(path) = std::env::var_os(CRASH_CHILD) {
        println!(); // Ends the harness's "test ... " line.
        append_until_killed(PathBuf::from(path)).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let mut acked: Vec<SignedReceipt> = Vec::new();
    for (round, wait_for) in [150usize, 40, 300].into_iter().enumerate() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                &crate::test_name(module_path!(), "kill_9_loses_no_acknowledged_receipt"),
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
            let bundle = SignedReceipt::decode(&hex::decode(parts.next()?).ok()?).ok()?;
            (bundle.receipt.host_seq == seq).then_some(bundle)
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

        let (journal, rec) = open(&path, gc()).unwrap();
        drop(journal);
        let stored = all(&path);
        assert_log(&stored);
        assert_eq!(rec, {
            let mut e = expected_state(&stored);
            e.truncated_bytes = rec.truncated_bytes;
            e.tail_defect = rec.tail_defect;
            e.dropped_receipts = rec.dropped_receipts;
            e
        });
        let last = stored.last().expect("something was acknowledged");
        for a in &acked {
            let seq = a.receipt.host_seq;
            let r = stored
                .get(seq as usize - 1)
                .unwrap_or_else(|| panic!("round {round}: acknowledged receipt {seq} lost"));
            assert_eq!(
                r, a,
                "round {round}: receipt {seq} differs from the one handed out"
            );
            assert!(
                a.checkpoint.size <= rec.count,
                "round {round}: group of {seq} not durable"
            );
            assert_eq!(
                a.contradiction(last).unwrap_err().code(),
                "no_contradiction",
                "round {round}: the recovered log contradicts acknowledged receipt {seq}"
            );
        }
        assert!(stored.len() >= acked.len());
    }
}

/// The golden journal (`testdata/vectors.json`, `docs/protocol.md` §6): two complete group
/// commits (4 receipts), then a third group's first bundle and a torn second. Recovery keeps
/// exactly the four, drops the fifth and cuts the rest.
#[tokio::test]
async fn golden_journal_vector_recovers_its_complete_groups() {
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
    // The vectors' host is seed 02 on the vectors' deployment.
    let b0 =
        SignedReceipt::decode(&hex::decode(v["host_log"]["bundles"][0].as_str().unwrap()).unwrap())
            .unwrap();
    let a = &b0.receipt.authorization.authorization;
    let (journal, rec) = Journal::open(
        &path,
        gc(),
        JournalSigner {
            key: SigningKey::from_seed(&[2; 32]),
            chain_id: a.chain_id.clone(),
            contract: a.contract.clone(),
        },
    )
    .unwrap();
    assert_eq!(rec.count, j["durable_receipts"].as_u64().unwrap());
    assert_eq!(rec.last_host_seq, 4);
    assert_eq!(
        rec.dropped_receipts,
        j["dropped_receipts"].as_u64().unwrap()
    );
    assert_eq!(
        rec.truncated_bytes,
        bytes.len() as u64 - j["durable_len"].as_u64().unwrap()
    );
    assert_eq!(rec.tail_defect, Some(Defect::Truncated));
    drop(journal);
    assert_eq!(file_len(&path), j["durable_len"].as_u64().unwrap());
    let kept = all(&path);
    for (i, b) in kept.iter().enumerate() {
        assert_eq!(
            b.id().to_string(),
            v["log"]["receipt_ids"][i].as_str().unwrap()
        );
    }
}

//! Several aggregator processes over one PostgreSQL database: two OS processes (this test
//! binary re-executed) ingest the same receipt stream at once and both try to seal after
//! every submission; the log they leave must be the one a single process would build, and
//! its batches the work of one sealer at a time. Plus the sealer's advisory lock, held from
//! outside, pausing sealing but not ingest, and processes starting together: one migration,
//! and a schema newer than the build refused.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::process::{Command, Stdio};

use sqlx::Row;
use tally_aggregator::store::PgStore;
use tally_aggregator::{AggError, Outcome, Store, StoreError};
use tally_protocol::merkle::{MemoryTree, leaf_hash};
use tally_protocol::{BatchHeader, Digest, ReceiptId, SignedBatchHeader, SignedReceipt};

#[allow(dead_code, reason = "this binary uses part of the shared fixtures")]
use crate::fixtures;

use fixtures::{Backend, Pg, World, aggregator_key, config, open_with};

/// The variable that turns [`child_entry`] into a child: `<database url> <child number>`.
const CHILD: &str = "TALLY_PG_TWO_PROCESS_CHILD";

/// Rounds of ten receipts in the stream both children submit.
const ROUNDS: usize = 30;

/// The stream: two hosts' chains over two payers' channels, deterministic, so both children
/// build the same one.
fn stream() -> Vec<SignedReceipt> {
    let mut world = World::new();
    (0..ROUNDS * 10)
        .map(|i| world.call(i % 2, (i / 3) % 2, i % 2))
        .collect()
}

/// Child entry (a no-op unless [`CHILD`] is set): submits its host's part of the stream,
/// then the whole stream, in chunks of its own size, trying to seal after every submission; prints what happened to each
/// receipt (`ACK`/`DUP <id> <leaf>`), each batch it sealed (`SEAL <n> <tree size>`), and
/// how often its frontier was behind the other process (`MOVED`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_entry() {
    use std::io::Write;
    let Ok(arg) = std::env::var(CHILD) else {
        return;
    };
    let (url, k) = arg.rsplit_once(' ').unwrap();
    let k: usize = k.parse().unwrap();
    let world = World::new();
    let mut cfg = config(&world);
    cfg.reexecute_per_mille = 100;
    let agg = open_with::<Pg>(url, &world, cfg).await;
    let rs = stream();
    let mut out = std::io::stdout();
    // The harness has printed `test child_entry ... ` without a newline: end that line,
    // then wait for the parent's go, so both processes ingest at the same time.
    writeln!(out, "\nREADY").unwrap();
    out.flush().unwrap();
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    // First this child's own host's receipts (so both surely ingest), then the whole
    // stream, racing the other child on every receipt.
    let own = rs
        .iter()
        .filter(|r| *r.receipt.host() == world.hosts[k].public_key());
    let order: Vec<SignedReceipt> = own.chain(&rs).cloned().collect();
    for chunk in order.chunks(7 + 4 * k) {
        let mut tries = 0;
        let outcomes = loop {
            match agg.submit(chunk.iter().cloned().map(Ok).collect()).await {
                Ok(o) => break o,
                // The other process appended since this one's frontier was loaded: the
                // write was refused whole and the frontier reloaded; submit again.
                Err(AggError::Store(StoreError::LogMoved { .. })) if tries < 1000 => {
                    tries += 1;
                    writeln!(out, "MOVED").unwrap();
                }
                Err(e) => panic!("submit: {e}"),
            }
        };
        for (r, o) in chunk.iter().zip(outcomes) {
            match o {
                Outcome::Accepted { id, leaf } => writeln!(out, "ACK {id} {leaf}").unwrap(),
                Outcome::Duplicate { id, leaf } => writeln!(out, "DUP {id} {leaf}").unwrap(),
                other => panic!("{} {other:?}", r.id()),
            }
        }
        match agg.seal().await {
            Ok(Some(h)) => writeln!(out, "SEAL {} {}", h.header.batch, h.header.tree_size),
            Ok(None) => Ok(()),
            Err(AggError::Store(StoreError::LogMoved { .. })) => writeln!(out, "MOVED"),
            Err(e) => panic!("seal: {e}"),
        }
        .unwrap();
        out.flush().unwrap();
    }
}

/// What one child reported.
#[derive(Default)]
struct Report {
    acked: HashMap<ReceiptId, u64>,
    dups: HashMap<ReceiptId, u64>,
    sealed: Vec<(u64, u64)>,
    moved: usize,
}

fn run_child(url: &str, k: usize) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &crate::test_name(module_path!(), "child_entry"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, format!("{url} {k}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Starts both children, lets them go together once both are ready, and collects what
/// they report.
fn run_children(url: &str) -> Vec<Report> {
    use std::io::Write;
    let mut children: Vec<_> = (0..2).map(|k| run_child(url, k)).collect();
    let mut outs: Vec<_> = children
        .iter_mut()
        .map(|c| std::io::BufReader::new(c.stdout.take().unwrap()).lines())
        .collect();
    for out in &mut outs {
        loop {
            let line = out.next().expect("child exited before READY").unwrap();
            if line == "READY" {
                break;
            }
        }
    }
    for c in &mut children {
        writeln!(c.stdin.as_mut().unwrap(), "GO").unwrap();
    }
    let reports = std::thread::scope(|s| {
        let handles: Vec<_> = outs
            .into_iter()
            .map(|out| s.spawn(move || collect(out)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    for mut c in children {
        let status = c.wait().unwrap();
        assert!(status.success(), "a child failed: {status}");
    }
    reports
}

fn collect(lines: impl Iterator<Item = std::io::Result<String>>) -> Report {
    let mut r = Report::default();
    for line in lines {
        let line = line.unwrap();
        let f: Vec<&str> = line.split(' ').collect();
        match f[..] {
            ["ACK", id, leaf] | ["DUP", id, leaf] => {
                let id: ReceiptId = serde_json::from_value(id.into()).unwrap();
                let leaf: u64 = leaf.parse().unwrap();
                if f[0] == "ACK" {
                    assert!(r.acked.insert(id, leaf).is_none(), "{id} accepted twice");
                } else {
                    let before = r.dups.insert(id, leaf);
                    assert!(before.is_none_or(|b| b == leaf), "{id} moved");
                }
            }
            ["SEAL", n, size] => r.sealed.push((n.parse().unwrap(), size.parse().unwrap())),
            ["MOVED"] => r.moved += 1,
            _ => {}
        }
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_ingest_at_once_and_one_seals_at_a_time() {
    let place = Pg::place().await;
    let url = place.locator();
    // Create the schema first, so the children race on ingest, not on migration.
    let store = Pg::open(&url).await;
    let reports = tokio::task::spawn_blocking(move || run_children(&url))
        .await
        .unwrap();
    let rs = stream();

    // Every receipt accepted exactly once, by one process; the other saw a duplicate at
    // the same leaf (or never got to it).
    let mut leaf_of: HashMap<ReceiptId, u64> = HashMap::new();
    for rep in &reports {
        for (id, leaf) in &rep.acked {
            assert!(leaf_of.insert(*id, *leaf).is_none(), "{id} accepted twice");
        }
    }
    assert_eq!(leaf_of.len(), rs.len(), "every receipt accepted once");
    for rep in &reports {
        for (id, leaf) in &rep.dups {
            assert_eq!(leaf_of.get(id), Some(leaf), "{id}");
        }
    }
    assert!(
        reports.iter().all(|r| !r.acked.is_empty()),
        "both processes ingested"
    );

    // The stored log: leaves 0..n without gap or duplicate, each where its acceptance
    // said, in each host's chain order.
    let rows = sqlx::query("SELECT leaf, id, bytes FROM receipts ORDER BY leaf")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), rs.len());
    assert_eq!(store.tree_size().await.unwrap(), rs.len() as u64);
    let mut leaves = Vec::new();
    let by_id: HashMap<ReceiptId, &SignedReceipt> = rs.iter().map(|r| (r.id(), r)).collect();
    let mut chain_head: HashMap<tally_protocol::PublicKey, u64> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        let leaf: i64 = row.get("leaf");
        assert_eq!(leaf, i as i64);
        let id = Digest(row.get::<Vec<u8>, _>("id").try_into().unwrap());
        assert_eq!(leaf_of[&id], i as u64);
        let bytes: Vec<u8> = row.get("bytes");
        let r = by_id[&id];
        assert_eq!(bytes, r.encode());
        let head = chain_head.entry(*r.receipt.host()).or_default();
        assert_eq!(r.receipt.host_seq, *head + 1, "host chain order");
        *head = r.receipt.host_seq;
        leaves.push(leaf_hash(&bytes));
    }

    // Batches: numbered 1..=N, each sealed by exactly one process, each linked to the one
    // before, each root the root of the leaves it covers, debits the fees it covers.
    let sealed: Vec<(u64, u64)> = reports.iter().flat_map(|r| r.sealed.clone()).collect();
    let numbers: HashSet<u64> = sealed.iter().map(|s| s.0).collect();
    assert_eq!(numbers.len(), sealed.len(), "a batch number sealed twice");
    assert!(
        reports.iter().all(|r| !r.sealed.is_empty()),
        "both processes sealed"
    );
    let n = numbers.len() as u64;
    assert_eq!(numbers, (1..=n).collect::<HashSet<_>>());
    let mut prev = Digest::ZERO;
    let mut prev_size = 0u64;
    for b in 1..=n {
        let rec = store.batch(b).await.unwrap().unwrap();
        let header = BatchHeader::decode(&rec.header).unwrap();
        SignedBatchHeader {
            header: header.clone(),
            signature: rec.signature,
        }
        .verify()
        .unwrap();
        assert_eq!(header.aggregator, aggregator_key().public_key());
        assert_eq!(header.batch, b);
        assert_eq!(header.prev_header, prev, "batch {b} links to {}", b - 1);
        assert!(header.tree_size > prev_size, "batch {b} grows the log");
        assert!(sealed.contains(&(b, header.tree_size)));
        let mut t = MemoryTree::new();
        for h in &leaves[..header.tree_size as usize] {
            t.append(*h);
        }
        assert_eq!(header.root, t.root(), "batch {b} root");
        let fees: u128 = rows[prev_size as usize..header.tree_size as usize]
            .iter()
            .map(|row| {
                let id = Digest(row.get::<Vec<u8>, _>("id").try_into().unwrap());
                by_id[&id].receipt.metered.fee
            })
            .sum();
        assert_eq!(header.total, fees, "batch {b} debits what it covers");
        let cp = store
            .checkpoint(Some(header.tree_size))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cp.root, header.root);
        prev = Digest::sha256(&rec.header);
        prev_size = header.tree_size;
    }
    eprintln!(
        "two processes: {} receipts, {n} batches ({} and {} sealed), frontier behind {} times",
        rs.len(),
        reports[0].sealed.len(),
        reports[1].sealed.len(),
        reports[0].moved + reports[1].moved,
    );
    // Each aggregator follows the stored log inside its write transaction, so no write is
    // ever refused for a stale frontier.
    assert_eq!(
        reports[0].moved + reports[1].moved,
        0,
        "a frontier went stale"
    );
    store.close().await;
}

#[tokio::test]
async fn the_sealer_lock_held_elsewhere_pauses_sealing_not_ingest() {
    let place = Pg::place().await;
    let mut world = World::new();
    let agg = open_with::<Pg>(&place.locator(), &world, config(&world)).await;
    let mut other = agg.store().pool().acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(PgStore::SEALER_LOCK)
        .execute(&mut *other)
        .await
        .unwrap();
    let rs: Vec<_> = (0..5).map(|i| world.call(0, i % 2, 0)).collect();
    let out = agg
        .submit(rs.iter().cloned().map(Ok).collect())
        .await
        .unwrap();
    assert!(out.iter().all(|o| matches!(o, Outcome::Accepted { .. })));
    assert!(matches!(
        agg.seal().await,
        Err(AggError::Store(StoreError::SealerBusy))
    ));
    assert!(agg.store().batch(1).await.unwrap().is_none());
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(PgStore::SEALER_LOCK)
        .execute(&mut *other)
        .await
        .unwrap();
    drop(other);
    let h = agg.seal().await.unwrap().unwrap();
    assert_eq!((h.header.batch, h.header.tree_size), (1, 5));
    agg.store().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_together_migrate_once_and_a_newer_schema_is_refused() {
    let place = Pg::place().await;
    let url = place.locator();
    let (a, b) = tokio::join!(PgStore::connect(&url, 2), PgStore::connect(&url, 2));
    let (a, b) = (a.unwrap(), b.unwrap());
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_version")
        .fetch_all(a.pool())
        .await
        .unwrap();
    assert_eq!(versions, [1, 2, 3, 4]);
    b.close().await;
    sqlx::query("INSERT INTO schema_version (version) VALUES (99)")
        .execute(a.pool())
        .await
        .unwrap();
    a.close().await;
    match PgStore::connect(&url, 2).await {
        Err(StoreError::SchemaTooNew { found, known }) => assert_eq!((found, known), (99, 4)),
        other => panic!("{other:?}"),
    }
}

/// A database written by version 1 of the PostgreSQL schema (sequence numbers as BIGINT,
/// several held-back receipts and forks at one position) is migrated to version 2 with
/// every value kept and the duplicates per position reduced to the first.
#[tokio::test]
async fn a_version_1_database_migrates_with_its_values() {
    use sqlx::Connection;
    let place = Pg::place().await;
    let url = place.locator();
    let blob = |b: u8| format!("'\\x{}'::bytea", format!("{b:02x}").repeat(32));
    let (host, id, channel, other) = (blob(2), blob(1), blob(3), blob(4));
    let init = include_str!("../../migrations/postgres/0001_init.sql");
    let v1 = format!(
        "CREATE TABLE schema_version (version BIGINT NOT NULL);
         {init}
         INSERT INTO schema_version VALUES (1);
         INSERT INTO receipts VALUES (0, {id}, '\\xaa', {host}, 7, {channel}, 9223372036854775807, 42, 42, 5);
         INSERT INTO hosts VALUES ({host}, 7, {id}, 1);
         INSERT INTO channels VALUES ({channel}, {other}, {host}, {other}, 9223372036854775807, 42, 42);
         INSERT INTO pending VALUES ({other}, {host}, 9, '\\xbb', 11, 100);
         INSERT INTO pending VALUES ({channel}, {host}, 9, '\\xcc', 10, 100);
         INSERT INTO pending VALUES ({id}, {host}, 10, '\\xdd', 12, 100);
         INSERT INTO evidence (kind, host, host_seq, existing, receipt_id, bytes, recorded_at)
           VALUES ('fork', {host}, 3, NULL, {other}, '\\x01', 1);
         INSERT INTO evidence (kind, host, host_seq, existing, receipt_id, bytes, recorded_at)
           VALUES ('fork', {host}, 3, NULL, {channel}, '\\x02', 2);
         INSERT INTO evidence (kind, host, host_seq, existing, receipt_id, bytes, recorded_at)
           VALUES ('fork', {host}, 4, {id}, {id}, '\\x03', 3);"
    );
    let mut c = sqlx::postgres::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(v1))
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();

    let store = PgStore::connect(&url, 2).await.unwrap();
    let key = tally_protocol::PublicKey([2; 32]);
    // A version 1 host head (a hash chain, no host log) migrates, but is never continued:
    // it has no host-log frontier (docs/protocol.md §9).
    assert!(matches!(
        store.host(&key).await,
        Err(StoreError::Corrupt(_))
    ));
    let c = store
        .channel(&tally_protocol::ChannelId(Digest([3; 32])))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((c.last_seq, c.total), (i64::MAX as u64, 42));
    let mine = store.host_receipts(&key, 0, 10).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!((mine[0].0, mine[0].1.leaf), (7, 0));
    assert_eq!(store.pending_count().await.unwrap(), 2);
    let mut tx = store.begin().await.unwrap();
    let first = tally_aggregator::store::StoreTx::take_pending(&mut tx, &key, 9)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.bytes, vec![0xcc], "the first to arrive is kept");
    drop(tx);
    let ev = store.evidence(0, 10).await.unwrap();
    let kept: Vec<_> = ev
        .iter()
        .map(|(n, e)| (*n, e.host_seq, e.bytes.clone()))
        .collect();
    assert_eq!(kept, vec![(1, 3, vec![1]), (3, 4, vec![3])]);
    store.close().await;
}

//! The audit of a running aggregator through its HTTP API, for an auditor without access
//! to its database: each on-chain batch's checkpoint is fetched, its note verified with
//! the registered key and its root compared with the chain's, and each is proven
//! consistent with the previous one by the aggregator's consistency proof; then every
//! leaf up to the last batch is fetched (`GET /v1/leaves`, paged), verified with
//! re-execution, and hashed into a tree whose roots must equal the chain's.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tally_protocol::merkle::{ConsistencyProof, MemoryTree, leaf_hash};
use tally_protocol::{Checkpoint, Digest, SignedReceipt};

use crate::audit::{book, pinned_verifier_config};
use crate::view::ChainView;
use crate::watcher::feed::{Consistency, LeavesPage};
use crate::{Audit, AuditError, Progress, Sharded};

/// Largest answer read from the aggregator.
const MAX_ANSWER: usize = 16 << 20;

/// GETs `url` and returns the body, bounded.
pub(crate) async fn get(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, AuditError> {
    let err = |e: reqwest::Error| AuditError::Api(format!("GET {url}: {e}"));
    let resp = client.get(url).send().await.map_err(err)?;
    let status = resp.status();
    if resp.content_length().is_some_and(|n| n > MAX_ANSWER as u64) {
        return Err(AuditError::Api(format!(
            "GET {url}: answer larger than {MAX_ANSWER} bytes"
        )));
    }
    let body = resp.bytes().await.map_err(err)?;
    if !status.is_success() {
        return Err(AuditError::Api(format!("GET {url}: {status}")));
    }
    if body.len() > MAX_ANSWER {
        return Err(AuditError::Api(format!(
            "GET {url}: answer larger than {MAX_ANSWER} bytes"
        )));
    }
    Ok(body.to_vec())
}

/// Audits the aggregator at `url` against the chain's `view` (see the module docs), with
/// `threads` verifier threads.
pub async fn audit_online(
    url: &str,
    view: &ChainView,
    threads: usize,
    progress: &dyn Progress,
) -> Result<Audit, AuditError> {
    let base = url.trim_end_matches('/');
    let origin = tally_protocol::log_origin(&view.chain_id, &view.contract)
        .map_err(|e| AuditError::ChainView(e.to_string()))?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| AuditError::Api(e.to_string()))?;
    let mut audit = Audit {
        threads: threads.max(1),
        ..Audit::default()
    };
    let mut prev: Option<(u64, Digest)> = None;
    for b in &view.batches {
        let note = get(&client, &format!("{base}/v1/checkpoints/{}", b.tree_size)).await?;
        let note = String::from_utf8(note).unwrap_or_default();
        match Checkpoint::verify_note(&note, &origin, &view.aggregator_key) {
            Ok(body) if body.size == b.tree_size && body.root == b.root => {}
            Ok(_) => audit.fail("onchain_root", || {
                format!(
                    "batch {}: the aggregator's checkpoint is not the chain's root",
                    b.number
                )
            }),
            Err(e) => audit.fail("checkpoint_note", || format!("batch {}: {e}", b.number)),
        }
        if let Some((s0, r0)) = prev
            && s0 < b.tree_size
        {
            let body = get(
                &client,
                &format!("{base}/v1/consistency?from={s0}&to={}", b.tree_size),
            )
            .await?;
            let proof: Consistency = serde_json::from_slice(&body)
                .map_err(|e| AuditError::Api(format!("a consistency proof: {e}")))?;
            let proof = ConsistencyProof {
                size1: s0,
                size2: b.tree_size,
                hashes: proof.hashes,
            };
            if proof.verify(&r0, &b.root).is_err() {
                audit.fail("checkpoint_consistency", || {
                    format!("batch {} is not consistent with the tree of {s0}", b.number)
                });
            }
        }
        prev = Some((b.tree_size, b.root));
        audit.checkpoints += 1;
    }
    // Every leaf up to the last on-chain batch, page by page: verified (signatures,
    // re-execution, chains, totals) and hashed into a tree whose roots must be the chain's.
    let end = view.batches.iter().map(|b| b.tree_size).max().unwrap_or(0);
    let config = pinned_verifier_config(view)?;
    let mut shards = Sharded::new(&config, audit.threads);
    let mut tree = MemoryTree::with_capacity(usize::try_from(end).unwrap_or(0));
    progress.begin("fetch+verify", end);
    let verify_start = Instant::now();
    while tree.size() < end {
        let from = tree.size();
        let to = (from + tally_aggregator::api::MAX_LEAVES_PER_PAGE).min(end);
        let body = get(&client, &format!("{base}/v1/leaves?start={from}&end={to}")).await?;
        let page: LeavesPage = serde_json::from_slice(&body)
            .map_err(|e| AuditError::Api(format!("a page of leaves: {e}")))?;
        if page.leaves.len() as u64 != to - from {
            return Err(AuditError::Api(format!(
                "asked for leaves {from}..{to}, got {}",
                page.leaves.len()
            )));
        }
        let mut receipts = Vec::with_capacity(page.leaves.len());
        for (leaf, l) in (from..).zip(page.leaves) {
            let bytes = BASE64.decode(l.encoding.as_bytes()).unwrap_or_default();
            if l.leaf_index != leaf {
                audit.fail("log_gap", || {
                    format!("leaf {leaf} came as {}", l.leaf_index)
                });
            }
            tree.append(leaf_hash(&bytes));
            match SignedReceipt::decode(&bytes) {
                Ok(r) => receipts.push((leaf, r)),
                Err(_) => audit.fail("malformed_receipt", || {
                    format!("leaf {leaf} does not decode")
                }),
            }
        }
        let findings = shards.push(receipts);
        book(&mut audit, findings, view);
        progress.advance(to - from);
    }
    progress.end();
    audit.verify_secs = verify_start.elapsed().as_secs_f64();
    audit.leaves = end;
    for b in &view.batches {
        if tree.root_at(b.tree_size).ok() != Some(b.root) {
            audit.fail("onchain_root", || {
                format!(
                    "batch {}: the served leaves do not hash to the chain's root",
                    b.number
                )
            });
        }
    }
    audit.receipts = shards.report();
    Ok(audit)
}

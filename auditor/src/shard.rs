//! Verifiers sharded by host: a host's chain and its channels live in one shard, so the
//! shards are independent and run on separate threads.

use std::collections::HashMap;

use tally_protocol::{PublicKey, SignedReceipt};
use tally_verifier::{Finding, Report, Verifier, VerifierConfig};

/// One [`Verifier`] per thread, each owning the hosts first seen on it.
pub struct Sharded {
    verifiers: Vec<Verifier>,
    /// Each host's shard, given round-robin in order of first appearance so the load
    /// spreads evenly whatever the keys.
    shard_of: HashMap<PublicKey, usize>,
}

impl Sharded {
    /// `shards` verifiers (at least one) with `config`.
    pub fn new(config: &VerifierConfig, shards: usize) -> Sharded {
        Sharded {
            verifiers: (0..shards.max(1))
                .map(|_| Verifier::new(config.clone()))
                .collect(),
            shard_of: HashMap::new(),
        }
    }

    /// Verifies the next receipts (in log order), each shard on its own thread; findings
    /// carry their leaf index, in leaf order.
    pub fn push(&mut self, receipts: Vec<(u64, SignedReceipt)>) -> Vec<(u64, Finding)> {
        let n = self.verifiers.len();
        let mut parts: Vec<(Vec<u64>, Vec<SignedReceipt>)> =
            (0..n).map(|_| (Vec::new(), Vec::new())).collect();
        for (leaf, r) in receipts {
            let next = self.shard_of.len() % n;
            let shard = *self.shard_of.entry(*r.receipt.host()).or_insert(next);
            parts[shard].0.push(leaf);
            parts[shard].1.push(r);
        }
        let mut out = Vec::new();
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .verifiers
                .iter_mut()
                .zip(parts)
                .map(|(v, (leaves, rs))| {
                    s.spawn(move || {
                        let base = v.report().checked;
                        v.push(&rs)
                            .into_iter()
                            .map(|f| {
                                let local = (f.index - base) as usize;
                                (leaves.get(local).copied().unwrap_or(u64::MAX), f)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                if let Ok(found) = h.join() {
                    out.extend(found);
                }
            }
        });
        out.sort_by_key(|(leaf, _)| *leaf);
        out
    }

    /// The merged totals of every shard.
    pub fn report(&self) -> Report {
        let mut total = Report::default();
        for v in &self.verifiers {
            let r = v.report();
            total.checked += r.checked;
            total.passed += r.passed;
            total.reexecuted += r.reexecuted;
            total.hosts += r.hosts;
            total.channels += r.channels;
            for (code, n) in &r.failures {
                *total.failures.entry(code).or_insert(0) += n;
            }
        }
        total
    }
}

//! Benchmarks of the Merkle log at one million leaves: appending to [`MemoryTree`] and to
//! [`CompactRange`], and generating and verifying inclusion and consistency proofs.
//!
//! Goals on one core: a million appends within 0.5 s, an inclusion proof generated within
//! 1 µs and verified within 10 µs, a consistency proof generated and verified within 10 µs.
#![allow(
    clippy::unwrap_used,
    reason = "setup of a benchmark: a failure there should abort the run"
)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use tally_protocol::Digest;
use tally_protocol::merkle::{
    CompactRange, MemoryTree, consistency_proof, inclusion_proof, leaf_hash,
};

const LEAVES: u64 = 1_000_000;

fn leaf_hashes() -> Vec<Digest> {
    (0..LEAVES).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

/// Positions spread over the whole tree, so both cheap paths and paths with a folded
/// (non-perfect) sibling are measured.
fn spread(count: u64, modulus: u64) -> Vec<u64> {
    (0..count)
        .map(|i| (i * 7_919_993 + 12_345) % modulus)
        .collect()
}

fn append(c: &mut Criterion) {
    let leaves = leaf_hashes();
    let mut group = c.benchmark_group("append_1m");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(LEAVES));
    group.bench_function("memory_tree", |b| {
        b.iter(|| {
            let mut tree = MemoryTree::with_capacity(leaves.len());
            for leaf in &leaves {
                tree.append(*leaf);
            }
            tree.root()
        })
    });
    group.bench_function("compact_range", |b| {
        b.iter(|| {
            let mut range = CompactRange::new();
            for leaf in &leaves {
                range.append(*leaf, |level, index, digest| {
                    black_box((level, index, digest));
                });
            }
            range.root()
        })
    });
    group.finish();
}

fn proofs(c: &mut Criterion) {
    let leaves = leaf_hashes();
    let mut tree = MemoryTree::with_capacity(leaves.len());
    for leaf in &leaves {
        tree.append(*leaf);
    }
    let root = tree.root();
    let indices = spread(1024, LEAVES);
    let inclusion: Vec<_> = indices
        .iter()
        .map(|&i| inclusion_proof(&tree, i, LEAVES).unwrap())
        .collect();
    let sizes1: Vec<u64> = spread(1024, LEAVES - 1).iter().map(|s| s + 1).collect();
    let roots1: Vec<Digest> = sizes1.iter().map(|&s| tree.root_at(s).unwrap()).collect();
    let consistency: Vec<_> = sizes1
        .iter()
        .map(|&s| consistency_proof(&tree, s, LEAVES).unwrap())
        .collect();

    let mut group = c.benchmark_group("proofs_1m");
    group.bench_function("inclusion_generate", |b| {
        let mut k = 0;
        b.iter(|| {
            k = (k + 1) % indices.len();
            inclusion_proof(&tree, black_box(indices[k]), LEAVES)
        })
    });
    group.bench_function("inclusion_verify", |b| {
        let mut k = 0;
        b.iter(|| {
            k = (k + 1) % inclusion.len();
            let leaf = &leaves[indices[k] as usize];
            black_box(&inclusion[k]).verify(leaf, &root)
        })
    });
    group.bench_function("consistency_generate", |b| {
        let mut k = 0;
        b.iter(|| {
            k = (k + 1) % sizes1.len();
            consistency_proof(&tree, black_box(sizes1[k]), LEAVES)
        })
    });
    group.bench_function("consistency_verify", |b| {
        let mut k = 0;
        b.iter(|| {
            k = (k + 1) % consistency.len();
            black_box(&consistency[k]).verify(&roots1[k], &root)
        })
    });
    group.bench_function("consistency_generate_verify", |b| {
        let mut k = 0;
        b.iter(|| {
            k = (k + 1) % sizes1.len();
            consistency_proof(&tree, black_box(sizes1[k]), LEAVES)
                .unwrap()
                .verify(&roots1[k], &root)
        })
    });
    group.finish();
}

// What `criterion_group!` and `criterion_main!` expand to, without the undocumented public
// function the first one generates.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    append(&mut c);
    proofs(&mut c);
    c.final_summary();
}

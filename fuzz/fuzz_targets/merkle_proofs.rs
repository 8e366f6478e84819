//! Proof verification is total: arbitrary sizes, indices and hashes never panic, and a
//! proof of the wrong length is always rejected.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tally_protocol::Digest;
use tally_protocol::merkle::{ConsistencyProof, InclusionProof};

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 + 64 {
        return;
    }
    let a = u64::from_be_bytes(data[0..8].try_into().unwrap());
    let b = u64::from_be_bytes(data[8..16].try_into().unwrap());
    let leaf = Digest(data[16..48].try_into().unwrap());
    let root = Digest(data[48..80].try_into().unwrap());
    let hashes: Vec<Digest> = data[80..]
        .chunks_exact(32)
        .map(|c| Digest(c.try_into().unwrap()))
        .collect();
    let inclusion = InclusionProof { leaf_index: a, tree_size: b, hashes: hashes.clone() };
    let _ = inclusion.verify(&leaf, &root);
    let consistency = ConsistencyProof { size1: a, size2: b, hashes };
    let _ = consistency.verify(&leaf, &root);
});

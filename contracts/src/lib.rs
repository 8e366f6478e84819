//! The settlement contract (CosmWasm): escrow, registries, batches with a challenge window,
//! fraud proofs and pro-rata release of revenue to contributors.

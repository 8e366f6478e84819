//! The verifier: offline checks of receipts, batches and proofs for auditors and clients.

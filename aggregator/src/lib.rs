//! The aggregator: ingests receipts from many hosts, checks them, seals Merkle batches and
//! serves inclusion proofs and signed checkpoints.

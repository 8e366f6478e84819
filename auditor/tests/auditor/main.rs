//! The auditor crate's integration tests, one binary.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod chain_rest;

//! The `cli` crate's integration tests, one binary (fewer links of the heavy
//! dependencies, so a faster test build); each module was a test binary before.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod audit_chain;
mod cli;
mod demo;
mod journal;
mod serve;
mod serve_chain;
mod serve_limits;
mod watch;

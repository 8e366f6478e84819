//! The `attestor` crate's integration tests, one binary (fewer links of the heavy
//! dependencies, so a faster test build); each module was a test binary before.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod attest;
mod journal;
mod proxy;
mod ship;

/// The libtest name of the test function `test` declared in the module whose
/// `module_path!()` is `module` (the path without this binary's crate name): a crash test
/// re-runs itself as a child process by this name with `--exact`.
pub(crate) fn test_name(module: &str, test: &str) -> String {
    match module.split_once("::") {
        Some((_, rest)) => format!("{rest}::{test}"),
        None => test.to_owned(),
    }
}

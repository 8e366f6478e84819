//! The `verifier` crate's integration tests, one binary (fewer links of the heavy
//! dependencies, so a faster test build); each module was a test binary before.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod support {
    pub(crate) mod market;
    pub(crate) mod quality_workload;
}
mod quality;
mod quality_eval;
mod report_chromium;
mod verifier;

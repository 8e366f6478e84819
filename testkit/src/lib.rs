//! Fixtures shared by the workspace's tests, benches and tools instead of copied between
//! them: a throwaway PostgreSQL server ([`ScratchPg`], which `tally bench ingest` also
//! starts) and the standard test price schedules. Not published; nothing in a deployed
//! binary's hot path depends on it.

mod schedules;
mod scratch_pg;

pub use schedules::{one_tier_schedule, two_tier_schedule};
pub use scratch_pg::{ScratchPg, ScratchPgError, create_database_at};

//! The metering guest: deterministic integer code that turns one call's usage facts and a
//! price schedule into billable units and a fee. Built for wasm32 and pinned by SHA-256.
#![no_std]

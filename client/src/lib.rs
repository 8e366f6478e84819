//! The payer's side of a metered call, and the wire format it shares with the proxy.
//!
//! A client of `tally proxy` sends its `SignedAuthorization` in the
//! [`AUTHORIZATION_HEADER`] ([`authorization_header`]) and gets the receipt back in the
//! [`RECEIPT_HEADER`] of a JSON answer or in the [`RECEIPT_EVENT`] that ends a stream.
//! [`check_json_answer`] and [`check_sse_answer`] check that receipt against the exact
//! bytes sent and received and the usage the answer reports; [`check_receipt_for_request`]
//! is the core of both.
//!
//! A payer keeps a [`Channel`] (payer, host, model): it signs each request's
//! authorisation with a fresh `seq` reserved durably in a [`StateStore`] ([`FileStore`]
//! on disk, locked against a second process), and checks each answer's receipt, including
//! that its fee is what the metering function ([`check_fee`], the guest's own source run
//! natively) gives. [`keyfile`] reads and writes the key files `tally keys` makes;
//! [`audit`] and [`values`] are the auditor's checks and every protocol type by name.
//!
//! The proxy (`tally-attestor`) writes what this crate reads, from the same definitions
//! ([`wire`] constants, [`Splitter`], [`usage_of_json`], [`usage_of_chunk`]), so the two sides cannot
//! drift apart. This crate depends on `tally-protocol` only: no wasmtime, no tokio, no
//! HTTP stack — it builds for `wasm32-unknown-unknown`, and the Python and TypeScript SDKs
//! are built on it.

pub mod audit;
mod channel;
mod check;
pub mod keyfile;
mod sse;
pub mod testkit;
mod usage;
pub mod values;
pub mod wire;

pub use channel::{
    Channel, ChannelConfig, ChannelError, ChannelStatus, MAX_STATE_LEN, MemoryStore, StateStore,
    StoreError,
};
#[cfg(not(target_arch = "wasm32"))]
pub use channel::{FileStore, now_ms};
pub use check::{
    ClientCheckError, authorization_header, check_authorization, check_fee, check_json_answer,
    check_priced_json_answer, check_priced_sse_answer, check_receipt_for_request, check_sse_answer,
};
pub use sse::{EventTooLong, Splitter, SseEvent, events, parse_event};
pub use usage::{
    ChunkInfo, ReportedUsage, UsageError, reported_in_chunk, reported_in_json, usage_of_chunk,
    usage_of_json,
};
pub use wire::{
    AUTHORIZATION_HEADER, ERROR_EVENT, ERROR_HEADER, RECEIPT_EVENT, RECEIPT_HEADER, WireError,
    decode_authorization, decode_receipt, encode_hex,
};

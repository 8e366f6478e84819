//! The in-process development chain Tally's tests, benches and `tally demo` settle on.
//!
//! [`Devnet`] runs the committed contract `.wasm` (the bytes one would upload) in the
//! CosmWasm VM with a bank, a block clock and the gas a wasmd chain charges ([`gas`]);
//! it implements the aggregator's `Chain` trait. [`DevnetRest`] serves the Cosmos REST
//! endpoints the aggregator's `CosmosChain` client uses, so the real-chain path of
//! `tally serve` runs locally too.
//!
//! It lives outside the aggregator so that the aggregator (and everything a production
//! deployment links) carries no chain VM: only this crate, the contract's tests and the
//! `tally` binary link `cosmwasm-vm`.

mod devnet;
pub mod gas;
mod rest;

pub use devnet::{
    BankSend, COMMITTED_CONTRACT, DEFAULT_BLOCK_MAX_GAS, DEFAULT_MAX_TX_BYTES, Devnet,
    DevnetAccount, DevnetConfig, LoggedTx, dev_instantiate,
};
pub use gas::{GasConfig, GasUsed};
pub use rest::DevnetRest;

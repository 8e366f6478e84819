//! What a Cosmos SDK chain running wasmd charges for a contract call, so the devnet reports
//! the gas a real chain would ask for, not only the CosmWasm VM's.
//!
//! A `MsgExecuteContract` pays, in SDK gas:
//!
//! - **VM**: the CosmWasm VM's own gas (wasm instructions and host functions, signature
//!   checks included) divided by wasmd's `DefaultGasMultiplier` (140,000 VM gas per SDK
//!   gas since CosmWasm 2.0, `x/wasm/types/gas_register.go`);
//! - **storage**: every read and write the contract makes goes through the SDK's gas KV
//!   store (`store/types/gas.go`, `KVGasConfig`): a read costs 1,000 + 3 per byte of key
//!   and value, a write 2,000 + 30 per byte, `has` and `delete` 1,000, an iterator step 30
//!   + 3 per byte. wasmd stores a contract's keys under `0x03 ‖ contract address (32
//!   bytes)`, and those 33 bytes are charged with every key;
//! - **transaction size**: `TxSizeCostPerByte` (10) per byte of the signed transaction
//!   (`x/auth` params), plus `SigVerifyCostSecp256k1` (1,000) for its signature;
//! - **setup**: wasmd's `DefaultInstanceCost` (60,000) each time a contract instance is
//!   loaded (`DefaultInstanceCostDiscount`, 2,000, for a pinned code), and its event costs
//!   (1 per byte of attributes past a free 100 bytes, 10 per attribute);
//! - a fixed part this model only estimates ([`GasConfig::fixed_estimate`]): the ante
//!   handler's account and fee reads and writes and wasmd's reads of the contract and code
//!   info. A chain's simulation is the authority; this model is for budgets and tables.
//!
//! Every default above was checked against the cosmos-sdk and wasmd sources named.

pub use tally_aggregator::chain::GasUsed;

/// The gas parameters of a chain (defaults: Cosmos SDK and wasmd defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GasConfig {
    /// `KVGasConfig.ReadCostFlat`.
    pub read_cost_flat: u64,
    /// `KVGasConfig.ReadCostPerByte` (key and value).
    pub read_cost_per_byte: u64,
    /// `KVGasConfig.WriteCostFlat`.
    pub write_cost_flat: u64,
    /// `KVGasConfig.WriteCostPerByte` (key and value).
    pub write_cost_per_byte: u64,
    /// `KVGasConfig.HasCost`.
    pub has_cost: u64,
    /// `KVGasConfig.DeleteCost`.
    pub delete_cost: u64,
    /// `KVGasConfig.IterNextCostFlat`.
    pub iter_next_cost_flat: u64,
    /// Bytes wasmd prefixes to every contract key: `0x03` and the 32-byte contract address.
    pub contract_key_prefix: u64,
    /// `x/auth` `TxSizeCostPerByte`.
    pub tx_size_cost_per_byte: u64,
    /// `x/auth` `SigVerifyCostSecp256k1` (one signature per transaction).
    pub sig_verify_cost: u64,
    /// wasmd `DefaultGasMultiplier`: VM gas per SDK gas.
    pub gas_multiplier: u64,
    /// wasmd `DefaultInstanceCost`.
    pub instance_cost: u64,
    /// wasmd `DefaultInstanceCostDiscount` (pinned code).
    pub instance_cost_discount: u64,
    /// Whether the contract's code is pinned (governance does that on some chains).
    pub pinned: bool,
    /// wasmd `DefaultEventAttributeDataCost` (per byte of key and value).
    pub event_attribute_data_cost: u64,
    /// wasmd `DefaultPerAttributeCost`.
    pub event_per_attribute_cost: u64,
    /// wasmd `DefaultEventAttributeDataFreeTier` (bytes).
    pub event_attribute_free_bytes: u64,
    /// Estimated fixed cost per transaction not modelled above: the ante handler (account
    /// read and sequence write, fee deduction: two balance reads and writes, parameter
    /// reads) and wasmd's contract-info, code-info and pinned-code reads, at the KV prices
    /// above with typical value sizes (≈ 23,000 + 5,000).
    pub fixed_estimate: u64,
}

impl Default for GasConfig {
    fn default() -> GasConfig {
        GasConfig {
            read_cost_flat: 1_000,
            read_cost_per_byte: 3,
            write_cost_flat: 2_000,
            write_cost_per_byte: 30,
            has_cost: 1_000,
            delete_cost: 1_000,
            iter_next_cost_flat: 30,
            contract_key_prefix: 33,
            tx_size_cost_per_byte: 10,
            sig_verify_cost: 1_000,
            gas_multiplier: 140_000,
            instance_cost: 60_000,
            instance_cost_discount: 2_000,
            pinned: false,
            event_attribute_data_cost: 1,
            event_per_attribute_cost: 10,
            event_attribute_free_bytes: 100,
            fixed_estimate: 28_000,
        }
    }
}

impl GasConfig {
    /// A read of `key` that found `value_len` bytes (0 if absent).
    pub fn read(&self, key_len: usize, value_len: usize) -> u64 {
        self.read_cost_flat
            + self.read_cost_per_byte
                * (self.contract_key_prefix + key_len as u64 + value_len as u64)
    }

    /// A write of `value_len` bytes under `key`.
    pub fn write(&self, key_len: usize, value_len: usize) -> u64 {
        self.write_cost_flat
            + self.write_cost_per_byte
                * (self.contract_key_prefix + key_len as u64 + value_len as u64)
    }

    /// One iterator step that yielded a record.
    pub fn iter_next(&self, key_len: usize, value_len: usize) -> u64 {
        self.iter_next_cost_flat
            + self.read_cost_per_byte
                * (self.contract_key_prefix + key_len as u64 + value_len as u64)
    }

    /// The events' cost of `attributes`.
    pub fn events(&self, attributes: &[(String, String)]) -> u64 {
        let bytes: u64 = attributes
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum();
        bytes.saturating_sub(self.event_attribute_free_bytes) * self.event_attribute_data_cost
            + attributes.len() as u64 * self.event_per_attribute_cost
    }

    /// The setup cost of one contract call.
    pub fn setup(&self) -> u64 {
        if self.pinned {
            self.instance_cost_discount
        } else {
            self.instance_cost
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_prices_follow_the_sdk_defaults_with_wasmds_prefix() {
        let g = GasConfig::default();
        // 34-byte key (the contract's compact channel key), 20-byte value.
        assert_eq!(g.read(34, 20), 1_000 + 3 * (33 + 34 + 20));
        assert_eq!(g.write(34, 20), 2_000 + 30 * (33 + 34 + 20));
        assert_eq!(g.iter_next(10, 5), 30 + 3 * 48);
        assert_eq!(g.setup(), 60_000);
        let pinned = GasConfig {
            pinned: true,
            ..GasConfig::default()
        };
        assert_eq!(pinned.setup(), 2_000);
    }

    #[test]
    fn events_have_a_free_tier() {
        let g = GasConfig::default();
        let small = vec![("action".to_string(), "claim".to_string())];
        assert_eq!(g.events(&small), 10);
        let big = vec![("k".to_string(), "v".repeat(199))];
        assert_eq!(g.events(&big), 100 + 10);
    }
}

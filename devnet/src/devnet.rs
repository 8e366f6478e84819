//! The in-process devnet: the committed contract `.wasm` run in the CosmWasm VM (the same
//! bytes one would upload to a real chain, checked by the VM's static analysis first),
//! with a bank of native balances, a block clock, an event log and the gas of every call.
//!
//! Like a real chain, every execute is atomic: the funds attached move to the contract
//! before it runs, the `BankMsg::Send`s it returns are applied after, and if anything fails
//! (the contract's error, a send beyond the contract's balance, running out of gas) the
//! contract storage and the bank are restored as they were. Each execute is one block:
//! the height rises by one; time moves only with [`Devnet::advance`], so tests control
//! challenge windows exactly.
//!
//! Gas is what a Cosmos SDK chain running wasmd would charge ([`GasUsed`], see
//! [`crate::gas`]): the VM's gas converted by wasmd's multiplier, the SDK's KV-store gas
//! for every storage access, the transaction's size (of the `MsgExecuteContract`
//! transaction the account would sign), setup and events. Like a chain, the devnet refuses
//! a transaction above [`DevnetConfig::max_tx_bytes`] before running it
//! ([`ChainError::TooLarge`]) and fails one whose gas passes
//! [`DevnetConfig::block_max_gas`] ([`ChainError::OutOfGas`]), changing nothing.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use cosmwasm_std::{
    Addr, BankMsg, BankQuery, Binary, BlockInfo, Coin, ContractInfo, ContractResult, CosmosMsg,
    Empty, Env, MessageInfo, Order, QueryRequest, Record, ReplyOn, Response, SystemError,
    SystemResult, Timestamp, Uint256,
};
use cosmwasm_vm::testing::MockApi;
use cosmwasm_vm::{
    Backend, BackendError, BackendResult, GasInfo, Instance, Querier, Size, Storage, VmError,
    call_execute, call_instantiate, call_query, capabilities_from_csv,
};
use tally_contracts::msg::{ExecuteMsg, InstantiateMsg, QueryMsg};
use tally_protocol::PublicKey;

use tally_aggregator::chain::{
    BlockTime, Chain, ChainError, CosmosKey, EscrowMove, MoveKind, TxOutcome, TxParams,
    sign_execute,
};

use crate::gas::{GasConfig, GasUsed};

/// The capabilities a current wasmd node offers.
const CAPABILITIES: &str = "iterator,staking,stargate,cosmwasm_1_1,cosmwasm_1_2,cosmwasm_1_3,\
                            cosmwasm_1_4,cosmwasm_2_0,cosmwasm_2_1,cosmwasm_2_2,cosmwasm_3_0";

/// Gas limit of one call, in CosmWasm gas (wasmd's default block limit is far above what
/// the contract needs; this bounds a runaway call).
const GAS_LIMIT: u64 = 100_000_000_000_000;

/// Memory limit of one instance (wasmd's default).
const MEMORY_LIMIT: Size = Size::mebi(32);

pub use tally_aggregator::chain::DEFAULT_MAX_TX_BYTES;

/// The block gas limit the devnet enforces by default. CometBFT's own default is
/// unlimited (`block.max_gas = -1`); chains set one in their consensus parameters, and 30
/// million is a common order of magnitude.
pub const DEFAULT_BLOCK_MAX_GAS: u64 = 30_000_000;

/// The committed contract (`contracts/dist/tally_contracts.wasm`), embedded at build time:
/// the one copy every devnet (tests, benches, `tally demo`, an installed binary) runs.
pub const COMMITTED_CONTRACT: &[u8] = include_bytes!("../../contracts/dist/tally_contracts.wasm");

/// How a devnet starts.
#[derive(Debug, Clone)]
pub struct DevnetConfig {
    /// The contract bytes (read them with [`DevnetConfig::committed`] or from any path).
    pub wasm: Vec<u8>,
    /// The chain id (bound into every authorisation and header).
    pub chain_id: String,
    /// The native denomination.
    pub denom: String,
    /// The bech32 prefix of addresses.
    pub prefix: &'static str,
    /// Genesis time, Unix seconds.
    pub genesis_time: u64,
    /// The contract's address; by default one derived like the accounts'. Set it when
    /// receipts were already bound to a fixed address (the contract never validates its
    /// own address, only compares it).
    pub contract_address: Option<String>,
    /// The gas schedule (Cosmos SDK and wasmd defaults by default).
    pub gas: GasConfig,
    /// Largest transaction accepted, in bytes (`None`: any).
    pub max_tx_bytes: Option<usize>,
    /// Most SDK gas one transaction may use (`None`: unlimited).
    pub block_max_gas: Option<u64>,
}

impl DevnetConfig {
    /// A devnet over the contract bytes at `path`; fails clearly if they are missing.
    pub fn from_path(path: &Path, chain_id: &str) -> Result<DevnetConfig, ChainError> {
        let wasm = std::fs::read(path).map_err(|e| {
            ChainError::Code(format!(
                "cannot read {} ({e}); build it with `cargo xtask build-contract`",
                path.display()
            ))
        })?;
        Ok(DevnetConfig::with_contract(wasm, chain_id))
    }

    /// A devnet over the committed contract ([`COMMITTED_CONTRACT`]).
    pub fn committed(chain_id: &str) -> DevnetConfig {
        DevnetConfig::with_contract(COMMITTED_CONTRACT.to_vec(), chain_id)
    }

    /// A devnet over the contract `wasm`, with the default limits and gas.
    fn with_contract(wasm: Vec<u8>, chain_id: &str) -> DevnetConfig {
        DevnetConfig {
            wasm,
            chain_id: chain_id.to_owned(),
            denom: "utally".into(),
            prefix: "tally",
            genesis_time: 1_750_000_000,
            contract_address: None,
            gas: GasConfig::default(),
            max_tx_bytes: Some(DEFAULT_MAX_TX_BYTES),
            block_max_gas: Some(DEFAULT_BLOCK_MAX_GAS),
        }
    }
}

/// One bank send between two accounts (a `MsgSend`), as the chain's history records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankSend {
    /// Block height.
    pub height: u64,
    /// Block time (Unix seconds).
    pub time: u64,
    /// The sender.
    pub from: String,
    /// The recipient.
    pub to: String,
    /// The amount, in the devnet's denomination.
    pub amount: u128,
}

/// One entry of the devnet's event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedTx {
    /// Block height.
    pub height: u64,
    /// Block time (Unix seconds).
    pub time: u64,
    /// Sender.
    pub sender: String,
    /// The message's name (`submit_batch`, `deposit`, …).
    pub message: String,
    /// SDK gas used: [`GasUsed::total`] of `gas`.
    pub gas_used: u64,
    /// The gas by what it paid for.
    pub gas: GasUsed,
    /// `Ok(attributes)` or the error; a failed call changed nothing.
    pub result: Result<Vec<(String, String)>, String>,
}

/// Contract storage: a sorted map with the VM's iterators, charging the SDK's KV gas for
/// every access and journaling the first write to each key so a failed call is undone in
/// proportion to what it wrote, not to the whole state.
#[derive(Default)]
struct DevStorage {
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    iterators: HashMap<u32, std::vec::IntoIter<Record>>,
    next_iterator: u32,
    gas: GasConfig,
    /// SDK gas charged since the call began (reads take `&self`, hence the cells).
    charged: Cell<u64>,
    /// Reads (iterator steps included) and writes since the call began.
    reads: Cell<u64>,
    writes: u64,
    /// The value each key had before the call's first write to it (`None`: absent).
    undo: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl DevStorage {
    /// Starts a call: gas and the undo journal from zero.
    fn begin(&mut self) {
        self.charged.set(0);
        self.reads.set(0);
        self.writes = 0;
        self.undo.clear();
    }

    /// Undoes every write of the call.
    fn rollback(&mut self) {
        for (k, v) in std::mem::take(&mut self.undo) {
            match v {
                Some(v) => self.data.insert(k, v),
                None => self.data.remove(&k),
            };
        }
    }

    /// Charges `gas` SDK gas; wasmvm reports KV gas to the VM as externally used.
    fn charge(&self, gas: u64) -> GasInfo {
        self.charged.set(self.charged.get().saturating_add(gas));
        GasInfo::with_externally_used(gas)
    }

    fn journal(&mut self, key: &[u8]) {
        if !self.undo.contains_key(key) {
            self.undo.insert(key.to_vec(), self.data.get(key).cloned());
        }
    }
}

impl Storage for DevStorage {
    fn get(&self, key: &[u8]) -> BackendResult<Option<Vec<u8>>> {
        let value = self.data.get(key).cloned();
        let gas = self.gas.read(key.len(), value.as_ref().map_or(0, Vec::len));
        self.reads.set(self.reads.get() + 1);
        (Ok(value), self.charge(gas))
    }

    fn scan(
        &mut self,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        order: Order,
    ) -> BackendResult<u32> {
        let lo = start.map_or(Bound::Unbounded, |s| Bound::Included(s.to_vec()));
        let hi = end.map_or(Bound::Unbounded, |e| Bound::Excluded(e.to_vec()));
        let empty = matches!((start, end), (Some(s), Some(e)) if s >= e);
        let mut records: Vec<Record> = if empty {
            Vec::new()
        } else {
            self.data
                .range((lo, hi))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        if order == Order::Descending {
            records.reverse();
        }
        self.next_iterator = self.next_iterator.wrapping_add(1);
        self.iterators
            .insert(self.next_iterator, records.into_iter());
        (Ok(self.next_iterator), GasInfo::free())
    }

    fn next(&mut self, iterator_id: u32) -> BackendResult<Option<Record>> {
        let Some(it) = self.iterators.get_mut(&iterator_id) else {
            return (
                Err(BackendError::iterator_does_not_exist(iterator_id)),
                GasInfo::free(),
            );
        };
        let r = it.next();
        let gas = match &r {
            Some((k, v)) => self.gas.iter_next(k.len(), v.len()),
            None => self.gas.iter_next_cost_flat,
        };
        self.reads.set(self.reads.get() + 1);
        (Ok(r), self.charge(gas))
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> BackendResult<()> {
        self.journal(key);
        self.data.insert(key.to_vec(), value.to_vec());
        self.writes += 1;
        let gas = self.gas.write(key.len(), value.len());
        (Ok(()), self.charge(gas))
    }

    fn remove(&mut self, key: &[u8]) -> BackendResult<()> {
        self.journal(key);
        self.data.remove(key);
        self.writes += 1;
        let gas = self.gas.delete_cost;
        (Ok(()), self.charge(gas))
    }
}

/// Answers the contract's bank queries from a snapshot of the balances.
struct BankQuerier {
    denom: String,
    balances: BTreeMap<String, u128>,
    /// SDK gas of one balance read.
    read_cost: u64,
}

impl Querier for BankQuerier {
    fn query_raw(
        &self,
        request: &[u8],
        _gas_limit: u64,
    ) -> BackendResult<SystemResult<ContractResult<Binary>>> {
        let gas = GasInfo::with_externally_used(self.read_cost);
        let answer = match cosmwasm_std::from_json::<QueryRequest<Empty>>(request) {
            Ok(QueryRequest::Bank(BankQuery::Balance { address, denom })) => {
                let amount = if denom == self.denom {
                    self.balances.get(&address).copied().unwrap_or(0)
                } else {
                    0
                };
                let resp =
                    cosmwasm_std::BalanceResponse::new(Coin::new(Uint256::from(amount), denom));
                match cosmwasm_std::to_json_binary(&resp) {
                    Ok(b) => SystemResult::Ok(ContractResult::Ok(b)),
                    Err(e) => SystemResult::Ok(ContractResult::Err(e.to_string())),
                }
            }
            Ok(_) => SystemResult::Err(SystemError::UnsupportedRequest {
                kind: "only bank balance queries on the devnet".into(),
            }),
            Err(e) => SystemResult::Err(SystemError::InvalidRequest {
                error: e.to_string(),
                request: Binary::from(request),
            }),
        };
        (Ok(answer), gas)
    }
}

/// A call's result: the contract's attributes, or why it failed.
type Attributes = Result<Vec<(String, String)>, ChainError>;

struct State {
    /// The contract compiled once (metering and determinism middlewares included), so a
    /// call only instantiates it.
    module: wasmer::Module,
    engine: wasmer::Engine,
    api: MockApi,
    storage: DevStorage,
    bank: BTreeMap<String, u128>,
    /// Balances before the current call first moved them, to undo a failed call.
    bank_undo: Vec<(String, Option<u128>)>,
    denom: String,
    /// Transaction limits.
    max_tx_bytes: Option<usize>,
    block_max_gas: Option<u64>,
    chain_id: String,
    contract: String,
    height: u64,
    time: u64,
    log: Vec<LoggedTx>,
    moves: Vec<EscrowMove>,
    sends: Vec<BankSend>,
}

/// The in-process chain. Cheap to clone (shared state); [`Devnet::account`] gives a
/// [`Chain`] acting as one address.
#[derive(Clone)]
pub struct Devnet {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Devnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devnet").finish_non_exhaustive()
    }
}

fn vm_error(e: VmError) -> ChainError {
    match e {
        VmError::GasDepletion { .. } => ChainError::Vm("out of gas".into()),
        other => ChainError::Vm(other.to_string()),
    }
}

/// The message's name: its JSON object's only key.
fn message_name(msg: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(msg)
        .ok()
        .and_then(|m| m.keys().next().cloned())
        .unwrap_or_default()
}

impl State {
    fn env(&self) -> Env {
        Env {
            block: BlockInfo {
                height: self.height,
                time: Timestamp::from_seconds(self.time),
                chain_id: self.chain_id.clone(),
            },
            transaction: None,
            contract: ContractInfo {
                address: Addr::unchecked(self.contract.clone()),
            },
        }
    }

    fn instance(&mut self) -> Result<Instance<MockApi, DevStorage, BankQuerier>, ChainError> {
        let backend = Backend {
            api: self.api,
            storage: std::mem::take(&mut self.storage),
            querier: BankQuerier {
                denom: self.denom.clone(),
                // The contract never queries the bank; an empty snapshot answers zero.
                balances: BTreeMap::new(),
                read_cost: self.storage.gas.read(40, 16),
            },
        };
        cosmwasm_vm::internals::instance_from_module(
            wasmer::Store::new(self.engine.clone()),
            &self.module,
            backend,
            GAS_LIMIT,
            None,
        )
        .map_err(vm_error)
    }

    fn transfer(&mut self, from: &str, to: &str, amount: u128) -> Result<(), ChainError> {
        if amount == 0 {
            return Ok(());
        }
        let have = self.bank.get(from).copied().unwrap_or(0);
        let left = have
            .checked_sub(amount)
            .ok_or_else(|| ChainError::Rejected(format!("{from}: insufficient funds")))?;
        let to_have = self.bank.get(to).copied().unwrap_or(0);
        let sum = to_have
            .checked_add(amount)
            .ok_or(ChainError::Invalid("balance overflow"))?;
        for who in [from, to] {
            self.bank_undo
                .push((who.to_owned(), self.bank.get(who).copied()));
        }
        self.bank.insert(from.to_owned(), left);
        self.bank.insert(to.to_owned(), sum);
        Ok(())
    }

    /// Undoes a failed call: storage and balances as they were.
    fn rollback(&mut self) {
        self.storage.rollback();
        for (who, before) in std::mem::take(&mut self.bank_undo).into_iter().rev() {
            match before {
                Some(b) => self.bank.insert(who, b),
                None => self.bank.remove(&who),
            };
        }
    }

    /// Runs one call (instantiate or execute) atomically: the funds move to the contract
    /// first and everything is restored if the call fails or passes the gas limit. Returns
    /// the attributes and the gas.
    fn call(
        &mut self,
        sender: &str,
        msg: &[u8],
        funds: u128,
        instantiate: bool,
        tx_bytes: usize,
    ) -> (Result<Vec<(String, String)>, ChainError>, GasUsed) {
        self.storage.begin();
        self.bank_undo.clear();
        self.height += 1;
        let contract = self.contract.clone();
        let info = MessageInfo {
            sender: Addr::unchecked(sender),
            funds: if funds == 0 {
                Vec::new()
            } else {
                vec![Coin::new(Uint256::from(funds), self.denom.clone())]
            },
        };
        let (mut result, vm_gas, external) = match self.transfer(sender, &contract, funds) {
            Ok(()) => self.call_contract(&info, msg, instantiate),
            Err(e) => (Err(e), 0, 0),
        };
        let g = self.storage.gas;
        let mut gas = GasUsed {
            vm_gas,
            vm: vm_gas.div_ceil(g.gas_multiplier),
            storage: external,
            tx_bytes: tx_bytes as u64,
            tx_size: g.tx_size_cost_per_byte * tx_bytes as u64,
            setup: g.setup() + g.sig_verify_cost,
            fixed: g.fixed_estimate,
        };
        if let Ok(attributes) = &result {
            gas.setup += g.events(attributes);
        }
        if let Some(limit) = self.block_max_gas
            && result.is_ok()
            && gas.total() > limit
        {
            result = Err(ChainError::OutOfGas {
                used: gas.total(),
                limit,
            });
        }
        if result.is_err() {
            self.rollback();
        }
        self.storage.iterators.clear();
        (result, gas)
    }

    /// Undoes the last call although it succeeded (a simulation).
    fn rollback_committed(&mut self) {
        self.rollback();
    }

    /// Runs the contract; returns its result, the VM's own gas and the gas its backend
    /// reported (storage, in SDK gas as wasmvm does).
    fn call_contract(
        &mut self,
        info: &MessageInfo,
        msg: &[u8],
        instantiate: bool,
    ) -> (Attributes, u64, u64) {
        let env = self.env();
        let mut instance = match self.instance() {
            Ok(i) => i,
            Err(e) => return (Err(e), 0, 0),
        };
        let res = if instantiate {
            call_instantiate::<_, _, _, Empty>(&mut instance, &env, info, msg)
        } else {
            call_execute::<_, _, _, Empty>(&mut instance, &env, info, msg)
        };
        let report = instance.create_gas_report();
        if let Some(backend) = instance.recycle() {
            self.storage = backend.storage;
        }
        let result = match res {
            Ok(ContractResult::Ok(response)) => self.apply(&response),
            Ok(ContractResult::Err(e)) => Err(ChainError::Rejected(e)),
            Err(e) => Err(vm_error(e)),
        };
        (result, report.used_internally, report.used_externally)
    }

    /// Applies a successful call's messages (bank sends from the contract); returns the
    /// contract's attributes.
    fn apply(&mut self, response: &Response<Empty>) -> Result<Vec<(String, String)>, ChainError> {
        let contract = self.contract.clone();
        for sub in &response.messages {
            if sub.reply_on != ReplyOn::Never {
                return Err(ChainError::Vm(
                    "submessage replies are not supported".into(),
                ));
            }
            let CosmosMsg::Bank(BankMsg::Send { to_address, amount }) = &sub.msg else {
                return Err(ChainError::Vm("only BankMsg::Send is supported".into()));
            };
            for coin in amount {
                if coin.denom != self.denom {
                    return Err(ChainError::Rejected("unknown denom".into()));
                }
                let n = cosmwasm_std::Uint128::try_from(coin.amount)
                    .map_err(|_| ChainError::Rejected("amount overflows".into()))?;
                self.transfer(&contract, to_address, n.u128())?;
            }
        }
        let mut attributes: Vec<(String, String)> = response
            .attributes
            .iter()
            .map(|a| (a.key.clone(), a.value.clone()))
            .collect();
        for ev in &response.events {
            attributes.extend(
                ev.attributes
                    .iter()
                    .map(|a| (a.key.clone(), a.value.clone())),
            );
        }
        Ok(attributes)
    }

    fn query(&mut self, msg: &[u8]) -> Result<Vec<u8>, ChainError> {
        let env = self.env();
        let mut instance = self.instance()?;
        let res = call_query(&mut instance, &env, msg);
        if let Some(backend) = instance.recycle() {
            self.storage = backend.storage;
        }
        self.storage.iterators.clear();
        match res.map_err(vm_error)? {
            ContractResult::Ok(b) => Ok(b.to_vec()),
            ContractResult::Err(e) => Err(ChainError::Rejected(e)),
        }
    }
}

/// The development deployment's contract parameters, shared by the demo, the benches and
/// the tests: denomination `utally`, a thaw of twice the challenge window, half a
/// fraudulent host's bond slashed and a fifth of that paid to the challenger, the fee
/// sink at `protocol_sink`.
pub fn dev_instantiate(
    challenge_window_secs: u64,
    min_host_bond: u128,
    protocol_sink: String,
) -> InstantiateMsg {
    InstantiateMsg {
        admin: None,
        denom: "utally".into(),
        challenge_window_secs,
        thaw_secs: 2 * challenge_window_secs,
        min_host_bond: cosmwasm_std::Uint128::new(min_host_bond),
        slash_bps: 5_000,
        challenger_bps: 2_000,
        protocol_sink,
    }
}

impl Devnet {
    /// Starts a chain: checks the contract bytes as a node would at upload, credits the
    /// genesis balances, and instantiates the contract from `admin`.
    pub fn start(
        config: DevnetConfig,
        genesis: &[(&str, u128)],
        admin: &str,
        msg: &InstantiateMsg,
    ) -> Result<Devnet, ChainError> {
        let caps = capabilities_from_csv(CAPABILITIES);
        cosmwasm_vm::internals::check_wasm(
            &config.wasm,
            &caps,
            &cosmwasm_vm::WasmLimits::default(),
            cosmwasm_vm::internals::Logger::Off,
        )
        .map_err(|e| {
            ChainError::Code(format!("the VM's static checks refuse the contract: {e}"))
        })?;
        if bech32::Hrp::parse(config.prefix).is_err() {
            return Err(ChainError::Invalid("bech32 prefix"));
        }
        let api = MockApi::default().with_prefix(config.prefix);
        let contract = config
            .contract_address
            .unwrap_or_else(|| api.addr_make("tally-settlement"));
        let (module, engine) =
            cosmwasm_vm::internals::compile_module(&config.wasm, Some(MEMORY_LIMIT)).map_err(
                |e| ChainError::Code(format!("the VM cannot compile the contract: {e}")),
            )?;
        let state = State {
            module,
            engine,
            storage: DevStorage {
                gas: config.gas,
                ..DevStorage::default()
            },
            bank: BTreeMap::new(),
            bank_undo: Vec::new(),
            sends: Vec::new(),
            max_tx_bytes: config.max_tx_bytes,
            block_max_gas: config.block_max_gas,
            denom: config.denom,
            chain_id: config.chain_id,
            contract,
            height: 1,
            time: config.genesis_time,
            log: Vec::new(),
            moves: Vec::new(),
            api,
        };
        let devnet = Devnet {
            state: Arc::new(Mutex::new(state)),
        };
        for (name, amount) in genesis {
            let addr = devnet.addr(name);
            devnet.lock().bank.insert(addr, *amount);
        }
        let admin = devnet.addr(admin);
        let bytes = serde_json::to_vec(msg).map_err(|e| ChainError::Decode(e.to_string()))?;
        devnet.run(&admin, &bytes, 0, true, None)?;
        Ok(devnet)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic inside the VM cannot leave the state half-written (calls restore on
        // error before returning), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `amount` from `from` to `to` (a bank `MsgSend`, not a contract call): one
    /// block, recorded in [`Devnet::sends`]; refused, changing nothing, if `from` lacks the
    /// funds.
    pub fn send(&self, from: &str, to: &str, amount: u128) -> Result<BankSend, ChainError> {
        let mut s = self.lock();
        s.bank_undo.clear();
        s.transfer(from, to, amount)?;
        s.bank_undo.clear();
        s.height += 1;
        let sent = BankSend {
            height: s.height,
            time: s.time,
            from: from.to_owned(),
            to: to.to_owned(),
            amount,
        };
        s.sends.push(sent.clone());
        Ok(sent)
    }

    /// Every bank send so far, oldest first (contract calls' fund movements are not
    /// included: deposits are escrow moves, payouts the contract's sends).
    pub fn sends(&self) -> Vec<BankSend> {
        self.lock().sends.clone()
    }

    /// The address of the account named `name` (deterministic, bech32).
    pub fn addr(&self, name: &str) -> String {
        self.lock().api.addr_make(name)
    }

    /// The address a devnet with bech32 `prefix` gives the account named `name`, known
    /// before the devnet starts (the same derivation as [`Devnet::addr`]).
    pub fn address_of(prefix: &'static str, name: &str) -> String {
        MockApi::default().with_prefix(prefix).addr_make(name)
    }

    /// A [`Chain`] acting as the account named `name`.
    pub fn account(&self, name: &str) -> DevnetAccount {
        DevnetAccount {
            net: self.clone(),
            address: self.addr(name),
        }
    }

    /// The contract's address (what authorisations and headers must name).
    pub fn contract(&self) -> String {
        self.lock().contract.clone()
    }

    /// The chain id.
    pub fn chain_id(&self) -> String {
        self.lock().chain_id.clone()
    }

    /// The native denomination.
    pub fn denom(&self) -> String {
        self.lock().denom.clone()
    }

    /// The bank balance of `address`.
    pub fn balance(&self, address: &str) -> u128 {
        self.lock().bank.get(address).copied().unwrap_or(0)
    }

    /// Every token in existence (conserved by every call: nothing mints or burns).
    pub fn supply(&self) -> u128 {
        self.lock().bank.values().sum()
    }

    /// SHA-256 over the contract's storage and every balance: equal before and after a
    /// call exactly when the call changed nothing.
    pub fn state_digest(&self) -> [u8; 32] {
        use sha2::Digest as _;
        let s = self.lock();
        let mut h = sha2::Sha256::new();
        for (k, v) in &s.storage.data {
            for part in [k, v] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part);
            }
        }
        for (a, b) in &s.bank {
            h.update((a.len() as u64).to_be_bytes());
            h.update(a.as_bytes());
            h.update(b.to_be_bytes());
        }
        h.finalize().into()
    }

    /// Moves the clock `seconds` forward in one new block.
    pub fn advance(&self, seconds: u64) {
        let mut s = self.lock();
        s.time = s.time.saturating_add(seconds);
        s.height += 1;
    }

    /// The event log, oldest first.
    pub fn log(&self) -> Vec<LoggedTx> {
        self.lock().log.clone()
    }

    /// The gas schedule.
    pub fn gas_config(&self) -> GasConfig {
        self.lock().storage.gas
    }

    /// The size of the signed `MsgExecuteContract` transaction `sender` would broadcast
    /// for `msg` (a secp256k1 signer, `SIGN_MODE_DIRECT`, a fee and a gas limit of typical
    /// widths): what the transaction-size gas is charged on.
    pub fn tx_size(&self, sender: &str, msg: &[u8], funds: u128) -> usize {
        let (chain_id, contract, denom) = {
            let s = self.lock();
            (s.chain_id.clone(), s.contract.clone(), s.denom.clone())
        };
        let Ok(key) = CosmosKey::from_secret(&[7; 32]) else {
            return msg.len();
        };
        let params = TxParams {
            chain_id,
            account_number: 12_345,
            sequence: 12_345,
            gas_limit: 12_345_678,
            fee: 1_234_567,
            denom,
            memo: String::new(),
        };
        sign_execute(&key, sender, &contract, msg, funds, &params)
            .tx_bytes
            .len()
    }

    /// What executing `msg` from `sender` would cost, without changing anything (a
    /// chain's simulation): the gas, or why it fails.
    pub fn simulate(
        &self,
        sender: &str,
        msg: &[u8],
        funds: u128,
        tx_bytes: Option<usize>,
    ) -> Result<GasUsed, ChainError> {
        let tx_bytes = tx_bytes.unwrap_or_else(|| self.tx_size(sender, msg, funds));
        let mut s = self.lock();
        let (height, limit) = (s.height, s.block_max_gas);
        s.block_max_gas = None;
        let (result, gas) = s.call(sender, msg, funds, false, tx_bytes);
        if result.is_ok() {
            s.rollback_committed();
        }
        s.height = height;
        s.block_max_gas = limit;
        result.map(|_| gas)
    }

    /// Runs one execute (or the instantiate) and logs it. `tx_bytes` is the signed
    /// transaction's size if known (a REST broadcast), else the size this sender's
    /// transaction would have.
    pub(crate) fn run(
        &self,
        sender: &str,
        msg: &[u8],
        funds: u128,
        instantiate: bool,
        tx_bytes: Option<usize>,
    ) -> Result<TxOutcome, ChainError> {
        let tx_bytes = tx_bytes.unwrap_or_else(|| self.tx_size(sender, msg, funds));
        let mut s = self.lock();
        let name = if instantiate {
            "instantiate".to_owned()
        } else {
            message_name(msg)
        };
        if let Some(limit) = s.max_tx_bytes
            && tx_bytes > limit
        {
            // Refused before it runs, like a node's mempool: no block, no state change.
            let e = ChainError::TooLarge {
                bytes: tx_bytes,
                limit,
            };
            let entry = LoggedTx {
                height: s.height,
                time: s.time,
                sender: sender.to_owned(),
                message: name,
                gas_used: 0,
                gas: GasUsed::default(),
                result: Err(e.to_string()),
            };
            s.log.push(entry);
            return Err(e);
        }
        let (result, gas) = s.call(sender, msg, funds, instantiate, tx_bytes);
        let name = if instantiate {
            "instantiate".to_owned()
        } else {
            message_name(msg)
        };
        let entry = LoggedTx {
            height: s.height,
            time: s.time,
            sender: sender.to_owned(),
            message: name,
            gas_used: gas.total(),
            gas,
            result: result
                .as_ref()
                .map(Clone::clone)
                .map_err(ToString::to_string),
        };
        s.log.push(entry);
        let attributes = result?;
        let height = s.height;
        match serde_json::from_slice::<ExecuteMsg>(msg) {
            Ok(ExecuteMsg::Deposit { payer_key }) => {
                if let Ok(key) = <[u8; 32]>::try_from(payer_key.as_slice()) {
                    s.moves.push(EscrowMove {
                        kind: MoveKind::Deposit,
                        payer: PublicKey(key),
                        party: sender.to_owned(),
                        amount: funds,
                        height,
                    });
                }
            }
            Ok(ExecuteMsg::Withdraw { payer_key }) => {
                let attr = |k: &str| {
                    attributes
                        .iter()
                        .find(|(key, _)| key == k)
                        .map(|(_, v)| v.clone())
                };
                let amount = attr("amount").and_then(|a| a.parse::<u128>().ok());
                let recipient = attr("recipient");
                if let (Ok(key), Some(amount), Some(recipient)) = (
                    <[u8; 32]>::try_from(payer_key.as_slice()),
                    amount,
                    recipient,
                ) {
                    s.moves.push(EscrowMove {
                        kind: MoveKind::Withdraw,
                        payer: PublicKey(key),
                        party: recipient,
                        amount,
                        height,
                    });
                }
            }
            _ => {}
        }
        Ok(TxOutcome {
            hash: format!("{:064X}", s.log.len()),
            height: s.height,
            gas_used: gas.total(),
            gas: Some(gas),
            attributes,
        })
    }
}

/// One devnet account acting on the contract.
#[derive(Debug, Clone)]
pub struct DevnetAccount {
    net: Devnet,
    address: String,
}

impl DevnetAccount {
    /// The devnet this account lives on.
    pub fn devnet(&self) -> &Devnet {
        &self.net
    }
}

impl Chain for DevnetAccount {
    async fn execute(&self, msg: &ExecuteMsg, funds: u128) -> Result<TxOutcome, ChainError> {
        let bytes = serde_json::to_vec(msg).map_err(|e| ChainError::Decode(e.to_string()))?;
        let net = self.net.clone();
        let sender = self.address.clone();
        tokio::task::spawn_blocking(move || net.run(&sender, &bytes, funds, false, None))
            .await
            .map_err(|e| ChainError::Vm(e.to_string()))?
    }

    async fn query_raw(&self, msg: &QueryMsg) -> Result<Vec<u8>, ChainError> {
        let bytes = serde_json::to_vec(msg).map_err(|e| ChainError::Decode(e.to_string()))?;
        let net = self.net.clone();
        tokio::task::spawn_blocking(move || net.lock().query(&bytes))
            .await
            .map_err(|e| ChainError::Vm(e.to_string()))?
    }

    async fn escrow_moves(&self, from: u64) -> Result<Vec<EscrowMove>, ChainError> {
        Ok(self
            .net
            .lock()
            .moves
            .iter()
            .filter(|d| d.height >= from)
            .cloned()
            .collect())
    }

    async fn now(&self) -> Result<BlockTime, ChainError> {
        let s = self.net.lock();
        Ok(BlockTime {
            height: s.height,
            time: s.time,
        })
    }

    fn address(&self) -> String {
        self.address.clone()
    }
}

//! The wasmtime sandbox that runs the pinned metering guest.
//!
//! A [`Sandbox`] holds one allow-listed guest, compiled once, with an engine configured for
//! determinism (WebAssembly 1.0 features, fuel metering, NaN canonicalisation) and a pooling
//! allocator. Every call gets a fresh store and a fresh instance, so no state can leak from
//! one call into the next; each call runs under a fuel budget and a memory limit, and any
//! misbehaviour of the guest comes back as a typed [`MeterError`], never as a host crash.
//!
//! The guest ABI (see `guest/src/abi.rs`): exports `memory`, `input_ptr() -> i32`,
//! `output_ptr() -> i32` and `meter(len: i32) -> i32`; no imports at all.

use std::fmt;

use tally_protocol::{DecodeError, Digest, MeterInput, MeterOutcome, Metered, Refusal};
use wasmtime::{
    Config, Engine, Extern, ExternType, Instance, InstanceAllocationStrategy, InstancePre, Linker,
    Module, ModuleExport, PoolConcurrencyLimitError, PoolingAllocationConfig, ResourceLimiter,
    Store, StoreLimits, StoreLimitsBuilder, Trap, TypedFunc, ValType,
};

/// Size of the guest's input buffer: the longest input the ABI accepts.
const INPUT_CAPACITY: usize = 1024;
/// Bytes in one WebAssembly page.
const WASM_PAGE: usize = 64 * 1024;
/// Table slots an instance may have. A guest needs at most a handful (indirect calls).
const TABLE_ELEMENTS: usize = 1024;

const _: () = assert!(INPUT_CAPACITY >= MeterInput::MAX_ENCODED_LEN);

/// Limits for every guest call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// Fuel per call (about one unit per wasm instruction): bounds the guest's running time.
    pub fuel: u64,
    /// Linear-memory limit per instance, in bytes; at least the guest's initial memory
    /// (64 KiB for `guest/dist/metering.wasm`), checked when the sandbox is built.
    pub memory_bytes: usize,
    /// Instances that may run at once (pooling allocator slots); a call beyond this many
    /// concurrent ones fails with [`MeterError::Busy`].
    pub max_instances: u32,
}

impl Default for SandboxConfig {
    /// 10 million fuel (the metering guest uses under 20,000 per call), 1 MiB of memory,
    /// 64 concurrent instances.
    fn default() -> Self {
        SandboxConfig {
            fuel: 10_000_000,
            memory_bytes: 1 << 20,
            max_instances: 64,
        }
    }
}

/// Why a guest module was not loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The module's SHA-256 is not in the allow-list.
    #[error("guest {found} is not an allowed guest")]
    HashNotAllowed {
        /// The module's hash.
        found: Digest,
    },
    /// The module imports something: a guest must be a pure function of its input.
    #[error("guest imports {0}; a guest may import nothing")]
    HasImports(String),
    /// The module lacks an export the ABI needs, or exports it with the wrong type.
    #[error("guest has no export `{0}` of the ABI's type")]
    MissingExport(&'static str),
    /// The module's initial memory is larger than [`SandboxConfig::memory_bytes`].
    #[error("guest needs {needed} bytes of memory; the limit is {limit}")]
    MemoryTooSmall {
        /// The module's initial memory, in bytes.
        needed: u64,
        /// The configured limit.
        limit: usize,
    },
    /// The module is not valid WebAssembly 1.0 (or uses a feature the sandbox turns off).
    #[error("guest does not compile: {0}")]
    Compile(String),
    /// The engine could not be built with this configuration (e.g. the instance pool does
    /// not fit in the address space).
    #[error("sandbox engine: {0}")]
    Engine(String),
}

/// Why one metering call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeterError {
    /// The guest refused the call as unbillable.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The guest's output was not a canonical outcome.
    #[error("bad guest output: {0}")]
    BadOutput(DecodeError),
    /// The guest used up its fuel.
    #[error("guest ran out of fuel")]
    OutOfFuel,
    /// The guest asked for more memory (or table space) than the limit allows.
    #[error("guest exceeded its memory limit")]
    MemoryLimit,
    /// The guest trapped.
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The input is longer than the guest's input buffer.
    #[error("input of {len} bytes exceeds the guest's buffer of {max}")]
    InputTooLarge {
        /// The input's length.
        len: usize,
        /// The buffer's size.
        max: usize,
    },
    /// The guest's buffers do not lie inside its memory.
    #[error("guest broke the ABI: {0}")]
    Abi(&'static str),
    /// All instance slots are in use; the call may be retried.
    #[error("all {0} guest instance slots are busy")]
    Busy(u32),
    /// The instance could not be created.
    #[error("guest instantiation failed: {0}")]
    Instantiate(String),
}

/// A compiled, allow-listed guest ready to meter calls. Cheap to share: `Send + Sync`, and
/// every call builds its own store, so any number of threads may call it at once (up to
/// [`SandboxConfig::max_instances`] concurrently).
pub struct Sandbox {
    hash: Digest,
    pre: InstancePre<CallState>,
    exports: AbiExports,
    config: SandboxConfig,
}

const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Sandbox>();
};

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("guest", &self.hash)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The ABI's exports, resolved once so that calls need no lookups by name.
struct AbiExports {
    memory: ModuleExport,
    input_ptr: ModuleExport,
    output_ptr: ModuleExport,
    meter: ModuleExport,
}

impl Sandbox {
    /// Loads `wasm` if its SHA-256 is in `allowed`, compiles it and checks that it imports
    /// nothing and exports the ABI.
    pub fn new(
        wasm: &[u8],
        allowed: &[Digest],
        config: SandboxConfig,
    ) -> Result<Self, SandboxError> {
        let hash = Digest::sha256(wasm);
        if !allowed.contains(&hash) {
            return Err(SandboxError::HashNotAllowed { found: hash });
        }
        let engine = engine(&config)?;
        let module =
            Module::new(&engine, wasm).map_err(|e| SandboxError::Compile(format!("{e:#}")))?;
        if let Some(import) = module.imports().next() {
            return Err(SandboxError::HasImports(format!(
                "{}::{}",
                import.module(),
                import.name()
            )));
        }
        let memory = match module.get_export("memory") {
            Some(ExternType::Memory(m)) => m,
            _ => return Err(SandboxError::MissingExport("memory")),
        };
        let needed = memory.minimum().saturating_mul(WASM_PAGE as u64);
        if needed > config.memory_bytes as u64 {
            return Err(SandboxError::MemoryTooSmall {
                needed,
                limit: config.memory_bytes,
            });
        }
        let exports = AbiExports {
            memory: export_index(&module, "memory")?,
            input_ptr: func_export(&module, "input_ptr", &[], &[ValType::I32])?,
            output_ptr: func_export(&module, "output_ptr", &[], &[ValType::I32])?,
            meter: func_export(&module, "meter", &[ValType::I32], &[ValType::I32])?,
        };
        let pre = Linker::new(&engine)
            .instantiate_pre(&module)
            .map_err(|e| SandboxError::Compile(format!("{e:#}")))?;
        Ok(Sandbox {
            hash,
            pre,
            exports,
            config,
        })
    }

    /// The SHA-256 of the loaded guest: the `guest` field of every receipt it meters.
    pub fn guest_hash(&self) -> Digest {
        self.hash
    }

    /// Meters one call in a fresh instance; a refusal is [`MeterError::Refused`].
    pub fn meter(&self, input: &MeterInput) -> Result<Metered, MeterError> {
        self.meter_encoded(&input.encode())?
            .0
            .map_err(MeterError::Refused)
    }

    /// Runs the guest on encoded input bytes in a fresh instance and returns its decoded
    /// outcome (bytes that are not a canonical `MeterInput` give a `MalformedInput` outcome).
    pub fn meter_encoded(&self, input: &[u8]) -> Result<MeterOutcome, MeterError> {
        if input.len() > INPUT_CAPACITY {
            return Err(MeterError::InputTooLarge {
                len: input.len(),
                max: INPUT_CAPACITY,
            });
        }
        let mut store = Store::new(self.pre.module().engine(), CallState::new(&self.config));
        store.limiter(|state| state);
        store
            .set_fuel(self.config.fuel)
            .map_err(|e| MeterError::Instantiate(format!("{e:#}")))?;
        let result = self.call(&mut store, input);
        // A denied growth explains whatever the guest did next (trap, garbage, a refusal).
        if store.data().limit_hit {
            return Err(MeterError::MemoryLimit);
        }
        result
    }

    fn call(&self, store: &mut Store<CallState>, input: &[u8]) -> Result<MeterOutcome, MeterError> {
        let instance = self.pre.instantiate(&mut *store).map_err(|e| {
            if e.is::<PoolConcurrencyLimitError>() {
                MeterError::Busy(self.config.max_instances)
            } else if e.is::<Trap>() {
                trap_error(&e)
            } else {
                MeterError::Instantiate(format!("{e:#}"))
            }
        })?;
        let memory = export(store, &instance, &self.exports.memory)
            .and_then(Extern::into_memory)
            .ok_or(MeterError::Abi("no memory export"))?;
        let input_ptr: TypedFunc<(), i32> = typed_func(store, &instance, &self.exports.input_ptr)?;
        let output_ptr: TypedFunc<(), i32> =
            typed_func(store, &instance, &self.exports.output_ptr)?;
        let meter: TypedFunc<i32, i32> = typed_func(store, &instance, &self.exports.meter)?;

        let at = input_ptr
            .call(&mut *store, ())
            .map_err(|e| trap_error(&e))?;
        memory
            .write(&mut *store, address(at), input)
            .map_err(|_| MeterError::Abi("input buffer outside memory"))?;
        // At most INPUT_CAPACITY, so the cast is exact.
        let len = meter
            .call(&mut *store, input.len() as i32)
            .map_err(|e| trap_error(&e))?;
        let at = output_ptr
            .call(&mut *store, ())
            .map_err(|e| trap_error(&e))?;

        let mut buf = [0u8; MeterOutcome::MAX_ENCODED_LEN];
        let len = address(len);
        let out = buf
            .get_mut(..len)
            .ok_or(MeterError::BadOutput(DecodeError::TooLong {
                len,
                max: MeterOutcome::MAX_ENCODED_LEN,
            }))?;
        memory
            .read(&*store, address(at), out)
            .map_err(|_| MeterError::Abi("output buffer outside memory"))?;
        MeterOutcome::decode(out).map_err(MeterError::BadOutput)
    }
}

/// The engine: deterministic WebAssembly 1.0 with fuel, and a pool of instance slots whose
/// memory stays resident between calls (a fresh instance then costs a few microseconds).
fn engine(config: &SandboxConfig) -> Result<Engine, SandboxError> {
    let memory_slot = config
        .memory_bytes
        .checked_next_multiple_of(WASM_PAGE)
        .ok_or_else(|| SandboxError::Engine("memory_bytes too large".into()))?;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_core_instances(config.max_instances)
        .total_memories(config.max_instances)
        .total_tables(config.max_instances)
        .max_memories_per_module(1)
        .max_tables_per_module(1)
        .table_elements(TABLE_ELEMENTS)
        // Reset memory and tables with memset instead of madvise: no page faults on reuse.
        .linear_memory_keep_resident(memory_slot)
        .table_keep_resident(TABLE_ELEMENTS * size_of::<usize>());

    let mut c = Config::new();
    c.consume_fuel(true)
        .cranelift_nan_canonicalization(true)
        // Traps are reported by kind only; collecting frames would cost time on every trap.
        .wasm_backtrace_max_frames(None)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        // WebAssembly 1.0: every later proposal that this build of wasmtime lets us switch
        // off. (Sign extension, saturating float-to-int and reference types cannot be
        // switched off through `Config`; the guest uses none of them.)
        .wasm_bulk_memory(false)
        .wasm_multi_value(false)
        .wasm_simd(false)
        .wasm_relaxed_simd(false)
        .wasm_multi_memory(false)
        .wasm_memory64(false)
        .wasm_tail_call(false)
        .wasm_extended_const(false)
        .wasm_gc(false)
        .wasm_custom_page_sizes(false)
        .wasm_wide_arithmetic(false)
        .wasm_branch_hinting(false)
        .wasm_stack_switching(false)
        .wasm_shared_everything_threads(false);
    Engine::new(&c).map_err(|e| SandboxError::Engine(format!("{e:#}")))
}

fn export_index(module: &Module, name: &'static str) -> Result<ModuleExport, SandboxError> {
    module
        .get_export_index(name)
        .ok_or(SandboxError::MissingExport(name))
}

/// Resolves a function export after checking its signature.
fn func_export(
    module: &Module,
    name: &'static str,
    params: &[ValType],
    results: &[ValType],
) -> Result<ModuleExport, SandboxError> {
    let same = |a: &[ValType], b: Vec<ValType>| {
        a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| ValType::eq(x, y))
    };
    match module.get_export(name) {
        Some(ExternType::Func(f))
            if same(params, f.params().collect()) && same(results, f.results().collect()) =>
        {
            export_index(module, name)
        }
        _ => Err(SandboxError::MissingExport(name)),
    }
}

fn export(store: &mut Store<CallState>, instance: &Instance, e: &ModuleExport) -> Option<Extern> {
    instance.get_module_export(&mut *store, e)
}

fn typed_func<P, R>(
    store: &mut Store<CallState>,
    instance: &Instance,
    e: &ModuleExport,
) -> Result<TypedFunc<P, R>, MeterError>
where
    P: wasmtime::WasmParams,
    R: wasmtime::WasmResults,
{
    export(store, instance, e)
        .and_then(Extern::into_func)
        .and_then(|f| f.typed(&*store).ok())
        .ok_or(MeterError::Abi("function export of the wrong type"))
}

/// A wasm32 address: the i32 is read as unsigned.
fn address(v: i32) -> usize {
    v as u32 as usize
}

/// Classifies an error raised while the guest ran.
fn trap_error(e: &wasmtime::Error) -> MeterError {
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => MeterError::OutOfFuel,
        Some(t) => MeterError::Trap(t.to_string()),
        None => MeterError::Trap(format!("{e:#}")),
    }
}

/// Per-call store data: the memory limit, and whether the guest ran into it.
struct CallState {
    limits: StoreLimits,
    /// Set when a memory or table growth was denied (or failed).
    limit_hit: bool,
}

impl CallState {
    fn new(config: &SandboxConfig) -> Self {
        CallState {
            limits: StoreLimitsBuilder::new()
                .memory_size(config.memory_bytes)
                .table_elements(TABLE_ELEMENTS)
                .instances(1)
                .memories(1)
                .tables(1)
                .build(),
            limit_hit: false,
        }
    }
}

impl ResourceLimiter for CallState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        self.limit_hit |= !allowed;
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limit_hit = true;
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.table_growing(current, desired, maximum)?;
        self.limit_hit |= !allowed;
        Ok(allowed)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limit_hit = true;
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

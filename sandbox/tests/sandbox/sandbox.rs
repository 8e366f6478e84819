//! The sandbox against the committed metering guest and against hostile guests.
//!
//! - The committed `guest/dist/metering.wasm` loads, imports nothing and matches its
//!   `.sha256` file.
//! - Differential: on a seeded corpus of generated inputs (every tier, cached tokens, min
//!   fees, overflow, wrong model, fees above `max_fee`, malformed structures) and on garbage
//!   and mutated bytes, the wasm guest's outcome bytes equal the native
//!   `tally_guest::meter_encoded`'s.
//! - Hostile guests, written in WAT: each misbehaves when its input is empty and answers a
//!   fixed outcome otherwise, so every test also shows that the sandbox still serves a good
//!   call after the failure.

use std::sync::LazyLock;

use proptest::collection::vec;
use proptest::prelude::*;
use tally_protocol::{
    DecodeError, Digest, FinishStatus, MeterInput, MeterOutcome, Metered, PriceSchedule, PriceTier,
    Refusal, UsageFacts,
};
use tally_sandbox::{MeterError, PINNED_HASH, PINNED_WASM, Sandbox, SandboxConfig, SandboxError};

const GUEST: &[u8] = PINNED_WASM;

/// The committed guest under the default configuration, shared by the tests.
static SANDBOX: LazyLock<Sandbox> = LazyLock::new(|| {
    Sandbox::pinned(SandboxConfig::default())
        .unwrap_or_else(|e| panic!("the committed guest does not load: {e}"))
});

// ---------------------------------------------------------------------------------------
// The committed guest.

#[test]
fn committed_guest_matches_its_sha256_file() {
    // The file's name and hex are checked by the crate's unit test; here, its parsed form.
    assert_eq!(PINNED_HASH, Digest::sha256(GUEST));
    assert_eq!(SANDBOX.guest_hash(), Digest::sha256(GUEST));
}

#[test]
fn committed_guest_imports_nothing_and_exports_the_abi() {
    let engine = wasmtime::Engine::default();
    let module = wasmtime::Module::new(&engine, GUEST).unwrap();
    assert_eq!(module.imports().len(), 0);
    for name in ["memory", "input_ptr", "output_ptr", "meter"] {
        assert!(module.get_export(name).is_some(), "missing export {name}");
    }
    let Some(wasmtime::ExternType::Memory(memory)) = module.get_export("memory") else {
        panic!("memory is not a memory");
    };
    // One 64 KiB page: a 32 KiB stack, the buffers and a 16 KiB heap.
    assert_eq!(memory.minimum(), 1);
}

/// The golden vectors' guest inputs and every receipt of the vectors' log, metered by the
/// committed wasm: the outcome bytes are the vectors' (`docs/protocol.md` §2.6, §5), and the
/// receipts name this guest's hash.
#[test]
fn committed_guest_reproduces_the_golden_vectors() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/vectors.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let unhex = |x: &serde_json::Value| hex::decode(x.as_str().unwrap()).unwrap();
    for (i, o) in [("input", "outcome"), ("refused_input", "refused_outcome")] {
        let out = SANDBOX.meter_encoded(&unhex(&v["meter"][i])).unwrap();
        assert_eq!(out.encode(), unhex(&v["meter"][o]), "{i}");
    }
    for hex_receipt in v["log"]["receipts"].as_array().unwrap() {
        let r = tally_protocol::SignedReceipt::decode(&unhex(hex_receipt))
            .unwrap()
            .receipt;
        assert_eq!(
            r.guest,
            SANDBOX.guest_hash(),
            "the vectors name the committed guest"
        );
        let schedule: PriceSchedule = v["values"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "PriceSchedule")
            .map(|c| PriceSchedule::decode(&unhex(&c["canonical"])).unwrap())
            .unwrap();
        let input = MeterInput {
            facts: r.facts.clone(),
            schedule,
            max_fee: r.authorization.authorization.max_fee,
        };
        assert_eq!(SANDBOX.meter(&input).unwrap(), r.metered);
    }
}

#[test]
fn committed_guest_meters_a_known_call() {
    let input = input_with(
        1000,
        600,
        500,
        vec![tier(0, 3_000_000, 300_000, 15_000_000)],
    );
    // 400 * 3_000_000 + 600 * 300_000 + 500 * 15_000_000 = 8_880_000_000 → 8_880.
    let expected = Metered {
        units: 1500,
        fee: 8_880,
    };
    assert_eq!(SANDBOX.meter(&input), Ok(expected));
    assert_eq!(tally_guest::meter(&input), Ok(expected));
}

#[test]
fn refusals_are_typed() {
    let mut input = input_with(1, 0, 1, vec![tier(0, 1, 1, 1)]);
    input.schedule.model = Digest([9; 32]);
    assert_eq!(
        SANDBOX.meter(&input),
        Err(MeterError::Refused(Refusal::ScheduleNotForModel))
    );
    let mut input = input_with(1_000_000, 0, 0, vec![tier(0, 5, 5, 5)]);
    input.max_fee = 4;
    assert_eq!(
        SANDBOX.meter(&input),
        Err(MeterError::Refused(Refusal::FeeAboveMax { fee: 5 }))
    );
}

#[test]
fn worst_case_input_needs_little_fuel() {
    // Eight tiers, the largest values: still within 1% of the default fuel.
    let tiers = (0..8)
        .map(|i| tier(i * 1000, u64::MAX, u64::MAX, u64::MAX))
        .collect();
    let mut input = input_with(u64::MAX, u64::MAX / 3, u64::MAX, tiers);
    input.schedule.min_fee = u128::MAX;
    let frugal = SandboxConfig {
        fuel: SandboxConfig::default().fuel / 100,
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::pinned(frugal).unwrap();
    assert_eq!(
        sandbox.meter(&input),
        Err(MeterError::Refused(Refusal::Overflow))
    );
    let starved = SandboxConfig {
        fuel: 100,
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::pinned(starved).unwrap();
    assert_eq!(sandbox.meter(&input), Err(MeterError::OutOfFuel));
}

#[test]
fn memory_limit_below_the_guests_initial_memory_is_refused() {
    let config = SandboxConfig {
        memory_bytes: 32 * 1024,
        ..SandboxConfig::default()
    };
    assert_eq!(
        Sandbox::pinned(config).err(),
        Some(SandboxError::MemoryTooSmall {
            needed: 65536,
            limit: 32 * 1024
        })
    );
}

#[test]
fn wrong_hash_is_refused() {
    let found = Digest::sha256(GUEST);
    for allowed in [&[][..], &[Digest::ZERO][..]] {
        assert_eq!(
            Sandbox::new(GUEST, allowed, SandboxConfig::default()).err(),
            Some(SandboxError::HashNotAllowed { found })
        );
    }
}

#[test]
fn sandbox_is_shared_across_threads() {
    std::thread::scope(|s| {
        for t in 0..4u64 {
            s.spawn(move || {
                let mut rng = Rng(t);
                for _ in 0..250 {
                    let bytes = generate(&mut rng).encode();
                    assert_eq!(
                        SANDBOX.meter_encoded(&bytes),
                        Ok(tally_guest::meter_encoded(&bytes))
                    );
                }
            });
        }
    });
}

// ---------------------------------------------------------------------------------------
// Differential: wasm against native.

/// Runs both and compares the outcome bytes.
fn check_same(bytes: &[u8]) -> MeterOutcome {
    let native = tally_guest::meter_encoded(bytes);
    let wasm = SANDBOX.meter_encoded(bytes);
    assert_eq!(
        wasm.map(|o| o.encode()),
        Ok(native.encode()),
        "input {bytes:02x?}"
    );
    native
}

#[test]
fn wasm_equals_native_on_generated_inputs() {
    const CASES: usize = 12_000;
    let mut rng = Rng(0x7a11_7a11);
    let mut seen = Coverage::default();
    for _ in 0..CASES {
        let input = generate(&mut rng);
        let outcome = check_same(&input.encode());
        // The struct API agrees with the bytes API on both sides.
        assert_eq!(
            SANDBOX.meter(&input),
            tally_guest::meter(&input).map_err(MeterError::Refused)
        );
        seen.record(&input, &outcome);
    }
    seen.assert_covered(CASES);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Arbitrary bytes are a `MalformedInput` outcome, never a trap.
    #[test]
    fn garbage_input_is_malformed(bytes in vec(any::<u8>(), 0..=1024)) {
        prop_assert_eq!(check_same(&bytes), MeterOutcome(Err(Refusal::MalformedInput)));
    }

    /// Valid encodings with one byte changed, cut short or extended: both sides agree.
    #[test]
    fn wasm_equals_native_on_mutated_inputs(
        seed in any::<u64>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        how in 0..3u8,
    ) {
        let mut bytes = generate(&mut Rng(seed)).encode();
        let i = at.index(bytes.len());
        match how {
            0 => bytes[i] = byte,
            1 => bytes.truncate(i),
            _ => bytes.insert(i, byte),
        }
        check_same(&bytes);
    }
}

#[test]
fn a_full_input_buffer_is_accepted_and_a_larger_one_refused() {
    assert_eq!(
        SANDBOX.meter_encoded(&[0xab; 1024]),
        Ok(MeterOutcome(Err(Refusal::MalformedInput)))
    );
    assert_eq!(
        SANDBOX.meter_encoded(&[0xab; 1025]),
        Err(MeterError::InputTooLarge {
            len: 1025,
            max: 1024
        })
    );
}

/// Which outcomes and pricing paths the generated corpus reached.
#[derive(Default, Debug)]
struct Coverage {
    ok: usize,
    malformed: usize,
    wrong_model: usize,
    above_max: usize,
    overflow: usize,
    later_tier: usize,
    cached: usize,
    min_fee_binding: usize,
}

impl Coverage {
    fn record(&mut self, input: &MeterInput, outcome: &MeterOutcome) {
        match outcome.0 {
            Ok(m) => {
                self.ok += 1;
                let f = &input.facts;
                let tiers = &input.schedule.tiers;
                if tiers
                    .iter()
                    .filter(|t| t.from_prompt_tokens <= f.prompt_tokens)
                    .count()
                    > 1
                {
                    self.later_tier += 1;
                }
                if f.cached_prompt_tokens > 0 {
                    self.cached += 1;
                }
                if m.fee == input.schedule.min_fee && m.fee > 0 {
                    self.min_fee_binding += 1;
                }
            }
            Err(Refusal::MalformedInput) => self.malformed += 1,
            Err(Refusal::ScheduleNotForModel) => self.wrong_model += 1,
            Err(Refusal::FeeAboveMax { .. }) => self.above_max += 1,
            Err(Refusal::Overflow) => self.overflow += 1,
            Err(_) => {}
        }
    }

    fn assert_covered(&self, cases: usize) {
        let least = cases / 100;
        let all = [
            self.ok,
            self.malformed,
            self.wrong_model,
            self.above_max,
            self.overflow,
            self.later_tier,
            self.cached,
            self.min_fee_binding,
        ];
        assert!(all.iter().all(|&n| n >= least), "{self:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Hostile guests.

/// What every hostile guest answers when it behaves.
const CANNED: Metered = Metered { units: 42, fee: 7 };

fn canned_ok() -> Result<MeterOutcome, MeterError> {
    Ok(MeterOutcome(Ok(CANNED)))
}

/// A guest that follows the ABI: input at 0, output at 1024 holding `CANNED`'s outcome.
/// When its input is empty it first runs `misbehave`. `extra` comes first in the module
/// (imports, helper functions); `output_ptr` is the body of `output_ptr`. `meter` stores its
/// `len` argument in the global `$len` before anything else.
fn guest(extra: &str, misbehave: &str, output_ptr: &str) -> String {
    let outcome = MeterOutcome(Ok(CANNED)).encode();
    let data: String = outcome.iter().map(|b| format!("\\{b:02x}")).collect();
    format!(
        r#"(module
  {extra}
  (memory (export "memory") 1)
  (global $len (mut i32) (i32.const 0))
  (data (i32.const 1024) "{data}")
  (func (export "input_ptr") (result i32) (i32.const 0))
  (func (export "output_ptr") (result i32) {output_ptr})
  (func (export "meter") (param $n i32) (result i32)
    (global.set $len (local.get $n))
    (if (i32.eqz (local.get $n)) (then {misbehave}))
    (i32.const {len})))"#,
        len = outcome.len()
    )
}

fn misbehaving(misbehave: &str) -> String {
    guest("", misbehave, "(i32.const 1024)")
}

fn small_config() -> SandboxConfig {
    SandboxConfig {
        fuel: 1_000_000,
        memory_bytes: 1 << 20,
        max_instances: 4,
    }
}

/// Loads WAT text (the sandbox compiles text too) with its own hash allowed.
fn load(wat: &str, config: SandboxConfig) -> Result<Sandbox, SandboxError> {
    Sandbox::new(wat.as_bytes(), &[Digest::sha256(wat.as_bytes())], config)
}

/// Checks the hostile guest's failure on an empty input, then that a good call works.
fn check_hostile(wat: &str, expected: impl Fn(&MeterError) -> bool) {
    let sandbox = load(wat, small_config()).unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..3 {
        let err = match sandbox.meter_encoded(&[]) {
            Ok(outcome) => panic!("the hostile guest answered {outcome:?}"),
            Err(e) => e,
        };
        assert!(expected(&err), "unexpected {err:?}");
        assert_eq!(sandbox.meter_encoded(&[1]), canned_ok());
    }
}

#[test]
fn well_behaved_hostile_template_works() {
    let sandbox = load(&misbehaving("(nop)"), small_config()).unwrap();
    assert_eq!(sandbox.meter_encoded(&[]), canned_ok());
}

#[test]
fn infinite_loop_runs_out_of_fuel() {
    check_hostile(&misbehaving("(loop $l (br $l))"), |e| {
        *e == MeterError::OutOfFuel
    });
}

#[test]
fn memory_growth_past_the_limit_is_memory_limit() {
    // 1 + 16 pages > 1 MiB: the growth is denied, the guest carries on and answers.
    check_hostile(&misbehaving("(drop (memory.grow (i32.const 16)))"), |e| {
        *e == MeterError::MemoryLimit
    });
    // The guest notices the denial and traps: still reported as the memory limit.
    let trap_on_denial =
        "(if (i32.lt_s (memory.grow (i32.const 1000)) (i32.const 0)) (then unreachable))";
    check_hostile(&misbehaving(trap_on_denial), |e| {
        *e == MeterError::MemoryLimit
    });
}

#[test]
fn memory_growth_within_the_limit_is_allowed() {
    let sandbox = load(
        &misbehaving("(drop (memory.grow (i32.const 15)))"),
        small_config(),
    )
    .unwrap();
    assert_eq!(sandbox.meter_encoded(&[]), canned_ok());
}

#[test]
fn initial_memory_above_the_limit_is_refused() {
    let wat = r#"(module (memory (export "memory") 17)
        (func (export "input_ptr") (result i32) (i32.const 0))
        (func (export "output_ptr") (result i32) (i32.const 0))
        (func (export "meter") (param i32) (result i32) (i32.const 0)))"#;
    assert_eq!(
        load(wat, small_config()).err(),
        Some(SandboxError::MemoryTooSmall {
            needed: 17 * 65536,
            limit: 1 << 20
        })
    );
}

#[test]
fn unreachable_is_a_trap() {
    check_hostile(
        &misbehaving("(unreachable)"),
        |e| matches!(e, MeterError::Trap(m) if m.contains("unreachable")),
    );
}

#[test]
fn out_of_bounds_access_is_a_trap() {
    check_hostile(
        &misbehaving("(drop (i32.load (i32.const 0x7ffffff0)))"),
        |e| matches!(e, MeterError::Trap(_)),
    );
}

#[test]
fn division_by_zero_is_a_trap() {
    check_hostile(
        &misbehaving("(drop (i32.div_u (i32.const 1) (global.get $len)))"),
        |e| matches!(e, MeterError::Trap(_)),
    );
}

#[test]
fn stack_overflow_is_a_trap() {
    check_hostile(
        &guest(
            "(func $deep (call $deep))",
            "(call $deep)",
            "(i32.const 1024)",
        ),
        |e| matches!(e, MeterError::Trap(_)),
    );
}

#[test]
fn garbage_output_is_bad_output() {
    // Cut short.
    check_hostile(&misbehaving("(return (i32.const 7))"), |e| {
        matches!(e, MeterError::BadOutput(DecodeError::Truncated { .. }))
    });
    // Longer than any outcome, or negative (read as a huge unsigned length).
    check_hostile(&misbehaving("(return (i32.const 1000))"), |e| {
        *e == MeterError::BadOutput(DecodeError::TooLong { len: 1000, max: 59 })
    });
    check_hostile(&misbehaving("(return (i32.const -1))"), |e| {
        matches!(e, MeterError::BadOutput(DecodeError::TooLong { .. }))
    });
    // Overwrites the first byte of its (data-segment) answer: the next, fresh instance
    // sees the original bytes again.
    check_hostile(
        &misbehaving("(i32.store8 (i32.const 1024) (i32.const 0xff))"),
        |e| matches!(e, MeterError::BadOutput(DecodeError::WrongTag { .. })),
    );
}

#[test]
fn output_outside_memory_breaks_the_abi() {
    let output_ptr = "(if (result i32) (i32.eqz (global.get $len)) \
                      (then (i32.const 0xfffffff0)) (else (i32.const 1024)))";
    check_hostile(&guest("", "(nop)", output_ptr), |e| {
        *e == MeterError::Abi("output buffer outside memory")
    });
}

#[test]
fn input_outside_memory_breaks_the_abi() {
    let wat = r#"(module (memory (export "memory") 1)
        (func (export "input_ptr") (result i32) (i32.const 0xffff0000))
        (func (export "output_ptr") (result i32) (i32.const 0))
        (func (export "meter") (param i32) (result i32) (i32.const 0)))"#;
    let sandbox = load(wat, small_config()).unwrap();
    for _ in 0..2 {
        assert_eq!(
            sandbox.meter_encoded(&[1, 2, 3]),
            Err(MeterError::Abi("input buffer outside memory"))
        );
    }
}

#[test]
fn imports_are_refused() {
    let clock = guest(
        r#"(import "env" "clock" (func $clock (result i64)))"#,
        "(drop (call $clock))",
        "(i32.const 1024)",
    );
    assert_eq!(
        load(&clock, small_config()).err(),
        Some(SandboxError::HasImports("env::clock".into()))
    );
    let global = guest(
        r#"(import "env" "seed" (global $seed i32))"#,
        "(nop)",
        "(i32.const 1024)",
    );
    assert_eq!(
        load(&global, small_config()).err(),
        Some(SandboxError::HasImports("env::seed".into()))
    );
}

#[test]
fn missing_or_mistyped_exports_are_refused() {
    let no_meter = r#"(module (memory (export "memory") 1)
        (func (export "input_ptr") (result i32) (i32.const 0))
        (func (export "output_ptr") (result i32) (i32.const 0)))"#;
    assert_eq!(
        load(no_meter, small_config()).err(),
        Some(SandboxError::MissingExport("meter"))
    );
    let wrong_meter = r#"(module (memory (export "memory") 1)
        (func (export "input_ptr") (result i32) (i32.const 0))
        (func (export "output_ptr") (result i32) (i32.const 0))
        (func (export "meter") (param i64) (result i32) (i32.const 0)))"#;
    assert_eq!(
        load(wrong_meter, small_config()).err(),
        Some(SandboxError::MissingExport("meter"))
    );
    let no_memory = r#"(module (memory 1)
        (func (export "input_ptr") (result i32) (i32.const 0))
        (func (export "output_ptr") (result i32) (i32.const 0))
        (func (export "meter") (param i32) (result i32) (i32.const 0)))"#;
    assert_eq!(
        load(no_memory, small_config()).err(),
        Some(SandboxError::MissingExport("memory"))
    );
}

#[test]
fn post_mvp_features_are_refused() {
    for body in [
        // SIMD.
        "(drop (v128.const i64x2 0 0))",
        // Bulk memory.
        "(memory.fill (i32.const 0) (i32.const 0) (i32.const 0))",
        // Multi-value blocks.
        "(drop (drop (block (result i32 i32) (i32.const 0) (i32.const 0))))",
    ] {
        assert!(
            matches!(
                load(&misbehaving(body), small_config()),
                Err(SandboxError::Compile(_))
            ),
            "{body} was accepted"
        );
    }
}

#[test]
fn not_wasm_is_refused() {
    let bytes = b"\0asm\x01\0\0\0garbage";
    assert!(matches!(
        Sandbox::new(bytes, &[Digest::sha256(bytes)], small_config()),
        Err(SandboxError::Compile(_))
    ));
}

#[test]
fn start_function_runs_out_of_fuel() {
    let wat = guest(
        "(func $spin (loop $l (br $l))) (start $spin)",
        "(nop)",
        "(i32.const 1024)",
    );
    let sandbox = load(&wat, small_config()).unwrap();
    assert_eq!(sandbox.meter_encoded(&[1]), Err(MeterError::OutOfFuel));
}

#[test]
fn state_does_not_leak_between_calls() {
    // Each call bumps a global, a counter in memory and two bytes of the data segment, and
    // answers with them. In a fresh instance every one of them starts from its initial value,
    // so every answer is units = 1, fee = 1; a reused instance or a slot whose memory was not
    // reset would answer 2, 3, ...
    let template = MeterOutcome(Ok(Metered { units: 0, fee: 0 })).encode();
    let data: String = template.iter().map(|b| format!("\\{b:02x}")).collect();
    // Last byte of `units` and of `fee` in the outcome at 1024.
    let (units_lo, fee_lo) = (1024 + 42, 1024 + 58);
    let wat = format!(
        r#"(module
  (memory (export "memory") 1)
  (global $calls (mut i32) (i32.const 0))
  (data (i32.const 1024) "{data}")
  (func (export "input_ptr") (result i32) (i32.const 0))
  (func (export "output_ptr") (result i32) (i32.const 1024))
  (func (export "meter") (param i32) (result i32)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (i32.store (i32.const 4096) (i32.add (i32.load (i32.const 4096)) (i32.const 1)))
    (i32.store8 (i32.const {units_lo})
      (i32.add (i32.load8_u (i32.const {units_lo})) (global.get $calls)))
    (i32.store8 (i32.const {fee_lo})
      (i32.add (i32.load8_u (i32.const {fee_lo})) (i32.load (i32.const 4096))))
    (i32.const {len})))"#,
        len = template.len()
    );
    let config = SandboxConfig {
        max_instances: 2,
        ..small_config()
    };
    let sandbox = load(&wat, config).unwrap();
    let fresh = Ok(MeterOutcome(Ok(Metered { units: 1, fee: 1 })));
    for _ in 0..100 {
        assert_eq!(sandbox.meter_encoded(&[]), fresh);
    }
    // Also when calls run at once on both slots.
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..100 {
                    assert_eq!(sandbox.meter_encoded(&[]), fresh);
                }
            });
        }
    });
}

#[test]
fn a_full_pool_is_busy_not_a_crash() {
    // An empty input spins on the only slot for a while; meanwhile other calls find the pool
    // full. Once the spinner runs out of fuel, calls work again.
    let config = SandboxConfig {
        fuel: 300_000_000,
        max_instances: 1,
        ..small_config()
    };
    let sandbox = load(&misbehaving("(loop $l (br $l))"), config).unwrap();
    let mut busy = 0;
    std::thread::scope(|s| {
        // The spinner may itself find the slot taken by the other thread's quick call.
        let spinner = s.spawn(|| {
            loop {
                match sandbox.meter_encoded(&[]) {
                    Err(MeterError::Busy(1)) => continue,
                    other => break other,
                }
            }
        });
        while !spinner.is_finished() {
            match sandbox.meter_encoded(&[1]) {
                Err(MeterError::Busy(1)) => busy += 1,
                other => assert_eq!(other, canned_ok()),
            }
        }
        assert_eq!(spinner.join().unwrap(), Err(MeterError::OutOfFuel));
    });
    assert!(busy > 0, "the pool was never full");
    assert_eq!(sandbox.meter_encoded(&[1]), canned_ok());
}

// ---------------------------------------------------------------------------------------
// Inputs.

const MODEL: Digest = Digest([1; 32]);

fn tier(from: u64, prompt: u64, cached: u64, completion: u64) -> PriceTier {
    PriceTier {
        from_prompt_tokens: from,
        prompt_per_mtok: prompt,
        cached_per_mtok: cached,
        completion_per_mtok: completion,
    }
}

fn input_with(prompt: u64, cached: u64, completion: u64, tiers: Vec<PriceTier>) -> MeterInput {
    MeterInput {
        facts: UsageFacts {
            model: MODEL,
            request_digest: Digest([2; 32]),
            response_digest: Digest([3; 32]),
            prompt_tokens: prompt,
            cached_prompt_tokens: cached,
            completion_tokens: completion,
            reasoning_tokens: 0,
            started_at_ms: 1_700_000_000_000,
            first_token_ms: 5,
            duration_ms: 50,
            finish: FinishStatus::Stop,
        },
        schedule: PriceSchedule {
            model: MODEL,
            min_fee: 0,
            tiers,
        },
        max_fee: u128::MAX,
    }
}

/// SplitMix64: a seeded generator, so the corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    /// Token counts: mostly realistic, often at the edges.
    fn tokens(&mut self) -> u64 {
        match self.below(12) {
            0 => 0,
            1 => u64::MAX,
            2 => u64::MAX - self.below(1000),
            3 => self.next(),
            4..=6 => self.below(1000),
            _ => self.below(400_000),
        }
    }

    /// Prices per million tokens.
    fn price(&mut self) -> u64 {
        match self.below(10) {
            0 => 0,
            1 => u64::MAX,
            2 => self.next(),
            3 => self.below(10),
            _ => self.below(100_000_000),
        }
    }

    fn amount(&mut self) -> u128 {
        match self.below(6) {
            0 => u128::MAX,
            1 => (u128::from(self.next()) << 64) | u128::from(self.next()),
            2 => u128::from(self.next()),
            _ => u128::from(self.below(100_000)),
        }
    }
}

/// One generated input: valid most of the time, sometimes structurally malformed.
fn generate(rng: &mut Rng) -> MeterInput {
    let prompt = rng.tokens();
    let cached = if rng.percent(3) {
        prompt.saturating_add(1 + rng.below(10)) // More than the prompt: malformed.
    } else if prompt == 0 || rng.percent(40) {
        0
    } else if rng.percent(20) {
        prompt
    } else {
        rng.next() % prompt
    };
    let completion = rng.tokens();
    let reasoning = if completion == 0 {
        0
    } else {
        rng.next() % completion
    };
    let first_token_ms = rng.below(1000) as u32;
    let finish = match rng.below(5) {
        0 => FinishStatus::Stop,
        1 => FinishStatus::Length,
        2 => FinishStatus::ToolCalls,
        3 => FinishStatus::ContentFilter,
        _ => FinishStatus::Interrupted,
    };

    let mut tiers = Vec::new();
    let mut from = 0u64;
    for _ in 0..1 + rng.below(8) {
        tiers.push(tier(from, rng.price(), rng.price(), rng.price()));
        let step = if rng.percent(80) {
            1 + rng.below(200_000)
        } else {
            rng.next()
        };
        match from.checked_add(step) {
            Some(next) => from = next,
            None => break,
        }
    }
    if rng.percent(2) {
        match rng.below(4) {
            0 => tiers.clear(),
            1 => tiers[0].from_prompt_tokens = 1,
            2 => tiers.extend_from_slice(&[tier(u64::MAX, 1, 1, 1); 8]),
            _ => tiers.push(tiers[tiers.len() - 1]),
        }
    }

    let mut input = MeterInput {
        facts: UsageFacts {
            model: MODEL,
            request_digest: Digest([rng.below(256) as u8; 32]),
            response_digest: Digest([rng.below(256) as u8; 32]),
            prompt_tokens: prompt,
            cached_prompt_tokens: cached,
            completion_tokens: completion,
            reasoning_tokens: reasoning,
            started_at_ms: rng.next(),
            first_token_ms,
            duration_ms: first_token_ms + rng.below(100_000) as u32,
            finish,
        },
        schedule: PriceSchedule {
            model: if rng.percent(5) {
                Digest([4; 32])
            } else {
                MODEL
            },
            min_fee: if rng.percent(60) { 0 } else { rng.amount() },
            tiers,
        },
        max_fee: u128::MAX,
    };
    // The payer's limit: often right at or just below the fee, so both sides of the check run.
    input.max_fee = match (rng.below(4), tally_guest::meter(&input)) {
        (0, Ok(m)) => m.fee,
        (1, Ok(m)) => m.fee.saturating_sub(1),
        (2, _) => u128::MAX,
        _ => rng.amount(),
    };
    input
}

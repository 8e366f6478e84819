//! The guest's wasm ABI: the only code that exists in `metering.wasm` besides the rule.
//!
//! Exports: `memory`; `input_ptr() -> i32`, the address of a static
//! [`INPUT_CAPACITY`]-byte input buffer; `output_ptr() -> i32`, the address of a static
//! [`OUTPUT_CAPACITY`]-byte output buffer; and `meter(len: i32) -> i32`, which reads `len`
//! bytes of canonical `MeterInput` from the input buffer, writes the canonical
//! `MeterOutcome` to the output buffer and returns its length. A `len` outside
//! `0..=INPUT_CAPACITY` gives a `MalformedInput` outcome. The module imports nothing.
//!
//! Memory management assumes what the attestor guarantees: every call runs in a fresh
//! instance. The allocator therefore only bumps a pointer through a static arena and never
//! frees; the module never grows its memory. The host writes the input buffer only before
//! calling `meter` and reads the output buffer only after it returns, and wasm32 without the
//! threads proposal runs one thread, so no two references to a buffer are ever alive at once.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::{Cell, UnsafeCell};

use tally_protocol::{MeterInput, MeterOutcome, Refusal};

/// Size of the input buffer: at least the longest canonical `MeterInput`.
pub(crate) const INPUT_CAPACITY: usize = 1024;
/// Size of the output buffer: at least the longest canonical `MeterOutcome`.
pub(crate) const OUTPUT_CAPACITY: usize = 128;
/// Size of the heap. One call allocates a few hundred bytes (the tier list and the output).
const ARENA_SIZE: usize = 16 * 1024;

const _: () = assert!(INPUT_CAPACITY >= MeterInput::MAX_ENCODED_LEN);
const _: () = assert!(OUTPUT_CAPACITY >= MeterOutcome::MAX_ENCODED_LEN);

/// A static byte buffer shared with the host.
#[repr(C, align(16))]
struct Buffer<const N: usize>(UnsafeCell<[u8; N]>);

// SAFETY: wasm32 without the threads proposal has a single thread, and the ABI (see the module
// docs) never lets the host and the guest use a buffer at the same time.
unsafe impl<const N: usize> Sync for Buffer<N> {}

impl<const N: usize> Buffer<N> {
    const fn new() -> Self {
        Buffer(UnsafeCell::new([0; N]))
    }

    /// The buffer's address in linear memory (wasm32 addresses are 32 bits).
    fn addr(&self) -> i32 {
        self.0.get() as usize as i32
    }
}

static INPUT: Buffer<INPUT_CAPACITY> = Buffer::new();
static OUTPUT: Buffer<OUTPUT_CAPACITY> = Buffer::new();

/// Returns the address of the input buffer.
#[unsafe(no_mangle)]
pub(crate) extern "C" fn input_ptr() -> i32 {
    INPUT.addr()
}

/// Returns the address of the output buffer.
#[unsafe(no_mangle)]
pub(crate) extern "C" fn output_ptr() -> i32 {
    OUTPUT.addr()
}

/// Meters the `len` input bytes and returns the length of the outcome written to the output
/// buffer.
#[unsafe(no_mangle)]
pub(crate) extern "C" fn meter(len: i32) -> i32 {
    let outcome = match usize::try_from(len) {
        Ok(len) if len <= INPUT_CAPACITY => {
            // SAFETY: `len` is within the buffer, and no mutable reference to it exists while
            // the guest runs (module docs).
            let input = unsafe { core::slice::from_raw_parts(INPUT.0.get().cast::<u8>(), len) };
            crate::meter_encoded(input)
        }
        _ => MeterOutcome(Err(Refusal::MalformedInput)),
    };
    let bytes = outcome.encode();
    // SAFETY: the only reference to the output buffer during this call (module docs).
    let output = unsafe { &mut *OUTPUT.0.get() };
    match output.get_mut(..bytes.len()) {
        Some(dst) => dst.copy_from_slice(&bytes),
        // Unreachable: the buffer holds the longest outcome (checked at compile time above).
        None => core::arch::wasm32::unreachable(),
    }
    // At most OUTPUT_CAPACITY, so the cast is exact.
    bytes.len() as i32
}

/// Aborts the instance: the host sees a trap.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

/// A bump allocator over a static arena that never frees (each call gets a fresh instance).
/// Out of arena, it returns null, which Rust turns into an allocation-error abort (a trap).
struct BumpAllocator {
    arena: UnsafeCell<[u8; ARENA_SIZE]>,
    /// Offset of the first free byte in `arena`.
    next: Cell<usize>,
}

// SAFETY: wasm32 without the threads proposal has a single thread.
unsafe impl Sync for BumpAllocator {}

// SAFETY: `alloc` returns either null or a block of `layout.size()` bytes aligned to
// `layout.align()`, inside the arena, disjoint from every block returned before (`next` only
// grows). `dealloc` does nothing, so blocks stay valid for the instance's life.
unsafe impl GlobalAlloc for BumpAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = self.arena.get().cast::<u8>();
        let base_addr = base as usize;
        let block = base_addr
            .checked_add(self.next.get())
            .and_then(|free| free.checked_next_multiple_of(layout.align()))
            .map(|start| start - base_addr)
            .and_then(|offset| Some((offset, offset.checked_add(layout.size())?)));
        match block {
            Some((offset, end)) if end <= ARENA_SIZE => {
                self.next.set(end);
                base.wrapping_add(offset)
            }
            _ => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

#[global_allocator]
static ALLOCATOR: BumpAllocator = BumpAllocator {
    arena: UnsafeCell::new([0; ARENA_SIZE]),
    next: Cell::new(0),
};

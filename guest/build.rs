//! Sets the wasm guest's shadow-stack size.
//!
//! wasm-ld's default stack is 1 MiB, which would make the module's initial memory 17 pages
//! for code that needs a few KiB of stack. A 32 KiB stack (placed first, so an overflow traps
//! instead of overwriting data) keeps the whole module in one 64 KiB page, which is what the
//! attestor's per-call memory limit and instance reset are sized for.

/// Bytes of shadow stack for the wasm ABI build.
const STACK_SIZE: u32 = 32 * 1024;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let wasm32 = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|a| a == "wasm32");
    let abi = std::env::var_os("CARGO_FEATURE_ABI").is_some();
    if wasm32 && abi {
        println!("cargo::rustc-link-arg-cdylib=-zstack-size={STACK_SIZE}");
    }
}

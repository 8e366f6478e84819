//! Reproducible build of the settlement contract: `cargo xtask build-contract [--check]`.
//!
//! The `.wasm` uploaded on chain is committed in `contracts/dist/` with its SHA-256, so anyone
//! can check that the code on chain is this source. The build is pinned like the guest's (see
//! `guest.rs`): the `contract` profile in the root `Cargo.toml` (opt-level 3, because
//! size-optimised code costs about twice the gas; fat LTO, one codegen unit, stripped, panic
//! abort), `wasm32-unknown-unknown`, `--locked`, a target directory of its own and path
//! remappings as the only flags.
//!
//! Rust ≥ 1.87 emits `memory.copy` / `memory.fill` (bulk memory), which the CosmWasm VM's
//! static check rejects, so the module goes through binaryen's `wasm-opt`, pinned to
//! [`BINARYEN_VERSION`]: first `--llvm-memory-copy-fill-lowering` replaces those instructions
//! by loops, then `-O3` runs with bulk memory disabled, which also validates that none is left.
//! The VM accepts sign extension, non-trapping float-to-int, multi-value and mutable globals
//! as they are.
//!
//! Without `--check`, writes `contracts/dist/tally_contracts.wasm` and its `.sha256`
//! (`sha256sum` format). With `--check`, builds from scratch in `target/contract-check` and
//! fails if the bytes differ from the committed module or its `.sha256` file.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::guest::{Dist, cargo, fresh_target_dir, pin_build_env, publish};

const TARGET: &str = "wasm32-unknown-unknown";
const PROFILE: &str = "contract";
const CONTRACT: Dist = Dist {
    dir: "contracts/dist",
    wasm: "tally_contracts.wasm",
    sha256: "tally_contracts.wasm.sha256",
    command: "build-contract",
};

/// The binaryen release whose `wasm-opt` lowers the module: another version may emit other
/// bytes.
const BINARYEN_VERSION: &str = "132";

/// Where `npm install --prefix target/tools binaryen@…` puts `wasm-opt`.
const LOCAL_WASM_OPT: &str = "target/tools/node_modules/.bin/wasm-opt";

/// The features `rustc` enables by default for `wasm32-unknown-unknown` (the stripped module
/// has no `target_features` section for `wasm-opt` to read them from), less bulk memory.
const FEATURES: [&str; 5] = [
    "--enable-sign-ext",
    "--enable-mutable-globals",
    "--enable-nontrapping-float-to-int",
    "--enable-multivalue",
    "--enable-reference-types",
];

pub(crate) fn run(root: &Path, check: bool) -> anyhow::Result<()> {
    let wasm_opt = wasm_opt(root)?;
    let target_dir = fresh_target_dir(root, "contract", check)?;
    let built = build(root, &target_dir)?;
    let lowered = target_dir.join("tally_contracts.lowered.wasm");
    let optimised = target_dir.join("tally_contracts.opt.wasm");
    run_wasm_opt(
        &wasm_opt,
        &built,
        &lowered,
        &[
            "--enable-bulk-memory",
            "--enable-bulk-memory-opt",
            "--llvm-memory-copy-fill-lowering",
        ],
    )?;
    run_wasm_opt(&wasm_opt, &lowered, &optimised, &["-O3"])?;
    let bytes =
        std::fs::read(&optimised).with_context(|| format!("reading {}", optimised.display()))?;
    publish(root, &CONTRACT, &bytes, check)?;
    if check {
        std::fs::remove_dir_all(&target_dir).ok();
    }
    Ok(())
}

/// Builds the contract into `target_dir` and returns the path of the module as rustc left it.
fn build(root: &Path, target_dir: &Path) -> anyhow::Result<PathBuf> {
    let mut cmd = Command::new(cargo());
    cmd.current_dir(root)
        .args(["build", "--locked", "--package", "tally-contracts", "--lib"])
        .args(["--profile", PROFILE, "--target", TARGET, "--target-dir"])
        .arg(target_dir)
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"));
    pin_build_env(&mut cmd, root)?;
    let status = cmd
        .status()
        .context("running cargo build for the contract")?;
    if !status.success() {
        bail!("building the contract failed ({status})");
    }
    let wasm = target_dir
        .join(TARGET)
        .join(PROFILE)
        .join("tally_contracts.wasm");
    if !wasm.is_file() {
        bail!("the build did not produce {}", wasm.display());
    }
    Ok(wasm)
}

/// Runs `wasm-opt` with the VM's features plus `extra` from `input` to `output`.
fn run_wasm_opt(
    wasm_opt: &Path,
    input: &Path,
    output: &Path,
    extra: &[&str],
) -> anyhow::Result<()> {
    let out = Command::new(wasm_opt)
        .args(FEATURES)
        .args(extra)
        .arg(input)
        .arg("-o")
        .arg(output)
        .output()
        .with_context(|| format!("running {}", wasm_opt.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let head: String = stderr.lines().take(20).collect::<Vec<_>>().join("\n");
        bail!(
            "wasm-opt {} failed ({}):\n{head}",
            extra.join(" "),
            out.status
        );
    }
    Ok(())
}

/// The pinned `wasm-opt`: the one npm installed under `target/tools`, else one on `PATH` of
/// the same version.
fn wasm_opt(root: &Path) -> anyhow::Result<PathBuf> {
    let install = format!(
        "install it with `npm install --prefix target/tools --no-save binaryen@{BINARYEN_VERSION}.0.0` \
         (run in the workspace root)"
    );
    let candidates = [root.join(LOCAL_WASM_OPT), PathBuf::from("wasm-opt")];
    let mut found = Vec::new();
    for path in candidates {
        let Ok(out) = Command::new(&path).arg("--version").output() else {
            continue;
        };
        let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        // `wasm-opt version 132 (version_132)`
        if out.status.success() && version.split_whitespace().nth(2) == Some(BINARYEN_VERSION) {
            return Ok(path);
        }
        found.push(format!("{} is {version:?}", path.display()));
    }
    if found.is_empty() {
        bail!("wasm-opt (binaryen {BINARYEN_VERSION}) not found; {install}");
    }
    bail!(
        "wasm-opt must be binaryen version {BINARYEN_VERSION} ({}); {install}",
        found.join(", ")
    )
}

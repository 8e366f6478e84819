//! Reproducible build of the metering guest: `cargo xtask build-guest [--check]`.
//!
//! The guest's SHA-256 is its identity on chain, so its bytes must not depend on the machine
//! that builds them. The build pins everything it can: the `guest` profile in the root
//! `Cargo.toml` (opt-level "s", fat LTO, one codegen unit, stripped, panic abort), the
//! `wasm32v1-none` target (WebAssembly 1.0 only), `--locked` dependencies, a target
//! directory of its own, and `CARGO_ENCODED_RUSTFLAGS` set to path remappings only (any
//! `RUSTFLAGS`, profile or target-dir overrides in the environment are removed), so that no
//! absolute path of the workspace, `CARGO_HOME` or the toolchain can reach the output. What
//! it cannot pin is the toolchain itself: the same `rustc` version is needed for the same
//! bytes (the version is printed with the hash).
//!
//! Without `--check`, writes `guest/dist/metering.wasm` and `guest/dist/metering.wasm.sha256`
//! (`sha256sum` format). With `--check`, builds from scratch in `target/guest-check` and fails
//! if the bytes differ from the committed module or its `.sha256` file.
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use tally_protocol::Digest;

const TARGET: &str = "wasm32v1-none";
const PROFILE: &str = "guest";
const DIST: &str = "guest/dist";
const WASM: &str = "metering.wasm";
const SHA256: &str = "metering.wasm.sha256";

pub(crate) fn run(root: &Path, check: bool) -> anyhow::Result<()> {
    let target_dir = root
        .join("target")
        .join(if check { "guest-check" } else { "guest" });
    if check && target_dir.exists() {
        // From scratch: nothing cached may stand in for a real rebuild.
        std::fs::remove_dir_all(&target_dir)
            .with_context(|| format!("removing {}", target_dir.display()))?;
    }
    let built = build(root, &target_dir)?;
    let bytes = std::fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    let hash = Digest::sha256(&bytes);
    let sha_line = format!("{hash}  {WASM}\n");
    let dist = root.join(DIST);
    let toolchain = rustc_version()?;

    if check {
        let committed = std::fs::read(dist.join(WASM))
            .with_context(|| format!("reading {DIST}/{WASM}; run `cargo xtask build-guest`"))?;
        let committed_hash = Digest::sha256(&committed);
        if committed != bytes {
            bail!(
                "{DIST}/{WASM} does not match a fresh build\n  committed: {committed_hash}\n  \
                 rebuilt:   {hash}\n  toolchain: {toolchain}\n\
                 run `cargo xtask build-guest` if the change is intended, or build with the \
                 toolchain that produced the committed module"
            );
        }
        let committed_line = std::fs::read_to_string(dist.join(SHA256))
            .with_context(|| format!("reading {DIST}/{SHA256}"))?;
        if committed_line != sha_line {
            bail!(
                "{DIST}/{SHA256} says {:?}, the module hashes to {hash}",
                committed_line.trim_end()
            );
        }
        std::fs::remove_dir_all(&target_dir).ok();
        println!("{DIST}/{WASM} rebuilds to the same bytes: {hash} ({toolchain})");
    } else {
        std::fs::create_dir_all(&dist).with_context(|| format!("creating {DIST}"))?;
        std::fs::write(dist.join(WASM), &bytes)
            .with_context(|| format!("writing {DIST}/{WASM}"))?;
        std::fs::write(dist.join(SHA256), sha_line)
            .with_context(|| format!("writing {DIST}/{SHA256}"))?;
        println!(
            "wrote {DIST}/{WASM}: {hash} ({} bytes, {toolchain})",
            bytes.len()
        );
    }
    Ok(())
}

/// Builds the guest into `target_dir` and returns the path of the module.
fn build(root: &Path, target_dir: &Path) -> anyhow::Result<PathBuf> {
    let mut cmd = Command::new(cargo());
    cmd.current_dir(root)
        .args([
            "build",
            "--locked",
            "--package",
            "tally-guest",
            "--features",
            "abi",
        ])
        .args(["--profile", PROFILE, "--target", TARGET, "--target-dir"])
        .arg(target_dir)
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"));
    // Whatever the caller's environment says about flags, profiles or output locations does
    // not apply to this build.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_PROFILE_")
            || key.starts_with("CARGO_TARGET_")
            || matches!(
                key,
                "RUSTFLAGS"
                    | "CARGO_ENCODED_RUSTFLAGS"
                    | "CARGO_BUILD_RUSTFLAGS"
                    | "CARGO_BUILD_TARGET"
                    | "CARGO_BUILD_TARGET_DIR"
                    | "CARGO_INCREMENTAL"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "CARGO_BUILD_RUSTC_WRAPPER"
                    | "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER"
            )
        {
            cmd.env_remove(key);
        }
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", remap_flags(root)?);
    let status = cmd.status().context("running cargo build for the guest")?;
    if !status.success() {
        bail!("building the guest failed ({status})");
    }
    let wasm = target_dir
        .join(TARGET)
        .join(PROFILE)
        .join("tally_guest.wasm");
    if !wasm.is_file() {
        bail!("the build did not produce {}", wasm.display());
    }
    Ok(wasm)
}

/// `--remap-path-prefix` for every absolute path that could reach the module, joined by
/// 0x1f as `CARGO_ENCODED_RUSTFLAGS` expects. The workspace comes last: when prefixes nest,
/// rustc applies the last matching one.
fn remap_flags(root: &Path) -> anyhow::Result<OsString> {
    let mut prefixes = vec![(cargo_home()?, "/cargo"), (sysroot()?, "/rust")];
    prefixes.push((root.to_path_buf(), "/tally"));
    let mut flags = OsString::new();
    for (i, (from, to)) in prefixes.iter().enumerate() {
        if i > 0 {
            flags.push("\x1f");
        }
        flags.push("--remap-path-prefix=");
        flags.push(from);
        flags.push("=");
        flags.push(to);
    }
    Ok(flags)
}

/// The cargo that runs xtask (same toolchain), or `cargo` from `PATH`.
fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn rustc() -> OsString {
    std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into())
}

fn cargo_home() -> anyhow::Result<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home));
    }
    let home = std::env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

fn sysroot() -> anyhow::Result<PathBuf> {
    Ok(PathBuf::from(rustc_output(&["--print", "sysroot"])?))
}

fn rustc_version() -> anyhow::Result<String> {
    rustc_output(&["-V"])
}

fn rustc_output(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(rustc())
        .args(args)
        .output()
        .context("running rustc")?;
    if !out.status.success() {
        bail!("rustc {} failed", args.join(" "));
    }
    Ok(String::from_utf8(out.stdout)
        .context("rustc printed non-UTF-8")?
        .trim()
        .to_owned())
}

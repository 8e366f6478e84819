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

/// Where a reproducible build's artifact is committed, and the command that rebuilds it.
pub(crate) struct Dist {
    /// The folder, relative to the workspace root.
    pub(crate) dir: &'static str,
    /// The module's file name.
    pub(crate) wasm: &'static str,
    /// Its `sha256sum`-format file name.
    pub(crate) sha256: &'static str,
    /// The xtask command that rebuilds it, for error messages.
    pub(crate) command: &'static str,
}

const GUEST: Dist = Dist {
    dir: DIST,
    wasm: WASM,
    sha256: SHA256,
    command: "build-guest",
};

pub(crate) fn run(root: &Path, check: bool) -> anyhow::Result<()> {
    let target_dir = fresh_target_dir(root, "guest", check)?;
    let built = build(root, &target_dir)?;
    let bytes = std::fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    publish(root, &GUEST, &bytes, check)?;
    if check {
        std::fs::remove_dir_all(&target_dir).ok();
    }
    Ok(())
}

/// `target/<name>`, or for `--check` `target/<name>-check` emptied first: nothing cached may
/// stand in for a real rebuild.
pub(crate) fn fresh_target_dir(root: &Path, name: &str, check: bool) -> anyhow::Result<PathBuf> {
    let dir = if check {
        root.join("target").join(format!("{name}-check"))
    } else {
        root.join("target").join(name)
    };
    if check && dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(dir)
}

/// Writes `bytes` and their `sha256sum` line to `dist`, or with `check` fails unless the
/// committed files are exactly those.
pub(crate) fn publish(root: &Path, dist: &Dist, bytes: &[u8], check: bool) -> anyhow::Result<()> {
    let Dist {
        dir,
        wasm,
        sha256,
        command,
    } = dist;
    let hash = Digest::sha256(bytes);
    let sha_line = format!("{hash}  {wasm}\n");
    let folder = root.join(dir);
    let toolchain = rustc_version()?;

    if check {
        let committed = std::fs::read(folder.join(wasm))
            .with_context(|| format!("reading {dir}/{wasm}; run `cargo xtask {command}`"))?;
        let committed_hash = Digest::sha256(&committed);
        if committed != bytes {
            bail!(
                "{dir}/{wasm} does not match a fresh build\n  committed: {committed_hash}\n  \
                 rebuilt:   {hash}\n  toolchain: {toolchain}\n\
                 run `cargo xtask {command}` if the change is intended, or build with the \
                 toolchain that produced the committed module"
            );
        }
        let committed_line = std::fs::read_to_string(folder.join(sha256))
            .with_context(|| format!("reading {dir}/{sha256}"))?;
        if committed_line != sha_line {
            bail!(
                "{dir}/{sha256} says {:?}, the module hashes to {hash}",
                committed_line.trim_end()
            );
        }
        println!("{dir}/{wasm} rebuilds to the same bytes: {hash} ({toolchain})");
    } else {
        std::fs::create_dir_all(&folder).with_context(|| format!("creating {dir}"))?;
        std::fs::write(folder.join(wasm), bytes)
            .with_context(|| format!("writing {dir}/{wasm}"))?;
        std::fs::write(folder.join(sha256), sha_line)
            .with_context(|| format!("writing {dir}/{sha256}"))?;
        println!(
            "wrote {dir}/{wasm}: {hash} ({} bytes, {toolchain})",
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
    pin_build_env(&mut cmd, root)?;
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

/// Removes whatever the caller's environment says about flags, profiles or output locations
/// (none of it applies to a reproducible build) and sets the path remappings as the only flags.
pub(crate) fn pin_build_env(cmd: &mut Command, root: &Path) -> anyhow::Result<()> {
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
    Ok(())
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
pub(crate) fn cargo() -> OsString {
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

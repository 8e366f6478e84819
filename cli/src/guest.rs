//! The pinned metering guest, embedded in the binary, and how to load another one.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use tally_attestor::{Sandbox, SandboxConfig};
use tally_protocol::Digest;

/// The committed guest build (`guest/dist/metering.wasm`).
const PINNED_WASM: &[u8] = include_bytes!("../../guest/dist/metering.wasm");
/// Its committed SHA-256 (`sha256sum` format).
const PINNED_SHA256: &str = include_str!("../../guest/dist/metering.wasm.sha256");

/// The pinned guest's hash, parsed from the committed `.sha256` file.
pub(crate) fn pinned_hash() -> anyhow::Result<Digest> {
    let hex = PINNED_SHA256.split_whitespace().next().unwrap_or_default();
    let mut bytes = [0u8; 32];
    if hex.len() != 64 {
        bail!("guest/dist/metering.wasm.sha256 is malformed");
    }
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .context("guest/dist/metering.wasm.sha256 is not hex")?;
    }
    Ok(Digest(bytes))
}

/// A sandbox over the pinned guest, or over `path` (whose hash is then the one allowed:
/// the receipts say which guest they claim, and the verifier compares).
pub(crate) fn sandbox(path: Option<&Path>) -> anyhow::Result<Arc<Sandbox>> {
    let (wasm, allowed) = match path {
        Some(p) => {
            let wasm =
                std::fs::read(p).with_context(|| format!("reading guest {}", p.display()))?;
            let hash = Digest::sha256(&wasm);
            (wasm, hash)
        }
        None => (PINNED_WASM.to_vec(), pinned_hash()?),
    };
    let sandbox = Sandbox::new(&wasm, &[allowed], SandboxConfig::default())
        .context("loading the metering guest")?;
    Ok(Arc::new(sandbox))
}

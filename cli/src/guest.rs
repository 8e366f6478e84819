//! The pinned metering guest, embedded in the binary, and how to load another one.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tally_protocol::Digest;
use tally_sandbox::{Sandbox, SandboxConfig};

/// A sandbox over the pinned guest, or over `path` (whose hash is then the one allowed:
/// the receipts say which guest they claim, and the verifier compares).
pub(crate) fn sandbox(path: Option<&Path>) -> anyhow::Result<Arc<Sandbox>> {
    let sandbox = match path {
        Some(p) => {
            let wasm =
                std::fs::read(p).with_context(|| format!("reading guest {}", p.display()))?;
            Sandbox::new(&wasm, &[Digest::sha256(&wasm)], SandboxConfig::default())
        }
        None => Sandbox::pinned(SandboxConfig::default()),
    }
    .context("loading the metering guest")?;
    Ok(Arc::new(sandbox))
}

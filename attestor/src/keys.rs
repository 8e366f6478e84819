//! Host key files. The format and its rules (64 lowercase hex characters and a newline,
//! mode `0600`, never overwritten) live in `tally_client::keyfile`, shared with `tally
//! keys` and the payer SDKs; this module re-exports them and keeps the directory sync the
//! journal and the shipper use.

use std::fs::File;
use std::io;
use std::path::Path;

pub use tally_client::keyfile::{KeyError, generate_key_file, load_key_file};

/// Syncs the directory holding `path`, so a newly created entry survives a crash.
pub(crate) fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

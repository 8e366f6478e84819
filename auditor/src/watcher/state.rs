//! The watcher's state directory, so a restart at any moment loses nothing and repeats
//! nothing: the leaves it holds (`leaves.log`, appended and fsynced page by page, a torn
//! tail cut on open), the ledger (`ledger.json`: the last verified checkpoint, each judged
//! batch's outcome, the evidence cursor, the receipts it was asked to look out for;
//! replaced by temp file, fsync and rename), the alerts with their evidence (`alerts/`),
//! and an inbox (`inbox/`) where a client or host drops a receipt it wants to see logged.
//! An exclusive lock keeps a second watcher off the same directory.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tally_protocol::Digest;

use super::WatchError;

/// Largest leaf held (far above a receipt bundle; a larger one is junk and is kept as
/// its hash's witness only up to this size).
pub(crate) const MAX_LEAF_BYTES: usize = 1 << 20;

/// Bytes of a leaf record's check: the first bytes of the leaf's SHA-256.
const CHECK: usize = 8;

/// What became of one batch the watcher judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// No fraud among its new leaves.
    Clean,
    /// This watcher's challenge was accepted: the batch is void.
    Challenged,
    /// Found void on chain before this watcher's challenge landed (another watcher, or
    /// this one before a crash): nothing sent.
    Voided,
    /// A fraud found after the window closed (or the batch finalized): reported, not sent.
    TooLate,
    /// The contract refused the proof (recorded with the reason, not retried).
    Refused,
    /// The chain's root is not the log this watcher was served: no proof possible.
    Unprovable,
}

/// One batch's record, by header hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchRecord {
    /// Its number.
    pub number: u64,
    /// What became of it.
    pub outcome: Outcome,
    /// The fraud kind proved or found, if any.
    #[serde(default)]
    pub kind: Option<String>,
    /// The challenge transaction, or the contract's refusal.
    #[serde(default)]
    pub detail: Option<String>,
}

/// A receipt the watcher was asked to see logged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Awaited {
    /// The bundle's encoding, hex.
    pub(crate) bundle: String,
    /// Batches judged (submissions, voided ones included) when it arrived.
    pub(crate) since_batch: u64,
    /// Whether its censorship alert was raised.
    pub(crate) alerted: bool,
}

/// The ledger: everything but the leaves.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Ledger {
    /// The last checkpoint note verified against the leaves held.
    pub(crate) checkpoint: Option<String>,
    /// Judged batches by header hash (hex).
    pub(crate) batches: BTreeMap<String, BatchRecord>,
    /// The highest finalized batch number judged (or found judged).
    #[serde(default)]
    pub(crate) finalized_seen: u64,
    /// The equivocation evidence cursor (`GET /v1/evidence?after=`).
    pub(crate) evidence_after: u64,
    /// Receipts awaited in the log, by receipt id (hex).
    pub(crate) awaited: BTreeMap<String, Awaited>,
    /// Alerts raised so far (numbers their files).
    pub(crate) alerts: u64,
}

/// The open state directory.
pub(crate) struct StateDir {
    dir: PathBuf,
    leaves: File,
    _lock: File,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> WatchError + '_ {
    move |e| WatchError::State(format!("{}: {e}", path.display()))
}

/// Writes `bytes` to `path` durably: temp file, fsync, rename, directory fsync.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), WatchError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(parent) = path.parent()
        && let Ok(d) = File::open(parent)
    {
        d.sync_all().map_err(io(parent))?;
    }
    Ok(())
}

impl StateDir {
    /// Opens (creating) the directory, takes its lock, and reads the leaves and ledger,
    /// cutting a torn tail off the leaves file.
    pub(crate) fn open(dir: &Path) -> Result<(StateDir, Vec<Vec<u8>>, Ledger), WatchError> {
        for d in [dir.to_path_buf(), dir.join("alerts"), dir.join("inbox")] {
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(WatchError::State(format!(
                "{} is in use by another watcher",
                dir.display()
            )));
        }
        let path = dir.join("leaves.log");
        let (leaves, good) = read_leaves(&path)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        if file.metadata().map_err(io(&path))?.len() != good {
            file.set_len(good).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        let mut file = file;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).map_err(io(&path))?;
        let ledger_path = dir.join("ledger.json");
        let ledger = match std::fs::read(&ledger_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| WatchError::State(format!("{}: {e}", ledger_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ledger::default(),
            Err(e) => return Err(io(&ledger_path)(e)),
        };
        Ok((
            StateDir {
                dir: dir.to_path_buf(),
                leaves: file,
                _lock: lock,
            },
            leaves,
            ledger,
        ))
    }

    /// Appends leaves and fsyncs them.
    pub(crate) fn append_leaves(&mut self, leaves: &[&[u8]]) -> Result<(), WatchError> {
        let path = self.dir.join("leaves.log");
        let mut buf = Vec::new();
        for l in leaves {
            let len = u32::try_from(l.len()).unwrap_or(u32::MAX);
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(l);
            buf.extend_from_slice(&Digest::sha256(l).0[..CHECK]);
        }
        self.leaves.write_all(&buf).map_err(io(&path))?;
        self.leaves.sync_data().map_err(io(&path))
    }

    /// Replaces the ledger durably.
    pub(crate) fn save(&self, ledger: &Ledger) -> Result<(), WatchError> {
        let bytes =
            serde_json::to_vec_pretty(ledger).map_err(|e| WatchError::State(e.to_string()))?;
        write_durably(&self.dir.join("ledger.json"), &bytes)
    }

    /// Writes alert number `n` of `kind` with its evidence; returns its path.
    pub(crate) fn alert(
        &self,
        n: u64,
        kind: &str,
        evidence: &serde_json::Value,
    ) -> Result<PathBuf, WatchError> {
        let path = self.dir.join("alerts").join(format!("{n:06}-{kind}.json"));
        let bytes =
            serde_json::to_vec_pretty(evidence).map_err(|e| WatchError::State(e.to_string()))?;
        write_durably(&path, &bytes)?;
        Ok(path)
    }

    /// The inbox directory (receipt files dropped by clients or hosts).
    pub(crate) fn inbox(&self) -> PathBuf {
        self.dir.join("inbox")
    }
}

/// Reads every complete, intact leaf record; returns them and the offset after the last.
fn read_leaves(path: &Path) -> Result<(Vec<Vec<u8>>, u64), WatchError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(io(path)(e)),
    };
    let mut r = BufReader::new(file);
    let (mut leaves, mut good) = (Vec::new(), 0u64);
    loop {
        let mut len = [0u8; 4];
        if r.read_exact(&mut len).is_err() {
            break;
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_LEAF_BYTES {
            break;
        }
        let mut bytes = vec![0u8; len];
        let mut check = [0u8; CHECK];
        if r.read_exact(&mut bytes).is_err()
            || r.read_exact(&mut check).is_err()
            || Digest::sha256(&bytes).0[..CHECK] != check
        {
            break;
        }
        good += (4 + len + CHECK) as u64;
        leaves.push(bytes);
    }
    Ok((leaves, good))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    #[test]
    fn leaves_survive_a_reopen_and_a_torn_tail_is_cut() {
        let dir = std::env::temp_dir().join(format!("tally-watch-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let (mut s, leaves, ledger) = StateDir::open(&dir).unwrap();
            assert!(leaves.is_empty() && ledger.checkpoint.is_none());
            s.append_leaves(&[b"one", b"two"]).unwrap();
            // A second watcher is refused while this one holds the directory.
            assert!(StateDir::open(&dir).is_err());
        }
        // A torn record at the end: cut, the rest kept, appends continue after it.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join("leaves.log"))
            .unwrap();
        f.write_all(&[9, 0, 0, 0, b'x']).unwrap();
        drop(f);
        let (mut s, leaves, _) = StateDir::open(&dir).unwrap();
        assert_eq!(leaves, [b"one".to_vec(), b"two".to_vec()]);
        s.append_leaves(&[b"three"]).unwrap();
        drop(s);
        let (_, leaves, _) = StateDir::open(&dir).unwrap();
        assert_eq!(leaves.len(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

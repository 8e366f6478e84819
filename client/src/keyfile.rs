//! Key files (payers, hosts, aggregators): a 32-byte Ed25519 seed stored as hex in a file
//! only its owner can read. `tally keys`, the attestor, and the Python and TypeScript SDKs
//! all read and write them through this module, so there is one format.
//!
//! A key file holds exactly 64 lowercase hex characters (the RFC 8032 secret seed) and a
//! newline. [`generate_key_file`] creates it with mode `0600` and never overwrites an
//! existing file; [`load_key_file`] refuses a file that group or others can read or write,
//! so a key that leaked through loose permissions is noticed instead of used.
//!
//! The text format ([`key_file_text`], [`parse_key_file`]) builds everywhere (the browser
//! SDK keeps keys in its own store); the file functions are Unix only: the permission
//! check relies on Unix mode bits.

#[cfg(unix)]
pub use file::{KeyError, generate_key_file, load_key_file, save_key_file};

/// The longest file a key file can be: 64 hex characters and one newline.
pub const MAX_KEY_FILE_LEN: u64 = 65;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The content of the key file holding `seed`: 64 lowercase hex characters and a newline.
/// The caller should overwrite the returned bytes once written (they are the secret).
pub fn key_file_text(seed: &[u8; 32]) -> Vec<u8> {
    let mut text = Vec::with_capacity(MAX_KEY_FILE_LEN as usize);
    for b in seed {
        text.push(HEX[usize::from(b >> 4)]);
        text.push(HEX[usize::from(b & 0x0f)]);
    }
    text.push(b'\n');
    text
}

/// Parses a key file's content: 64 lowercase hex characters, then at most one `\n`.
/// The error says what is wrong, in the words [`KeyError::Malformed`] reports.
pub fn parse_key_file(text: &[u8]) -> Result<[u8; 32], &'static str> {
    if text.len() as u64 > MAX_KEY_FILE_LEN {
        return Err("longer than 64 hex characters and a newline");
    }
    let hex = text.strip_suffix(b"\n").unwrap_or(text);
    if hex.len() != 64 {
        return Err("expected 64 hex characters and an optional newline");
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err("expected lowercase hex characters"),
    };
    let mut seed = [0u8; 32];
    for (out, pair) in seed.iter_mut().zip(hex.chunks_exact(2)) {
        *out = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(seed)
}

/// Key files on disk (Unix: the permission rule uses mode bits).
#[cfg(unix)]
mod file {
    use std::fs::{File, OpenOptions};
    use std::io::{self, Read, Write};
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    use std::path::{Path, PathBuf};

    use tally_protocol::SigningKey;

    use super::{MAX_KEY_FILE_LEN, key_file_text, parse_key_file};

    /// The mode bits a key file may not have: any access for group or others.
    const FORBIDDEN_MODE_BITS: u32 = 0o077;

    /// Why a key file could not be created or loaded.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[non_exhaustive]
    pub enum KeyError {
        /// [`generate_key_file`] never overwrites a key: the path is taken.
        #[error("key file {} already exists", .path.display())]
        Exists {
            /// The key file's path.
            path: PathBuf,
        },
        /// The file is accessible to group or others; `chmod 600` it (and consider the key
        /// compromised if others could read it).
        #[error("key file {} has mode {mode:03o}; it must not be accessible to group or others (chmod 600)", .path.display())]
        Permissions {
            /// The key file's path.
            path: PathBuf,
            /// The file's permission bits.
            mode: u32,
        },
        /// The content is not 64 lowercase hex characters and an optional newline.
        #[error("key file {} is malformed: {reason}", .path.display())]
        Malformed {
            /// The key file's path.
            path: PathBuf,
            /// What is wrong with it.
            reason: &'static str,
        },
        /// The file system refused an operation.
        #[error("{op} {}: {detail}", .path.display())]
        Io {
            /// What was being done (`"create"`, `"read"`, ...).
            op: &'static str,
            /// The path involved.
            path: PathBuf,
            /// The I/O error's kind, for matching.
            kind: io::ErrorKind,
            /// The I/O error's message.
            detail: String,
        },
        /// The operating system's random generator failed.
        #[error("the OS random generator failed: {0}")]
        Random(getrandom::Error),
    }

    impl KeyError {
        fn io(op: &'static str, path: &Path, e: &io::Error) -> KeyError {
            KeyError::Io {
                op,
                path: path.to_path_buf(),
                kind: e.kind(),
                detail: e.to_string(),
            }
        }
    }

    /// Creates a new key file at `path` with a fresh random key and returns the key.
    ///
    /// The seed comes from the operating system's generator; the file is written as
    /// [`save_key_file`] writes it.
    pub fn generate_key_file(path: impl AsRef<Path>) -> Result<SigningKey, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(KeyError::Random)?;
        let key = SigningKey::from_seed(&seed);
        seed.fill(0);
        save_key_file(path, &key)?;
        Ok(key)
    }

    /// Writes `key` to a new key file at `path`.
    ///
    /// The file is created with `create_new` and mode `0600` (so it never replaces an
    /// existing key and is never, even briefly, readable by others), written, and synced
    /// together with its directory, so the key exists after a crash once this returns.
    pub fn save_key_file(path: impl AsRef<Path>, key: &SigningKey) -> Result<(), KeyError> {
        let path = path.as_ref();
        let mut seed = key.seed();
        let mut text = key_file_text(&seed);
        seed.fill(0);

        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => KeyError::Exists {
                    path: path.to_path_buf(),
                },
                _ => KeyError::io("create", path, &e),
            })?;
        let written = file.write_all(&text).and_then(|()| file.sync_all());
        text.fill(0);
        if let Err(e) = written {
            // Leave no half-written key behind to be mistaken for one later.
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(KeyError::io("write", path, &e));
        }
        sync_parent_dir(path).map_err(|e| KeyError::io("sync the directory of", path, &e))?;
        Ok(())
    }

    /// Loads the key stored at `path`.
    ///
    /// Refuses a file that group or others may access ([`KeyError::Permissions`]), that is
    /// not a regular file, or whose content is not 64 lowercase hex characters with an
    /// optional trailing newline ([`KeyError::Malformed`]).
    pub fn load_key_file(path: impl AsRef<Path>) -> Result<SigningKey, KeyError> {
        let path = path.as_ref();
        let mut file = File::open(path).map_err(|e| KeyError::io("open", path, &e))?;
        // The metadata of the opened file, not of the path: no window for a swap in between.
        let meta = file
            .metadata()
            .map_err(|e| KeyError::io("stat", path, &e))?;
        if !meta.is_file() {
            return Err(KeyError::Malformed {
                path: path.to_path_buf(),
                reason: "not a regular file",
            });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & FORBIDDEN_MODE_BITS != 0 {
            return Err(KeyError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        if meta.len() > MAX_KEY_FILE_LEN {
            return Err(KeyError::Malformed {
                path: path.to_path_buf(),
                reason: "longer than 64 hex characters and a newline",
            });
        }
        let mut text = Vec::with_capacity(MAX_KEY_FILE_LEN as usize);
        (&mut file)
            .take(MAX_KEY_FILE_LEN + 1)
            .read_to_end(&mut text)
            .map_err(|e| KeyError::io("read", path, &e))?;
        let parsed = parse_key_file(&text);
        text.fill(0);
        let mut seed = parsed.map_err(|reason| KeyError::Malformed {
            path: path.to_path_buf(),
            reason,
        })?;
        let key = SigningKey::from_seed(&seed);
        seed.fill(0);
        Ok(key)
    }

    /// Syncs the directory holding `path`, so a newly created entry survives a crash.
    fn sync_parent_dir(path: &Path) -> io::Result<()> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use std::fs::{self, OpenOptions};
    use std::io::{self, Write};
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    use tally_protocol::SigningKey;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn generated_key_round_trips_with_mode_0600() {
        let d = dir();
        let path = d.path().join("host.key");
        let key = generate_key_file(&path).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        assert!(text[..64].bytes().all(|c| HEX.contains(&c)));
        let loaded = load_key_file(&path).unwrap();
        assert_eq!(loaded.public_key(), key.public_key());
        assert_eq!(loaded.seed(), key.seed());
    }

    #[test]
    fn a_saved_key_loads_back_and_is_never_overwritten() {
        let d = dir();
        let path = d.path().join("payer.key");
        let key = SigningKey::from_seed(&[7; 32]);
        save_key_file(&path, &key).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", "07".repeat(32))
        );
        assert_eq!(load_key_file(&path).unwrap().seed(), [7; 32]);
        assert!(matches!(
            save_key_file(&path, &SigningKey::from_seed(&[8; 32])),
            Err(KeyError::Exists { .. })
        ));
    }

    #[test]
    fn two_generated_keys_differ() {
        let d = dir();
        let a = generate_key_file(d.path().join("a.key")).unwrap();
        let b = generate_key_file(d.path().join("b.key")).unwrap();
        assert_ne!(a.public_key(), b.public_key());
    }

    #[test]
    fn generate_never_overwrites() {
        let d = dir();
        let path = d.path().join("host.key");
        let first = generate_key_file(&path).unwrap();
        assert_eq!(
            generate_key_file(&path).unwrap_err(),
            KeyError::Exists { path: path.clone() }
        );
        assert_eq!(
            load_key_file(&path).unwrap().public_key(),
            first.public_key()
        );
    }

    #[test]
    fn load_refuses_group_or_other_access() {
        let d = dir();
        let path = d.path().join("host.key");
        generate_key_file(&path).unwrap();
        for mode in [0o640, 0o604, 0o644, 0o620, 0o602, 0o666] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(
                load_key_file(&path).unwrap_err(),
                KeyError::Permissions {
                    path: path.clone(),
                    mode
                },
                "mode {mode:o}"
            );
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        load_key_file(&path).unwrap();
    }

    fn check_malformed(content: &[u8], reason: &'static str) {
        let d = dir();
        let path = d.path().join("host.key");
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap()
            .write_all(content)
            .unwrap();
        assert_eq!(
            load_key_file(&path).unwrap_err(),
            KeyError::Malformed {
                path: path.clone(),
                reason
            },
            "content {content:?}"
        );
    }

    #[test]
    fn load_refuses_malformed_content() {
        let wrong_len = "expected 64 hex characters and an optional newline";
        let not_hex = "expected lowercase hex characters";
        let too_long = "longer than 64 hex characters and a newline";
        let good = "0123456789abcdef".repeat(4);
        check_malformed(b"", wrong_len);
        check_malformed(b"\n", wrong_len);
        check_malformed(&good.as_bytes()[..63], wrong_len);
        check_malformed(format!("{good}\n\n").as_bytes(), too_long);
        check_malformed(format!("{good}0").as_bytes(), wrong_len);
        check_malformed(format!("{good}\r").as_bytes(), wrong_len);
        check_malformed(good.to_uppercase().as_bytes(), not_hex);
        check_malformed(format!("{}g", &good[..63]).as_bytes(), not_hex);
        check_malformed(format!(" {}", &good[..63]).as_bytes(), not_hex);
    }

    #[test]
    fn load_accepts_missing_newline() {
        let d = dir();
        let path = d.path().join("host.key");
        let key = generate_key_file(&path).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.trim_end()).unwrap();
        assert_eq!(load_key_file(&path).unwrap().public_key(), key.public_key());
    }

    #[test]
    fn load_refuses_a_directory_and_reports_missing_files() {
        let d = dir();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(
            load_key_file(d.path()).unwrap_err(),
            KeyError::Malformed {
                reason: "not a regular file",
                ..
            }
        ));
        assert!(matches!(
            load_key_file(d.path().join("missing")).unwrap_err(),
            KeyError::Io {
                kind: io::ErrorKind::NotFound,
                ..
            }
        ));
    }
}

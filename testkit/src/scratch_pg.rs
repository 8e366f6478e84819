//! A throwaway PostgreSQL server for tests and benchmarks: `initdb` and `postgres` on a
//! private temporary directory, listening only on a Unix socket there (no TCP port to
//! collide with), stopped and deleted when the handle drops.
//!
//! The server is started by a small `sh` supervisor in a process group of its own (so a
//! terminal's Ctrl-C does not reach it) whose stdin is a pipe from this process. Dropping
//! [`ScratchPg`] closes the pipe and waits for the supervisor to stop the server and delete
//! the directory; if this process dies instead, however it dies (even `kill -9`), the pipe
//! closes all the same. PostgreSQL refuses to run as root, so as root the server runs as the
//! `postgres` user (`setpriv`), which Debian's `postgresql` package creates.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// How long the server may take to start, and to stop when dropped.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// PostgreSQL's limit on identifiers, in bytes.
const MAX_NAME_LEN: usize = 63;

/// Why a scratch server could not be started or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScratchPgError {
    /// No `initdb` and `postgres` on `PATH` or in `/usr/lib/postgresql/*/bin`.
    #[error(
        "no PostgreSQL server binaries (initdb and postgres are looked up on PATH and in \
         /usr/lib/postgresql/*/bin; `apt-get install postgresql` provides them)"
    )]
    NoBinaries,
    /// Running as root, and there is no `postgres` user to run the server as.
    #[error(
        "running as root, PostgreSQL must run as another user, and there is no `postgres` \
         user (Debian's `apt-get install postgresql` creates it)"
    )]
    NoPostgresUser,
    /// A local file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `initdb` failed; its output.
    #[error("initdb failed: {0}")]
    Initdb(String),
    /// The server exited or did not become ready in time; its log.
    #[error("postgres did not start: {0}")]
    NotStarted(String),
    /// A database name that is not a short lower-case identifier.
    #[error("database name {0:?} is not 1 to 63 characters of [a-z0-9_] starting with a letter")]
    BadName(String),
    /// The server refused a connection or a statement.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// A throwaway PostgreSQL server for tests and benchmarks. While the value lives, the
/// server accepts connections at [`ScratchPg::admin_url`] (user `postgres`, trust auth);
/// dropping it stops the server and deletes its directory, on every path out of the owner.
#[derive(Debug)]
pub struct ScratchPg {
    /// URL of the maintenance database `postgres` (the socket directory in `?host=`).
    admin_url: String,
    /// The private directory holding the data directory, the socket and the log.
    dir: PathBuf,
    /// The supervisor and the write end of its stdin; closing it stops the server.
    supervisor: Option<(Child, ChildStdin)>,
}

impl ScratchPg {
    /// Starts a server. `durable` turns `fsync` and synchronous commit on (benchmarks
    /// comparing stores want PostgreSQL as durable as SQLite's `synchronous = FULL`); tests
    /// leave it off.
    pub fn start(durable: bool) -> Result<ScratchPg, ScratchPgError> {
        let bindir = find_bindir().ok_or(ScratchPgError::NoBinaries)?;
        let run_as = if is_root() {
            Some(postgres_user().ok_or(ScratchPgError::NoPostgresUser)?)
        } else {
            None
        };
        // In /tmp, not $TMPDIR: the server's user must reach it, and a Unix socket path
        // must be short.
        let dir = unique_dir()?;
        // From here on, dropping `scratch` removes the directory (and stops the server once
        // it runs), so every error below cleans up.
        let mut scratch = ScratchPg {
            admin_url: format!(
                "postgres://postgres@localhost:5432/postgres?host={}",
                dir.display()
            ),
            dir,
            supervisor: None,
        };
        let dir = scratch.dir.clone();
        let data = dir.join("data");
        let mut prefix: Vec<String> = Vec::new();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| io(format!("chown {}", dir.display()), e))?;
            prefix = vec![
                "setpriv".into(),
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".into(),
            ];
        }
        let command = |program: PathBuf| {
            let mut c = match prefix.split_first() {
                Some((first, rest)) => {
                    let mut c = Command::new(first);
                    c.args(rest).arg(program);
                    c
                }
                None => Command::new(program),
            };
            c.current_dir(&dir).env("LC_ALL", "C");
            c
        };
        let initdb = command(bindir.join("initdb"))
            .args(["--auth=trust", "--username=postgres", "--encoding=UTF8"])
            .args(["--no-sync", "--no-instructions", "-D"])
            .arg(&data)
            .output()
            .map_err(|e| io("running initdb".into(), e))?;
        if !initdb.status.success() {
            return Err(ScratchPgError::Initdb(format!(
                "{}{}",
                String::from_utf8_lossy(&initdb.stdout),
                String::from_utf8_lossy(&initdb.stderr)
            )));
        }
        let sync: &[&str] = if durable {
            &["-c", "fsync=on", "-c", "synchronous_commit=on"]
        } else {
            &[
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        };
        // `sh -c SCRIPT sh DIR POSTGRES ARGS...`: paths travel as arguments, never as script
        // text. The supervisor ignores SIGINT and waits for its stdin to close.
        let script = "dir=$1; shift\n\
                      trap '' INT\n\
                      \"$@\" >\"$dir/server.log\" 2>&1 & pid=$!\n\
                      read _ignored\n\
                      kill -INT $pid 2>/dev/null; wait $pid; rm -rf \"$dir\"\n";
        let mut argv: Vec<std::ffi::OsString> = prefix.iter().map(Into::into).collect();
        argv.push(bindir.join("postgres").into());
        let mut child = Command::new("sh")
            .args(["-c", script, "sh"])
            .arg(&dir)
            .args(argv)
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&dir)
            .args(["-p", "5432", "-c", "listen_addresses="])
            .args(sync)
            .args(["-c", "max_connections=200", "-c", "shared_buffers=128MB"])
            .current_dir(&dir)
            .env("LC_ALL", "C")
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io("starting postgres".into(), e))?;
        let Some(stdin) = child.stdin.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ScratchPgError::NotStarted("no stdin pipe".into()));
        };
        scratch.supervisor = Some((child, stdin));
        // Ready when the postmaster writes `ready` into its pid file.
        let pidfile = data.join("postmaster.pid");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if std::fs::read_to_string(&pidfile)
                .is_ok_and(|s| s.lines().any(|l| l.trim() == "ready"))
            {
                return Ok(scratch);
            }
            let exited = match &mut scratch.supervisor {
                Some((child, _)) => matches!(child.try_wait(), Ok(Some(_))),
                None => true,
            };
            if exited || Instant::now() > deadline {
                return Err(ScratchPgError::NotStarted(scratch.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The URL of the maintenance database (user `postgres`, which may create databases).
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// Creates an empty database `name` on this server; returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String, ScratchPgError> {
        create_database_at(&self.admin_url, name).await
    }

    /// The server's log so far (for error messages).
    fn log(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(self.dir.join("server.log"))
            .and_then(|mut f| f.read_to_string(&mut s));
        s
    }
}

impl Drop for ScratchPg {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.supervisor.take() {
            drop(stdin);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // The supervisor removes the directory; this covers a failed start.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Creates an empty database `name` on the server whose maintenance database is at
/// `admin_url` (a scratch server's or any other whose user may `CREATE DATABASE`); returns
/// the new database's URL. `name` must be a plain lower-case identifier.
pub async fn create_database_at(admin_url: &str, name: &str) -> Result<String, ScratchPgError> {
    let plain = name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !plain {
        return Err(ScratchPgError::BadName(name.to_owned()));
    }
    let mut c = PgConnection::connect(admin_url).await?;
    let created = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut c)
        .await;
    let _ = c.close().await;
    created?;
    Ok(with_database(admin_url, name))
}

/// `url` with its database replaced by `db` (the query, e.g. `?host=/socket/dir`, kept).
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base.get(authority_start..).and_then(|rest| rest.find('/')) {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

fn io(what: String, source: std::io::Error) -> ScratchPgError {
    ScratchPgError::Io { what, source }
}

/// A new, empty directory `/tmp/tally-pg-<pid>-<n>`, created by this call.
fn unique_dir() -> Result<PathBuf, ScratchPgError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut last = None;
    for n in 0..100u32 {
        let dir = PathBuf::from(format!(
            "/tmp/tally-pg-{}-{}",
            std::process::id(),
            nanos.wrapping_add(n)
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(io(format!("creating {}", dir.display()), e)),
        }
    }
    Err(io(
        "creating a directory in /tmp".into(),
        last.unwrap_or_else(|| std::io::Error::other("no free name")),
    ))
}

/// The directory holding `initdb` and `postgres`: `PATH` first, then Debian's versioned
/// directories (newest first).
fn find_bindir() -> Option<PathBuf> {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(path) = std::env::var_os("PATH")
        && let Some(d) = std::env::split_paths(&path).find(|d| has(d))
    {
        return Some(d);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

/// Whether the effective uid is 0, without `unsafe` or a libc dependency.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The `postgres` user's uid and gid, from `/etc/passwd`.
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"postgres") && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_keeps_the_socket_query() {
        let check = |url: &str, want: &str| assert_eq!(with_database(url, "d"), want);
        check(
            "postgres://postgres@localhost:5432/postgres?host=/tmp/x",
            "postgres://postgres@localhost:5432/d?host=/tmp/x",
        );
        check("postgres://u@h/db", "postgres://u@h/d");
        check("postgres://u@h", "postgres://u@h/d");
    }

    #[tokio::test]
    async fn create_database_refuses_names_that_are_not_plain() {
        for bad in ["", "Upper", "1abc", "a;drop", &"a".repeat(64)] {
            let got = create_database_at("postgres://nowhere.invalid/x", bad).await;
            assert!(
                matches!(&got, Err(ScratchPgError::BadName(n)) if n == bad),
                "{bad:?}: {got:?}"
            );
        }
    }

    /// The server answers on a fresh database, and dropping the handle stops it and
    /// deletes its directory (the socket with it).
    #[tokio::test]
    async fn scratch_server_serves_and_is_gone_after_drop() {
        let pg = ScratchPg::start(false).unwrap();
        let dir = pg.dir.clone();
        let url = pg.create_database("scratch_check").await.unwrap();
        let mut c = PgConnection::connect(&url).await.unwrap();
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(one, 1);
        c.close().await.unwrap();
        assert!(dir.join("data").is_dir());
        drop(pg);
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(PgConnection::connect(&url).await.is_err());
    }
}

//! The embedded store: one SQLite file in WAL mode.
//!
//! Durability: `synchronous = FULL`. In WAL mode `NORMAL` never corrupts the database, but
//! a power loss can drop the last commits, and an "accepted" answer is a promise that the
//! receipt survives any crash (DESIGN §3, durability). `FULL` syncs the WAL at every
//! commit; ingest commits once per submitted batch, so the cost is one fsync per request,
//! not per receipt. Readers never block the writer (WAL), and a busy timeout covers the
//! moments when a checkpoint of the WAL holds the lock.
//!
//! Checkpoints (copying the WAL back into the database file) run in a background task, not
//! in the writer's commit: measured with `tally bench ingest --receipts 300000`, a writer
//! that checkpointed every 1000 pages itself accepted 18.0k receipts/s, and 25.5k/s
//! without checkpointing.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row};
use tally_protocol::{ChannelId, Digest, PublicKey, ReceiptId};

use super::rows::{
    Columns, batch_record, channel_head, checkpoint_row, evidence_row, host_checkpoint_row,
    host_head, peaks_blob, pending_row, refused_row, stored_receipt,
};
use super::{
    BatchRecord, ChannelHead, Checkpoint, Evidence, Held, HostCheckpointRow, HostHead, LeafRow,
    Node, Pending, Placed, RefusedRow, Store, StoreError, StoreTx, StoredReceipt, int, seq_bytes,
};

/// The migrations, in order: (version, SQL). Applied in one transaction each, recorded in
/// `schema_version`.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (
        2,
        include_str!("../../migrations/sqlite/0002_exact_seqs_and_bounds.sql"),
    ),
    (
        3,
        include_str!("../../migrations/sqlite/0003_batches_share_tree_sizes.sql"),
    ),
    (
        4,
        include_str!("../../migrations/sqlite/0004_host_logs.sql"),
    ),
];

/// Most nodes looked up by one statement (two parameters each, well under SQLite's limit).
const MAX_NODE_LOOKUPS: usize = 256;

/// Most parameters one multi-row statement binds (SQLite allows 32,766).
const MAX_ROWS_PER_STATEMENT: usize = 1000;

/// WAL pages after which a committing writer checkpoints by itself: a backstop, reached
/// only if the background checkpointer falls behind (64 MiB of 4 KiB pages).
const WAL_BACKSTOP_PAGES: &str = "16384";

/// Pause of the background checkpointer once the WAL is fully copied back.
const CHECKPOINT_IDLE: Duration = Duration::from_millis(100);

/// Pause between checkpoint passes while the WAL still has frames to copy back.
const CHECKPOINT_BUSY: Duration = Duration::from_millis(5);

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// `None` for a store opened read-only: it writes nothing, so has no WAL to copy back.
    checkpointer: Option<Arc<Checkpointer>>,
}

/// Copies WAL frames back into the database file from a task of its own, so the writer's
/// commit (and with it every ingest request) never pays for a checkpoint; stopped when the
/// last handle to the store goes away.
#[derive(Debug)]
struct Checkpointer(tokio::task::AbortHandle);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs passive checkpoints (they never block readers or the writer) until aborted. A
/// pass that copies every frame lets the next writer restart the WAL from its beginning,
/// which keeps the file small.
async fn checkpoint_loop(pool: SqlitePool) {
    loop {
        let pause = match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&pool)
            .await
        {
            Ok(row) => {
                let log: i64 = row.try_get(1).unwrap_or(0);
                let done: i64 = row.try_get(2).unwrap_or(0);
                if done < log {
                    CHECKPOINT_BUSY
                } else {
                    CHECKPOINT_IDLE
                }
            }
            Err(e) if pool.is_closed() => {
                tracing::debug!(error = %e, "checkpointer stops: store closed");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint failed");
                CHECKPOINT_IDLE
            }
        };
        tokio::time::sleep(pause).await;
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and brings its schema up to
    /// date.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // Ingest's random-id index touches pages all over the file: keep 64 MiB of
            // pages per connection and read the rest through a 1 GiB mapping instead of
            // copying each page out of the OS cache with pread.
            .pragma("cache_size", "-65536")
            .pragma("mmap_size", "1073741824")
            .pragma("wal_autocheckpoint", WAL_BACKSTOP_PAGES)
            // When the WAL restarts, give back space beyond 64 MiB a burst left behind.
            .pragma("journal_size_limit", "67108864");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // An embedded connection cannot go stale; sqlx's default ping before each
            // use would add a round trip to the connection's worker thread per query.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        migrate(&pool).await?;
        let task = tokio::spawn(checkpoint_loop(pool.clone()));
        Ok(SqliteStore {
            pool,
            checkpointer: Some(Arc::new(Checkpointer(task.abort_handle()))),
        })
    }

    /// Opens an existing database file read-only, for an auditor: nothing is created,
    /// migrated or written (every write fails), and the schema must be exactly the one
    /// this build knows ([`StoreError::SchemaTooNew`] or [`StoreError::SchemaMismatch`]
    /// otherwise), so a reader never misreads another version's tables.
    pub async fn open_read_only(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("mmap_size", "1073741824");
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        let mut conn = pool.acquire().await?;
        let (current, known) = schema_versions(&mut conn).await?;
        drop(conn);
        if current < known {
            return Err(StoreError::SchemaMismatch {
                found: current,
                known,
            });
        }
        Ok(SqliteStore {
            pool,
            checkpointer: None,
        })
    }

    /// Closes the pool, waiting for connections to finish (for tests that reopen the file).
    pub async fn close(&self) {
        if let Some(c) = &self.checkpointer {
            c.0.abort();
        }
        self.pool.close().await;
    }
}

/// The schema version a database holds and the newest this build knows; a database
/// newer than this build is refused ([`StoreError::SchemaTooNew`]).
async fn schema_versions(conn: &mut sqlx::SqliteConnection) -> Result<(i64, i64), StoreError> {
    let current: Option<i64> = sqlx::query("SELECT MAX(version) FROM schema_version")
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    let current = current.unwrap_or(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    Ok((current, known))
}

async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .execute(&mut *tx)
        .await?;
    let (current, _) = schema_versions(&mut tx).await?;
    for &(version, sql) in MIGRATIONS {
        if version > current {
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_version (version) VALUES (?)")
                .bind(version)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Column codecs.

fn get_u64(row: &SqliteRow, col: &str) -> Result<u64, StoreError> {
    let v: i64 = row.try_get(col)?;
    u64::try_from(v).map_err(|_| StoreError::Corrupt("negative integer"))
}

fn get_32(row: &SqliteRow, col: &str) -> Result<[u8; 32], StoreError> {
    let v: Vec<u8> = row.try_get(col)?;
    v.try_into()
        .map_err(|_| StoreError::Corrupt("expected 32 bytes"))
}

fn get_u128(row: &SqliteRow, col: &str) -> Result<u128, StoreError> {
    let v: Vec<u8> = row.try_get(col)?;
    let b: [u8; 16] = v
        .try_into()
        .map_err(|_| StoreError::Corrupt("expected a 16-byte amount"))?;
    Ok(u128::from_be_bytes(b))
}

/// `n` comma-separated placeholders for an `IN (...)` list (only placeholders are ever
/// formatted into SQL).
fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

fn amount(v: u128) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

impl Columns for SqliteRow {
    fn u64(&self, col: &str) -> Result<u64, StoreError> {
        get_u64(self, col)
    }

    fn u128(&self, col: &str) -> Result<u128, StoreError> {
        get_u128(self, col)
    }

    fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.try_get(col)?)
    }

    fn text(&self, col: &str) -> Result<String, StoreError> {
        Ok(self.try_get(col)?)
    }

    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(col)?)
    }

    fn opt_u64(&self, col: &str) -> Result<Option<u64>, StoreError> {
        let n: Option<i64> = self.try_get(col)?;
        n.map(|n| u64::try_from(n).map_err(|_| StoreError::Corrupt("negative integer")))
            .transpose()
    }
}

// ---------------------------------------------------------------------------------------
// Queries shared by the pool and transactions.

const SELECT_HOST: &str = "SELECT key, last_seq, last_id, log_peaks FROM hosts WHERE key = ?";
const SELECT_CHANNEL: &str =
    "SELECT id, payer, host, model, last_seq, total, sealed_total FROM channels WHERE id = ?";

impl Store for SqliteStore {
    type Tx = SqliteTx;

    async fn begin(&self) -> Result<SqliteTx, StoreError> {
        // IMMEDIATE takes the write lock up front, so a transaction never fails half-way
        // on a lock upgrade.
        Ok(SqliteTx {
            tx: self.pool.begin_with("BEGIN IMMEDIATE").await?,
        })
    }

    async fn register_host(&self, key: &PublicKey, now: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO hosts (key, last_seq, last_id, registered_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(&key.0[..])
        .bind(seq_bytes(0).to_vec())
        .bind(&Digest::ZERO.0[..])
        .bind(int("registration time", now)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn tree_size(&self) -> Result<u64, StoreError> {
        // Leaves are contiguous from 0, so the size is the largest index plus one: one
        // lookup in the `leaf` index instead of a count over the table.
        let row = sqlx::query("SELECT COALESCE(MAX(leaf) + 1, 0) AS n FROM receipts")
            .fetch_one(&self.pool)
            .await?;
        get_u64(&row, "n")
    }

    async fn nodes(
        &self,
        coords: &[(u32, u64)],
    ) -> Result<HashMap<(u32, u64), Digest>, StoreError> {
        // One statement for the whole proof: a round trip to SQLite's worker thread costs
        // more than the lookups themselves. Only placeholders are formatted into the SQL.
        let mut out = HashMap::with_capacity(coords.len());
        for chunk in coords.chunks(MAX_NODE_LOOKUPS) {
            let tuples = vec!["(?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT level, idx, hash FROM nodes WHERE (level, idx) IN (VALUES {tuples})"
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for &(level, index) in chunk {
                q = q.bind(i64::from(level)).bind(int("node index", index)?);
            }
            for row in q.fetch_all(&self.pool).await? {
                let level = u32::try_from(get_u64(&row, "level")?)
                    .map_err(|_| StoreError::Corrupt("node level"))?;
                out.insert(
                    (level, get_u64(&row, "idx")?),
                    Digest(get_32(&row, "hash")?),
                );
            }
        }
        Ok(out)
    }

    async fn receipt(&self, id: &ReceiptId) -> Result<Option<StoredReceipt>, StoreError> {
        let row = sqlx::query("SELECT id, leaf, bytes, accepted_at FROM receipts WHERE id = ?")
            .bind(&id.0[..])
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(stored_receipt).transpose()
    }

    async fn receipt_with_latest_size(
        &self,
        id: &ReceiptId,
    ) -> Result<Option<(StoredReceipt, Option<u64>)>, StoreError> {
        let row = sqlx::query(
            "SELECT id, leaf, bytes, accepted_at, \
             (SELECT size FROM checkpoints ORDER BY size DESC LIMIT 1) AS latest \
             FROM receipts WHERE id = ?",
        )
        .bind(&id.0[..])
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| Ok((stored_receipt(&row)?, row.opt_u64("latest")?)))
            .transpose()
    }

    async fn leaves(&self, start: u64, end: u64) -> Result<Vec<StoredReceipt>, StoreError> {
        let (Ok(start), Ok(end)) = (i64::try_from(start), i64::try_from(end)) else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(
            "SELECT id, leaf, bytes, accepted_at FROM receipts \
             WHERE leaf >= ? AND leaf < ? ORDER BY leaf",
        )
        .bind(start)
        .bind(end)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_receipt).collect()
    }

    async fn host(&self, key: &PublicKey) -> Result<Option<HostHead>, StoreError> {
        let row = sqlx::query(SELECT_HOST)
            .bind(&key.0[..])
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(host_head).transpose()
    }

    async fn channel(&self, id: &ChannelId) -> Result<Option<ChannelHead>, StoreError> {
        let row = sqlx::query(SELECT_CHANNEL)
            .bind(&id.0.0[..])
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(channel_head).transpose()
    }

    async fn latest_receipts(
        &self,
        channels: &[ChannelId],
        size: u64,
    ) -> Result<HashMap<ChannelId, ReceiptId>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut found = HashMap::with_capacity(channels.len());
        for c in channels {
            let row = sqlx::query(
                "SELECT id FROM receipts WHERE channel = ? AND leaf < ? \
                 ORDER BY channel_seq DESC LIMIT 1",
            )
            .bind(&c.0.0[..])
            .bind(int("tree size", size)?)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(row) = row {
                found.insert(*c, Digest(get_32(&row, "id")?));
            }
        }
        Ok(found)
    }

    async fn batch(&self, n: u64) -> Result<Option<BatchRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT n, header, signature, header_hash, tree_size, root, created_at \
             FROM batches WHERE n = ?",
        )
        .bind(int("batch number", n)?)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(batch_record).transpose()
    }

    async fn checkpoint(&self, size: Option<u64>) -> Result<Option<Checkpoint>, StoreError> {
        let row = match size {
            Some(size) => {
                sqlx::query("SELECT size, root, note, created_at FROM checkpoints WHERE size = ?")
                    .bind(int("tree size", size)?)
                    .fetch_optional(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(
                    "SELECT size, root, note, created_at FROM checkpoints \
                     ORDER BY size DESC LIMIT 1",
                )
                .fetch_optional(&self.pool)
                .await?
            }
        };
        row.as_ref().map(checkpoint_row).transpose()
    }

    async fn checkpoints(
        &self,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Checkpoint>, StoreError> {
        let after = match after {
            Some(size) => int("tree size", size)?,
            None => -1,
        };
        let rows = sqlx::query(
            "SELECT size, root, note, created_at FROM checkpoints WHERE size > ? \
             ORDER BY size LIMIT ?",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(checkpoint_row).collect()
    }

    async fn evidence(&self, after: u64, limit: u32) -> Result<Vec<(u64, Evidence)>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, kind, host, host_seq, existing, receipt_id, bytes, other_bytes, recorded_at \
             FROM evidence WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(int("evidence cursor", after)?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((get_u64(r, "seq")?, evidence_row(r)?)))
            .collect()
    }

    async fn host_receipts(
        &self,
        host: &PublicKey,
        from: u64,
        limit: u32,
    ) -> Result<Vec<(u64, StoredReceipt)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, leaf, bytes, accepted_at, host_seq FROM receipts \
             WHERE host = ? AND host_seq >= ? ORDER BY host_seq LIMIT ?",
        )
        .bind(&host.0[..])
        .bind(seq_bytes(from).to_vec())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((Columns::seq(r, "host_seq")?, stored_receipt(r)?)))
            .collect()
    }

    async fn host_refused(
        &self,
        host: &PublicKey,
        from: u64,
        limit: u32,
    ) -> Result<Vec<RefusedRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT host, host_seq, id, bytes, reason, recorded_at FROM host_refused              WHERE host = ? AND host_seq >= ? ORDER BY host_seq LIMIT ?",
        )
        .bind(&host.0[..])
        .bind(seq_bytes(from).to_vec())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(refused_row).collect()
    }

    async fn host_checkpoints(
        &self,
        host: &PublicKey,
        from: u64,
        limit: u32,
    ) -> Result<Vec<HostCheckpointRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT host, size, root, signature, receipt_id, recorded_at FROM host_checkpoints              WHERE host = ? AND size >= ? ORDER BY size LIMIT ?",
        )
        .bind(&host.0[..])
        .bind(seq_bytes(from).to_vec())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(host_checkpoint_row).collect()
    }

    async fn pending_count(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM pending")
            .fetch_one(&self.pool)
            .await?;
        get_u64(&row, "n")
    }
}

/// A write transaction on a [`SqliteStore`].
#[derive(Debug)]
pub struct SqliteTx {
    tx: sqlx::Transaction<'static, Sqlite>,
}

impl StoreTx for SqliteTx {
    async fn tree_size(&mut self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(leaf) + 1, 0) AS n FROM receipts")
            .fetch_one(&mut *self.tx)
            .await?;
        get_u64(&row, "n")
    }

    async fn receipt_leaf(&mut self, id: &ReceiptId) -> Result<Option<u64>, StoreError> {
        let row = sqlx::query("SELECT leaf FROM receipts WHERE id = ?")
            .bind(&id.0[..])
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| get_u64(&r, "leaf")).transpose()
    }

    async fn placed(
        &mut self,
        host: &PublicKey,
        host_seq: u64,
    ) -> Result<Option<Placed>, StoreError> {
        let row = sqlx::query(
            "SELECT id, bytes, leaf, NULL AS reason FROM receipts WHERE host = ? AND host_seq = ?              UNION ALL SELECT id, bytes, NULL AS leaf, reason FROM host_refused              WHERE host = ? AND host_seq = ? LIMIT 1",
        )
        .bind(&host.0[..])
        .bind(seq_bytes(host_seq).to_vec())
        .bind(&host.0[..])
        .bind(seq_bytes(host_seq).to_vec())
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| {
            Ok(Placed {
                id: Digest(get_32(&r, "id")?),
                bytes: r.bytes("bytes")?,
                leaf: r.opt_u64("leaf")?,
                reason: r.opt_text("reason")?,
            })
        })
        .transpose()
    }

    async fn bundle(&mut self, id: &ReceiptId) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query(
            "SELECT bytes FROM receipts WHERE id = ?              UNION ALL SELECT bytes FROM host_refused WHERE id = ? LIMIT 1",
        )
        .bind(&id.0[..])
        .bind(&id.0[..])
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| r.bytes("bytes")).transpose()
    }

    async fn future_checkpoints(
        &mut self,
        hosts: &[PublicKey],
    ) -> Result<Vec<HostCheckpointRow>, StoreError> {
        let mut out = Vec::new();
        for chunk in hosts.chunks(MAX_ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT c.host, c.size, c.root, c.signature, c.receipt_id, c.recorded_at                  FROM host_checkpoints c JOIN hosts h ON h.key = c.host                  WHERE c.host IN ({}) AND c.size > h.last_seq",
                marks(chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for k in chunk {
                q = q.bind(k.0.to_vec());
            }
            for row in q.fetch_all(&mut *self.tx).await? {
                out.push(host_checkpoint_row(&row)?);
            }
        }
        Ok(out)
    }

    async fn put_host_checkpoints(&mut self, rows: &[HostCheckpointRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks(MAX_ROWS_PER_STATEMENT / 6) {
            let marks = vec!["(?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "INSERT INTO host_checkpoints (host, size, root, signature, receipt_id,                  recorded_at) VALUES {marks} ON CONFLICT (host, size) DO NOTHING"
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for c in chunk {
                q = q
                    .bind(c.host.0.to_vec())
                    .bind(seq_bytes(c.size).to_vec())
                    .bind(c.root.0.to_vec())
                    .bind(c.signature.0.to_vec())
                    .bind(c.receipt_id.0.to_vec())
                    .bind(int("record time", c.recorded_at)?);
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    async fn max_host_checkpoint(&mut self) -> Result<u64, StoreError> {
        // Sizes are 8-byte big-endian: bytewise order is numeric order.
        let row = sqlx::query("SELECT size FROM host_checkpoints ORDER BY size DESC LIMIT 1")
            .fetch_optional(&mut *self.tx)
            .await?;
        match row.map(|r| r.bytes("size")).transpose()? {
            None => Ok(0),
            Some(b) => {
                let b: [u8; 8] = b
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("expected an 8-byte size"))?;
                Ok(u64::from_be_bytes(b))
            }
        }
    }

    async fn refuse(&mut self, rows: &[RefusedRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks(MAX_ROWS_PER_STATEMENT / 6) {
            let marks = vec!["(?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "INSERT INTO host_refused (host, host_seq, id, bytes, reason, recorded_at)                  VALUES {marks}"
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for r in chunk {
                q = q
                    .bind(r.host.0.to_vec())
                    .bind(seq_bytes(r.host_seq).to_vec())
                    .bind(r.id.0.to_vec())
                    .bind(r.bytes.clone())
                    .bind(r.reason.clone())
                    .bind(int("record time", r.recorded_at)?);
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    async fn host(&mut self, key: &PublicKey) -> Result<Option<HostHead>, StoreError> {
        let row = sqlx::query(SELECT_HOST)
            .bind(&key.0[..])
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(host_head).transpose()
    }

    async fn channel(&mut self, id: &ChannelId) -> Result<Option<ChannelHead>, StoreError> {
        let row = sqlx::query(SELECT_CHANNEL)
            .bind(&id.0.0[..])
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(channel_head).transpose()
    }

    async fn payer_debited(&mut self, payer: &PublicKey) -> Result<u128, StoreError> {
        let row = sqlx::query("SELECT debited FROM payers WHERE key = ?")
            .bind(&payer.0[..])
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map_or(Ok(0), |r| get_u128(&r, "debited"))
    }

    async fn hosts(
        &mut self,
        keys: &[PublicKey],
    ) -> Result<HashMap<PublicKey, HostHead>, StoreError> {
        let mut out = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(MAX_ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT key, last_seq, last_id, log_peaks FROM hosts WHERE key IN ({})",
                marks(chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for k in chunk {
                q = q.bind(k.0.to_vec());
            }
            for row in q.fetch_all(&mut *self.tx).await? {
                let h = host_head(&row)?;
                out.insert(h.key, h);
            }
        }
        Ok(out)
    }

    async fn channels(
        &mut self,
        ids: &[ChannelId],
    ) -> Result<HashMap<ChannelId, ChannelHead>, StoreError> {
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT id, payer, host, model, last_seq, total, sealed_total FROM channels \
                 WHERE id IN ({})",
                marks(chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id.0.0.to_vec());
            }
            for row in q.fetch_all(&mut *self.tx).await? {
                let c = channel_head(&row)?;
                out.insert(c.id, c);
            }
        }
        Ok(out)
    }

    async fn payers_debited(
        &mut self,
        payers: &[PublicKey],
    ) -> Result<HashMap<PublicKey, u128>, StoreError> {
        let mut out = HashMap::with_capacity(payers.len());
        for chunk in payers.chunks(MAX_ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT key, debited FROM payers WHERE key IN ({})",
                marks(chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for k in chunk {
                q = q.bind(k.0.to_vec());
            }
            for row in q.fetch_all(&mut *self.tx).await? {
                out.insert(PublicKey(get_32(&row, "key")?), get_u128(&row, "debited")?);
            }
        }
        Ok(out)
    }

    async fn lowest_pending(
        &mut self,
        hosts: &[PublicKey],
    ) -> Result<HashMap<PublicKey, u64>, StoreError> {
        let mut out = HashMap::new();
        for chunk in hosts.chunks(MAX_ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT host, MIN(host_seq) AS seq FROM pending WHERE host IN ({}) GROUP BY host",
                marks(chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for k in chunk {
                q = q.bind(k.0.to_vec());
            }
            for row in q.fetch_all(&mut *self.tx).await? {
                out.insert(PublicKey(get_32(&row, "host")?), Columns::seq(&row, "seq")?);
            }
        }
        Ok(out)
    }

    async fn receipt_leaves(
        &mut self,
        ids: &[ReceiptId],
    ) -> Result<HashMap<ReceiptId, u64>, StoreError> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(MAX_ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT id, leaf FROM receipts WHERE id IN ({})",
                marks(chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id.0.to_vec());
            }
            for row in q.fetch_all(&mut *self.tx).await? {
                out.insert(Digest(get_32(&row, "id")?), get_u64(&row, "leaf")?);
            }
        }
        Ok(out)
    }

    async fn append(&mut self, receipts: &[LeafRow], nodes: &[Node]) -> Result<(), StoreError> {
        // Multi-row statements: one round trip to SQLite's worker per chunk, not per row.
        for chunk in receipts.chunks(MAX_ROWS_PER_STATEMENT / 10) {
            let rows = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "INSERT INTO receipts (id, leaf, bytes, host, host_seq, channel, channel_seq, \
                 channel_total, fee, accepted_at) VALUES {rows}"
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for r in chunk {
                q = q
                    .bind(r.id.0.to_vec())
                    .bind(int("leaf index", r.leaf)?)
                    .bind(r.bytes.clone())
                    .bind(r.host.0.to_vec())
                    .bind(seq_bytes(r.host_seq).to_vec())
                    .bind(r.channel.0.0.to_vec())
                    .bind(seq_bytes(r.channel_seq).to_vec())
                    .bind(amount(r.channel_total))
                    .bind(amount(r.fee))
                    .bind(int("acceptance time", r.accepted_at)?);
            }
            q.execute(&mut *self.tx).await?;
        }
        for chunk in nodes.chunks(MAX_ROWS_PER_STATEMENT / 3) {
            let rows = vec!["(?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!("INSERT INTO nodes (level, idx, hash) VALUES {rows}");
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for &(level, index, hash) in chunk {
                q = q
                    .bind(i64::from(level))
                    .bind(int("node index", index)?)
                    .bind(hash.0.to_vec());
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    async fn put_heads(
        &mut self,
        hosts: &[HostHead],
        channels: &[ChannelHead],
        payers: &[(PublicKey, u128)],
    ) -> Result<(), StoreError> {
        for h in hosts {
            sqlx::query("UPDATE hosts SET last_seq = ?, last_id = ?, log_peaks = ? WHERE key = ?")
                .bind(seq_bytes(h.last_seq).to_vec())
                .bind(&h.last_id.0[..])
                .bind(peaks_blob(&h.peaks))
                .bind(&h.key.0[..])
                .execute(&mut *self.tx)
                .await?;
        }
        for chunk in channels.chunks(MAX_ROWS_PER_STATEMENT / 7) {
            let rows = vec!["(?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "INSERT INTO channels (id, payer, host, model, last_seq, total, sealed_total) \
                 VALUES {rows} ON CONFLICT (id) DO UPDATE SET \
                 last_seq = excluded.last_seq, total = excluded.total"
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for c in chunk {
                q = q
                    .bind(c.id.0.0.to_vec())
                    .bind(c.payer.0.to_vec())
                    .bind(c.host.0.to_vec())
                    .bind(c.model.0.to_vec())
                    .bind(seq_bytes(c.last_seq).to_vec())
                    .bind(amount(c.total))
                    .bind(amount(c.sealed_total));
            }
            q.execute(&mut *self.tx).await?;
        }
        for chunk in payers.chunks(MAX_ROWS_PER_STATEMENT / 2) {
            let rows = vec!["(?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "INSERT INTO payers (key, debited) VALUES {rows} \
                 ON CONFLICT (key) DO UPDATE SET debited = excluded.debited"
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (key, debited) in chunk {
                q = q.bind(key.0.to_vec()).bind(amount(*debited));
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    async fn hold(&mut self, p: &Pending, room: bool) -> Result<Held, StoreError> {
        let at = seq_bytes(p.host_seq).to_vec();
        let held = sqlx::query("SELECT id, bytes FROM pending WHERE host = ? AND host_seq = ?")
            .bind(&p.host.0[..])
            .bind(at.clone())
            .fetch_optional(&mut *self.tx)
            .await?;
        if let Some(row) = held {
            let id = Digest(get_32(&row, "id")?);
            return Ok(if id == p.id {
                Held::Already
            } else {
                Held::Conflict(id, row.bytes("bytes")?)
            });
        }
        if !room {
            return Ok(Held::Full);
        }
        sqlx::query(
            "INSERT INTO pending (id, host, host_seq, bytes, received_at, deadline, reason) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&p.id.0[..])
        .bind(&p.host.0[..])
        .bind(at)
        .bind(&p.bytes[..])
        .bind(int("arrival time", p.received_at)?)
        .bind(int("deadline", p.deadline)?)
        .bind(p.reason.clone())
        .execute(&mut *self.tx)
        .await?;
        Ok(Held::New)
    }

    async fn pending_count_of(&mut self, host: &PublicKey) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM pending WHERE host = ?")
            .bind(&host.0[..])
            .fetch_one(&mut *self.tx)
            .await?;
        get_u64(&row, "n")
    }

    async fn take_pending(
        &mut self,
        host: &PublicKey,
        host_seq: u64,
    ) -> Result<Option<Pending>, StoreError> {
        let rows = sqlx::query(
            "DELETE FROM pending WHERE host = ? AND host_seq = ? \
             RETURNING id, host, host_seq, bytes, received_at, deadline, reason",
        )
        .bind(&host.0[..])
        .bind(seq_bytes(host_seq).to_vec())
        .fetch_all(&mut *self.tx)
        .await?;
        // One row per position (UNIQUE (host, host_seq)).
        rows.first().map(pending_row).transpose()
    }

    async fn expire_pending(&mut self, now: u64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM pending WHERE deadline < ?")
            .bind(int("time", now)?)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected())
    }

    async fn pending_count(&mut self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM pending")
            .fetch_one(&mut *self.tx)
            .await?;
        get_u64(&row, "n")
    }

    async fn record_evidence(&mut self, e: &Evidence) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO evidence (kind, host, host_seq, existing, receipt_id, bytes, \
             other_bytes, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(e.kind.as_str())
        .bind(&e.host.0[..])
        .bind(seq_bytes(e.host_seq).to_vec())
        .bind(e.existing.map(|d| d.0.to_vec()))
        .bind(&e.receipt_id.0[..])
        .bind(&e.bytes[..])
        .bind(e.other.clone())
        .bind(int("record time", e.recorded_at)?)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn last_batch(&mut self) -> Result<Option<BatchRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT n, header, signature, header_hash, tree_size, root, created_at \
             FROM batches ORDER BY n DESC LIMIT 1",
        )
        .fetch_optional(&mut *self.tx)
        .await?;
        row.as_ref().map(batch_record).transpose()
    }

    async fn unsealed_channels(&mut self) -> Result<Vec<(ChannelId, u128, u128)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, total, sealed_total FROM channels WHERE total != sealed_total \
             ORDER BY id",
        )
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    ChannelId(Digest(get_32(r, "id")?)),
                    get_u128(r, "total")?,
                    get_u128(r, "sealed_total")?,
                ))
            })
            .collect()
    }

    async fn seal(
        &mut self,
        b: &BatchRecord,
        c: &Checkpoint,
        sealed: &[(ChannelId, u128)],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO batches (n, header, signature, header_hash, tree_size, root, \
             created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(int("batch number", b.n)?)
        .bind(&b.header[..])
        .bind(&b.signature.0[..])
        .bind(&b.header_hash.0[..])
        .bind(int("tree size", b.tree_size)?)
        .bind(&b.root.0[..])
        .bind(int("seal time", b.created_at)?)
        .execute(&mut *self.tx)
        .await?;
        sqlx::query(
            "INSERT INTO checkpoints (size, root, note, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (size) DO NOTHING",
        )
        .bind(int("tree size", c.size)?)
        .bind(&c.root.0[..])
        .bind(c.note.as_str())
        .bind(int("seal time", c.created_at)?)
        .execute(&mut *self.tx)
        .await?;
        for (id, total) in sealed {
            sqlx::query("UPDATE channels SET sealed_total = ? WHERE id = ?")
                .bind(amount(*total))
                .bind(&id.0.0[..])
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    async fn discard_batches(&mut self, from: u64) -> Result<Vec<BatchRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT n, header, signature, header_hash, tree_size, root, created_at \
             FROM batches WHERE n >= ? ORDER BY n",
        )
        .bind(int("batch", from)?)
        .fetch_all(&mut *self.tx)
        .await?;
        let discarded = rows
            .iter()
            .map(batch_record)
            .collect::<Result<Vec<_>, _>>()?;
        sqlx::query("DELETE FROM batches WHERE n >= ?")
            .bind(int("batch", from)?)
            .execute(&mut *self.tx)
            .await?;
        Ok(discarded)
    }

    async fn reset_sealed(&mut self, sealed: &[(ChannelId, u128)]) -> Result<(), StoreError> {
        for (id, total) in sealed {
            sqlx::query("UPDATE channels SET sealed_total = ? WHERE id = ?")
                .bind(amount(*total))
                .bind(&id.0.0[..])
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

    use super::*;

    /// A 32-byte blob literal of `b`s.
    fn blob(b: u8) -> String {
        format!("X'{}'", format!("{b:02x}").repeat(32))
    }

    /// A database written by version 1 of the schema (sequence numbers as INTEGER, several
    /// held-back receipts and forks at one position) is migrated to version 2 with every
    /// value kept and the duplicates per position reduced to the first.
    #[tokio::test]
    async fn a_version_1_database_migrates_with_its_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true),
            )
            .await
            .unwrap();
        let (host, id, channel, other) = (blob(2), blob(1), blob(3), blob(4));
        let amount = format!("X'{}'", "00".repeat(15) + "2a");
        let v1 = format!(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             {init}
             INSERT INTO schema_version VALUES (1);
             INSERT INTO receipts VALUES (0, {id}, X'aa', {host}, 7, {channel}, 9223372036854775807, {amount}, {amount}, 5);
             INSERT INTO hosts VALUES ({host}, 7, {id}, 1);
             INSERT INTO channels VALUES ({channel}, {other}, {host}, {other}, 9223372036854775807, {amount}, {amount});
             INSERT INTO pending VALUES ({other}, {host}, 9, X'bb', 11, 100);
             INSERT INTO pending VALUES ({channel}, {host}, 9, X'cc', 10, 100);
             INSERT INTO pending VALUES ({id}, {host}, 10, X'dd', 12, 100);
             INSERT INTO evidence (kind, host, host_seq, existing, receipt_id, bytes, recorded_at)
               VALUES ('fork', {host}, 3, NULL, {other}, X'01', 1);
             INSERT INTO evidence (kind, host, host_seq, existing, receipt_id, bytes, recorded_at)
               VALUES ('fork', {host}, 3, NULL, {channel}, X'02', 2);
             INSERT INTO evidence (kind, host, host_seq, existing, receipt_id, bytes, recorded_at)
               VALUES ('fork', {host}, 4, {id}, {id}, X'03', 3);",
            init = MIGRATIONS[0].1
        );
        sqlx::raw_sql(AssertSqlSafe(v1))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;

        let store = SqliteStore::open(&path).await.unwrap();
        let key = PublicKey([2; 32]);
        // A version 1 host head (a hash chain, no host log) migrates, but is never
        // continued: it has no host-log frontier (docs/protocol.md §9).
        assert!(matches!(
            store.host(&key).await,
            Err(StoreError::Corrupt(_))
        ));
        let c = store
            .channel(&ChannelId(Digest([3; 32])))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((c.last_seq, c.total), (i64::MAX as u64, 42));
        let mine = store.host_receipts(&key, 0, 10).await.unwrap();
        assert_eq!(mine.len(), 1);
        assert_eq!((mine[0].0, mine[0].1.leaf), (7, 0));
        assert_eq!(store.pending_count().await.unwrap(), 2);
        let mut tx = store.begin().await.unwrap();
        let first = tx.take_pending(&key, 9).await.unwrap().unwrap();
        assert_eq!(first.bytes, vec![0xcc], "the first to arrive is kept");
        drop(tx);
        let ev = store.evidence(0, 10).await.unwrap();
        let kept: Vec<_> = ev
            .iter()
            .map(|(n, e)| (*n, e.host_seq, e.bytes.clone()))
            .collect();
        assert_eq!(kept, vec![(1, 3, vec![1]), (3, 4, vec![3])]);
        store.close().await;
    }

    /// Writes stay in the WAL until a checkpoint copies them into the main file; the
    /// writer's own backstop is far above what is written here, so only the background
    /// checkpointer can make the main file grow.
    #[tokio::test]
    async fn the_background_checkpointer_copies_the_wal_into_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.db");
        let store = SqliteStore::open(&path).await.unwrap();
        tokio::time::sleep(CHECKPOINT_IDLE * 3).await;
        let before = std::fs::metadata(&path).unwrap().len();
        sqlx::query("CREATE TABLE t (b BLOB NOT NULL)")
            .execute(&store.pool)
            .await
            .unwrap();
        for _ in 0..4 {
            sqlx::query("INSERT INTO t (b) VALUES (zeroblob(1048576))")
                .execute(&store.pool)
                .await
                .unwrap();
        }
        let mut after = before;
        for _ in 0..50 {
            tokio::time::sleep(CHECKPOINT_IDLE).await;
            after = std::fs::metadata(&path).unwrap().len();
            if after >= before + 4 * 1_048_576 {
                break;
            }
        }
        assert!(
            after >= before + 4 * 1_048_576,
            "main file {before} -> {after} bytes: nothing was checkpointed"
        );
        store.close().await;
    }

    /// A version-1 database (tree sizes unique per batch) migrates to version 2 keeping its
    /// batches, after which two batches may share a tree size (a split period).
    #[tokio::test]
    async fn version_1_databases_migrate_and_then_batches_share_tree_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let v1 = SqlitePool::connect(&url).await.unwrap();
        sqlx::raw_sql(MIGRATIONS[0].1).execute(&v1).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);\
             INSERT INTO schema_version (version) VALUES (1);\
             INSERT INTO batches VALUES (1, x'01', x'02', x'03', 7, x'04', 5);",
        )
        .execute(&v1)
        .await
        .unwrap();
        let refused =
            sqlx::query("INSERT INTO batches VALUES (2, x'01', x'02', x'03', 7, x'04', 6)")
                .execute(&v1)
                .await;
        assert!(refused.is_err(), "version 1 keeps tree sizes unique");
        v1.close().await;

        let store = SqliteStore::open(&path).await.unwrap();
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM schema_version ORDER BY version")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_eq!(versions, [1, 2, 3, 4]);
        let kept: (i64, i64) = sqlx::query_as("SELECT n, tree_size FROM batches")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(kept, (1, 7));
        sqlx::query("INSERT INTO batches VALUES (2, x'01', x'02', x'03', 7, x'04', 6)")
            .execute(&store.pool)
            .await
            .unwrap();
        store.close().await;
    }
}

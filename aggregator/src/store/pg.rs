//! The shared store: PostgreSQL, for several aggregator processes on several machines.
//!
//! Concurrency: every write transaction starts by locking the one row of `log_head`
//! (`SELECT ... FOR UPDATE`), so writers in all processes take turns exactly as SQLite's
//! `BEGIN IMMEDIATE` makes them take turns in one file. Leaf indices are allocated from the
//! size read under that lock, and [`StoreTx::append`] refuses rows that do not continue it
//! ([`StoreError::LogMoved`]): two processes can never write the same leaf or leave a gap.
//! Sealing also takes a transaction-scoped advisory lock ([`PgStore::SEALER_LOCK`], waiting
//! at most a second): exactly one sealer at a time, visible in `pg_locks`, and an operator
//! can pause sealing by holding that lock (seals then fail with [`StoreError::SealerBusy`]
//! after their one-second wait, during which ingest waits too).
//!
//! Isolation is PostgreSQL's default, READ COMMITTED: each statement after the head lock
//! sees everything committed by the writers that held it before.
//!
//! Durability is the server's: with its defaults (`fsync`, `synchronous_commit = on`) a
//! commit returns only once the WAL is on disk.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, Postgres};
use tally_protocol::{ChannelId, Digest, PublicKey, ReceiptId};

use super::rows::{
    Columns, batch_record, channel_head, checkpoint_row, evidence_row, host_checkpoint_row,
    host_head, peaks_blob, pending_row, refused_row, stored_receipt,
};
use super::{
    BatchRecord, ChannelHead, Checkpoint, Evidence, Held, HostCheckpointRow, HostHead, LeafRow,
    Node, Pending, Placed, RefusedRow, Store, StoreError, StoreTx, StoredReceipt, int, seq_bytes,
};

/// The migrations, in order: (version, SQL). Applied in one transaction each (under an
/// advisory lock, so processes starting together migrate once), recorded in
/// `schema_version`.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (
        2,
        include_str!("../../migrations/postgres/0002_exact_seqs_and_bounds.sql"),
    ),
    (
        3,
        include_str!("../../migrations/postgres/0003_batches_share_tree_sizes.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_host_logs.sql"),
    ),
];

/// The advisory lock held while migrating ("tally-mi" in ASCII).
const MIGRATE_LOCK: i64 = 0x7461_6c6c_792d_6d69;

/// How long a seal waits for the sealer lock before giving up with
/// [`StoreError::SealerBusy`] (a PostgreSQL interval).
const SEALER_LOCK_WAIT: &str = "1s";

/// SQLSTATE `lock_not_available`: a lock wait ran past `lock_timeout`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// Most rows one statement sends (arrays bound as parameters: the limit is payload size,
/// about 1 KiB per receipt).
const MAX_ROWS_PER_STATEMENT: usize = 1000;

/// The PostgreSQL implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

/// How long a pooled connection may sit idle before it is pinged on its next use.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(5);

impl PgStore {
    /// The transaction-scoped advisory lock every seal takes ("tally-se" in ASCII). Hold it
    /// from another session (`SELECT pg_advisory_lock(...)`) and seals fail with
    /// [`StoreError::SealerBusy`] after a one-second wait, while ingest goes on.
    pub const SEALER_LOCK: i64 = 0x7461_6c6c_792d_7365;

    /// Connects to the database at `url` (`postgres://user@host/db`, or a Unix socket with
    /// `?host=/path`) with a pool of `max_connections` (at least 2: a writer may read the
    /// log through the pool while its transaction holds a connection) and brings the schema
    /// up to date.
    pub async fn connect(url: &str, max_connections: u32) -> Result<PgStore, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            // sqlx pings every connection it hands out by default: one more round trip
            // per query. Ping only one that sat idle long enough for the server or a
            // proxy to have dropped it; a connection that died faster fails one request,
            // whose transaction rolls back and whose client retries.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await?;
        migrate(&pool).await?;
        Ok(PgStore { pool })
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The connection pool, for tools and tests that inspect the database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATE_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        .execute(&mut *tx)
        .await?;
    let current: Option<i64> = sqlx::query("SELECT MAX(version) FROM schema_version")
        .fetch_one(&mut *tx)
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
    for &(version, sql) in MIGRATIONS {
        if version > current {
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
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

fn get_u64(row: &PgRow, col: &str) -> Result<u64, StoreError> {
    let v: i64 = row.try_get(col)?;
    u64::try_from(v).map_err(|_| StoreError::Corrupt("negative integer"))
}

fn get_32(row: &PgRow, col: &str) -> Result<[u8; 32], StoreError> {
    let v: Vec<u8> = row.try_get(col)?;
    v.try_into()
        .map_err(|_| StoreError::Corrupt("expected 32 bytes"))
}

/// Amounts travel as decimal text (`$n::numeric` in, `col::text` out): sqlx has no u128
/// NUMERIC codec without an extra decimal crate, and text is exact.
fn amount(v: u128) -> String {
    v.to_string()
}

fn get_u128(row: &PgRow, col: &str) -> Result<u128, StoreError> {
    let v: String = row.try_get(col)?;
    u128::from_str(&v).map_err(|_| StoreError::Corrupt("amount outside u128"))
}

impl Columns for PgRow {
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

const SELECT_HOST: &str = "SELECT key, last_seq, last_id, log_peaks FROM hosts WHERE key = $1";
const SELECT_CHANNEL: &str = "SELECT id, payer, host, model, last_seq, total::text AS total, \
     sealed_total::text AS sealed_total FROM channels WHERE id = $1";
const SELECT_BATCH: &str =
    "SELECT n, header, signature, header_hash, tree_size, root, created_at FROM batches";

impl Store for PgStore {
    type Tx = PgTx;

    async fn begin(&self) -> Result<PgTx, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The writers' turn: held until commit or rollback.
        let row = sqlx::query("SELECT size FROM log_head WHERE id = 1 FOR UPDATE")
            .fetch_one(&mut *tx)
            .await?;
        let size = get_u64(&row, "size")?;
        Ok(PgTx { tx, size })
    }

    async fn register_host(&self, key: &PublicKey, now: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO hosts (key, last_seq, last_id, registered_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(&key.0[..])
        .bind(seq_bytes(0))
        .bind(&Digest::ZERO.0[..])
        .bind(int("registration time", now)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn tree_size(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT size FROM log_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        get_u64(&row, "size")
    }

    async fn nodes(
        &self,
        coords: &[(u32, u64)],
    ) -> Result<HashMap<(u32, u64), Digest>, StoreError> {
        // One statement for the whole proof: the coordinates go as two arrays.
        let mut out = HashMap::with_capacity(coords.len());
        for chunk in coords.chunks(MAX_ROWS_PER_STATEMENT) {
            let levels: Vec<i32> = chunk
                .iter()
                .map(|&(l, _)| i32::try_from(l).unwrap_or(i32::MAX))
                .collect();
            let indices = chunk
                .iter()
                .map(|&(_, i)| int("node index", i))
                .collect::<Result<Vec<_>, _>>()?;
            let rows = sqlx::query(
                "SELECT n.level, n.idx, n.hash FROM nodes n \
                 JOIN UNNEST($1::int4[], $2::int8[]) AS q(level, idx) \
                 ON n.level = q.level AND n.idx = q.idx",
            )
            .bind(levels)
            .bind(indices)
            .fetch_all(&self.pool)
            .await?;
            for row in rows {
                let level: i32 = row.try_get("level")?;
                let level = u32::try_from(level).map_err(|_| StoreError::Corrupt("node level"))?;
                out.insert(
                    (level, get_u64(&row, "idx")?),
                    Digest(get_32(&row, "hash")?),
                );
            }
        }
        Ok(out)
    }

    async fn receipt(&self, id: &ReceiptId) -> Result<Option<StoredReceipt>, StoreError> {
        let row = sqlx::query("SELECT id, leaf, bytes, accepted_at FROM receipts WHERE id = $1")
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
             FROM receipts WHERE id = $1",
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
             WHERE leaf >= $1 AND leaf < $2 ORDER BY leaf",
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
        let mut found = HashMap::with_capacity(channels.len());
        for chunk in channels.chunks(MAX_ROWS_PER_STATEMENT) {
            let rows = sqlx::query(
                "SELECT DISTINCT ON (channel) channel, id FROM receipts \
                 WHERE channel = ANY($1) AND leaf < $2 ORDER BY channel, channel_seq DESC",
            )
            .bind(chunk.iter().map(|c| c.0.0).collect::<Vec<_>>())
            .bind(int("tree size", size)?)
            .fetch_all(&self.pool)
            .await?;
            for row in &rows {
                found.insert(
                    ChannelId(Digest(get_32(row, "channel")?)),
                    Digest(get_32(row, "id")?),
                );
            }
        }
        Ok(found)
    }

    async fn batch(&self, n: u64) -> Result<Option<BatchRecord>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT_BATCH} WHERE n = $1")))
            .bind(int("batch number", n)?)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(batch_record).transpose()
    }

    async fn checkpoint(&self, size: Option<u64>) -> Result<Option<Checkpoint>, StoreError> {
        let row = match size {
            Some(size) => {
                sqlx::query("SELECT size, root, note, created_at FROM checkpoints WHERE size = $1")
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
            "SELECT size, root, note, created_at FROM checkpoints WHERE size > $1 \
             ORDER BY size LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(checkpoint_row).collect()
    }

    async fn evidence(&self, after: u64, limit: u32) -> Result<Vec<(u64, Evidence)>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, kind, host, host_seq, existing, receipt_id, bytes, other_bytes, \
             recorded_at FROM evidence WHERE seq > $1 ORDER BY seq LIMIT $2",
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
             WHERE host = $1 AND host_seq >= $2 ORDER BY host_seq LIMIT $3",
        )
        .bind(&host.0[..])
        .bind(seq_bytes(from))
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
            "SELECT host, host_seq, id, bytes, reason, recorded_at FROM host_refused \
             WHERE host = $1 AND host_seq >= $2 ORDER BY host_seq LIMIT $3",
        )
        .bind(&host.0[..])
        .bind(seq_bytes(from))
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
            "SELECT host, size, root, signature, receipt_id, recorded_at FROM host_checkpoints \
             WHERE host = $1 AND size >= $2 ORDER BY size LIMIT $3",
        )
        .bind(&host.0[..])
        .bind(seq_bytes(from))
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

/// A write transaction on a [`PgStore`]; it holds the `log_head` row lock from begin to
/// commit, so it is the only writer of the log in any process.
#[derive(Debug)]
pub struct PgTx {
    tx: sqlx::Transaction<'static, Postgres>,
    /// The log's size under the lock, advanced by [`StoreTx::append`].
    size: u64,
}

impl StoreTx for PgTx {
    async fn tree_size(&mut self) -> Result<u64, StoreError> {
        Ok(self.size)
    }

    async fn receipt_leaf(&mut self, id: &ReceiptId) -> Result<Option<u64>, StoreError> {
        let row = sqlx::query("SELECT leaf FROM receipts WHERE id = $1")
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
            "SELECT id, bytes, leaf, NULL::text AS reason FROM receipts \
             WHERE host = $1 AND host_seq = $2 \
             UNION ALL SELECT id, bytes, NULL::int8 AS leaf, reason FROM host_refused \
             WHERE host = $1 AND host_seq = $2 LIMIT 1",
        )
        .bind(&host.0[..])
        .bind(seq_bytes(host_seq))
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
            "SELECT bytes FROM receipts WHERE id = $1 \
             UNION ALL SELECT bytes FROM host_refused WHERE id = $1 LIMIT 1",
        )
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
            let keys: Vec<[u8; 32]> = chunk.iter().map(|k| k.0).collect();
            let rows = sqlx::query(
                "SELECT c.host, c.size, c.root, c.signature, c.receipt_id, c.recorded_at \
                 FROM host_checkpoints c JOIN hosts h ON h.key = c.host \
                 WHERE c.host = ANY($1::bytea[]) AND c.size > h.last_seq",
            )
            .bind(keys)
            .fetch_all(&mut *self.tx)
            .await?;
            for row in &rows {
                out.push(host_checkpoint_row(row)?);
            }
        }
        Ok(out)
    }

    async fn put_host_checkpoints(&mut self, rows: &[HostCheckpointRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks(MAX_ROWS_PER_STATEMENT) {
            sqlx::query(
                "INSERT INTO host_checkpoints (host, size, root, signature, receipt_id, \
                 recorded_at) SELECT * FROM UNNEST($1::bytea[], $2::bytea[], $3::bytea[], \
                 $4::bytea[], $5::bytea[], $6::int8[]) ON CONFLICT (host, size) DO NOTHING",
            )
            .bind(chunk.iter().map(|c| c.host.0).collect::<Vec<_>>())
            .bind(chunk.iter().map(|c| seq_bytes(c.size)).collect::<Vec<_>>())
            .bind(chunk.iter().map(|c| c.root.0).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|c| c.signature.0.to_vec())
                    .collect::<Vec<_>>(),
            )
            .bind(chunk.iter().map(|c| c.receipt_id.0).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|c| int("record time", c.recorded_at))
                    .collect::<Result<Vec<_>, _>>()?,
            )
            .execute(&mut *self.tx)
            .await?;
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
        for chunk in rows.chunks(MAX_ROWS_PER_STATEMENT) {
            sqlx::query(
                "INSERT INTO host_refused (host, host_seq, id, bytes, reason, recorded_at) \
                 SELECT * FROM UNNEST($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[], \
                 $5::text[], $6::int8[])",
            )
            .bind(chunk.iter().map(|r| r.host.0).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|r| seq_bytes(r.host_seq))
                    .collect::<Vec<_>>(),
            )
            .bind(chunk.iter().map(|r| r.id.0).collect::<Vec<_>>())
            .bind(chunk.iter().map(|r| r.bytes.as_slice()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|r| int("record time", r.recorded_at))
                    .collect::<Result<Vec<_>, _>>()?,
            )
            .execute(&mut *self.tx)
            .await?;
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
        let row = sqlx::query("SELECT debited::text AS debited FROM payers WHERE key = $1")
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
            let keys: Vec<[u8; 32]> = chunk.iter().map(|k| k.0).collect();
            let rows = sqlx::query(
                "SELECT key, last_seq, last_id, log_peaks FROM hosts WHERE key = ANY($1::bytea[])",
            )
            .bind(keys)
            .fetch_all(&mut *self.tx)
            .await?;
            for row in &rows {
                let h = host_head(row)?;
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
            let keys: Vec<[u8; 32]> = chunk.iter().map(|id| id.0.0).collect();
            let rows = sqlx::query(
                "SELECT id, payer, host, model, last_seq, total::text AS total, \
                 sealed_total::text AS sealed_total FROM channels WHERE id = ANY($1::bytea[])",
            )
            .bind(keys)
            .fetch_all(&mut *self.tx)
            .await?;
            for row in &rows {
                let c = channel_head(row)?;
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
            let keys: Vec<[u8; 32]> = chunk.iter().map(|k| k.0).collect();
            let rows = sqlx::query(
                "SELECT key, debited::text AS debited FROM payers WHERE key = ANY($1::bytea[])",
            )
            .bind(keys)
            .fetch_all(&mut *self.tx)
            .await?;
            for row in &rows {
                out.insert(PublicKey(get_32(row, "key")?), get_u128(row, "debited")?);
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
            let keys: Vec<[u8; 32]> = chunk.iter().map(|k| k.0).collect();
            let rows = sqlx::query(
                // PostgreSQL has no MIN over BYTEA: the first row per host in index order.
                "SELECT DISTINCT ON (host) host, host_seq AS seq FROM pending \
                 WHERE host = ANY($1::bytea[]) ORDER BY host, host_seq",
            )
            .bind(keys)
            .fetch_all(&mut *self.tx)
            .await?;
            for row in &rows {
                out.insert(PublicKey(get_32(row, "host")?), Columns::seq(row, "seq")?);
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
            let keys: Vec<[u8; 32]> = chunk.iter().map(|id| id.0).collect();
            let rows = sqlx::query("SELECT id, leaf FROM receipts WHERE id = ANY($1::bytea[])")
                .bind(keys)
                .fetch_all(&mut *self.tx)
                .await?;
            for row in rows {
                out.insert(Digest(get_32(&row, "id")?), get_u64(&row, "leaf")?);
            }
        }
        Ok(out)
    }

    async fn append(&mut self, receipts: &[LeafRow], nodes: &[Node]) -> Result<(), StoreError> {
        // The rows must continue the log exactly as it stands under the lock: a process
        // whose frontier is behind another's appends gets a typed error, never a write.
        for (i, r) in receipts.iter().enumerate() {
            let expected = self.size.saturating_add(i as u64);
            if r.leaf != expected {
                return Err(StoreError::LogMoved {
                    expected,
                    found: r.leaf,
                });
            }
        }
        for chunk in receipts.chunks(MAX_ROWS_PER_STATEMENT) {
            sqlx::query(
                "INSERT INTO receipts (id, leaf, bytes, host, host_seq, channel, channel_seq, \
                 channel_total, fee, accepted_at) \
                 SELECT * FROM UNNEST($1::bytea[], $2::int8[], $3::bytea[], $4::bytea[], \
                 $5::bytea[], $6::bytea[], $7::bytea[], $8::text[]::numeric[], \
                 $9::text[]::numeric[], $10::int8[])",
            )
            .bind(chunk.iter().map(|r| r.id.0).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|r| int("leaf index", r.leaf))
                    .collect::<Result<Vec<_>, _>>()?,
            )
            .bind(chunk.iter().map(|r| r.bytes.as_slice()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|r| r.host.0).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|r| seq_bytes(r.host_seq))
                    .collect::<Vec<_>>(),
            )
            .bind(chunk.iter().map(|r| r.channel.0.0).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|r| seq_bytes(r.channel_seq))
                    .collect::<Vec<_>>(),
            )
            .bind(
                chunk
                    .iter()
                    .map(|r| amount(r.channel_total))
                    .collect::<Vec<_>>(),
            )
            .bind(chunk.iter().map(|r| amount(r.fee)).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|r| int("acceptance time", r.accepted_at))
                    .collect::<Result<Vec<_>, _>>()?,
            )
            .execute(&mut *self.tx)
            .await?;
        }
        for chunk in nodes.chunks(MAX_ROWS_PER_STATEMENT * 4) {
            sqlx::query(
                "INSERT INTO nodes (level, idx, hash) \
                 SELECT * FROM UNNEST($1::int4[], $2::int8[], $3::bytea[])",
            )
            .bind(
                chunk
                    .iter()
                    .map(|&(l, _, _)| i32::try_from(l).unwrap_or(i32::MAX))
                    .collect::<Vec<_>>(),
            )
            .bind(
                chunk
                    .iter()
                    .map(|&(_, i, _)| int("node index", i))
                    .collect::<Result<Vec<_>, _>>()?,
            )
            .bind(chunk.iter().map(|&(_, _, h)| h.0).collect::<Vec<_>>())
            .execute(&mut *self.tx)
            .await?;
        }
        if !receipts.is_empty() {
            let size = self.size.saturating_add(receipts.len() as u64);
            sqlx::query("UPDATE log_head SET size = $1 WHERE id = 1")
                .bind(int("tree size", size)?)
                .execute(&mut *self.tx)
                .await?;
            self.size = size;
        }
        Ok(())
    }

    async fn put_heads(
        &mut self,
        hosts: &[HostHead],
        channels: &[ChannelHead],
        payers: &[(PublicKey, u128)],
    ) -> Result<(), StoreError> {
        for chunk in hosts.chunks(MAX_ROWS_PER_STATEMENT) {
            sqlx::query(
                "UPDATE hosts h SET last_seq = u.last_seq, last_id = u.last_id, \
                 log_peaks = u.log_peaks \
                 FROM UNNEST($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[]) \
                 AS u(key, last_seq, last_id, log_peaks) WHERE h.key = u.key",
            )
            .bind(chunk.iter().map(|h| h.key.0).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|h| seq_bytes(h.last_seq))
                    .collect::<Vec<_>>(),
            )
            .bind(chunk.iter().map(|h| h.last_id.0).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|h| peaks_blob(&h.peaks))
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *self.tx)
            .await?;
        }
        for chunk in channels.chunks(MAX_ROWS_PER_STATEMENT) {
            sqlx::query(
                "INSERT INTO channels (id, payer, host, model, last_seq, total, sealed_total) \
                 SELECT * FROM UNNEST($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[], \
                 $5::bytea[], $6::text[]::numeric[], $7::text[]::numeric[]) \
                 ON CONFLICT (id) DO UPDATE SET \
                 last_seq = excluded.last_seq, total = excluded.total",
            )
            .bind(chunk.iter().map(|c| c.id.0.0).collect::<Vec<_>>())
            .bind(chunk.iter().map(|c| c.payer.0).collect::<Vec<_>>())
            .bind(chunk.iter().map(|c| c.host.0).collect::<Vec<_>>())
            .bind(chunk.iter().map(|c| c.model.0).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|c| seq_bytes(c.last_seq))
                    .collect::<Vec<_>>(),
            )
            .bind(chunk.iter().map(|c| amount(c.total)).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|c| amount(c.sealed_total))
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *self.tx)
            .await?;
        }
        for chunk in payers.chunks(MAX_ROWS_PER_STATEMENT) {
            sqlx::query(
                "INSERT INTO payers (key, debited) \
                 SELECT * FROM UNNEST($1::bytea[], $2::text[]::numeric[]) \
                 ON CONFLICT (key) DO UPDATE SET debited = excluded.debited",
            )
            .bind(chunk.iter().map(|(k, _)| k.0).collect::<Vec<_>>())
            .bind(chunk.iter().map(|&(_, d)| amount(d)).collect::<Vec<_>>())
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    async fn hold(&mut self, p: &Pending, room: bool) -> Result<Held, StoreError> {
        let held = sqlx::query("SELECT id, bytes FROM pending WHERE host = $1 AND host_seq = $2")
            .bind(&p.host.0[..])
            .bind(seq_bytes(p.host_seq))
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
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&p.id.0[..])
        .bind(&p.host.0[..])
        .bind(seq_bytes(p.host_seq))
        .bind(&p.bytes[..])
        .bind(int("arrival time", p.received_at)?)
        .bind(int("deadline", p.deadline)?)
        .bind(p.reason.clone())
        .execute(&mut *self.tx)
        .await?;
        Ok(Held::New)
    }

    async fn pending_count_of(&mut self, host: &PublicKey) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM pending WHERE host = $1")
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
            "DELETE FROM pending WHERE host = $1 AND host_seq = $2 \
             RETURNING id, host, host_seq, bytes, received_at, deadline, reason",
        )
        .bind(&host.0[..])
        .bind(seq_bytes(host_seq))
        .fetch_all(&mut *self.tx)
        .await?;
        // One row per position (UNIQUE (host, host_seq)).
        rows.first().map(pending_row).transpose()
    }

    async fn expire_pending(&mut self, now: u64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM pending WHERE deadline < $1")
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
             other_bytes, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT DO NOTHING",
        )
        .bind(e.kind.as_str())
        .bind(&e.host.0[..])
        .bind(seq_bytes(e.host_seq))
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
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT_BATCH} ORDER BY n DESC LIMIT 1"
        )))
        .fetch_optional(&mut *self.tx)
        .await?;
        row.as_ref().map(batch_record).transpose()
    }

    async fn unsealed_channels(&mut self) -> Result<Vec<(ChannelId, u128, u128)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, total::text AS total, sealed_total::text AS sealed_total \
             FROM channels WHERE total <> sealed_total ORDER BY id",
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
        // Wait briefly, not forever: a committing sealer releases the head row lock a
        // moment before its advisory lock, but a session holding the lock on purpose must
        // not stall ingest behind this transaction's head lock.
        sqlx::query("SELECT set_config('lock_timeout', $1, true)")
            .bind(SEALER_LOCK_WAIT)
            .execute(&mut *self.tx)
            .await?;
        let locked = sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PgStore::SEALER_LOCK)
            .execute(&mut *self.tx)
            .await;
        match locked {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(LOCK_NOT_AVAILABLE) => {
                return Err(StoreError::SealerBusy);
            }
            Err(e) => return Err(e.into()),
        }
        sqlx::query("SELECT set_config('lock_timeout', '0', true)")
            .execute(&mut *self.tx)
            .await?;
        // A batch covers the whole log as it stands under the lock, never a stale view.
        if b.tree_size != self.size || c.size != self.size {
            return Err(StoreError::LogMoved {
                expected: self.size,
                found: b.tree_size,
            });
        }
        sqlx::query(
            "INSERT INTO batches (n, header, signature, header_hash, tree_size, root, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
            "INSERT INTO checkpoints (size, root, note, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (size) DO NOTHING",
        )
        .bind(int("tree size", c.size)?)
        .bind(&c.root.0[..])
        .bind(c.note.as_str())
        .bind(int("seal time", c.created_at)?)
        .execute(&mut *self.tx)
        .await?;
        for chunk in sealed.chunks(MAX_ROWS_PER_STATEMENT) {
            sqlx::query(
                "UPDATE channels c SET sealed_total = u.total \
                 FROM UNNEST($1::bytea[], $2::text[]::numeric[]) AS u(id, total) \
                 WHERE c.id = u.id",
            )
            .bind(chunk.iter().map(|(id, _)| id.0.0).collect::<Vec<_>>())
            .bind(chunk.iter().map(|&(_, t)| amount(t)).collect::<Vec<_>>())
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    async fn discard_batches(&mut self, from: u64) -> Result<Vec<BatchRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT_BATCH} WHERE n >= $1 ORDER BY n"
        )))
        .bind(int("batch", from)?)
        .fetch_all(&mut *self.tx)
        .await?;
        let discarded = rows
            .iter()
            .map(batch_record)
            .collect::<Result<Vec<_>, _>>()?;
        sqlx::query("DELETE FROM batches WHERE n >= $1")
            .bind(int("batch", from)?)
            .execute(&mut *self.tx)
            .await?;
        Ok(discarded)
    }

    async fn reset_sealed(&mut self, sealed: &[(ChannelId, u128)]) -> Result<(), StoreError> {
        for chunk in sealed.chunks(MAX_ROWS_PER_STATEMENT) {
            sqlx::query(
                "UPDATE channels c SET sealed_total = u.total \
                 FROM UNNEST($1::bytea[], $2::text[]::numeric[]) AS u(id, total) \
                 WHERE c.id = u.id",
            )
            .bind(chunk.iter().map(|(id, _)| id.0.0).collect::<Vec<_>>())
            .bind(chunk.iter().map(|&(_, t)| amount(t)).collect::<Vec<_>>())
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

//! Rows to values, once for both stores: each store says how it reads a column of each
//! kind ([`Columns`]); the records are assembled here, so the two cannot drift apart.
//!
//! Column kinds: counters the aggregator makes (leaf indices, sizes, Unix ms) are signed
//! 64-bit integers; sequence numbers from signed receipts (`host_seq`, a channel's `seq`)
//! are 8 big-endian bytes, because a payer may sign any `u64`; amounts are `u128`.

use tally_protocol::{ChannelId, Digest, PublicKey, Signature};

use super::{
    BatchRecord, ChannelHead, Checkpoint, Evidence, HostCheckpointRow, HostHead, Pending,
    RefusedRow, StoreError, StoredReceipt,
};

/// How one store's rows yield the column kinds the schema uses.
pub(crate) trait Columns {
    /// A non-negative integer (leaf index, sequence number, time).
    fn u64(&self, col: &str) -> Result<u64, StoreError>;
    /// An amount.
    fn u128(&self, col: &str) -> Result<u128, StoreError>;
    /// A byte string, possibly NULL.
    fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// A text.
    fn text(&self, col: &str) -> Result<String, StoreError>;
    /// A text, possibly NULL.
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;
    /// A non-negative integer, possibly NULL.
    fn opt_u64(&self, col: &str) -> Result<Option<u64>, StoreError>;

    /// A byte string.
    fn bytes(&self, col: &str) -> Result<Vec<u8>, StoreError> {
        self.opt_bytes(col)?
            .ok_or(StoreError::Corrupt("unexpected NULL"))
    }

    /// A sequence number from a signed receipt: 8 big-endian bytes (any `u64`).
    fn seq(&self, col: &str) -> Result<u64, StoreError> {
        let b: [u8; 8] = self
            .bytes(col)?
            .try_into()
            .map_err(|_| StoreError::Corrupt("expected an 8-byte sequence number"))?;
        Ok(u64::from_be_bytes(b))
    }

    /// A key, id or hash.
    fn b32(&self, col: &str) -> Result<[u8; 32], StoreError> {
        self.bytes(col)?
            .try_into()
            .map_err(|_| StoreError::Corrupt("expected 32 bytes"))
    }
}

pub(crate) fn host_head(row: &impl Columns) -> Result<HostHead, StoreError> {
    let last_seq = row.seq("last_seq")?;
    let blob = row.bytes("log_peaks")?;
    if blob.len() % 32 != 0 || blob.len() / 32 != last_seq.count_ones() as usize {
        // A host head of version 1 (a hash chain, no host log) is never continued.
        return Err(StoreError::Corrupt(
            "host log peaks do not match the host's log size",
        ));
    }
    let peaks = blob
        .chunks(32)
        .map(|c| {
            let mut d = [0u8; 32];
            d.copy_from_slice(c);
            Digest(d)
        })
        .collect();
    Ok(HostHead {
        key: PublicKey(row.b32("key")?),
        last_seq,
        last_id: Digest(row.b32("last_id")?),
        peaks,
    })
}

/// A host head's peaks as the one BLOB both stores keep them in.
pub(crate) fn peaks_blob(peaks: &[Digest]) -> Vec<u8> {
    peaks.iter().flat_map(|p| p.0).collect()
}

pub(crate) fn host_checkpoint_row(row: &impl Columns) -> Result<HostCheckpointRow, StoreError> {
    Ok(HostCheckpointRow {
        host: PublicKey(row.b32("host")?),
        size: row.seq("size")?,
        root: Digest(row.b32("root")?),
        signature: Signature(
            row.bytes("signature")?
                .try_into()
                .map_err(|_| StoreError::Corrupt("expected a 64-byte signature"))?,
        ),
        receipt_id: Digest(row.b32("receipt_id")?),
        recorded_at: row.u64("recorded_at")?,
    })
}

pub(crate) fn refused_row(row: &impl Columns) -> Result<RefusedRow, StoreError> {
    Ok(RefusedRow {
        host: PublicKey(row.b32("host")?),
        host_seq: row.seq("host_seq")?,
        id: Digest(row.b32("id")?),
        bytes: row.bytes("bytes")?,
        reason: row.text("reason")?,
        recorded_at: row.u64("recorded_at")?,
    })
}

pub(crate) fn channel_head(row: &impl Columns) -> Result<ChannelHead, StoreError> {
    Ok(ChannelHead {
        id: ChannelId(Digest(row.b32("id")?)),
        payer: PublicKey(row.b32("payer")?),
        host: PublicKey(row.b32("host")?),
        model: Digest(row.b32("model")?),
        last_seq: row.seq("last_seq")?,
        total: row.u128("total")?,
        sealed_total: row.u128("sealed_total")?,
    })
}

pub(crate) fn batch_record(row: &impl Columns) -> Result<BatchRecord, StoreError> {
    Ok(BatchRecord {
        n: row.u64("n")?,
        header: row.bytes("header")?,
        signature: Signature(
            row.bytes("signature")?
                .try_into()
                .map_err(|_| StoreError::Corrupt("expected a 64-byte signature"))?,
        ),
        header_hash: Digest(row.b32("header_hash")?),
        tree_size: row.u64("tree_size")?,
        root: Digest(row.b32("root")?),
        created_at: row.u64("created_at")?,
    })
}

pub(crate) fn stored_receipt(row: &impl Columns) -> Result<StoredReceipt, StoreError> {
    Ok(StoredReceipt {
        id: Digest(row.b32("id")?),
        leaf: row.u64("leaf")?,
        bytes: row.bytes("bytes")?,
        accepted_at: row.u64("accepted_at")?,
    })
}

pub(crate) fn checkpoint_row(row: &impl Columns) -> Result<Checkpoint, StoreError> {
    Ok(Checkpoint {
        size: row.u64("size")?,
        root: Digest(row.b32("root")?),
        note: row.text("note")?,
        created_at: row.u64("created_at")?,
    })
}

pub(crate) fn pending_row(row: &impl Columns) -> Result<Pending, StoreError> {
    Ok(Pending {
        id: Digest(row.b32("id")?),
        host: PublicKey(row.b32("host")?),
        host_seq: row.seq("host_seq")?,
        bytes: row.bytes("bytes")?,
        received_at: row.u64("received_at")?,
        deadline: row.u64("deadline")?,
        reason: row.opt_text("reason")?,
    })
}

pub(crate) fn evidence_row(row: &impl Columns) -> Result<Evidence, StoreError> {
    let existing = match row.opt_bytes("existing")? {
        None => None,
        Some(v) => Some(Digest(
            v.try_into()
                .map_err(|_| StoreError::Corrupt("expected 32 bytes"))?,
        )),
    };
    Ok(Evidence {
        kind: row.text("kind")?,
        host: PublicKey(row.b32("host")?),
        host_seq: row.seq("host_seq")?,
        existing,
        receipt_id: Digest(row.b32("receipt_id")?),
        bytes: row.bytes("bytes")?,
        other: row.opt_bytes("other_bytes")?,
        recorded_at: row.u64("recorded_at")?,
    })
}

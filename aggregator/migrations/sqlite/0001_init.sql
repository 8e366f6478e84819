-- Tally aggregator schema, version 1 (SQLite).
--
-- Integers that can exceed 2^63 are never stored: leaf indices, sequence numbers and times
-- fit in SQLite's signed 64-bit INTEGER. Amounts (u128) are 16-byte big-endian BLOBs, so
-- byte order is numeric order. Keys, ids and hashes are 32-byte BLOBs.

-- Every accepted receipt, one row per leaf of the log. `leaf` is its position in the log
-- (0, 1, 2, ... without gaps); `bytes` is the SignedReceipt encoding, the leaf data.
-- Keyed by leaf (the rowid: appends go to the end of the B-tree); rows are about 1 KiB,
-- too large for a WITHOUT ROWID table keyed by a random id.
CREATE TABLE receipts (
    leaf          INTEGER NOT NULL PRIMARY KEY,
    id            BLOB    NOT NULL UNIQUE,
    bytes         BLOB    NOT NULL,
    host          BLOB    NOT NULL,
    host_seq      INTEGER NOT NULL,
    channel       BLOB    NOT NULL,
    channel_seq   INTEGER NOT NULL,
    channel_total BLOB    NOT NULL,
    fee           BLOB    NOT NULL,
    accepted_at   INTEGER NOT NULL,
    -- A host chain and a channel sequence each have one receipt per position: the last
    -- line of defence against forks and replays if a check above were ever wrong.
    UNIQUE (host, host_seq),
    UNIQUE (channel, channel_seq)
);

-- The perfect nodes of the log (level 0 = leaf hashes), written as the log grows, so any
-- proof at any size is O(log n) point reads.
CREATE TABLE nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB    NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;

-- Registered hosts and the head of each one's hash chain (last_seq 0: nothing yet).
CREATE TABLE hosts (
    key           BLOB    NOT NULL PRIMARY KEY,
    last_seq      INTEGER NOT NULL,
    last_id       BLOB    NOT NULL,
    registered_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Per channel: the last authorisation seq, the running total, and the total at the last
-- sealed batch (the next batch debits total - sealed_total).
CREATE TABLE channels (
    id           BLOB    NOT NULL PRIMARY KEY,
    payer        BLOB    NOT NULL,
    host         BLOB    NOT NULL,
    model        BLOB    NOT NULL,
    last_seq     INTEGER NOT NULL,
    total        BLOB    NOT NULL,
    sealed_total BLOB    NOT NULL
) WITHOUT ROWID;

-- Per payer: the sum of its channels' running totals, checked against its escrow.
CREATE TABLE payers (
    key     BLOB NOT NULL PRIMARY KEY,
    debited BLOB NOT NULL
) WITHOUT ROWID;

-- Receipts held back because their host chain has a gap before them.
CREATE TABLE pending (
    id          BLOB    NOT NULL PRIMARY KEY,
    host        BLOB    NOT NULL,
    host_seq    INTEGER NOT NULL,
    bytes       BLOB    NOT NULL,
    received_at INTEGER NOT NULL,
    deadline    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX pending_by_host ON pending (host, host_seq);
CREATE INDEX pending_by_deadline ON pending (deadline);

-- Sealed batches: the BatchHeader encoding and the aggregator's signature over it.
CREATE TABLE batches (
    n           INTEGER NOT NULL PRIMARY KEY,
    header      BLOB    NOT NULL,
    signature   BLOB    NOT NULL,
    header_hash BLOB    NOT NULL,
    tree_size   INTEGER NOT NULL UNIQUE,
    root        BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
);

-- C2SP tlog-checkpoint signed notes, one per sealed tree size.
CREATE TABLE checkpoints (
    size       INTEGER NOT NULL PRIMARY KEY,
    root       BLOB    NOT NULL,
    note       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

-- Misbehaviour worth keeping: a host receipt that contradicts its own chain (a fork).
CREATE TABLE evidence (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT    NOT NULL,
    host        BLOB    NOT NULL,
    host_seq    INTEGER NOT NULL,
    existing    BLOB,
    receipt_id  BLOB    NOT NULL UNIQUE,
    bytes       BLOB    NOT NULL,
    recorded_at INTEGER NOT NULL
);

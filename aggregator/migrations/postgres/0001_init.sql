-- Tally aggregator schema, version 1 (PostgreSQL). The same tables as the SQLite schema,
-- in PostgreSQL's types.
--
-- Leaf indices, sequence numbers and times are BIGINT (they stay far below 2^63). Amounts
-- are u128, which BIGINT cannot hold: NUMERIC(39, 0) bounded to [0, 2^128). Keys, ids and
-- hashes are 32-byte BYTEA, checked.

-- The log's head: its size, one row. Every write transaction locks this row first
-- (SELECT ... FOR UPDATE), so writers in any number of processes take turns: leaf indices
-- are allocated from the size under the lock and can never collide or leave a gap.
CREATE TABLE log_head (
    id   SMALLINT NOT NULL PRIMARY KEY CHECK (id = 1),
    size BIGINT   NOT NULL CHECK (size >= 0)
);
INSERT INTO log_head (id, size) VALUES (1, 0);

-- Every accepted receipt, one row per leaf of the log. `leaf` is its position in the log
-- (0, 1, 2, ... without gaps); `bytes` is the SignedReceipt encoding, the leaf data.
CREATE TABLE receipts (
    leaf          BIGINT         NOT NULL PRIMARY KEY CHECK (leaf >= 0),
    id            BYTEA          NOT NULL UNIQUE CHECK (octet_length(id) = 32),
    bytes         BYTEA          NOT NULL,
    host          BYTEA          NOT NULL CHECK (octet_length(host) = 32),
    host_seq      BIGINT         NOT NULL CHECK (host_seq >= 0),
    channel       BYTEA          NOT NULL CHECK (octet_length(channel) = 32),
    channel_seq   BIGINT         NOT NULL CHECK (channel_seq >= 0),
    channel_total NUMERIC(39, 0) NOT NULL
        CHECK (channel_total BETWEEN 0 AND 340282366920938463463374607431768211455),
    fee           NUMERIC(39, 0) NOT NULL
        CHECK (fee BETWEEN 0 AND 340282366920938463463374607431768211455),
    accepted_at   BIGINT         NOT NULL,
    -- A host chain and a channel sequence each have one receipt per position: the last
    -- line of defence against forks and replays if a check above were ever wrong.
    UNIQUE (host, host_seq),
    UNIQUE (channel, channel_seq)
);

-- The perfect nodes of the log (level 0 = leaf hashes), written as the log grows, so any
-- proof at any size is O(log n) point reads.
CREATE TABLE nodes (
    level INTEGER NOT NULL CHECK (level BETWEEN 0 AND 63),
    idx   BIGINT  NOT NULL CHECK (idx >= 0),
    hash  BYTEA   NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (level, idx)
);

-- Registered hosts and the head of each one's hash chain (last_seq 0: nothing yet).
CREATE TABLE hosts (
    key           BYTEA  NOT NULL PRIMARY KEY CHECK (octet_length(key) = 32),
    last_seq      BIGINT NOT NULL CHECK (last_seq >= 0),
    last_id       BYTEA  NOT NULL CHECK (octet_length(last_id) = 32),
    registered_at BIGINT NOT NULL
);

-- Per channel: the last authorisation seq, the running total, and the total at the last
-- sealed batch (the next batch debits total - sealed_total).
CREATE TABLE channels (
    id           BYTEA          NOT NULL PRIMARY KEY CHECK (octet_length(id) = 32),
    payer        BYTEA          NOT NULL,
    host         BYTEA          NOT NULL,
    model        BYTEA          NOT NULL,
    last_seq     BIGINT         NOT NULL,
    total        NUMERIC(39, 0) NOT NULL
        CHECK (total BETWEEN 0 AND 340282366920938463463374607431768211455),
    sealed_total NUMERIC(39, 0) NOT NULL CHECK (sealed_total BETWEEN 0 AND total)
);

-- Per payer: the sum of its channels' running totals, checked against its escrow.
CREATE TABLE payers (
    key     BYTEA          NOT NULL PRIMARY KEY CHECK (octet_length(key) = 32),
    debited NUMERIC(39, 0) NOT NULL
        CHECK (debited BETWEEN 0 AND 340282366920938463463374607431768211455)
);

-- Receipts held back because their host chain has a gap before them.
CREATE TABLE pending (
    id          BYTEA  NOT NULL PRIMARY KEY CHECK (octet_length(id) = 32),
    host        BYTEA  NOT NULL,
    host_seq    BIGINT NOT NULL,
    bytes       BYTEA  NOT NULL,
    received_at BIGINT NOT NULL,
    deadline    BIGINT NOT NULL
);
CREATE INDEX pending_by_host ON pending (host, host_seq);
CREATE INDEX pending_by_deadline ON pending (deadline);

-- Sealed batches: the BatchHeader encoding and the aggregator's signature over it.
CREATE TABLE batches (
    n           BIGINT NOT NULL PRIMARY KEY CHECK (n >= 1),
    header      BYTEA  NOT NULL,
    signature   BYTEA  NOT NULL CHECK (octet_length(signature) = 64),
    header_hash BYTEA  NOT NULL CHECK (octet_length(header_hash) = 32),
    tree_size   BIGINT NOT NULL UNIQUE,
    root        BYTEA  NOT NULL CHECK (octet_length(root) = 32),
    created_at  BIGINT NOT NULL
);

-- C2SP tlog-checkpoint signed notes, one per sealed tree size.
CREATE TABLE checkpoints (
    size       BIGINT NOT NULL PRIMARY KEY,
    root       BYTEA  NOT NULL CHECK (octet_length(root) = 32),
    note       TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

-- Misbehaviour worth keeping: a host receipt that contradicts its own chain (a fork).
CREATE TABLE evidence (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        TEXT   NOT NULL,
    host        BYTEA  NOT NULL,
    host_seq    BIGINT NOT NULL,
    existing    BYTEA,
    receipt_id  BYTEA  NOT NULL UNIQUE,
    bytes       BYTEA  NOT NULL,
    recorded_at BIGINT NOT NULL
);

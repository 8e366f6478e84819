-- Tally aggregator schema, version 2 (SQLite).
--
-- 1. Sequence numbers that come from signed receipts (a channel's `seq`, chosen by the
--    payer, and a host's `host_seq`) are u64: any value up to 2^64 - 1 is valid. Version 1
--    kept them in signed 64-bit INTEGERs and clamped values from 2^63 up, so two receipts
--    with `seq` 2^63 and 2^63 + 1 collided on UNIQUE (channel, channel_seq) and the channel
--    served a wrong `last_seq`. They are now 8-byte big-endian BLOBs: exact, and since
--    SQLite compares BLOBs bytewise and all are 8 bytes long, ordering, MIN/MAX and UNIQUE
--    mean what they meant for numbers. Counters the aggregator makes itself (leaf indices,
--    batch numbers, tree sizes, Unix ms) stay INTEGER; the code refuses a value above
--    2^63 - 1 with an error instead of clamping it (none can get there: they count rows or
--    milliseconds).
-- 2. At most one held-back receipt per host chain position: a second, different receipt
--    at a held position is a fork (recorded as evidence), not another row.
-- 3. At most one piece of fork evidence per host chain position: the first one proves the
--    fork; more cost storage and prove nothing new.
--
-- Each table is rebuilt (SQLite cannot change a column's type) and its rows converted:
-- `unhex(printf('%016X', n))` is the 8-byte big-endian form of a non-negative INTEGER.

CREATE TABLE receipts_v2 (
    leaf          INTEGER NOT NULL PRIMARY KEY,
    id            BLOB    NOT NULL UNIQUE,
    bytes         BLOB    NOT NULL,
    host          BLOB    NOT NULL,
    host_seq      BLOB    NOT NULL CHECK (typeof(host_seq) = 'blob' AND length(host_seq) = 8),
    channel       BLOB    NOT NULL,
    channel_seq   BLOB    NOT NULL
        CHECK (typeof(channel_seq) = 'blob' AND length(channel_seq) = 8),
    channel_total BLOB    NOT NULL,
    fee           BLOB    NOT NULL,
    accepted_at   INTEGER NOT NULL,
    -- A host chain and a channel sequence each have one receipt per position: the last
    -- line of defence against forks and replays if a check above were ever wrong.
    UNIQUE (host, host_seq),
    UNIQUE (channel, channel_seq)
);
INSERT INTO receipts_v2 (leaf, id, bytes, host, host_seq, channel, channel_seq,
                         channel_total, fee, accepted_at)
SELECT leaf, id, bytes, host, unhex(printf('%016X', host_seq)), channel,
       unhex(printf('%016X', channel_seq)), channel_total, fee, accepted_at
FROM receipts ORDER BY leaf;
DROP TABLE receipts;
ALTER TABLE receipts_v2 RENAME TO receipts;

CREATE TABLE hosts_v2 (
    key           BLOB    NOT NULL PRIMARY KEY,
    last_seq      BLOB    NOT NULL CHECK (typeof(last_seq) = 'blob' AND length(last_seq) = 8),
    last_id       BLOB    NOT NULL,
    registered_at INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO hosts_v2 (key, last_seq, last_id, registered_at)
SELECT key, unhex(printf('%016X', last_seq)), last_id, registered_at FROM hosts;
DROP TABLE hosts;
ALTER TABLE hosts_v2 RENAME TO hosts;

CREATE TABLE channels_v2 (
    id           BLOB    NOT NULL PRIMARY KEY,
    payer        BLOB    NOT NULL,
    host         BLOB    NOT NULL,
    model        BLOB    NOT NULL,
    last_seq     BLOB    NOT NULL CHECK (typeof(last_seq) = 'blob' AND length(last_seq) = 8),
    total        BLOB    NOT NULL,
    sealed_total BLOB    NOT NULL
) WITHOUT ROWID;
INSERT INTO channels_v2 (id, payer, host, model, last_seq, total, sealed_total)
SELECT id, payer, host, model, unhex(printf('%016X', last_seq)), total, sealed_total
FROM channels;
DROP TABLE channels;
ALTER TABLE channels_v2 RENAME TO channels;

-- Of several held-back receipts at one position, the first to arrive is kept (as version
-- 1 would have tried it first).
CREATE TABLE pending_v2 (
    id          BLOB    NOT NULL PRIMARY KEY,
    host        BLOB    NOT NULL,
    host_seq    BLOB    NOT NULL CHECK (typeof(host_seq) = 'blob' AND length(host_seq) = 8),
    bytes       BLOB    NOT NULL,
    received_at INTEGER NOT NULL,
    deadline    INTEGER NOT NULL,
    UNIQUE (host, host_seq)
) WITHOUT ROWID;
INSERT INTO pending_v2 (id, host, host_seq, bytes, received_at, deadline)
SELECT id, host, unhex(printf('%016X', host_seq)), bytes, received_at, deadline
FROM pending p
WHERE NOT EXISTS (
    SELECT 1 FROM pending q
    WHERE q.host = p.host AND q.host_seq = p.host_seq
      AND (q.received_at < p.received_at OR (q.received_at = p.received_at AND q.id < p.id))
);
DROP TABLE pending;
ALTER TABLE pending_v2 RENAME TO pending;
CREATE INDEX pending_by_deadline ON pending (deadline);

-- Of several forks recorded at one position, the first recorded is kept.
CREATE TABLE evidence_v2 (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT    NOT NULL,
    host        BLOB    NOT NULL,
    host_seq    BLOB    NOT NULL CHECK (typeof(host_seq) = 'blob' AND length(host_seq) = 8),
    existing    BLOB,
    receipt_id  BLOB    NOT NULL UNIQUE,
    bytes       BLOB    NOT NULL,
    recorded_at INTEGER NOT NULL,
    UNIQUE (host, host_seq)
);
INSERT INTO evidence_v2 (seq, kind, host, host_seq, existing, receipt_id, bytes, recorded_at)
SELECT seq, kind, host, unhex(printf('%016X', host_seq)), existing, receipt_id, bytes,
       recorded_at
FROM evidence e
WHERE e.seq = (SELECT MIN(f.seq) FROM evidence f
               WHERE f.host = e.host AND f.host_seq = e.host_seq)
ORDER BY seq;
DROP TABLE evidence;
ALTER TABLE evidence_v2 RENAME TO evidence;

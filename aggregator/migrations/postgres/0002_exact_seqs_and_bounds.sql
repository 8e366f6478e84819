-- Tally aggregator schema, version 2 (PostgreSQL). The same changes as the SQLite
-- migration of the same number:
--
-- 1. Sequence numbers that come from signed receipts (a channel's `seq`, a host's
--    `host_seq`) are u64, which BIGINT cannot hold from 2^63 up (version 1 clamped them).
--    They are now 8-byte big-endian BYTEA (`int8send` converts the old values): exact, and
--    PostgreSQL compares BYTEA bytewise, so for values of one length ordering, MIN/MAX and
--    UNIQUE mean what they meant for numbers. Counters the aggregator makes itself stay
--    BIGINT; the code refuses a value above 2^63 - 1 instead of clamping it.
-- 2. At most one held-back receipt per host chain position (the first to arrive is kept).
-- 3. At most one piece of fork evidence per host chain position (the first recorded).

ALTER TABLE receipts DROP CONSTRAINT receipts_host_seq_check;
ALTER TABLE receipts DROP CONSTRAINT receipts_channel_seq_check;
ALTER TABLE receipts
    ALTER COLUMN host_seq TYPE BYTEA USING int8send(host_seq),
    ALTER COLUMN channel_seq TYPE BYTEA USING int8send(channel_seq);
ALTER TABLE receipts
    ADD CONSTRAINT receipts_host_seq_u64 CHECK (octet_length(host_seq) = 8),
    ADD CONSTRAINT receipts_channel_seq_u64 CHECK (octet_length(channel_seq) = 8);

ALTER TABLE hosts DROP CONSTRAINT hosts_last_seq_check;
ALTER TABLE hosts ALTER COLUMN last_seq TYPE BYTEA USING int8send(last_seq);
ALTER TABLE hosts ADD CONSTRAINT hosts_last_seq_u64 CHECK (octet_length(last_seq) = 8);

ALTER TABLE channels ALTER COLUMN last_seq TYPE BYTEA USING int8send(last_seq);
ALTER TABLE channels ADD CONSTRAINT channels_last_seq_u64 CHECK (octet_length(last_seq) = 8);

DELETE FROM pending p USING pending q
WHERE q.host = p.host AND q.host_seq = p.host_seq
  AND (q.received_at < p.received_at OR (q.received_at = p.received_at AND q.id < p.id));
DROP INDEX pending_by_host;
ALTER TABLE pending ALTER COLUMN host_seq TYPE BYTEA USING int8send(host_seq);
ALTER TABLE pending
    ADD CONSTRAINT pending_host_seq_u64 CHECK (octet_length(host_seq) = 8),
    ADD CONSTRAINT pending_one_per_position UNIQUE (host, host_seq);

DELETE FROM evidence e USING evidence f
WHERE f.host = e.host AND f.host_seq = e.host_seq AND f.seq < e.seq;
ALTER TABLE evidence ALTER COLUMN host_seq TYPE BYTEA USING int8send(host_seq);
ALTER TABLE evidence
    ADD CONSTRAINT evidence_host_seq_u64 CHECK (octet_length(host_seq) = 8),
    ADD CONSTRAINT evidence_one_per_position UNIQUE (host, host_seq);

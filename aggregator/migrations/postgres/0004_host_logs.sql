-- Tally aggregator schema, version 4 (PostgreSQL): receipts v2, host logs. The same
-- changes as the SQLite migration of the same number (see it for the why):
--
-- 1. `hosts.log_peaks`: the frontier of the host's log as far as it has been followed.
-- 2. `host_refused`: host-signed receipts placed in their host's log but refused.
-- 3. `host_checkpoints`: every host checkpoint verified with a placed receipt.
-- 4. `pending.reason`: a held-back receipt that its checks already refuse.
-- 5. `evidence.other_bytes`: the other bundle of an equivocation.

ALTER TABLE hosts ADD COLUMN log_peaks BYTEA NOT NULL DEFAULT ''::bytea
    CHECK (octet_length(log_peaks) % 32 = 0);
ALTER TABLE pending ADD COLUMN reason TEXT;
ALTER TABLE evidence ADD COLUMN other_bytes BYTEA;

CREATE TABLE host_refused (
    host        BYTEA  NOT NULL CHECK (octet_length(host) = 32),
    host_seq    BYTEA  NOT NULL CHECK (octet_length(host_seq) = 8),
    id          BYTEA  NOT NULL UNIQUE CHECK (octet_length(id) = 32),
    bytes       BYTEA  NOT NULL,
    reason      TEXT   NOT NULL,
    recorded_at BIGINT NOT NULL,
    PRIMARY KEY (host, host_seq)
);

CREATE TABLE host_checkpoints (
    host        BYTEA  NOT NULL CHECK (octet_length(host) = 32),
    size        BYTEA  NOT NULL CHECK (octet_length(size) = 8),
    root        BYTEA  NOT NULL CHECK (octet_length(root) = 32),
    signature   BYTEA  NOT NULL CHECK (octet_length(signature) = 64),
    receipt_id  BYTEA  NOT NULL CHECK (octet_length(receipt_id) = 32),
    recorded_at BIGINT NOT NULL,
    PRIMARY KEY (host, size)
);

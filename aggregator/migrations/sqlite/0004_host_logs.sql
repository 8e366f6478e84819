-- Tally aggregator schema, version 4 (SQLite): receipts v2, host logs (docs/protocol.md
-- §4.2, §6.1).
--
-- A host no longer signs each receipt: it signs checkpoints of its own log, and the
-- aggregator follows each host's log. Version 1 receipts (hash-chained) are refused
-- everywhere (§9); a database that holds them is not continued (the aggregator refuses to
-- open it), since its host heads have no host-log frontier.
--
-- 1. `hosts.log_peaks`: the frontier of the host's log as far as it has been followed
--    (32 bytes per set bit of `last_seq`, leftmost first). `last_seq` is the host log's
--    size: receipts placed, accepted or refused. Empty for a host with no receipt.
-- 2. `host_refused`: host-signed receipts placed in their host's log but refused (a field
--    rule, the payer's signature or escrow, the fee, the channel): the log is followed past
--    them, so one payer can never stall a host, and their bundles stay evidence.
-- 3. `host_checkpoints`: every host checkpoint verified with a placed receipt, one per
--    host and size; a second root for a stored size is equivocation.
-- 4. `pending.reason`: a held-back receipt that its checks already refuse (it is still
--    host-signed, so it is placed when its turn comes); NULL for one that passed.
-- 5. `evidence.other_bytes`: the other bundle of an equivocation (with `bytes`, a proof
--    the contract takes).

ALTER TABLE hosts ADD COLUMN log_peaks BLOB NOT NULL DEFAULT X'';
ALTER TABLE pending ADD COLUMN reason TEXT;
ALTER TABLE evidence ADD COLUMN other_bytes BLOB;

CREATE TABLE host_refused (
    host        BLOB    NOT NULL,
    host_seq    BLOB    NOT NULL CHECK (typeof(host_seq) = 'blob' AND length(host_seq) = 8),
    id          BLOB    NOT NULL UNIQUE,
    bytes       BLOB    NOT NULL,
    reason      TEXT    NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (host, host_seq)
) WITHOUT ROWID;

CREATE TABLE host_checkpoints (
    host        BLOB    NOT NULL,
    size        BLOB    NOT NULL CHECK (typeof(size) = 'blob' AND length(size) = 8),
    root        BLOB    NOT NULL,
    signature   BLOB    NOT NULL,
    receipt_id  BLOB    NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (host, size)
) WITHOUT ROWID;

-- A sealing period with more channels than one settlement transaction can carry is sealed
-- as several consecutive batches of the same tree: a tree size may repeat across batches.
-- SQLite cannot drop a column's UNIQUE constraint, so the table is rebuilt.
CREATE TABLE batches_new (
    n           INTEGER NOT NULL PRIMARY KEY,
    header      BLOB    NOT NULL,
    signature   BLOB    NOT NULL,
    header_hash BLOB    NOT NULL,
    tree_size   INTEGER NOT NULL,
    root        BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
);
INSERT INTO batches_new (n, header, signature, header_hash, tree_size, root, created_at)
    SELECT n, header, signature, header_hash, tree_size, root, created_at FROM batches;
DROP TABLE batches;
ALTER TABLE batches_new RENAME TO batches;
CREATE INDEX batches_by_tree_size ON batches (tree_size);

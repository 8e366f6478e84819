-- A sealing period with more channels than one settlement transaction can carry is sealed
-- as several consecutive batches of the same tree: a tree size may repeat across batches.
ALTER TABLE batches DROP CONSTRAINT batches_tree_size_key;
CREATE INDEX batches_by_tree_size ON batches (tree_size);

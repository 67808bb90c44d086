//! The crash-safe storage engine: WAL, memtable, SSTables, manifest, compaction.

//! Immutable sorted tables on disk: written once ([`writer`]), read in place through an mmap
//! ([`reader`]), laid out as an rkyv archive plus a checksummed footer ([`format`]).

pub mod format;
pub mod reader;
pub mod writer;

pub use format::{TableEntry, parse_table_file_name, table_file_name};
pub use reader::SsTable;
pub use writer::write_table;

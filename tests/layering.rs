//! The "never" arrows between modules, checked by reading each source file's `use` lines
//! (STYLE: layers a test enforces). A forbidden import fails here with the file and the line.
//!
//! - `consensus` is sans-I/O: nothing from `net`, `storage`, `node`, `sim`, `replica`,
//!   `std::net`, `std::fs`, `std::thread`, `std::time::Instant`, mio, crossbeam or rand;
//! - `replica` drives the core without I/O: no `net`, `node`, `sim`, threads, channels, clocks
//!   or files;
//! - `node` does not import `sim` (shared pieces such as the seeded RNG live in `util`);
//! - `sim` does not import `net` or `node`;
//! - `api` (the client's vocabulary) is a leaf, and the client library does not import the
//!   state machine or the storage engine.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `use` statement of the file (joined when it spans lines), and every inline path.
fn imports(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if let Some((start, mut acc)) = current.take() {
            acc.push_str(trimmed);
            if trimmed.ends_with(';') {
                found.push((start, acc));
            } else {
                current = Some((start, acc));
            }
            continue;
        }
        let is_use = trimmed.starts_with("use ") || trimmed.starts_with("pub use ");
        if is_use {
            if trimmed.ends_with(';') {
                found.push((i + 1, trimmed.to_string()));
            } else {
                current = Some((i + 1, trimmed.to_string()));
            }
        } else if !trimmed.starts_with("//") {
            // Inline paths such as `crate::net::Foo` or `std::thread::spawn` count too.
            found.push((i + 1, trimmed.to_string()));
        }
    }
    found
}

fn violations(module: &str, forbidden: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(module);
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(!files.is_empty(), "no sources under {}", root.display());
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable source");
        for (line, stmt) in imports(&text) {
            let normalized = stmt.replace(' ', "");
            for bad in forbidden {
                if normalized.contains(bad) {
                    found.push(format!("{}:{line}: `{stmt}` uses {bad}", file.display()));
                }
            }
        }
    }
    found
}

fn assert_none(module: &str, forbidden: &[&str]) {
    let found = violations(module, forbidden);
    assert!(
        found.is_empty(),
        "{module} crosses a forbidden layer:\n{}",
        found.join("\n")
    );
}

#[test]
fn consensus_is_sans_io() {
    assert_none(
        "consensus",
        &[
            "crate::net",
            "crate::storage",
            "crate::node",
            "crate::sim",
            "crate::replica",
            "std::net",
            "std::fs",
            "std::thread",
            "time::Instant",
            "mio::",
            "crossbeam",
            "rand::",
        ],
    );
}

#[test]
fn replica_does_no_io_and_knows_no_runtime() {
    assert_none(
        "replica",
        &[
            "crate::net",
            "crate::node",
            "crate::sim",
            "crate::storage",
            "std::net",
            "std::fs",
            "std::thread",
            "std::sync::mpsc",
            "time::Instant",
            "SystemTime",
            "mio::",
            "crossbeam",
            "parking_lot",
        ],
    );
}

#[test]
fn node_does_not_import_the_simulator() {
    assert_none("node", &["crate::sim"]);
}

#[test]
fn the_simulator_does_not_import_the_runtime() {
    assert_none("sim", &["crate::net", "crate::node"]);
}

#[test]
fn the_client_library_does_not_pull_in_the_storage_engine() {
    assert_none("client", &["crate::kv", "crate::storage"]);
    assert_none("api", &["crate::"]);
}

#[test]
fn a_forbidden_import_is_found() {
    // The checker itself: a module that does use threads is reported.
    assert!(!violations("node", &["std::thread"]).is_empty());
}

//! Secret key files: one 32-byte secret as 64 lowercase hex characters and a newline.
//!
//! Invariants: a key file is only ever written with mode 0600, atomically (temp file in the same
//! directory, fsync, rename, fsync the directory), so a crash never leaves a half-written or
//! world-readable secret; a key file whose mode grants anything to group or others is refused
//! on read rather than silently used. Secrets come from the OS (getrandom), never a seeded RNG.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Why a key file cannot be used; worded to follow "PATH: ".
#[derive(Debug)]
pub enum KeyFileError {
    Missing,
    Unreadable(io::Error),
    /// Group or others may read or write it; `mode` is the permission bits.
    TooOpen {
        mode: u32,
    },
    NotHex,
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileError::Missing => write!(f, "key file does not exist"),
            KeyFileError::Unreadable(e) => write!(f, "cannot read key file: {e}"),
            KeyFileError::TooOpen { mode } => write!(
                f,
                "key file has mode {mode:04o}, readable beyond its owner; fix with: chmod 600 <file>"
            ),
            KeyFileError::NotHex => {
                write!(f, "key file must hold exactly 64 hex characters (32 bytes)")
            }
        }
    }
}

impl std::error::Error for KeyFileError {}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Parses exactly 64 hex characters (either case) into 32 bytes.
pub fn from_hex32(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Reads a secret key file, refusing one that is missing, too open, or not 64 hex characters.
pub fn read_secret(path: &Path) -> Result<[u8; 32], KeyFileError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(KeyFileError::Missing),
        Err(e) => return Err(KeyFileError::Unreadable(e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen { mode });
    }
    let text = fs::read_to_string(path).map_err(KeyFileError::Unreadable)?;
    from_hex32(text.trim()).ok_or(KeyFileError::NotHex)
}

/// Writes `secret` to `path` (replacing any file there) with mode 0600, atomically.
pub fn write_secret(path: &Path, secret: &[u8; 32]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "key path has no file name"))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    // A stale temp file may carry a wider mode; `mode` applies only on creation, so remove it.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(format!("{}\n", to_hex(secret)).as_bytes())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// A fresh Ed25519 secret from the OS.
pub fn new_signing_secret() -> Result<[u8; 32], String> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| format!("no OS randomness: {e}"))?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_bad_input() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 7) as u8);
        assert_eq!(from_hex32(&to_hex(&bytes)), Some(bytes));
        assert_eq!(from_hex32(&to_hex(&bytes).to_uppercase()), Some(bytes));
        assert_eq!(from_hex32("abc"), None);
        assert_eq!(from_hex32(&"zz".repeat(32)), None);
        assert_eq!(from_hex32(&"é".repeat(32)), None);
    }

    #[test]
    fn written_secret_is_0600_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.key");
        write_secret(&path, &[9; 32]).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_secret(&path).unwrap(), [9; 32]);
        write_secret(&path, &[3; 32]).unwrap();
        assert_eq!(read_secret(&path).unwrap(), [3; 32]);
    }

    #[test]
    fn open_missing_and_garbled_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.key");
        assert!(matches!(read_secret(&path), Err(KeyFileError::Missing)));
        write_secret(&path, &[1; 32]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::TooOpen { mode: 0o644 }));
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::write(&path, "not hex").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(read_secret(&path), Err(KeyFileError::NotHex)));
    }
}

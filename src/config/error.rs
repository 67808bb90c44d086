//! The one error type of config loading. Its text is always `FILE: field: problem` (or
//! `FILE: problem` when the problem already names its fields, like the committee-size rule), so
//! an operator with several node files knows which file and which line to fix.

use std::fmt;
use std::path::{Path, PathBuf};

/// A config file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file, as the operator named it.
    pub file: PathBuf,
    /// The offending field (`members[2].addr`), if the problem is about one.
    pub field: Option<String>,
    pub problem: String,
}

impl ConfigError {
    pub fn field(file: &Path, field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            field: Some(field.into()),
            problem: problem.into(),
        }
    }

    pub fn whole(file: &Path, problem: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            field: None,
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        write!(f, "{}", self.problem)
    }
}

impl std::error::Error for ConfigError {}

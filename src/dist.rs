//! The distributions a tier installs, as lock selection hands them to
//! fetch, materialize and transfer: one per package, with the file it comes
//! from (a pinned wheel or sdist) or the local folder it is built from.
//!
//! A neutral floor: every step that passes distributions along uses these
//! types, and they import nothing of those steps.

use std::path::PathBuf;

use crate::http::Origin;

/// Where to get an artifact's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Url(String),
    File(PathBuf),
}

impl Location {
    /// The same place, as the downloader takes it.
    pub fn origin(&self) -> Origin<'_> {
        match self {
            Self::Url(url) => Origin::Url(url),
            Self::File(path) => Origin::File(path),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Url(url) => f.write_str(url),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A file the lock pins: location, file name, size and sha256 (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedFile {
    pub location: Location,
    pub filename: String,
    pub size: Option<u64>,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Wheel(PinnedFile),
    /// No wheel fits the interpreter: build this sdist.
    Sdist(PinnedFile),
    /// A project folder on this machine (absolute path), built with uv;
    /// `editable` puts its source on `sys.path` instead of its built files.
    Local {
        path: PathBuf,
        editable: bool,
    },
}

/// The distribution to install for one package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub name: String,
    pub version: String,
    pub source: Source,
}

impl Selected {
    /// The file the lock pins, unless the source is a local folder.
    pub fn pinned(&self) -> Option<&PinnedFile> {
        match &self.source {
            Source::Wheel(f) | Source::Sdist(f) => Some(f),
            Source::Local { .. } => None,
        }
    }

    /// What the user sees for it: the file name, or the folder.
    pub fn label(&self) -> String {
        match &self.source {
            Source::Wheel(f) | Source::Sdist(f) => f.filename.clone(),
            Source::Local { path, .. } => path.display().to_string(),
        }
    }
}

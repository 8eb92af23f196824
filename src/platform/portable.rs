//! [`crate::platform`] for systems other than Linux, in plain std code.
//!
//! What has no portable form is done without: no atomic swap (the caller
//! renames in two steps), no reflinks through [`Dir`] (the linker's own
//! path tries them), no shared-extent count, no death signal for children.
//! [`Dir`] keeps a path rather than a descriptor, so each call walks it.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

pub fn exchange(_a: &Path, _b: &Path) -> io::Result<bool> {
    Ok(false)
}

pub fn sync_filesystem(_dir: &std::fs::File) -> io::Result<()> {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
    Ok(())
}

pub fn kill_with_parent(cmd: &mut std::process::Command) -> &mut std::process::Command {
    cmd
}

pub fn shared_bytes(_path: &Path) -> io::Result<u64> {
    Ok(0)
}

pub fn reserves_blocks(_path: &Path) -> bool {
    false
}

pub fn reserve_blocks(_file: &std::fs::File, _len: u64) -> io::Result<bool> {
    Ok(false)
}

/// A directory, by path.
pub struct Dir {
    path: PathBuf,
}

impl Dir {
    /// Opens the directory at `path` (not following a symlink there).
    pub fn open(path: &Path) -> io::Result<Self> {
        if !std::fs::symlink_metadata(path)?.is_dir() {
            return Err(io::Error::from(io::ErrorKind::NotADirectory));
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// Opens the directory at `path`, relative to this one.
    pub fn open_at(&self, path: &Path) -> io::Result<Self> {
        Self::open(&self.path.join(path))
    }

    /// Creates the directory `name` in this one, with `mode` less the umask.
    pub fn make_dir(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(mode)
            .create(self.path.join(name))
    }

    /// Creates the file `name` in this one, failing if anything is there,
    /// with `mode` less the umask.
    pub fn create_new(&self, name: &OsStr, mode: u32) -> io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(self.path.join(name))
    }

    /// Hardlinks `name` in this directory to `to_name` in `to`.
    pub fn hard_link(&self, name: &OsStr, to: &Dir, to_name: &OsStr) -> io::Result<()> {
        std::fs::hard_link(self.path.join(name), to.path.join(to_name))
    }

    /// Always fails: callers fall back to the linker, which knows the
    /// system's own way to clone a file.
    pub fn reflink(
        &self,
        _name: &OsStr,
        _to: &Dir,
        _to_name: &OsStr,
        _mode: u32,
    ) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

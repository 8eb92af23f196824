//! Whose each entry of the store's `tmp/` is, and removing it once that
//! process is gone.
//!
//! Names made by [`Store::temp_path`] and [`temp_dir`] carry the pid of the
//! process that made them: `<prefix>-<pid>-<suffix>`. So:
//!
//! - opening a store removes the entries of processes that no longer exist
//!   (one readdir of `tmp/`), so an interrupted download does not wait for
//!   `gc`;
//! - on SIGINT or SIGTERM the binary calls [`remove_own`], which removes this
//!   process's entries in every store it opened, and the files outside the
//!   store held by an [`OwnFile`].

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use anyhow::Context;

use super::{Store, process_alive};

/// What [`remove_own`] removes.
struct Owned {
    tmp_dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
}

static OWNED: Mutex<Owned> = Mutex::new(Owned {
    tmp_dirs: Vec::new(),
    files: Vec::new(),
});

fn owned() -> MutexGuard<'static, Owned> {
    // A thread that panicked while holding the lock left whole entries:
    // pushing and removing paths cannot be half done.
    OWNED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The pid in a temp name `<prefix>-<pid>-<suffix>`.
pub fn owner_pid(name: &str) -> Option<i32> {
    let mut parts = name.split('-');
    parts.next()?;
    let pid = parts.next()?.parse().ok()?;
    parts.next().map(|_| pid)
}

/// A temp directory in the store's `tmp/` named `<prefix>-<pid>-<random>`,
/// removed when dropped.
pub fn temp_dir(store: &Store, prefix: &str) -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{prefix}-{}-", std::process::id()))
        .tempdir_in(store.tmp_dir())
}

/// Part of opening a store: remembers its `tmp/` for [`remove_own`] and
/// removes what dead processes left there.
pub(super) fn on_open(store: &Store) -> anyhow::Result<()> {
    let tmp = store.tmp_dir();
    {
        let mut owned = owned();
        if !owned.tmp_dirs.contains(&tmp) {
            owned.tmp_dirs.push(tmp.clone());
        }
    }
    // A process holding the store lock may be one whose pid this process
    // cannot see (another pid namespace sharing the store): its temp files
    // look orphaned but are in use. gc, which holds the lock exclusively,
    // removes them later.
    let Some(_exclusive) = try_lock_exclusive(&store.usage_lock())? else {
        return Ok(());
    };
    let entries = fs_err::read_dir(&tmp).context("cannot list the store's tmp folder")?;
    let me = std::process::id() as i32;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = owner_pid(&name.to_string_lossy()) else {
            continue;
        };
        if pid != me && !process_alive(pid) {
            // Best effort: what cannot be removed now is retried by the next
            // run, and gc reports it.
            let _ = remove_entry(&entry.path());
        }
    }
    Ok(())
}

/// The lock file held exclusively, or `None` when another process holds it.
fn try_lock_exclusive(path: &Path) -> anyhow::Result<Option<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(crate::fsinfo::FILE_MODE)
        .open(path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    // std's file locks are flock(2) on unix, released when `file` closes.
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(err)) => {
            Err(err).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

fn remove_entry(path: &Path) -> std::io::Result<()> {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(err) => Err(err),
    };
    match removed {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// Removes `path` although this run's other threads may still be writing
/// into it: a file they create while `remove_dir_all` walks a folder makes
/// it fail (not empty), so it is tried again. Once the folder is gone they
/// cannot create anything in it. Exiting anyway: the next run removes what
/// is still left.
fn remove_while_written(path: &Path) {
    for _ in 0..REMOVE_TRIES {
        if remove_entry(path).is_ok() {
            return;
        }
    }
}

/// Attempts at removing a temp folder that is being written into.
const REMOVE_TRIES: usize = 8;

/// Removes this process's temp entries in every store it opened and every
/// live [`OwnFile`]: what an interrupted run does before it exits.
pub fn remove_own() {
    let me = std::process::id() as i32;
    let owned = owned();
    for tmp in &owned.tmp_dirs {
        let Ok(entries) = std::fs::read_dir(tmp) else {
            continue;
        };
        for entry in entries.flatten() {
            if owner_pid(&entry.file_name().to_string_lossy()) == Some(me) {
                remove_while_written(&entry.path());
            }
        }
    }
    for file in &owned.files {
        let _ = remove_entry(file);
    }
}

/// A temp file outside the store (uv's lock output, which must sit beside
/// the final lock), removed when dropped or by [`remove_own`].
pub struct OwnFile {
    path: PathBuf,
}

impl OwnFile {
    pub fn new(path: PathBuf) -> Self {
        owned().files.push(path.clone());
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OwnFile {
    fn drop(&mut self) {
        let _ = remove_entry(&self.path);
        owned().files.retain(|file| file != &self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_is_the_second_part_of_a_temp_name() {
        assert_eq!(owner_pid("download-4242-1a2b3c"), Some(4242));
        assert_eq!(owner_pid("build-77-Xy9Qz"), Some(77));
        assert_eq!(owner_pid("download-4242"), None);
        assert_eq!(owner_pid("lockXyz"), None);
        assert_eq!(owner_pid("notes-abc-1"), None);
    }
}

//! The pycs Python wrote in a venv, shared: each goes into the store (see
//! [`crate::store::written_pycs`]) and the venv's copy becomes a link to
//! it, so one pyc per source serves every venv instead of one per venv.
//!
//! A lazy tier's venvs get the shared pycs when they are next built; the
//! venvs that wrote them are linked here. Each file is replaced atomically
//! (linked beside its name, then renamed over it), so Python, even one
//! importing at that moment, reads the old pyc or the shared one, both
//! valid for the source.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::bytecode::{TEMP_MARK, is_stale_temp};
use crate::link::{LinkMethod, Linker};
use crate::store::db::EMPTY_SOURCE;
use crate::store::written_pycs::PycTaker;
use crate::store::{ObjectKey, Store};

/// What sharing one venv's written pycs did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SharedPycs {
    /// Pycs now linked to a store object (taken, or the store's own).
    pub linked: usize,
    /// Of those, pycs the store did not have before.
    pub taken: usize,
    /// Bytes of the venv's own copies the links replaced (hardlinks only:
    /// a reflink's freed blocks cannot be told apart).
    pub bytes_freed: u64,
    /// Pycs that no longer match their source, left alone.
    pub stale: usize,
}

impl std::ops::AddAssign for SharedPycs {
    fn add_assign(&mut self, other: Self) {
        self.linked += other.linked;
        self.taken += other.taken;
        self.bytes_freed += other.bytes_freed;
        self.stale += other.stale;
    }
}

/// A pyc Python wrote: no other link to it.
struct Written {
    pyc: PathBuf,
    size: u64,
}

/// Shares the pycs Python wrote in the venv (or generation) at `venv`,
/// whose files were placed with `method`.
pub fn share_written_pycs(
    store: &Store,
    venv: &Path,
    method: LinkMethod,
) -> anyhow::Result<SharedPycs> {
    let written = written_pycs(&venv.join("lib"))?;
    if written.is_empty() {
        return Ok(SharedPycs::default());
    }
    let mut taker = PycTaker::start(store, &venv.join("bin/python"))?;
    let suffix = format!(".{}.pyc", taker.cache_tag());
    let mut sources = Vec::new();
    for file in written {
        if let Some(source) = source_of(&file.pyc, &suffix)
            && let Some(key) = store_source_key(store, &source)?
        {
            sources.push((file, source, key));
        }
    }
    let keys: Vec<String> = sources.iter().map(|(_, _, key)| key.clone()).collect();
    let known: HashMap<String, ObjectKey> = store
        .db
        .bytecode_of(&keys)?
        .into_iter()
        .filter(|row| row.tag == taker.tag())
        .filter_map(|row| Some((row.source, row.pyc?.0)))
        .collect();
    let mut report = SharedPycs::default();
    let mut to_link = Vec::new();
    for (file, source, key) in sources {
        match known.get(&key) {
            // A reflinked or copied pyc of the store's is a file of its own
            // too: only a hardlink tells it apart from one Python wrote.
            Some(_) if method != LinkMethod::Hardlink => {}
            Some(object) => to_link.push((file, *object)),
            None => match taker.take(&key, &source, &file.pyc)? {
                Some((object, _)) => {
                    report.taken += 1;
                    to_link.push((file, object));
                }
                None => report.stale += 1,
            },
        }
    }
    // Recorded before any venv links them: gc keeps what the index names.
    taker.finish(store)?;
    if method == LinkMethod::Copy {
        return Ok(report);
    }
    let linker = Linker::with_method(method, store);
    for (file, object) in to_link {
        replace_with_link(&linker, store, &object, &file.pyc)?;
        report.linked += 1;
        if method == LinkMethod::Hardlink {
            report.bytes_freed += file.size;
        }
    }
    Ok(report)
}

/// Every pyc in a `__pycache__` under `dir` that is no link to anything.
fn written_pycs(dir: &Path) -> anyhow::Result<Vec<Written>> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let in_cache = dir.file_name().is_some_and(|n| n == "__pycache__");
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if in_cache && is_stale_temp(&entry.file_name()) {
                let _ = std::fs::remove_file(entry.path());
            } else if in_cache
                && kind.is_file()
                && entry.file_name().to_string_lossy().ends_with(".pyc")
            {
                // Gone meanwhile: Python renames its pycs into place.
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                if meta.nlink() == 1 {
                    found.push(Written {
                        pyc: entry.path(),
                        size: meta.len(),
                    });
                }
            }
        }
    }
    Ok(found)
}

/// The source a pyc named `<module><suffix>` was written for, when it is
/// there: `__pycache__/x.cpython-311.pyc` → `x.py`. Optimized pycs
/// (`x.cpython-311.opt-1.pyc`) and other interpreters' are not.
fn source_of(pyc: &Path, suffix: &str) -> Option<PathBuf> {
    let name = pyc.file_name()?.to_str()?;
    let module = name.strip_suffix(suffix)?;
    let source = pyc.parent()?.parent()?.join(format!("{module}.py"));
    source.is_file().then_some(source)
}

/// The `bytecode` table's key of `source` when the store has its content:
/// its object key, or [`EMPTY_SOURCE`]; `None` for a file of the user's.
fn store_source_key(store: &Store, source: &Path) -> anyhow::Result<Option<String>> {
    let bytes = fs_err::read(source)?;
    if bytes.is_empty() {
        return Ok(Some(EMPTY_SOURCE.to_string()));
    }
    let hash = *blake3::hash(&bytes).as_bytes();
    Ok([false, true]
        .into_iter()
        .map(|executable| ObjectKey { hash, executable })
        .find(|key| store.object_path(key).is_file())
        .map(|key| key.to_string()))
}

/// Links `object` beside `pyc`, then renames the link over it.
fn replace_with_link(
    linker: &Linker,
    store: &Store,
    object: &ObjectKey,
    pyc: &Path,
) -> anyhow::Result<()> {
    let mut temp_name = pyc.file_name().unwrap_or_default().to_owned();
    temp_name.push(format!("{TEMP_MARK}{}", std::process::id()));
    let temp = pyc.with_file_name(temp_name);
    let _ = std::fs::remove_file(&temp);
    linker
        .link(&store.object_path(object), &temp, false)
        .with_context(|| format!("cannot link a shared pyc at {}", temp.display()))?;
    fs_err::rename(&temp, pyc)?;
    Ok(())
}

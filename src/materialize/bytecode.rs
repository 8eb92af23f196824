//! Bytecode off the critical path.
//!
//! A generation is built and switched to with the pycs the store already
//! has, so the venv is usable at once; the missing ones are compiled
//! afterwards (see [`crate::store::bytecode`]) and linked into that same
//! generation's `__pycache__` directories. Each pyc is linked beside its
//! final name and renamed into place, so Python finds either no pyc (and
//! imports from source, as in any venv) or the whole one; a pyc Python
//! wrote itself meanwhile is replaced. `__pycache__` stays a real directory.
//!
//! Only when every pyc is in is the generation recorded as its complete
//! plan (manifest, generation row, `pyvenv.cfg` keys); until then the venv
//! carries a pending key (see [`super::venv::bytecode_pending`]) and no
//! inputs key, so a run killed while compiling leaves a working venv that
//! the next run finishes instead of calling it up to date.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::Context;
use rayon::prelude::*;

use super::plan::{FileSource, Plan, PlannedFile};
use crate::link::Linker;
use crate::store::Store;

/// The files of `complete` that a generation built from `base` lacks, when
/// they are all pycs linked from the store and `base` is otherwise the same
/// (every file at the same path from the same source); `None` otherwise.
pub fn missing_files<'p>(base: &[PlannedFile], complete: &'p Plan) -> Option<Vec<&'p PlannedFile>> {
    let base: HashMap<&Path, &FileSource> =
        base.iter().map(|f| (f.dest.as_path(), &f.source)).collect();
    let mut matched = 0;
    let mut missing = Vec::new();
    for file in &complete.files {
        match base.get(file.dest.as_path()) {
            Some(source) if **source == file.source => matched += 1,
            Some(_) => return None,
            None if is_linked_pyc(file) => missing.push(file),
            None => return None,
        }
    }
    (matched == base.len()).then_some(missing)
}

/// A pyc in a `__pycache__` directory, linked from a store object.
pub(super) fn is_linked_pyc(file: &PlannedFile) -> bool {
    matches!(file.source, FileSource::Object(_))
        && file.dest.extension().is_some_and(|e| e == "pyc")
        && file
            .dest
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|d| d == "__pycache__")
}

/// Links `files` (pycs, from [`missing_files`]) into the venv at `root`,
/// each atomically: linked beside its name, then renamed over it.
pub fn place(
    root: &Path,
    files: &[&PlannedFile],
    store: &Store,
    linker: &Linker,
) -> anyhow::Result<()> {
    let suffix = format!("{TEMP_MARK}{}", std::process::id());
    remove_stale_temps(root, files);
    files.par_iter().try_for_each(|file| {
        let FileSource::Object(key) = &file.source else {
            anyhow::bail!("{} is not a store object", file.dest.display());
        };
        let dest = root.join(&file.dest);
        let dir = dest.parent().unwrap_or(root);
        crate::fsinfo::create_dir_all_with_mode(dir, crate::fsinfo::DIR_MODE)?;
        let mut temp_name = dest.file_name().unwrap_or_default().to_owned();
        temp_name.push(&suffix);
        let temp = dir.join(temp_name);
        let _ = std::fs::remove_file(&temp);
        linker
            .link(&store.object_path(key), &temp, key.executable)
            .and_then(|()| std::fs::rename(&temp, &dest))
            .with_context(|| format!("cannot link bytecode to {}", dest.display()))?;
        // Renaming a link over another link of the same inode leaves both.
        let _ = std::fs::remove_file(&temp);
        Ok(())
    })
}

/// What a pyc linked beside its final name carries, before the pid of the
/// process linking it.
pub(super) const TEMP_MARK: &str = ".tstore-";

/// Removes pycs a killed run linked beside their names and never renamed
/// into place, in the `__pycache__` directories `files` go to: Python
/// ignores them, but nothing else would ever delete them.
fn remove_stale_temps(root: &Path, files: &[&PlannedFile]) {
    let dirs: HashSet<&Path> = files.iter().filter_map(|f| f.dest.parent()).collect();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            if is_stale_temp(&entry.file_name()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// A link named `<file>.tstore-<pid>` by a run that is gone.
pub(super) fn is_stale_temp(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .and_then(|n| n.rsplit_once(TEMP_MARK))
        .and_then(|(_, pid)| pid.parse::<i32>().ok())
        .is_some_and(|pid| !crate::platform::process_exists(pid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ObjectKey;
    use std::path::PathBuf;
    use std::sync::Arc;

    fn object(n: u8) -> FileSource {
        FileSource::Object(ObjectKey {
            hash: [n; 32],
            executable: false,
        })
    }

    fn file(dest: &str, source: FileSource) -> PlannedFile {
        PlannedFile {
            dest: PathBuf::from(dest),
            source,
            dist: Arc::from("pkg"),
        }
    }

    fn plan(files: Vec<PlannedFile>) -> Plan {
        Plan {
            files,
            ..Plan::default()
        }
    }

    #[test]
    fn only_pycs_missing_from_an_otherwise_equal_generation_are_completed() {
        let base = vec![
            file("site/pkg/a.py", object(1)),
            file("site/pkg/b.py", object(2)),
            file("site/pkg/__pycache__/a.cpython-311.pyc", object(3)),
        ];
        let pyc = file("site/pkg/__pycache__/b.cpython-311.pyc", object(4));
        let complete = plan([base.clone(), vec![pyc.clone()]].concat());
        let missing = missing_files(&base, &complete).unwrap();
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].dest, pyc.dest);

        // Nothing missing: nothing to link.
        assert!(
            missing_files(&complete.files, &complete)
                .unwrap()
                .is_empty()
        );
        // A file that is not bytecode, or changed, or gone: not completable.
        let other = plan([base.clone(), vec![file("site/pkg/c.py", object(5))]].concat());
        assert!(missing_files(&base, &other).is_none());
        let changed = plan(vec![
            file("site/pkg/a.py", object(9)),
            base[1].clone(),
            base[2].clone(),
        ]);
        assert!(missing_files(&base, &changed).is_none());
        assert!(missing_files(&base, &plan(base[..2].to_vec())).is_none());
        // A pyc written, not linked, is not bytecode tstore completes.
        let written = file(
            "site/pkg/__pycache__/b.cpython-311.pyc",
            FileSource::Content(b"x".to_vec(), 0o644),
        );
        assert!(missing_files(&base, &plan([base.clone(), vec![written]].concat())).is_none());
    }

    #[test]
    fn pycs_a_killed_run_left_beside_their_names_are_removed_and_live_ones_kept() {
        let root = tempfile::tempdir().unwrap();
        let cache = root.path().join("site/pkg/__pycache__");
        fs_err::create_dir_all(&cache).unwrap();
        // No process has a pid this large (the kernel's limit is 2^22).
        let dead = cache.join("a.cpython-311.pyc.tstore-99999999");
        let ours = cache.join(format!("a.cpython-311.pyc.tstore-{}", std::process::id()));
        let pyc = cache.join("a.cpython-311.pyc");
        for path in [&dead, &ours, &pyc] {
            fs_err::write(path, b"x").unwrap();
        }
        let missing = file("site/pkg/__pycache__/b.cpython-311.pyc", object(4));
        remove_stale_temps(root.path(), &[&missing]);
        assert!(!dead.exists());
        assert!(ours.exists(), "a running process's link is its own");
        assert!(pyc.exists());
    }
}

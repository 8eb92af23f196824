//! gc's last step: count what the deletions free, then delete.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::fsinfo;
use crate::progress::Progress;

/// Bytes freed by deleting `paths` (directories whole) and `objects`, and
/// bytes of objects kept alive by links outside the deletion.
pub fn count_freed(paths: &[PathBuf], objects: &[PathBuf]) -> (u64, u64) {
    let mut files: Vec<PathBuf> = Vec::new();
    for path in paths {
        if path.is_dir() {
            fsinfo::walk_files(path, &mut files);
        } else {
            files.push(path.clone());
        }
    }
    count_freed_files(&files, objects)
}

/// Deletes `paths` (files or whole directories); what cannot be removed is
/// reported and skipped.
pub fn delete<'a>(paths: impl IntoIterator<Item = &'a PathBuf>, progress: &dyn Progress) {
    for path in paths {
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        };
        if let Err(err) = removed
            && err.kind() != std::io::ErrorKind::NotFound
        {
            progress.notice(&format!("cannot remove {}: {err}", path.display()));
        }
    }
}

/// Whether a store temp entry is left over: its owner process is gone, or,
/// for entries named without an owner (uv work dirs), it is over a day old.
pub fn is_stale_temp(entry: &std::fs::DirEntry) -> bool {
    if let Some(pid) = crate::store::tmp::owner_pid(&entry.file_name().to_string_lossy()) {
        return pid as u32 != std::process::id() && !crate::store::process_alive(pid);
    }
    entry
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() > 86_400)
}

/// A file frees its allocated blocks only if every link to its inode is
/// being deleted, less the extents it shares with other files (reflinks).
fn count_freed_files(files: &[PathBuf], objects: &[PathBuf]) -> (u64, u64) {
    struct Inode {
        links_deleted: u64,
        nlink: u64,
        allocated: u64,
        shared: u64,
        is_object: bool,
    }
    let mut inodes: HashMap<(u64, u64), Inode> = HashMap::new();
    let object_set: HashSet<&PathBuf> = objects.iter().collect();
    for path in files.iter().chain(objects) {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let entry = inodes
            .entry((meta.dev(), meta.ino()))
            .or_insert_with(|| Inode {
                links_deleted: 0,
                nlink: meta.nlink(),
                allocated: fsinfo::allocated(&meta),
                shared: fsinfo::shared_bytes(path),
                is_object: false,
            });
        entry.links_deleted += 1;
        entry.is_object |= object_set.contains(path);
    }
    let mut freed = 0;
    let mut still_linked = 0;
    for inode in inodes.values() {
        if inode.links_deleted >= inode.nlink {
            freed += inode.allocated.saturating_sub(inode.shared);
        } else if inode.is_object {
            still_linked += inode.allocated;
        }
    }
    (freed, still_linked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_linked_from_outside_the_deletion_frees_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let object = dir.path().join("object");
        std::fs::write(&object, vec![7u8; 64 * 1024]).unwrap();
        let outside = dir.path().join("venv-file");
        std::fs::hard_link(&object, &outside).unwrap();
        let (freed, still_linked) = count_freed(&[], std::slice::from_ref(&object));
        assert_eq!(freed, 0);
        assert!(still_linked > 0);
        // Deleting both links frees the blocks.
        let (freed, still_linked) = count_freed(&[outside], &[object]);
        assert!(freed > 0);
        assert_eq!(still_linked, 0);
    }
}

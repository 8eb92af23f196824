//! What the disk actually holds: allocated blocks, extents shared with other
//! files (reflinks), free space. `gc` and `du` count bytes with these, never
//! with file sizes.
//!
//! Also the modes tstore gives what it creates: directories 0755, written
//! files 0644 (0755 when executable), set explicitly so that no umask makes
//! them writable by group or others.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every directory tstore creates.
pub const DIR_MODE: u32 = 0o755;
/// Mode of every non-executable file tstore writes (objects excepted: 0444).
pub const FILE_MODE: u32 = 0o644;
/// Mode of every executable file tstore writes (objects excepted: 0555).
pub const EXEC_MODE: u32 = 0o755;

/// `create_dir_all`, giving each directory it creates `mode` whatever the
/// umask; directories that exist are left as they are.
pub fn create_dir_all_with_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all_with_mode(parent, mode)?;
    }
    let with_path = |err: std::io::Error| {
        std::io::Error::new(
            err.kind(),
            format!("cannot create directory {}: {err}", path.display()),
        )
    };
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(with_path)
        }
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(err) => Err(with_path(err)),
    }
}

/// Writes `contents` to `path` (created or truncated) and gives it `mode`
/// whatever the umask.
pub fn write_with_mode(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let with_path = |err: std::io::Error| {
        std::io::Error::new(
            err.kind(),
            format!("cannot write {}: {err}", path.display()),
        )
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(with_path)?;
    file.write_all(contents).map_err(with_path)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(with_path)
}

/// The mode a written copy of a file with mode `like` gets: [`EXEC_MODE`]
/// if anyone may execute it, else [`FILE_MODE`].
pub fn file_mode_like(like: u32) -> u32 {
    if like & 0o111 != 0 {
        EXEC_MODE
    } else {
        FILE_MODE
    }
}

/// Bytes the filesystem allocated for a file (`st_blocks`).
pub fn allocated(meta: &std::fs::Metadata) -> u64 {
    meta.blocks() * 512
}

/// Bytes of a file's extents that are shared with other files (reflinks,
/// deduplication). 0 where the filesystem does not report extents (tmpfs)
/// or shares none.
pub fn shared_bytes(path: &Path) -> u64 {
    crate::platform::shared_bytes(path).unwrap_or(0)
}

/// Free bytes for unprivileged use on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    crate::platform::free_bytes(path)
}

/// Every entry under `dir` that is not a directory (files, symlinks, …),
/// without following symlinks. Callers that count bytes check the type.
pub fn walk_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk_files(&entry.path(), out),
            Ok(_) => out.push(entry.path()),
            Err(_) => {}
        }
    }
}

/// Every entry under `dir`, directories included (each before what it
/// holds), without following symlinks.
pub fn walk_all(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        out.push(path.clone());
        if is_dir {
            walk_all(&path, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_file_shares_nothing_and_has_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 64 << 10]).unwrap();
        assert_eq!(shared_bytes(&path), 0);
        assert!(allocated(&std::fs::metadata(&path).unwrap()) >= 64 << 10);
        assert!(free_bytes(dir.path()).unwrap() > 0);
    }

    #[test]
    fn modes_are_set_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        // Group-writable modes, which the usual umask (022) would take away.
        create_dir_all_with_mode(&deep, 0o775).unwrap();
        write_with_mode(&deep.join("f"), b"x", 0o664).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        for sub in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&dir.path().join(sub)), 0o775, "{sub}");
        }
        assert_eq!(mode(&deep.join("f")), 0o664);
        assert_eq!(fs_err::read(deep.join("f")).unwrap(), b"x");
        // What exists is left alone.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        create_dir_all_with_mode(&deep.join("d"), DIR_MODE).unwrap();
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&deep), 0o775);
        assert_eq!(mode(&deep.join("d")), DIR_MODE);
    }
}

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
/// deduplication), from FIEMAP. 0 where the filesystem does not report
/// extents (tmpfs) or shares none.
pub fn shared_bytes(path: &Path) -> u64 {
    fiemap_shared(path).unwrap_or(0)
}

/// Free bytes for unprivileged use on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: statvfs writes into the zeroed struct we own.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

#[cfg(target_os = "linux")]
fn fiemap_shared(path: &Path) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;

    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
    const FIEMAP_FLAG_SYNC: u32 = 0x1;
    const FIEMAP_EXTENT_LAST: u32 = 0x1;
    const FIEMAP_EXTENT_SHARED: u32 = 0x2000;
    const BATCH: usize = 64;

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Extent {
        logical: u64,
        physical: u64,
        length: u64,
        reserved64: [u64; 2],
        flags: u32,
        reserved: [u32; 3],
    }
    #[repr(C)]
    struct Request {
        start: u64,
        length: u64,
        flags: u32,
        mapped_extents: u32,
        extent_count: u32,
        reserved: u32,
        extents: [Extent; BATCH],
    }

    let file = std::fs::File::open(path)?;
    let mut shared = 0u64;
    let mut start = 0u64;
    loop {
        let mut request = Request {
            start,
            length: u64::MAX - start,
            flags: FIEMAP_FLAG_SYNC,
            mapped_extents: 0,
            extent_count: BATCH as u32,
            reserved: 0,
            extents: [Extent::default(); BATCH],
        };
        // SAFETY: FS_IOC_FIEMAP fills `request`, which has room for BATCH extents.
        if unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut request) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mapped = request.mapped_extents as usize;
        if mapped == 0 {
            return Ok(shared);
        }
        for extent in &request.extents[..mapped] {
            if extent.flags & FIEMAP_EXTENT_SHARED != 0 {
                shared += extent.length;
            }
            if extent.flags & FIEMAP_EXTENT_LAST != 0 {
                return Ok(shared);
            }
        }
        let last = request.extents[mapped - 1];
        start = last.logical + last.length;
    }
}

#[cfg(not(target_os = "linux"))]
fn fiemap_shared(_path: &Path) -> std::io::Result<u64> {
    Ok(0)
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

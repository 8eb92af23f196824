//! What tstore asks of the operating system beyond std, in one place.
//!
//! `linux.rs` holds the Linux calls (`renameat2`, `FICLONE`, `FIEMAP`, `fallocate`,
//! `syncfs`, `PR_SET_PDEATHSIG`, and `openat`/`mkdirat`/`linkat` on directory
//! descriptors); `portable.rs` gives every other system the same functions in
//! plain std code, doing without what has no portable form. A port to another
//! system (macOS: `clonefileat`, `renameatx_np`, `F_FULLFSYNC`) replaces the
//! portable file with its own. The POSIX calls every unix has (`statvfs`,
//! `kill`, errno values) are here, shared by both.
//!
//! Nothing here knows anything else of tstore.

use std::io;
use std::path::Path;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as imp;

#[cfg(not(target_os = "linux"))]
mod portable;
#[cfg(not(target_os = "linux"))]
use portable as imp;

/// A directory, opened once so that the names under it are resolved from it
/// rather than from a long path each time. See [`Dir::open`].
pub use imp::Dir;

/// Swaps the paths `a` and `b` in one step (Linux: `renameat2` with
/// `RENAME_EXCHANGE`). `Ok(false)` when the system or filesystem cannot;
/// the caller then renames in two steps.
pub fn exchange(a: &Path, b: &Path) -> io::Result<bool> {
    imp::exchange(a, b)
}

/// Flushes everything written to the filesystem holding `dir` to stable
/// storage (Linux: `syncfs`; elsewhere `sync`, which flushes every
/// filesystem).
pub fn sync_filesystem(dir: &std::fs::File) -> io::Result<()> {
    imp::sync_filesystem(dir)
}

/// Bytes of the file's extents that are shared with other files (reflinks,
/// deduplication). Linux reads them with FIEMAP; elsewhere, and on
/// filesystems that report no extents (tmpfs), `Ok(0)`.
pub fn shared_bytes(path: &Path) -> io::Result<u64> {
    imp::shared_bytes(path)
}

/// Reserves the blocks for the first `len` bytes of `file` (Linux:
/// `fallocate`), so that writing them through a memory map cannot meet a
/// full disk, which a mapping reports as SIGBUS rather than as an error.
/// `Ok(false)` where tstore cannot count on that: filesystems other than
/// ext4, XFS and tmpfs (a copy-on-write or compressing one may need new
/// blocks for a write into reserved ones; some accept the call and reserve
/// nothing), and systems other than Linux. A full disk is `Err`.
pub fn reserve_blocks(file: &std::fs::File, len: u64) -> io::Result<bool> {
    imp::reserve_blocks(file, len)
}

/// Whether [`reserve_blocks`] can reserve on the filesystem holding `path`;
/// where it cannot, tstore writes and reads nothing there through a memory
/// map.
pub fn reserves_blocks(path: &Path) -> bool {
    imp::reserves_blocks(path)
}

/// A temp folder where blocks can be reserved (the system's, else the
/// tmpfs Linux mounts at `/dev/shm`), and whether they can. With
/// `TSTORE_REQUIRE_RESERVE` set (`.ci/run` sets it where the suite's folder
/// or `/dev/shm` can), finding none is a failure, not a skip.
#[cfg(test)]
pub(crate) fn reserving_tempdir() -> (ScratchDir, bool) {
    let dir = tempfile::tempdir().unwrap();
    if reserves_blocks(dir.path()) {
        return (ScratchDir { dir, _shm: None }, true);
    }
    match tempfile::tempdir_in("/dev/shm") {
        Ok(shm) if reserves_blocks(shm.path()) => {
            // Containers give /dev/shm 64 MiB: its users take turns.
            static SHM: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let turn = SHM.lock().unwrap_or_else(|e| e.into_inner());
            let scratch = ScratchDir {
                dir: shm,
                _shm: Some(turn),
            };
            (scratch, true)
        }
        _ => {
            assert!(
                std::env::var_os("TSTORE_REQUIRE_RESERVE").is_none(),
                "TSTORE_REQUIRE_RESERVE is set, but no temp folder here can reserve blocks"
            );
            eprintln!("note: no folder here where blocks can be reserved");
            (ScratchDir { dir, _shm: None }, false)
        }
    }
}

/// A temp folder from [`reserving_tempdir`], removed when dropped.
#[cfg(test)]
pub(crate) struct ScratchDir {
    dir: tempfile::TempDir,
    _shm: Option<std::sync::MutexGuard<'static, ()>>,
}

#[cfg(test)]
impl ScratchDir {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Makes `cmd`'s process receive SIGKILL when the thread that spawns it
/// ends (Linux: `PR_SET_PDEATHSIG`). Elsewhere it does nothing: the child
/// outlives a tstore killed by SIGKILL.
pub fn kill_with_parent(cmd: &mut std::process::Command) -> &mut std::process::Command {
    imp::kill_with_parent(cmd)
}

/// Free bytes for unprivileged use on the filesystem holding `path`
/// (POSIX `statvfs`).
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: statvfs writes into the zeroed struct we own.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between systems
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// The most hardlinks a file on the filesystem holding `path` may have
/// (POSIX `pathconf(_PC_LINK_MAX)`); `None` when the system names no limit
/// or cannot say.
pub fn link_max(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: c_path outlives the call, which only reads it.
    let limit = unsafe { libc::pathconf(c_path.as_ptr(), libc::_PC_LINK_MAX) };
    u64::try_from(limit).ok()
}

/// Whether a process with this pid exists (POSIX `kill` with signal 0).
pub fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

/// Sets the niceness of the process `pid` (POSIX `setpriority`): a
/// positive value makes work started in the background yield the CPU to
/// work someone is waiting for.
pub fn set_niceness(pid: u32, niceness: i32) -> io::Result<()> {
    let pid =
        libc::id_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: setpriority only reads its integer arguments.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS as _, pid, niceness) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The file has as many hardlinks as its filesystem allows (`EMLINK`).
pub fn is_link_limit(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::EMLINK)
}

/// A link or reflink failed for a reason that a plain copy does not have:
/// the link limit, another filesystem, or a filesystem that cannot share
/// (`EMLINK`, `EXDEV`, `EOPNOTSUPP`, `EINVAL`).
pub fn is_unshareable(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMLINK | libc::EXDEV | libc::EOPNOTSUPP | libc::EINVAL)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn exchange_swaps_two_directories() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::write(a.join("from-a"), b"").unwrap();
        std::fs::create_dir(&b).unwrap();
        if exchange(&a, &b).unwrap() {
            assert!(b.join("from-a").exists());
            assert!(!a.join("from-a").exists());
        } else {
            // Where the system cannot swap, nothing has moved.
            assert!(a.join("from-a").exists());
        }
        assert!(!exchange(&a, &dir.path().join("missing")).unwrap());
    }

    #[test]
    fn a_plain_file_shares_nothing_and_free_space_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 64 << 10]).unwrap();
        assert_eq!(shared_bytes(&path).unwrap_or(0), 0);
        assert!(free_bytes(dir.path()).unwrap() > 0);
        sync_filesystem(&std::fs::File::open(dir.path()).unwrap()).unwrap();
    }

    #[test]
    fn blocks_are_reserved_where_the_filesystem_keeps_them_and_the_file_grows() {
        let (dir, reserves) = reserving_tempdir();
        assert_eq!(reserves, reserves_blocks(dir.path()));
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        let reserved = reserve_blocks(&file, 1 << 20).unwrap();
        // ext2 and ext3 pass for ext4 there, and refuse the call.
        assert!(!reserved || reserves, "reserved where it says it cannot");
        if reserved {
            let meta = file.metadata().unwrap();
            assert_eq!(meta.len(), 1 << 20);
            assert!(meta.blocks() * 512 >= 1 << 20, "{} blocks", meta.blocks());
        }
    }

    #[test]
    fn this_process_exists_and_pid_zero_is_refused() {
        assert!(process_exists(std::process::id() as i32));
        assert!(!process_exists(0));
        assert!(!process_exists(-1));
    }

    #[test]
    fn link_errors_are_told_apart_from_others() {
        let limit = io::Error::from_raw_os_error(libc::EMLINK);
        assert!(is_link_limit(&limit) && is_unshareable(&limit));
        let cross = io::Error::from_raw_os_error(libc::EXDEV);
        assert!(!is_link_limit(&cross) && is_unshareable(&cross));
        let denied = io::Error::from_raw_os_error(libc::EACCES);
        assert!(!is_unshareable(&denied));
        assert!(!is_unshareable(&io::Error::other("no errno")));
    }

    #[test]
    fn dir_makes_creates_and_links_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Dir::open(tmp.path()).unwrap();
        root.make_dir("sub".as_ref(), 0o755).unwrap();
        let err = root.make_dir("sub".as_ref(), 0o755).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let sub = root.open_at(Path::new("sub")).unwrap();
        let mut file = sub.create_new("f".as_ref(), 0o600).unwrap();
        file.write_all(b"hello").unwrap();
        drop(file);
        let err = sub.create_new("f".as_ref(), 0o600).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        sub.hard_link("f".as_ref(), &root, "g".as_ref()).unwrap();
        let (f, g) = (tmp.path().join("sub/f"), tmp.path().join("g"));
        assert_eq!(
            std::fs::metadata(&f).unwrap().ino(),
            std::fs::metadata(&g).unwrap().ino()
        );
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Reflinks work only on XFS and btrfs; where they fail, nothing is left.
        match sub.reflink("f".as_ref(), &root, "r".as_ref(), 0o755) {
            Ok(()) => {
                assert_eq!(std::fs::read(tmp.path().join("r")).unwrap(), b"hello");
                let mode = std::fs::metadata(tmp.path().join("r"))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o755);
            }
            Err(_) => assert!(!tmp.path().join("r").exists()),
        }
        // A symlink is not followed to a directory.
        std::os::unix::fs::symlink(tmp.path().join("sub"), tmp.path().join("link")).unwrap();
        assert!(root.open_at(Path::new("link")).is_err());
        assert!(root.open_at(Path::new("missing")).is_err());
    }

    /// The store locks with std's `File::lock` family and relies on flock
    /// semantics: a lock belongs to an open file, so two opens in one
    /// process exclude each other, and closing the file releases it.
    #[test]
    fn std_file_locks_are_per_open_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("lock");
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap()
        };
        let would_block = |result| matches!(result, Err(std::fs::TryLockError::WouldBlock));
        let (first, second) = (open(), open());
        first.try_lock().unwrap();
        assert!(would_block(second.try_lock()));
        assert!(would_block(second.try_lock_shared()));
        drop(first);
        second.try_lock_shared().unwrap();
        let third = open();
        third.try_lock_shared().unwrap();
        assert!(would_block(open().try_lock()));
    }

    #[test]
    fn a_name_with_nul_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Dir::open(tmp.path()).unwrap();
        use std::os::unix::ffi::OsStrExt;
        let bad = std::ffi::OsStr::from_bytes(b"a\0b");
        assert_eq!(
            root.make_dir(bad, 0o755).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}

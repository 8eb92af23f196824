//! The Linux side of [`crate::platform`].

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub fn exchange(a: &Path, b: &Path) -> io::Result<bool> {
    let from = c_path(a)?;
    let to = c_path(b)?;
    // SAFETY: both paths are valid NUL-terminated strings.
    let result = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    Ok(result == 0)
}

pub fn sync_filesystem(dir: &std::fs::File) -> io::Result<()> {
    // SAFETY: syncfs only reads the descriptor, which `dir` keeps open.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn kill_with_parent(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    let hook = move || {
        // SAFETY: prctl, getppid and _exit are async-signal-safe, as code
        // between fork and exec must be.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the request above was made;
            // then no signal would ever come.
            if libc::getppid() != parent {
                libc::_exit(128 + libc::SIGKILL);
            }
        }
        Ok(())
    };
    // SAFETY: the hook only calls async-signal-safe functions and touches no
    // memory shared with the parent.
    unsafe { cmd.pre_exec(hook) }
}

/// Whether a filesystem of this kind keeps a `fallocate` reservation for
/// the writes that follow.
fn keeps_reservations(stat: &libc::statfs) -> bool {
    // The field's and the constants' types differ between targets. ext2
    // and ext3 share ext4's magic; without extents they refuse fallocate
    // (EOPNOTSUPP).
    #[allow(clippy::unnecessary_cast)]
    let (kind, trusted) = (
        stat.f_type as i64,
        [
            libc::EXT4_SUPER_MAGIC as i64,
            libc::XFS_SUPER_MAGIC as i64,
            libc::TMPFS_MAGIC as i64,
        ],
    );
    trusted.contains(&kind)
}

pub fn reserves_blocks(path: &Path) -> bool {
    let Ok(path) = c_path(path) else {
        return false;
    };
    // SAFETY: statfs reads the NUL-terminated path and writes into the
    // zeroed struct we own.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(path.as_ptr(), &mut stat) == 0 && keeps_reservations(&stat) }
}

pub fn reserve_blocks(file: &std::fs::File, len: u64) -> io::Result<bool> {
    // SAFETY: fstatfs writes into the zeroed struct we own.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if !keeps_reservations(&stat) {
        return Ok(false);
    }
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: fallocate only reads its integer arguments; `file` keeps
        // the descriptor open.
        if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) } == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) => return Ok(false),
            _ => return Err(err),
        }
    }
}

pub fn shared_bytes(path: &Path) -> io::Result<u64> {
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
            return Err(io::Error::last_os_error());
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

/// An `O_PATH` descriptor of a directory: every call below is relative to
/// it (`mkdirat`, `linkat`, `openat`), so the kernel does not walk the long
/// path to it again.
pub struct Dir {
    fd: OwnedFd,
}

impl Dir {
    /// Opens the directory at `path` (not following a symlink there).
    pub fn open(path: &Path) -> io::Result<Self> {
        open_dir(libc::AT_FDCWD, &c_path(path)?)
    }

    /// Opens the directory at `path`, relative to this one.
    pub fn open_at(&self, path: &Path) -> io::Result<Self> {
        open_dir(self.fd.as_raw_fd(), &c_path(path)?)
    }

    /// Creates the directory `name` in this one, with `mode` less the umask.
    pub fn make_dir(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        let name = CName::new(name)?;
        // SAFETY: `name` is NUL-terminated; `fd` is an open directory.
        if unsafe { libc::mkdirat(self.fd.as_raw_fd(), name.as_ptr(), mode) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Creates the file `name` in this one, failing if anything is there,
    /// with `mode` less the umask.
    pub fn create_new(&self, name: &OsStr, mode: u32) -> io::Result<std::fs::File> {
        let name = CName::new(name)?;
        create_at(self.fd.as_raw_fd(), name.as_c_str(), mode)
    }

    /// Hardlinks `name` in this directory to `to_name` in `to`.
    pub fn hard_link(&self, name: &OsStr, to: &Dir, to_name: &OsStr) -> io::Result<()> {
        let (name, to_name) = (CName::new(name)?, CName::new(to_name)?);
        // SAFETY: both names are NUL-terminated; both fds are open directories.
        let linked = unsafe {
            libc::linkat(
                self.fd.as_raw_fd(),
                name.as_ptr(),
                to.fd.as_raw_fd(),
                to_name.as_ptr(),
                0,
            )
        };
        if linked != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reflinks `name` in this directory (`FICLONE`) to a new file
    /// `to_name` in `to` with `mode`, whatever the umask. On failure
    /// nothing is left behind.
    pub fn reflink(&self, name: &OsStr, to: &Dir, to_name: &OsStr, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let (name, to_name) = (CName::new(name)?, CName::new(to_name)?);
        let flags = libc::O_RDONLY | libc::O_CLOEXEC;
        // SAFETY: `name` is NUL-terminated; the result is checked before use.
        let source = unsafe { libc::openat(self.fd.as_raw_fd(), name.as_ptr(), flags) };
        if source < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `source` was just opened and is owned by nobody else.
        let source = unsafe { OwnedFd::from_raw_fd(source) };
        let dest = create_at(to.fd.as_raw_fd(), to_name.as_c_str(), mode)?;
        // SAFETY: both fds are open; FICLONE takes the source fd as its argument.
        let cloned = unsafe { libc::ioctl(dest.as_raw_fd(), libc::FICLONE, source.as_raw_fd()) };
        let result = if cloned == 0 {
            // The umask may have masked bits off.
            dest.set_permissions(std::fs::Permissions::from_mode(mode))
        } else {
            Err(io::Error::last_os_error())
        };
        if result.is_err() {
            // SAFETY: `to_name` is NUL-terminated; `to` is an open directory.
            unsafe { libc::unlinkat(to.fd.as_raw_fd(), to_name.as_ptr(), 0) };
        }
        result
    }
}

fn open_dir(at: RawFd, path: &CStr) -> io::Result<Dir> {
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: `path` is NUL-terminated; the result is checked before use.
    let fd = unsafe { libc::openat(at, path.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(Dir {
        fd: unsafe { OwnedFd::from_raw_fd(fd) },
    })
}

fn create_at(dir: RawFd, name: &CStr, mode: u32) -> io::Result<std::fs::File> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: `name` is NUL-terminated; the result is checked before use.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// One name in a directory, NUL-terminated on the stack: placing a venv
/// converts two names per file, tens of thousands of times.
struct CName {
    /// NAME_MAX (255) bytes and the NUL.
    buf: [u8; 256],
    len: usize,
}

impl CName {
    fn new(name: &OsStr) -> io::Result<Self> {
        let bytes = name.as_bytes();
        if bytes.contains(&0) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        if bytes.len() >= 256 {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        let mut buf = [0u8; 256];
        buf[..bytes.len()].copy_from_slice(bytes);
        Ok(Self {
            buf,
            len: bytes.len(),
        })
    }

    fn as_c_str(&self) -> &CStr {
        CStr::from_bytes_with_nul(&self.buf[..=self.len]).expect("one NUL, at the end")
    }

    fn as_ptr(&self) -> *const libc::c_char {
        self.as_c_str().as_ptr()
    }
}

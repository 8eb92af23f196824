//! Writing a plan's directories and files into a new generation.
//!
//! The tree is walked in parallel, one task per directory: a task creates
//! its subdirectories, places its files and hands each subdirectory to a new
//! task. A directory is only ever changed by one thread (no contention on its
//! lock, no level-by-level barrier), and every call is relative to a
//! directory descriptor (`mkdirat`, `linkat`, `openat`), so the kernel does
//! not walk the venv's and the store's long paths 22,000 times.

use std::ffi::{CStr, CString, OsStr};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use super::plan::{FileSource, Plan, PlannedFile};
use crate::link::{LinkMethod, Linker};
use crate::progress::Progress;
use crate::store::{ObjectKey, Store};

/// Threads placing files. Placing is kernel work on two or more cores;
/// a few more threads than cores cover the moments one waits on a lock.
pub const THREADS: usize = 4;

struct Dir<'p> {
    /// Relative to the generation root ("" for the root).
    path: &'p Path,
    children: Vec<usize>,
    files: Vec<&'p PlannedFile>,
}

struct Walk<'a> {
    root: &'a Path,
    root_fd: OwnedFd,
    /// The store's 256 object fan-out directories, for hardlinks and reflinks.
    objects: Vec<OwnedFd>,
    store: &'a Store,
    linker: &'a Linker,
    progress: &'a dyn Progress,
    failed: AtomicBool,
    error: Mutex<Option<anyhow::Error>>,
}

/// Creates the plan's directories under `root` and places its files.
pub fn write(
    root: &Path,
    plan: &Plan,
    store: &Store,
    linker: &Linker,
    progress: &dyn Progress,
) -> anyhow::Result<()> {
    let dirs = index(plan)?;
    let objects = if matches!(linker.method(), LinkMethod::Hardlink | LinkMethod::Reflink) {
        let objects = store.objects_dir();
        (0..=255u8)
            .map(|byte| open_dir(None, &objects.join(format!("{byte:02x}"))))
            .collect::<io::Result<Vec<_>>>()
            .context("cannot open the store's object directories")?
    } else {
        Vec::new()
    };
    let walk = Walk {
        root,
        root_fd: open_dir(None, root).with_context(|| format!("cannot open {}", root.display()))?,
        objects,
        store,
        linker,
        progress,
        failed: AtomicBool::new(false),
        error: Mutex::new(None),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build()
        .context("cannot start I/O threads")?;
    pool.scope(|scope| walk.visit(scope, &dirs, 0));
    match walk.error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// The directory tree of the plan: node 0 is the root. Every parent is in
/// `plan.dirs`, ahead of its children; a plan breaking that is refused
/// rather than silently missing files.
fn index(plan: &Plan) -> anyhow::Result<Vec<Dir<'_>>> {
    let mut dirs = vec![Dir {
        path: Path::new(""),
        children: Vec::new(),
        files: Vec::new(),
    }];
    let mut by_path: std::collections::HashMap<&Path, usize> =
        std::collections::HashMap::with_capacity(plan.dirs.len() + 1);
    by_path.insert(Path::new(""), 0);
    // Parents come first in `plan.dirs`.
    for dir in &plan.dirs {
        let parent = dir.parent().unwrap_or(Path::new(""));
        let id = dirs.len();
        dirs.push(Dir {
            path: dir,
            children: Vec::new(),
            files: Vec::new(),
        });
        by_path.insert(dir, id);
        let parent_id = *by_path
            .get(parent)
            .with_context(|| format!("the plan lists {} before its parent", dir.display()))?;
        dirs[parent_id].children.push(id);
    }
    for file in &plan.files {
        let parent = file.dest.parent().unwrap_or(Path::new(""));
        let id = *by_path
            .get(parent)
            .with_context(|| format!("the plan has no directory for {}", file.dest.display()))?;
        dirs[id].files.push(file);
    }
    Ok(dirs)
}

impl<'a> Walk<'a> {
    fn visit<'s>(&'s self, scope: &rayon::Scope<'s>, dirs: &'s [Dir<'s>], id: usize) {
        if self.failed.load(Ordering::Relaxed) {
            return;
        }
        if let Err(err) = self.fill(&dirs[id], dirs) {
            self.failed.store(true, Ordering::Relaxed);
            let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(err);
            return;
        }
        for &child in &dirs[id].children {
            scope.spawn(move |scope| self.visit(scope, dirs, child));
        }
    }

    /// Creates `dir`'s subdirectories and places its files.
    fn fill(&self, dir: &Dir<'_>, dirs: &[Dir<'_>]) -> anyhow::Result<()> {
        let opened;
        let fd = if dir.path.as_os_str().is_empty() {
            self.root_fd.as_raw_fd()
        } else {
            opened = open_dir(Some(self.root_fd.as_raw_fd()), dir.path)
                .with_context(|| format!("cannot open {}", self.root.join(dir.path).display()))?;
            opened.as_raw_fd()
        };
        for &child in &dir.children {
            let name = file_name(dirs[child].path)?;
            // SAFETY: `name` is NUL-terminated; `fd` is an open directory.
            if unsafe { libc::mkdirat(fd, name.as_ptr(), 0o755) } != 0 {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::AlreadyExists {
                    return Err(err).with_context(|| {
                        format!(
                            "cannot create {}",
                            self.root.join(dirs[child].path).display()
                        )
                    });
                }
            }
        }
        for file in &dir.files {
            self.place(fd, file)
                .with_context(|| format!("cannot place {} ({})", file.dest.display(), file.dist))?;
            self.progress.item_done("");
        }
        Ok(())
    }

    fn place(&self, dir: RawFd, file: &PlannedFile) -> io::Result<()> {
        let name = file_name(&file.dest)?;
        match &file.source {
            FileSource::Object(key) if !self.objects.is_empty() => {
                let object = object_name(key);
                let objects = self.objects[usize::from(key.hash[0])].as_raw_fd();
                let placed = if self.linker.method() == LinkMethod::Reflink {
                    reflink_at(objects, &object, dir, &name, key.executable)
                } else {
                    // SAFETY: both names are NUL-terminated; both fds are open directories.
                    let linked =
                        unsafe { libc::linkat(objects, object.as_ptr(), dir, name.as_ptr(), 0) };
                    if linked == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::last_os_error())
                    }
                };
                if placed.is_ok() {
                    return Ok(());
                }
                // EMLINK, EXDEV and the like: the linker knows what to do instead.
                self.linker.link(
                    &self.store.object_path(key),
                    &self.root.join(&file.dest),
                    key.executable,
                )
            }
            FileSource::Object(key) => self.linker.link(
                &self.store.object_path(key),
                &self.root.join(&file.dest),
                key.executable,
            ),
            FileSource::Empty => write_at(dir, &name, b"", 0o644),
            FileSource::Content(bytes, mode) => write_at(dir, &name, bytes, *mode),
        }
    }
}

fn file_name(path: &Path) -> io::Result<CString> {
    let name = path.file_name().unwrap_or(OsStr::new(""));
    CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// `<hex>` or `<hex>-x`, NUL-terminated, without allocating.
fn object_name(key: &ObjectKey) -> ObjectName {
    let mut buf = [0u8; 68];
    hex::encode_to_slice(key.hash, &mut buf[..64]).expect("64 hex digits fit");
    let end = if key.executable {
        buf[64] = b'-';
        buf[65] = b'x';
        66
    } else {
        64
    };
    ObjectName { buf, end }
}

struct ObjectName {
    buf: [u8; 68],
    end: usize,
}

impl ObjectName {
    fn as_ptr(&self) -> *const libc::c_char {
        CStr::from_bytes_with_nul(&self.buf[..=self.end])
            .expect("one NUL at the end")
            .as_ptr()
    }
}

fn open_dir(at: Option<RawFd>, path: &Path) -> io::Result<OwnedFd> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: `path` is NUL-terminated; the result is checked before use.
    let fd = unsafe { libc::openat(at.unwrap_or(libc::AT_FDCWD), path.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reflinks the object `object` (in `objects`) to a new file `name` in
/// `dir`, as an ordinary writable file; on failure nothing is left behind.
fn reflink_at(
    objects: RawFd,
    object: &ObjectName,
    dir: RawFd,
    name: &CStr,
    executable: bool,
) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: names are NUL-terminated; results are checked before use.
    let source =
        unsafe { libc::openat(objects, object.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if source < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `source` was just opened and is owned by nobody else.
    let source = unsafe { OwnedFd::from_raw_fd(source) };
    let mode = if executable { 0o755 } else { 0o644 };
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: as above.
    let dest = unsafe { libc::openat(dir, name.as_ptr(), flags, mode as libc::c_uint) };
    if dest < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    let dest = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(dest) });
    // SAFETY: both fds are open; FICLONE takes the source fd as its argument.
    let cloned = unsafe { libc::ioctl(dest.as_raw_fd(), libc::FICLONE, source.as_raw_fd()) };
    let result = if cloned == 0 {
        // The umask may have masked bits off.
        dest.set_permissions(std::fs::Permissions::from_mode(mode))
    } else {
        Err(io::Error::last_os_error())
    };
    if result.is_err() {
        // SAFETY: `name` is NUL-terminated; `dir` is an open directory.
        unsafe { libc::unlinkat(dir, name.as_ptr(), 0) };
    }
    result
}

/// Creates `name` in `dir` with `bytes`, failing if it exists.
fn write_at(dir: RawFd, name: &CStr, bytes: &[u8], mode: u32) -> io::Result<()> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: `name` is NUL-terminated; the result is checked before use.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(bytes)?;
    // The umask may have masked bits off.
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

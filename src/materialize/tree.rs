//! Writing a plan's directories and files into a new generation.
//!
//! The tree is walked in parallel, one task per directory: a task creates
//! its subdirectories, places its files and hands each subdirectory to a new
//! task. A directory is only ever changed by one thread (no contention on its
//! lock, no level-by-level barrier), and every call is relative to an opened
//! directory ([`crate::platform::Dir`]), so the kernel does not walk the venv's and
//! the store's long paths 22,000 times.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use super::plan::{FileSource, Plan, PlannedFile};
use crate::link::{LinkMethod, Linker};
use crate::platform::Dir as OpenDir;
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
    root_dir: OpenDir,
    /// The store's 256 object fan-out directories, for hardlinks and reflinks.
    objects: Vec<OpenDir>,
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
        let objects = store.root().join("objects");
        (0..=255u8)
            .map(|byte| OpenDir::open(&objects.join(format!("{byte:02x}"))))
            .collect::<io::Result<Vec<_>>>()
            .context("cannot open the store's object directories")?
    } else {
        Vec::new()
    };
    let walk = Walk {
        root,
        root_dir: OpenDir::open(root).with_context(|| format!("cannot open {}", root.display()))?,
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
        let at = if dir.path.as_os_str().is_empty() {
            &self.root_dir
        } else {
            opened = self
                .root_dir
                .open_at(dir.path)
                .with_context(|| format!("cannot open {}", self.root.join(dir.path).display()))?;
            &opened
        };
        for &child in &dir.children {
            let path = dirs[child].path;
            match at.make_dir(file_name(path), 0o755) {
                Err(err) if err.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(err).with_context(|| {
                        format!("cannot create {}", self.root.join(path).display())
                    });
                }
                _ => {}
            }
        }
        for file in &dir.files {
            self.place(at, file)
                .with_context(|| format!("cannot place {} ({})", file.dest.display(), file.dist))?;
            self.progress.item_done("");
        }
        Ok(())
    }

    fn place(&self, dir: &OpenDir, file: &PlannedFile) -> io::Result<()> {
        let name = file_name(&file.dest);
        match &file.source {
            FileSource::Object(key) if !self.objects.is_empty() => {
                let object = ObjectName::of(key);
                let objects = &self.objects[usize::from(key.hash[0])];
                let placed = if self.linker.method() == LinkMethod::Reflink {
                    let mode = if key.executable { 0o755 } else { 0o644 };
                    objects.reflink(object.as_os_str(), dir, name, mode)
                } else {
                    objects.hard_link(object.as_os_str(), dir, name)
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
            FileSource::Empty => write_new(dir, name, b"", 0o644),
            FileSource::Content(bytes, mode) => write_new(dir, name, bytes, *mode),
        }
    }
}

fn file_name(path: &Path) -> &OsStr {
    path.file_name().unwrap_or(OsStr::new(""))
}

/// An object's file name, `<hex>` or `<hex>-x`, without allocating.
struct ObjectName {
    buf: [u8; 66],
    end: usize,
}

impl ObjectName {
    fn of(key: &ObjectKey) -> Self {
        let mut buf = [0u8; 66];
        hex::encode_to_slice(key.hash, &mut buf[..64]).expect("64 hex digits fit");
        let end = if key.executable {
            buf[64] = b'-';
            buf[65] = b'x';
            66
        } else {
            64
        };
        Self { buf, end }
    }

    fn as_os_str(&self) -> &OsStr {
        OsStr::new(std::str::from_utf8(&self.buf[..self.end]).expect("hex digits are ASCII"))
    }
}

/// Creates `name` in `dir` with `bytes`, failing if it exists.
fn write_new(dir: &OpenDir, name: &OsStr, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut file = dir.create_new(name, mode)?;
    file.write_all(bytes)?;
    // The umask may have masked bits off.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

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
        let objects = store.objects_dir();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    /// A real store on a temp dir holding `objects` (bytes, executable).
    fn store_with(home: &Path, objects: &[(&[u8], bool)]) -> (Store, Vec<ObjectKey>) {
        let store = Store::open(home).unwrap();
        let keys = objects
            .iter()
            .map(|&(bytes, executable)| {
                let key = ObjectKey {
                    hash: *blake3::hash(bytes).as_bytes(),
                    executable,
                };
                let staged = store.temp_path("object");
                fs_err::write(&staged, bytes).unwrap();
                crate::store::ingest::publish_object(&store, &staged, &key).unwrap();
                key
            })
            .collect();
        (store, keys)
    }

    fn file(dest: &str, source: FileSource) -> PlannedFile {
        PlannedFile {
            dest: PathBuf::from(dest),
            source,
            dist: Arc::from("demo 1.0"),
        }
    }

    fn plan(dirs: &[&str], files: Vec<PlannedFile>) -> Plan {
        Plan {
            dirs: dirs.iter().map(PathBuf::from).collect(),
            files,
            ..Plan::default()
        }
    }

    #[derive(Default)]
    struct Counted(AtomicU64);

    impl Progress for Counted {
        fn item_done(&self, _name: &str) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn mode(path: &Path) -> u32 {
        fs_err::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn inode(path: &Path) -> (u64, u64) {
        let meta = fs_err::metadata(path).unwrap();
        (meta.dev(), meta.ino())
    }

    /// Nested directories, objects of both modes, written and empty files.
    fn nested_plan(keys: &[ObjectKey]) -> Plan {
        plan(
            &["bin", "lib", "lib/pkg", "lib/pkg/sub", "lib/pkg/sub/deeper"],
            vec![
                file(
                    "pyvenv.cfg",
                    FileSource::Content(b"home = x\n".to_vec(), 0o644),
                ),
                file(
                    "bin/tool",
                    FileSource::Content(b"#!/bin/sh\n".to_vec(), 0o755),
                ),
                file("lib/pkg/__init__.py", FileSource::Object(keys[0])),
                file("lib/pkg/py.typed", FileSource::Empty),
                file("lib/pkg/sub/run.sh", FileSource::Object(keys[1])),
                file("lib/pkg/sub/deeper/same.py", FileSource::Object(keys[0])),
            ],
        )
    }

    #[test]
    fn objects_are_hardlinked_and_written_files_get_their_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, keys) = store_with(
            &tmp.path().join("home"),
            &[(b"print('hi')\n", false), (b"echo hi\n", true)],
        );
        let root = tmp.path().join("venv");
        fs_err::create_dir(&root).unwrap();
        let linker = Linker::with_method(LinkMethod::Hardlink, &store);
        let progress = Counted::default();
        let plan = nested_plan(&keys);
        write(&root, &plan, &store, &linker, &progress).unwrap();

        for dir in &plan.dirs {
            assert!(root.join(dir).is_dir(), "{}", dir.display());
            assert_eq!(mode(&root.join(dir)) & 0o700, 0o700);
        }
        let object = |key: &ObjectKey| store.object_path(key);
        for (dest, key) in [
            ("lib/pkg/__init__.py", keys[0]),
            ("lib/pkg/sub/deeper/same.py", keys[0]),
            ("lib/pkg/sub/run.sh", keys[1]),
        ] {
            assert_eq!(inode(&root.join(dest)), inode(&object(&key)), "{dest}");
        }
        // A hardlink is the object: read-only, executable when the object is.
        assert_eq!(mode(&root.join("lib/pkg/__init__.py")), 0o444);
        assert_eq!(mode(&root.join("lib/pkg/sub/run.sh")), 0o555);
        assert_eq!(fs_err::metadata(object(&keys[0])).unwrap().nlink(), 3);
        assert_eq!(fs_err::read(root.join("bin/tool")).unwrap(), b"#!/bin/sh\n");
        assert_eq!(mode(&root.join("bin/tool")), 0o755);
        assert_eq!(
            fs_err::read(root.join("pyvenv.cfg")).unwrap(),
            b"home = x\n"
        );
        assert_eq!(mode(&root.join("pyvenv.cfg")), 0o644);
        assert_eq!(
            fs_err::metadata(root.join("lib/pkg/py.typed"))
                .unwrap()
                .len(),
            0
        );
        assert_eq!(mode(&root.join("lib/pkg/py.typed")), 0o644);
        assert_eq!(progress.0.load(Ordering::Relaxed), 6);
        assert_eq!(linker.copied_instead.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn copies_and_failed_reflinks_give_private_writable_files() {
        for method in [LinkMethod::Copy, LinkMethod::Reflink] {
            let tmp = tempfile::tempdir().unwrap();
            let (store, keys) = store_with(
                &tmp.path().join("home"),
                &[(b"data\n", false), (b"#!/bin/sh\n", true)],
            );
            let root = tmp.path().join("venv");
            fs_err::create_dir(&root).unwrap();
            let linker = Linker::with_method(method, &store);
            let plan = nested_plan(&keys);
            write(&root, &plan, &store, &linker, &Silent).unwrap();
            for (dest, key, want) in [
                ("lib/pkg/__init__.py", keys[0], 0o644),
                ("lib/pkg/sub/run.sh", keys[1], 0o755),
            ] {
                let placed = root.join(dest);
                assert_ne!(inode(&placed), inode(&store.object_path(&key)), "{method}");
                assert_eq!(mode(&placed), want, "{method} {dest}");
                assert_eq!(
                    fs_err::read(&placed).unwrap(),
                    fs_err::read(store.object_path(&key)).unwrap()
                );
            }
        }
    }

    #[test]
    fn a_file_whose_hardlink_crosses_filesystems_is_copied() {
        // The store on the temp dir's filesystem, the venv on another.
        let shm = Path::new("/dev/shm");
        let tmp = tempfile::tempdir().unwrap();
        if !shm.is_dir() || inode(shm).0 == inode(tmp.path()).0 {
            eprintln!("skipped: no second filesystem to link across");
            return;
        }
        let (store, keys) = store_with(
            &tmp.path().join("home"),
            &[(b"data\n", false), (b"#!/bin/sh\n", true)],
        );
        let venv = tempfile::tempdir_in(shm).unwrap();
        let linker = Linker::with_method(LinkMethod::Hardlink, &store);
        write(venv.path(), &nested_plan(&keys), &store, &linker, &Silent).unwrap();
        let placed = venv.path().join("lib/pkg/sub/run.sh");
        assert_eq!(fs_err::read(&placed).unwrap(), b"#!/bin/sh\n");
        assert_eq!(mode(&placed), 0o755);
        assert_eq!(linker.copied_instead.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn existing_directories_are_kept_and_existing_files_are_not_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, keys) = store_with(&tmp.path().join("home"), &[(b"x", false), (b"y", true)]);
        let root = tmp.path().join("venv");
        fs_err::create_dir_all(root.join("lib/pkg")).unwrap();
        let linker = Linker::with_method(LinkMethod::Hardlink, &store);
        write(&root, &nested_plan(&keys), &store, &linker, &Silent).unwrap();

        // Placing the same plan again finds every file already there.
        let err = write(&root, &nested_plan(&keys), &store, &linker, &Silent).unwrap_err();
        assert!(format!("{err:#}").contains("cannot place"), "{err:#}");
        assert_eq!(
            fs_err::read(root.join("pyvenv.cfg")).unwrap(),
            b"home = x\n"
        );
    }

    #[test]
    fn a_plan_with_a_file_or_directory_lacking_its_parent_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = store_with(&tmp.path().join("home"), &[]);
        let root = tmp.path().join("venv");
        fs_err::create_dir(&root).unwrap();
        let linker = Linker::with_method(LinkMethod::Hardlink, &store);

        let orphan = plan(&["lib"], vec![file("missing/f.py", FileSource::Empty)]);
        let err = write(&root, &orphan, &store, &linker, &Silent).unwrap_err();
        assert!(
            err.to_string().contains("no directory for missing/f.py"),
            "{err}"
        );

        let child_first = plan(&["a/b", "a"], Vec::new());
        let err = write(&root, &child_first, &store, &linker, &Silent).unwrap_err();
        assert!(err.to_string().contains("a/b before its parent"), "{err}");
        // Refused before anything is written.
        assert_eq!(fs_err::read_dir(&root).unwrap().count(), 0);
    }

    #[test]
    fn object_names_match_the_store_layout() {
        for executable in [false, true] {
            let key = ObjectKey {
                hash: *blake3::hash(b"n").as_bytes(),
                executable,
            };
            let path = Store::open(tempfile::tempdir().unwrap().path())
                .unwrap()
                .object_path(&key);
            assert_eq!(ObjectName::of(&key).as_os_str(), path.file_name().unwrap());
        }
    }
}

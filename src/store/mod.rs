//! The global content-addressed store.
//!
//! On disk (`$TSTORE_HOME`, else `$XDG_DATA_HOME/tstore`, else
//! `~/.local/share/tstore`):
//!
//! ```text
//! v1/                      layout version: a new layout gets a new directory
//!   store.db               SQLite index (schema in store-schema.sql)
//!   objects/ab/abcd…[-x]   one read-only file per distinct content (blake3)
//!   tmp/                   temp files; same filesystem so renames are atomic
//!   locks/                 pylock files of the embedded default tiers
//!   tools/                 the uv tstore installs when none is found
//!   interpreters/          cached answers of Python interpreter queries
//!   run/                   advisory lock files
//!   manifests/<plan>.json.zst  every file of a generation and its source
//!   records/               what the index holds, as files it is rebuilt from
//!   lock-snapshots/        the lock each generation was built from, by sha256
//! ```
//!
//! [`Store`] is the one type that knows these paths.

pub mod ahead;
pub mod bytecode;
pub mod db;
pub mod health;
mod inflate;
pub mod ingest;
pub mod records;
pub mod stage;
pub mod tmp;
pub mod wheel;
pub mod written_pycs;

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;

pub use db::Db;
pub use health::{IndexDamaged, IndexProblem};
use records::Records;

/// Identity of a store object: its content hash and whether it is executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub hash: [u8; 32],
    pub executable: bool,
}

impl ObjectKey {
    /// The mode of its file in `objects/`: read-only, executable or not.
    pub fn mode(&self) -> u32 {
        if self.executable { 0o555 } else { 0o444 }
    }

    pub fn parse(text: &str) -> Option<Self> {
        let (hex_part, executable) = match text.strip_suffix("-x") {
            Some(h) => (h, true),
            None => (text, false),
        };
        let mut hash = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut hash).ok()?;
        Some(Self { hash, executable })
    }
}

/// As its text form, the way the index, manifests and reports name it.
impl serde::Serialize for ObjectKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.hash))?;
        if self.executable {
            f.write_str("-x")?;
        }
        Ok(())
    }
}

/// The ends of a manifest's file name after its plan hash: compressed, and
/// plain (written by older tstores).
pub const MANIFEST_SUFFIX: &str = ".json.zst";
pub const PLAIN_MANIFEST_SUFFIX: &str = ".json";

/// The plan hash a file in `manifests/` is the manifest of.
pub fn plan_of_manifest(file_name: &str) -> &str {
    file_name
        .strip_suffix(MANIFEST_SUFFIX)
        .or_else(|| file_name.strip_suffix(PLAIN_MANIFEST_SUFFIX))
        .unwrap_or(file_name)
}

/// Where each part of a store lives on disk: the one place that knows the
/// layout. Usable without opening the index (rebuilding a damaged one).
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout of the store under `home` (`$TSTORE_HOME`).
    pub fn of_home(home: &Path) -> Self {
        Self {
            root: home.join("v1"),
        }
    }

    /// The store's directory, for messages and as its identity; paths inside
    /// it come from the methods below.
    pub fn location(&self) -> &Path {
        &self.root
    }

    /// The index file.
    pub fn index_path(&self) -> PathBuf {
        self.root.join("store.db")
    }

    /// The index's records (see [`records`]).
    pub fn records(&self) -> Records {
        Records::at(self.root.join("records"))
    }

    /// The objects, in 256 shard directories named by a key's first byte.
    pub fn objects_dir(&self) -> PathBuf {
        self.root.join("objects")
    }

    /// The shard directory holding objects whose key starts with `byte`.
    pub fn object_shard(&self, byte: u8) -> PathBuf {
        self.objects_dir().join(format!("{byte:02x}"))
    }

    pub fn object_path(&self, key: &ObjectKey) -> PathBuf {
        let name = key.to_string();
        self.objects_dir().join(&name[..2]).join(name)
    }

    /// Scratch space on the store's filesystem.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Where locks of the embedded default tiers live.
    pub fn default_locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    pub fn tools_dir(&self) -> PathBuf {
        self.root.join("tools")
    }

    /// The manifest of the venv plan with this hash (zstd-compressed JSON).
    pub fn manifest_path(&self, plan_hash: &str) -> PathBuf {
        self.manifests_dir()
            .join(format!("{plan_hash}{MANIFEST_SUFFIX}"))
    }

    /// Where stores before compressed manifests kept that manifest (plain
    /// JSON); still read.
    pub fn plain_manifest_path(&self, plan_hash: &str) -> PathBuf {
        self.manifests_dir()
            .join(format!("{plan_hash}{PLAIN_MANIFEST_SUFFIX}"))
    }

    pub fn manifests_dir(&self) -> PathBuf {
        self.root.join("manifests")
    }

    /// The copy of a lock a generation was built from, by its bytes' sha256.
    pub fn lock_snapshot_path(&self, sha256: &str) -> PathBuf {
        self.lock_snapshots_dir().join(format!("{sha256}.toml"))
    }

    pub fn lock_snapshots_dir(&self) -> PathBuf {
        self.root.join("lock-snapshots")
    }

    pub fn interpreters_dir(&self) -> PathBuf {
        self.root.join("interpreters")
    }

    /// Venv skeletons made by `uv venv`, one per (uv, interpreter).
    pub fn skeletons_dir(&self) -> PathBuf {
        self.root.join("skeletons")
    }

    /// Advisory lock files.
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// The store-wide lock: held shared while objects are added or used
    /// (fetch, materialize), exclusively while they may be removed or
    /// rewritten (gc, verify --repair).
    pub fn usage_lock(&self) -> PathBuf {
        self.run_dir().join("store.lock")
    }

    /// Taken while an index is opened (or swapped for a rebuilt one):
    /// switching a new database to WAL and migrating its schema do not wait
    /// on SQLite's busy handler, so processes take turns here instead.
    pub fn open_lock(&self) -> PathBuf {
        self.run_dir().join("open.lock")
    }

    /// Advisory lock file guarding one named resource (a venv path, say).
    pub fn lock_file(&self, name: &str) -> PathBuf {
        let digest = blake3::hash(name.as_bytes()).to_hex();
        self.run_dir().join(format!("{}.lock", &digest[..16]))
    }

    /// A fresh, unique temp path inside the store.
    pub fn temp_path(&self, prefix: &str) -> PathBuf {
        self.tmp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            unique_suffix()
        ))
    }

    /// Creates the directories a store needs (all 256 object shards once).
    fn create_dirs(&self, home: &Path) -> anyhow::Result<()> {
        if !self.object_shard(0xff).is_dir() {
            for byte in 0..=255u8 {
                crate::fsinfo::create_dir_all_with_mode(
                    &self.object_shard(byte),
                    crate::fsinfo::DIR_MODE,
                )
                .with_context(|| format!("cannot create the store at {}", home.display()))?;
            }
        }
        for dir in [
            self.tmp_dir(),
            self.default_locks_dir(),
            self.tools_dir(),
            self.interpreters_dir(),
            self.skeletons_dir(),
            self.run_dir(),
            self.manifests_dir(),
        ] {
            crate::fsinfo::create_dir_all_with_mode(&dir, crate::fsinfo::DIR_MODE)?;
        }
        Ok(())
    }
}

/// How files actually got into a venv.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkMethod {
    /// Shared extents, separate inodes: an edit in the venv stays private.
    Reflink,
    /// Shared inode: the file is the store object (read-only).
    Hardlink,
    /// A full private copy.
    Copy,
}

impl std::fmt::Display for LinkMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Reflink => "reflink",
            Self::Hardlink => "hardlink",
            Self::Copy => "copy",
        })
    }
}

/// An open store: its layout and its index.
pub struct Store {
    layout: Layout,
    pub db: Db,
    /// Whether many new objects at once go into staged shards
    /// ([`stage::Stage`]); off, each is published on its own.
    staging: bool,
}

/// A store is used through its places as much as through its index: every
/// [`Layout`] method is a method of the store.
impl std::ops::Deref for Store {
    type Target = Layout;

    fn deref(&self) -> &Layout {
        &self.layout
    }
}

impl Store {
    /// Turns staged shards off (`TSTORE_NO_STAGING`): every received
    /// object is published on its own, as into a full store.
    pub fn set_staging(&mut self, on: bool) {
        self.staging = on;
    }

    /// Whether imports and pulls stage the shards a store lacks.
    pub fn stages_new_shards(&self) -> bool {
        self.staging
    }

    /// `$TSTORE_HOME`, else `$XDG_DATA_HOME/tstore`, else `~/.local/share/tstore`.
    pub fn default_home() -> PathBuf {
        if let Some(home) = std::env::var_os("TSTORE_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(home);
        }
        if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(data).join("tstore");
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        home.join(".local/share/tstore")
    }

    /// Opens (creating if needed) the store under `home`, after checking
    /// that its index can be trusted: a damaged or lost index is an
    /// [`IndexDamaged`] error, and nothing is written.
    pub fn open(home: &Path) -> anyhow::Result<Self> {
        let layout = Layout::of_home(home);
        layout.create_dirs(home)?;
        let db_path = layout.index_path();
        let records = layout.records();
        let damaged = |problem| IndexDamaged {
            path: db_path.clone(),
            problem,
        };
        let _opening = FileLock::acquire(&layout.open_lock(), || {})?;
        if let Some(problem) = health::check_index_file(&layout, &records) {
            return Err(damaged(problem).into());
        }
        let db = Db::open_with_records(&db_path, records.clone()).map_err(|err| {
            let problem = if health::is_index_damage(&err) {
                IndexProblem::Malformed(vec![format!("{err:#}")])
            } else {
                IndexProblem::Unreadable(format!("{err:#}"))
            };
            damaged(problem)
        })?;
        if let Some(problem) = health::check_index(&layout, &db, &records) {
            return Err(damaged(problem).into());
        }
        if !records.exist() {
            // A store made before records: write them once, from the index
            // that just passed its checks.
            Records::create_dirs(records.dir())?;
            db.write_missing_records()?;
        }
        drop(_opening);
        let store = Self {
            layout,
            db,
            staging: true,
        };
        tmp::on_open(&store)?;
        Ok(store)
    }

    /// Flushes everything written to the store's filesystem (one `syncfs`).
    pub fn sync_filesystem(&self) -> anyhow::Result<()> {
        let dir = fs_err::File::open(self.location())?;
        crate::platform::sync_filesystem(dir.file()).context("cannot flush the store's filesystem")
    }
}

/// Whether a process with this pid exists (temp and staging names carry the
/// pid of the process that made them).
pub fn process_alive(pid: i32) -> bool {
    crate::platform::process_exists(pid)
}

/// A process-unique counter mixed with time, for temp names.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{nanos:08x}{:x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// An advisory lock (flock) held until dropped.
pub struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    /// Takes the lock exclusively, calling `on_wait` once if another process holds it.
    pub fn acquire(path: &Path, on_wait: impl FnOnce()) -> anyhow::Result<Self> {
        Self::take(path, true, on_wait)
    }

    /// Takes the lock shared with other shared holders.
    pub fn acquire_shared(path: &Path, on_wait: impl FnOnce()) -> anyhow::Result<Self> {
        Self::take(path, false, on_wait)
    }

    fn take(path: &Path, exclusive: bool, on_wait: impl FnOnce()) -> anyhow::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(crate::fsinfo::FILE_MODE)
            .open(path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        // std's file locks are flock(2) on unix.
        let held = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        if held.is_err() {
            on_wait();
            let locked = if exclusive {
                file.lock()
            } else {
                file.lock_shared()
            };
            locked.with_context(|| format!("cannot lock {}", path.display()))?;
        }
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_versioned_and_shards_objects_by_first_byte() {
        let layout = Layout::of_home(Path::new("/h"));
        assert_eq!(layout.index_path(), Path::new("/h/v1/store.db"));
        let key = ObjectKey {
            hash: [0xab; 32],
            executable: true,
        };
        let name = format!("{}-x", "ab".repeat(32));
        assert_eq!(
            layout.object_path(&key),
            Path::new("/h/v1/objects/ab").join(name)
        );
        assert_eq!(layout.object_shard(0xab), Path::new("/h/v1/objects/ab"));
        assert_eq!(layout.open_lock(), Path::new("/h/v1/run/open.lock"));
    }

    #[test]
    fn object_key_round_trips_with_exec_suffix() {
        let key = ObjectKey {
            hash: *blake3::hash(b"x").as_bytes(),
            executable: true,
        };
        let text = key.to_string();
        assert!(text.ends_with("-x"));
        assert_eq!(ObjectKey::parse(&text), Some(key));
        assert_eq!(ObjectKey::parse("zz"), None);
    }
}

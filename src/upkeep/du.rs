//! `tstore du`: what the tiers and the store cost on disk, and what the same
//! tiers would cost as plain copies.
//!
//! Every figure is allocated bytes (`st_blocks`), not file sizes, and counts
//! each inode once, as `du` does: the store is everything under its root
//! (objects, their fan-out directories, index, manifests, skeletons, …);
//! the venvs are every directory, file and symlink of every tier's
//! generations that is not an inode of the store. So store plus venvs is
//! what `du -s` says of the store and the venv root (on a filesystem with
//! reflinks, less the extents a venv file shares, which `du` counts again
//! for each file). Per tier (its current generation): files; what a plain
//! copy of it would take (each of its store objects once per file, plus its
//! own files and directories); bytes of objects only it uses; bytes of
//! objects it shares with other tiers; and its private bytes (its own
//! directories and the files written or copied into it, less extents shared
//! by reflink).

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::fsinfo;
use crate::materialize::manifest::Manifest;
use crate::materialize::plan::FileSource;
use crate::store::{ObjectKey, Store};

#[derive(Debug, Clone, Serialize)]
pub struct TierUsage {
    pub name: String,
    pub venv: PathBuf,
    pub generation: i64,
    pub files: usize,
    /// What a plain, standalone copy of this venv would take.
    pub plain_copy_bytes: u64,
    /// Store objects no other tier uses.
    pub unique_bytes: u64,
    /// Store objects other tiers use too.
    pub shared_bytes: u64,
    /// Directories of the venv and its files that are not store objects
    /// (RECORD, launchers, copies).
    pub private_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct DuReport {
    pub tiers: Vec<TierUsage>,
    pub store_objects: usize,
    /// The object files, as [`store_size`] counts them.
    pub object_bytes: u64,
    /// Everything under the store's root: objects, their directories,
    /// index, manifests, skeletons, … ([`store_size`]).
    pub store_bytes: u64,
    /// Directories and private files of every kept generation of every
    /// tier, with the directories that hold them.
    pub venv_bytes: u64,
    /// The tiers as plain copies, one each.
    pub plain_copies_bytes: u64,
    /// `plain_copies_bytes` minus store and venvs.
    pub saving_bytes: i64,
}

/// `names`: tier names to show (all materialized tiers when empty).
pub fn du(store: &Store, names: &[String]) -> anyhow::Result<DuReport> {
    // Allocated size of every object.
    let objects = store.db.all_objects()?;
    let object_bytes: HashMap<ObjectKey, u64> = objects
        .par_iter()
        .filter_map(|object| {
            let meta = std::fs::metadata(store.object_path(&object.key)).ok()?;
            Some((object.key, fsinfo::allocated(&meta)))
        })
        .collect();
    let store_size = store_size(store);
    let store_inodes = &store_size.inodes;
    let Venvs {
        loaded,
        walked,
        alone,
    } = load_venvs(store)?;

    // Which tiers use each object.
    let mut users: HashMap<ObjectKey, HashSet<&str>> = HashMap::new();
    for tier in &loaded {
        for file in &tier.manifest.files {
            if let FileSource::Object(key) = &file.source {
                users.entry(*key).or_default().insert(tier.name.as_str());
            }
        }
    }

    let mut report = DuReport {
        store_objects: objects.len(),
        ..DuReport::default()
    };
    for tier in &loaded {
        let usage = tier_usage(tier, &users, &object_bytes, store_inodes);
        report.plain_copies_bytes += usage.plain_copy_bytes;
        if names.is_empty() || names.contains(&usage.name) {
            report.tiers.push(usage);
        }
    }

    report.object_bytes = store_size.object_bytes;
    report.store_bytes = store_size.bytes;
    report.venv_bytes = venv_bytes(&walked, &alone, store_inodes);
    report.saving_bytes =
        report.plain_copies_bytes as i64 - (report.store_bytes + report.venv_bytes) as i64;
    Ok(report)
}

/// A tier's current generation.
struct Loaded {
    name: String,
    venv: PathBuf,
    generation: i64,
    manifest: Manifest,
    root: PathBuf,
}

/// The tiers' venvs as `du` counts them.
struct Venvs {
    /// Tiers with a current generation.
    loaded: Vec<Loaded>,
    /// Each tier's generations folder (walked).
    walked: Vec<PathBuf>,
    /// Each tier's stable path (a symlink) and the `.tstore-generations`
    /// folder holding its generations (counted alone).
    alone: Vec<PathBuf>,
}

fn load_venvs(store: &Store) -> anyhow::Result<Venvs> {
    let mut venvs = Venvs {
        loaded: Vec::new(),
        walked: Vec::new(),
        alone: Vec::new(),
    };
    for tier in store.db.tiers()? {
        let venv = PathBuf::from(&tier.venv);
        if let Ok(generations) = crate::materialize::generations::Generations::of(&venv) {
            venvs.alone.push(venv.clone());
            venvs
                .alone
                .extend(generations.dir.parent().map(Path::to_path_buf));
            venvs.walked.push(generations.dir);
        }
        let Ok(row) = crate::materialize::generations::current_record(store, &venv) else {
            continue;
        };
        venvs.loaded.push(Loaded {
            name: tier.name.clone(),
            venv,
            generation: row.number,
            manifest: Manifest::load(store, &row.plan)?,
            root: PathBuf::from(&row.path),
        });
    }
    Ok(venvs)
}

/// One tier's figures; `users` names the tiers using each object.
fn tier_usage(
    tier: &Loaded,
    users: &HashMap<ObjectKey, HashSet<&str>>,
    object_bytes: &HashMap<ObjectKey, u64>,
    store_inodes: &HashSet<(u64, u64)>,
) -> TierUsage {
    let mut used: HashSet<ObjectKey> = HashSet::new();
    for file in &tier.manifest.files {
        if let FileSource::Object(key) = &file.source {
            used.insert(*key);
        }
    }
    let size = |key: &ObjectKey| object_bytes.get(key).copied().unwrap_or(0);
    let unique: u64 = used.iter().filter(|k| users[*k].len() == 1).map(size).sum();
    let shared: u64 = used.iter().filter(|k| users[*k].len() > 1).map(size).sum();
    let own = private_bytes(&tier.root, store_inodes);
    // A plain copy holds every file by itself: object contents once per
    // file, written files as they are, and its directories.
    let plain_copy: u64 = own.dirs
        + tier
            .manifest
            .files
            .par_iter()
            .map(|file| match &file.source {
                FileSource::Object(key) => size(key),
                _ => std::fs::metadata(tier.root.join(&file.dest))
                    .map_or(0, |m| fsinfo::allocated(&m)),
            })
            .sum::<u64>();
    TierUsage {
        name: tier.name.clone(),
        venv: tier.venv.clone(),
        generation: tier.generation,
        files: tier.manifest.files.len(),
        plain_copy_bytes: plain_copy,
        unique_bytes: unique,
        shared_bytes: shared,
        private_bytes: own.dirs + own.files,
    }
}

/// What the store takes on disk.
#[derive(Debug, Default)]
pub struct StoreSize {
    /// Allocated bytes of the object files.
    pub object_bytes: u64,
    /// Allocated bytes of everything under the store's root, the root and
    /// every directory included, each inode once.
    pub bytes: u64,
    /// (device, inode) of everything counted.
    pub inodes: HashSet<(u64, u64)>,
}

/// The store's size, the one way `du` and `verify` report it.
pub fn store_size(store: &Store) -> StoreSize {
    let objects_dir = store.objects_dir();
    let mut size = StoreSize::default();
    for (path, entry) in entries(store.location()) {
        if size.inodes.insert(entry.inode) {
            size.bytes += entry.allocated;
            if entry.is_file && path.starts_with(&objects_dir) {
                size.object_bytes += entry.allocated;
            }
        }
    }
    size
}

/// Allocated bytes of the tiers' venvs: `walked` and everything under them,
/// and `alone` (not what they hold), less inodes of the store, each inode
/// once; files less the extents they share by reflink.
fn venv_bytes(walked: &[PathBuf], alone: &[PathBuf], store_inodes: &HashSet<(u64, u64)>) -> u64 {
    let mut all: Vec<(PathBuf, Entry)> = walked.iter().flat_map(|dir| entries(dir)).collect();
    all.extend(alone.iter().filter_map(|path| {
        let meta = std::fs::symlink_metadata(path).ok()?;
        Some((path.clone(), Entry::of(&meta)))
    }));
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    all.retain(|(_, entry)| !store_inodes.contains(&entry.inode) && seen.insert(entry.inode));
    all.par_iter()
        .map(|(path, entry)| entry.private_bytes(path))
        .sum()
}

/// A tier's own bytes: its directories, and its files that are not store
/// inodes (less extents shared by reflink).
#[derive(Debug, Default)]
struct Own {
    dirs: u64,
    files: u64,
}

fn private_bytes(root: &Path, store_inodes: &HashSet<(u64, u64)>) -> Own {
    let mut seen = HashSet::new();
    let mine: Vec<(PathBuf, Entry)> = entries(root)
        .into_iter()
        .filter(|(_, e)| !store_inodes.contains(&e.inode) && seen.insert(e.inode))
        .collect();
    Own {
        dirs: mine
            .iter()
            .filter(|(_, e)| e.is_dir)
            .map(|(_, e)| e.allocated)
            .sum(),
        files: mine
            .par_iter()
            .filter(|(_, e)| !e.is_dir)
            .map(|(path, entry)| entry.private_bytes(path))
            .sum(),
    }
}

/// What `lstat` says of one entry, as far as counting bytes goes.
#[derive(Debug, Clone, Copy)]
struct Entry {
    inode: (u64, u64),
    allocated: u64,
    is_dir: bool,
    is_file: bool,
}

impl Entry {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            inode: (meta.dev(), meta.ino()),
            allocated: fsinfo::allocated(meta),
            is_dir: meta.is_dir(),
            is_file: meta.is_file(),
        }
    }

    /// Its allocated bytes, less extents a file shares with other files.
    fn private_bytes(&self, path: &Path) -> u64 {
        if self.is_file {
            self.allocated.saturating_sub(fsinfo::shared_bytes(path))
        } else {
            self.allocated
        }
    }
}

/// `root` and everything under it, without following symlinks; what
/// vanishes while it is read is left out.
fn entries(root: &Path) -> Vec<(PathBuf, Entry)> {
    let mut paths = vec![root.to_path_buf()];
    fsinfo::walk_all(root, &mut paths);
    paths
        .into_par_iter()
        .filter_map(|path| {
            let meta = std::fs::symlink_metadata(&path).ok()?;
            let entry = Entry::of(&meta);
            Some((path, entry))
        })
        .collect()
}

//! `tstore verify [--repair]`: is the store what it says, and is every
//! materialized tier what its manifest says?
//!
//! - Every object is re-hashed (blake3, in parallel) and its mode checked.
//! - Every file of each tier's current generation is checked against the
//!   generation's manifest: a hardlinked file must be the object's inode, a
//!   copied or reflinked one must hash to the object, written files must
//!   match byte for byte; files missing from, or extra in, site-packages are
//!   reported. Packages made private by `tstore edit` are reported as edited.
//!
//! Repair links a lost object back from the inode hardlinked tiers still
//! share (that inode is its content), so nothing is stored twice.
//! It restores a corrupted object **in place, keeping its inode**, so
//! every tier hardlinked to it is fixed at once. The good content comes from a
//! file elsewhere that still hashes right, else from the wheel, downloaded
//! again and checked against its recorded sha256. Damaged tier files are
//! linked or written again. Extra files are reported, never deleted.

mod rebuild;
mod repair;

pub use rebuild::{RebuildReport, rebuild_index};

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::Serialize;

use crate::link::LinkMethod;
use crate::materialize::manifest::Manifest;
use crate::materialize::plan::FileSource;
use crate::materialize::venv;
use crate::progress::Progress;
use crate::store::db::ObjectRow;
use crate::store::{ObjectKey, Store};

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    pub repair: bool,
    /// SQLite's full integrity check instead of the quick one.
    pub full: bool,
    /// Venv paths of the tiers to check; `None`: every materialized tier.
    pub venvs: Option<Vec<PathBuf>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectFault {
    /// The object file is gone.
    Missing,
    /// Its content no longer hashes to its name.
    Corrupt,
    /// Writable, or its exec bit disagrees with its name.
    Mode,
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectProblem {
    pub key: ObjectKey,
    pub fault: ObjectFault,
    /// `name version (path in wheel)` of every distribution holding it.
    pub used_by: Vec<String>,
    /// Tiers whose current generation holds it.
    pub tiers: Vec<String>,
    pub repaired: bool,
    /// How it was repaired, or why it could not be.
    pub note: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFault {
    Missing,
    Modified,
    /// In site-packages but in no distribution of the tier.
    Extra,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileProblem {
    pub package: String,
    /// Relative to the venv.
    pub path: PathBuf,
    pub fault: FileFault,
    pub repaired: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TierReport {
    pub name: String,
    pub venv: PathBuf,
    pub generation: Option<i64>,
    pub files_checked: usize,
    pub problems: Vec<FileProblem>,
    /// Packages made private by `tstore edit` (not problems).
    pub edited: Vec<String>,
    /// Set when the tier could not be checked at all.
    pub error: Option<String>,
}

/// The index itself, checked before what it describes.
#[derive(Debug, Clone, Serialize, Default)]
pub struct IndexReport {
    /// What SQLite's check lists; empty when the file is sound.
    pub integrity: Vec<String>,
    /// Object files on disk the index does not know (interrupted runs
    /// leave them; gc removes them). Indexed objects that are missing are
    /// object problems.
    pub unindexed_objects: usize,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub index: IndexReport,
    pub objects_checked: usize,
    pub bytes_checked: u64,
    pub objects: Vec<ObjectProblem>,
    pub tiers: Vec<TierReport>,
}

impl Report {
    pub fn problems(&self) -> usize {
        self.index.integrity.len()
            + self.objects.len()
            + self
                .tiers
                .iter()
                .map(|t| t.problems.len() + usize::from(t.error.is_some()))
                .sum::<usize>()
    }

    pub fn unrepaired(&self) -> usize {
        self.index.integrity.len()
            + self.objects.iter().filter(|o| !o.repaired).count()
            + self
                .tiers
                .iter()
                .map(|t| {
                    t.problems.iter().filter(|p| !p.repaired).count()
                        + usize::from(t.error.is_some())
                })
                .sum::<usize>()
    }
}

/// A tier file that still hashes to an object the store lost or damaged.
#[derive(Debug, Clone)]
pub(crate) struct GoodCopy {
    pub path: PathBuf,
    /// In a hardlinked tier: the inode is the object's old one, which every
    /// hardlinked tier still shares.
    pub hardlinked: bool,
}

/// One tier's current generation and what it should hold.
struct TierState {
    name: String,
    venv: PathBuf,
    root: PathBuf,
    generation: i64,
    method: LinkMethod,
    manifest: Manifest,
    edited: HashSet<String>,
}

pub fn verify(
    store: &Store,
    options: &VerifyOptions,
    progress: &dyn Progress,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    report.index.integrity = store.db.integrity_problems(options.full);
    if !report.index.integrity.is_empty() {
        // Nothing the index says can be relied on.
        return Ok(report);
    }
    report.index.unindexed_objects = unindexed_objects(store)?;
    let ObjectCheck {
        problems: object_problems,
        inodes: object_inodes,
        checked,
    } = check_objects(store, progress)?;
    report.objects_checked = checked;
    report.bytes_checked = crate::upkeep::du::store_size(store).object_bytes;

    let tiers = load_tiers(store, options, &mut report)?;
    // Files elsewhere that still hold an object's good content (repair
    // sources), found while the tiers are checked.
    let good_copies: Mutex<HashMap<ObjectKey, GoodCopy>> = Mutex::new(HashMap::new());
    let mut tier_reports: Vec<(TierReport, &TierState)> = tiers
        .iter()
        .map(|tier| {
            let tier_report = check_tier(tier, &object_inodes, &good_copies, progress);
            (tier_report, tier)
        })
        .collect();
    let mut objects = describe_object_problems(store, object_problems, &tiers);
    if options.repair {
        let good_copies = good_copies.into_inner().expect("no poisoned lock");
        repair(
            store,
            &mut objects,
            &mut tier_reports,
            &good_copies,
            progress,
        );
    }
    report.objects = objects;
    report
        .tiers
        .extend(tier_reports.into_iter().map(|(r, _)| r));
    report.tiers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(report)
}

/// The tiers to check (those `options` names, else all); a tier that cannot
/// be loaded is reported as such.
fn load_tiers(
    store: &Store,
    options: &VerifyOptions,
    report: &mut Report,
) -> anyhow::Result<Vec<TierState>> {
    let mut tiers = Vec::new();
    for row in store.db.tiers()? {
        let venv = PathBuf::from(&row.venv);
        if options
            .venvs
            .as_ref()
            .is_some_and(|wanted| !wanted.contains(&venv))
        {
            continue;
        }
        match load_tier(store, &row.name, &venv) {
            Ok(state) => tiers.push(state),
            Err(err) => report.tiers.push(TierReport {
                name: row.name.clone(),
                venv,
                generation: None,
                files_checked: 0,
                problems: Vec::new(),
                edited: Vec::new(),
                error: Some(format!("{err:#}")),
            }),
        }
    }
    Ok(tiers)
}

/// Each damaged object with the distributions and tiers that hold it.
fn describe_object_problems(
    store: &Store,
    problems: Vec<(ObjectKey, ObjectFault)>,
    tiers: &[TierState],
) -> Vec<ObjectProblem> {
    let mut tiers_of: HashMap<ObjectKey, Vec<String>> = HashMap::new();
    for tier in tiers {
        for file in &tier.manifest.files {
            if let FileSource::Object(key) = &file.source {
                let names = tiers_of.entry(*key).or_default();
                if names.last() != Some(&tier.name) {
                    names.push(tier.name.clone());
                }
            }
        }
    }
    problems
        .into_iter()
        .map(|(key, fault)| {
            let used_by = store
                .db
                .object_users(&key)
                .unwrap_or_default()
                .into_iter()
                .map(|user| format!("{} {} ({})", user.name, user.version, user.path))
                .collect();
            ObjectProblem {
                key,
                fault,
                used_by,
                tiers: tiers_of.get(&key).cloned().unwrap_or_default(),
                repaired: false,
                note: String::new(),
            }
        })
        .collect()
}

/// Repairs the damaged objects, then the tiers' files (except those whose
/// object stayed damaged).
fn repair(
    store: &Store,
    objects: &mut [ObjectProblem],
    tier_reports: &mut [(TierReport, &TierState)],
    good_copies: &HashMap<ObjectKey, GoodCopy>,
    progress: &dyn Progress,
) {
    for problem in objects.iter_mut() {
        match repair::repair_object(store, &problem.key, problem.fault, good_copies, progress) {
            Ok(note) => {
                problem.repaired = true;
                problem.note = note;
            }
            Err(err) => problem.note = format!("not repaired: {err:#}"),
        }
    }
    let broken: HashSet<ObjectKey> = objects
        .iter()
        .filter(|o| !o.repaired)
        .map(|o| o.key)
        .collect();
    for (tier_report, tier) in tier_reports.iter_mut() {
        repair::repair_tier_files(store, tier, tier_report, &broken);
    }
}

/// What re-hashing the objects found.
struct ObjectCheck {
    problems: Vec<(ObjectKey, ObjectFault)>,
    /// (device, inode) of every object present, to recognize hardlinks.
    inodes: HashMap<ObjectKey, (u64, u64)>,
    checked: usize,
}

/// One object's state.
struct ObjectState {
    key: ObjectKey,
    fault: Option<ObjectFault>,
    inode: Option<(u64, u64)>,
}

/// Re-hashes every recorded object.
fn check_objects(store: &Store, progress: &dyn Progress) -> anyhow::Result<ObjectCheck> {
    let objects = store.db.all_objects()?;
    let total: u64 = objects.iter().map(|object| object.size).sum();
    progress.start("verifying objects", objects.len() as u64, total);
    let results: Vec<ObjectState> = objects
        .par_iter()
        .map(|&ObjectRow { key, size }| {
            let path = store.object_path(&key);
            let outcome = match fs_err::metadata(&path) {
                Err(_) => ObjectState {
                    key,
                    fault: Some(ObjectFault::Missing),
                    inode: None,
                },
                Ok(meta) => {
                    let inode = Some((meta.dev(), meta.ino()));
                    let hashes_right = hash_file(&path).is_ok_and(|h| h == key.hash);
                    progress.bytes(size);
                    let expected_mode = key.mode();
                    let fault = if !hashes_right {
                        Some(ObjectFault::Corrupt)
                    } else if meta.permissions().mode() & 0o777 != expected_mode {
                        Some(ObjectFault::Mode)
                    } else {
                        None
                    };
                    ObjectState { key, fault, inode }
                }
            };
            progress.item_done("");
            outcome
        })
        .collect();
    progress.finish();
    let mut problems = Vec::new();
    let mut inodes = HashMap::with_capacity(results.len());
    for state in results {
        if let Some(fault) = state.fault {
            problems.push((state.key, fault));
        }
        if let Some(inode) = state.inode {
            inodes.insert(state.key, inode);
        }
    }
    problems.sort_by_key(|(k, _)| *k);
    Ok(ObjectCheck {
        problems,
        inodes,
        checked: objects.len(),
    })
}

/// Object files whose name the index does not know.
fn unindexed_objects(store: &Store) -> anyhow::Result<usize> {
    let known: HashSet<String> = store
        .db
        .all_objects()?
        .into_iter()
        .map(|object| object.key.to_string())
        .collect();
    let mut count = 0;
    for shard in fs_err::read_dir(store.objects_dir())?.flatten() {
        for entry in fs_err::read_dir(shard.path())?.flatten() {
            if !known.contains(entry.file_name().to_string_lossy().as_ref()) {
                count += 1;
            }
        }
    }
    Ok(count)
}

fn hash_file(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0u8; 256 << 10];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(*hasher.finalize().as_bytes())
}

fn load_tier(store: &Store, name: &str, venv: &Path) -> anyhow::Result<TierState> {
    let row = crate::materialize::generations::current_record(store, venv)?;
    let method = row.link_method;
    let root = PathBuf::from(&row.path);
    Ok(TierState {
        name: name.to_string(),
        venv: venv.to_path_buf(),
        edited: venv::edited_packages(&root).into_iter().collect(),
        root,
        generation: row.number,
        method,
        manifest: Manifest::load(store, &row.plan)?,
    })
}

fn check_tier(
    tier: &TierState,
    object_inodes: &HashMap<ObjectKey, (u64, u64)>,
    good_copies: &Mutex<HashMap<ObjectKey, GoodCopy>>,
    progress: &dyn Progress,
) -> TierReport {
    let normalize = crate::materialize::edit::normalize;
    progress.start(
        &format!("verifying {}", tier.name),
        tier.manifest.files.len() as u64,
        0,
    );
    let mut problems: Vec<FileProblem> = tier
        .manifest
        .files
        .par_iter()
        .filter_map(|file| {
            progress.item_done("");
            let dest = tier.root.join(&file.dest);
            let problem = |fault| FileProblem {
                package: file.dist.to_string(),
                path: file.dest.clone(),
                fault,
                repaired: false,
            };
            let Ok(meta) = fs_err::symlink_metadata(&dest) else {
                return Some(problem(FileFault::Missing));
            };
            let edited = tier.edited.contains(&normalize(&file.dist));
            let intact = is_intact(tier, &file.source, &dest, &meta, object_inodes, good_copies);
            (!intact && !edited).then(|| problem(FileFault::Modified))
        })
        .collect();
    progress.finish();
    problems.extend(extra_files(tier));
    problems.sort_by(|a, b| a.path.cmp(&b.path));
    let mut edited: Vec<String> = tier.edited.iter().cloned().collect();
    edited.sort();
    TierReport {
        name: tier.name.clone(),
        venv: tier.venv.clone(),
        generation: Some(tier.generation),
        files_checked: tier.manifest.files.len(),
        problems,
        edited,
        error: None,
    }
}

/// Whether the file at `dest` holds what its `source` says. A file that
/// is not the object's inode but has its content is noted in `good_copies`
/// as a repair source (a hardlinked one preferred).
fn is_intact(
    tier: &TierState,
    source: &FileSource,
    dest: &Path,
    meta: &std::fs::Metadata,
    object_inodes: &HashMap<ObjectKey, (u64, u64)>,
    good_copies: &Mutex<HashMap<ObjectKey, GoodCopy>>,
) -> bool {
    match source {
        FileSource::Object(key) => {
            let same_inode = object_inodes.get(key) == Some(&(meta.dev(), meta.ino()));
            if same_inode {
                true
            } else if hash_file(dest).is_ok_and(|h| h == key.hash) {
                let found = GoodCopy {
                    path: dest.to_path_buf(),
                    hardlinked: tier.method == LinkMethod::Hardlink,
                };
                let mut copies = good_copies.lock().unwrap();
                let best = copies.entry(*key).or_insert_with(|| found.clone());
                if found.hardlinked && !best.hardlinked {
                    *best = found;
                }
                true
            } else {
                false
            }
        }
        FileSource::Empty => meta.len() == 0,
        FileSource::Content(bytes, _) => fs_err::read(dest).is_ok_and(|b| &b == bytes),
    }
}

/// Anything in site-packages no distribution put there (bytecode caches
/// aside).
fn extra_files(tier: &TierState) -> Vec<FileProblem> {
    let expected: HashSet<&Path> = tier
        .manifest
        .files
        .iter()
        .map(|f| f.dest.as_path())
        .collect();
    let mut found = Vec::new();
    crate::fsinfo::walk_files(&tier.root.join(&tier.manifest.site_packages), &mut found);
    let extras = found.into_iter().filter_map(|path| {
        let relative = path.strip_prefix(&tier.root).ok()?.to_path_buf();
        let bytecode = relative
            .components()
            .any(|c| c.as_os_str() == "__pycache__")
            || relative.extension().is_some_and(|e| e == "pyc");
        (!bytecode).then_some(relative)
    });
    extras
        .filter(|path| !expected.contains(path.as_path()))
        .map(|path| FileProblem {
            package: String::new(),
            path,
            fault: FileFault::Extra,
            repaired: false,
        })
        .collect()
}

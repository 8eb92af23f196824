//! `tstore gc [--dry-run]`: delete what no tier can use any more.
//!
//! Roots are what exists: every kept generation of every tier, and the
//! objects of adopted venvs that still exist. A lock roots nothing on its
//! own: a distribution fetched but in no kept generation goes (fetch it
//! again, or materialize before collecting). Everything else goes:
//! distributions and their files, objects no remaining file uses,
//! manifests of dropped generations, generations beyond the kept number,
//! generation directories and temp files left by crashed runs.
//!
//! gc trusts the index only after it passed every check: the cheap ones
//! every open makes and SQLite's page check. Even then, an object that a
//! kept generation's manifest names is never deleted, whatever the index
//! says of it.
//!
//! Freed bytes are counted exactly, from what the disk holds: a file frees
//! its allocated blocks only if every link to its inode is being deleted (an
//! object still hardlinked from a venv outside the store frees nothing), and
//! extents shared with other files (reflinks) are not counted. The real run
//! also reports how much the filesystem's free space actually grew.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::fsinfo;
use crate::materialize::generations::Generations;
use crate::materialize::manifest::Manifest;
use crate::materialize::plan::FileSource;
use crate::progress::Progress;
use crate::store::{IndexDamaged, IndexProblem, ObjectKey, Store};

#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    pub dry_run: bool,
    /// Generations kept per tier.
    pub keep_generations: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub distributions: usize,
    pub objects: usize,
    pub generations: usize,
    pub manifests: usize,
    /// Saved locks of generations no longer kept.
    pub lock_snapshots: usize,
    pub temp_entries: usize,
    /// Adopted venvs whose folder is gone, forgotten with their objects.
    pub adopted_venvs_forgotten: usize,
    /// Bytes the deletions free (or would free).
    pub bytes_freed: u64,
    /// Bytes of deleted store objects still held by links outside the store.
    pub bytes_still_linked: u64,
    /// Growth of the filesystem's free space over the real run.
    pub measured_free_growth: Option<i64>,
}

pub fn gc(store: &Store, options: &GcOptions, progress: &dyn Progress) -> anyhow::Result<GcReport> {
    let mut report = GcReport {
        dry_run: options.dry_run,
        ..GcReport::default()
    };
    ensure_index_sound(store)?;
    if !options.dry_run {
        store.db.write_missing_records()?;
    }
    let free_before = fsinfo::free_bytes(store.root()).ok();
    let mut doomed_paths: Vec<PathBuf> = Vec::new();

    // Generations beyond the kept number, and directories no record knows.
    let mut kept_generations: Vec<(String, i64)> = Vec::new();
    let mut kept_plans: Vec<String> = Vec::new();
    for tier in store.db.tiers()? {
        let generations = Generations::of(Path::new(&tier.venv))?;
        let current = generations.current();
        let recorded = store.db.generations(&tier.venv)?;
        let numbers: Vec<i64> = recorded.iter().map(|g| g.number).collect();
        let keep = generations.kept(&numbers, options.keep_generations);
        for row in &recorded {
            if keep.contains(&row.number) {
                kept_plans.push(row.plan.clone());
                kept_generations.push((tier.venv.clone(), row.number));
                continue;
            }
            report.generations += 1;
            doomed_paths.push(generations.path(row.number));
            if !options.dry_run {
                store.db.delete_generation(&tier.venv, row.number)?;
            }
        }
        // Directories of generations that were never recorded (a crash
        // between building and recording) or whose record is gone.
        for number in generations.on_disk() {
            if !recorded.iter().any(|g| g.number == number) && Some(number) != current {
                report.generations += 1;
                doomed_paths.push(generations.path(number));
            }
        }
        if !options.dry_run {
            generations.remove_stale();
        }
    }

    // Roots: kept generations' distributions.
    let mut rooted: HashSet<i64> = HashSet::new();
    for (venv, number) in &kept_generations {
        rooted.extend(
            store
                .db
                .generation_distributions(venv, *number)?
                .iter()
                .map(|d| d.id),
        );
    }
    let protected = objects_in_manifests(store, &kept_plans)?;
    let doomed_dists: Vec<i64> = store
        .db
        .all_distributions()?
        .into_iter()
        .map(|(id, _, _)| id)
        .filter(|id| !rooted.contains(id))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    report.distributions = doomed_dists.len();
    // Adopted venvs keep their objects until their folder is gone.
    let vanished_adopted: Vec<String> = crate::upkeep::adopt::adopted_venvs(store)?
        .into_iter()
        .filter(|(_, exists)| !exists)
        .map(|(path, _)| path)
        .collect();
    report.adopted_venvs_forgotten = vanished_adopted.len();
    let mut doomed_objects = if options.dry_run {
        store
            .db
            .unreferenced_objects_after(&doomed_dists, &vanished_adopted)?
    } else {
        // Records go first: a crash after this leaves unrecorded files, which
        // the next gc removes; never records of files that are gone.
        store
            .db
            .delete_distributions(&doomed_dists, &vanished_adopted)?
    };
    let (spared, doomed): (Vec<_>, Vec<_>) = doomed_objects
        .into_iter()
        .partition(|(key, _)| protected.contains(key.as_str()));
    doomed_objects = doomed;
    if !spared.is_empty() {
        progress.notice(&format!(
            "{} object(s) no distribution claims are still named by kept generations; kept",
            spared.len()
        ));
        if !options.dry_run {
            store.db.record_objects(&spared)?;
        }
    }
    let known: HashSet<String> = store
        .db
        .all_objects()?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let doomed_keys: HashSet<&str> = doomed_objects.iter().map(|(k, _)| k.as_str()).collect();
    let mut object_paths: Vec<PathBuf> = doomed_objects
        .iter()
        .filter_map(|(key, _)| ObjectKey::parse(key))
        .map(|key| store.object_path(&key))
        .collect();
    // Object files no record knows (a crash between publishing and recording).
    for shard in std::fs::read_dir(store.root().join("objects"))?.flatten() {
        for entry in std::fs::read_dir(shard.path())?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !known.contains(&name)
                && !doomed_keys.contains(name.as_str())
                && !protected.contains(name.as_str())
            {
                object_paths.push(entry.path());
            }
        }
    }
    report.objects = object_paths.len();

    // Manifests and lock snapshots of generations no longer recorded.
    let mut plans: HashSet<String> = HashSet::new();
    let mut snapshots: HashSet<PathBuf> = HashSet::new();
    for tier in store.db.tiers()? {
        for generation in store.db.generations(&tier.venv)? {
            if !options.dry_run || !doomed_paths.contains(&PathBuf::from(&generation.path)) {
                plans.insert(generation.plan);
                snapshots.insert(PathBuf::from(generation.lock));
            }
        }
    }
    for entry in std::fs::read_dir(store.manifests_dir())?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !plans.contains(name.trim_end_matches(".json")) {
            report.manifests += 1;
            doomed_paths.push(entry.path());
        }
    }
    let snapshot_dir = store.lock_snapshots_dir();
    for entry in std::fs::read_dir(snapshot_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        if !snapshots.contains(&entry.path()) {
            report.lock_snapshots += 1;
            doomed_paths.push(entry.path());
        }
    }

    // Temp entries of processes that are gone (or older than a day).
    for entry in std::fs::read_dir(store.tmp_dir())?.flatten() {
        if is_stale_temp(&entry) {
            report.temp_entries += 1;
            doomed_paths.push(entry.path());
        }
    }

    // Count, then delete.
    let mut files: Vec<PathBuf> = Vec::new();
    for path in doomed_paths.iter() {
        if path.is_dir() {
            fsinfo::walk_files(path, &mut files);
        } else {
            files.push(path.clone());
        }
    }
    progress.start("collecting garbage", 0, 0);
    let (freed, still_linked) = count_freed(&files, &object_paths);
    report.bytes_freed = freed;
    report.bytes_still_linked = still_linked;
    if !options.dry_run {
        for path in object_paths.iter().chain(&doomed_paths) {
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
            if let Err(err) = removed
                && err.kind() != std::io::ErrorKind::NotFound
            {
                progress.notice(&format!("cannot remove {}: {err}", path.display()));
            }
        }
        let free_after = fsinfo::free_bytes(store.root()).ok();
        if let (Some(before), Some(after)) = (free_before, free_after) {
            report.measured_free_growth = Some(after as i64 - before as i64);
        }
    }
    progress.finish();
    Ok(report)
}

/// Refuses to collect on the word of an index SQLite finds malformed.
fn ensure_index_sound(store: &Store) -> anyhow::Result<()> {
    let problems = store.db.integrity_problems(false);
    if problems.is_empty() {
        return Ok(());
    }
    Err(IndexDamaged {
        path: store.index_path(),
        problem: IndexProblem::Malformed(problems),
    }
    .into())
}

/// Every object the manifests of these plans name.
fn objects_in_manifests(store: &Store, plans: &[String]) -> anyhow::Result<HashSet<String>> {
    let mut keys = HashSet::new();
    for plan in plans {
        // A kept generation without its manifest: the index cannot be
        // checked against it, so nothing is collected.
        let manifest = Manifest::load(store, plan).with_context(|| {
            format!("gc needs the manifest of every kept generation, and {plan}'s is unreadable")
        })?;
        keys.extend(manifest.files.iter().filter_map(|f| match &f.source {
            FileSource::Object(key) => Some(key.to_string()),
            _ => None,
        }));
    }
    Ok(keys)
}

/// Bytes freed by deleting `files` (plus `objects`), and bytes of objects
/// kept alive by links outside the deletion.
fn count_freed(files: &[PathBuf], objects: &[PathBuf]) -> (u64, u64) {
    struct Inode {
        links_deleted: u64,
        nlink: u64,
        allocated: u64,
        shared: u64,
        is_object: bool,
    }
    let mut inodes: HashMap<(u64, u64), Inode> = HashMap::new();
    let object_set: HashSet<&PathBuf> = objects.iter().collect();
    for path in files.iter().chain(objects) {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let entry = inodes
            .entry((meta.dev(), meta.ino()))
            .or_insert_with(|| Inode {
                links_deleted: 0,
                nlink: meta.nlink(),
                allocated: fsinfo::allocated(&meta),
                shared: fsinfo::shared_bytes(path),
                is_object: false,
            });
        entry.links_deleted += 1;
        entry.is_object |= object_set.contains(path);
    }
    let mut freed = 0;
    let mut still_linked = 0;
    for inode in inodes.values() {
        if inode.links_deleted >= inode.nlink {
            freed += inode.allocated.saturating_sub(inode.shared);
        } else if inode.is_object {
            still_linked += inode.allocated;
        }
    }
    (freed, still_linked)
}

fn is_stale_temp(entry: &std::fs::DirEntry) -> bool {
    if let Some(pid) = crate::store::tmp::owner_pid(&entry.file_name().to_string_lossy()) {
        return pid as u32 != std::process::id() && !crate::store::process_alive(pid);
    }
    // Other temp directories (uv work dirs): stale after a day.
    entry
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() > 86_400)
}

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
//!
//! Three steps: [`roots`] reads what must live, [`decide`] works out from
//! what the index and the disk say what to delete (pure, unit-tested), and
//! [`sweep`] counts the bytes and deletes.

mod decide;
mod roots;
mod sweep;

use std::path::PathBuf;

use serde::Serialize;

pub use sweep::is_stale_temp;

use decide::{Census, Doomed};
use roots::Roots;

use crate::fsinfo;
use crate::materialize::shared_pycs::{self, SharedPycs};
use crate::progress::Progress;
use crate::store::db::ObjectRow;
use crate::store::{IndexDamaged, IndexProblem, Store};

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
    /// Pycs Python wrote in kept generations, now in the store and linked
    /// (not on a dry run).
    pub written_pycs: SharedPycs,
}

pub fn gc(store: &Store, options: &GcOptions, progress: &dyn Progress) -> anyhow::Result<GcReport> {
    ensure_index_sound(store)?;
    if !options.dry_run {
        store.db.write_missing_records()?;
    }
    let free_before = fsinfo::free_bytes(store.location()).ok();
    let roots = roots::find_roots(store, options.keep_generations)?;
    // Before the census: the pycs taken are objects it must know.
    let written_pycs = if options.dry_run {
        SharedPycs::default()
    } else {
        share_written_pycs(store, &roots, progress)
    };
    let distributions =
        decide::doomed_distributions(&store.db.all_distributions()?, &roots.distributions);
    let orphans = if options.dry_run {
        store
            .db
            .unreferenced_objects_after(&distributions, &roots.vanished_adopted)?
    } else {
        forget_generations(store, &roots)?;
        // Records go first: a crash after this leaves unrecorded files, which
        // the next gc removes; never records of files that are gone.
        store
            .db
            .delete_distributions(&distributions, &roots.vanished_adopted)?
    };
    let census = take_census(store, orphans)?;
    let doomed = decide::decide(&roots, &census);
    spare(store, &doomed.spared, options.dry_run, progress)?;

    let generation_dirs = doomed_generation_dirs(&roots);
    let object_paths: Vec<PathBuf> = doomed
        .objects
        .iter()
        .map(|key| store.object_path(key))
        .chain(doomed.stray_objects.iter().cloned())
        .collect();
    let mut report = GcReport {
        dry_run: options.dry_run,
        distributions: distributions.len(),
        objects: object_paths.len(),
        generations: generation_dirs.len(),
        manifests: doomed.manifests.len(),
        lock_snapshots: doomed.lock_snapshots.len(),
        temp_entries: doomed.temps.len(),
        adopted_venvs_forgotten: roots.vanished_adopted.len(),
        written_pycs,
        ..GcReport::default()
    };
    let doomed_paths = other_doomed_paths(generation_dirs, doomed);

    progress.start("collecting garbage", 0, 0);
    (report.bytes_freed, report.bytes_still_linked) =
        sweep::count_freed(&doomed_paths, &object_paths);
    if !options.dry_run {
        sweep::delete(object_paths.iter().chain(&doomed_paths), progress);
        let free_after = fsinfo::free_bytes(store.location()).ok();
        if let (Some(before), Some(after)) = (free_before, free_after) {
            report.measured_free_growth = Some(after as i64 - before as i64);
        }
    }
    progress.finish();
    Ok(report)
}

/// Shares the pycs Python wrote in every kept generation: one copy in the
/// store instead of one per venv. A generation that cannot be (its
/// interpreter is gone) keeps its own, with a notice.
fn share_written_pycs(store: &Store, roots: &Roots, progress: &dyn Progress) -> SharedPycs {
    let mut total = SharedPycs::default();
    for row in roots.tiers.iter().flat_map(|t| &t.kept) {
        let path = std::path::Path::new(&row.path);
        match shared_pycs::share_written_pycs(store, path, row.link_method) {
            Ok(shared) => total += shared,
            Err(err) => progress.notice(&format!(
                "the pycs Python wrote in {} stay its own: {err:#}",
                path.display()
            )),
        }
    }
    total
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

/// Forgets the generations beyond the kept number, and removes what dead
/// processes left in the tiers' generation directories.
fn forget_generations(store: &Store, roots: &Roots) -> anyhow::Result<()> {
    for tier in &roots.tiers {
        for number in &tier.dropped {
            store.db.delete_generation(&tier.venv, *number)?;
        }
        tier.generations.remove_stale();
    }
    Ok(())
}

/// Reads what the index and the store's directories hold now.
fn take_census(store: &Store, orphans: Vec<ObjectRow>) -> anyhow::Result<Census> {
    let recorded = store
        .db
        .all_objects()?
        .into_iter()
        .map(|object| object.key)
        .collect();
    let mut object_files = Vec::new();
    for shard in std::fs::read_dir(store.objects_dir())?.flatten() {
        object_files.extend(named_entries(std::fs::read_dir(shard.path())?));
    }
    let manifests = named_entries(std::fs::read_dir(store.manifests_dir())?).collect();
    // Stores made before lock snapshots have no directory for them.
    let lock_snapshots = std::fs::read_dir(store.lock_snapshots_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .collect();
    let stale_temps = std::fs::read_dir(store.tmp_dir())?
        .flatten()
        .filter(sweep::is_stale_temp)
        .map(|entry| entry.path())
        .collect();
    Ok(Census {
        orphans,
        recorded,
        object_files,
        manifests,
        lock_snapshots,
        stale_temps,
    })
}

/// The readable entries of a directory, with their names.
fn named_entries(dir: std::fs::ReadDir) -> impl Iterator<Item = (PathBuf, String)> {
    dir.flatten().map(|entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        (entry.path(), name)
    })
}

/// Orphaned objects a kept generation's manifest still names are kept; the
/// real run records them again, so the index knows every object it keeps.
fn spare(
    store: &Store,
    spared: &[ObjectRow],
    dry_run: bool,
    progress: &dyn Progress,
) -> anyhow::Result<()> {
    if spared.is_empty() {
        return Ok(());
    }
    progress.notice(&format!(
        "{} object(s) no distribution claims are still named by kept generations; kept",
        spared.len()
    ));
    if !dry_run {
        store.db.record_objects(spared)?;
    }
    Ok(())
}

/// Directories of generations beyond the kept number, and of generations
/// no record knows.
fn doomed_generation_dirs(roots: &Roots) -> Vec<PathBuf> {
    roots
        .tiers
        .iter()
        .flat_map(|tier| {
            tier.dropped
                .iter()
                .chain(&tier.unrecorded)
                .map(|number| tier.generations.path(*number))
        })
        .collect()
}

/// Every doomed path but the objects': generation directories, manifests,
/// lock snapshots, temp entries.
fn other_doomed_paths(generation_dirs: Vec<PathBuf>, doomed: Doomed) -> Vec<PathBuf> {
    let mut paths = generation_dirs;
    paths.extend(doomed.manifests);
    paths.extend(doomed.lock_snapshots);
    paths.extend(doomed.temps);
    paths
}

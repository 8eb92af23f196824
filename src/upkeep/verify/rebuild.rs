//! Rebuilding a lost or damaged index from the store's own files
//! (`tstore verify --repair` when the index fails its checks).
//!
//! - objects: every file under `objects/` (its name is its hash);
//! - distributions and their files: `records/dists/`;
//! - tiers and kept generations: `records/generations/`, for generation
//!   directories that still exist; each tier's current generation is the
//!   one its venv path points at;
//! - bytecode: each generation's manifest names every pyc beside its source;
//!   the pyc's first four bytes are the interpreter's magic number;
//! - adopted venvs: `records/adopted/`, for venvs that still exist.
//!
//! The new index is built in `tmp/` and renamed over the old one, which is
//! kept as `store.db.damaged-<unix time>`: nothing of it is deleted.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::materialize::manifest::Manifest;
use crate::materialize::plan::FileSource;
use crate::progress::Progress;
use crate::store::db::{Db, EMPTY_SOURCE, ObjectRow, Pyc};
use crate::store::records::{AdoptedRecord, GenerationRecord, Readable, Records};
use crate::store::{FileLock, Layout, ObjectKey};

#[derive(Debug, Default, Serialize)]
pub struct RebuildReport {
    /// Where the old index was moved (absent when there was none).
    pub kept_as: Option<PathBuf>,
    pub objects: usize,
    pub distributions: usize,
    pub generations: usize,
    pub bytecode: usize,
    pub adopted_venvs: usize,
    /// Records that could not be used, and why.
    pub skipped: Vec<String>,
}

/// Rebuilds the index of the store laid out as `layout`. Takes the store
/// exclusively: nothing links or deletes objects meanwhile.
pub fn rebuild_index(layout: &Layout, progress: &dyn Progress) -> anyhow::Result<RebuildReport> {
    let _exclusive = FileLock::acquire(&layout.usage_lock(), || {
        progress.notice("waiting for other tstore processes using the store to finish")
    })?;
    let temp = layout.temp_path("rebuild").with_extension("db");
    let mut report = RebuildReport::default();
    let built = fill_index(layout, &temp, &mut report, progress);
    progress.finish();
    if let Err(err) = built {
        // Nothing was swapped: the old index stays as it was.
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", temp.display()));
        }
        return Err(err.context(format!(
            "cannot rebuild the index of {}; the old one is untouched",
            layout.location().display()
        )));
    }
    report.kept_as = swap_in(layout, &temp)?;
    Ok(report)
}

/// Writes everything the store's files say into a new index at `path`.
fn fill_index(
    layout: &Layout,
    path: &Path,
    report: &mut RebuildReport,
    progress: &dyn Progress,
) -> anyhow::Result<()> {
    let db = Db::open(path)?;
    let records = layout.records();
    progress.start("rebuilding the index", 0, 0);
    report.objects = restore_objects(&db, layout)?;
    let ids = restore_distributions(&db, &records, report)?;
    let generations = restore_generations(&db, &records, &ids, report)?;
    report.bytecode = restore_bytecode(&db, layout, &generations, report)?;
    report.adopted_venvs = restore_adopted(&db, &records, report)?;
    Ok(())
}

fn restore_objects(db: &Db, layout: &Layout) -> anyhow::Result<usize> {
    let mut objects = Vec::new();
    for shard in fs_err::read_dir(layout.objects_dir())?.flatten() {
        for entry in fs_err::read_dir(shard.path())?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(key) = ObjectKey::parse(&name) else {
                continue;
            };
            if let Ok(meta) = entry.metadata() {
                objects.push(ObjectRow {
                    key,
                    size: meta.len(),
                });
            }
        }
    }
    db.record_objects(&objects)?;
    Ok(objects.len())
}

/// Wheel sha256 → the new index's distribution id.
fn restore_distributions(
    db: &Db,
    records: &Records,
    report: &mut RebuildReport,
) -> anyhow::Result<HashMap<String, i64>> {
    let mut entries = Vec::new();
    for record in records.read_distributions()? {
        match record {
            Readable::Ok(entry) => entries.push(entry),
            Readable::Damaged(path, why) => {
                report.skipped.push(format!("{}: {why}", path.display()));
            }
        }
    }
    let ids = db.insert_entries(&entries.iter().collect::<Vec<_>>())?;
    report.distributions += entries.len();
    Ok(entries
        .iter()
        .zip(ids)
        .map(|(entry, id)| (entry.details.sha256.clone(), id))
        .collect())
}

/// Generations whose directory exists, oldest first per tier; returns their plans.
fn restore_generations(
    db: &Db,
    records: &Records,
    ids: &HashMap<String, i64>,
    report: &mut RebuildReport,
) -> anyhow::Result<Vec<String>> {
    let mut by_venv: BTreeMap<String, Vec<GenerationRecord>> = BTreeMap::new();
    for record in records.read_generations()? {
        match record {
            Readable::Ok(g) if Path::new(&g.generation.path).is_dir() => by_venv
                .entry(g.generation.venv.clone())
                .or_default()
                .push(g),
            // Its directory is gone: the record describes nothing any more.
            Readable::Ok(g) => {
                records.remove_generation(&g.generation.venv, g.generation.number)?
            }
            Readable::Damaged(path, why) => {
                report.skipped.push(format!("{}: {why}", path.display()))
            }
        }
    }
    let mut plans = Vec::new();
    for (venv, mut generations) in by_venv {
        generations.sort_by_key(|g| g.generation.number);
        for generation in &generations {
            let dist_ids = dist_ids_of(generation, ids, report);
            db.record_generation(
                &generation.name,
                &generation.config,
                &generation.generation,
                &dist_ids,
            )?;
            plans.push(generation.generation.plan.clone());
            report.generations += 1;
        }
        if let Some(current) = current_generation(&venv)
            && generations.iter().any(|g| g.generation.number == current)
        {
            db.set_current(&venv, current)?;
        }
    }
    Ok(plans)
}

fn dist_ids_of(
    generation: &GenerationRecord,
    ids: &HashMap<String, i64>,
    report: &mut RebuildReport,
) -> Vec<i64> {
    let mut found = Vec::new();
    for sha256 in &generation.distributions {
        match ids.get(sha256) {
            Some(id) => found.push(*id),
            None => report.skipped.push(format!(
                "generation {} of {} names distribution {sha256}, which has no record",
                generation.generation.number, generation.generation.venv
            )),
        }
    }
    found
}

/// The generation number a tier's venv symlink points at.
fn current_generation(venv: &str) -> Option<i64> {
    std::fs::read_link(venv)
        .ok()?
        .file_name()?
        .to_str()?
        .parse()
        .ok()
}

/// Bytecode rows from the manifests: each `__pycache__/<stem>.<cache tag>.pyc`
/// object beside its `<stem>.py` source.
fn restore_bytecode(
    db: &Db,
    layout: &Layout,
    plans: &[String],
    report: &mut RebuildReport,
) -> anyhow::Result<usize> {
    let mut rows: BTreeMap<String, BTreeMap<String, (ObjectKey, u64)>> = BTreeMap::new();
    let mut magic_of: HashMap<ObjectKey, Option<String>> = HashMap::new();
    for plan in plans {
        let manifest = match Manifest::load(layout, plan) {
            Ok(manifest) => manifest,
            Err(err) => {
                report.skipped.push(format!(
                    "{}: {err:#} (its bytecode is compiled again)",
                    layout.manifest_path(plan).display()
                ));
                continue;
            }
        };
        let sources: HashMap<&Path, &FileSource> = manifest
            .files
            .iter()
            .map(|f| (f.dest.as_path(), &f.source))
            .collect();
        for file in &manifest.files {
            let FileSource::Object(pyc) = &file.source else {
                continue;
            };
            let Some((source_path, cache_tag)) = source_of_pyc(&file.dest) else {
                continue;
            };
            let source = match sources.get(source_path.as_path()) {
                Some(FileSource::Object(key)) => key.to_string(),
                Some(FileSource::Empty) => EMPTY_SOURCE.to_string(),
                _ => continue,
            };
            let magic = magic_of
                .entry(*pyc)
                .or_insert_with(|| read_magic(&layout.object_path(pyc)));
            let Some(magic) = magic else { continue };
            let size = fs_err::metadata(layout.object_path(pyc)).map_or(0, |m| m.len());
            rows.entry(format!("{cache_tag}-{magic}"))
                .or_default()
                .insert(source, (*pyc, size));
        }
    }
    let mut count = 0;
    for (tag, entries) in rows {
        let entries: Vec<(String, Pyc)> =
            entries.into_iter().map(|(s, pyc)| (s, Some(pyc))).collect();
        count += entries.len();
        db.record_bytecode(&tag, &entries)?;
    }
    Ok(count)
}

/// `…/__pycache__/<stem>.<cache tag>.pyc` → (`…/<stem>.py`, cache tag).
fn source_of_pyc(dest: &Path) -> Option<(PathBuf, String)> {
    let name = dest.file_name()?.to_str()?.strip_suffix(".pyc")?;
    let pycache = dest.parent()?;
    if pycache.file_name()? != "__pycache__" {
        return None;
    }
    let (stem, cache_tag) = name.rsplit_once('.')?;
    Some((
        pycache.parent()?.join(format!("{stem}.py")),
        cache_tag.to_string(),
    ))
}

/// The pyc's magic number in hex, as the interpreter tag spells it.
fn read_magic(path: &Path) -> Option<String> {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .ok()?
        .read_exact(&mut magic)
        .ok()?;
    Some(hex::encode(magic))
}

fn restore_adopted(
    db: &Db,
    records: &Records,
    report: &mut RebuildReport,
) -> anyhow::Result<usize> {
    let mut count = 0;
    for record in records.read_adopted()? {
        match record {
            Readable::Ok(AdoptedRecord { path, objects, .. })
                if Path::new(&path).join("pyvenv.cfg").is_file() =>
            {
                db.record_adopted(&path, &objects)?;
                count += 1;
            }
            Readable::Ok(gone) => records.remove_adopted(&gone.path)?,
            Readable::Damaged(path, why) => {
                report.skipped.push(format!("{}: {why}", path.display()))
            }
        }
    }
    Ok(count)
}

/// Moves the old index aside (with its WAL) and the new one into place.
fn swap_in(layout: &Layout, rebuilt: &Path) -> anyhow::Result<Option<PathBuf>> {
    let _opening = FileLock::acquire(&layout.open_lock(), || {})?;
    let index = layout.index_path();
    let kept = side_file(
        &index,
        &format!(".damaged-{}", crate::store::db::unix_now()),
    );
    let kept_as = if index.exists() {
        fs_err::rename(&index, &kept).context("cannot move the damaged index aside")?;
        Some(kept.clone())
    } else {
        None
    };
    for suffix in ["-wal", "-shm"] {
        let side = side_file(&index, suffix);
        if side.exists() {
            let to = PathBuf::from(format!("{}{suffix}", kept.display()));
            fs_err::rename(&side, to)?;
        }
    }
    fs_err::rename(rebuilt, &index)?;
    Ok(kept_as)
}

/// `index` with `suffix` added to its file name (`store.db-wal`).
fn side_file(index: &Path, suffix: &str) -> PathBuf {
    let mut name = index.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

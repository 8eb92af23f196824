//! `tstore du`: what the tiers and the store cost on disk, and what the same
//! tiers would cost as plain copies.
//!
//! Every figure is allocated bytes (`st_blocks`), not file sizes. Per tier
//! (its current generation): files; what a plain copy of it would take (each
//! of its store objects once, plus its own files); bytes of objects only it
//! uses; bytes of objects it shares with other tiers; and its private bytes
//! (files written or copied into the venv, less extents shared by reflink).

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
    /// Files of the venv that are not store objects (RECORD, launchers, copies).
    pub private_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct DuReport {
    pub tiers: Vec<TierUsage>,
    pub store_objects: usize,
    /// Objects, index and manifests.
    pub store_bytes: u64,
    /// Private bytes of every kept generation of every tier.
    pub venv_bytes: u64,
    /// The tiers as plain copies, one each.
    pub plain_copies_bytes: u64,
    /// `plain_copies_bytes` minus store and venvs.
    pub saving_bytes: i64,
}

/// `names`: tier names to show (all materialized tiers when empty).
pub fn du(store: &Store, names: &[String]) -> anyhow::Result<DuReport> {
    // Allocated size and inode of every object.
    let objects = store.db.all_objects()?;
    let object_info: HashMap<ObjectKey, (u64, (u64, u64))> = objects
        .par_iter()
        .filter_map(|(text, _)| {
            let key = ObjectKey::parse(text)?;
            let meta = std::fs::metadata(store.object_path(&key)).ok()?;
            Some((key, (fsinfo::allocated(&meta), (meta.dev(), meta.ino()))))
        })
        .collect();
    let object_inodes: HashSet<(u64, u64)> =
        object_info.values().map(|(_, inode)| *inode).collect();

    struct Loaded {
        name: String,
        venv: PathBuf,
        generation: i64,
        manifest: Manifest,
        root: PathBuf,
    }
    let mut loaded = Vec::new();
    let mut all_generation_dirs = Vec::new();
    for tier in store.db.tiers()? {
        let venv = PathBuf::from(&tier.venv);
        all_generation_dirs.extend(
            store
                .db
                .generations(&tier.venv)?
                .iter()
                .map(|g| PathBuf::from(&g.path)),
        );
        let Ok(row) = crate::materialize::generations::current_record(store, &venv) else {
            continue;
        };
        loaded.push(Loaded {
            name: tier.name.clone(),
            venv,
            generation: row.number,
            manifest: Manifest::load(store, &row.plan)?,
            root: PathBuf::from(&row.path),
        });
    }

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
        let mut used: HashSet<ObjectKey> = HashSet::new();
        for file in &tier.manifest.files {
            if let FileSource::Object(key) = &file.source {
                used.insert(*key);
            }
        }
        let size = |key: &ObjectKey| object_info.get(key).map_or(0, |(bytes, _)| *bytes);
        let unique: u64 = used.iter().filter(|k| users[*k].len() == 1).map(size).sum();
        let shared: u64 = used.iter().filter(|k| users[*k].len() > 1).map(size).sum();
        let private = private_bytes(&tier.root, &object_inodes);
        // A plain copy holds every file by itself: object contents once per
        // file, written files as they are.
        let plain_copy: u64 = tier
            .manifest
            .files
            .par_iter()
            .map(|file| match &file.source {
                FileSource::Object(key) => size(key),
                _ => std::fs::metadata(tier.root.join(&file.dest))
                    .map_or(0, |m| fsinfo::allocated(&m)),
            })
            .sum();
        let usage = TierUsage {
            name: tier.name.clone(),
            venv: tier.venv.clone(),
            generation: tier.generation,
            files: tier.manifest.files.len(),
            plain_copy_bytes: plain_copy,
            unique_bytes: unique,
            shared_bytes: shared,
            private_bytes: private,
        };
        report.plain_copies_bytes += usage.plain_copy_bytes;
        if names.is_empty() || names.contains(&usage.name) {
            report.tiers.push(usage);
        }
    }

    report.store_bytes = object_info.values().map(|(bytes, _)| bytes).sum::<u64>()
        + dir_bytes(&store.manifests_dir())
        + ["store.db", "store.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(store.root().join(f)).ok())
            .map(|m| fsinfo::allocated(&m))
            .sum::<u64>();
    report.venv_bytes = all_generation_dirs
        .iter()
        .map(|dir| private_bytes(dir, &object_inodes))
        .sum();
    report.saving_bytes =
        report.plain_copies_bytes as i64 - (report.store_bytes + report.venv_bytes) as i64;
    Ok(report)
}

/// Allocated bytes of the files under `root` that are not store objects,
/// less extents they share with other files.
fn private_bytes(root: &Path, object_inodes: &HashSet<(u64, u64)>) -> u64 {
    let mut files = Vec::new();
    fsinfo::walk_files(root, &mut files);
    files
        .par_iter()
        .filter_map(|path| {
            let meta = std::fs::symlink_metadata(path).ok()?;
            if !meta.is_file() || object_inodes.contains(&(meta.dev(), meta.ino())) {
                return None;
            }
            Some(fsinfo::allocated(&meta).saturating_sub(fsinfo::shared_bytes(path)))
        })
        .sum()
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut files = Vec::new();
    fsinfo::walk_files(dir, &mut files);
    files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| fsinfo::allocated(&m))
        .sum()
}

//! Building a tier's venv from the store.
//!
//! 1. [`plan::build`] computes the manifest (every file, its source).
//! 2. If the venv records the same plan hash and its site-packages holds the
//!    same entries, nothing is done. If another kept generation does (after
//!    a rollback, say), the tier's path is switched to it.
//! 3. Otherwise a new generation is built (see [`generations`]): the
//!    skeleton (a copy of `uv venv`'s output, see [`venv`]), then the tree
//!    ([`tree`]: directories and files, one parallel task per directory);
//!    objects are linked by the method [`crate::link::Linker`] probed, per-venv
//!    files written. Its manifest and a snapshot of the lock it was built
//!    from are saved in the store.
//! 4. The tier's path is switched to the new generation atomically; a failure
//!    or kill before that leaves the previous generation in use. Generations
//!    beyond the kept number are deleted, least recently used first.

pub mod closure;
pub mod edit;
pub mod generations;
pub mod manifest;
pub mod plan;
pub mod scripts;
pub mod tree;
pub mod venv;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::Context;

use crate::config::{LinkMode, Tier};
use crate::fetch::Fetched;
use crate::interpreter::Interpreter;
use crate::progress::{Progress, timed};
use crate::store::db::{Bytecode, GenerationRow};
use crate::store::{FileLock, Store};
use crate::uv::Uv;

pub use crate::link::LinkMethod;
use plan::Plan;

#[derive(Debug, Clone, Default)]
pub struct MaterializeOptions {
    pub link_mode: LinkMode,
    /// Replace a venv at the target that tstore did not make.
    pub force: bool,
    /// Generations to keep per tier (at least 1).
    pub keep_generations: usize,
}

/// What one tier's materialize did.
#[derive(Debug, Clone)]
pub enum Outcome {
    UpToDate {
        venv: PathBuf,
    },
    /// A kept generation had this plan already; the tier's path now points at it.
    Switched {
        venv: PathBuf,
        generation: i64,
    },
    Built(BuildReport),
}

#[derive(Debug, Clone)]
pub struct BuildReport {
    pub venv: PathBuf,
    pub generation: i64,
    pub method: LinkMethod,
    pub files: usize,
    pub distributions: usize,
    /// Files copied because the chosen method failed for them (EMLINK…).
    pub copied_instead: u64,
}

pub struct TierInput<'a> {
    /// From [`inputs_key`]: recorded so an unchanged tier is found without uv.
    pub inputs_key: String,
    pub store: &'a Store,
    pub uv: &'a Uv,
    pub interpreter: &'a Interpreter,
    pub tier: &'a Tier,
    pub config_label: String,
    pub lock_path: &'a Path,
    /// The bytes of the lock at `lock_path` that `fetched` was selected
    /// from; a new generation keeps a snapshot of them.
    pub lock_bytes: &'a [u8],
    pub fetched: &'a [Fetched],
}

/// Compiles missing bytecode into the store and plans the venv at the
/// tier's path.
fn prepare(input: &TierInput<'_>, progress: &dyn Progress) -> anyhow::Result<Plan> {
    let target = &input.tier.venv;
    let mut requested = input.tier.requested_names();
    // A local project's name is known once uv has read its metadata.
    for item in input.fetched {
        if let crate::dist::Source::Local { path, .. } = &item.selected.source
            && input
                .tier
                .requirements
                .iter()
                .any(|r| r.local.as_ref().is_some_and(|l| &l.path == path))
        {
            requested.push(item.selected.name.clone());
        }
    }
    let bytecode_tag = input
        .tier
        .compile_bytecode
        .then(|| input.interpreter.bytecode_tag())
        .flatten();
    let mut dists = plan::read_distributions(input.store, input.fetched, bytecode_tag.as_deref())?;
    if let Some(tag) = &bytecode_tag {
        let sources = plan::sources_without_bytecode(&dists)?;
        if !sources.is_empty() {
            let compiled = timed(progress, "bytecode", || {
                crate::store::bytecode::compile(
                    input.store,
                    &input.interpreter.executable,
                    tag,
                    &sources,
                    progress,
                )
            })?;
            let failed = compiled
                .values()
                .filter(|b| **b == Bytecode::DoesNotCompile)
                .count();
            progress.detail(&format!(
                "bytecode: {} file(s) compiled into the store, {failed} do not compile",
                compiled.len() - failed
            ));
            plan::apply_bytecode(&mut dists, &compiled);
        }
    }
    let plan = timed(progress, "plan", || {
        plan::build(
            &plan::PlanInput {
                store: input.store,
                requested: &requested,
                venv: target,
                site_packages: input.interpreter.site_packages(),
                python_version: input.interpreter.version,
                interpreter: &input.interpreter.executable,
                pyc_cache_tag: bytecode_tag
                    .as_ref()
                    .and(input.interpreter.cache_tag.as_deref()),
            },
            &dists,
        )
    })?;
    Ok(plan)
}

pub fn materialize(
    input: &TierInput<'_>,
    options: &MaterializeOptions,
    progress: &dyn Progress,
) -> anyhow::Result<Outcome> {
    let target = &input.tier.venv;
    let plan = prepare(input, progress)?;
    if is_up_to_date(target, &plan) {
        return Ok(Outcome::UpToDate {
            venv: target.clone(),
        });
    }
    for warning in &plan.warnings {
        progress.notice(warning);
    }

    let generations = generations::Generations::of(target)?;
    crate::fsinfo::create_dir_all_with_mode(&generations.dir, crate::fsinfo::DIR_MODE)
        .with_context(|| format!("cannot create {}", generations.dir.display()))?;
    let _guard = FileLock::acquire(
        &input.store.lock_file(&target.display().to_string()),
        || {
            progress.notice(&format!(
                "waiting for another tstore process that is materializing {}",
                target.display()
            ))
        },
    )?;
    // Another process may have built the same venv while this one waited.
    if is_up_to_date(target, &plan) {
        return Ok(Outcome::UpToDate {
            venv: target.clone(),
        });
    }
    generations.check_replaceable(options.force)?;
    generations.remove_stale();

    let venv_key = target.display().to_string();
    let recorded = input.store.db.generations(&venv_key)?;
    if let Some(number) = already_built(&generations, &recorded, &plan) {
        generations.switch_to(number)?;
        input.store.db.set_current(&venv_key, number)?;
        generations.prune(input.store, options.keep_generations)?;
        return Ok(Outcome::Switched {
            venv: target.clone(),
            generation: number,
        });
    }
    let number = generations.next_number(recorded.iter().map(|g| g.number));
    let staging = generations.staging(number);
    let built = build_venv(input, &plan, &staging, options, progress);
    let mut report = match built {
        Ok(report) => report,
        Err(err) => {
            let _ = fs_err::remove_dir_all(&staging);
            return Err(err.context(format!(
                "materializing {} failed; the venv in use is untouched",
                input.tier.name
            )));
        }
    };
    report.generation = number;
    timed(progress, "save, record and switch", || {
        save_and_switch(input, &plan, &generations, &staging, &report, options)
    })?;
    Ok(Outcome::Built(report))
}

/// Moves the built generation `report.generation` from `staging` into
/// place, keeps its manifest and lock, records it and points the tier's
/// path at it; older generations beyond the kept number go.
fn save_and_switch(
    input: &TierInput<'_>,
    plan: &Plan,
    generations: &generations::Generations,
    staging: &Path,
    report: &BuildReport,
    options: &MaterializeOptions,
) -> anyhow::Result<()> {
    let number = report.generation;
    let path = generations.path(number);
    fs_err::rename(staging, &path)?;
    manifest::Manifest::of(plan).save(input.store, &plan.hash)?;
    let lock = generations::save_lock_snapshot(input.store, input.lock_bytes)?;
    // Recorded before the switch: a generation the path may point at is
    // always a gc root.
    let dist_ids: Vec<i64> = input.fetched.iter().map(|f| f.dist_id).collect();
    input.store.db.record_generation(
        &input.tier.name,
        &input.config_label,
        &GenerationRow {
            venv: input.tier.venv.display().to_string(),
            number,
            path: path.display().to_string(),
            plan: plan.hash.clone(),
            lock: lock.display().to_string(),
            link_method: report.method,
            created_at: crate::store::db::unix_now(),
        },
        &dist_ids,
    )?;
    generations.switch_to(number)?;
    generations.prune(input.store, options.keep_generations)?;
    Ok(())
}

/// Builds the tier as a standalone venv at `dir` (its `venv` must be
/// `dir`): no generations, no record in the store, so nothing of the store
/// is needed afterwards when files are copied. Built beside `dir` and
/// renamed into place; an existing `dir` is replaced only with `force`.
pub fn materialize_into(
    input: &TierInput<'_>,
    options: &MaterializeOptions,
    progress: &dyn Progress,
) -> anyhow::Result<BuildReport> {
    let dir = &input.tier.venv;
    let exists = dir.symlink_metadata().is_ok();
    let empty = fs_err::read_dir(dir).is_ok_and(|mut d| d.next().is_none());
    if exists && !empty && !options.force {
        anyhow::bail!(
            "{} exists and is not empty; give --force to replace it",
            dir.display()
        );
    }
    let plan = prepare(input, progress)?;
    for warning in &plan.warnings {
        progress.notice(warning);
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    crate::fsinfo::create_dir_all_with_mode(parent, crate::fsinfo::DIR_MODE)?;
    let staging = parent.join(format!(
        ".{}.tstore-building-{}",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = fs_err::remove_dir_all(&staging);
    let report = match build_venv(input, &plan, &staging, options, progress) {
        Ok(report) => report,
        Err(err) => {
            let _ = fs_err::remove_dir_all(&staging);
            return Err(err.context(format!("building {} failed", dir.display())));
        }
    };
    if exists {
        let old = parent.join(format!(
            ".{}.tstore-old-{}",
            dir.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        fs_err::rename(dir, &old)?;
        fs_err::rename(&staging, dir)?;
        fs_err::remove_dir_all(&old)?;
    } else {
        fs_err::rename(&staging, dir)?;
    }
    Ok(report)
}

/// Hash of what a tier's venv is built from that tstore can read without
/// running uv or planning: the lock's bytes, the source trees of the local
/// projects it builds (not editable ones: their edits need no rebuild), the
/// Python request, the venv path, the link mode, the store, whether
/// bytecode is linked and tstore's version.
pub fn inputs_key(
    store: &Store,
    tier: &Tier,
    lock_path: &Path,
    lock: &[u8],
    link_mode: LinkMode,
) -> anyhow::Result<String> {
    let mut hasher = blake3::Hasher::new();
    for part in [
        concat!("tstore-inputs-2/", env!("CARGO_PKG_VERSION")).as_bytes(),
        if tier.compile_bytecode {
            b"bytecode".as_slice()
        } else {
            b"no bytecode".as_slice()
        },
        lock,
        tier.python.as_bytes(),
        tier.venv.as_os_str().as_encoded_bytes(),
        link_mode.to_string().as_bytes(),
        store.location().as_os_str().as_encoded_bytes(),
    ] {
        hasher
            .update(&(part.len() as u64).to_le_bytes())
            .update(part);
    }
    // Only locks naming a folder are parsed: the common case stays a hash
    // of bytes.
    if lock.windows(b"directory".len()).any(|w| w == b"directory") {
        let text = String::from_utf8_lossy(lock);
        let parsed = crate::lock::PyLock::parse(&text, lock_path)?;
        let lock_dir = lock_path.parent().unwrap_or(Path::new("."));
        for package in &parsed.packages {
            let Some(directory) = &package.directory else {
                continue;
            };
            let editable = directory.get("editable").and_then(|e| e.as_bool()) == Some(true);
            if let (false, Some(path)) = (editable, directory.get("path").and_then(|p| p.as_str()))
            {
                let tree = crate::local::tree_hash(&lock_dir.join(path))?;
                hasher.update(tree.as_bytes());
            }
        }
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// The cheap no-op check, before any uv call or planning: the venv was built
/// from exactly these inputs, nothing was made private by `tstore edit`, its
/// interpreter still exists, and site-packages has the same top-level names.
/// (Inputs it cannot see, such as a newer interpreter `uv python find` would
/// now pick, are left for the next change of the lock.)
pub fn is_unchanged(target: &Path, inputs_key: &str) -> bool {
    venv::recorded_inputs(target).as_deref() == Some(inputs_key)
        && venv::edited_packages(target).is_empty()
        && target.join("bin/python").exists()
        && venv::entries_unchanged(target)
}

/// Same plan recorded, no package made private by `tstore edit`, and the
/// same top-level entries in site-packages as when it was built. Content
/// edits inside the venv are not looked for here (`tstore verify` does).
fn is_up_to_date(target: &Path, plan: &Plan) -> bool {
    venv::recorded_plan(target).as_deref() == Some(plan.hash.as_str())
        && venv::edited_packages(target).is_empty()
        && venv::entries_unchanged(target)
}

/// The newest kept generation, other than the current one, that was built
/// from `plan` and is still as built. Only while the tier's path points at
/// one of its generations: a venv path that was deleted is built afresh.
fn already_built(
    generations: &generations::Generations,
    recorded: &[GenerationRow],
    plan: &Plan,
) -> Option<i64> {
    let current = generations.current()?;
    recorded
        .iter()
        .filter(|g| g.number != current && g.plan == plan.hash)
        .map(|g| g.number)
        .filter(|n| is_up_to_date(&generations.path(*n), plan))
        .max()
}

fn build_venv(
    input: &TierInput<'_>,
    plan: &Plan,
    staging: &Path,
    options: &MaterializeOptions,
    progress: &dyn Progress,
) -> anyhow::Result<BuildReport> {
    let target = &input.tier.venv;
    timed(progress, "venv skeleton", || {
        venv::create_skeleton(
            input.uv,
            input.store,
            &input.interpreter.executable,
            staging,
            target,
            &input.tier.name,
        )
    })?;
    let probe = crate::link::Linker::probe(options.link_mode, input.store, staging)?;
    if let Some(reason) = &probe.fallback_reason {
        if probe.linker.method() == LinkMethod::Copy {
            progress.notice(reason);
        } else {
            progress.detail(&format!("using {}: {reason}", probe.linker.method()));
        }
    }
    let linker = probe.linker;

    progress.start("linking", plan.files.len() as u64, 0);
    timed(progress, "directories and files", || {
        tree::write(staging, plan, input.store, &linker, progress)
    })?;
    progress.finish();
    let renewed = linker.objects_renewed.load(Ordering::Relaxed);
    if renewed > 0 {
        progress.detail(&format!(
            "{renewed} store object(s) reached the filesystem's link limit and were replaced by fresh copies"
        ));
    }
    let copied_instead = linker.copied_instead.load(Ordering::Relaxed);
    if copied_instead > 0 {
        progress.notice(&format!(
            "{copied_instead} file(s) could not be {}ed and were copied instead",
            linker.method()
        ));
    }
    let entries = venv::entries_hash(plan.site_packages_entries.iter().map(String::as_str));
    venv::write_marker(
        staging,
        &venv::Marker {
            plan: &plan.hash,
            inputs: &input.inputs_key,
            site_packages: &plan.site_packages,
            entries: &entries,
        },
    )?;
    Ok(BuildReport {
        venv: target.clone(),
        generation: 0,
        method: linker.method(),
        files: plan.files.len(),
        distributions: input.fetched.len(),
        copied_instead,
    })
}

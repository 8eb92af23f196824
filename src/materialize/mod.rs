//! Building a tier's venv from the store.
//!
//! 1. [`plan::build`] computes the manifest (every file, its source), with
//!    the bytecode the store already has.
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
//! 5. When sources still lack bytecode, the venv is usable from step 4 on;
//!    the missing pycs are then compiled into the store and linked into the
//!    same generation, and only then is it recorded as complete (see
//!    [`bytecode`]). A kill meanwhile leaves a working venv that the next
//!    run finishes.

pub mod bytecode;
pub mod closure;
pub mod edit;
pub mod generations;
pub mod manifest;
pub mod plan;
pub mod recording;
pub mod scripts;
pub mod shared_pycs;
pub mod tree;
pub mod venv;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::{BytecodeMode, LinkMode, Tier};
use crate::fetch::Fetched;
use crate::interpreter::Interpreter;
use crate::progress::{Progress, timed};
use crate::store::bytecode::{Compiler, Tally};
use crate::store::db::GenerationRow;
use crate::store::{FileLock, Store};
use crate::uv::Uv;

pub use crate::link::LinkMethod;
use plan::Plan;
use recording::Recording;

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
    /// Pycs compiled into the store and linked after the venv was usable.
    pub bytecode_compiled: usize,
    /// When bytecode was compiled after the venv was usable (every file
    /// linked, imports work): how long compiling and linking it took.
    pub bytecode_after: Option<Duration>,
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
    /// Bytecode already being compiled for the tier (by its fetch), if any:
    /// what it has compiled is linked from the start, the rest waited for.
    pub compiling: Option<&'a Compiler>,
}

/// What planning reads from the store, once per run.
struct Prepared<'a> {
    dists: Vec<plan::DistributionFiles<'a>>,
    requested: Vec<String>,
    /// The interpreter's bytecode tag when bytecode is linked.
    bytecode_tag: Option<String>,
    /// Sources the store has no bytecode entry for (none without a tag).
    missing: Vec<(String, String)>,
}

/// Reads the tier's distributions and the bytecode the store has for them.
fn prepare<'a>(input: &TierInput<'a>) -> anyhow::Result<Prepared<'a>> {
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
    let mode = input.tier.compile_bytecode;
    let bytecode_tag = mode
        .links_pycs()
        .then(|| input.interpreter.bytecode_tag())
        .flatten();
    let dists = plan::read_distributions(input.store, input.fetched, bytecode_tag.as_deref())?;
    // A lazy tier links what the store has and compiles nothing: Python
    // writes the rest on import.
    let missing = match &bytecode_tag {
        Some(_) if mode.compiles() => plan::sources_without_bytecode(&dists)?,
        _ => Vec::new(),
    };
    Ok(Prepared {
        dists,
        requested,
        bytecode_tag,
        missing,
    })
}

/// Compiles the sources `prepared` lacks bytecode for into the store and
/// puts the result into its rows; returns how many compiled.
fn compile_missing(
    input: &TierInput<'_>,
    prepared: &mut Prepared<'_>,
    progress: &dyn Progress,
) -> anyhow::Result<usize> {
    let (Some(tag), false) = (&prepared.bytecode_tag, prepared.missing.is_empty()) else {
        return Ok(0);
    };
    let started;
    let compiler = match input.compiling {
        Some(compiler) => compiler,
        None => {
            started = Compiler::new(input.store, &input.interpreter.executable, tag);
            &started
        }
    };
    let compiled = timed(progress, "bytecode", || {
        compiler.submit(&prepared.missing)?;
        compiler.finish(input.store, progress)
    })?;
    let tally = Tally::of(&compiled);
    report_compiled(progress, tally);
    plan::apply_bytecode(&mut prepared.dists, &compiled);
    prepared.missing.clear();
    Ok(tally.compiled)
}

fn report_compiled(progress: &dyn Progress, tally: Tally) {
    progress.detail(&format!(
        "bytecode: {} file(s) compiled into the store, {} do not compile",
        tally.compiled, tally.failed
    ));
}

/// Plans the venv at the tier's path from what `prepared` holds.
fn plan_of(
    input: &TierInput<'_>,
    prepared: &Prepared<'_>,
    progress: &dyn Progress,
) -> anyhow::Result<Plan> {
    timed(progress, "plan", || {
        plan::build(
            &plan::PlanInput {
                store: input.store,
                requested: &prepared.requested,
                venv: &input.tier.venv,
                site_packages: input.interpreter.site_packages(),
                python_version: input.interpreter.version,
                interpreter: &input.interpreter.executable,
                pyc_cache_tag: prepared
                    .bytecode_tag
                    .as_ref()
                    .and(input.interpreter.cache_tag.as_deref()),
            },
            &prepared.dists,
        )
    })
}

/// What a generation still waiting for bytecode was built from: its
/// inputs and interpreter. The same key on the next run means the same
/// files, so the generation can be finished in place.
fn pending_key(input: &TierInput<'_>) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update(b"tstore-bytecode-pending-1\0")
        .update(input.inputs_key.as_bytes())
        .update(b"\0")
        .update(input.interpreter.executable.as_os_str().as_encoded_bytes());
    hasher.finalize().to_hex()[..32].to_string()
}

/// Builds the tier's venv (see the module docs); wheels the fetch left
/// unrecorded are recorded meanwhile ([`recording`]).
pub fn materialize(
    input: &TierInput<'_>,
    options: &MaterializeOptions,
    progress: &dyn Progress,
) -> anyhow::Result<Outcome> {
    std::thread::scope(|scope| {
        let recording = Recording::start(scope, input.store, input.fetched, progress);
        let outcome = materialize_while_recording(input, &recording, options, progress);
        joined(outcome, recording.finish(), progress)
    })
}

/// What building gave, unless it succeeded and the recording failed; a
/// recording error beside a build error is shown as a notice.
fn joined<T>(
    built: anyhow::Result<T>,
    recorded: anyhow::Result<()>,
    progress: &dyn Progress,
) -> anyhow::Result<T> {
    match (built, recorded) {
        (Ok(built), Ok(())) => Ok(built),
        (Ok(_), Err(err)) => Err(err),
        (Err(err), Ok(())) => Err(err),
        (Err(err), Err(also)) => {
            progress.notice(&format!("recording the new wheels failed too: {also:#}"));
            Err(err)
        }
    }
}

fn materialize_while_recording(
    input: &TierInput<'_>,
    recording: &Recording<'_>,
    options: &MaterializeOptions,
    progress: &dyn Progress,
) -> anyhow::Result<Outcome> {
    let target = &input.tier.venv;
    if input.tier.compile_bytecode == BytecodeMode::Lazy {
        share_pycs_in_use(input, progress);
    }
    let compiled_early = match input.compiling {
        Some(compiler) => compiler.record_finished(input.store)?,
        None => Tally::default(),
    };
    let mut prepared = prepare(input)?;
    if prepared.missing.is_empty() && compiled_early != Tally::default() {
        report_compiled(progress, compiled_early);
    }
    // With every pyc in the store this is the complete plan; otherwise it
    // is what the venv can be built with before compiling.
    let plan = plan_of(input, &prepared, progress)?;
    let complete = prepared.missing.is_empty();
    if complete && is_up_to_date(target, &plan) {
        return Ok(Outcome::UpToDate {
            venv: target.clone(),
        });
    }
    for warning in &plan.warnings {
        progress.notice(warning);
    }
    if input.tier.compile_bytecode == BytecodeMode::Lazy {
        let linked = plan
            .files
            .iter()
            .filter(|f| bytecode::is_linked_pyc(f))
            .count();
        progress.detail(&format!(
            "bytecode: lazy: {linked} pyc(s) the store has are linked; Python writes the \
             others on first import, and `tstore gc` shares them"
        ));
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
    if complete && is_up_to_date(target, &plan) {
        return Ok(Outcome::UpToDate {
            venv: target.clone(),
        });
    }
    generations.check_replaceable(options.force)?;
    generations.remove_stale();

    let venv_key = target.display().to_string();
    let recorded = input.store.db.generations(&venv_key)?;
    let pending_key = pending_key(input);
    if let Some((row, base)) = unfinished(input, &generations, &recorded, &pending_key, &plan) {
        progress.notice(&format!(
            "{}: finishing the bytecode of generation {} (a previous run stopped while compiling it)",
            input.tier.name, row.number
        ));
        let report = BuildReport {
            venv: target.clone(),
            generation: row.number,
            method: row.link_method,
            files: plan.files.len(),
            distributions: input.fetched.len(),
            copied_instead: 0,
            bytecode_compiled: 0,
            bytecode_after: None,
        };
        let unfinished = Unfinished {
            plan,
            base,
            row,
            report,
        };
        let report = finish_bytecode(input, recording, &mut prepared, unfinished, progress)?;
        return Ok(Outcome::Built(report));
    }
    if complete && let Some(number) = already_built(&generations, &recorded, &plan) {
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
    let pending = (!complete).then_some(pending_key.as_str());
    // The manifest is written while the tree is linked: saving a new
    // tekton-dev generation after its last link took 62-96 ms with it, 3 ms
    // without (linking took 11 ms more; medians of 5).
    let (built, saved) = std::thread::scope(|scope| {
        let saving = scope.spawn(|| manifest::Manifest::of(&plan).save(input.store, &plan.hash));
        let built = build_venv(input, &plan, &staging, pending, options, progress);
        let saved = saving
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (built, saved)
    });
    // The generation names its distributions: their rows must be in.
    let ready = built
        .and_then(|report| saved.map(|()| report))
        .and_then(|report| Ok((report, recording.dist_ids()?)));
    let (mut report, dist_ids) = match ready {
        Ok(ready) => ready,
        Err(err) => {
            let _ = fs_err::remove_dir_all(&staging);
            return Err(err.context(format!(
                "materializing {} failed; the venv in use is untouched",
                input.tier.name
            )));
        }
    };
    report.generation = number;
    let row = timed(progress, "save, record and switch", || {
        save_and_switch(
            input,
            &dist_ids,
            &plan,
            &generations,
            &staging,
            &report,
            options,
        )
    })?;
    if complete {
        return Ok(Outcome::Built(report));
    }
    progress.notice(&format!(
        "{}: usable now at {}; compiling the bytecode of {} source file(s) \
         (Ctrl-C leaves a working venv that imports from source; the next `tstore materialize` finishes it)",
        input.tier.name,
        target.display(),
        prepared.missing.len()
    ));
    let unfinished = Unfinished {
        base: plan.files.clone(),
        plan,
        row,
        report,
    };
    let report = finish_bytecode(input, recording, &mut prepared, unfinished, progress)?;
    Ok(Outcome::Built(report))
}

/// Takes the pycs Python wrote in the lazy tier's generation in use into
/// the store, so the generation built now links them. Only a notice when
/// that fails: the venv is built as it would be without them.
fn share_pycs_in_use(input: &TierInput<'_>, progress: &dyn Progress) {
    let target = &input.tier.venv;
    let shared = (|| -> anyhow::Result<shared_pycs::SharedPycs> {
        let Some(current) = generations::Generations::of(target)?.current() else {
            return Ok(Default::default());
        };
        let recorded = input.store.db.generations(&target.display().to_string())?;
        let Some(row) = recorded.iter().find(|g| g.number == current) else {
            return Ok(Default::default());
        };
        timed(progress, "share written pycs", || {
            shared_pycs::share_written_pycs(input.store, Path::new(&row.path), row.link_method)
        })
    })();
    match shared {
        Ok(shared) if shared.taken > 0 => progress.detail(&format!(
            "bytecode: {} pyc(s) Python wrote in {} taken into the store",
            shared.taken,
            target.display()
        )),
        Ok(_) => {}
        Err(err) => progress.notice(&format!(
            "{}: the pycs Python wrote in {} stay its own: {err:#}",
            input.tier.name,
            target.display()
        )),
    }
}

/// The tier's current generation when it was built from the same inputs
/// but its bytecode is still missing (a run was stopped while compiling),
/// with its row and the files it holds; `plan` (this run's, before
/// compiling) must hold those files plus only pycs.
fn unfinished(
    input: &TierInput<'_>,
    generations: &generations::Generations,
    recorded: &[GenerationRow],
    pending_key: &str,
    plan: &Plan,
) -> Option<(GenerationRow, Vec<plan::PlannedFile>)> {
    let current = generations.current()?;
    let path = generations.path(current);
    if venv::bytecode_pending(&path).as_deref() != Some(pending_key)
        || !venv::edited_packages(&path).is_empty()
        || !venv::entries_unchanged(&path)
    {
        return None;
    }
    let row = recorded.iter().find(|g| g.number == current)?.clone();
    let base = manifest::Manifest::load(input.store, &row.plan).ok()?.files;
    bytecode::missing_files(&base, plan)?;
    Some((row, base))
}

/// A generation in use whose bytecode is still missing.
struct Unfinished {
    /// This run's plan of the tier before compiling (with the pycs the
    /// store has).
    plan: Plan,
    /// The files it holds.
    base: Vec<plan::PlannedFile>,
    row: GenerationRow,
    report: BuildReport,
}

/// Compiles what `prepared` lacks, links the new pycs into the
/// `unfinished` generation, then records it as complete: manifest,
/// generation row and record, then the `pyvenv.cfg` keys that make the
/// next run find it up to date. The report says how long that took.
fn finish_bytecode(
    input: &TierInput<'_>,
    recording: &Recording<'_>,
    prepared: &mut Prepared<'_>,
    unfinished: Unfinished,
    progress: &dyn Progress,
) -> anyhow::Result<BuildReport> {
    let started = Instant::now();
    let Unfinished {
        plan,
        base,
        mut row,
        mut report,
    } = unfinished;
    let compiled = compile_missing(input, prepared, progress)?;
    let plan = if compiled > 0 {
        plan_of(input, prepared, progress)?
    } else {
        plan
    };
    let path = PathBuf::from(&row.path);
    let missing = bytecode::missing_files(&base, &plan).with_context(|| {
        format!(
            "{}: the plan changed beyond bytecode while compiling; run `tstore materialize {}` again",
            path.display(),
            input.tier.name
        )
    })?;
    let linker = crate::link::Linker::with_method(row.link_method, input.store);
    timed(progress, "link bytecode", || {
        bytecode::place(&path, &missing, input.store, &linker)
    })?;
    timed(
        progress,
        "record complete bytecode",
        || -> anyhow::Result<()> {
            manifest::Manifest::of(&plan).save(input.store, &plan.hash)?;
            row.plan = plan.hash.clone();
            let dist_ids = recording.dist_ids()?;
            input.store.db.record_generation(
                &input.tier.name,
                &input.config_label,
                &row,
                &dist_ids,
            )?;
            venv::mark_bytecode_complete(&path, &plan.hash, &input.inputs_key)
        },
    )?;
    report.files = plan.files.len();
    report.bytecode_compiled = compiled;
    report.bytecode_after = Some(started.elapsed());
    Ok(report)
}

/// Moves the built generation `report.generation` from `staging` into
/// place (its manifest saved already), keeps its lock, records it (holding
/// the distributions `dist_ids`) and points the tier's path at it; older
/// generations beyond the kept number go. Returns the generation's row.
fn save_and_switch(
    input: &TierInput<'_>,
    dist_ids: &[i64],
    plan: &Plan,
    generations: &generations::Generations,
    staging: &Path,
    report: &BuildReport,
    options: &MaterializeOptions,
) -> anyhow::Result<GenerationRow> {
    let number = report.generation;
    let path = generations.path(number);
    fs_err::rename(staging, &path)?;
    let lock = generations::save_lock_snapshot(input.store, input.lock_bytes)?;
    // Recorded before the switch: a generation the path may point at is
    // always a gc root.
    let row = GenerationRow {
        venv: input.tier.venv.display().to_string(),
        number,
        path: path.display().to_string(),
        plan: plan.hash.clone(),
        lock: lock.display().to_string(),
        link_method: report.method,
        created_at: crate::store::db::unix_now(),
    };
    input
        .store
        .db
        .record_generation(&input.tier.name, &input.config_label, &row, dist_ids)?;
    generations.switch_to(number)?;
    generations.prune(input.store, options.keep_generations)?;
    Ok(row)
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
    std::thread::scope(|scope| {
        let recording = Recording::start(scope, input.store, input.fetched, progress);
        let built = build_into(input, options, progress);
        joined(built, recording.finish(), progress)
    })
}

/// [`materialize_into`] without recording the fetch's new wheels (its
/// caller does, meanwhile).
fn build_into(
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
    // Nothing is in use here until it is renamed into place: the bytecode
    // is compiled first.
    let mut prepared = prepare(input)?;
    let bytecode_compiled = compile_missing(input, &mut prepared, progress)?;
    let plan = plan_of(input, &prepared, progress)?;
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
    let mut report = match build_venv(input, &plan, &staging, None, options, progress) {
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
    report.bytecode_compiled = bytecode_compiled;
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
    let bytecode = match tier.compile_bytecode {
        BytecodeMode::Compile => "bytecode",
        BytecodeMode::Lazy => "lazy bytecode",
        BytecodeMode::Off => "no bytecode",
    };
    for part in [
        concat!("tstore-inputs-2/", env!("CARGO_PKG_VERSION")).as_bytes(),
        bytecode.as_bytes(),
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

/// Same plan recorded, its bytecode complete, no package made private by
/// `tstore edit`, and the same top-level entries in site-packages as when
/// it was built. Content edits inside the venv are not looked for here
/// (`tstore verify` does).
fn is_up_to_date(target: &Path, plan: &Plan) -> bool {
    venv::recorded_plan(target).as_deref() == Some(plan.hash.as_str())
        && venv::bytecode_pending(target).is_none()
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

/// Builds `plan` at `staging`; with `pending`, the venv is marked as still
/// waiting for bytecode (see [`venv::mark_bytecode_pending`]).
fn build_venv(
    input: &TierInput<'_>,
    plan: &Plan,
    staging: &Path,
    pending: Option<&str>,
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
    if let Some(key) = pending {
        venv::mark_bytecode_pending(staging, key)?;
    }
    Ok(BuildReport {
        venv: target.clone(),
        generation: 0,
        method: linker.method(),
        files: plan.files.len(),
        distributions: input.fetched.len(),
        copied_instead,
        bytecode_compiled: 0,
        bytecode_after: None,
    })
}

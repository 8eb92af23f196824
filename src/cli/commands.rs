//! One function per subcommand.

use std::time::Instant;

use tstore::config::{LinkMode, Tier};
use tstore::lock::{self, LockOptions, LockStatus};
use tstore::materialize::{self, generations::LockRestore};
use tstore::progress::Progress;
use tstore::store::{IndexDamaged, IndexProblem, Store};
use tstore::sync::{SyncOptions, TierOutcome, TierReport};

use super::LockArgs;
use super::report::{
    ByteUnit, Reporter, human_bytes, linked_verb, plural, print_json, signed_bytes, utc_time,
};
use super::session::Session;

pub fn lock(
    session: &Session<'_>,
    names: &[String],
    offline: bool,
    upgrade: lock::Upgrade,
    json: bool,
) -> anyhow::Result<()> {
    let tiers = session.config.select(names)?;
    let locks = lock::lock_tiers(
        &session.config,
        &session.store,
        session.uv()?,
        &tiers,
        &LockOptions {
            offline,
            upgrade,
            output_dir: None,
        },
        session.reporter,
    )?;
    // Materialize reuses uv's last choice of interpreter while nothing it
    // depends on changed; an explicit lock refreshes that choice.
    session.refresh_interpreters(&tiers);
    if json {
        return print_lock_json(session, &tiers, &locks);
    }
    for tier_lock in locks {
        let state = match tier_lock.status {
            LockStatus::Reused => "up to date",
            LockStatus::Written { aligned: true } => {
                "locked (versions shared with its solve group)"
            }
            LockStatus::Written { aligned: false } => "locked on its own",
        };
        session.reporter.summary(&format!(
            "{}: {state}: {}",
            tier_lock.tier,
            tier_lock.path.display()
        ));
        print_changes(session, &tier_lock.changes);
    }
    Ok(())
}

/// One line per change, under the tier's summary.
fn print_changes(session: &Session<'_>, changes: &[lock::changes::VersionChange]) {
    for change in changes {
        session.reporter.summary(&format!("  {change}"));
    }
}

fn print_lock_json(
    session: &Session<'_>,
    tiers: &[&Tier],
    locks: &[lock::TierLock],
) -> anyhow::Result<()> {
    let mut differences = Vec::new();
    for group in lock::groups::solve_groups(&session.config) {
        if group
            .tiers
            .iter()
            .any(|g| tiers.iter().any(|t| t.name == g.name))
        {
            differences.extend(lock::version_differences(
                &session.config,
                &session.store,
                session.uv()?,
                &group.tiers,
            ));
        }
    }
    let tiers: Vec<serde_json::Value> = locks
        .iter()
        .map(|l| {
            let (status, aligned) = match l.status {
                LockStatus::Reused => ("up to date", None),
                LockStatus::Written { aligned } => ("locked", Some(aligned)),
            };
            serde_json::json!({
                "tier": l.tier,
                "lock": l.path,
                "status": status,
                "shares_versions": aligned,
                "changes": l.changes,
                "seconds": l.took.as_secs_f64(),
            })
        })
        .collect();
    print_json(serde_json::json!({
        "tiers": tiers,
        "differences": differences,
    }))
}

pub fn fetch(session: &Session<'_>, names: &[String], args: LockArgs) -> anyhow::Result<()> {
    let tiers = session.config.select(names)?;
    session
        .workspace
        .fetch(&tiers, args.into(), session.reporter, &mut |done| {
            let figures = &done.figures;
            session.reporter.summary(&format!(
                "{}: {}: {} downloaded ({}), {} built, {} from the remote store, {} already in the store",
                done.tier,
                plural(figures.distributions, "distribution"),
                figures.downloaded,
                human_bytes(figures.bytes),
                figures.built,
                figures.pulled,
                figures.already_stored
            ));
        })?;
    Ok(())
}

pub fn materialize(
    session: &Session<'_>,
    names: &[String],
    args: LockArgs,
    link_mode: Option<LinkMode>,
    force: bool,
) -> anyhow::Result<()> {
    let tiers = session.config.select(names)?;
    let options = SyncOptions {
        locks: args.into(),
        link_mode,
        force,
    };
    session
        .workspace
        .sync(&tiers, &options, session.reporter, &mut |tier| {
            print_synced(session, tier)
        })?;
    Ok(())
}

/// A synced tier's summary line, and its version changes when its venv changed.
pub fn print_synced(session: &Session<'_>, tier: &TierReport) {
    let seconds = tier.elapsed.as_secs_f64();
    let line = match &tier.outcome {
        TierOutcome::Unchanged => format!(
            "{}: up to date: {} ({:.0} ms)",
            tier.tier,
            tier.venv.display(),
            seconds * 1000.0
        ),
        TierOutcome::UpToDate => format!(
            "{}: up to date: {} ({seconds:.2}s)",
            tier.tier,
            tier.venv.display()
        ),
        TierOutcome::Switched { generation } => format!(
            "{}: switched to generation {generation} (already built): {}",
            tier.tier,
            tier.venv.display()
        ),
        TierOutcome::Built(build) => {
            let figures = tier.fetched.clone().unwrap_or_default();
            let bytecode = match build.bytecode_after {
                Some(after) => format!(
                    " (usable after {:.2}s; then {} compiled and linked in {:.1}s)",
                    tier.elapsed.saturating_sub(after).as_secs_f64(),
                    plural(build.bytecode_compiled, "pyc"),
                    after.as_secs_f64()
                ),
                None => String::new(),
            };
            format!(
                "{}: {}, {} {} into {} ({} downloaded, {}{} already in the store) in {seconds:.1}s{bytecode}",
                tier.tier,
                plural(build.distributions, "package"),
                plural(build.files, "file"),
                linked_verb(build.method),
                build.venv.display(),
                figures.downloaded + figures.built,
                if figures.pulled > 0 {
                    format!("{} from the remote store, ", figures.pulled)
                } else {
                    String::new()
                },
                figures.already_stored,
            )
        }
    };
    session.reporter.summary(&line);
    if tier.changed() {
        print_changes(session, &tier.changes);
    }
}

/// `materialize TIER --into DIR`: a standalone venv at DIR.
pub fn materialize_into(
    session: &Session<'_>,
    names: &[String],
    args: LockArgs,
    link_mode: Option<LinkMode>,
    force: bool,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let [name] = names else {
        anyhow::bail!("--into builds one tier; name exactly one");
    };
    let started = Instant::now();
    let tier = session.config.tier(name)?;
    let options = SyncOptions {
        locks: args.into(),
        link_mode,
        force,
    };
    let done = session
        .workspace
        .sync_into(tier, dir, &options, session.reporter)?;
    session.reporter.summary(&format!(
        "{}: {}, {} {} into {} (standalone) in {:.1}s",
        tier.name,
        plural(done.build.distributions, "package"),
        plural(done.build.files, "file"),
        linked_verb(done.build.method),
        done.venv.display(),
        started.elapsed().as_secs_f64()
    ));
    if done.build.method == materialize::LinkMethod::Hardlink {
        session.reporter.notice(
            "its files are hardlinks of the store's read-only objects; for an image or another \
             machine use --link-mode copy",
        );
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct TierListing<'a> {
    name: &'a str,
    python: &'a str,
    components: &'a [String],
    lock: String,
    locked: &'static str,
    venv: String,
    materialized: bool,
}

pub fn list(session: &Session<'_>, json: bool) -> anyhow::Result<()> {
    let rows: Vec<TierListing<'_>> = session
        .config
        .tiers
        .values()
        .map(|tier| {
            let lock_path = session.lock_path(&tier.name);
            let locked = if !lock_path.is_file() {
                "no"
            } else if lock::is_current(&session.config, &session.store, tier) {
                "yes"
            } else {
                "stale"
            };
            TierListing {
                name: &tier.name,
                python: &tier.python,
                components: &tier.components,
                lock: lock_path.display().to_string(),
                locked,
                venv: tier.venv.display().to_string(),
                materialized: materialize::venv::recorded_plan(&tier.venv).is_some(),
            }
        })
        .collect();
    if json {
        return print_json(serde_json::json!({ "tiers": rows }));
    }
    println!("tiers from {}", session.config.source);
    println!(
        "{:<14} {:<7} {:<7} {:<13} {:<40} components",
        "tier", "python", "locked", "materialized", "venv"
    );
    for row in &rows {
        println!(
            "{:<14} {:<7} {:<7} {:<13} {:<40} {}",
            row.name,
            row.python,
            row.locked,
            if row.materialized { "yes" } else { "no" },
            row.venv,
            row.components.join(", ")
        );
    }
    Ok(())
}

pub fn path(session: &Session<'_>, name: &str) -> anyhow::Result<()> {
    let tier = session.config.tier(name)?;
    println!("{}", tier.venv.display());
    Ok(())
}

pub fn generations(session: &Session<'_>, name: &str, json: bool) -> anyhow::Result<()> {
    let tier = session.config.tier(name)?;
    let venv = tier.venv.display().to_string();
    let current = materialize::generations::Generations::of(&tier.venv)?.current();
    let rows = session.store.db.generations(&venv)?;
    if json {
        #[derive(serde::Serialize)]
        struct Row<'a> {
            #[serde(flatten)]
            generation: &'a tstore::store::db::GenerationRow,
            current: bool,
            packages: usize,
        }
        let mut out = Vec::new();
        for g in &rows {
            out.push(Row {
                generation: g,
                current: Some(g.number) == current,
                packages: session
                    .store
                    .db
                    .generation_distributions(&venv, g.number)?
                    .len(),
            });
        }
        return print_json(serde_json::json!({ "tier": tier.name, "generations": out }));
    }
    if rows.is_empty() {
        println!("{name} has no generations: run `tstore materialize {name}`");
        return Ok(());
    }
    println!(
        "{:<3} {:>4} {:<20} {:>8} {:<8} lock",
        "", "gen", "created (UTC)", "packages", "linked"
    );
    for g in &rows {
        println!(
            "{:<3} {:>4} {:<20} {:>8} {:<8} {}",
            if Some(g.number) == current { "*" } else { "" },
            g.number,
            utc_time(g.created_at),
            session
                .store
                .db
                .generation_distributions(&venv, g.number)?
                .len(),
            g.link_method,
            g.lock
        );
    }
    Ok(())
}

pub fn rollback(session: &Session<'_>, name: &str, generation: Option<i64>) -> anyhow::Result<()> {
    let tier = session.config.tier(name)?;
    // gc waits: it must not delete the generation being switched to.
    let _store = session.share_store()?;
    let lock_path = session.lock_path(name);
    let done =
        materialize::generations::rollback(&session.store, &tier.venv, generation, &lock_path)?;
    let (from, to) = (done.from, done.to);
    session.reporter.summary(&format!(
        "{name}: generation {to} is in use (was {from}): {}",
        tier.venv.display()
    ));
    let lock = lock_path.display();
    match done.lock {
        LockRestore::Restored => {
            let mut notice =
                format!("{name}: {lock} now holds the lock generation {to} was built from");
            if !lock::is_current(&session.config, &session.store, tier) {
                notice.push_str(&format!(
                    "; it no longer matches tiers.toml, so the next `tstore materialize {name}` or \
                     `tstore run` locks again (keeping these versions where they still fit)"
                ));
            }
            session.reporter.notice(&notice);
        }
        LockRestore::Unchanged => {}
        LockRestore::Unavailable(reason) => session.reporter.notice(&format!(
            "{name}: {lock} was left as it is: {reason}. The next `tstore materialize {name}` or \
             `tstore run` builds from it; `tstore run --no-sync` keeps generation {to}"
        )),
    }
    Ok(())
}

pub fn edit(session: &Session<'_>, name: &str, package: &str) -> anyhow::Result<()> {
    let tier = session.config.tier(name)?;
    let report = materialize::edit::make_private(&session.store, &tier.venv, package)?;
    session.reporter.summary(&format!(
        "{name}: {} of {package} are private, writable copies in {} ({} were store links). \
         `tstore materialize {name}` brings back the shared files.",
        plural(report.files.len(), "file"),
        tier.venv.display(),
        report.copied
    ));
    Ok(())
}

/// `verify --repair`, before anything else: an index that fails its checks
/// (or SQLite's) is rebuilt from the store's files.
pub fn rebuild_untrusted_index(reporter: &Reporter, full: bool) -> anyhow::Result<()> {
    let home = Store::default_home();
    let problem = match Store::open(&home) {
        Ok(store) => {
            let problems = store.db.integrity_problems(full);
            if problems.is_empty() {
                return Ok(());
            }
            IndexProblem::Malformed(problems)
        }
        Err(err) => match err.downcast::<IndexDamaged>() {
            Ok(damaged) => damaged.problem,
            Err(other) => return Err(other),
        },
    };
    reporter.notice(&format!(
        "the store index cannot be trusted: {problem}; rebuilding it from the store's files"
    ));
    let report =
        tstore::upkeep::verify::rebuild_index(&tstore::store::Layout::of_home(&home), reporter)?;
    println!(
        "index rebuilt: {} objects, {} distributions, {} generations, {} bytecode entries, {} adopted venvs",
        report.objects,
        report.distributions,
        report.generations,
        report.bytecode,
        report.adopted_venvs
    );
    if let Some(kept) = &report.kept_as {
        println!("the old index is kept as {}", kept.display());
    }
    for skipped in &report.skipped {
        println!("  not restored: {skipped}");
    }
    Ok(())
}

pub fn verify(
    session: &Session<'_>,
    names: &[String],
    repair: bool,
    full: bool,
    json: bool,
) -> anyhow::Result<u8> {
    let venvs = if names.is_empty() {
        None
    } else {
        Some(
            session
                .config
                .select(names)?
                .iter()
                .map(|t| t.venv.clone())
                .collect(),
        )
    };
    let _store_lock = if repair {
        Some(tstore::store::FileLock::acquire(
            &session.store.usage_lock(),
            || {
                session
                    .reporter
                    .notice("waiting for other tstore processes using the store to finish")
            },
        )?)
    } else {
        None
    };
    let report = tstore::upkeep::verify::verify(
        &session.store,
        &tstore::upkeep::verify::VerifyOptions {
            repair,
            full,
            venvs,
        },
        session.reporter,
    )?;
    if json {
        print_json(&report)?;
    } else {
        print_verify_report(&report, repair);
    }
    Ok(match (report.problems(), report.unrepaired()) {
        (0, _) => 0,
        (_, 0) => 2,
        _ => 1,
    })
}

fn print_index_report(index: &tstore::upkeep::verify::IndexReport) {
    if index.integrity.is_empty() {
        println!("index: SQLite reports it sound");
    } else {
        println!("index: SQLite reports it malformed; rebuild it with `tstore verify --repair`");
        for line in &index.integrity {
            println!("  {line}");
        }
    }
    if index.unindexed_objects > 0 {
        println!(
            "index: {} object file(s) on disk the index does not know (left by interrupted runs; \
             `tstore gc` removes them)",
            index.unindexed_objects
        );
    }
}

fn print_verify_report(report: &tstore::upkeep::verify::Report, repair: bool) {
    use tstore::upkeep::verify::ObjectFault;
    print_index_report(&report.index);
    let corrupt = report.objects.len();
    println!(
        "store: {} objects ({} on disk) checked: {}",
        report.objects_checked,
        human_bytes(report.bytes_checked),
        if corrupt == 0 {
            "all intact".to_string()
        } else {
            format!("{corrupt} damaged")
        }
    );
    for object in &report.objects {
        let fault = match object.fault {
            ObjectFault::Missing => "is missing",
            ObjectFault::Corrupt => "does not match its hash",
            ObjectFault::Mode => "has the wrong mode",
        };
        println!("  object {} {fault}", &object.key);
        println!("    used by: {}", object.used_by.join(", "));
        if !object.tiers.is_empty() {
            println!("    in tiers: {}", object.tiers.join(", "));
        }
        if repair {
            println!(
                "    {}",
                if object.repaired {
                    format!("repaired: {}", object.note)
                } else {
                    object.note.clone()
                }
            );
        }
    }
    for tier in &report.tiers {
        print_tier_check(tier, repair);
    }
    if !repair && report.problems() > 0 {
        println!("run `tstore verify --repair` to fix what can be fixed");
    }
}

/// One tier's venv check: its files, what is wrong with them, and what
/// `--repair` did.
fn print_tier_check(tier: &tstore::upkeep::verify::TierReport, repair: bool) {
    use tstore::upkeep::verify::FileFault;
    let generation = tier
        .generation
        .map(|g| format!(" (generation {g})"))
        .unwrap_or_default();
    if let Some(error) = &tier.error {
        println!("{}{generation}: cannot check: {error}", tier.name);
        return;
    }
    let state = if tier.problems.is_empty() {
        "ok".to_string()
    } else {
        plural(tier.problems.len(), "problem")
    };
    println!(
        "{}{generation}: {} files, {state}",
        tier.name, tier.files_checked
    );
    for problem in &tier.problems {
        let what = match problem.fault {
            FileFault::Missing => "missing",
            FileFault::Modified => "modified",
            FileFault::Extra => "extra (not from any package; left alone)",
        };
        let package = if problem.package.is_empty() {
            String::new()
        } else {
            format!("{}: ", problem.package)
        };
        let repaired = if repair && problem.fault != FileFault::Extra {
            if problem.repaired {
                " [repaired]"
            } else {
                " [not repaired]"
            }
        } else {
            ""
        };
        println!("  {package}{} {what}{repaired}", problem.path.display());
    }
    if !tier.edited.is_empty() {
        println!(
            "  edited (private copies, see `tstore edit`): {}",
            tier.edited.join(", ")
        );
    }
}

pub fn gc(session: &Session<'_>, dry_run: bool, json: bool) -> anyhow::Result<()> {
    let _store_lock = tstore::store::FileLock::acquire(&session.store.usage_lock(), || {
        session
            .reporter
            .notice("waiting for other tstore processes using the store to finish")
    })?;
    let report = tstore::upkeep::gc::gc(
        &session.store,
        &tstore::upkeep::gc::GcOptions {
            dry_run,
            keep_generations: session.config.keep_generations,
        },
        session.reporter,
    )?;
    if json {
        return print_json(&report);
    }
    let verb = if dry_run { "would free" } else { "freed" };
    // Every figure in one unit, so they can be compared at a glance.
    let unit = ByteUnit::for_largest(&[
        report.bytes_freed,
        report.bytes_still_linked,
        report.written_pycs.bytes_freed,
        report.measured_free_growth.map_or(0, i64::unsigned_abs),
    ]);
    println!(
        "{} {verb} {}: {}, {}, {}, {}, {}",
        if dry_run { "gc --dry-run:" } else { "gc:" },
        unit.format(report.bytes_freed),
        plural(report.distributions, "distribution"),
        plural(report.objects, "object"),
        plural(report.generations, "old generation"),
        plural(report.manifests, "manifest"),
        plural(report.temp_entries, "leftover temp entry")
    );
    if report.lock_snapshots > 0 {
        println!(
            "  {} of generations no longer kept {}",
            plural(report.lock_snapshots, "saved lock"),
            if dry_run {
                "would be deleted"
            } else {
                "deleted"
            }
        );
    }
    if report.adopted_venvs_forgotten > 0 {
        println!(
            "  {} whose folder is gone {} forgotten",
            plural(report.adopted_venvs_forgotten, "adopted venv"),
            if dry_run { "would be" } else { "were" }
        );
    }
    let pycs = report.written_pycs;
    if pycs.linked > 0 {
        println!(
            "  {} Python wrote in the venvs now shared through the store ({} new to it), {} of copies freed",
            plural(pycs.linked, "pyc"),
            pycs.taken,
            unit.format(pycs.bytes_freed)
        );
    } else if pycs.taken > 0 {
        // Venvs of copies: the store has them for later venvs; each venv
        // keeps its own.
        println!(
            "  {} Python wrote in the venvs taken into the store for later venvs",
            plural(pycs.taken, "pyc")
        );
    }
    if pycs.stale > 0 {
        println!(
            "  {} no longer matching their source left alone",
            plural(pycs.stale, "pyc")
        );
    }
    if report.bytes_still_linked > 0 {
        println!(
            "  {} of removed objects are still linked from outside the store and stay on disk until those links go",
            unit.format(report.bytes_still_linked)
        );
    }
    if let Some(growth) = report.measured_free_growth {
        println!(
            "  the filesystem's free space grew by {}{}",
            if growth < 0 { "-" } else { "" },
            unit.format(growth.unsigned_abs())
        );
    }
    Ok(())
}

pub fn du(
    session: &Session<'_>,
    names: &[String],
    json: bool,
    svg: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    for name in names {
        session.config.tier(name)?;
    }
    let report = tstore::upkeep::du::du(&session.store, names)?;
    if let Some(path) = svg {
        std::fs::write(path, super::chart::render(&report)).with_context(|| {
            format!(
                "cannot write the du chart to {}; give --svg a file in an existing, writable directory",
                path.display()
            )
        })?;
    }
    if json {
        return print_json(&report);
    }
    println!(
        "{:<16} {:>4} {:>8} {:>12} {:>12} {:>12} {:>12}",
        "tier", "gen", "files", "plain copy", "only here", "shared", "private"
    );
    for tier in &report.tiers {
        println!(
            "{:<16} {:>4} {:>8} {:>12} {:>12} {:>12} {:>12}",
            tier.name,
            tier.generation,
            tier.files,
            human_bytes(tier.plain_copy_bytes),
            human_bytes(tier.unique_bytes),
            human_bytes(tier.shared_bytes),
            human_bytes(tier.private_bytes)
        );
    }
    println!(
        "store: {} objects ({} on disk), {} with index, manifests and skeletons; venvs (all kept generations): {}",
        report.store_objects,
        human_bytes(report.object_bytes),
        human_bytes(report.store_bytes),
        human_bytes(report.venv_bytes)
    );
    let actual = report.store_bytes + report.venv_bytes;
    let percent = if report.plain_copies_bytes > 0 {
        report.saving_bytes as f64 * 100.0 / report.plain_copies_bytes as f64
    } else {
        0.0
    };
    println!(
        "as plain copies: {}; with tstore: {}; saving: {}{} ({percent:.0}%)",
        human_bytes(report.plain_copies_bytes),
        human_bytes(actual),
        if report.saving_bytes < 0 { "-" } else { "" },
        human_bytes(report.saving_bytes.unsigned_abs())
    );
    Ok(())
}

pub fn remove(session: &Session<'_>, name: &str) -> anyhow::Result<()> {
    let tier = session.config.tier(name)?;
    materialize::generations::remove(&session.store, &tier.venv)?;
    session.reporter.summary(&format!(
        "{name}: removed {} and its generations; `tstore gc` frees what only it used",
        tier.venv.display()
    ));
    Ok(())
}

pub fn adopt(
    session: &Session<'_>,
    paths: &[std::path::PathBuf],
    dry_run: bool,
    link_mode: Option<LinkMode>,
    json: bool,
) -> anyhow::Result<()> {
    let _store = session.share_store()?;
    let options = tstore::upkeep::adopt::AdoptOptions {
        dry_run,
        link_mode: link_mode.unwrap_or(LinkMode::Auto),
    };
    let mut reports = Vec::new();
    let mut planned = std::collections::HashMap::new();
    for path in paths {
        let report = tstore::upkeep::adopt::adopt(
            &session.store,
            path,
            &options,
            &mut planned,
            session.reporter,
        )?;
        if !json {
            print_adopt_report(session, &report);
        }
        reports.push(report);
    }
    if json {
        print_json(serde_json::json!({ "venvs": reports }))?;
    }
    Ok(())
}

fn print_adopt_report(session: &Session<'_>, report: &tstore::upkeep::adopt::AdoptReport) {
    let (would, link_verb) = if report.dry_run {
        ("would ", "would link")
    } else {
        ("", "linked")
    };
    println!(
        "{}: {}, {} {link_verb} to the store ({}) by {}, {} already linked",
        report.venv.display(),
        plural(report.distributions, "distribution"),
        plural(report.files_linked, "file"),
        human_bytes(report.bytes_linked),
        report.method.map_or("none".to_string(), |m| m.to_string()),
        report.already_linked,
    );
    println!(
        "  {would}free {} now{}",
        human_bytes(report.bytes_freed),
        if report.bytes_linked_elsewhere > 0 {
            format!(
                ", and {} more once other links to those files go (e.g. a uv cache)",
                human_bytes(report.bytes_linked_elsewhere)
            )
        } else {
            String::new()
        }
    );
    if let Some(growth) = report.measured_free_growth {
        println!(
            "  the filesystem's free space grew by {}",
            signed_bytes(growth)
        );
    }
    if !report.modified.is_empty() {
        println!(
            "  {} no longer match their RECORD (edited?) and were left alone:",
            plural(report.modified.len(), "file")
        );
        for path in &report.modified {
            println!("    {}", path.display());
        }
    }
    if !report.unrecorded.is_empty() {
        print_some(
            session,
            &format!(
                "{} in site-packages are in no RECORD ({}), left alone",
                plural(report.unrecorded.len(), "file"),
                human_bytes(report.unrecorded_bytes)
            ),
            report.unrecorded.iter().map(|p| p.display().to_string()),
        );
    }
    if !report.skipped.is_empty() {
        print_some(
            session,
            &format!(
                "{} RECORD {} left alone",
                report.skipped.len(),
                if report.skipped.len() == 1 {
                    "entry"
                } else {
                    "entries"
                }
            ),
            report.skipped.iter().cloned(),
        );
    }
}

/// A heading and its first few lines (all of them with -v).
fn print_some(session: &Session<'_>, heading: &str, lines: impl ExactSizeIterator<Item = String>) {
    let shown = if session.reporter.verbose() {
        usize::MAX
    } else {
        5
    };
    let more = lines.len() > shown;
    println!("  {heading}{}:", if more { "; -v lists all" } else { "" });
    for line in lines.take(shown) {
        println!("    {line}");
    }
}

//! One function per subcommand.

use std::time::Instant;

use anyhow::Context;
use tstore::config::{LinkMode, Tier};
use tstore::fetch::{self, FetchOptions, Fetched};
use tstore::lock::{self, LockOptions, LockStatus};
use tstore::materialize::{self, MaterializeOptions, Outcome, TierInput};

use super::LockArgs;
use super::session::Session;

pub fn lock(session: &Session<'_>, names: &[String], offline: bool) -> anyhow::Result<()> {
    let tiers = session.config.select(names)?;
    let locks = lock::lock_tiers(
        &session.config,
        &session.store,
        session.uv()?,
        &tiers,
        &LockOptions { offline },
        session.reporter,
    )?;
    for tier_lock in locks {
        let state = match tier_lock.status {
            LockStatus::Reused => "up to date",
            LockStatus::Written { aligned: true } => "locked (versions shared with all tiers)",
            LockStatus::Written { aligned: false } => "locked on its own",
        };
        session.reporter.summary(&format!(
            "{}: {state}: {}",
            tier_lock.tier,
            tier_lock.path.display()
        ));
    }
    Ok(())
}

/// What one tier needs, fetched into the store.
struct TierFetch {
    interpreter: std::rc::Rc<tstore::interpreter::Interpreter>,
    lock_path: std::path::PathBuf,
    fetched: Vec<Fetched>,
    report: fetch::FetchReport,
}

/// Selects and fetches what `tier` needs.
fn fetch_tier(session: &Session<'_>, tier: &Tier, offline: bool) -> anyhow::Result<TierFetch> {
    let (interpreter, selected, lock_path) = session.select(tier)?;
    let uv = if offline {
        session.uv().ok()
    } else {
        Some(session.uv()?)
    };
    let (fetched, report) = fetch::fetch(
        &session.store,
        uv,
        &interpreter,
        &selected,
        &FetchOptions { offline },
        session.reporter,
    )
    .with_context(|| format!("tier `{}`", tier.name))?;
    Ok(TierFetch {
        interpreter,
        lock_path,
        fetched,
        report,
    })
}

pub fn fetch(session: &Session<'_>, names: &[String], args: LockArgs) -> anyhow::Result<()> {
    let tiers = session.config.select(names)?;
    session.ensure_locks(&tiers, args)?;
    for tier in tiers {
        let TierFetch {
            fetched, report, ..
        } = fetch_tier(session, tier, args.offline)?;
        session.reporter.summary(&format!(
            "{}: {} distributions: {} downloaded ({}), {} built from sdists, {} already in the store",
            tier.name,
            fetched.len(),
            report.downloaded,
            human_bytes(report.bytes),
            report.built,
            report.already_stored
        ));
    }
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
    session.ensure_locks(&tiers, args)?;
    let options = MaterializeOptions {
        link_mode: link_mode.unwrap_or(session.config.link_mode),
        force,
    };
    for tier in tiers {
        let started = Instant::now();
        let TierFetch {
            interpreter,
            lock_path,
            fetched,
            report: fetch_report,
        } = fetch_tier(session, tier, args.offline)?;
        let outcome = materialize::materialize(
            &TierInput {
                store: &session.store,
                uv: session.uv()?,
                interpreter: &interpreter,
                tier,
                config_label: session.config.source.to_string(),
                lock_path: &lock_path,
                fetched: &fetched,
            },
            &options,
            session.reporter,
        )?;
        let elapsed = started.elapsed().as_secs_f64();
        let line = match outcome {
            Outcome::UpToDate { venv } => format!(
                "{}: up to date: {} ({elapsed:.2}s)",
                tier.name,
                venv.display()
            ),
            Outcome::Built(report) => format!(
                "{}: {}, {} {} into {} ({} downloaded, {} already in the store) in {elapsed:.1}s",
                tier.name,
                plural(report.distributions, "package"),
                plural(report.files, "file"),
                match report.method {
                    materialize::LinkMethod::Reflink => "reflinked",
                    materialize::LinkMethod::Hardlink => "hardlinked",
                    materialize::LinkMethod::Copy => "copied",
                },
                report.venv.display(),
                fetch_report.downloaded + fetch_report.built,
                fetch_report.already_stored,
            ),
        };
        session.reporter.summary(&line);
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
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
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

fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

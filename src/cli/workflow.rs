//! outdated, diff and check: what a team does with its tiers every week.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, bail};
use tstore::lock::{self, LockOptions, PyLock, Upgrade};
use tstore::materialize::generations::Generations;
use tstore::progress::Progress;

use super::report::print_json;
use super::session::Session;

/// Package → version in a lock file (packages without a version skipped).
fn lock_versions(path: &std::path::Path) -> anyhow::Result<BTreeMap<String, String>> {
    let (lock, _) = PyLock::read(path)?;
    Ok(lock
        .packages
        .into_iter()
        .filter_map(|p| Some((p.name, p.version?)))
        .collect())
}

pub fn outdated(session: &Session<'_>, names: &[String], json: bool) -> anyhow::Result<()> {
    let mut tiers = session.config.select(names)?;
    if names.is_empty() {
        // Without names: the locked tiers. An unlocked one has nothing to
        // be out of date with; it is named, not listed package by package.
        let (locked, unlocked): (Vec<_>, Vec<_>) = tiers
            .into_iter()
            .partition(|t| session.lock_path(&t.name).is_file());
        if !unlocked.is_empty() {
            let names: Vec<&str> = unlocked.iter().map(|t| t.name.as_str()).collect();
            session.reporter.notice(&format!(
                "not locked yet, so left out (`tstore lock NAME` locks one): {}",
                names.join(", ")
            ));
        }
        tiers = locked;
        if tiers.is_empty() {
            if json {
                print_json(serde_json::json!({ "upgrades": [] }))?;
            }
            return Ok(());
        }
    }
    let work = tstore::store::tmp::temp_dir(&session.store, "outdated")?;
    lock::lock_tiers(
        &session.config,
        &session.store,
        session.uv()?,
        &tiers,
        &LockOptions {
            offline: false,
            upgrade: Upgrade::All,
            output_dir: Some(work.path().to_path_buf()),
        },
        session.reporter,
    )?;
    let changes = upgrades(session, &tiers, work.path())?;
    print_upgrades(&changes, json)
}

/// (package, current, new) → the tiers whose lock would move it.
type Upgrades = BTreeMap<(String, String, String), Vec<String>>;

/// What the upgraded locks in `work` move, against the tiers' locks.
fn upgrades(
    session: &Session<'_>,
    tiers: &[&tstore::config::Tier],
    work: &std::path::Path,
) -> anyhow::Result<Upgrades> {
    let mut changes = Upgrades::new();
    for tier in tiers {
        let current_path = session.lock_path(&tier.name);
        let current = if current_path.is_file() {
            lock_versions(&current_path)?
        } else {
            BTreeMap::new()
        };
        let latest = lock_versions(&work.join(format!("pylock.{}.toml", tier.name)))?;
        let names: BTreeSet<&String> = current.keys().chain(latest.keys()).collect();
        for name in names {
            let old = current.get(name).cloned().unwrap_or_else(|| "-".into());
            let new = latest.get(name).cloned().unwrap_or_else(|| "-".into());
            if old != new {
                changes
                    .entry((name.clone(), old, new))
                    .or_default()
                    .push(tier.name.clone());
            }
        }
    }
    Ok(changes)
}

fn print_upgrades(changes: &Upgrades, json: bool) -> anyhow::Result<()> {
    if json {
        let rows: Vec<_> = changes
            .iter()
            .map(|((name, old, new), tiers)| {
                serde_json::json!({"package": name, "current": old, "new": new, "tiers": tiers})
            })
            .collect::<Vec<_>>();
        return print_json(serde_json::json!({ "upgrades": rows }));
    }
    if changes.is_empty() {
        println!("every lock is up to date with the newest allowed versions");
        return Ok(());
    }
    println!(
        "{:<28} {:<14}    {:<14} tiers",
        "package", "locked", "newest"
    );
    for ((name, old, new), tiers) in changes {
        println!("{name:<28} {old:<14} -> {new:<14} {}", tiers.join(", "));
    }
    println!("`tstore lock --upgrade` takes them all; `tstore lock -P NAME` one package");
    Ok(())
}

pub fn diff(
    session: &Session<'_>,
    name: &str,
    from: Option<i64>,
    to: Option<i64>,
) -> anyhow::Result<()> {
    let tier = session.config.tier(name)?;
    let venv = tier.venv.display().to_string();
    let of_generation = |number: i64| -> anyhow::Result<BTreeMap<String, String>> {
        let rows = session.store.db.generation_distributions(&venv, number)?;
        if rows.is_empty()
            && !session
                .store
                .db
                .generations(&venv)?
                .iter()
                .any(|g| g.number == number)
        {
            bail!("tier `{name}` has no generation {number}; see `tstore generations {name}`");
        }
        Ok(rows.into_iter().map(|d| (d.name, d.version)).collect())
    };
    let (left_label, left, right_label, right) = match (from, to) {
        (Some(a), Some(b)) => (
            format!("generation {a}"),
            of_generation(a)?,
            format!("generation {b}"),
            of_generation(b)?,
        ),
        (Some(_), None) => bail!("give two generations, or none to compare the venv with its lock"),
        _ => {
            let current = Generations::of(&tier.venv)?.current().with_context(|| {
                format!("tier `{name}` is not materialized: run `tstore materialize {name}`")
            })?;
            let selected = session.select(tier)?.selected;
            (
                format!("the venv (generation {current})"),
                of_generation(current)?,
                "the lock".to_string(),
                selected.into_iter().map(|s| (s.name, s.version)).collect(),
            )
        }
    };
    println!("{name}: {left_label} -> {right_label}");
    let names: BTreeSet<&String> = left.keys().chain(right.keys()).collect();
    let mut any = false;
    for package in names {
        let line = match (left.get(package), right.get(package)) {
            (None, Some(v)) => format!("+ {package} {v}"),
            (Some(v), None) => format!("- {package} {v}"),
            (Some(a), Some(b)) if a != b => format!("~ {package} {a} -> {b}"),
            _ => continue,
        };
        any = true;
        println!("{line}");
    }
    if !any {
        println!("  no differences");
    }
    Ok(())
}

pub fn check(
    session: &Session<'_>,
    name: &str,
    jobs: Option<usize>,
    json: bool,
) -> anyhow::Result<u8> {
    let tier = session.config.tier(name)?;
    let current = Generations::of(&tier.venv)?.current().with_context(|| {
        format!("tier `{name}` is not materialized: run `tstore materialize {name}`")
    })?;
    let dists = session
        .store
        .db
        .generation_distributions(&tier.venv.display().to_string(), current)?;
    let jobs = jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let report = tstore::check::check(&session.store, &tier.venv, &dists, jobs, session.reporter)?;
    if json {
        print_json(&report)?;
    } else {
        for failure in &report.failures {
            println!(
                "FAIL {} ({}): {failure}",
                failure.module, failure.distribution
            );
        }
        println!(
            "{name}: {} of {} modules from {} packages imported",
            report.modules - report.failed_modules,
            report.modules,
            report.distributions
        );
    }
    Ok(u8::from(!report.failures.is_empty()))
}

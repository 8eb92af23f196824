//! Using a tier from outside: `run` a command in it, `which` tier a
//! component runs in, `env` lines for a shell, the component map.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

use anyhow::{Context, bail};
use tstore::activate::{self, Dialect, EnvChange};
use tstore::config::Tier;
use tstore::sync::SyncOptions;

use super::report::print_json;
use super::session::Session;
use super::{LockArgs, Shell, commands};

/// Materializes the tier unless `no_sync`, then execs `command` in it.
/// Returns only on failure.
pub fn run(
    session: &Session<'_>,
    target: &str,
    no_sync: bool,
    lock: LockArgs,
    command: &[OsString],
) -> anyhow::Result<u8> {
    let tier = session.config.tier_or_component(target)?;
    prepare(session, tier, no_sync, lock, target)?;
    let (program, args) = command.split_first().expect("clap requires a command");
    let mut child = std::process::Command::new(program);
    child.args(args);
    for change in activate::changes(&tier.venv, &tier.name, std::env::var_os("PATH").as_deref()) {
        match change {
            EnvChange::Set(name, value) => child.env(name, value),
            EnvChange::Unset(name) => child.env_remove(name),
        };
    }
    // exec only returns when it could not start the program.
    let err = child.exec();
    let program = program.to_string_lossy();
    if err.kind() == std::io::ErrorKind::NotFound {
        bail!(
            "`{program}` was not found in {}/bin nor on PATH: is it installed in tier `{}`?",
            tier.venv.display(),
            tier.name
        );
    }
    Err(err).with_context(|| format!("cannot run `{program}` in tier `{}`", tier.name))
}

/// Checks the venv is there (`no_sync`) or brings the tier up to date,
/// before running `what` in it.
pub(super) fn prepare(
    session: &Session<'_>,
    tier: &Tier,
    no_sync: bool,
    lock: LockArgs,
    what: &str,
) -> anyhow::Result<()> {
    if no_sync {
        if !tier.venv.join("bin/python").exists() {
            bail!(
                "--no-sync: tier `{}` has no venv at {}; run `tstore materialize {}` or drop --no-sync",
                tier.name,
                tier.venv.display(),
                tier.name
            );
        }
        return Ok(());
    }
    sync_quietly(session, tier, lock)
        .with_context(|| format!("cannot prepare tier `{}` to run {what}", tier.name))
}

/// Brings the tier up to date before a run, saying only what changed.
fn sync_quietly(session: &Session<'_>, tier: &Tier, lock: LockArgs) -> anyhow::Result<()> {
    let options = SyncOptions {
        locks: lock.into(),
        ..SyncOptions::default()
    };
    let report = session
        .workspace
        .sync(&[tier], &options, session.reporter, &mut |_| {})?;
    for tier in report.tiers.iter().filter(|t| t.changed()) {
        commands::print_synced(session, tier);
    }
    Ok(())
}

pub fn which(session: &Session<'_>, target: &str, json: bool) -> anyhow::Result<()> {
    let tier = session.config.tier_or_component(target)?;
    let materialized = tier.venv.join("bin/python").exists();
    if json {
        print_json(serde_json::json!({
            "tier": tier.name,
            "venv": tier.venv,
            "materialized": materialized,
        }))?;
    } else {
        println!("{}\t{}", tier.name, tier.venv.display());
    }
    if !materialized {
        warn_not_materialized(session, tier);
    }
    Ok(())
}

pub fn env(session: &Session<'_>, target: &str, shell: Option<Shell>) -> anyhow::Result<()> {
    let tier = session.config.tier_or_component(target)?;
    let dialect = match shell {
        Some(Shell::Fish) => Dialect::Fish,
        Some(Shell::Bash | Shell::Zsh) => Dialect::Posix,
        None => Dialect::from_shell_var(std::env::var_os("SHELL").as_deref()),
    };
    print!("{}", activate::shell_lines(&tier.venv, &tier.name, dialect));
    if !tier.venv.join("bin/python").exists() {
        warn_not_materialized(session, tier);
    }
    Ok(())
}

fn warn_not_materialized(session: &Session<'_>, tier: &Tier) {
    use tstore::progress::Progress;
    session.reporter.notice(&format!(
        "tier `{}` is not materialized yet: run `tstore materialize {}`",
        tier.name, tier.name
    ));
}

pub fn list_components(session: &Session<'_>, json: bool) -> anyhow::Result<()> {
    let pairs: Vec<(&str, &Tier)> = session.config.components().collect();
    if json {
        let rows: Vec<_> = pairs
            .iter()
            .map(|(component, tier)| {
                serde_json::json!({"component": component, "tier": tier.name, "venv": tier.venv})
            })
            .collect::<Vec<_>>();
        return print_json(serde_json::json!({ "components": rows }));
    }
    if pairs.is_empty() {
        println!(
            "no components in {}: list them per tier with `components = [...]`",
            session.config.source
        );
        return Ok(());
    }
    println!("{:<16} {:<16} venv", "component", "tier");
    for (component, tier) in pairs {
        println!(
            "{:<16} {:<16} {}",
            component,
            tier.name,
            tier.venv.display()
        );
    }
    Ok(())
}

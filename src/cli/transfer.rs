//! export, import, push, pull and the lock hash for CI cache keys.

use std::path::Path;

use anyhow::{Context, bail};
use tstore::progress::Progress;
use tstore::sync::TiersNeed;
use tstore::transfer::{self, LockOutcome};

use super::report::human_bytes;
use super::session::Session;

/// Prints a hash of the selected tiers' lock files as they are.
pub fn print_lock_hash(session: &Session<'_>, names: &[String]) -> anyhow::Result<()> {
    let tiers = session.config.select(names)?;
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"tstore-lock-hash-1\0");
    for tier in tiers {
        let path = session.lock_path(&tier.name);
        let bytes = fs_err::read(&path).with_context(|| {
            format!(
                "tier `{}` has no lock; run `tstore lock {}` (and commit it)",
                tier.name, tier.name
            )
        })?;
        hasher.update(tier.name.as_bytes());
        hasher.update(b"\0");
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    println!("{}", hasher.finalize().to_hex());
    Ok(())
}

pub fn export(session: &Session<'_>, names: &[String], output: &Path) -> anyhow::Result<()> {
    let tiers = session.config.select(names)?;
    let _store = session.share_store()?;
    let TiersNeed { locks, needed } = session.workspace.needed_by(&tiers, session.reporter)?;
    let report =
        transfer::archive::export(&session.store, &locks, &needed, output, session.reporter)?;
    session.reporter.summary(&format!(
        "exported {} tier(s), {} distributions, {} objects ({}) into {} ({})",
        report.tiers,
        report.distributions,
        report.objects,
        human_bytes(report.object_bytes),
        output.display(),
        human_bytes(report.archive_bytes)
    ));
    Ok(())
}

pub fn import(session: &Session<'_>, file: &Path) -> anyhow::Result<()> {
    let _store = session.share_store()?;
    let report = transfer::archive::import(&session.store, file, session.reporter)?;
    let mut placed = Vec::new();
    for (tier, text) in &report.locks {
        if !session.config.tiers.contains_key(tier) {
            session.reporter.notice(&format!(
                "tier `{tier}` of the archive is not in {}; its lock was not written",
                session.config.source
            ));
            continue;
        }
        let path = session.lock_path(tier);
        match transfer::write_lock_if_absent(&path, text)? {
            LockOutcome::Written => placed.push(format!("{tier} (written)")),
            LockOutcome::Same => placed.push(format!("{tier} (same)")),
            LockOutcome::KeptDifferent => {
                placed.push(format!("{tier} (kept yours)"));
                session.reporter.notice(&format!(
                    "{} differs from the archive's lock of `{tier}`; kept it. Distributions it \
                     names that the archive lacks will be downloaded",
                    path.display()
                ));
            }
        }
    }
    session.reporter.summary(&format!(
        "imported {}: {} new objects ({}), {} already present; {} new distributions of {}; locks: {}",
        file.display(),
        report.objects_new,
        human_bytes(report.bytes_new),
        report.objects_present,
        report.distributions_new,
        report.distributions,
        if placed.is_empty() {
            "none".to_string()
        } else {
            placed.join(", ")
        }
    ));
    Ok(())
}

fn required_remote<'s>(
    session: &'s Session<'_>,
) -> anyhow::Result<&'s tstore::transfer::remote::Remote> {
    session.remote()?.context(
        "no remote store: give --remote URL, set TSTORE_REMOTE, or set `remote` in tiers.toml",
    )
}

pub fn push(session: &Session<'_>, names: &[String]) -> anyhow::Result<()> {
    let tiers = session.config.select(names)?;
    let remote = required_remote(session)?;
    let _store = session.share_store()?;
    let TiersNeed { locks, needed } = session.workspace.needed_by(&tiers, session.reporter)?;
    let report = remote.push(&session.store, &needed, &locks, session.reporter)?;
    session.reporter.summary(&format!(
        "pushed to {}: {} packs ({}), {} already there; {} new distribution records; locks of {}",
        remote.url(),
        report.packs_moved,
        human_bytes(report.bytes_moved),
        report.packs_skipped,
        report.distributions_moved,
        report.locks_pushed.join(", ")
    ));
    Ok(())
}

pub fn pull(session: &Session<'_>, names: &[String]) -> anyhow::Result<()> {
    let tiers = session.config.select(names)?;
    let remote = required_remote(session)?;
    let _store = session.share_store()?;
    let mut failed = false;
    for tier in &tiers {
        if let Some(root) = session.workspace.lock_from_remote(tier)? {
            session.reporter.notice(&format!(
                "tier `{}` had no lock here: took the one it was pushed with to {} \
                 (sha256 {}, pushed {}) into {}",
                tier.name,
                remote.url(),
                &root.lock_sha256[..12.min(root.lock_sha256.len())],
                pushed_when(root.pushed_unix),
                session.lock_path(&tier.name).display()
            ));
        }
        session.existing_lock(tier)?;
    }
    // One pull for all the tiers on one interpreter: into a new store,
    // every object then goes into staged shards.
    for group in session.workspace.pull_groups(&tiers, session.reporter)? {
        let label = group.tiers.join(" + ");
        session.reporter.tier(&label);
        let report = session.workspace.pull_missing(
            &group.selected,
            group.tag.as_deref(),
            session.reporter,
        )?;
        if !report.refused.is_empty() {
            failed = true;
        }
        // Exact sizes, so what a lock change cost can be checked pack by pack.
        for pack in &report.fetched {
            session.reporter.detail(&format!(
                "{label}: fetched {} ({}), {} bytes",
                pack.key, pack.package, pack.bytes
            ));
        }
        session.reporter.summary(&format!(
            "{label}: pulled {} distributions in {} packs ({}), {} new objects, from {}{}",
            report.distributions_moved,
            report.packs_moved,
            human_bytes(report.bytes_moved),
            report.objects_moved,
            remote.url(),
            if report.not_found.is_empty() {
                String::new()
            } else {
                format!(
                    "; not on the remote (materialize downloads them): {}",
                    report.not_found.join(", ")
                )
            }
        ));
    }
    if failed {
        bail!(
            "the remote sent damaged packs; they were refused and nothing of them was recorded (see above)"
        );
    }
    Ok(())
}

pub fn remote_gc(session: &Session<'_>, keep_days: u64, delete: bool) -> anyhow::Result<()> {
    let report = session.workspace.remote_gc(keep_days, delete)?;
    let what = format!(
        "{} files of {} distributions and old locks ({})",
        report.files_freed,
        report.distributions_freed,
        human_bytes(report.bytes_freed)
    );
    session.reporter.summary(&if report.deleted {
        format!(
            "deleted {what}; kept {} distributions used by {} root(s) pushed within {keep_days} days",
            report.distributions_kept, report.roots_kept
        )
    } else {
        format!(
            "would delete {what}; {} distributions used by {} root(s) pushed within {keep_days} \
             days stay. Run `tstore remote gc --keep-days {keep_days} --delete` to delete",
            report.distributions_kept, report.roots_kept
        )
    });
    Ok(())
}

/// How long ago a push was, roughly.
fn pushed_when(unix: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ago = now.saturating_sub(unix);
    match ago {
        0..60 => "just now".to_string(),
        60..3600 => format!("{} min ago", ago / 60),
        3600..86400 => format!("{} h ago", ago / 3600),
        _ => format!("{} days ago", ago / 86400),
    }
}

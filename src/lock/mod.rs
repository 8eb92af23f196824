//! Locking tiers with uv into PEP 751 `pylock.<tier>.toml` files.
//!
//! Versions are aligned across tiers: the union of every solve group (the
//! tiers of one Python version and one `solve-group`, by default all of
//! them) is resolved first and its pins constrain each tier, so a package
//! shared by tiers is the same version everywhere and its files are stored
//! once. When a union has no solution, the fewest tiers are split off and
//! locked alone (see [`groups`]), and the packages whose versions then differ
//! are reported.
//!
//! Locks are universal (`--universal`): one lock serves Linux, macOS and
//! Windows; `fetch` picks the wheel for the actual interpreter. Each lock
//! starts with a header holding the hash of its inputs; a lock whose hash
//! matches is reused without running uv.

pub mod changes;
pub mod groups;
pub mod pylock;
pub mod requirement_hashes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use anyhow::Context;

use crate::config::{Config, ConfigSource, Tier};
use crate::progress::Progress;
use crate::store::Store;
use crate::store::tmp::OwnFile;
use crate::uv::Uv;

pub use pylock::PyLock;

#[derive(Debug, Clone, Default)]
pub struct LockOptions {
    /// Resolve from uv's cache only.
    pub offline: bool,
    /// Which pins may move. Without an upgrade a re-lock keeps every pin of
    /// the existing lock that still fits; with one, the tiers are locked
    /// again even when their inputs are unchanged.
    pub upgrade: Upgrade,
    /// Write the locks here instead of where they belong (`tstore outdated`).
    pub output_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Upgrade {
    #[default]
    None,
    All,
    Packages(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockStatus {
    /// The existing lock's inputs are unchanged.
    Reused,
    /// Locked now; `aligned` is false when the tier had to be locked alone.
    Written { aligned: bool },
}

#[derive(Debug, Clone)]
pub struct TierLock {
    pub tier: String,
    pub path: PathBuf,
    pub status: LockStatus,
    /// What changed since the previous lock (empty when reused).
    pub changes: Vec<changes::VersionChange>,
    /// Time spent locking this tier (its share of a union resolve excluded).
    pub took: std::time::Duration,
}

impl TierLock {
    /// A lock used as it is.
    pub fn reused(tier: &str, path: PathBuf) -> Self {
        Self {
            tier: tier.to_owned(),
            path,
            status: LockStatus::Reused,
            changes: Vec::new(),
            took: std::time::Duration::ZERO,
        }
    }
}

/// `pylock.<tier>.toml` beside tiers.toml, or in the store for the embedded default.
pub fn lock_path(config: &Config, store: &Store, tier: &str) -> PathBuf {
    locks_dir(config, store).join(format!("pylock.{tier}.toml"))
}

fn locks_dir(config: &Config, store: &Store) -> PathBuf {
    match &config.source {
        ConfigSource::File(path) => path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        ConfigSource::Embedded => store.default_locks_dir(),
    }
}

/// Hash of everything that decides a tier's lock: its requirements and
/// constraints (for a local project, its metadata files), the Python
/// version, the indexes, and (for alignment) the requirements of every tier
/// sharing its Python version.
pub fn input_hash(config: &Config, tier: &Tier) -> String {
    let mut hasher = blake3::Hasher::new();
    let mut feed = |label: &str, value: &str| {
        hasher.update(label.as_bytes());
        hasher.update(b"\0");
        hasher.update(value.as_bytes());
        hasher.update(b"\n");
    };
    feed("format", "tstore-lock-1");
    feed("python", &tier.python);
    feed(
        "index",
        &serde_json::to_string(&tier.index).unwrap_or_default(),
    );
    for req in &tier.requirements {
        feed("requirement", &req.text);
        for hash in &req.hashes {
            feed("requirement-hash", hash);
        }
        if let Some(local) = &req.local {
            // Its dependencies come from its metadata files.
            feed("local-metadata", &crate::local::metadata_hash(&local.path));
        }
    }
    for con in &tier.constraints {
        feed("constraint", &con.text);
    }
    feed("solve-group", &tier.solve_group.to_string());
    for other in groups::group_of(config, tier) {
        feed("aligned-with", &other.name);
        for req in other.requirements.iter().chain(&other.constraints) {
            feed("aligned-requirement", &req.text);
        }
    }
    hasher.finalize().to_hex().to_string()
}

/// Whether the tier's lock exists and was made from the current inputs.
pub fn is_current(config: &Config, store: &Store, tier: &Tier) -> bool {
    let Ok(text) = fs_err::read_to_string(lock_path(config, store, &tier.name)) else {
        return false;
    };
    pylock::recorded_input_hash(&text) == Some(input_hash(config, tier).as_str())
}

/// Locks `tiers`, reusing every lock whose inputs are unchanged.
pub fn lock_tiers(
    config: &Config,
    store: &Store,
    uv: &Uv,
    tiers: &[&Tier],
    options: &LockOptions,
    progress: &dyn Progress,
) -> anyhow::Result<Vec<TierLock>> {
    let stale: Vec<&Tier> = tiers
        .iter()
        .copied()
        .filter(|t| options.upgrade != Upgrade::None || !is_current(config, store, t))
        .collect();
    remove_dead_temp_locks(&locks_dir(config, store))?;
    let mut written = BTreeMap::new();
    if !stale.is_empty() {
        let uv_version = uv.version().unwrap_or_else(|_| "uv".into());
        let work = crate::store::tmp::temp_dir(store, "lock")
            .context("cannot create a work directory in the store")?;
        let locker = Locker {
            config,
            store,
            uv,
            work: work.path(),
            options,
            uv_version,
            progress,
        };
        for group in groups::solve_groups(config) {
            locker.lock_group(&group, &stale, &mut written)?;
        }
    }
    Ok(tiers
        .iter()
        .map(|tier| {
            let path = lock_path(config, store, &tier.name);
            match written.remove(&tier.name) {
                Some(written) => TierLock {
                    tier: tier.name.clone(),
                    path,
                    status: LockStatus::Written {
                        aligned: written.aligned,
                    },
                    changes: written.changes,
                    took: written.took,
                },
                None => TierLock::reused(&tier.name, path),
            }
        })
        .collect())
}

/// What locking one tier did.
struct Written {
    /// It shares its group's versions, or has nobody to share them with.
    aligned: bool,
    changes: Vec<changes::VersionChange>,
    took: std::time::Duration,
}

/// What locking every tier of one run shares.
struct Locker<'a> {
    config: &'a Config,
    store: &'a Store,
    uv: &'a Uv,
    /// Where the requirement and constraint files handed to uv are written.
    work: &'a Path,
    options: &'a LockOptions,
    /// Named in each lock's header.
    uv_version: String,
    progress: &'a dyn Progress,
}

impl Locker<'_> {
    /// Locks the `stale` tiers of one solve group, constrained by the
    /// group's union where they can be.
    fn lock_group(
        &self,
        group: &groups::Group<'_>,
        stale: &[&Tier],
        written: &mut BTreeMap<String, Written>,
    ) -> anyhow::Result<()> {
        let to_lock: Vec<&Tier> = stale
            .iter()
            .copied()
            .filter(|t| group.tiers.iter().any(|g| g.name == t.name))
            .collect();
        if to_lock.is_empty() {
            return Ok(());
        }
        let resolution = self.resolve_solve_group(group);
        self.progress.start("locking", to_lock.len() as u64, 0);
        for tier in to_lock {
            let outcome = self.lock_in_group(tier, group, &resolution)?;
            written.insert(tier.name.clone(), outcome);
            self.progress.item_done(&tier.name);
        }
        self.progress.finish();
        // Said only now: if the tiers could not be locked at all, the
        // error above is the one that matters (a network failure, say).
        report_split(group, &resolution, self.progress);
        if !resolution.split_off.is_empty() || written.values().any(|w| !w.aligned) {
            report_version_differences(
                self.config,
                self.store,
                self.uv,
                &group.tiers,
                self.progress,
            );
        }
        Ok(())
    }

    /// Locks one tier of `group` and says what changed in its lock.
    fn lock_in_group(
        &self,
        tier: &Tier,
        group: &groups::Group<'_>,
        resolution: &groups::Resolution,
    ) -> anyhow::Result<Written> {
        let split_off = resolution.split_off.contains(&tier.name);
        let pins = if split_off {
            None
        } else {
            resolution.pins.as_deref()
        };
        let started = std::time::Instant::now();
        let before = changes::lock_versions(&lock_path(self.config, self.store, &tier.name));
        let used_pins = self.lock_tier(tier, pins)?;
        let mut changed = changes::changes(&before, &changes::lock_versions(&self.output(tier)));
        if used_pins {
            let sharing: Vec<&Tier> = group
                .tiers
                .iter()
                .copied()
                .filter(|t| !resolution.split_off.contains(&t.name))
                .collect();
            name_pinning_tiers(&mut changed, tier, &sharing);
        }
        Ok(Written {
            aligned: !split_off && (used_pins || pins.is_none()),
            changes: changed,
            took: started.elapsed(),
        })
    }

    /// Where the tier's new lock is written.
    fn output(&self, tier: &Tier) -> PathBuf {
        self.options.output_dir.as_ref().map_or_else(
            || lock_path(self.config, self.store, &tier.name),
            |dir| dir.join(format!("pylock.{}.toml", tier.name)),
        )
    }

    /// Resolves a solve group's union, splitting off the fewest tiers when it
    /// has no solution.
    fn resolve_solve_group(&self, group: &groups::Group<'_>) -> groups::Resolution {
        // One tier alone needs no union: its own resolution is the union.
        if group.tiers.len() < 2 {
            return groups::Resolution::default();
        }
        // Tiers that read different indexes cannot share one either.
        if !group.tiers.iter().all(|t| t.index == group.tiers[0].index) {
            self.progress.notice(&format!(
            "the tiers of solve group `{}` (Python {}) use different package indexes, so each is \
             locked on its own and shared packages may differ in version",
            group.name, group.python
        ));
            return groups::Resolution {
                split_off: group.tiers.iter().map(|t| t.name.clone()).collect(),
                ..groups::Resolution::default()
            };
        }
        let started = std::time::Instant::now();
        self.progress.start(
            &format!("resolving {} tiers together", group.tiers.len()),
            0,
            0,
        );
        let resolution = groups::resolve_group(
            &group.tiers,
            |tiers| self.resolve_union(tiers),
            self.progress,
        );
        self.progress.finish();
        self.progress.notice(&format!(
            "resolving {} tiers together (solve group `{}`, Python {}): {:.1} s",
            group.tiers.len(),
            group.name,
            group.python,
            started.elapsed().as_secs_f64()
        ));
        resolution
    }

    /// Resolves all tiers together; returns requirements.txt-style pins.
    fn resolve_union(&self, tiers: &[&Tier]) -> anyhow::Result<String> {
        let python = &tiers[0].python;
        let requirements = self.work.join(format!("union-{python}.in"));
        let constraints = self.work.join(format!("union-{python}.constraints.txt"));
        let output = self.work.join(format!("union-{python}.txt"));
        // A local project is editable in one tier and built in another, with
        // the same dependencies either way: the union names it once, built.
        let lines = |select: fn(&Tier) -> &Vec<crate::config::RequirementLine>| {
            let mut all: Vec<&str> = tiers
                .iter()
                .flat_map(|t| {
                    select(t)
                        .iter()
                        .map(|r| r.text.strip_prefix("-e ").unwrap_or(&r.text))
                })
                .collect();
            all.sort_unstable();
            all.dedup();
            all.join("\n") + "\n"
        };
        fs_err::write(&requirements, lines(|t| &t.requirements))?;
        fs_err::write(&constraints, lines(|t| &t.constraints))?;
        // uv prefers the versions already in its output file: the current
        // locks' pins, so that a re-lock moves only what it must.
        fs_err::write(&output, current_pins(self.config, self.store, tiers))?;
        let mut cmd = compile_command(self.config, self.uv, tiers[0], self.options);
        cmd.args(["--no-header", "--no-annotate", "-c"])
            .arg(&constraints)
            .arg(&requirements)
            .arg("-o")
            .arg(&output);
        self.uv.run(&mut cmd)?;
        // Only `name==version` pins can constrain: local projects (`-e ./x`,
        // `./x`) are requirements of their tiers already.
        Ok(fs_err::read_to_string(&output)?
            .lines()
            .filter(|line| {
                line.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && line.contains("==")
                    && !line.contains(" @ ")
            })
            .map(|line| format!("{line}\n"))
            .collect())
    }

    /// Locks one tier; returns whether the union's pins constrained it.
    fn lock_tier(&self, tier: &Tier, union: Option<&str>) -> anyhow::Result<bool> {
        let requirements = self.work.join(format!("{}.in", tier.name));
        fs_err::write(
            &requirements,
            tier.requirements
                .iter()
                .map(|r| format!("{}\n", r.text))
                .collect::<String>(),
        )?;
        let existing = lock_path(self.config, self.store, &tier.name);
        let lock_dir = existing.parent().unwrap_or(Path::new("."));
        // uv writes local projects' paths relative to its output file, so it
        // writes beside the final lock (under a name uv accepts: no dots).
        let temp_output = OwnFile::new(lock_dir.join(format!(
            "{TEMP_LOCK_PREFIX}{}-{}.toml",
            std::process::id(),
            crate::store::unique_suffix().replace(|c: char| !c.is_ascii_alphanumeric(), "")
        )));
        let compile = |pins: Option<&str>| {
            self.compile_tier(tier, &requirements, &existing, temp_output.path(), pins)
        };
        let alone = || compile(None).with_context(|| format!("cannot lock tier `{}`", tier.name));
        let aligned = match union {
            Some(pins) => match compile(Some(pins)) {
                Ok(()) => true,
                Err(err) => {
                    alone()?;
                    self.progress.notice(&format!(
                    "tier `{}` cannot use the versions shared by all tiers, so it was locked on its own ({})",
                    tier.name,
                    last_lines(&format!("{err:#}"), 3)
                ));
                    false
                }
            },
            None => {
                alone()?;
                false
            }
        };
        self.publish(tier, temp_output.path())?;
        Ok(aligned)
    }

    /// Runs `uv pip compile` for one tier into `output`, starting from the
    /// `existing` lock's pins, constrained by the tier's own constraints and
    /// the union's `pins`.
    fn compile_tier(
        &self,
        tier: &Tier,
        requirements: &Path,
        existing: &Path,
        output: &Path,
        pins: Option<&str>,
    ) -> anyhow::Result<()> {
        // uv keeps the pins of the file it writes to where it can.
        match fs_err::read_to_string(existing) {
            Ok(text) => fs_err::write(output, text)?,
            Err(_) => {
                let _ = fs_err::remove_file(output);
            }
        }
        let own_constraints: String = tier
            .constraints
            .iter()
            .map(|c| format!("{}\n", c.text))
            .collect();
        let constraints = self.work.join(format!("{}.constraints.txt", tier.name));
        fs_err::write(
            &constraints,
            format!("{own_constraints}{}", pins.unwrap_or("")),
        )?;
        let mut cmd = compile_command(self.config, self.uv, tier, self.options);
        cmd.args(["--format", "pylock.toml", "--no-header", "-c"])
            .arg(&constraints)
            .arg(requirements)
            .arg("-o")
            .arg(output);
        self.uv.run(&mut cmd)?;
        Ok(())
    }

    /// Writes uv's lock at `compiled` to the tier's output with tstore's
    /// header (the input hash), replacing the old lock atomically.
    fn publish(&self, tier: &Tier, compiled: &Path) -> anyhow::Result<()> {
        let body = fs_err::read_to_string(compiled)?;
        let header = format!(
            "# Written by tstore from tier `{}` of {} with {}. Re-create with `tstore lock {}`.\n{}{}\n",
            tier.name,
            self.config.source,
            self.uv_version,
            tier.name,
            pylock::INPUT_HASH_PREFIX,
            input_hash(self.config, tier),
        );
        let target = self.output(tier);
        let temp = target.with_extension(format!(
            "{}{}",
            REPLACING_LOCK_INFIX.trim_start_matches('.'),
            std::process::id()
        ));
        fs_err::write(&temp, format!("{header}{body}"))?;
        fs_err::rename(&temp, &target)?;
        Ok(())
    }
}

/// Marks the changes to packages whose version another tier of the group
/// constrains (requires with a version specifier) while this tier does not:
/// the version came from resolving with that tier.
fn name_pinning_tiers(changed: &mut [changes::VersionChange], tier: &Tier, group: &[&Tier]) {
    let constrains = |t: &Tier, package: &str| {
        t.requirements
            .iter()
            .chain(&t.constraints)
            .any(|r| r.name == package && r.text.trim() != r.name)
    };
    for change in changed.iter_mut().filter(|c| c.new.is_some()) {
        if constrains(tier, &change.package) {
            continue;
        }
        change.pinned_by = group
            .iter()
            .filter(|other| other.name != tier.name && constrains(other, &change.package))
            .map(|other| other.name.clone())
            .collect();
    }
}

/// Says which tiers were split off their solve group, why, and how to make
/// that explicit.
fn report_split(
    group: &groups::Group<'_>,
    resolution: &groups::Resolution,
    progress: &dyn Progress,
) {
    let Some(conflict) = &resolution.conflict else {
        return;
    };
    let split = resolution.split_off.join("`, `");
    let kept = group.tiers.len() - resolution.split_off.len();
    progress.notice(&format!(
        "solve group `{}` (Python {}) has no common solution: split off `{split}`, locked alone; \
         the other {kept} tier(s) still share versions. uv said: {}\n  \
         To say so in tiers.toml, add `solve-group = false` (or a group name of its own) to \
         [tiers.{}]",
        group.name,
        group.python,
        uv_reason(conflict),
        resolution.split_off.first().map_or("…", String::as_str),
    ));
}

/// `uv pip compile` for `tier`'s Python and indexes, run in tiers.toml's
/// folder (local project paths are relative to it).
fn compile_command(config: &Config, uv: &Uv, tier: &Tier, options: &LockOptions) -> Command {
    let mut cmd = uv.command();
    cmd.current_dir(&config.dir);
    cmd.args([
        "pip",
        "compile",
        "--universal",
        "--quiet",
        "--python-version",
        &tier.python,
    ]);
    let index = &tier.index;
    if let Some(url) = &index.index_url {
        cmd.args(["--index-url", url]);
    }
    for url in &index.extra_index_urls {
        cmd.args(["--extra-index-url", url]);
    }
    for link in &index.find_links {
        cmd.arg("--find-links")
            .arg(crate::config::resolve_find_links(link, &config.dir));
    }
    if index.no_index {
        cmd.arg("--no-index");
    }
    if options.offline {
        cmd.arg("--offline");
    }
    match &options.upgrade {
        Upgrade::None => {}
        Upgrade::All => {
            cmd.arg("--upgrade");
        }
        Upgrade::Packages(names) => {
            for name in names {
                cmd.args(["--upgrade-package", name]);
            }
        }
    }
    cmd
}

/// `name==version` lines of the tiers' current locks (names locked at one
/// version only), for uv to prefer.
fn current_pins(config: &Config, store: &Store, tiers: &[&Tier]) -> String {
    let mut versions: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for tier in tiers {
        let Ok((lock, _)) = PyLock::read(&lock_path(config, store, &tier.name)) else {
            continue;
        };
        for package in lock.packages {
            if let Some(version) = package.version {
                versions.entry(package.name).or_default().insert(version);
            }
        }
    }
    versions
        .into_iter()
        .filter(|(_, v)| v.len() == 1)
        .map(|(name, v)| format!("{name}=={}\n", v.into_iter().next().unwrap_or_default()))
        .collect()
}

/// How uv's output beside the final lock is named:
/// `pylock._tstore-<pid>-<suffix>.toml`. Tier names start with a letter or
/// digit, so no tier's lock is ever named so.
const TEMP_LOCK_PREFIX: &str = "pylock._tstore-";
/// How a lock being replaced is named: `pylock.<tier>.toml.tmp-<pid>`.
const REPLACING_LOCK_INFIX: &str = ".toml.tmp-";

/// The pid of the tstore that wrote a temp file beside the locks.
fn temp_lock_owner(name: &str) -> Option<i32> {
    if let Some(rest) = name.strip_prefix(TEMP_LOCK_PREFIX) {
        return rest.split_once('-')?.0.parse().ok();
    }
    let (_, pid) = name
        .strip_prefix("pylock.")?
        .rsplit_once(REPLACING_LOCK_INFIX)?;
    pid.parse().ok()
}

/// Removes the temp locks of tstores that died while locking (killed, so
/// they could not remove their own): they must not be committed beside
/// tiers.toml.
fn remove_dead_temp_locks(dir: &Path) -> anyhow::Result<()> {
    let entries = match fs_err::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err.into()),
    };
    let me = std::process::id() as i32;
    for entry in entries.flatten() {
        let Some(pid) = temp_lock_owner(&entry.file_name().to_string_lossy()) else {
            continue;
        };
        if pid != me && !crate::store::process_alive(pid) {
            fs_err::remove_file(entry.path())
                .context("cannot remove a temp lock left by an interrupted tstore")?;
        }
    }
    Ok(())
}

/// A package locked at more than one version across tiers that share a
/// solve group (so stored once per version).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VersionDifference {
    pub package: String,
    /// Version → the tiers that install it.
    pub versions: BTreeMap<String, Vec<String>>,
}

/// The packages whose installed versions differ between `tiers`: for each
/// tier, only what its interpreter installs (a universal lock may hold a
/// package twice, for different Pythons; only one is installed). Without an
/// interpreter to ask, every version in the lock counts.
pub fn version_differences(
    config: &Config,
    store: &Store,
    uv: &Uv,
    tiers: &[&Tier],
) -> Vec<VersionDifference> {
    let mut versions: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for tier in tiers {
        let Ok((lock, _)) = PyLock::read(&lock_path(config, store, &tier.name)) else {
            continue;
        };
        let interpreter = crate::interpreter::Interpreter::find(uv, store, &tier.python, true).ok();
        for package in lock.packages {
            if let (Some(marker), Some(interpreter)) = (&package.marker, &interpreter)
                && uv_pep508::MarkerTree::from_str(marker)
                    .is_ok_and(|tree| !tree.evaluate(&interpreter.markers, &[]))
            {
                continue;
            }
            let tiers_of = versions
                .entry(package.name)
                .or_default()
                .entry(package.version.unwrap_or_default())
                .or_default();
            if !tiers_of.contains(&tier.name) {
                tiers_of.push(tier.name.clone());
            }
        }
    }
    versions
        .into_iter()
        .filter(|(_, by_version)| by_version.len() > 1)
        .map(|(package, versions)| VersionDifference { package, versions })
        .collect()
}

/// How many differing packages a notice lists before "and N more".
const DIFFERENCES_SHOWN: usize = 10;

/// After a split or fallback, names the packages whose versions differ
/// between tiers: one line each, the first few.
fn report_version_differences(
    config: &Config,
    store: &Store,
    uv: &Uv,
    tiers: &[&Tier],
    progress: &dyn Progress,
) {
    let differences = version_differences(config, store, uv, tiers);
    if differences.is_empty() {
        return;
    }
    let mut text =
        String::from("these packages differ between tiers and are stored once per version:");
    for difference in differences.iter().take(DIFFERENCES_SHOWN) {
        let parts: Vec<String> = difference
            .versions
            .iter()
            .map(|(version, tiers)| format!("{version} in {}", tiers.join(", ")))
            .collect();
        text.push_str(&format!("\n  {}: {}", difference.package, parts.join("; ")));
    }
    if differences.len() > DIFFERENCES_SHOWN {
        text.push_str(&format!(
            "\n  and {} more (`tstore lock --json` lists them all)",
            differences.len() - DIFFERENCES_SHOWN
        ));
    }
    progress.notice(&text);
}

/// uv's own words from a failed run's error: what follows `error:`,
/// without the command line that precedes it.
fn uv_reason(text: &str) -> String {
    let from = text.find("error:").unwrap_or(0);
    text[from..]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_locks_name_their_writer() {
        assert_eq!(temp_lock_owner("pylock._tstore-4242-1a2b.toml"), Some(4242));
        assert_eq!(temp_lock_owner("pylock.api.toml.tmp-77"), Some(77));
        assert_eq!(temp_lock_owner("pylock.api.toml"), None);
        assert_eq!(
            temp_lock_owner("pylock.tstore-4242-1a2b.toml"),
            None,
            "a tier's lock"
        );
        assert_eq!(temp_lock_owner("tiers.toml"), None);
    }
}

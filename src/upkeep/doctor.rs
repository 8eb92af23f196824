//! `tstore doctor`: what a materialize depends on, checked and explained.
//!
//! Each check has a name, whether it passed, what was found and, when it did
//! not pass, the fix. A check that fails with `blocking` set means a
//! materialize would fail (a damaged index, no Python for a tier, a link
//! mode tiers.toml demands that the filesystem cannot give, no room for the
//! largest tier); the others cost disk or time but let it work (copies
//! instead of links, leftovers in `tmp/`, a lock to make).
//!
//! The checks read and probe, they change nothing but what opening the store
//! always does (removing the temp entries of ended runs, which are counted
//! first), and a probe file created and removed in each venv folder.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{Config, ConfigSource, LinkMode};
use crate::interpreter::Interpreter;
use crate::link::{LinkMethod, Linker};
use crate::lock::{self, pylock::PyLock};
use crate::progress::{Progress, human_bytes};
use crate::store::{IndexDamaged, Layout, Store};
use crate::uv::Uv;

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked: `index`, `uv`, `python:<tier>`, `link:<folder>`…
    pub name: String,
    pub ok: bool,
    /// A failure here makes materialize fail.
    pub blocking: bool,
    /// What was found.
    pub detail: String,
    /// What to do about it (only when not ok).
    pub fix: Option<String>,
}

impl Check {
    fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ok: true,
            blocking: false,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ok: false,
            blocking: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn block(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            blocking: true,
            ..Self::warn(name, detail, fix)
        }
    }
}

/// Where everything lives.
#[derive(Debug, Clone, Serialize)]
pub struct Locations {
    /// The store (`TSTORE_HOME`, else the XDG default).
    pub store: PathBuf,
    /// tiers.toml in use, or `embedded default`.
    pub config: String,
    /// The folders the tiers' venvs go in (the venv root, and any tier's
    /// own `venv` folder).
    pub venv_folders: Vec<PathBuf>,
    /// Where the locks are.
    pub locks: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    pub locations: Locations,
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// Whether a failed check would make materialize fail.
    pub fn blocks_materialize(&self) -> bool {
        self.checks.iter().any(|c| !c.ok && c.blocking)
    }
}

/// Runs every check for `config` against the store at `home`.
pub fn doctor(config: &Config, home: &Path, progress: &dyn Progress) -> DoctorReport {
    let layout = Layout::of_home(home);
    let venv_folders: Vec<PathBuf> = config
        .tiers
        .values()
        .filter_map(|t| t.venv.parent().map(Path::to_path_buf))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let locations = Locations {
        store: home.to_path_buf(),
        config: match &config.source {
            ConfigSource::File(path) => path.display().to_string(),
            ConfigSource::Embedded => "embedded default (no ./tiers.toml, no --config)".into(),
        },
        venv_folders: venv_folders.clone(),
        locks: match &config.source {
            ConfigSource::File(path) => path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            ConfigSource::Embedded => layout.default_locks_dir(),
        },
    };
    let mut checks = vec![leftovers(&layout)];
    let store = match Store::open(home) {
        Ok(store) => store,
        Err(err) => {
            checks.push(store_failure(&err));
            return DoctorReport { locations, checks };
        }
    };
    checks.push(index(&store));
    for folder in &venv_folders {
        checks.push(link_mode(&store, config.link_mode, folder));
    }
    let uv = match Uv::find_existing(&store) {
        Ok(Some(uv)) => match uv.version() {
            Ok(version) => {
                checks.push(Check::pass(
                    "uv",
                    format!("{version} at {}", uv.path.display()),
                ));
                Some(uv)
            }
            Err(err) => {
                checks.push(Check::block(
                    "uv",
                    format!("{} does not run: {err:#}", uv.path.display()),
                    "reinstall uv, or point TSTORE_UV at a working one",
                ));
                None
            }
        },
        Ok(None) => {
            checks.push(Check::warn(
                "uv",
                "uv is not on PATH, TSTORE_UV is not set, and the store has no copy",
                format!(
                    "put uv on PATH (`pipx install uv`) or set TSTORE_UV; otherwise the next \
                     lock installs uv {} from PyPI into the store",
                    crate::uv::PINNED_UV_VERSION
                ),
            ));
            None
        }
        Err(err) => {
            checks.push(Check::block(
                "uv",
                format!("{err:#}"),
                "fix or unset TSTORE_UV",
            ));
            None
        }
    };
    let interpreters = pythons(config, &store, uv.as_ref(), &mut checks);
    for tier in config.tiers.values() {
        checks.push(lock_state(config, &store, tier));
    }
    checks.push(free_space(config, &store, &interpreters));
    progress.detail("doctor: all checks ran");
    DoctorReport { locations, checks }
}

/// Entries of `tmp/` whose run has ended (or, unnamed, are over a day old).
fn leftovers(layout: &Layout) -> Check {
    let tmp = layout.tmp_dir();
    let mut count = 0u64;
    let mut bytes = 0u64;
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for entry in entries.flatten() {
            if super::gc::is_stale_temp(&entry) {
                count += 1;
                bytes += tree_bytes(&entry.path());
            }
        }
    }
    if count == 0 {
        return Check::pass("tmp", format!("{}: no leftovers", tmp.display()));
    }
    Check::warn(
        "tmp",
        format!(
            "{}: {count} leftover(s) of ended runs, {}",
            tmp.display(),
            human_bytes(bytes)
        ),
        "`tstore gc` removes them (the next tstore command that opens the store removes those \
         of ended runs too)",
    )
}

fn tree_bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return crate::fsinfo::allocated(&meta);
    }
    std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| tree_bytes(&e.path())).sum())
        .unwrap_or(0)
}

fn store_failure(err: &anyhow::Error) -> Check {
    match err.downcast_ref::<IndexDamaged>() {
        Some(damaged) => Check::block(
            "index",
            format!(
                "the store index {} cannot be trusted: {}",
                damaged.path.display(),
                damaged.problem
            ),
            "`tstore verify --repair` rebuilds it from the store's own files (the damaged index \
             is kept beside it)",
        ),
        None => Check::block(
            "store",
            format!("the store cannot be opened: {err:#}"),
            "fix what the message names (permissions, a full disk), or point TSTORE_HOME at \
             another folder",
        ),
    }
}

/// SQLite's quick check of the index (the open already checked it against
/// the store's records).
fn index(store: &Store) -> Check {
    let problems = store.db.integrity_problems(false);
    if problems.is_empty() {
        return Check::pass(
            "index",
            format!("{}: quick check ok", store.index_path().display()),
        );
    }
    Check::block(
        "index",
        format!(
            "{}: SQLite reports it malformed: {}",
            store.index_path().display(),
            problems.join("; ")
        ),
        "`tstore verify --repair` rebuilds it from the store's own files",
    )
}

/// How files would get from the store into venvs in `folder`.
fn link_mode(store: &Store, mode: LinkMode, folder: &Path) -> Check {
    let name = format!("link:{}", folder.display());
    // The folder may not exist yet; its nearest existing ancestor is where
    // materialize would create it.
    let Some(existing) = folder.ancestors().find(|p| p.is_dir()) else {
        return Check::block(
            name,
            format!("no part of {} exists", folder.display()),
            "set `venv-root` in tiers.toml to a folder you can write",
        );
    };
    let same_fs = match (
        std::fs::metadata(store.location()),
        std::fs::metadata(existing),
    ) {
        (Ok(a), Ok(b)) => a.dev() == b.dev(),
        _ => false,
    };
    let where_ = if same_fs {
        "the store's filesystem"
    } else {
        "another filesystem than the store"
    };
    match Linker::probe(mode, store, existing) {
        Ok(probe) => {
            let method = probe.linker.method();
            let mut facts = vec![where_.to_string()];
            if method != LinkMethod::Reflink && mode == LinkMode::Auto {
                facts.push("no reflinks".into());
            }
            if method == LinkMethod::Hardlink {
                // An object at the limit is replaced by a fresh copy, so a
                // low limit costs space, never a failure.
                if let Some(max) = crate::platform::link_max(store.location()) {
                    facts.push(format!("up to {max} links per object"));
                }
            }
            facts.push(format!("probed in {}", existing.display()));
            let detail = format!("{method} ({})", facts.join("; "));
            if method == LinkMethod::Copy && mode != LinkMode::Copy {
                Check::warn(
                    name,
                    format!("{detail}: every venv is a full copy"),
                    format!(
                        "put the store on the venvs' filesystem (TSTORE_HOME=<a folder on it>) \
                         or the venvs on the store's (`venv-root` in tiers.toml); the store is \
                         at {}",
                        store.location().display()
                    ),
                )
            } else {
                Check::pass(name, detail)
            }
        }
        Err(err) => Check::block(
            name,
            format!("{err:#} ({where_})"),
            "set `link-mode = \"auto\"` in tiers.toml, or put store and venvs on one filesystem",
        ),
    }
}

/// Each tier's Python, found as materialize finds it (uv's discovery).
fn pythons(
    config: &Config,
    store: &Store,
    uv: Option<&Uv>,
    checks: &mut Vec<Check>,
) -> BTreeMap<String, Interpreter> {
    let mut found: BTreeMap<String, Result<Interpreter, String>> = BTreeMap::new();
    for tier in config.tiers.values() {
        let name = format!("python:{}", tier.name);
        let Some(uv) = uv else {
            checks.push(Check::warn(
                name,
                format!("Python {} not looked for: no working uv", tier.python),
                "see the `uv` check",
            ));
            continue;
        };
        let answer = found.entry(tier.python.clone()).or_insert_with(|| {
            Interpreter::find(uv, store, &tier.python, false).map_err(|err| format!("{err:#}"))
        });
        checks.push(match answer {
            Ok(interpreter) => Check::pass(
                name,
                format!(
                    "Python {}: {}",
                    tier.python,
                    interpreter.executable.display()
                ),
            ),
            Err(err) => Check::block(
                name,
                err.clone(),
                match pyenv_version(&tier.python) {
                    Some(bin) => format!(
                        "pyenv has it, which uv sees only on PATH: add {} to PATH (or name it in \
                         `pyenv global`), or change `python` for tier `{}` in tiers.toml",
                        bin.display(),
                        tier.name
                    ),
                    None => format!(
                        "install it (`uv python install {}`, or put a python{} on PATH), or \
                         change `python` for tier `{}` in tiers.toml",
                        tier.python, tier.python, tier.name
                    ),
                },
            ),
        });
    }
    found
        .into_iter()
        .filter_map(|(request, answer)| answer.ok().map(|i| (request, i)))
        .collect()
}

/// The `bin` folder of the newest pyenv install matching `request` (a
/// plain version like `3.12`), under `$PYENV_ROOT` or `~/.pyenv`.
fn pyenv_version(request: &str) -> Option<PathBuf> {
    if !request.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let root = std::env::var_os("PYENV_ROOT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pyenv")))?;
    let mut matches: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(root.join("versions"))
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let matching = name == request || name.starts_with(&format!("{request}."));
            let numbers: Option<Vec<u64>> = name.split('.').map(|n| n.parse().ok()).collect();
            let bin = entry.path().join("bin");
            (matching && bin.is_dir()).then_some((numbers?, bin))
        })
        .collect();
    matches.sort();
    matches.pop().map(|(_, bin)| bin)
}

fn lock_state(config: &Config, store: &Store, tier: &crate::config::Tier) -> Check {
    let name = format!("lock:{}", tier.name);
    let path = lock::lock_path(config, store, &tier.name);
    if !path.is_file() {
        return Check::warn(
            name,
            format!("no lock at {}", path.display()),
            format!(
                "`tstore lock {}` (materialize locks it too, but not with --frozen or --offline)",
                tier.name
            ),
        );
    }
    if !lock::is_current(config, store, tier) {
        return Check::warn(
            name,
            format!(
                "{} is stale: tiers.toml changed since it was written",
                path.display()
            ),
            format!(
                "`tstore lock {}` (materialize re-locks it too; --frozen uses it as it is)",
                tier.name
            ),
        );
    }
    Check::pass(name, format!("{} is current", path.display()))
}

/// Free space on the store's filesystem against the largest tier's wheels
/// (from its lock; unpacked, files take more).
fn free_space(
    config: &Config,
    store: &Store,
    interpreters: &BTreeMap<String, Interpreter>,
) -> Check {
    let free = match crate::platform::free_bytes(store.location()) {
        Ok(free) => free,
        Err(err) => {
            return Check::warn(
                "free-space",
                format!(
                    "cannot read free space of {}: {err}",
                    store.location().display()
                ),
                "check the store's filesystem",
            );
        }
    };
    let largest = config
        .tiers
        .values()
        .filter_map(|tier| {
            let path = lock::lock_path(config, store, &tier.name);
            let (lock, _) = PyLock::read(&path).ok()?;
            let wheels = match interpreters.get(&tier.python) {
                Some(interpreter) => lock
                    .select(interpreter, path.parent()?, &path)
                    .ok()?
                    .iter()
                    .filter_map(|s| s.pinned().and_then(|f| f.size))
                    .sum(),
                None => lock
                    .packages
                    .iter()
                    .filter_map(|p| p.wheels.iter().filter_map(|w| w.size).max())
                    .sum::<u64>(),
            };
            Some((wheels, tier.name.clone()))
        })
        .max();
    let Some((wheels, tier)) = largest else {
        return Check::pass(
            "free-space",
            format!(
                "{} free on the store's filesystem (no lock yet to compare with)",
                human_bytes(free)
            ),
        );
    };
    let detail = format!(
        "{} free on the store's filesystem; the largest tier, `{tier}`, downloads {} of wheels, \
         about 2-3 times that unpacked",
        human_bytes(free),
        human_bytes(wheels)
    );
    let fix = "free space (`tstore gc` removes what no tier uses) or put the store on a larger \
               disk (TSTORE_HOME)";
    if free < wheels {
        Check::block("free-space", detail, fix)
    } else if free < wheels.saturating_mul(3) {
        Check::warn("free-space", detail, fix)
    } else {
        Check::pass("free-space", detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_blocking_failure_blocks() {
        let report = |checks| DoctorReport {
            locations: Locations {
                store: PathBuf::new(),
                config: String::new(),
                venv_folders: Vec::new(),
                locks: PathBuf::new(),
            },
            checks,
        };
        assert!(
            !report(vec![Check::pass("a", "x"), Check::warn("b", "y", "z")]).blocks_materialize()
        );
        assert!(report(vec![Check::block("c", "y", "z")]).blocks_materialize());
    }
}

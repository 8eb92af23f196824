//! A lock's dependency closure, checked before a venv is planned from it.
//!
//! A lock is only a list of pins; nothing in it proves that the packages it
//! selects for an interpreter are all a working venv needs (a lock edited by
//! hand can drop `urllib3` and keep `requests`). Once the selected wheels are
//! in the store, each one's `METADATA` says what it needs: every
//! `Requires-Dist` whose marker holds for the interpreter's PEP 508
//! environment and the extras asked of the package (by the tier's
//! requirements, and by other `Requires-Dist` entries such as `pkg[socks]`)
//! must be met by a selected distribution whose version the specifier
//! allows. Any failure refuses the lock, naming each unmet requirement and
//! the lock file. Markers and specifiers are evaluated by
//! `uv-pep508`/`uv-pep440`.
//!
//! Whether the lock still matches the tier's own requirements is the input
//! hash's question, not this one: `--frozen` and `--offline` use a stale
//! lock as it is, as uv does.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;
use std::path::Path;
use std::str::FromStr;

use anyhow::Context;
use uv_normalize::{ExtraName, PackageName};
use uv_pep440::Version;
use uv_pep508::{MarkerEnvironment, Requirement, VersionOrUrl};

use crate::config::Tier;
use crate::fetch::{Fetched, Stored};
use crate::interpreter::Interpreter;
use crate::progress::Progress;
use crate::store::db::is_dist_info_file;
use crate::store::{Store, wheel};

/// Unmet requirements listed in the error before "and N more".
const SHOWN: usize = 20;

/// What a tier's selected distributions are checked with.
pub struct ClosureInput<'a> {
    pub store: &'a Store,
    pub tier: &'a Tier,
    pub interpreter: &'a Interpreter,
    /// The lock the distributions were selected from (named in the error).
    pub lock_path: &'a Path,
    pub fetched: &'a [Fetched],
}

/// One requirement as written, parsed.
struct Requires {
    text: String,
    parsed: Requirement,
}

/// A selected distribution as its METADATA describes it.
struct Installed {
    name: String,
    version: Version,
    requires: Vec<Requires>,
}

/// Refuses the lock unless the selected distributions meet each other's
/// requirements (see the module docs).
/// A `Requires-Dist` that does not parse is reported and not checked.
pub fn check(input: &ClosureInput<'_>, progress: &dyn Progress) -> anyhow::Result<()> {
    let mut installed: HashMap<PackageName, Installed> = HashMap::new();
    for item in input.fetched {
        let dist = read_installed(input.store, item, progress)?;
        let key = PackageName::from_str(&dist.name).with_context(|| {
            format!("METADATA of {} has an invalid Name", item.selected.label())
        })?;
        installed.insert(key, dist);
    }
    let tier = tier_requirements(input.tier);
    let unmet = unmet(&installed, &tier, &input.interpreter.markers);
    if unmet.is_empty() {
        return Ok(());
    }
    let interpreter = input.interpreter;
    let mut message = format!(
        "{} (tier `{}`) does not hold what its packages require on Python {}.{} ({} {}):",
        input.lock_path.display(),
        input.tier.name,
        interpreter.version.0,
        interpreter.version.1,
        interpreter.markers.sys_platform(),
        interpreter.markers.platform_machine(),
    );
    for line in unmet.iter().take(SHOWN) {
        let _ = write!(message, "\n  {line}");
    }
    if unmet.len() > SHOWN {
        let _ = write!(message, "\n  and {} more", unmet.len() - SHOWN);
    }
    let _ = write!(
        message,
        "\nThe lock was edited or is incomplete, so it was not used: run `tstore lock {}` to write it again",
        input.tier.name
    );
    Err(anyhow::anyhow!(message))
}

/// The name, version and requirements in a stored distribution's METADATA.
fn read_installed(
    store: &Store,
    item: &Fetched,
    progress: &dyn Progress,
) -> anyhow::Result<Installed> {
    let label = item.selected.label();
    let object = match &item.stored {
        Stored::Recorded(id) => store.db.dist_info_file(*id, "METADATA")?,
        // The first in path order, as the index gives it.
        Stored::Unrecorded(wheel) => wheel
            .rows()
            .iter()
            .filter(|row| is_dist_info_file(&row.path, "METADATA"))
            .min_by(|a, b| a.path.cmp(&b.path))
            .map(|row| row.object),
    }
    .with_context(|| format!("the store has no METADATA for {label}: the record is damaged"))?;
    let bytes = match &object {
        None => Vec::new(),
        Some(key) => fs_err::read(store.object_path(key))
            .context("a store object is missing: the store is damaged")?,
    };
    let text = String::from_utf8_lossy(&bytes);
    let (name, version) =
        wheel::parse_metadata(&text).map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
    let version = Version::from_str(&version)
        .map_err(|e| anyhow::anyhow!("{label}: METADATA Version `{version}`: {e}"))?;
    let mut requires = Vec::new();
    for text in wheel::parse_requires_dist(&text) {
        match Requirement::from_str(&text) {
            Ok(parsed) => requires.push(Requires { text, parsed }),
            Err(err) => progress.notice(&format!(
                "{label}: `Requires-Dist: {text}` is not a valid requirement ({err}); not checked"
            )),
        }
    }
    Ok(Installed {
        name,
        version,
        requires,
    })
}

/// The tier's requirements that name a package, for the extras they ask
/// for (a local project's line is a path: its extras are not read).
fn tier_requirements(tier: &Tier) -> Vec<Requires> {
    tier.requirements
        .iter()
        .filter(|line| line.local.is_none() && !line.name.is_empty())
        .filter_map(|line| {
            Some(Requires {
                parsed: Requirement::from_str(&line.text).ok()?,
                text: line.text.clone(),
            })
        })
        .collect()
}

/// Every unmet requirement of the installed packages, described, by
/// package name; `tier` (the tier's requirements) only asks for extras.
fn unmet(
    installed: &HashMap<PackageName, Installed>,
    tier: &[Requires],
    env: &MarkerEnvironment,
) -> Vec<String> {
    // The extras asked of each package, grown until no requirement that
    // holds asks for a new one.
    let mut extras: HashMap<&PackageName, BTreeSet<ExtraName>> = HashMap::new();
    for root in tier.iter().filter(|r| r.parsed.marker.evaluate(env, &[])) {
        extras
            .entry(&root.parsed.name)
            .or_default()
            .extend(root.parsed.extras.iter().cloned());
    }
    loop {
        let mut asked: Vec<(&PackageName, &ExtraName)> = Vec::new();
        for (name, dist) in installed {
            let own: Vec<ExtraName> = extras
                .get(name)
                .map(|e| e.iter().cloned().collect())
                .unwrap_or_default();
            for req in &dist.requires {
                if req.parsed.marker.evaluate(env, &own) {
                    asked.extend(req.parsed.extras.iter().map(|e| (&req.parsed.name, e)));
                }
            }
        }
        let mut grew = false;
        for (name, extra) in asked {
            grew |= extras.entry(name).or_default().insert(extra.clone());
        }
        if !grew {
            break;
        }
    }

    let mut out = Vec::new();
    let mut names: Vec<&PackageName> = installed.keys().collect();
    names.sort();
    for name in names {
        let dist = &installed[name];
        let own: Vec<ExtraName> = extras
            .get(name)
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default();
        for req in &dist.requires {
            if !req.parsed.marker.evaluate(env, &own) {
                continue;
            }
            let Some(problem) = problem(installed, &req.parsed) else {
                continue;
            };
            // Say which extras brought the requirement in.
            let with = if req.parsed.marker.evaluate(env, &[]) {
                String::new()
            } else {
                let names: Vec<&str> = own.iter().map(ExtraName::as_ref).collect();
                format!(" [{}]", names.join(","))
            };
            out.push(format!(
                "{} {}{with} requires `{}`: {problem}",
                dist.name, dist.version, req.text
            ));
        }
    }
    out
}

/// Why `req` is not met by the selected distributions, if it is not.
fn problem(installed: &HashMap<PackageName, Installed>, req: &Requirement) -> Option<String> {
    let Some(dist) = installed.get(&req.name) else {
        return Some("the lock selects no such package".to_string());
    };
    match &req.version_or_url {
        Some(VersionOrUrl::VersionSpecifier(specifiers)) if !specifiers.contains(&dist.version) => {
            Some(format!("the lock selects {} {}", dist.name, dist.version))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> MarkerEnvironment {
        crate::interpreter::cpython_311_linux_markers()
    }

    fn dist(name: &str, version: &str, requires: &[&str]) -> (PackageName, Installed) {
        (
            PackageName::from_str(name).unwrap(),
            Installed {
                name: name.to_string(),
                version: Version::from_str(version).unwrap(),
                requires: requires
                    .iter()
                    .map(|text| Requires {
                        text: text.to_string(),
                        parsed: Requirement::from_str(text).unwrap(),
                    })
                    .collect(),
            },
        )
    }

    fn roots(texts: &[&str]) -> Vec<Requires> {
        texts
            .iter()
            .map(|text| Requires {
                text: text.to_string(),
                parsed: Requirement::from_str(text).unwrap(),
            })
            .collect()
    }

    #[test]
    fn missing_mismatched_and_extra_requirements() {
        let installed: HashMap<_, _> = [
            dist(
                "Requests",
                "2.32.3",
                &[
                    "urllib3<3,>=1.21.1",
                    "idna>=2.5",
                    "PySocks>=1.5.6; extra == 'socks'",
                ],
            ),
            dist("idna", "1.0", &[]),
            dist(
                "app",
                "1.0",
                &["requests[socks]", "old; python_version < '3'"],
            ),
            dist("local-ver", "2.1.0+cpu", &[]),
            dist("user", "1", &["local-ver==2.1.0", "pre>=1"]),
            dist("pre", "2.0rc1", &[]),
        ]
        .into_iter()
        .collect();
        // A tier requirement asks for extras; it is not itself checked.
        let problems = unmet(&installed, &roots(&["app", "gone>=1"]), &env());
        assert_eq!(
            problems,
            [
                "Requests 2.32.3 requires `urllib3<3,>=1.21.1`: the lock selects no such package",
                "Requests 2.32.3 requires `idna>=2.5`: the lock selects idna 1.0",
                "Requests 2.32.3 [socks] requires `PySocks>=1.5.6; extra == 'socks'`: the lock selects no such package",
            ]
        );
    }

    #[test]
    fn a_complete_closure_passes() {
        let installed: HashMap<_, _> = [
            dist("a", "1.0", &["b[x]>=1", "c; sys_platform == 'win32'"]),
            dist("b", "1.5", &["d==2.*; extra == 'x'", "e; extra == 'y'"]),
            dist("d", "2.3", &["a"]),
        ]
        .into_iter()
        .collect();
        assert!(
            unmet(
                &installed,
                &roots(&["a", "z; python_version < '3'"]),
                &env()
            )
            .is_empty()
        );
    }
}

//! Which tiers are resolved together (solve groups), and which are split
//! off when a group has no common solution.
//!
//! Tiers of one Python version and one `solve-group` (by default, all tiers
//! of tiers.toml) share versions: their union is resolved and its pins
//! constrain each tier. When the union has no solution, the smallest set of
//! tiers whose removal lets the rest resolve is split off (each tier alone
//! first, those uv's message names first; then, greedily, several), so one
//! outlier does not cost every other tier its sharing.

use std::collections::BTreeMap;

use crate::config::{Config, SolveGroup, Tier};
use crate::progress::Progress;

/// Tiers resolved together.
pub struct Group<'a> {
    pub python: String,
    pub name: SolveGroup,
    pub tiers: Vec<&'a Tier>,
}

/// The solve groups of a configuration; a `solve-group = false` tier is a
/// group of its own.
pub fn solve_groups(config: &Config) -> Vec<Group<'_>> {
    let mut groups: BTreeMap<(String, SolveGroup, String), Vec<&Tier>> = BTreeMap::new();
    for tier in config.tiers.values() {
        let alone = if tier.solve_group == SolveGroup::Alone {
            tier.name.clone()
        } else {
            String::new()
        };
        groups
            .entry((tier.python.clone(), tier.solve_group.clone(), alone))
            .or_default()
            .push(tier);
    }
    groups
        .into_iter()
        .map(|((python, name, _), tiers)| Group {
            python,
            name,
            tiers,
        })
        .collect()
}

/// The tiers `tier` shares versions with (itself included).
pub fn group_of<'a>(config: &'a Config, tier: &Tier) -> Vec<&'a Tier> {
    if tier.solve_group == SolveGroup::Alone {
        return config.tiers.get(&tier.name).into_iter().collect();
    }
    config
        .tiers
        .values()
        .filter(|t| t.python == tier.python && t.solve_group == tier.solve_group)
        .collect()
}

/// What resolving a group gave.
#[derive(Debug, Default)]
pub struct Resolution {
    /// Pins of the tiers that resolved together (`None`: no union).
    pub pins: Option<String>,
    /// Tiers split off and locked alone.
    pub split_off: Vec<String>,
    /// uv's account of the conflict, when there was one.
    pub conflict: Option<String>,
}

/// Resolves `tiers` together with `resolve` (which returns the union's pins
/// or uv's error); splits off the fewest tiers it can when there is no
/// common solution.
pub fn resolve_group(
    tiers: &[&Tier],
    mut resolve: impl FnMut(&[&Tier]) -> anyhow::Result<String>,
    progress: &dyn Progress,
) -> Resolution {
    let conflict = match resolve(tiers) {
        Ok(pins) => {
            return Resolution {
                pins: Some(pins),
                ..Resolution::default()
            };
        }
        Err(err) => format!("{err:#}"),
    };
    // Only a conflict is worth bisecting: an unreachable index fails every
    // attempt the same way, and each tier's own lock then says why.
    if !conflict.to_lowercase().contains("no solution found") {
        return Resolution {
            pins: None,
            split_off: tiers.iter().map(|t| t.name.clone()).collect(),
            conflict: Some(conflict),
        };
    }
    let suspects = suspects_in_order(tiers, &conflict);
    let mut attempt = |split: &[&str]| -> Option<Resolution> {
        let rest: Vec<&Tier> = tiers
            .iter()
            .copied()
            .filter(|t| !split.contains(&t.name.as_str()))
            .collect();
        progress.detail(&format!(
            "resolving without {}: {} tiers",
            split.join(", "),
            rest.len()
        ));
        let pins = if rest.len() < 2 {
            None
        } else {
            Some(resolve(&rest).ok()?)
        };
        Some(Resolution {
            pins,
            split_off: split.iter().map(|s| s.to_string()).collect(),
            conflict: Some(conflict.clone()),
        })
    };
    for suspect in &suspects {
        if let Some(found) = attempt(&[suspect.as_str()]) {
            return found;
        }
    }
    // No single tier: take suspects away one by one, most suspect first.
    let mut split: Vec<&str> = Vec::new();
    for suspect in suspects.iter().take(tiers.len().saturating_sub(2)) {
        split.push(suspect);
        if split.len() > 1
            && let Some(found) = attempt(&split)
        {
            return found;
        }
    }
    Resolution {
        pins: None,
        split_off: tiers.iter().map(|t| t.name.clone()).collect(),
        conflict: Some(conflict),
    }
}

/// Tiers ordered by how much of uv's error names them: a requirement of
/// theirs quoted as written, then their package names; fewer requirements
/// first among equals (a small outlier is the likelier one to split off).
fn suspects_in_order(tiers: &[&Tier], conflict: &str) -> Vec<String> {
    let text = conflict.to_lowercase();
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let mut scored: Vec<(usize, usize, usize, String)> = tiers
        .iter()
        .map(|tier| {
            let quoted = tier
                .requirements
                .iter()
                .chain(&tier.constraints)
                .filter(|r| {
                    let spec: String = r
                        .text
                        .to_lowercase()
                        .chars()
                        .filter(|c| !c.is_whitespace())
                        .collect();
                    spec != r.name && compact.contains(&spec)
                })
                .count();
            let named = tier
                .requirements
                .iter()
                .filter(|r| !r.name.is_empty() && mentions(&text, &r.name))
                .count();
            (
                usize::MAX - quoted,
                usize::MAX - named,
                tier.requirements.len(),
                tier.name.clone(),
            )
        })
        .collect();
    scored.sort();
    scored.into_iter().map(|(_, _, _, name)| name).collect()
}

/// Whether `name` appears in `text` as a whole package name.
fn mentions(text: &str, name: &str) -> bool {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        // A dot after the name may end uv's sentence.
        let continues = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_');
        !before.is_some_and(is_name_char) && !after.is_some_and(continues)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(text: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiers.toml");
        fs_err::write(&path, text).unwrap();
        Config::from_file(&path).unwrap()
    }

    /// A resolver that fails, saying `says`, while any of `culprits` is present.
    fn resolver<'a>(
        culprits: &'a [&'a str],
        says: &'a str,
        calls: &'a std::cell::Cell<usize>,
    ) -> impl FnMut(&[&Tier]) -> anyhow::Result<String> + 'a {
        move |tiers| {
            calls.set(calls.get() + 1);
            if tiers.iter().any(|t| culprits.contains(&t.name.as_str())) {
                anyhow::bail!("{says}")
            }
            Ok(format!("pins of {}", tiers.len()))
        }
    }

    #[test]
    fn groups_follow_python_and_solve_group() {
        let c = config(
            "[tiers.a]\nrequirements = [\"x\"]\n[tiers.b]\nrequirements = [\"x\"]\n\
             [tiers.c]\nrequirements = [\"x\"]\nsolve-group = \"ml\"\n\
             [tiers.d]\nrequirements = [\"x\"]\nsolve-group = \"ml\"\n\
             [tiers.e]\nrequirements = [\"x\"]\nsolve-group = false\n\
             [tiers.f]\nrequirements = [\"x\"]\nsolve-group = false\n",
        );
        let groups: Vec<Vec<&str>> = solve_groups(&c)
            .iter()
            .map(|g| g.tiers.iter().map(|t| t.name.as_str()).collect())
            .collect();
        assert_eq!(
            groups,
            vec![vec!["a", "b"], vec!["c", "d"], vec!["e"], vec!["f"]]
        );
        assert_eq!(group_of(&c, &c.tiers["e"]).len(), 1);
        assert_eq!(group_of(&c, &c.tiers["c"]).len(), 2);
    }

    #[test]
    fn a_bad_group_name_is_an_error_with_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiers.toml");
        fs_err::write(
            &path,
            "[tiers.a]\nrequirements = [\"x\"]\nsolve-group = \"a b\"\n",
        )
        .unwrap();
        let err = Config::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("tiers.toml:3"), "{err}");
        assert!(err.contains("solve-group"), "{err}");
    }

    #[test]
    fn the_one_outlier_named_by_uv_is_split_off() {
        let c = config(
            "[tiers.a]\nrequirements = [\"shared\"]\n[tiers.b]\nrequirements = [\"shared\"]\n\
             [tiers.c]\nrequirements = [\"shared\", \"other\"]\n\
             [tiers.old]\nrequirements = [\"websockets<12\"]\n",
        );
        let tiers: Vec<&Tier> = c.tiers.values().collect();
        let calls = std::cell::Cell::new(0);
        let says = "No solution found: because shared==1 depends on websockets>=12 and you \
                    require websockets<12, we can conclude the requirements are unsatisfiable";
        let resolution = resolve_group(
            &tiers,
            resolver(&["old"], says, &calls),
            &crate::progress::Silent,
        );
        assert_eq!(resolution.split_off, vec!["old"]);
        assert_eq!(resolution.pins.as_deref(), Some("pins of 3"));
        // The union, then straight to the tier whose requirement uv quoted.
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn two_outliers_that_conflict_only_together_are_both_split_off() {
        let c = config(
            "[tiers.a]\nrequirements = [\"p\"]\n[tiers.b]\nrequirements = [\"p\"]\n\
             [tiers.c]\nrequirements = [\"p\"]\n[tiers.x]\nrequirements = [\"q<1\"]\n\
             [tiers.y]\nrequirements = [\"r<1\"]\n",
        );
        let tiers: Vec<&Tier> = c.tiers.values().collect();
        let calls = std::cell::Cell::new(0);
        let says = "No solution found: you require q<1 and r<1, which conflict with p";
        let resolution = resolve_group(
            &tiers,
            resolver(&["x", "y"], says, &calls),
            &crate::progress::Silent,
        );
        let mut split = resolution.split_off.clone();
        split.sort();
        assert_eq!(split, vec!["x", "y"]);
        assert_eq!(resolution.pins.as_deref(), Some("pins of 3"));
    }

    #[test]
    fn package_names_match_whole_names_only() {
        assert!(mentions("you require websockets<12", "websockets"));
        assert!(!mentions("you require websockets-extra<12", "websockets"));
        assert!(!mentions("py-websockets==1", "websockets"));
    }
}

#[cfg(test)]
mod failure_tests {
    use super::*;

    #[test]
    fn a_failure_that_is_no_conflict_is_not_bisected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiers.toml");
        fs_err::write(
            &path,
            "[tiers.a]\nrequirements = [\"x\"]\n[tiers.b]\nrequirements = [\"y\"]\n[tiers.c]\nrequirements = [\"z\"]\n",
        )
        .unwrap();
        let c = Config::from_file(&path).unwrap();
        let tiers: Vec<&Tier> = c.tiers.values().collect();
        let mut calls = 0;
        let resolution = resolve_group(
            &tiers,
            |_| {
                calls += 1;
                anyhow::bail!("error: failed to fetch https://pypi.org/simple/x/")
            },
            &crate::progress::Silent,
        );
        assert_eq!(calls, 1);
        assert_eq!(resolution.split_off.len(), 3);
    }
}

//! gc's first step: what must live.
//!
//! Roots are what exists: every kept generation of every tier (its
//! distributions, and every object its manifest names), and the objects of
//! adopted venvs whose folder still exists. A lock roots nothing on its own.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Context;

use crate::materialize::generations::Generations;
use crate::materialize::manifest::Manifest;
use crate::materialize::plan::FileSource;
use crate::store::db::GenerationRow;
use crate::store::{ObjectKey, Store};

/// One tier's generations, sorted into kept and dropped.
pub struct TierGenerations {
    pub venv: String,
    pub generations: Generations,
    /// Recorded generations within the kept number (and the current one).
    pub kept: Vec<GenerationRow>,
    /// Recorded generations beyond the kept number.
    pub dropped: Vec<i64>,
    /// Generation directories no record knows (a crash between building and
    /// recording, or a record that is gone), other than the current one.
    pub unrecorded: Vec<i64>,
}

/// What gc must not delete, and the adopted venvs that stopped being roots.
pub struct Roots {
    pub tiers: Vec<TierGenerations>,
    /// Distributions of kept generations.
    pub distributions: HashSet<i64>,
    /// Objects the manifests of kept generations name: never deleted,
    /// whatever the index says of them.
    pub protected: HashSet<ObjectKey>,
    /// Adopted venvs whose folder is gone: forgotten, with their objects.
    pub vanished_adopted: Vec<String>,
}

/// Reads the roots from the index and the disk; changes nothing.
pub fn find_roots(store: &Store, keep_generations: usize) -> anyhow::Result<Roots> {
    let mut tiers = Vec::new();
    for tier in store.db.tiers()? {
        let generations = Generations::of(Path::new(&tier.venv))?;
        let recorded = store.db.generations(&tier.venv)?;
        let numbers: Vec<i64> = recorded.iter().map(|g| g.number).collect();
        let keep = generations.kept(&numbers, keep_generations);
        let (kept, dropped, unrecorded) = split_generations(
            recorded,
            &keep,
            &generations.on_disk(),
            generations.current(),
        );
        tiers.push(TierGenerations {
            venv: tier.venv,
            generations,
            kept,
            dropped,
            unrecorded,
        });
    }
    let mut distributions = HashSet::new();
    for tier in &tiers {
        for row in &tier.kept {
            let dists = store.db.generation_distributions(&tier.venv, row.number)?;
            distributions.extend(dists.iter().map(|d| d.id));
        }
    }
    let plans: Vec<&str> = tiers
        .iter()
        .flat_map(|t| &t.kept)
        .map(|row| row.plan.as_str())
        .collect();
    let protected = objects_in_manifests(store, &plans)?;
    let vanished_adopted = vanished_adopted(crate::upkeep::adopt::adopted_venvs(store)?);
    Ok(Roots {
        tiers,
        distributions,
        protected,
        vanished_adopted,
    })
}

/// Sorts a tier's `recorded` generations by the `keep` numbers into kept
/// rows and dropped numbers, and names the directories `on_disk` that no
/// record knows, sparing the `current` one.
pub fn split_generations(
    recorded: Vec<GenerationRow>,
    keep: &[i64],
    on_disk: &[i64],
    current: Option<i64>,
) -> (Vec<GenerationRow>, Vec<i64>, Vec<i64>) {
    let unrecorded = on_disk
        .iter()
        .copied()
        .filter(|n| !recorded.iter().any(|g| g.number == *n) && Some(*n) != current)
        .collect();
    let (kept, dropped): (Vec<_>, Vec<_>) =
        recorded.into_iter().partition(|g| keep.contains(&g.number));
    let dropped = dropped.into_iter().map(|g| g.number).collect();
    (kept, dropped, unrecorded)
}

/// Adopted venvs (path, whether its folder still exists) whose folder is gone.
pub fn vanished_adopted(adopted: Vec<(String, bool)>) -> Vec<String> {
    adopted
        .into_iter()
        .filter(|(_, exists)| !exists)
        .map(|(path, _)| path)
        .collect()
}

/// Every object the manifests of these plans name.
fn objects_in_manifests(store: &Store, plans: &[&str]) -> anyhow::Result<HashSet<ObjectKey>> {
    let mut keys = HashSet::new();
    for plan in plans {
        // A kept generation without its manifest: the index cannot be
        // checked against it, so nothing is collected.
        let manifest = Manifest::load(store, plan).with_context(|| {
            format!("gc needs the manifest of every kept generation, and {plan}'s is unreadable")
        })?;
        keys.extend(manifest.files.iter().filter_map(|f| match &f.source {
            FileSource::Object(key) => Some(*key),
            _ => None,
        }));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::LinkMethod;

    fn row(number: i64) -> GenerationRow {
        GenerationRow {
            venv: "/v/t".into(),
            number,
            path: format!("/v/.tstore-generations/t/{number}"),
            plan: format!("plan{number}"),
            lock: format!("/s/lock{number}.toml"),
            link_method: LinkMethod::Hardlink,
            created_at: 0,
        }
    }

    #[test]
    fn generations_beyond_the_kept_number_and_strays_go_but_never_the_current_one() {
        let recorded = vec![row(1), row(2), row(3)];
        // 5 is current (its link points at it) but was never recorded.
        let (kept, dropped, unrecorded) =
            split_generations(recorded, &[3], &[1, 2, 3, 4, 5], Some(5));
        assert_eq!(kept, vec![row(3)]);
        assert_eq!(dropped, vec![1, 2]);
        assert_eq!(unrecorded, vec![4]);
    }

    #[test]
    fn adopted_venvs_that_vanished_stop_being_roots() {
        let adopted = vec![("/here".to_string(), true), ("/gone".to_string(), false)];
        assert_eq!(vanished_adopted(adopted), vec!["/gone".to_string()]);
    }
}

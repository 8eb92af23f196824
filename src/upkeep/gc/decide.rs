//! gc's second step: what to delete, decided from what the index and the
//! disk say. Pure: no reads, no writes.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

use super::roots::Roots;
use crate::store::ObjectKey;
use crate::store::db::{DistributionRow, ObjectRow};

/// What the index and the disk hold once unrooted distributions (and
/// vanished adopted venvs) are forgotten.
#[derive(Debug, Default)]
pub struct Census {
    /// Objects nothing in the index refers to any more: no file, no
    /// bytecode of a used source, no adopted venv.
    pub orphans: Vec<ObjectRow>,
    /// Objects the index still records.
    pub recorded: HashSet<ObjectKey>,
    /// Every file in the object shards, with its name.
    pub object_files: Vec<(PathBuf, String)>,
    /// Every file in `manifests/`, with its name.
    pub manifests: Vec<(PathBuf, String)>,
    /// Every file in `lock-snapshots/`.
    pub lock_snapshots: Vec<PathBuf>,
    /// Temp entries of processes that are gone (or older than a day).
    pub stale_temps: Vec<PathBuf>,
}

/// What gc deletes (beyond generations, which [`Roots`] sorts).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Doomed {
    /// Orphaned objects no kept manifest names.
    pub objects: Vec<ObjectKey>,
    /// Object files no record knows (a crash between publishing and
    /// recording), unless a kept manifest names them.
    pub stray_objects: Vec<PathBuf>,
    /// Orphaned objects a kept manifest names: kept, and recorded again.
    pub spared: Vec<ObjectRow>,
    /// Manifests of generations no longer kept.
    pub manifests: Vec<PathBuf>,
    /// Saved locks of generations no longer kept.
    pub lock_snapshots: Vec<PathBuf>,
    pub temps: Vec<PathBuf>,
}

/// Distributions in no kept generation, by id, each once. A lock naming a
/// distribution does not keep it.
pub fn doomed_distributions(all: &[DistributionRow], rooted: &HashSet<i64>) -> Vec<i64> {
    all.iter()
        .map(|d| d.id)
        .filter(|id| !rooted.contains(id))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

pub fn decide(roots: &Roots, census: &Census) -> Doomed {
    let (spared, doomed): (Vec<ObjectRow>, Vec<ObjectRow>) = census
        .orphans
        .iter()
        .partition(|o| roots.protected.contains(&o.key));
    let orphan_names: HashSet<String> = census.orphans.iter().map(|o| o.key.to_string()).collect();
    let stray_objects = census
        .object_files
        .iter()
        .filter(|(_, name)| {
            // Names compare as text: a file named by a key in another
            // spelling than the store writes is no object of it.
            let key = ObjectKey::parse(name).filter(|key| key.to_string() == *name);
            let known = key.is_some_and(|key| {
                census.recorded.contains(&key) || roots.protected.contains(&key)
            });
            !known && !orphan_names.contains(name)
        })
        .map(|(path, _)| path.clone())
        .collect();

    let kept = roots.tiers.iter().flat_map(|t| &t.kept);
    let plans: HashSet<&str> = kept.clone().map(|g| g.plan.as_str()).collect();
    let snapshots: HashSet<PathBuf> = kept.map(|g| PathBuf::from(&g.lock)).collect();
    let manifests = census
        .manifests
        .iter()
        .filter(|(_, name)| !plans.contains(crate::store::plan_of_manifest(name)))
        .map(|(path, _)| path.clone())
        .collect();
    let lock_snapshots = census
        .lock_snapshots
        .iter()
        .filter(|path| !snapshots.contains(*path))
        .cloned()
        .collect();
    Doomed {
        objects: doomed.into_iter().map(|o| o.key).collect(),
        stray_objects,
        spared,
        manifests,
        lock_snapshots,
        temps: census.stale_temps.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::link::LinkMethod;
    use crate::materialize::generations::Generations;
    use crate::store::db::GenerationRow;
    use crate::upkeep::gc::roots::TierGenerations;

    fn key(byte: u8) -> ObjectKey {
        ObjectKey {
            hash: [byte; 32],
            executable: false,
        }
    }

    fn object(byte: u8) -> ObjectRow {
        ObjectRow {
            key: key(byte),
            size: 1,
        }
    }

    fn object_file(byte: u8) -> (PathBuf, String) {
        let name = key(byte).to_string();
        (
            PathBuf::from(format!("/store/objects/{}", &name[..2])).join(&name),
            name,
        )
    }

    /// Roots with one tier keeping one generation (plan `kept`, lock
    /// `/s/kept.toml`) whose manifest names `protected`.
    fn roots(protected: &[ObjectKey]) -> Roots {
        Roots {
            tiers: vec![TierGenerations {
                venv: "/v/t".into(),
                generations: Generations::of(Path::new("/v/t")).unwrap(),
                kept: vec![GenerationRow {
                    venv: "/v/t".into(),
                    number: 2,
                    path: "/v/.tstore-generations/t/2".into(),
                    plan: "kept".into(),
                    lock: "/s/kept.toml".into(),
                    link_method: LinkMethod::Hardlink,
                    created_at: 0,
                }],
                dropped: vec![1],
                unrecorded: vec![],
            }],
            distributions: HashSet::new(),
            protected: protected.iter().copied().collect(),
            vanished_adopted: vec![],
        }
    }

    #[test]
    fn a_kept_generations_manifest_objects_are_never_deleted() {
        let census = Census {
            // 1 and 2 lost their last file; the kept manifest names 1.
            orphans: vec![object(1), object(2)],
            recorded: [key(5)].into_iter().collect(),
            // 3 is unrecorded but named by the manifest; 4 is unrecorded;
            // 5 is recorded; 1 and 2 are orphans, handled as such.
            object_files: [1, 2, 3, 4, 5].map(object_file).to_vec(),
            ..Census::default()
        };
        let doomed = decide(&roots(&[key(1), key(3)]), &census);
        assert_eq!(doomed.objects, vec![key(2)]);
        assert_eq!(doomed.spared, vec![object(1)]);
        assert_eq!(doomed.stray_objects, vec![object_file(4).0]);
    }

    #[test]
    fn unkept_lock_snapshots_and_manifests_go() {
        let census = Census {
            manifests: vec![
                (
                    "/store/manifests/kept.json.zst".into(),
                    "kept.json.zst".into(),
                ),
                (
                    "/store/manifests/old.json.zst".into(),
                    "old.json.zst".into(),
                ),
                // Plain manifests of an older tstore count the same.
                ("/store/manifests/kept.json".into(), "kept.json".into()),
                ("/store/manifests/old.json".into(), "old.json".into()),
            ],
            lock_snapshots: vec!["/s/kept.toml".into(), "/s/old.toml".into()],
            ..Census::default()
        };
        let doomed = decide(&roots(&[]), &census);
        assert_eq!(
            doomed.manifests,
            vec![
                PathBuf::from("/store/manifests/old.json.zst"),
                PathBuf::from("/store/manifests/old.json")
            ]
        );
        assert_eq!(doomed.lock_snapshots, vec![PathBuf::from("/s/old.toml")]);
    }

    #[test]
    fn locks_root_nothing_only_kept_generations_do() {
        let dist = |id| DistributionRow {
            id,
            sha256: format!("{id}"),
            built_from: None,
        };
        // 3 is named by a tier's lock but by no kept generation; a
        // distribution built from two sdists appears twice.
        let all = vec![dist(3), dist(1), dist(2), dist(3)];
        let rooted = [2].into_iter().collect();
        assert_eq!(doomed_distributions(&all, &rooted), vec![1, 3]);
    }
}

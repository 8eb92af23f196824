//! Remote gc: what no recent root uses goes.
//!
//! A root (`roots/<lock sha256>.json`) is kept while it was pushed within
//! the last N days; the distributions its lock names (wheels by sha256,
//! sdists through `builds/`) are kept with their packs, records and
//! bytecode. Everything else that is itself older than N days is deleted:
//! a concurrent push's packs are younger than its root-to-be, so they stay.

use std::collections::{BTreeMap, HashSet};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectMeta;
use serde::Serialize;

use super::{BuildRecord, LAYOUT_FILE, Remote, RootRecord};

/// The remote's roots, split by age.
#[derive(Debug, Default)]
pub struct Roots {
    /// Pushed within the cutoff, with their lock text.
    pub kept: Vec<(RootRecord, String)>,
    pub expired: Vec<RootRecord>,
}

/// What a remote gc found, deleted or would delete.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RemoteGcReport {
    pub roots_kept: usize,
    pub roots_expired: usize,
    pub distributions_kept: usize,
    /// Distributions whose pack and records go.
    pub distributions_freed: usize,
    /// Files that go (packs, records, locks, roots).
    pub files_freed: usize,
    pub bytes_freed: u64,
    /// False for a dry run.
    pub deleted: bool,
}

/// What a gc keeps: wheels and sdists (by sha256) that kept roots' locks name.
#[derive(Debug, Default)]
pub struct Keep {
    pub wheels: HashSet<String>,
    pub sdists: HashSet<String>,
}

/// What a file under the prefix is, for gc.
enum Kind {
    /// A pack or record of the distribution with this wheel sha256.
    Distribution(String),
    /// `builds/<sdist sha256>.json`.
    Build(String),
    /// `locks/`, `roots/` or `tiers/` of a lock with this sha256 (`tiers/`:
    /// found by reading it).
    Lock(String),
    Tier,
    Other,
}

fn kind_of(relative: &str) -> Kind {
    let stem = |name: &str, ext: &str| name.strip_suffix(ext).map(str::to_string);
    let parts: Vec<&str> = relative.split('/').collect();
    match parts.as_slice() {
        ["distributions", name] => stem(name, ".json").map_or(Kind::Other, Kind::Distribution),
        ["packs", name] => stem(name, ".tar.zst").map_or(Kind::Other, Kind::Distribution),
        ["bytecode", _, name] => stem(name, ".json")
            .or_else(|| stem(name, ".tar.zst"))
            .map_or(Kind::Other, Kind::Distribution),
        ["builds", name] => stem(name, ".json").map_or(Kind::Other, Kind::Build),
        ["locks", name] => stem(name, ".toml").map_or(Kind::Other, Kind::Lock),
        ["roots", name] => stem(name, ".json").map_or(Kind::Other, Kind::Lock),
        ["tiers", _] => Kind::Tier,
        _ => Kind::Other,
    }
}

impl Remote {
    /// Lists the remote's roots; those pushed at or after `cutoff_unix`
    /// come with their lock's text.
    pub fn roots(&self, cutoff_unix: u64) -> anyhow::Result<Roots> {
        self.runtime.block_on(async {
            self.require_layout().await?;
            let listed = self.list("roots").await?;
            let mut roots = Roots::default();
            for meta in listed {
                let key = self.relative(&meta);
                let Some(root) = self.get_json::<RootRecord>(&key).await? else {
                    continue;
                };
                if !super::is_sha256(&root.lock_sha256) {
                    anyhow::bail!(
                        "{}/{key} is damaged (its lock_sha256 is not a sha256); delete it",
                        self.url
                    );
                }
                if root.pushed_unix >= cutoff_unix {
                    let lock_key = format!("locks/{}.toml", root.lock_sha256);
                    let text = self.get_bytes(&lock_key).await?.with_context(|| {
                        format!("{}/{key} names {lock_key}, which is missing", self.url)
                    })?;
                    roots
                        .kept
                        .push((root, String::from_utf8_lossy(&text).into_owned()));
                } else {
                    roots.expired.push(root);
                }
            }
            Ok(roots)
        })
    }

    /// Deletes (or with `delete` false, counts) what `keep` does not name
    /// and is older than `cutoff_unix`, and the expired roots' locks.
    pub fn gc(
        &self,
        roots: &Roots,
        keep: &Keep,
        cutoff_unix: u64,
        delete: bool,
    ) -> anyhow::Result<RemoteGcReport> {
        self.runtime.block_on(async {
            self.require_layout().await?;
            let files = self.list("").await?;
            let old =
                |meta: &ObjectMeta| (meta.last_modified.timestamp().max(0) as u64) < cutoff_unix;
            let kept_locks: HashSet<&str> = roots
                .kept
                .iter()
                .map(|(r, _)| r.lock_sha256.as_str())
                .collect();

            // Wheels kept: those named, and those kept sdists were built into.
            let mut wheels = keep.wheels.clone();
            let mut builds: BTreeMap<String, ObjectMeta> = BTreeMap::new();
            for meta in &files {
                if let Kind::Build(sdist) = kind_of(&self.relative(meta)) {
                    if keep.sdists.contains(&sdist)
                        && let Some(build) =
                            self.get_json::<BuildRecord>(&self.relative(meta)).await?
                    {
                        wheels.insert(build.sha256);
                    } else {
                        builds.insert(sdist, meta.clone());
                    }
                }
            }

            let mut report = RemoteGcReport {
                roots_kept: roots.kept.len(),
                roots_expired: roots.expired.len(),
                deleted: delete,
                ..RemoteGcReport::default()
            };
            let mut doomed: Vec<&ObjectMeta> = builds.values().filter(|m| old(m)).collect();
            let mut kept_dists = HashSet::new();
            let mut freed_dists = HashSet::new();
            for meta in &files {
                let relative = self.relative(meta);
                let goes = match kind_of(&relative) {
                    Kind::Distribution(sha256) => {
                        if wheels.contains(&sha256) {
                            kept_dists.insert(sha256);
                            false
                        } else if old(meta) {
                            if relative.starts_with("distributions/") {
                                freed_dists.insert(sha256);
                            }
                            true
                        } else {
                            false
                        }
                    }
                    Kind::Lock(sha256) => !kept_locks.contains(sha256.as_str()) && old(meta),
                    Kind::Tier => match self.get_json::<RootRecord>(&relative).await? {
                        Some(root) => !kept_locks.contains(root.lock_sha256.as_str()) && old(meta),
                        None => false,
                    },
                    Kind::Build(_) | Kind::Other => false,
                };
                if goes {
                    doomed.push(meta);
                }
            }
            report.distributions_kept = kept_dists.len();
            report.distributions_freed = freed_dists.len();
            report.files_freed = doomed.len();
            report.bytes_freed = doomed.iter().map(|m| m.size).sum();
            if delete {
                // Records before packs: a reader never finds a record
                // whose pack is gone.
                doomed.sort_by_key(|m| !self.relative(m).ends_with(".json"));
                for meta in doomed {
                    self.store
                        .delete(&meta.location)
                        .await
                        .with_context(|| self.write_failed(&self.relative(meta)))?;
                }
            }
            Ok(report)
        })
    }

    /// Fails unless the remote names this tstore's layout.
    async fn require_layout(&self) -> anyhow::Result<()> {
        if self.layout().await?.is_none() {
            anyhow::bail!(
                "{} has no {LAYOUT_FILE}: it is empty or not a tstore remote of this version",
                self.url
            );
        }
        Ok(())
    }

    /// Every file under `dir` of the prefix (`""`: all of it).
    async fn list(&self, dir: &str) -> anyhow::Result<Vec<ObjectMeta>> {
        let path = match (self.prefix.is_empty(), dir.is_empty()) {
            (true, true) => None,
            (true, false) => Some(object_store::path::Path::from(dir)),
            (false, true) => Some(object_store::path::Path::from(self.prefix.as_str())),
            (false, false) => Some(self.path(dir)),
        };
        let cannot = || {
            if self.over_http {
                format!(
                    "cannot list {}: an http(s) remote cannot be listed; run `tstore remote gc` \
                     against the folder (file://) or bucket (s3://) it serves",
                    self.url
                )
            } else {
                format!("cannot list {}", self.url)
            }
        };
        let listed: Vec<ObjectMeta> = self
            .store
            .list(path.as_ref())
            .map(|r| r.map_err(anyhow::Error::new))
            .try_collect()
            .await
            .with_context(cannot)?;
        Ok(listed)
    }

    /// A listed file's key relative to the prefix.
    fn relative(&self, meta: &ObjectMeta) -> String {
        let full = meta.location.as_ref();
        if self.prefix.is_empty() {
            full.to_string()
        } else {
            full.strip_prefix(&format!("{}/", self.prefix))
                .unwrap_or(full)
                .to_string()
        }
    }
}

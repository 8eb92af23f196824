//! What tiers need from other stores (a pull before fetching) and give to
//! them (export, push).

use crate::config::Tier;
use crate::dist::{Selected, Source};
use crate::interpreter::Interpreter;
use crate::lock::PyLock;
use crate::progress::Progress;
use crate::transfer::remote::gc::{Keep, RemoteGcReport};
use crate::transfer::remote::{RootRecord, TransferReport};
use crate::transfer::{self, Needed};

use super::Workspace;

/// Tiers that pull with the same bytecode tag (one interpreter) and what
/// they select, each distribution once.
pub struct PullGroup {
    pub tiers: Vec<String>,
    pub tag: Option<String>,
    pub selected: Vec<Selected>,
}

/// The tiers' locks (name, text) and what their selections need from the store.
pub struct TiersNeed {
    pub locks: Vec<(String, String)>,
    pub needed: Needed,
}

impl Workspace {
    /// Pulls from the remote, if one is configured, what `selected` names
    /// and the store lacks, with bytecode for `bytecode_tag` (see
    /// [`bytecode_tag`]). Refused objects are reported as notices.
    pub fn pull_missing(
        &self,
        selected: &[Selected],
        bytecode_tag: Option<&str>,
        progress: &dyn Progress,
    ) -> anyhow::Result<TransferReport> {
        let Some(remote) = self.remote()? else {
            return Ok(TransferReport::default());
        };
        let mut missing = Vec::new();
        for item in selected {
            let local = matches!(item.source, Source::Local { .. });
            if !local && transfer::stored_distribution(&self.store, item)?.is_none() {
                missing.push(item);
            }
        }
        if missing.is_empty() {
            return Ok(TransferReport::default());
        }
        let report = remote.pull(&self.store, &missing, bytecode_tag, progress)?;
        for problem in &report.refused {
            progress.notice(&format!("refused: {problem}"));
        }
        Ok(report)
    }

    /// What `tiers` select, grouped for pulling: one pull per group brings
    /// every tier's packs together, so that into a new store all their
    /// objects go into staged shards (see [`crate::store::stage`]), where a
    /// pull per tier staged only the first tier's.
    pub fn pull_groups(
        &self,
        tiers: &[&Tier],
        progress: &dyn Progress,
    ) -> anyhow::Result<Vec<PullGroup>> {
        let mut groups: Vec<PullGroup> = Vec::new();
        for tier in tiers {
            let selection = self.select(tier, progress)?;
            let tag = bytecode_tag(tier, &selection.interpreter);
            let index = match groups.iter().position(|g| g.tag == tag) {
                Some(index) => index,
                None => {
                    groups.push(PullGroup {
                        tiers: Vec::new(),
                        tag,
                        selected: Vec::new(),
                    });
                    groups.len() - 1
                }
            };
            let group = &mut groups[index];
            group.tiers.push(tier.name.clone());
            for item in selection.selected {
                if !group.selected.contains(&item) {
                    group.selected.push(item);
                }
            }
        }
        Ok(groups)
    }

    /// Takes `tier`'s lock from the remote when it has none here: the lock
    /// the tier was last pushed with. Returns that push's root, or `None`
    /// when the tier has a lock, no remote is configured, or the remote
    /// has no lock of it.
    pub fn lock_from_remote(&self, tier: &Tier) -> anyhow::Result<Option<RootRecord>> {
        let path = self.lock_path(&tier.name);
        if path.is_file() {
            return Ok(None);
        }
        let Some(remote) = self.remote()? else {
            return Ok(None);
        };
        let Some(lock) = remote.lock_of(&tier.name)? else {
            return Ok(None);
        };
        transfer::write_lock_if_absent(&path, &lock.text)?;
        Ok(Some(lock.root))
    }

    /// Takes from the remote the lock of each of `tiers` that has none
    /// here, saying so ([`Workspace::lock_from_remote`]). A remote that
    /// cannot answer is a notice: such a tier is then locked as without one.
    pub fn take_missing_locks(&self, tiers: &[&Tier], progress: &dyn Progress) {
        for tier in tiers {
            match self.lock_from_remote(tier) {
                Ok(Some(root)) => progress.notice(&format!(
                    "tier `{}` had no lock here: took the one it was pushed with to {} \
                     (sha256 {}) into {}",
                    tier.name,
                    self.remote()
                        .ok()
                        .flatten()
                        .map_or("the remote", |r| r.url()),
                    &root.lock_sha256[..12.min(root.lock_sha256.len())],
                    self.lock_path(&tier.name).display()
                )),
                Ok(None) => {}
                Err(err) => progress.notice(&format!(
                    "cannot take the lock of `{}` from the remote: {err:#}",
                    tier.name
                )),
            }
        }
    }

    /// Deletes from the remote (or, unless `delete`, counts) the packs and
    /// records no root pushed within `keep_days` days uses.
    pub fn remote_gc(&self, keep_days: u64, delete: bool) -> anyhow::Result<RemoteGcReport> {
        let remote = self.remote()?.ok_or_else(|| {
            anyhow::anyhow!(
                "no remote store: give --remote URL, set TSTORE_REMOTE, or set `remote` in tiers.toml"
            )
        })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let cutoff = now.saturating_sub(keep_days.saturating_mul(86_400));
        let roots = remote.roots(cutoff)?;
        let mut keep = Keep::default();
        for (root, text) in &roots.kept {
            let where_ = std::path::PathBuf::from(format!(
                "{}/locks/{}.toml",
                remote.url(),
                root.lock_sha256
            ));
            let lock = PyLock::parse(text, &where_)?;
            for package in &lock.packages {
                for wheel in &package.wheels {
                    if let Some(sha256) = wheel.hashes.get("sha256") {
                        keep.wheels.insert(sha256.clone());
                    }
                }
                if let Some(sha256) = package.sdist.as_ref().and_then(|s| s.hashes.get("sha256")) {
                    keep.sdists.insert(sha256.clone());
                }
            }
        }
        remote.gc(&roots, &keep, cutoff, delete)
    }

    /// What `tiers` need from the store, with their locks, for this
    /// machine's interpreter. Fails naming what the store lacks.
    pub fn needed_by(&self, tiers: &[&Tier], progress: &dyn Progress) -> anyhow::Result<TiersNeed> {
        let mut ids = Vec::new();
        let mut lacking = Vec::new();
        let mut locks = Vec::new();
        for tier in tiers {
            let lock_path = self.existing_lock(tier)?;
            for item in &self.select(tier, progress)?.selected {
                match transfer::stored_distribution(&self.store, item)? {
                    Some(id) => ids.push(id),
                    None => lacking.push(format!("{} {} ({})", item.name, item.version, tier.name)),
                }
            }
            locks.push((tier.name.clone(), fs_err::read_to_string(&lock_path)?));
        }
        if !lacking.is_empty() {
            anyhow::bail!(
                "the store lacks {} distribution(s) these tiers need: {}. Run `tstore fetch` for \
                 those tiers first",
                lacking.len(),
                first_few(&lacking, 8)
            );
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(TiersNeed {
            locks,
            needed: transfer::needed(&self.store, &ids)?,
        })
    }
}

/// The bytecode a pull brings along for `tier`: its interpreter's, when
/// the tier links pycs (compiled or lazy).
pub fn bytecode_tag(tier: &Tier, interpreter: &Interpreter) -> Option<String> {
    tier.compile_bytecode
        .links_pycs()
        .then(|| interpreter.bytecode_tag())
        .flatten()
}

/// The first `shown` items, then how many more there are.
fn first_few(items: &[String], shown: usize) -> String {
    let shown = items.len().min(shown);
    let mut text = items[..shown].join(", ");
    if items.len() > shown {
        text.push_str(&format!(" and {} more", items.len() - shown));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::first_few;

    #[test]
    fn first_few_names_how_many_are_left_out() {
        let items: Vec<String> = (1..=10).map(|i| format!("p{i}")).collect();
        assert_eq!(first_few(&items[..2], 8), "p1, p2");
        assert_eq!(
            first_few(&items, 8),
            "p1, p2, p3, p4, p5, p6, p7, p8 and 2 more"
        );
    }
}

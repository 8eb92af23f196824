//! Push: the packs and records of what some tiers need, and their locks.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use sha2::Digest;

use super::{
    BuildRecord, BytecodeRecord, DistributionRecord, LAYOUT_FILE, LAYOUT_FORMAT, LAYOUT_VERSION,
    LayoutRecord, PARALLEL, PARALLEL_PACKS, Remote, RootRecord, TransferReport, in_parallel,
};
use crate::progress::Progress;
use crate::store::Store;
use crate::transfer::pack::{self, PackRef};
use crate::transfer::{BytecodeEntry, DistributionEntry, Needed};

/// One pack and the record that describes it.
struct Unit<'a> {
    record: String,
    pack: String,
    objects: BTreeMap<String, u64>,
    kind: Kind<'a>,
}

enum Kind<'a> {
    Distribution(&'a DistributionEntry),
    Bytecode(Vec<&'a BytecodeEntry>),
}

impl Unit<'_> {
    fn record_json(&self, pack: Option<PackRef>) -> anyhow::Result<Vec<u8>> {
        let objects = self.objects.clone();
        Ok(match &self.kind {
            Kind::Distribution(dist) => serde_json::to_vec_pretty(&DistributionRecord {
                distribution: (*dist).clone(),
                objects,
                pack,
            })?,
            Kind::Bytecode(entries) => {
                let mut entries: Vec<BytecodeEntry> =
                    entries.iter().map(|e| (*e).clone()).collect();
                entries.sort();
                serde_json::to_vec_pretty(&BytecodeRecord {
                    entries,
                    objects,
                    pack,
                })?
            }
        })
    }
}

impl Remote {
    /// Uploads what `needed` holds and the remote lacks, a pack and its
    /// record per distribution (and per distribution and bytecode tag),
    /// records last; then `locks` (tier name, lock text) as roots.
    pub fn push(
        &self,
        local: &Store,
        needed: &Needed,
        locks: &[(String, String)],
        progress: &dyn Progress,
    ) -> anyhow::Result<TransferReport> {
        let units = units_of(needed);
        let mut report = TransferReport::default();
        let layout = self.runtime.block_on(self.layout())?;
        progress.start("checking the remote", units.len() as u64, 0);
        let present: Vec<bool> = self.runtime.block_on(
            futures::stream::iter(units.iter())
                .map(|unit| async move {
                    let present = self.exists(&unit.record).await;
                    progress.item_done("");
                    present
                })
                .buffered(PARALLEL)
                .try_collect(),
        )?;
        progress.finish();
        if layout.is_none() && present.iter().any(|p| *p) {
            // Records without a layout file: an older tstore's remote, or a
            // pusher that started this one since we looked (it writes the
            // file before any record).
            if self.runtime.block_on(self.layout())?.is_none() {
                return Err(self.unversioned());
            }
        } else if layout.is_none() {
            self.runtime.block_on(self.put_json(
                LAYOUT_FILE,
                &LayoutRecord {
                    format: LAYOUT_FORMAT.into(),
                    version: LAYOUT_VERSION,
                },
            ))?;
        }
        let missing: Vec<&Unit> = units
            .iter()
            .zip(&present)
            .filter_map(|(unit, present)| (!present).then_some(unit))
            .collect();
        report.packs_skipped = units.len() - missing.len();
        let bytes: u64 = missing.iter().flat_map(|u| u.objects.values()).sum();
        progress.start("pushing", missing.len() as u64, bytes);
        let handle = self.runtime.handle();
        let sent = in_parallel(&missing, PARALLEL_PACKS, |unit| {
            let sent = self.send(local, unit, handle);
            progress.bytes(unit.objects.values().sum());
            progress.item_done("");
            sent
        });
        progress.finish();
        for (unit, sent) in missing.iter().zip(sent) {
            let size = sent?;
            report.packs_moved += usize::from(size.is_some());
            report.bytes_moved += size.unwrap_or(0);
            report.objects_moved += unit.objects.len();
            if matches!(unit.kind, Kind::Distribution(_)) {
                report.distributions_moved += 1;
            }
        }
        self.runtime.block_on(async {
            self.push_builds(needed).await?;
            self.push_roots(locks, &mut report).await
        })?;
        Ok(report)
    }

    /// Builds the unit's pack in the store's tmp, uploads it, then its
    /// record. Returns the pack's size (`None`: no objects, no pack).
    fn send(
        &self,
        local: &Store,
        unit: &Unit,
        handle: &tokio::runtime::Handle,
    ) -> anyhow::Result<Option<u64>> {
        if unit.objects.is_empty() {
            handle.block_on(self.put_bytes(&unit.record, unit.record_json(None)?))?;
            return Ok(None);
        }
        let temp = local.temp_path("pack");
        let built = pack::write(local, &unit.objects, &temp);
        let uploaded = built.and_then(|made| {
            handle.block_on(self.put_file(&unit.pack, &temp, made.size))?;
            Ok(made)
        });
        let _ = std::fs::remove_file(&temp);
        let made = uploaded?;
        let size = made.size;
        // The record last: whoever reads it finds its pack.
        handle.block_on(self.put_bytes(&unit.record, unit.record_json(Some(made))?))?;
        Ok(Some(size))
    }

    /// Which wheel each sdist built: a pull of an sdist finds its wheel.
    async fn push_builds(&self, needed: &Needed) -> anyhow::Result<()> {
        futures::stream::iter(needed.distributions.iter().filter_map(|dist| {
            let from = dist.details.built_from.as_ref()?;
            (!from.starts_with("local-")).then_some((from, &dist.details.sha256))
        }))
        .map(|(from, sha256)| async move {
            let key = format!("builds/{from}.json");
            if !self.exists(&key).await? {
                self.put_json(
                    &key,
                    &BuildRecord {
                        sha256: sha256.clone(),
                    },
                )
                .await?;
            }
            anyhow::Ok(())
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await?;
        Ok(())
    }

    /// Each lock, its root (which tier, when) and the tier's pointer to it.
    async fn push_roots(
        &self,
        locks: &[(String, String)],
        report: &mut TransferReport,
    ) -> anyhow::Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for (tier, text) in locks {
            let sha256 = hex::encode(sha2::Sha256::digest(text.as_bytes()));
            let lock_key = format!("locks/{sha256}.toml");
            if !self.exists(&lock_key).await? {
                self.put_bytes(&lock_key, text.as_bytes().to_vec()).await?;
            }
            let root = RootRecord {
                tier: tier.clone(),
                lock_sha256: sha256.clone(),
                pushed_unix: now,
            };
            self.put_json(&format!("roots/{sha256}.json"), &root)
                .await?;
            self.put_json(&format!("tiers/{tier}.json"), &root).await?;
            report.locks_pushed.push(tier.clone());
        }
        Ok(())
    }
}

/// The packs `needed` makes: one per distribution, one per distribution
/// and bytecode tag.
fn units_of(needed: &Needed) -> Vec<Unit<'_>> {
    let mut units = Vec::new();
    for dist in &needed.distributions {
        let sha256 = &dist.details.sha256;
        units.push(Unit {
            record: format!("distributions/{sha256}.json"),
            pack: format!("packs/{sha256}.tar.zst"),
            objects: dist
                .files
                .iter()
                .filter_map(|f| Some((f.object.clone()?, f.size)))
                .collect(),
            kind: Kind::Distribution(dist),
        });
    }
    for ((tag, sha256), entries) in bytecode_by_wheel(needed) {
        let objects = entries
            .iter()
            .filter_map(|e| {
                let key = e.pyc.as_ref()?;
                Some((key.clone(), *needed.objects.get(key)?))
            })
            .collect();
        units.push(Unit {
            record: format!("bytecode/{tag}/{sha256}.json"),
            pack: format!("bytecode/{tag}/{sha256}.tar.zst"),
            objects,
            kind: Kind::Bytecode(entries),
        });
    }
    units
}

/// Bytecode entries of `needed` grouped by (tag, wheel sha256): each
/// distribution's `.py` files' entries, once each.
fn bytecode_by_wheel(needed: &Needed) -> BTreeMap<(&str, &str), Vec<&BytecodeEntry>> {
    let mut bytecode: BTreeMap<(&str, &str), Vec<&BytecodeEntry>> = BTreeMap::new();
    let by_source: BTreeMap<&str, Vec<&BytecodeEntry>> =
        needed.bytecode.iter().fold(BTreeMap::new(), |mut map, b| {
            map.entry(b.source.as_str())
                .or_insert_with(Vec::new)
                .push(b);
            map
        });
    for dist in &needed.distributions {
        for file in &dist.files {
            let source = file
                .object
                .as_deref()
                .unwrap_or(crate::store::db::EMPTY_SOURCE);
            if !file.path.ends_with(".py") {
                continue;
            }
            for entry in by_source.get(source).into_iter().flatten() {
                let list = bytecode
                    .entry((entry.tag.as_str(), dist.details.sha256.as_str()))
                    .or_default();
                if !list.contains(entry) {
                    list.push(entry);
                }
            }
        }
    }
    bytecode
}

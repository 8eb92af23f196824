//! Pull: one pack per missing distribution (and one for its bytecode),
//! each checked whole before anything of it enters the store.

use std::collections::{BTreeMap, HashMap};

use anyhow::bail;
use futures::{StreamExt, TryStreamExt};

use super::{
    BuildRecord, BytecodeRecord, DistributionRecord, PARALLEL, PARALLEL_PACKS, PackFetched, Remote,
    StreamReader, TransferReport, in_parallel,
};
use crate::dist::{Selected, Source};
use crate::progress::Progress;
use crate::store::Store;
use crate::store::stage::Stage;
use crate::transfer::pack::{self, PackRef};

/// The records the remote has for one selected package.
struct Found {
    sha256: String,
    distribution: DistributionRecord,
    bytecode: Option<(String, BytecodeRecord)>,
}

/// A pack to fetch: its key, identity and contents, and the package it
/// is for.
struct Wanted<'a> {
    key: String,
    package: String,
    pack: &'a PackRef,
    objects: &'a BTreeMap<String, u64>,
}

impl Remote {
    /// Fetches from the remote the distributions of `items` (selected from
    /// a lock; the store lacks them), with their bytecode for `tag`.
    pub fn pull(
        &self,
        local: &Store,
        items: &[&Selected],
        tag: Option<&str>,
        progress: &dyn Progress,
    ) -> anyhow::Result<TransferReport> {
        let mut report = TransferReport::default();
        let records = self.runtime.block_on(self.records(items, tag, progress))?;
        let Some(records) = records else {
            report.not_found = items.iter().map(|i| i.name.clone()).collect();
            return Ok(report);
        };

        // Packs of which the store lacks some object: per item, the
        // distribution's and the bytecode's.
        let lacks = |objects: &BTreeMap<String, u64>| {
            objects.keys().any(|key| {
                crate::transfer::parse_key(key).map_or(true, |k| !local.object_path(&k).exists())
            })
        };
        let mut wanted: Vec<Wanted> = Vec::new();
        let mut slots: Vec<(Option<usize>, Option<usize>)> = Vec::new();
        for (item, found) in items.iter().zip(&records) {
            let mut slot = (None, None);
            let package = format!("{} {}", item.name, item.version);
            if let Some(found) = found {
                let dist = &found.distribution;
                if let Some(pack) = &dist.pack
                    && lacks(&dist.objects)
                {
                    slot.0 = Some(wanted.len());
                    wanted.push(Wanted {
                        key: format!("packs/{}.tar.zst", found.sha256),
                        package: package.clone(),
                        pack,
                        objects: &dist.objects,
                    });
                }
                if let Some((tag, bytecode)) = &found.bytecode
                    && let Some(pack) = &bytecode.pack
                    && lacks(&bytecode.objects)
                {
                    slot.1 = Some(wanted.len());
                    wanted.push(Wanted {
                        key: format!("bytecode/{tag}/{}.tar.zst", found.sha256),
                        package: package.clone(),
                        pack,
                        objects: &bytecode.objects,
                    });
                }
            }
            slots.push(slot);
        }

        let total: u64 = wanted.iter().map(|w| w.pack.size).sum();
        // Into a new store, objects go straight into staged shards.
        let staging = match wanted.is_empty() {
            true => None,
            false => Some(Stage::begin(local)?),
        };
        let stage = staging.as_ref();
        progress.start("pulling", wanted.len() as u64, total);
        let handle = self.runtime.handle();
        // A pack that proved itself is published by the worker that read
        // it: one by one into a store that has objects of its shards,
        // which on one thread took longer than the downloads. A distribution
        // whose pack is refused leaves only unrecorded objects, as gc finds
        // them.
        let outcomes = in_parallel(&wanted, PARALLEL_PACKS, |want| {
            let got = self
                .fetch_pack(local, stage, want, handle, progress)
                .and_then(|got| got.publish(local, stage));
            progress.item_done("");
            got
        });
        progress.finish();
        report.packs_moved = wanted.len();
        report.fetched = wanted
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.is_ok())
            .map(|(want, _)| PackFetched {
                key: want.key.clone(),
                package: want.package.clone(),
                bytes: want.pack.size,
            })
            .collect();
        report.bytes_moved = report.fetched.iter().map(|p| p.bytes).sum();
        // Every object of a pack that proved itself is in the store now.
        let arrived: HashMap<String, u64> = wanted
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.is_ok())
            .flat_map(|(want, _)| want.objects.iter().map(|(k, size)| (k.clone(), *size)))
            .collect();
        let mut outcomes: Vec<Option<anyhow::Result<usize>>> =
            outcomes.into_iter().map(Some).collect();
        let mut take = |slot: Option<usize>| slot.and_then(|i| outcomes[i].take());

        // A distribution counts when its pack proved itself (or the store
        // had all its objects); its bytecode likewise, else it is compiled
        // here. Everything is recorded together, after one sync.
        let mut good = Vec::new();
        let mut good_bytecode = Vec::new();
        for ((item, found), slot) in items.iter().zip(records).zip(slots) {
            let Some(found) = found else {
                report.not_found.push(item.name.clone());
                continue;
            };
            if let Some(outcome) = take(slot.0) {
                match outcome {
                    Ok(new) => report.objects_moved += new,
                    Err(err) => {
                        report.refused.push(format!("{err:#}"));
                        report.not_found.push(item.name.clone());
                        continue;
                    }
                }
            }
            let bytecode = match take(slot.1) {
                Some(outcome) => match outcome {
                    Ok(new) => {
                        report.objects_moved += new;
                        found.bytecode.map(|(_, b)| b.entries)
                    }
                    Err(err) => {
                        report.refused.push(format!("{err:#}"));
                        None
                    }
                },
                None => found.bytecode.map(|(_, b)| b.entries),
            };
            good_bytecode.extend(bytecode.unwrap_or_default());
            good.push(found.distribution.distribution);
            report
                .pulled
                .extend(item.pinned().map(|file| file.sha256.clone()));
        }
        // The bytecode pack of a refused distribution went unused; its
        // objects proved themselves and may be the staged copy another
        // pack counted on, so they stay (unrecorded, as gc finds them).
        // Packs that failed removed what they staged.
        if let Some(staging) = staging {
            staging.publish()?;
        }
        crate::transfer::record(local, &good, &good_bytecode, &arrived)?;
        report.distributions_moved = good.len();
        Ok(report)
    }

    /// GETs one pack and reads it against its record; a download that
    /// breaks off (a node lost) is repeated, through the next endpoint
    /// when there are several.
    fn fetch_pack(
        &self,
        local: &Store,
        stage: Option<&Stage>,
        want: &Wanted,
        handle: &tokio::runtime::Handle,
        progress: &dyn Progress,
    ) -> anyhow::Result<pack::Received> {
        let what = format!("{}/{}", self.url, want.key);
        let mut attempt = 0;
        loop {
            let result = handle
                .block_on(self.store.get(&self.path(&want.key)))
                .map_err(|err| anyhow::Error::new(err).context(format!("cannot read {what}")))?;
            let mut reader = StreamReader {
                handle,
                stream: result.into_stream(),
                chunk: None,
                offset: 0,
                broke: false,
            };
            let got = pack::read(
                local,
                stage,
                &mut reader,
                want.pack,
                want.objects,
                &what,
                progress,
            );
            attempt += 1;
            if got.is_ok() || !reader.broke || attempt > self.endpoints {
                return got;
            }
        }
    }

    /// The records of `items`, `None` for a remote that names no layout
    /// and has none of them (an empty remote).
    async fn records(
        &self,
        items: &[&Selected],
        tag: Option<&str>,
        progress: &dyn Progress,
    ) -> anyhow::Result<Option<Vec<Option<Found>>>> {
        if self.layout().await?.is_none() {
            let probes: Vec<bool> =
                futures::stream::iter(items.iter())
                    .filter_map(|item| async move {
                        match &item.source {
                            Source::Wheel(wheel) => Some(wheel.sha256.clone()),
                            _ => None,
                        }
                    })
                    .map(|sha256| async move {
                        self.exists(&format!("distributions/{sha256}.json")).await
                    })
                    .buffer_unordered(PARALLEL)
                    .try_collect()
                    .await?;
            if probes.iter().any(|p| *p) {
                return Err(self.unversioned());
            }
            return Ok(None);
        }
        progress.start("asking the remote", items.len() as u64, 0);
        let records = futures::stream::iter(items.iter())
            .map(|item| async move {
                let found = self.find(item, tag).await;
                progress.item_done(&item.name);
                found
            })
            .buffered(PARALLEL)
            .try_collect()
            .await?;
        progress.finish();
        Ok(Some(records))
    }

    /// The remote's records for a selected package, if any.
    async fn find(&self, item: &Selected, tag: Option<&str>) -> anyhow::Result<Option<Found>> {
        let sha256 = match &item.source {
            Source::Wheel(wheel) => wheel.sha256.clone(),
            Source::Sdist(sdist) => {
                match self
                    .get_json::<BuildRecord>(&format!("builds/{}.json", sdist.sha256))
                    .await?
                {
                    Some(build) if super::is_sha256(&build.sha256) => build.sha256,
                    Some(_) => bail!(
                        "{}/builds/{}.json is damaged (not a wheel's sha256); the remote is damaged",
                        self.url,
                        sdist.sha256
                    ),
                    None => return Ok(None),
                }
            }
            // Built here from the source folder.
            Source::Local { .. } => return Ok(None),
        };
        // Both records at once: asking for them one after the other was
        // most of the time a pull spent before its first pack.
        let distribution_key = format!("distributions/{sha256}.json");
        let distribution = self.get_json::<DistributionRecord>(&distribution_key);
        let bytecode = async {
            match tag {
                Some(tag) => self
                    .get_json::<BytecodeRecord>(&format!("bytecode/{tag}/{sha256}.json"))
                    .await
                    .map(|record| {
                        record.map(|mut record| {
                            record.entries.retain(|b| b.tag == tag);
                            (tag.to_string(), record)
                        })
                    }),
                None => Ok(None),
            }
        };
        let (distribution, bytecode) = futures::try_join!(distribution, bytecode)?;
        let Some(distribution) = distribution else {
            return Ok(None);
        };
        if distribution.distribution.details.sha256 != sha256 {
            bail!(
                "{}/distributions/{sha256}.json describes another wheel ({}); the remote is damaged",
                self.url,
                distribution.distribution.details.sha256
            );
        }
        let named: BTreeMap<&str, u64> = distribution
            .distribution
            .files
            .iter()
            .filter_map(|f| Some((f.object.as_deref()?, f.size)))
            .collect();
        let listed: BTreeMap<&str, u64> = distribution
            .objects
            .iter()
            .map(|(k, s)| (k.as_str(), *s))
            .collect();
        if named != listed {
            bail!(
                "{}/distributions/{sha256}.json lists other objects than its files name; the \
                 remote is damaged",
                self.url
            );
        }
        Ok(Some(Found {
            sha256,
            distribution,
            bytecode,
        }))
    }
}

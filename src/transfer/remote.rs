//! A store shared through an existing object store: S3-compatible
//! (`s3://bucket/prefix`, configured by the standard `AWS_*` variables, so
//! MinIO, Garage, Ceph and R2 work), plain HTTP with WebDAV PUT
//! (`http(s)://host/prefix`), or a folder (`file:///path`), through the
//! `object_store` crate.
//!
//! Layout under the prefix; every key is derived from content, so a write
//! is idempotent and many writers never conflict:
//!
//! ```text
//! objects/<key>                         an object's bytes (key = blake3 [+ -x])
//! distributions/<wheel sha256>.json     a distribution's record and files
//! builds/<sdist sha256>.json            {"sha256": <wheel sha256>} for wheels
//!                                       tstore built from an sdist
//! bytecode/<tag>/<wheel sha256>.json    that distribution's compiled sources
//! ```
//!
//! A push uploads objects first and records last, so a reader that finds a
//! record finds its objects. A pull checks every object's size and blake3
//! on arrival; a corrupt or truncated object is refused and reported, and
//! the distribution that names it is not recorded.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as RemotePath;
use object_store::{ObjectStore, PutPayload};
use serde::{Deserialize, Serialize};

use super::{BytecodeEntry, DistributionEntry, Incoming, Needed};
use crate::dist::{Selected, Source};
use crate::progress::Progress;
use crate::store::Store;

/// Transfers at once.
const PARALLEL: usize = 64;
/// Objects above this size go up in parts where the remote supports it.
const MULTIPART_ABOVE: u64 = 64 * 1024 * 1024;

/// Transient failures are retried a few times; a remote that does not
/// answer is given up on within seconds (materialize then uses the index).
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(30),
        backoff: object_store::BackoffConfig::default(),
    }
}

fn client_options() -> object_store::ClientOptions {
    object_store::ClientOptions::new().with_connect_timeout(std::time::Duration::from_secs(5))
}

/// An opened remote store.
pub struct Remote {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// WebDAV servers take whole-file PUTs only.
    multipart: bool,
    runtime: tokio::runtime::Runtime,
}

#[derive(Debug, Serialize, Deserialize)]
struct BuildRecord {
    sha256: String,
}

/// What a push or pull moved.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TransferReport {
    pub objects_moved: usize,
    pub objects_skipped: usize,
    pub bytes_moved: u64,
    pub distributions_moved: usize,
    /// Pull: packages the remote does not have (or had damaged), by name.
    pub not_found: Vec<String>,
    /// Pull: problems with what the remote sent (refused objects…).
    pub refused: Vec<String>,
}

impl Remote {
    /// Opens `url`: `s3://bucket[/prefix]`, `http(s)://host[/prefix]` or
    /// `file:///path`.
    pub fn open(url: &str) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url).with_context(|| {
            format!("remote `{url}` is not a URL: use s3://bucket/prefix, https://host/prefix or file:///path")
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()?;
        let (store, prefix, multipart): (Arc<dyn ObjectStore>, String, bool) = match parsed.scheme()
        {
            "s3" => {
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .with_retry(retry())
                    .with_client_options(client_options());
                // A plain-HTTP endpoint (a local MinIO or Garage) must be allowed.
                let endpoint = std::env::var("AWS_ENDPOINT_URL")
                    .or_else(|_| std::env::var("AWS_ENDPOINT"))
                    .unwrap_or_default();
                if endpoint.starts_with("http://") {
                    builder = builder.with_allow_http(true);
                }
                if std::env::var_os("AWS_REGION").is_none()
                    && std::env::var_os("AWS_DEFAULT_REGION").is_none()
                {
                    builder = builder.with_region("us-east-1");
                }
                let store = builder
                    .build()
                    .with_context(|| format!("cannot use remote {url}"))?;
                (
                    Arc::new(store),
                    parsed.path().trim_matches('/').to_string(),
                    true,
                )
            }
            "http" | "https" => {
                let mut base = parsed.clone();
                if !base.path().ends_with('/') {
                    base.set_path(&format!("{}/", base.path()));
                }
                let store = object_store::http::HttpBuilder::new()
                    .with_url(base.as_str())
                    .with_client_options(object_store::ClientOptions::new().with_allow_http(true))
                    .build()
                    .with_context(|| format!("cannot use remote {url}"))?;
                (Arc::new(store), String::new(), false)
            }
            "file" => {
                let path = parsed
                    .to_file_path()
                    .map_err(|()| anyhow::anyhow!("remote `{url}` is not a local path"))?;
                fs_err::create_dir_all(&path)?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&path)?;
                (Arc::new(store), String::new(), true)
            }
            other => bail!(
                "remote `{url}`: scheme `{other}` is not supported; use s3://, http(s):// or file://"
            ),
        };
        Ok(Self {
            url: url.to_string(),
            store,
            prefix,
            multipart,
            runtime,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, key: &str) -> RemotePath {
        if self.prefix.is_empty() {
            RemotePath::from(key)
        } else {
            RemotePath::from(format!("{}/{key}", self.prefix))
        }
    }

    /// `Ok(None)` when the remote has nothing at `key`.
    async fn get_json<T: for<'de> Deserialize<'de>>(&self, key: &str) -> anyhow::Result<Option<T>> {
        match self.store.get(&self.path(key)).await {
            Ok(result) => {
                let bytes = result.bytes().await?;
                let value = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{}/{key} is damaged", self.url))?;
                Ok(Some(value))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => {
                Err(anyhow::Error::new(err).context(format!("cannot read {}/{key}", self.url)))
            }
        }
    }

    async fn exists(&self, key: &str) -> anyhow::Result<bool> {
        match self.store.head(&self.path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(err) => {
                Err(anyhow::Error::new(err).context(format!("cannot reach {}/{key}", self.url)))
            }
        }
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.store
            .put(&self.path(key), PutPayload::from(bytes))
            .await
            .with_context(|| format!("cannot write {}/{key}", self.url))?;
        Ok(())
    }

    /// Uploads a store object from its file.
    async fn put_object(&self, local: &Store, key: &str, size: u64) -> anyhow::Result<()> {
        let file = local.object_path(&super::parse_key(key)?);
        let remote_key = format!("objects/{key}");
        if size <= MULTIPART_ABOVE || !self.multipart {
            let bytes = tokio::fs::read(&file).await?;
            return self.put_bytes(&remote_key, bytes).await;
        }
        let mut writer =
            object_store::buffered::BufWriter::new(self.store.clone(), self.path(&remote_key));
        let mut reader = tokio::fs::File::open(&file).await?;
        tokio::io::copy(&mut reader, &mut writer).await?;
        tokio::io::AsyncWriteExt::shutdown(&mut writer)
            .await
            .with_context(|| format!("cannot write {}/{remote_key}", self.url))?;
        Ok(())
    }

    /// Uploads what `needed` holds and the remote lacks: objects first,
    /// then records.
    pub fn push(
        &self,
        local: &Store,
        needed: &Needed,
        progress: &dyn Progress,
    ) -> anyhow::Result<TransferReport> {
        self.runtime.block_on(async {
            let mut report = TransferReport::default();
            self.push_objects(local, needed, progress, &mut report)
                .await?;
            // Records last: whoever reads one finds its objects.
            self.push_records(needed, &mut report).await?;
            Ok(report)
        })
    }

    /// Uploads the objects of `needed` the remote does not have.
    async fn push_objects(
        &self,
        local: &Store,
        needed: &Needed,
        progress: &dyn Progress,
        report: &mut TransferReport,
    ) -> anyhow::Result<()> {
        progress.start("checking the remote", needed.objects.len() as u64, 0);
        let presence: Vec<(String, u64, bool)> = futures::stream::iter(needed.objects.iter())
            .map(|(key, size)| async move {
                let present = self.exists(&format!("objects/{key}")).await?;
                progress.item_done("");
                anyhow::Ok((key.clone(), *size, present))
            })
            .buffer_unordered(PARALLEL)
            .try_collect()
            .await?;
        progress.finish();
        let missing: Vec<(String, u64)> = presence
            .into_iter()
            .filter_map(|(key, size, present)| (!present).then_some((key, size)))
            .collect();
        report.objects_skipped = needed.objects.len() - missing.len();
        let bytes: u64 = missing.iter().map(|(_, s)| s).sum();
        progress.start("pushing", missing.len() as u64, bytes);
        futures::stream::iter(missing.iter())
            .map(|(key, size)| async move {
                self.put_object(local, key, *size).await?;
                progress.bytes(*size);
                progress.item_done("");
                anyhow::Ok(())
            })
            .buffer_unordered(PARALLEL)
            .try_collect::<Vec<()>>()
            .await?;
        progress.finish();
        report.objects_moved = missing.len();
        report.bytes_moved = bytes;
        Ok(())
    }

    /// Uploads the records of `needed`: distributions the remote lacks,
    /// which sdist each was built from, and bytecode by tag and wheel.
    async fn push_records(
        &self,
        needed: &Needed,
        report: &mut TransferReport,
    ) -> anyhow::Result<()> {
        for dist in &needed.distributions {
            let key = format!("distributions/{}.json", dist.details.sha256);
            if !self.exists(&key).await? {
                self.put_bytes(&key, serde_json::to_vec(dist)?).await?;
                report.distributions_moved += 1;
            }
            if let Some(from) = &dist.details.built_from
                && !from.starts_with("local-")
            {
                let record = BuildRecord {
                    sha256: dist.details.sha256.clone(),
                };
                self.put_bytes(&format!("builds/{from}.json"), serde_json::to_vec(&record)?)
                    .await?;
            }
        }
        for ((tag, sha256), mut entries) in bytecode_by_wheel(needed) {
            entries.sort();
            self.put_bytes(
                &format!("bytecode/{tag}/{sha256}.json"),
                serde_json::to_vec(&entries)?,
            )
            .await?;
        }
        Ok(())
    }

    /// Fetches from the remote the distributions of `items` (selected from
    /// a lock; the store lacks them), with their bytecode for `tag`.
    pub fn pull(
        &self,
        local: &Store,
        items: &[&Selected],
        tag: Option<&str>,
        progress: &dyn Progress,
    ) -> anyhow::Result<TransferReport> {
        self.runtime.block_on(async {
            let mut report = TransferReport::default();
            progress.start("asking the remote", items.len() as u64, 0);
            let records: Vec<Option<(DistributionEntry, Vec<BytecodeEntry>)>> =
                futures::stream::iter(items.iter())
                    .map(|item| async move {
                        let found = self.find(item, tag).await;
                        progress.item_done(&item.name);
                        found
                    })
                    .buffered(PARALLEL)
                    .try_collect()
                    .await?;
            progress.finish();
            let wanted = wanted_objects(local, &records);
            let refused = self
                .pull_objects(local, &wanted, progress, &mut report)
                .await;

            // Recorded together (one sync of the store's filesystem), less
            // what a refused object belongs to: that comes from the index,
            // and a pyc that was refused is compiled here.
            let mut good = Vec::new();
            let mut good_bytecode = Vec::new();
            for (item, record) in items.iter().zip(records) {
                let Some((dist, bytecode)) = record else {
                    report.not_found.push(item.name.clone());
                    continue;
                };
                let damaged = dist
                    .files
                    .iter()
                    .filter_map(|f| f.object.as_ref())
                    .any(|k| refused.contains(k));
                if damaged {
                    report.not_found.push(item.name.clone());
                    continue;
                }
                good_bytecode.extend(
                    bytecode
                        .into_iter()
                        .filter(|b| b.pyc.as_ref().is_none_or(|p| !refused.contains(p))),
                );
                good.push(dist);
            }
            super::record(local, &good, &good_bytecode)?;
            report.distributions_moved = good.len();
            Ok(report)
        })
    }

    /// Streams the `wanted` objects into the local store; returns the keys
    /// of those refused (each reported).
    async fn pull_objects(
        &self,
        local: &Store,
        wanted: &[(String, Option<u64>)],
        progress: &dyn Progress,
        report: &mut TransferReport,
    ) -> HashSet<String> {
        let total: u64 = wanted.iter().filter_map(|(_, s)| *s).sum();
        progress.start("pulling", wanted.len() as u64, total);
        let results: Vec<(String, anyhow::Result<u64>)> = futures::stream::iter(wanted.iter())
            .map(|(key, size)| async move {
                let got = self.get_object(local, key, *size, progress).await;
                progress.item_done("");
                (key.clone(), got)
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        progress.finish();
        let mut refused: HashSet<String> = HashSet::new();
        for (key, result) in results {
            match result {
                Ok(bytes) => {
                    report.objects_moved += 1;
                    report.bytes_moved += bytes;
                }
                Err(err) => {
                    report.refused.push(format!("{err:#}"));
                    refused.insert(key);
                }
            }
        }
        refused
    }

    /// The remote's record (and bytecode) for a selected package, if any.
    async fn find(
        &self,
        item: &Selected,
        tag: Option<&str>,
    ) -> anyhow::Result<Option<(DistributionEntry, Vec<BytecodeEntry>)>> {
        let sha256 = match &item.source {
            Source::Wheel(wheel) => wheel.sha256.clone(),
            Source::Sdist(sdist) => {
                match self
                    .get_json::<BuildRecord>(&format!("builds/{}.json", sdist.sha256))
                    .await?
                {
                    Some(build) => build.sha256,
                    None => return Ok(None),
                }
            }
            // Built here from the source folder.
            Source::Local { .. } => return Ok(None),
        };
        let Some(dist) = self
            .get_json::<DistributionEntry>(&format!("distributions/{sha256}.json"))
            .await?
        else {
            return Ok(None);
        };
        if dist.details.sha256 != sha256 {
            bail!(
                "{}/distributions/{sha256}.json describes another wheel ({}); the remote is damaged",
                self.url,
                dist.details.sha256
            );
        }
        let bytecode = match tag {
            Some(tag) => self
                .get_json::<Vec<BytecodeEntry>>(&format!("bytecode/{tag}/{sha256}.json"))
                .await?
                .unwrap_or_default()
                .into_iter()
                .filter(|b| b.tag == tag)
                .collect(),
            None => Vec::new(),
        };
        Ok(Some((dist, bytecode)))
    }

    /// Streams one object into the local store, verified. `size` is `None`
    /// when only the remote knows it.
    async fn get_object(
        &self,
        local: &Store,
        key: &str,
        size: Option<u64>,
        progress: &dyn Progress,
    ) -> anyhow::Result<u64> {
        let remote_key = format!("objects/{key}");
        let result = self
            .store
            .get(&self.path(&remote_key))
            .await
            .with_context(|| format!("cannot read {}/{remote_key}", self.url))?;
        let size = size.unwrap_or(result.meta.size);
        let what = format!("{}/{remote_key}", self.url);
        let Some(mut incoming) = Incoming::start(local, key, size, &what)? else {
            return Ok(0);
        };
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.with_context(|| format!("reading {what} failed"))?;
            incoming.write(&chunk)?;
            progress.bytes(chunk.len() as u64);
        }
        incoming.finish(local)?;
        Ok(size)
    }
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

/// The objects the found `records` name that the local store lacks, each
/// once, with the size the records give (`None` for a pyc's, learned from
/// the remote).
fn wanted_objects(
    local: &Store,
    records: &[Option<(DistributionEntry, Vec<BytecodeEntry>)>],
) -> Vec<(String, Option<u64>)> {
    let mut wanted: BTreeMap<String, Option<u64>> = BTreeMap::new();
    for (dist, bytecode) in records.iter().flatten() {
        for file in &dist.files {
            if let Some(key) = &file.object {
                wanted.insert(key.clone(), Some(file.size));
            }
        }
        for entry in bytecode {
            if let Some(pyc) = &entry.pyc {
                wanted.entry(pyc.clone()).or_insert(None);
            }
        }
    }
    wanted
        .into_iter()
        .filter(|(key, _)| super::parse_key(key).is_ok_and(|k| !local.object_path(&k).exists()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ObjectKey;
    use crate::store::records::{DistDetails, FileEntry};

    fn key(byte: u8) -> String {
        ObjectKey {
            hash: [byte; 32],
            executable: false,
        }
        .to_string()
    }

    #[test]
    fn a_pulls_sizes_come_from_records_and_only_missing_objects_are_wanted() {
        let home = tempfile::tempdir().unwrap();
        let local = Store::open(home.path()).unwrap();
        // The store already has object 3.
        let have = local.object_path(&ObjectKey::parse(&key(3)).unwrap());
        std::fs::write(&have, b"x").unwrap();
        let file = |object: String, size| FileEntry {
            path: "m/a.py".into(),
            object: Some(object),
            mode: 0o644,
            size,
            sha256: String::new(),
        };
        let dist = DistributionEntry {
            details: DistDetails {
                name: "m".into(),
                version: "1".into(),
                filename: "m-1-py3-none-any.whl".into(),
                sha256: "00".into(),
                size: 1,
                tags: "py3-none-any".into(),
                url: None,
                built_from: None,
            },
            files: vec![file(key(1), 10), file(key(3), 1)],
        };
        let bytecode = vec![BytecodeEntry {
            source: key(1),
            tag: "cpython-312".into(),
            pyc: Some(key(2)),
        }];
        let wanted = wanted_objects(&local, &[Some((dist, bytecode)), None]);
        assert_eq!(wanted, vec![(key(1), Some(10)), (key(2), None)]);
    }
}

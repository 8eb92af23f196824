//! A store shared through an existing object store: S3-compatible
//! (`s3://bucket/prefix`, configured by the standard `AWS_*` variables, so
//! MinIO, Garage, Ceph and R2 work), plain HTTP(S) (`http(s)://host/prefix`:
//! any static file server for pulls, WebDAV PUT for pushes), or a folder
//! (`file:///path`), through the `object_store` crate.
//!
//! Layout under the prefix (version [`LAYOUT_VERSION`]); one pack per
//! distribution, so a pull makes one request per missing distribution:
//!
//! ```text
//! tstore-remote.json                     {"format": "tstore-remote", "version": 2}
//! distributions/<wheel sha256>.json      the distribution's record and files, the
//!                                        objects its pack holds (key = blake3
//!                                        [+ -x], size), the pack's blake3 and size
//! packs/<wheel sha256>.tar.zst           its objects (see `transfer::pack`)
//! bytecode/<tag>/<wheel sha256>.json     its compiled sources for one interpreter
//!                                        tag, the pycs' keys and sizes, the pack's
//! bytecode/<tag>/<wheel sha256>.tar.zst  those pycs
//! builds/<sdist sha256>.json             {"sha256": <wheel sha256>} for wheels
//!                                        tstore built from an sdist
//! locks/<lock sha256>.toml               a lock that was pushed
//! roots/<lock sha256>.json               {tier, lock_sha256, pushed_unix}
//! tiers/<tier>.json                      the same, for the tier's last push
//! ```
//!
//! Every pack and record is named by content it describes, so a write is
//! idempotent and concurrent pushers do not conflict (the `tiers/` pointer
//! is the last writer's). A push sends packs first and records last, so a
//! reader that finds a record finds its pack. A pull checks each pack's
//! objects (size and blake3) and the pack's own hash before any of its
//! objects enter the store; a damaged pack is refused and reported, and its
//! distribution is not recorded.

mod failover;
pub mod gc;
mod pull;
mod push;

use std::sync::Arc;

use anyhow::{Context, bail};
use futures::StreamExt;
use object_store::path::Path as RemotePath;
use object_store::{ObjectStore, PutPayload};
use serde::{Deserialize, Serialize};

use super::pack::PackRef;
use super::{BytecodeEntry, DistributionEntry};

/// The layout this tstore reads and writes (see the module's doc).
pub const LAYOUT_VERSION: u64 = 2;
const LAYOUT_FILE: &str = "tstore-remote.json";
const LAYOUT_FORMAT: &str = "tstore-remote";

/// Packs moving at once, each on its own thread (hashing, zstd).
const PARALLEL_PACKS: usize = 16;
/// Small requests (HEAD, records) at once.
const PARALLEL: usize = 64;
/// Packs above this size go up in parts where the remote supports it.
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

/// The S3 endpoints of one service, comma-separated, tried in turn: the
/// nodes of a cluster that each serve the whole bucket. It replaces
/// `AWS_ENDPOINT_URL` for `s3://` remotes.
pub const ENDPOINTS_VAR: &str = "TSTORE_REMOTE_ENDPOINTS";

/// The S3 endpoints to use: [`ENDPOINTS_VAR`]'s, else `AWS_ENDPOINT_URL`
/// (or `AWS_ENDPOINT`); empty for the service's own (AWS).
fn s3_endpoints() -> anyhow::Result<Vec<String>> {
    if let Ok(list) = std::env::var(ENDPOINTS_VAR) {
        let endpoints: Vec<String> = list
            .split([',', ' ', '\n'])
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect();
        if endpoints.is_empty() {
            bail!(
                "{ENDPOINTS_VAR} is set but names no endpoint; unset it or list URLs, comma-separated"
            );
        }
        for endpoint in &endpoints {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                bail!("{ENDPOINTS_VAR}: `{endpoint}` is not an http:// or https:// URL");
            }
        }
        return Ok(endpoints);
    }
    Ok(std::env::var("AWS_ENDPOINT_URL")
        .or_else(|_| std::env::var("AWS_ENDPOINT"))
        .into_iter()
        .filter(|e| !e.is_empty())
        .collect())
}

/// The client of an `s3://` remote: one per endpoint, behind
/// [`failover::Failover`]; and how many endpoints it has.
fn s3_store(url: &str) -> anyhow::Result<(Arc<dyn ObjectStore>, usize)> {
    let client = |endpoint: Option<&str>| -> anyhow::Result<Arc<dyn ObjectStore>> {
        let mut builder = object_store::aws::AmazonS3Builder::from_env()
            .with_url(url)
            .with_retry(retry())
            .with_client_options(client_options());
        if let Some(endpoint) = endpoint {
            // A plain-HTTP endpoint (a local MinIO or Garage) must be allowed.
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        let store = builder.build().with_context(|| match endpoint {
            Some(endpoint) => format!("cannot use remote {url} through {endpoint}"),
            None => format!("cannot use remote {url}"),
        })?;
        Ok(Arc::new(store))
    };
    let endpoints = s3_endpoints()?;
    if endpoints.is_empty() {
        return Ok((client(None)?, 1));
    }
    let clients = endpoints
        .into_iter()
        .map(|endpoint| Ok((endpoint.clone(), client(Some(&endpoint))?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let failover = failover::Failover::new(clients);
    let count = failover.len();
    Ok((Arc::new(failover), count))
}

/// An opened remote store.
pub struct Remote {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// WebDAV servers take whole-file PUTs only.
    multipart: bool,
    /// `http(s)://`: writable only if the server takes PUT.
    over_http: bool,
    /// The S3 endpoints requests may go to (1 for other remotes): how
    /// often a pack whose download broke off is asked for again.
    endpoints: usize,
    runtime: tokio::runtime::Runtime,
}

#[derive(Debug, Serialize, Deserialize)]
struct LayoutRecord {
    format: String,
    version: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct BuildRecord {
    sha256: String,
}

/// `distributions/<wheel sha256>.json`.
#[derive(Debug, Serialize, Deserialize)]
struct DistributionRecord {
    distribution: DistributionEntry,
    /// Key → size of every object the pack holds.
    objects: std::collections::BTreeMap<String, u64>,
    /// `None` when the distribution has no objects (no pack).
    pack: Option<PackRef>,
}

/// `bytecode/<tag>/<wheel sha256>.json`.
#[derive(Debug, Serialize, Deserialize)]
struct BytecodeRecord {
    entries: Vec<BytecodeEntry>,
    objects: std::collections::BTreeMap<String, u64>,
    pack: Option<PackRef>,
}

/// `roots/<lock sha256>.json` and `tiers/<tier>.json`: a lock that was pushed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootRecord {
    pub tier: String,
    pub lock_sha256: String,
    /// Seconds since the Unix epoch.
    pub pushed_unix: u64,
}

/// A tier's lock as the remote keeps it.
#[derive(Debug, Clone)]
pub struct RemoteLock {
    pub text: String,
    pub root: RootRecord,
}

/// What a push or pull moved.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TransferReport {
    /// Packs sent or received (one request each).
    pub packs_moved: usize,
    /// Push: packs the remote already had.
    pub packs_skipped: usize,
    /// Size of the packs moved.
    pub bytes_moved: u64,
    /// Pull: objects new to the store; push: objects in the packs sent.
    pub objects_moved: usize,
    pub distributions_moved: usize,
    /// Pull: the sha256 of the pinned file (wheel or sdist) of each selected
    /// package recorded, `distributions_moved` of them.
    pub pulled: Vec<String>,
    /// Push: the tiers whose locks were recorded.
    pub locks_pushed: Vec<String>,
    /// Pull: packages the remote does not have (or had damaged), by name.
    pub not_found: Vec<String>,
    /// Pull: problems with what the remote sent (refused packs…).
    pub refused: Vec<String>,
    /// Pull: the packs that arrived whole, in the order asked for; their
    /// sizes add up to `bytes_moved`.
    pub fetched: Vec<PackFetched>,
}

/// A pack a pull received and checked.
#[derive(Debug, Clone, Serialize)]
pub struct PackFetched {
    /// Its name on the remote: `packs/<wheel sha256>.tar.zst` or
    /// `bytecode/<tag>/<wheel sha256>.tar.zst`.
    pub key: String,
    /// The locked package it is for, `name version`.
    pub package: String,
    /// Its size as it travelled (compressed).
    pub bytes: u64,
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
        let mut endpoints = 1;
        let (store, prefix, multipart): (Arc<dyn ObjectStore>, String, bool) = match parsed.scheme()
        {
            "s3" => {
                let (store, count) = s3_store(url)?;
                endpoints = count;
                (store, parsed.path().trim_matches('/').to_string(), true)
            }
            "http" | "https" => {
                let mut base = parsed.clone();
                if !base.path().ends_with('/') {
                    base.set_path(&format!("{}/", base.path()));
                }
                let store = object_store::http::HttpBuilder::new()
                    .with_url(base.as_str())
                    .with_retry(retry())
                    .with_client_options(client_options().with_allow_http(true))
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
            over_http: matches!(parsed.scheme(), "http" | "https"),
            endpoints,
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

    /// The layout version the remote names; `None` when it names none.
    async fn layout(&self) -> anyhow::Result<Option<u64>> {
        let Some(bytes) = self.get_bytes(LAYOUT_FILE).await? else {
            return Ok(None);
        };
        let record: LayoutRecord = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{}/{LAYOUT_FILE} is damaged; it should read {{\"format\": \"{LAYOUT_FORMAT}\", \
                 \"version\": {LAYOUT_VERSION}}}",
                self.url
            )
        })?;
        if record.format != LAYOUT_FORMAT {
            bail!(
                "{}/{LAYOUT_FILE} names format `{}`, not `{LAYOUT_FORMAT}`: this is not a tstore \
                 remote; use another prefix",
                self.url,
                record.format
            );
        }
        if record.version != LAYOUT_VERSION {
            bail!(
                "{} holds a tstore remote in layout version {}; this tstore reads and writes \
                 version {LAYOUT_VERSION}. Use the tstore that wrote it, or push to an empty prefix \
                 (or delete this one's content) to start one in version {LAYOUT_VERSION}",
                self.url,
                record.version
            );
        }
        Ok(Some(record.version))
    }

    /// The error for a remote with content and no `tstore-remote.json`.
    fn unversioned(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "{} holds tstore records but no {LAYOUT_FILE}: it was written by an older tstore \
             (one key per object). This tstore keeps one pack per distribution (layout version \
             {LAYOUT_VERSION}): push to an empty prefix, or delete this one's content and push again",
            self.url
        )
    }

    /// `Ok(None)` when the remote has nothing at `key`.
    async fn get_bytes(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        match self.store.get(&self.path(key)).await {
            Ok(result) => {
                let bytes = result
                    .bytes()
                    .await
                    .with_context(|| format!("cannot read {}/{key}", self.url))?;
                Ok(Some(bytes.to_vec()))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => {
                Err(anyhow::Error::new(err).context(format!("cannot read {}/{key}", self.url)))
            }
        }
    }

    /// `Ok(None)` when the remote has nothing at `key`.
    async fn get_json<T: for<'de> Deserialize<'de>>(&self, key: &str) -> anyhow::Result<Option<T>> {
        let Some(bytes) = self.get_bytes(key).await? else {
            return Ok(None);
        };
        let value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}/{key} is damaged", self.url))?;
        Ok(Some(value))
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

    /// What to add to a failed write.
    fn write_failed(&self, key: &str) -> String {
        if self.over_http {
            format!(
                "cannot write {}/{key}: an http(s) remote takes pushes only when its server \
                 accepts PUT (WebDAV); a static file server is read-only. Push to the folder \
                 (file://) or bucket (s3://) it serves instead",
                self.url
            )
        } else {
            format!("cannot write {}/{key}", self.url)
        }
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.store
            .put(&self.path(key), PutPayload::from(bytes))
            .await
            .with_context(|| self.write_failed(key))?;
        Ok(())
    }

    async fn put_json(&self, key: &str, value: &impl Serialize) -> anyhow::Result<()> {
        self.put_bytes(key, serde_json::to_vec_pretty(value)?).await
    }

    /// Uploads a local file (a pack) to `key`.
    async fn put_file(&self, key: &str, file: &std::path::Path, size: u64) -> anyhow::Result<()> {
        if size <= MULTIPART_ABOVE || !self.multipart {
            let bytes = tokio::fs::read(file).await?;
            return self.put_bytes(key, bytes).await;
        }
        let mut writer = object_store::buffered::BufWriter::new(self.store.clone(), self.path(key));
        let mut reader = tokio::fs::File::open(file).await?;
        tokio::io::copy(&mut reader, &mut writer)
            .await
            .with_context(|| self.write_failed(key))?;
        tokio::io::AsyncWriteExt::shutdown(&mut writer)
            .await
            .with_context(|| self.write_failed(key))?;
        Ok(())
    }

    /// The lock of `tier` the remote was last pushed with, checked against
    /// its hash; `None` when it has none.
    pub fn lock_of(&self, tier: &str) -> anyhow::Result<Option<RemoteLock>> {
        self.runtime.block_on(async {
            if self.layout().await?.is_none() {
                return Ok(None);
            }
            let Some(root) = self
                .get_json::<RootRecord>(&format!("tiers/{tier}.json"))
                .await?
            else {
                return Ok(None);
            };
            if !is_sha256(&root.lock_sha256) {
                bail!(
                    "{}/tiers/{tier}.json is damaged (its lock_sha256 is not a sha256); push `{tier}` again",
                    self.url
                );
            }
            let key = format!("locks/{}.toml", root.lock_sha256);
            let Some(bytes) = self.get_bytes(&key).await? else {
                bail!(
                    "{}/tiers/{tier}.json names {key}, which is missing; push `{tier}` again",
                    self.url
                );
            };
            let sha256 = {
                use sha2::Digest;
                hex::encode(sha2::Sha256::digest(&bytes))
            };
            if sha256 != root.lock_sha256 {
                bail!(
                    "{}/{key} does not match its sha256 (it hashes to {sha256}); it was refused. \
                     Push `{tier}` again",
                    self.url
                );
            }
            let text = String::from_utf8(bytes)
                .with_context(|| format!("{}/{key} is not text", self.url))?;
            Ok(Some(RemoteLock { text, root }))
        })
    }
}

/// Whether `text` is a sha256 in lowercase hex (it becomes part of a key).
fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Runs `work` on every item from `threads` threads; results in order.
fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<(usize, R)>> = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.min(items.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let result = work(item);
                    results.lock().unwrap().push((i, result));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// A remote object's byte stream read as `std::io::Read`, on a thread
/// outside the runtime.
struct StreamReader<'a, S, B> {
    handle: &'a tokio::runtime::Handle,
    stream: S,
    chunk: Option<B>,
    offset: usize,
    /// The download broke off (not the content's fault): worth repeating.
    broke: bool,
}

impl<S, B> std::io::Read for StreamReader<'_, S, B>
where
    S: futures::Stream<Item = object_store::Result<B>> + Unpin,
    B: AsRef<[u8]>,
{
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(chunk) = &self.chunk {
                let rest = &chunk.as_ref()[self.offset..];
                if !rest.is_empty() {
                    let n = rest.len().min(buf.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    self.offset += n;
                    return Ok(n);
                }
            }
            match self.handle.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(chunk)) => {
                    self.chunk = Some(chunk);
                    self.offset = 0;
                }
                Some(Err(err)) => {
                    self.broke = true;
                    return Err(std::io::Error::other(err));
                }
            }
        }
    }
}

//! Downloading one file, hashed while it streams.
//!
//! HTTP(S) through reqwest: proxies from `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`
//! and `NO_PROXY`, TLS roots from the system store plus `SSL_CERT_FILE` /
//! `SSL_CERT_DIR` (custom CAs). Transient failures (connection errors,
//! timeouts, 429 and 5xx answers, broken bodies) are retried with backoff.
//! Local files are read the same way. The bottom floor of the network: it
//! knows URLs, paths and sha256, not locks or stores.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::Digest;

use crate::progress::Progress;

const ATTEMPTS: u32 = 4;

/// Where a download reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    Url(&'a str),
    File(&'a Path),
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("cannot download {url}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot download {url}: connection broke")]
    Broken {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("cannot read {path}")]
    Local {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl DownloadError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Request { .. } | Self::Broken { .. } => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::Local { .. } | Self::Write { .. } => false,
        }
    }
}

/// What was written: hex sha256 and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub sha256: String,
    pub size: u64,
}

/// A downloaded file that is not the one expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// `size` or `sha256`.
    pub what: &'static str,
    pub expected: String,
    pub actual: String,
}

impl Downloaded {
    /// Checks the file against the size (when known) and sha256 it must have.
    pub fn check(&self, sha256: &str, size: Option<u64>) -> Result<(), Mismatch> {
        if let Some(size) = size
            && size != self.size
        {
            return Err(Mismatch {
                what: "size",
                expected: format!("{size} bytes"),
                actual: format!("{} bytes", self.size),
            });
        }
        if self.sha256 != sha256 {
            return Err(Mismatch {
                what: "sha256",
                expected: sha256.to_owned(),
                actual: self.sha256.clone(),
            });
        }
        Ok(())
    }
}

pub fn client() -> anyhow::Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .user_agent(concat!("tstore/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .timeout(None)
        .dns_resolver(Arc::new(OnceResolver::default()))
        .build()?)
}

/// Looks each host up once per client, however many connections open to it
/// at once. Every new connection used to look the host up again: with 32
/// downloads starting together, a resolver that lost some of the answers
/// made glibc wait out its 5 s timeout. A failed lookup is not kept.
struct OnceResolver {
    hosts: std::sync::Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Vec<SocketAddr>>>>>,
    /// The system's lookup (getaddrinfo); another in tests.
    lookup: fn(&str) -> std::io::Result<Vec<SocketAddr>>,
}

impl Default for OnceResolver {
    fn default() -> Self {
        Self {
            hosts: std::sync::Mutex::default(),
            lookup: |host| {
                std::net::ToSocketAddrs::to_socket_addrs(&(host, 0)).map(Iterator::collect)
            },
        }
    }
}

impl reqwest::dns::Resolve for OnceResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let lookup = self.lookup;
        let cell = self
            .hosts
            .lock()
            .expect("resolver mutex poisoned")
            .entry(host.clone())
            .or_default()
            .clone();
        Box::pin(async move {
            let addresses = cell
                .get_or_try_init(|| async move {
                    tokio::task::spawn_blocking(move || lookup(&host))
                        .await
                        .map_err(std::io::Error::other)?
                })
                .await?;
            let addresses: reqwest::dns::Addrs = Box::new(addresses.clone().into_iter());
            Ok(addresses)
        })
    }
}

/// Copies `origin` to `dest`, hashing as it goes, retrying transient errors.
pub fn download(
    client: &reqwest::blocking::Client,
    origin: Origin<'_>,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<Downloaded, DownloadError> {
    download_watched(client, origin, dest, progress, None)
}

/// Told how far a download into a file has got, by the thread writing it.
pub trait Watcher: Sync {
    /// `total` bytes of this attempt are in the file.
    fn written(&self, total: u64);
    /// The file is about to be emptied and written again (a retry): returns
    /// once nothing reads it any more.
    fn restarting(&self);
}

/// [`download`], telling `watcher`, if any, of each write.
pub fn download_watched(
    client: &reqwest::blocking::Client,
    origin: Origin<'_>,
    dest: &Path,
    progress: &dyn Progress,
    watcher: Option<&dyn Watcher>,
) -> Result<Downloaded, DownloadError> {
    download_into(client, origin, &mut Sink::File(dest), progress, watcher)
}

/// Reads `origin`, which should hold `size` bytes, into memory, hashing as
/// it goes, retrying transient errors. It stops reading one byte past
/// `size`, so a server that sends more fills no memory: the caller's
/// [`Downloaded::check`] then names the size mismatch.
pub fn download_to_memory(
    client: &reqwest::blocking::Client,
    origin: Origin<'_>,
    size: u64,
    progress: &dyn Progress,
) -> Result<(Vec<u8>, Downloaded), DownloadError> {
    let mut bytes = Vec::new();
    bytes.reserve_exact(usize::try_from(size).map_err(|_| DownloadError::Write {
        path: "memory".to_string(),
        source: std::io::Error::other("too large to hold in memory"),
    })?);
    let got = download_into(
        client,
        origin,
        &mut Sink::Memory(&mut bytes, size),
        progress,
        None,
    )?;
    Ok((bytes, got))
}

/// Where a download's bytes go.
enum Sink<'a> {
    File(&'a Path),
    /// A buffer, and the size expected in it.
    Memory(&'a mut Vec<u8>, u64),
}

impl Sink<'_> {
    /// The destination, emptied: each attempt starts over.
    fn start(&mut self) -> std::io::Result<Box<dyn Write + '_>> {
        match self {
            Self::File(path) => Ok(Box::new(File::create(path)?)),
            Self::Memory(bytes, _) => {
                bytes.clear();
                Ok(Box::new(&mut **bytes))
            }
        }
    }

    /// Names the destination in an error.
    fn describe(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Memory(..) => "memory".to_string(),
        }
    }

    /// Past how many bytes reading stops (the mismatch is told later).
    fn cap(&self) -> Option<u64> {
        match self {
            Self::File(_) => None,
            Self::Memory(_, size) => Some(size.saturating_add(1)),
        }
    }
}

fn download_into(
    client: &reqwest::blocking::Client,
    origin: Origin<'_>,
    sink: &mut Sink<'_>,
    progress: &dyn Progress,
    watcher: Option<&dyn Watcher>,
) -> Result<Downloaded, DownloadError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        if attempt > 1
            && let Some(watcher) = watcher
        {
            watcher.restarting();
        }
        let result = download_once(client, origin, sink, progress, watcher);
        match result {
            Err(err) if err.is_transient() && attempt < ATTEMPTS => {
                progress.detail(&format!("retrying after: {}", error_chain(&err)));
                std::thread::sleep(Duration::from_millis(250 << attempt));
            }
            other => return other,
        }
    }
}

fn download_once(
    client: &reqwest::blocking::Client,
    origin: Origin<'_>,
    sink: &mut Sink<'_>,
    progress: &dyn Progress,
    watcher: Option<&dyn Watcher>,
) -> Result<Downloaded, DownloadError> {
    let path = sink.describe();
    let cap = sink.cap().unwrap_or(u64::MAX);
    let write_error = |source| DownloadError::Write {
        path: path.clone(),
        source,
    };
    let mut out = sink.start().map_err(write_error)?;
    let mut reader = open(client, origin)?;
    let mut sha = sha2::Sha256::new();
    let mut buffer = vec![0u8; 256 << 10];
    let mut size = 0u64;
    loop {
        let n = reader
            .read(&mut buffer)
            .map_err(|source| read_error(origin, source))?;
        if n == 0 {
            break;
        }
        let n = n.min(usize::try_from(cap - size).unwrap_or(usize::MAX));
        sha.update(&buffer[..n]);
        out.write_all(&buffer[..n]).map_err(write_error)?;
        size += n as u64;
        progress.bytes(n as u64);
        if let Some(watcher) = watcher {
            watcher.written(size);
        }
        if size == cap {
            break;
        }
    }
    out.flush().map_err(write_error)?;
    Ok(Downloaded {
        sha256: hex::encode(sha.finalize()),
        size,
    })
}

/// The body to read: the open file, or the answer to a successful GET.
fn open(
    client: &reqwest::blocking::Client,
    origin: Origin<'_>,
) -> Result<Box<dyn Read>, DownloadError> {
    match origin {
        Origin::File(path) => {
            let file = File::open(path).map_err(|source| read_error(origin, source))?;
            Ok(Box::new(file))
        }
        Origin::Url(url) => {
            let response = client
                .get(url)
                .send()
                .map_err(|source| DownloadError::Request {
                    url: url.to_owned(),
                    source,
                })?;
            let status = response.status();
            if !status.is_success() {
                return Err(DownloadError::Status {
                    url: url.to_owned(),
                    status: status.as_u16(),
                });
            }
            Ok(Box::new(response))
        }
    }
}

fn read_error(origin: Origin<'_>, source: std::io::Error) -> DownloadError {
    match origin {
        Origin::Url(url) => DownloadError::Broken {
            url: url.to_owned(),
            source,
        },
        Origin::File(path) => DownloadError::Local {
            path: path.display().to_string(),
            source,
        },
    }
}

/// An error with its causes, which hold the useful part (DNS, TLS…).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    static LOOKUPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// Slow enough that every resolve below starts while the first waits.
    fn counted_lookup(host: &str) -> std::io::Result<Vec<SocketAddr>> {
        LOOKUPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        match host {
            "pypi.test" => Ok(vec![SocketAddr::from(([127, 0, 0, 1], 0))]),
            _ => Err(std::io::Error::other("no such host")),
        }
    }

    #[test]
    fn many_connections_to_one_host_look_it_up_once_and_a_failure_is_not_kept() {
        use reqwest::dns::Resolve;
        let resolver = Arc::new(OnceResolver {
            hosts: std::sync::Mutex::default(),
            lookup: counted_lookup,
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let resolve = |host: &'static str| {
            let resolver = resolver.clone();
            runtime.spawn(async move {
                let name: reqwest::dns::Name = host.parse().unwrap();
                resolver
                    .resolve(name)
                    .await
                    .map(|addrs| addrs.collect::<Vec<_>>())
                    .map_err(|e| e.to_string())
            })
        };
        let at_once: Vec<_> = (0..16).map(|_| resolve("pypi.test")).collect();
        for task in at_once {
            let addrs = runtime.block_on(task).unwrap().unwrap();
            assert_eq!(addrs, [SocketAddr::from(([127, 0, 0, 1], 0))]);
        }
        assert_eq!(LOOKUPS.load(std::sync::atomic::Ordering::SeqCst), 1);
        for _ in 0..2 {
            let err = runtime.block_on(resolve("gone.test")).unwrap().unwrap_err();
            assert!(err.contains("no such host"), "{err}");
        }
        assert_eq!(
            LOOKUPS.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "each failed lookup is asked again"
        );
    }

    #[test]
    fn a_local_file_is_copied_hashed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("a.whl");
        std::fs::write(&from, b"abc").unwrap();
        let dest = dir.path().join("copy");
        let client = client().unwrap();
        let got = download(
            &client,
            Origin::File(&from),
            &dest,
            &crate::progress::Silent,
        )
        .unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(got.sha256, abc);
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
        assert_eq!(got.check(abc, Some(3)), Ok(()));
        assert_eq!(got.check(abc, Some(4)).unwrap_err().what, "size");
        assert_eq!(got.check(&"0".repeat(64), None).unwrap_err().what, "sha256");
    }

    #[test]
    fn a_download_into_memory_stops_one_byte_past_the_expected_size() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("a.whl");
        std::fs::write(&from, vec![7u8; 1 << 20]).unwrap();
        let client = client().unwrap();
        let read = |size| {
            download_to_memory(&client, Origin::File(&from), size, &crate::progress::Silent)
                .unwrap()
        };
        let (bytes, got) = read(1 << 20);
        assert_eq!((bytes.len(), got.size), (1 << 20, 1 << 20));
        // A lock that says 10 bytes holds no more than 11 in memory, and the
        // check names the size.
        let (bytes, got) = read(10);
        assert_eq!((bytes.len(), got.size), (11, 11));
        assert_eq!(got.check(&got.sha256, Some(10)).unwrap_err().what, "size");
    }

    #[test]
    fn a_missing_file_keeps_its_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.whl");
        let err = download(
            &client().unwrap(),
            Origin::File(&missing),
            &dir.path().join("copy"),
            &crate::progress::Silent,
        )
        .unwrap_err();
        assert!(!err.is_transient());
        let io = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .expect("the io::Error is the source");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(
            error_chain(&err),
            format!("cannot read {}: {io}", missing.display())
        );
    }
}

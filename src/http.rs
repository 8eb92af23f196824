//! Downloading one file, hashed while it streams.
//!
//! HTTP(S) through reqwest: proxies from `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`
//! and `NO_PROXY`, TLS roots from the system store plus `SSL_CERT_FILE` /
//! `SSL_CERT_DIR` (custom CAs). Transient failures (connection errors,
//! timeouts, 429 and 5xx answers, broken bodies) are retried with backoff.
//! Local files are read the same way. The bottom floor of the network: it
//! knows URLs, paths and sha256, not locks or stores.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
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
        .build()?)
}

/// Copies `origin` to `dest`, hashing as it goes, retrying transient errors.
pub fn download(
    client: &reqwest::blocking::Client,
    origin: Origin<'_>,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<Downloaded, DownloadError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = download_once(client, origin, dest, progress);
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
    dest: &Path,
    progress: &dyn Progress,
) -> Result<Downloaded, DownloadError> {
    let write_error = |source| DownloadError::Write {
        path: dest.display().to_string(),
        source,
    };
    let mut out = File::create(dest).map_err(write_error)?;
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
        sha.update(&buffer[..n]);
        out.write_all(&buffer[..n]).map_err(write_error)?;
        size += n as u64;
        progress.bytes(n as u64);
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

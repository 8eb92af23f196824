//! Downloading one file, verified while it streams.
//!
//! HTTP(S) through reqwest: proxies from `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`
//! and `NO_PROXY`, TLS roots from the system store plus `SSL_CERT_FILE` /
//! `SSL_CERT_DIR` (custom CAs). Transient failures (connection errors,
//! timeouts, 429 and 5xx answers, broken bodies) are retried with backoff.
//! `file://` URLs and lock-relative paths are read from disk the same way.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use sha2::Digest;

use crate::lock::pylock::Location;
use crate::progress::Progress;

const ATTEMPTS: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("cannot download {url}: {reason}")]
    Network { url: String, reason: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("cannot read {path}: {reason}")]
    Local { path: String, reason: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
}

impl DownloadError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Network { .. } => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::Local { .. } | Self::Write { .. } => false,
        }
    }
}

/// What was written: hex sha256 and size.
pub struct Downloaded {
    pub sha256: String,
    pub size: u64,
}

pub fn client() -> anyhow::Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .user_agent(concat!("tstore/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .timeout(None)
        .build()?)
}

/// Copies `location` to `dest`, hashing as it goes, retrying transient errors.
pub fn download(
    client: &reqwest::blocking::Client,
    location: &Location,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<Downloaded, DownloadError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = download_once(client, location, dest, progress);
        match result {
            Err(err) if err.is_transient() && attempt < ATTEMPTS => {
                progress.detail(&format!("retrying after: {err}"));
                std::thread::sleep(Duration::from_millis(250 << attempt));
            }
            other => return other,
        }
    }
}

fn download_once(
    client: &reqwest::blocking::Client,
    location: &Location,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<Downloaded, DownloadError> {
    let write_error = |e: std::io::Error| DownloadError::Write {
        path: dest.display().to_string(),
        reason: e.to_string(),
    };
    let mut out = File::create(dest).map_err(write_error)?;
    let (mut reader, source): (Box<dyn Read>, String) = match location {
        Location::File(path) => {
            let file = File::open(path).map_err(|e| DownloadError::Local {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            (Box::new(file), path.display().to_string())
        }
        Location::Url(url) => {
            let response = client.get(url).send().map_err(|e| DownloadError::Network {
                url: url.clone(),
                reason: error_chain(&e),
            })?;
            let status = response.status();
            if !status.is_success() {
                return Err(DownloadError::Status {
                    url: url.clone(),
                    status: status.as_u16(),
                });
            }
            (Box::new(response), url.clone())
        }
    };
    let mut sha = sha2::Sha256::new();
    let mut buffer = vec![0u8; 256 << 10];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buffer).map_err(|e| match location {
            Location::Url(_) => DownloadError::Network {
                url: source.clone(),
                reason: format!("connection broke: {e}"),
            },
            Location::File(_) => DownloadError::Local {
                path: source.clone(),
                reason: e.to_string(),
            },
        })?;
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

/// reqwest's error with its causes, which hold the useful part (DNS, TLS…).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

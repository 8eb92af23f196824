//! Getting every distribution a tier needs into the store.
//!
//! What the store already has is decided by sha256 (a wheel) or by the
//! sdist's sha256 (a wheel tstore built), so a repeat downloads nothing.
//! The rest is downloaded in parallel, checked against the lock's size and
//! sha256 before anything is ingested, and ingested right away. Packages the
//! lock offers only as sdists are built once with `uv build --wheel`.

pub mod http;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, bail};
use rayon::prelude::*;

use crate::interpreter::Interpreter;
use crate::lock::pylock::{Location, PinnedFile, Selected, Source};
use crate::progress::Progress;
use crate::store::Store;
use crate::store::ingest::{WheelFile, ingest_wheel};
use crate::uv::Uv;

/// Downloads at once.
const PARALLEL_DOWNLOADS: usize = 8;

#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// Use only what the store has; fail naming what is missing.
    pub offline: bool,
}

/// A selected distribution and its record in the store.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub selected: Selected,
    pub dist_id: i64,
}

/// What one fetch did, for the summary line.
#[derive(Debug, Clone, Default)]
pub struct FetchReport {
    pub already_stored: usize,
    pub downloaded: usize,
    pub built: usize,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "{filename} from {location} does not match the lock: {what} is {actual}, the lock says {expected}. \
     Nothing was ingested. If the index really changed the file, re-lock with `tstore lock`"
)]
pub struct MismatchError {
    pub filename: String,
    pub location: String,
    pub what: &'static str,
    pub expected: String,
    pub actual: String,
}

/// Makes sure every distribution in `selected` is in the store.
pub fn fetch(
    store: &Store,
    uv: Option<&Uv>,
    interpreter: &Interpreter,
    selected: &[Selected],
    options: &FetchOptions,
    progress: &dyn Progress,
) -> anyhow::Result<(Vec<Fetched>, FetchReport)> {
    let mut report = FetchReport::default();
    let mut done: Vec<Option<i64>> = Vec::with_capacity(selected.len());
    for item in selected {
        let known = match &item.source {
            Source::Wheel(w) => store.db.distribution_by_sha256(&w.sha256)?,
            Source::Sdist(s) => store.db.sdist_build(&s.sha256)?,
            Source::Local { path, editable } => {
                let key = local_build_key(path, *editable)?;
                match store.db.sdist_build(&key)? {
                    Some(known) => Some(known),
                    None => {
                        let id =
                            build_local(store, uv, interpreter, item, &key, options, progress)?;
                        report.built += 1;
                        done.push(Some(id));
                        continue;
                    }
                }
            }
        };
        done.push(known.map(|d| d.id));
    }
    report.already_stored = done.iter().filter(|d| d.is_some()).count() - report.built;
    let missing: Vec<usize> = (0..selected.len()).filter(|&i| done[i].is_none()).collect();

    if !missing.is_empty() && options.offline {
        let names: Vec<String> = missing
            .iter()
            .map(|&i| {
                format!(
                    "{} {} ({})",
                    selected[i].name,
                    selected[i].version,
                    selected[i].label()
                )
            })
            .collect();
        bail!(
            "--offline: the store lacks {} distribution(s): {}. Run `tstore fetch` with network access \
             (or import them) first",
            names.len(),
            names.join(", ")
        );
    }

    if !missing.is_empty() {
        let client = http::client()?;
        let total_bytes: u64 = missing
            .iter()
            .filter_map(|&i| selected[i].pinned().and_then(|p| p.size))
            .sum();
        progress.start("fetching", missing.len() as u64, total_bytes);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(PARALLEL_DOWNLOADS.min(missing.len()))
            .build()?;
        let built = Mutex::new(0usize);
        let results: Vec<(usize, anyhow::Result<(i64, u64)>)> = pool.install(|| {
            missing
                .par_iter()
                .map(|&i| {
                    let item = &selected[i];
                    let result = match &item.source {
                        Source::Local { .. } => unreachable!("local projects are built above"),
                        Source::Wheel(wheel) => fetch_wheel(store, &client, wheel, progress),
                        Source::Sdist(sdist) => {
                            *built.lock().unwrap() += 1;
                            fetch_and_build_sdist(
                                store,
                                uv,
                                interpreter,
                                &client,
                                item,
                                sdist,
                                progress,
                            )
                        }
                    };
                    progress.item_done(&item.name);
                    (
                        i,
                        result.with_context(|| {
                            format!("cannot fetch {} {}", item.name, item.version)
                        }),
                    )
                })
                .collect()
        });
        progress.finish();
        let mut errors = Vec::new();
        for (i, result) in results {
            match result {
                Ok((id, bytes)) => {
                    done[i] = Some(id);
                    report.bytes += bytes;
                }
                Err(err) => errors.push(format!("{err:#}")),
            }
        }
        if !errors.is_empty() {
            bail!(
                "{} of {} downloads failed:\n  {}",
                errors.len(),
                missing.len(),
                errors.join("\n  ")
            );
        }
        let built = built.into_inner().unwrap();
        report.built += built;
        report.downloaded = missing.len() - built;
    }

    let fetched = selected
        .iter()
        .zip(done)
        .map(|(item, id)| Fetched {
            selected: item.clone(),
            dist_id: id.expect("every missing item was fetched or reported"),
        })
        .collect();
    Ok((fetched, report))
}

/// Downloads `pinned` into the store's tmp dir and verifies it against the lock.
fn download_verified(
    store: &Store,
    client: &reqwest::blocking::Client,
    pinned: &PinnedFile,
    progress: &dyn Progress,
) -> anyhow::Result<(TempFile, u64)> {
    let temp = TempFile(store.temp_path("download"));
    let got = http::download(client, &pinned.location, &temp.0, progress)?;
    let mismatch = |what, expected: String, actual: String| MismatchError {
        filename: pinned.filename.clone(),
        location: pinned.location.to_string(),
        what,
        expected,
        actual,
    };
    if let Some(size) = pinned.size
        && size != got.size
    {
        return Err(mismatch(
            "size",
            format!("{size} bytes"),
            format!("{} bytes", got.size),
        )
        .into());
    }
    if got.sha256 != pinned.sha256 {
        return Err(mismatch("sha256", pinned.sha256.clone(), got.sha256).into());
    }
    Ok((temp, got.size))
}

fn fetch_wheel(
    store: &Store,
    client: &reqwest::blocking::Client,
    wheel: &PinnedFile,
    progress: &dyn Progress,
) -> anyhow::Result<(i64, u64)> {
    let (temp, size) = download_verified(store, client, wheel, progress)?;
    let url = wheel.location.to_string();
    let id = ingest_wheel(
        store,
        &WheelFile {
            path: &temp.0,
            filename: &wheel.filename,
            sha256: &wheel.sha256,
            size,
            url: Some(&url),
            built_from_sdist: None,
        },
    )?;
    Ok((id, size))
}

fn fetch_and_build_sdist(
    store: &Store,
    uv: Option<&Uv>,
    interpreter: &Interpreter,
    client: &reqwest::blocking::Client,
    item: &Selected,
    sdist: &PinnedFile,
    progress: &dyn Progress,
) -> anyhow::Result<(i64, u64)> {
    let uv = uv.context("building an sdist needs uv")?;
    let (temp, size) = download_verified(store, client, sdist, progress)?;
    let work = crate::store::tmp::temp_dir(store, "build")?;
    // uv recognizes an sdist by its file name.
    let named = work.path().join(&sdist.filename);
    fs_err::rename(&temp.0, &named)?;
    let out_dir = work.path().join("dist");
    progress.detail(&format!(
        "building {} {} from its sdist",
        item.name, item.version
    ));
    let mut cmd = uv.command();
    cmd.args(["build", "--wheel", "--quiet", "--python"])
        .arg(&interpreter.executable)
        .arg("--out-dir")
        .arg(&out_dir)
        .arg(&named);
    uv.run(&mut cmd)
        .with_context(|| format!("cannot build a wheel from {}", sdist.filename))?;
    let url = sdist.location.to_string();
    let id = ingest_built_wheel(store, &out_dir, &sdist.filename, &url, &sdist.sha256)?;
    Ok((id, size))
}

/// What a local project's build is stored under: its whole source tree for
/// a built install, its metadata for an editable one (which uses only the
/// built wheel's dist-info).
pub fn local_build_key(path: &Path, editable: bool) -> anyhow::Result<String> {
    crate::local::check_project(path)?;
    Ok(if editable {
        format!("local-metadata:{}", crate::local::metadata_hash(path))
    } else {
        format!("local-tree:{}", crate::local::tree_hash(path)?)
    })
}

/// Builds a local project's wheel with uv and ingests it under `key`.
fn build_local(
    store: &Store,
    uv: Option<&Uv>,
    interpreter: &Interpreter,
    item: &Selected,
    key: &str,
    options: &FetchOptions,
    progress: &dyn Progress,
) -> anyhow::Result<i64> {
    let Source::Local { path, .. } = &item.source else {
        unreachable!("called for local projects only")
    };
    let uv = uv.context("building a local project needs uv")?;
    let work = crate::store::tmp::temp_dir(store, "build")?;
    let out_dir = work.path().join("dist");
    progress.start(&format!("building {}", item.name), 0, 0);
    let mut cmd = uv.command();
    cmd.args(["build", "--wheel", "--quiet", "--python"])
        .arg(&interpreter.executable)
        .arg("--out-dir")
        .arg(&out_dir);
    if options.offline {
        cmd.arg("--offline");
    }
    cmd.arg(path);
    let built = uv.run(&mut cmd);
    progress.finish();
    built.with_context(|| {
        format!(
            "cannot build {} from {} (uv build --wheel)",
            item.name,
            path.display()
        )
    })?;
    let url = format!("file://{}", path.display());
    let id = ingest_built_wheel(store, &out_dir, &path.display().to_string(), &url, key)
        .with_context(|| format!("cannot store the wheel built from {}", path.display()))?;
    progress.detail(&format!("built {} from {}", item.name, path.display()));
    Ok(id)
}

/// Ingests the wheel `uv build` left in `out_dir`, recorded as built from
/// `built_from` (an sdist's sha256 or a local project key).
fn ingest_built_wheel(
    store: &Store,
    out_dir: &Path,
    source: &str,
    url: &str,
    built_from: &str,
) -> anyhow::Result<i64> {
    let wheel = fs_err::read_dir(out_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .with_context(|| format!("uv build made no wheel from {source}"))?;
    let filename = wheel
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let (sha256, size) = hash_file(&wheel)?;
    Ok(ingest_wheel(
        store,
        &WheelFile {
            path: &wheel,
            filename: &filename,
            sha256: &sha256,
            size,
            url: Some(url),
            built_from_sdist: Some(built_from),
        },
    )?)
}

fn hash_file(path: &Path) -> anyhow::Result<(String, u64)> {
    use sha2::Digest;
    let mut file = fs_err::File::open(path)?;
    let mut sha = sha2::Sha256::new();
    let size = std::io::copy(&mut file, &mut sha)?;
    Ok((hex::encode(sha.finalize()), size))
}

/// A temp file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Installs uv `version` from PyPI: the wheel for this machine, found through
/// the index's JSON simple API (PEP 691) and verified by the sha256 it
/// publishes, with its binary extracted to `target`. `TSTORE_UV_INDEX_URL`
/// names another index.
pub fn install_uv(store: &Store, version: &str, target: &Path) -> anyhow::Result<()> {
    let client = http::client()?;
    let index =
        std::env::var("TSTORE_UV_INDEX_URL").unwrap_or_else(|_| "https://pypi.org/simple".into());
    let url = format!("{}/uv/", index.trim_end_matches('/'));
    let project: serde_json::Value = client
        .get(&url)
        .header("Accept", "application/vnd.pypi.simple.v1+json")
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.bytes())
        .with_context(|| format!("cannot read {url}"))
        .and_then(|body| {
            serde_json::from_slice(&body).with_context(|| format!("unexpected answer from {url}"))
        })?;
    let arch = std::env::consts::ARCH;
    let platform_word = match std::env::consts::OS {
        "linux" => "manylinux",
        "macos" => "macosx",
        other => bail!(
            "installing uv automatically is not supported on {other}: install uv and set TSTORE_UV"
        ),
    };
    let prefix = format!("uv-{version}-");
    let files = project["files"]
        .as_array()
        .context("the index answered without a file list")?;
    let file = files
        .iter()
        .find(|f| {
            let name = f["filename"].as_str().unwrap_or("");
            name.starts_with(&prefix)
                && name.ends_with(".whl")
                && name.contains(platform_word)
                && (name.contains(arch) || (arch == "aarch64" && name.contains("arm64")))
        })
        .with_context(|| {
            format!(
                "uv {version} has no wheel for {arch} on {} at {url}",
                std::env::consts::OS
            )
        })?;
    let pinned = PinnedFile {
        location: Location::Url(file["url"].as_str().unwrap_or_default().to_string()),
        filename: file["filename"].as_str().unwrap_or_default().to_string(),
        size: file["size"].as_u64(),
        sha256: file["hashes"]["sha256"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    };
    let (temp, _) = download_verified(store, &client, &pinned, &crate::progress::Silent)?;
    let mut archive = zip::ZipArchive::new(fs_err::File::open(&temp.0)?)?;
    let member = format!("uv-{version}.data/scripts/uv");
    let mut entry = archive
        .by_name(&member)
        .with_context(|| format!("{} has no {member}", pinned.filename))?;
    let dir = target.parent().context("uv target has no parent")?;
    fs_err::create_dir_all(dir)?;
    let partial = dir.join(format!(".uv.partial-{}", std::process::id()));
    {
        let mut out = fs_err::File::create(&partial)?;
        std::io::copy(&mut entry, &mut out)?;
    }
    use std::os::unix::fs::PermissionsExt;
    fs_err::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))?;
    fs_err::rename(&partial, target)?;
    Ok(())
}

//! Getting every distribution a tier needs into the store.
//!
//! What the store already has is decided by sha256 (a wheel) or by the
//! sdist's sha256 (a wheel tstore built), so a repeat downloads nothing.
//! The rest is downloaded in parallel, checked against the lock's size and
//! sha256 before anything is ingested, and ingested right away. Packages the
//! lock offers only as sdists are built once with `uv build --wheel`.

use std::cmp::Reverse;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rayon::prelude::*;

use crate::budget::{MemoryBudget, Reserved};
use crate::dist::{PinnedFile, Selected, Source};
use crate::failures::Failures;
use crate::http;
use crate::interpreter::Interpreter;
use crate::platform;
use crate::progress::{Progress, timed};
use crate::store::Store;
use crate::store::ahead::{Ahead, InflatedAhead};
use crate::store::bytecode::{Compiler, sources_to_compile};
use crate::store::db::Db;
use crate::store::ingest::{
    Ingested, UnrecordedWheel, WheelContent, WheelFile, ingest_wheel, record_wheels, stage_wheel,
};
use crate::store::stage::Stage;
use crate::uv::Uv;

/// Downloads at once unless told otherwise (`TSTORE_CONCURRENT_DOWNLOADS`).
/// Many small wheels wait on round trips more than on bandwidth: a cold,
/// lazy tekton-dev (167 wheels) took 5.04 s with 8, 4.76 s with 16 and
/// 4.55 s with 32; tekton-data (90) 2.94, 2.69 and 2.80 s (ext4, medians of
/// 5 interleaved runs). 16 was best for tekton-data and near 32 for
/// tekton-dev; peak memory rose from 214-273 MB with 8 to 281-322 MB with
/// 16 and 293-326 MB with 32 (uv's default is 50).
pub const DEFAULT_CONCURRENT_DOWNLOADS: usize = 16;

/// The progress phases of a fetch: they overlap (one file is unpacked into
/// the store while others still download).
const DOWNLOADING: &str = "downloading";
const UNPACKING: &str = "unpacking";

#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Use only what the store has; fail naming what is missing.
    pub offline: bool,
    /// Downloads (each followed by its unpacking) at once; at least 1.
    pub concurrent_downloads: usize,
}

/// A selected distribution and how the store has it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub selected: Selected,
    pub stored: Stored,
}

/// How a fetched distribution is in the store.
#[derive(Debug, Clone)]
pub enum Stored {
    /// Recorded in the index under this id.
    Recorded(i64),
    /// A wheel whose objects the fetch staged (a new store's first
    /// install): its objects are in `objects/`, its rows not in the index
    /// yet. [`record`] writes them; materializing does so on another thread
    /// while it plans and links from these rows.
    Unrecorded(Arc<UnrecordedWheel>),
}

impl Stored {
    /// The wheel to record, if it is not recorded yet.
    fn unrecorded(&self) -> Option<&UnrecordedWheel> {
        match self {
            Self::Recorded(_) => None,
            Self::Unrecorded(wheel) => Some(wheel),
        }
    }
}

impl Fetched {
    /// Its id in the index; `None` until it is recorded.
    pub fn dist_id(&self) -> Option<i64> {
        match self.stored {
            Stored::Recorded(id) => Some(id),
            Stored::Unrecorded(_) => None,
        }
    }
}

/// Records `wheels` in one transaction, if there are any; their ids, in
/// order.
fn record_all(db: &Db, wheels: &[&UnrecordedWheel]) -> anyhow::Result<Vec<i64>> {
    if wheels.is_empty() {
        return Ok(Vec::new());
    }
    record_wheels(db, wheels)
}

/// Records the wheels of `fetched` the index lacks, in one transaction on
/// `db`; returns the id of every item of `fetched`, in order.
pub fn record(db: &Db, fetched: &[Fetched]) -> anyhow::Result<Vec<i64>> {
    let unrecorded: Vec<&UnrecordedWheel> = fetched
        .iter()
        .filter_map(|item| item.stored.unrecorded())
        .collect();
    let mut new_ids = record_all(db, &unrecorded)?.into_iter();
    fetched
        .iter()
        .map(|item| match item.stored {
            Stored::Recorded(id) => Ok(id),
            Stored::Unrecorded(_) => new_ids
                .next()
                .context("the index returned fewer ids than wheels recorded"),
        })
        .collect()
}

/// [`record`], then every item of `fetched` is [`Stored::Recorded`].
pub fn record_in_place(
    db: &Db,
    fetched: &mut [Fetched],
    progress: &dyn Progress,
) -> anyhow::Result<()> {
    let count = unrecorded_count(fetched);
    if count == 0 {
        return Ok(());
    }
    let step = format!("recording {count} staged wheels");
    let ids = timed(progress, &step, || record(db, fetched))?;
    for (item, id) in fetched.iter_mut().zip(ids) {
        item.stored = Stored::Recorded(id);
    }
    Ok(())
}

/// How many items of `fetched` are not recorded yet.
pub fn unrecorded_count(fetched: &[Fetched]) -> usize {
    fetched
        .iter()
        .filter(|item| item.stored.unrecorded().is_some())
        .count()
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

/// Makes sure every distribution in `selected` is in the store. Each
/// wheel that comes in has its sources handed to `compiler`, if given, as
/// soon as it is stored, except the wheels of a stage (a new store's
/// shards), which come back [`Stored::Unrecorded`]: the caller records
/// them ([`record`]), and materializing compiles them.
pub fn fetch(
    store: &Store,
    uv: Option<&Uv>,
    interpreter: &Interpreter,
    selected: &[Selected],
    options: &FetchOptions,
    compiler: Option<&Compiler>,
    progress: &dyn Progress,
) -> anyhow::Result<(Vec<Fetched>, FetchReport)> {
    let fetcher = Fetcher {
        store,
        uv,
        interpreter,
        options,
        compiler,
        progress,
        in_memory: MemoryBudget::new(IN_MEMORY_WHEELS),
    };
    let mut report = FetchReport::default();
    let done = fetcher.find_stored(selected, &mut report)?;
    let missing: Vec<usize> = (0..selected.len()).filter(|&i| done[i].is_none()).collect();
    if !missing.is_empty() && options.offline {
        return Err(offline_error(selected, &missing));
    }
    let mut stored: Vec<Option<Stored>> = done
        .into_iter()
        .map(|id| id.map(Stored::Recorded))
        .collect();
    if !missing.is_empty() {
        for (i, got) in fetcher.fetch_missing(selected, &missing, &mut report)? {
            stored[i] = Some(got);
        }
    }
    let fetched = selected
        .iter()
        .zip(stored)
        .map(|(item, stored)| Fetched {
            selected: item.clone(),
            stored: stored.expect("every missing item was fetched or reported"),
        })
        .collect();
    Ok((fetched, report))
}

/// What every step of one fetch shares.
struct Fetcher<'a> {
    store: &'a Store,
    uv: Option<&'a Uv>,
    interpreter: &'a Interpreter,
    options: &'a FetchOptions,
    compiler: Option<&'a Compiler>,
    progress: &'a dyn Progress,
    /// Wheels held in memory now.
    in_memory: MemoryBudget,
}

impl Fetcher<'_> {
    /// Each item's record in the store, if it has one; a local project not
    /// built yet is built now (it needs no download).
    fn find_stored(
        &self,
        selected: &[Selected],
        report: &mut FetchReport,
    ) -> anyhow::Result<Vec<Option<i64>>> {
        let db = &self.store.db;
        let mut done = Vec::with_capacity(selected.len());
        for item in selected {
            let known = match &item.source {
                Source::Wheel(w) => db.distribution_by_sha256(&w.sha256)?.map(|d| d.id),
                Source::Sdist(s) => db.sdist_build(&s.sha256)?.map(|d| d.id),
                Source::Local { path, editable } => {
                    let key = local_build_key(path, *editable)?;
                    match db.sdist_build(&key)? {
                        Some(known) => Some(known.id),
                        None => {
                            done.push(Some(self.build_local(item, &key)?));
                            report.built += 1;
                            continue;
                        }
                    }
                }
            };
            report.already_stored += usize::from(known.is_some());
            done.push(known);
        }
        Ok(done)
    }

    /// Downloads (and for sdists builds) the `missing` items in parallel;
    /// returns each one's index in `selected` and how it is stored, or one
    /// error naming every failure.
    fn fetch_missing(
        &self,
        selected: &[Selected],
        missing: &[usize],
        report: &mut FetchReport,
    ) -> anyhow::Result<Vec<(usize, Stored)>> {
        let total_bytes: u64 = missing
            .iter()
            .filter_map(|&i| selected[i].pinned().and_then(|p| p.size))
            .sum();
        self.progress
            .start(DOWNLOADING, missing.len() as u64, total_bytes);
        self.progress.start(UNPACKING, missing.len() as u64, 0);
        // A new store's objects are written at their final names in a
        // stage and moved in a shard at a time; the caller records the
        // wheels after.
        let stage = Stage::begin(self.store)?;
        let staging = (stage.shards() > 0).then_some(&stage);
        let mut results = self.fetch_in_parallel(selected, missing, staging)?;
        // They end in any order: record and report them in the lock's.
        results.sort_unstable_by_key(|(i, _)| *i);
        self.progress.finish();
        // What arrived counts even when other downloads failed.
        if staging.is_some() {
            timed(self.progress, "moving staged objects in", || {
                stage.publish()
            })?;
        }
        let mut stored = Vec::with_capacity(results.len());
        let mut failures = Failures::default();
        for (i, result) in results {
            match result {
                Ok((got, bytes)) => {
                    report.bytes += bytes;
                    stored.push((
                        i,
                        match got {
                            Ingested::Recorded(id) => Stored::Recorded(id),
                            Ingested::Unrecorded(wheel) => Stored::Unrecorded(Arc::new(wheel)),
                        },
                    ));
                }
                Err(err) => failures.push(err),
            }
        }
        if let Err(failed) =
            failures.into_result(|failed| format!("{failed} of {} downloads failed", missing.len()))
        {
            // What arrived counts even when other downloads failed.
            let arrived: Vec<&UnrecordedWheel> = stored
                .iter()
                .filter_map(|(_, got)| got.unrecorded())
                .collect();
            record_all(&self.store.db, &arrived)?;
            return Err(failed.into());
        }
        let built = missing
            .iter()
            .filter(|&&i| matches!(selected[i].source, Source::Sdist(_)))
            .count();
        report.built += built;
        report.downloaded = missing.len() - built;
        Ok(stored)
    }

    /// Fetches each of `missing` on a pool of the configured number of
    /// downloads; each result with its index in `selected`.
    fn fetch_in_parallel(
        &self,
        selected: &[Selected],
        missing: &[usize],
        stage: Option<&Stage>,
    ) -> anyhow::Result<Vec<(usize, FetchResult)>> {
        let client = http::client()?;
        let at_once = self.options.concurrent_downloads.clamp(1, missing.len());
        self.progress
            .detail(&format!("{} to download, {at_once} at once", missing.len()));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(at_once)
            .build()?;
        Ok(pool.install(|| {
            largest_first(selected, missing)
                .into_iter()
                .par_bridge()
                .map(|i| {
                    let item = &selected[i];
                    let result = self
                        .fetch_one(&client, item, stage)
                        .and_then(|(got, size)| {
                            if let Ingested::Recorded(id) = got {
                                self.start_compiling(item, id)?;
                            }
                            Ok((got, size))
                        });
                    if result.is_ok() {
                        self.progress.item_done_in(UNPACKING, &item.name);
                    }
                    let context = || format!("cannot fetch {} {}", item.name, item.version);
                    (i, result.with_context(context))
                })
                .collect()
        }))
    }

    /// Gets one wheel or sdist into the store (a wheel's new objects into
    /// `stage` where it holds their shard): its record and size.
    fn fetch_one(
        &self,
        client: &reqwest::blocking::Client,
        item: &Selected,
        stage: Option<&Stage>,
    ) -> anyhow::Result<(Ingested, u64)> {
        match &item.source {
            Source::Local { .. } => unreachable!("local projects are built before downloading"),
            Source::Wheel(wheel) => self.fetch_wheel(client, wheel, stage),
            Source::Sdist(sdist) => self
                .fetch_and_build_sdist(client, item, sdist)
                .map(|(id, size)| (Ingested::Recorded(id), size)),
        }
    }

    /// Hands the sources of the distribution `id` (just stored) to the
    /// compiler, if there is one.
    fn start_compiling(&self, item: &Selected, id: i64) -> anyhow::Result<()> {
        let Some(compiler) = self.compiler else {
            return Ok(());
        };
        let rows = self
            .store
            .db
            .distribution_files_with_bytecode(id, Some(compiler.tag()))?;
        compiler.submit(&sources_to_compile(&item.name, &rows)?)
    }

    /// Downloads `pinned` into the store's tmp dir and verifies it against the lock.
    fn download_verified(
        &self,
        client: &reqwest::blocking::Client,
        pinned: &PinnedFile,
    ) -> anyhow::Result<(TempFile, u64)> {
        let temp = TempFile(self.store.temp_path("download"));
        let got = http::download(client, pinned.location.origin(), &temp.0, self.progress)?;
        self.verify_download(pinned, &got)?;
        Ok((temp, got.size))
    }

    /// Downloads the wheel `pinned`, verified against the lock: into memory
    /// when the lock gives its size and it fits in what is left of
    /// [`IN_MEMORY_WHEELS`], else into the store's tmp dir.
    fn download_wheel<'f>(
        &'f self,
        client: &reqwest::blocking::Client,
        pinned: &PinnedFile,
    ) -> anyhow::Result<(DownloadedWheel<'f>, u64)> {
        if let Some(held) = pinned.size.and_then(|size| self.in_memory.take(size)) {
            let (bytes, got) = http::download_to_memory(
                client,
                pinned.location.origin(),
                held.size(),
                self.progress,
            )?;
            self.verify_download(pinned, &got)?;
            return Ok((DownloadedWheel::Memory { bytes, _held: held }, got.size));
        }
        let temp = TempFile(self.store.temp_path("download"));
        let ahead = self.inflate_ahead(&temp.0);
        let watcher = ahead.as_ref().map(|ahead| ahead as &dyn http::Watcher);
        let got = http::download_watched(
            client,
            pinned.location.origin(),
            &temp.0,
            self.progress,
            watcher,
        )?;
        self.verify_download(pinned, &got)?;
        let inflated = ahead.map(Ahead::finish);
        Ok((DownloadedWheel::File(temp, inflated), got.size))
    }

    /// Starts inflating the large entries of the wheel about to be
    /// downloaded into `path` as their bytes arrive; `None` (they are
    /// inflated after the download, as for any wheel) when it cannot start.
    fn inflate_ahead(&self, path: &Path) -> Option<Ahead> {
        // Elsewhere it could inflate nothing (see `store::inflate`).
        if !platform::reserves_blocks(&self.store.tmp_dir()) {
            return None;
        }
        let started = std::fs::File::create(path)
            .and_then(|_| Ahead::start(path, self.store.temp_path("ahead")));
        started
            .inspect_err(|err| {
                self.progress
                    .detail(&format!("not inflating ahead of the download: {err}"))
            })
            .ok()
    }

    fn verify_download(&self, pinned: &PinnedFile, got: &http::Downloaded) -> anyhow::Result<()> {
        got.check(&pinned.sha256, pinned.size)
            .map_err(|mismatch| MismatchError {
                filename: pinned.filename.clone(),
                location: pinned.location.to_string(),
                what: mismatch.what,
                expected: mismatch.expected,
                actual: mismatch.actual,
            })?;
        self.progress.item_done_in(DOWNLOADING, &pinned.filename);
        Ok(())
    }

    fn fetch_wheel(
        &self,
        client: &reqwest::blocking::Client,
        wheel: &PinnedFile,
        stage: Option<&Stage>,
    ) -> anyhow::Result<(Ingested, u64)> {
        let (downloaded, size) = self.download_wheel(client, wheel)?;
        let url = wheel.location.to_string();
        let got = stage_wheel(
            self.store,
            stage,
            &WheelFile {
                content: downloaded.content(),
                filename: &wheel.filename,
                sha256: &wheel.sha256,
                size,
                url: Some(&url),
                built_from_sdist: None,
                // `download_wheel` checked it against the lock.
                pinned: true,
                inflated_ahead: downloaded.inflated_ahead(),
            },
        )?;
        if let Some(taken) = downloaded.inflated_ahead().map(InflatedAhead::taken)
            && taken > 0
        {
            let filename = &wheel.filename;
            self.progress.detail(&format!(
                "{filename}: {taken} large file(s) inflated while it downloaded"
            ));
        }
        Ok((got, size))
    }

    fn fetch_and_build_sdist(
        &self,
        client: &reqwest::blocking::Client,
        item: &Selected,
        sdist: &PinnedFile,
    ) -> anyhow::Result<(i64, u64)> {
        let uv = self.uv.context("building an sdist needs uv")?;
        let (temp, size) = self.download_verified(client, sdist)?;
        let work = crate::store::tmp::temp_dir(self.store, "build")?;
        // uv recognizes an sdist by its file name.
        let named = work.path().join(&sdist.filename);
        fs_err::rename(&temp.0, &named)?;
        let out_dir = work.path().join("dist");
        self.progress.detail(&format!(
            "building {} {} from its sdist",
            item.name, item.version
        ));
        let mut cmd = self.build_command(uv, &out_dir);
        cmd.arg(&named);
        uv.run(&mut cmd)
            .with_context(|| format!("cannot build a wheel from {}", sdist.filename))?;
        let url = sdist.location.to_string();
        let id = ingest_built_wheel(self.store, &out_dir, &sdist.filename, &url, &sdist.sha256)?;
        Ok((id, size))
    }

    /// Builds a local project's wheel with uv and ingests it under `key`.
    fn build_local(&self, item: &Selected, key: &str) -> anyhow::Result<i64> {
        let Source::Local { path, .. } = &item.source else {
            unreachable!("called for local projects only")
        };
        let uv = self.uv.context("building a local project needs uv")?;
        let work = crate::store::tmp::temp_dir(self.store, "build")?;
        let out_dir = work.path().join("dist");
        self.progress
            .start(&format!("building {}", item.name), 0, 0);
        let mut cmd = self.build_command(uv, &out_dir);
        if self.options.offline {
            cmd.arg("--offline");
        }
        cmd.arg(path);
        let built = uv.run(&mut cmd);
        self.progress.finish();
        built.with_context(|| {
            format!(
                "cannot build {} from {} (uv build --wheel)",
                item.name,
                path.display()
            )
        })?;
        let url = format!("file://{}", path.display());
        let id =
            ingest_built_wheel(self.store, &out_dir, &path.display().to_string(), &url, key)
                .with_context(|| format!("cannot store the wheel built from {}", path.display()))?;
        self.progress
            .detail(&format!("built {} from {}", item.name, path.display()));
        Ok(id)
    }

    /// `uv build --wheel` for the tier's interpreter into `out_dir`; the
    /// caller adds what to build.
    fn build_command(&self, uv: &Uv, out_dir: &Path) -> std::process::Command {
        let mut cmd = uv.command();
        cmd.args(["build", "--wheel", "--quiet", "--python"])
            .arg(&self.interpreter.executable)
            .arg("--out-dir")
            .arg(out_dir);
        cmd
    }
}

/// The indices of `missing` in the order to fetch them: sdists first (a
/// build takes longer than any download), then wheels by size, largest
/// first, those whose size the lock does not give before all. As uv does:
/// the longest jobs start at once and overlap the many small ones, so the
/// last to finish is a small wheel whose unpacking is short, not a large
/// one that began late and is unpacked after every other download ended.
fn largest_first(selected: &[Selected], missing: &[usize]) -> Vec<usize> {
    let mut order = missing.to_vec();
    order.sort_by_key(|&i| {
        let item = &selected[i];
        let is_wheel = !matches!(item.source, Source::Sdist(_));
        let size = item.pinned().and_then(|p| p.size).unwrap_or(u64::MAX);
        (is_wheel, Reverse(size))
    });
    order
}

/// `--offline` with distributions the store lacks: names every one.
fn offline_error(selected: &[Selected], missing: &[usize]) -> anyhow::Error {
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
    anyhow::anyhow!(
        "--offline: the store lacks {} distribution(s): {}. Run `tstore fetch` with network access \
         (or import them) first",
        names.len(),
        names.join(", ")
    )
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
            content: WheelContent::File(&wheel),
            filename: &filename,
            sha256: &sha256,
            size,
            url: Some(url),
            built_from_sdist: Some(built_from),
            // Built here: nothing pins its hash.
            pinned: false,
            inflated_ahead: None,
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

/// What fetching one item gave: its record (or a wheel to record) and the
/// bytes downloaded.
type FetchResult = anyhow::Result<(Ingested, u64)>;

/// How many bytes of wheels may be held in memory at once. A wheel whose
/// size the lock gives is downloaded into memory and ingested from there
/// when it fits, never written to disk and read back (the largest of
/// tekton-ai is 42 MiB); the others (PyTorch's is ~800 MB) go through a
/// file. Memory, not speed, sets it: a cold tekton-ai took as long with
/// 256 MiB (and 64 MiB of entries) and peaked 312-343 MB, against 285-291
/// MB with this and 32 MiB of entries (BENCHMARKS.md).
const IN_MEMORY_WHEELS: u64 = 64 << 20;

/// A downloaded wheel, verified, where it was put.
enum DownloadedWheel<'f> {
    /// The bytes, counted against the budget while they are held.
    Memory { bytes: Vec<u8>, _held: Reserved<'f> },
    /// The file, and the large entries inflated while it downloaded.
    File(TempFile, Option<InflatedAhead>),
}

impl DownloadedWheel<'_> {
    fn content(&self) -> WheelContent<'_> {
        match self {
            Self::Memory { bytes, .. } => WheelContent::Memory(bytes),
            Self::File(temp, _) => WheelContent::File(&temp.0),
        }
    }

    fn inflated_ahead(&self) -> Option<&InflatedAhead> {
        match self {
            Self::Memory { .. } => None,
            Self::File(_, ahead) => ahead.as_ref(),
        }
    }
}

impl http::Watcher for Ahead {
    fn written(&self, total: u64) {
        Ahead::written(self, total);
    }

    fn restarting(&self) {
        self.stop();
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::Location;

    fn pinned(name: &str, size: Option<u64>, sdist: bool) -> Selected {
        let file = PinnedFile {
            location: Location::Url(format!("https://example.org/{name}")),
            filename: name.to_string(),
            size,
            sha256: "00".repeat(32),
        };
        Selected {
            name: name.to_string(),
            version: "1".to_string(),
            source: if sdist {
                Source::Sdist(file)
            } else {
                Source::Wheel(file)
            },
        }
    }

    #[test]
    fn sdists_start_first_then_the_largest_wheels() {
        let selected = vec![
            pinned("small", Some(10), false),
            pinned("torch", Some(800 << 20), false),
            pinned("unsized", None, false),
            pinned("middle", Some(5 << 20), false),
            pinned("tiny-sdist", Some(2 << 10), true),
            pinned("stored", Some(900 << 20), false),
            pinned("big-sdist", Some(1 << 30), true),
        ];
        // `stored` is in the store already: only the missing ones are ordered.
        let order = largest_first(&selected, &[0, 1, 2, 3, 4, 6]);
        let names: Vec<&str> = order.iter().map(|&i| selected[i].name.as_str()).collect();
        assert_eq!(
            names,
            [
                "big-sdist",
                "tiny-sdist",
                "unsized",
                "torch",
                "middle",
                "small"
            ]
        );
    }
}

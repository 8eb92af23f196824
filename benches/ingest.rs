//! `cargo bench --bench ingest`: tstore's ingest against `unzip` of the
//! same wheels, on the same filesystem.
//!
//! The wheels a lock selects for this machine's Python
//! (`TSTORE_BENCH_LOCK`, default `pylock.tekton-core.toml`;
//! `TSTORE_BENCH_PYTHON`, default `python3.11`) are downloaded once into
//! `TSTORE_BENCH_WHEELS` (default `target/bench-wheels`) and checked
//! against the lock. Then, `TSTORE_BENCH_RUNS` times (default 5), one
//! approach after another, each into a fresh directory under
//! `TSTORE_BENCH_DIR` (default a temp dir; give a folder on the filesystem
//! to measure):
//!
//! - `unzip`: `unzip -q` of each wheel into its own folder, one after another;
//! - `unzip ×N`: the same, N wheels at once (N = cores), as tstore runs;
//! - `tstore ingest`: `ingest_wheel` of every wheel into a new store, N at
//!   once: every entry read, blake3 hashed, its size checked against RECORD
//!   (whose sha256s are taken as given: the wheels matched the lock, as a
//!   download does),
//!   staged, published as an object, recorded in the index (what a store
//!   that already has objects does);
//! - `tstore staged`: what a first install does: `stage_wheel` of every
//!   wheel, N at once, objects written at their final names in a stage,
//!   then the stage moved in and the wheels recorded in one transaction.
//!
//! The page cache holds the wheels throughout (they are read once before
//! timing); written files are not synced by either side. Prints the median
//! of each and its ratio to `unzip ×N`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use tstore::dist::Source;
use tstore::http::{self, Origin};
use tstore::interpreter::Interpreter;
use tstore::lock::PyLock;
use tstore::progress::Silent;
use tstore::store::Store;
use tstore::store::ingest::{
    Ingested, WheelContent, WheelFile, ingest_wheel, record_wheels, stage_wheel,
};
use tstore::store::stage::Stage;

struct Wheel {
    path: PathBuf,
    filename: String,
    sha256: String,
    size: u64,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn main() {
    let runs: usize = env_or("TSTORE_BENCH_RUNS", "5")
        .parse()
        .expect("a number of runs");
    let base = std::env::var("TSTORE_BENCH_DIR").map_or_else(
        |_| tempfile::tempdir().expect("a temp dir").keep(),
        PathBuf::from,
    );
    let wheels = download_wheels(&base);
    let bytes: u64 = wheels.iter().map(|w| w.size).sum();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "{} wheels, {:.1} MiB, in {}; {cores} cores, {runs} runs",
        wheels.len(),
        bytes as f64 / (1 << 20) as f64,
        base.display()
    );
    for wheel in &wheels {
        std::fs::read(&wheel.path).expect("a wheel");
    }
    let mut samples: [Vec<Duration>; 4] = Default::default();
    for run in 0..runs {
        let dir = base.join(format!("run-{run}"));
        samples[0].push(timed(|| unzip_all(&wheels, &dir.join("unzip"), 1)));
        samples[1].push(timed(|| unzip_all(&wheels, &dir.join("unzip-n"), cores)));
        samples[2].push(timed(|| ingest_all(&wheels, &dir.join("store"), cores)));
        samples[3].push(timed(|| ingest_staged(&wheels, &dir.join("staged"), cores)));
        std::fs::remove_dir_all(&dir).expect("removing a run's files");
    }
    let parallel_unzip = median(&samples[1]);
    for (name, times) in [
        ("unzip".to_string(), &samples[0]),
        (format!("unzip ×{cores}"), &samples[1]),
        ("tstore ingest".to_string(), &samples[2]),
        ("tstore staged".to_string(), &samples[3]),
    ] {
        let m = median(times);
        println!(
            "{name:>14}: median {:>7.3} s  {:>6.1} MiB/s  {:.2}× unzip ×{cores}   runs {:?}",
            m.as_secs_f64(),
            bytes as f64 / (1 << 20) as f64 / m.as_secs_f64(),
            m.as_secs_f64() / parallel_unzip.as_secs_f64(),
            times
                .iter()
                .map(|t| (t.as_secs_f64() * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>()
        );
    }
}

/// The lock's wheels for this machine, downloaded once and checked.
fn download_wheels(base: &Path) -> Vec<Wheel> {
    let lock_path = PathBuf::from(env_or("TSTORE_BENCH_LOCK", "pylock.tekton-core.toml"));
    let cache = PathBuf::from(env_or("TSTORE_BENCH_WHEELS", "target/bench-wheels"));
    std::fs::create_dir_all(&cache).expect("the wheel cache");
    let store = Store::open(&base.join("probe")).expect("a store for the interpreter query");
    let python = which(&env_or("TSTORE_BENCH_PYTHON", "python3.11"));
    let interpreter = Interpreter::query(&store, &python).expect("the interpreter");
    let (lock, _) = PyLock::read(&lock_path).expect("the lock");
    let lock_dir = lock_path.parent().unwrap_or(Path::new("."));
    let selected = lock
        .select(&interpreter, lock_dir, &lock_path)
        .expect("the lock's wheels for this Python");
    let client = http::client().expect("an HTTP client");
    selected
        .iter()
        .filter_map(|item| match &item.source {
            Source::Wheel(pinned) => Some(pinned),
            _ => None,
        })
        .map(|pinned| {
            let path = cache.join(&pinned.filename);
            let got = http::download(&client, Origin::File(&path), &base.join("check"), &Silent)
                .ok()
                .filter(|got| got.check(&pinned.sha256, pinned.size).is_ok());
            let got = match got {
                Some(got) => got,
                None => {
                    let got = http::download(&client, pinned.location.origin(), &path, &Silent)
                        .expect("a download");
                    got.check(&pinned.sha256, pinned.size)
                        .expect("the wheel the lock names");
                    got
                }
            };
            Wheel {
                path,
                filename: pinned.filename.clone(),
                sha256: pinned.sha256.clone(),
                size: got.size,
            }
        })
        .collect()
}

fn which(name: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .expect("sh");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn unzip_all(wheels: &[Wheel], dir: &Path, at_once: usize) {
    std::fs::create_dir_all(dir).expect("unzip's folder");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(at_once)
        .build()
        .expect("a thread pool");
    pool.install(|| {
        wheels.par_iter().enumerate().for_each(|(i, wheel)| {
            let status = Command::new("unzip")
                .args(["-q", "-o"])
                .arg(&wheel.path)
                .arg("-d")
                .arg(dir.join(i.to_string()))
                .status()
                .expect("unzip");
            assert!(status.success(), "unzip {}", wheel.path.display());
        });
    });
}

fn ingest_all(wheels: &[Wheel], home: &Path, at_once: usize) {
    let store = Store::open(home).expect("a new store");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(at_once)
        .build()
        .expect("a thread pool");
    pool.install(|| {
        wheels.par_iter().for_each(|wheel| {
            ingest_wheel(&store, &wheel_file(wheel)).expect("an ingest");
        });
    });
}

fn ingest_staged(wheels: &[Wheel], home: &Path, at_once: usize) {
    let store = Store::open(home).expect("a new store");
    let stage = Stage::begin(&store).expect("a stage");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(at_once)
        .build()
        .expect("a thread pool");
    let ingested: Vec<Ingested> = pool.install(|| {
        wheels
            .par_iter()
            .map(|wheel| stage_wheel(&store, Some(&stage), &wheel_file(wheel)).expect("an ingest"))
            .collect()
    });
    stage.publish().expect("the stage moved in");
    let staged: Vec<_> = ingested
        .into_iter()
        .filter_map(|got| match got {
            Ingested::Unrecorded(wheel) => Some(wheel),
            Ingested::Recorded(_) => None,
        })
        .collect();
    record_wheels(&store.db, &staged).expect("the wheels recorded");
}

fn wheel_file(wheel: &Wheel) -> WheelFile<'_> {
    WheelFile {
        content: WheelContent::File(&wheel.path),
        filename: &wheel.filename,
        sha256: &wheel.sha256,
        size: wheel.size,
        url: None,
        built_from_sdist: None,
        // Checked against the lock when the wheels were listed.
        pinned: true,
        inflated_ahead: None,
    }
}

fn timed(run: impl FnOnce()) -> Duration {
    let started = Instant::now();
    run();
    started.elapsed()
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

//! `cargo bench --bench materialize`: a synthetic tier (wheels built here,
//! shaped like a mid-size real tier) through the library:
//!
//! - ingest of every wheel into an empty store, beside `unzip -q` of the same
//!   wheels into a fresh folder (what a plain unpack costs);
//! - warm materialize (store full, venv removed);
//! - no-op materialize (nothing changed).
//!
//! Each figure is the median of `TSTORE_BENCH_RUNS` runs (default 5), the
//! two ingest approaches interleaved run by run. Needs uv and Python 3.11.
//! Environment: `TSTORE_BENCH_PACKAGES` (default 80), `TSTORE_BENCH_FILES`
//! per package (default 60), `TSTORE_BENCH_DIR` (default: the system temp dir;
//! choose where the filesystem under test is).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::Digest;
use tstore::config::{LinkMode, Tier};
use tstore::dist::{Location, PinnedFile, Selected, Source};
use tstore::fetch::{Fetched, Stored};
use tstore::interpreter::Interpreter;
use tstore::materialize::{self, MaterializeOptions, Outcome, TierInput};
use tstore::progress::Silent;
use tstore::store::Store;
use tstore::store::ingest::{WheelContent, WheelFile, ingest_wheel};
use tstore::uv::Uv;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct BenchWheel {
    path: PathBuf,
    filename: String,
    name: String,
    sha256: String,
    size: u64,
}

/// A wheel of `files` Python modules of a few KiB each (source-like text).
fn build_wheel(dir: &Path, index: usize, files: usize) -> BenchWheel {
    let name = format!("benchpkg{index}");
    let filename = format!("{name}-1.0-py3-none-any.whl");
    let path = dir.join(&filename);
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let mut record = String::new();
    let mut add = |zip: &mut zip::ZipWriter<std::fs::File>, entry: &str, content: &[u8]| {
        zip.start_file(entry, options).unwrap();
        zip.write_all(content).unwrap();
        let digest = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(content));
        record.push_str(&format!("{entry},sha256={digest},{}\n", content.len()));
    };
    for file in 0..files {
        let body: String = (0..(40 + file % 80))
            .map(|line| format!("def function_{index}_{file}_{line}(value):\n    return value * {line} + {index}\n\n"))
            .collect();
        add(
            &mut zip,
            &format!("{name}/module_{file}.py"),
            body.as_bytes(),
        );
    }
    add(&mut zip, &format!("{name}/__init__.py"), b"");
    let dist_info = format!("{name}-1.0.dist-info");
    add(
        &mut zip,
        &format!("{dist_info}/METADATA"),
        format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n").as_bytes(),
    );
    add(
        &mut zip,
        &format!("{dist_info}/WHEEL"),
        b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    );
    record.push_str(&format!("{dist_info}/RECORD,,\n"));
    zip.start_file(format!("{dist_info}/RECORD"), options)
        .unwrap();
    zip.write_all(record.as_bytes()).unwrap();
    zip.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    BenchWheel {
        sha256: hex::encode(sha2::Sha256::digest(&bytes)),
        size: bytes.len() as u64,
        path,
        filename,
        name,
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ingest_all(store: &Store, wheels: &[BenchWheel]) -> Vec<i64> {
    use rayon::prelude::*;
    wheels
        .par_iter()
        .map(|w| {
            ingest_wheel(
                store,
                &WheelFile {
                    content: WheelContent::File(&w.path),
                    filename: &w.filename,
                    sha256: &w.sha256,
                    size: w.size,
                    url: None,
                    built_from_sdist: None,
                    // Made here, pinned by no lock: RECORD is checked.
                    pinned: false,
                    inflated_ahead: None,
                },
            )
            .unwrap()
        })
        .collect()
}

fn main() {
    let runs = env_number("TSTORE_BENCH_RUNS", 5);
    let packages = env_number("TSTORE_BENCH_PACKAGES", 80);
    let files = env_number("TSTORE_BENCH_FILES", 60);
    let base = std::env::var_os("TSTORE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let work = tempfile::tempdir_in(&base).unwrap();
    let wheel_dir = work.path().join("wheels");
    std::fs::create_dir_all(&wheel_dir).unwrap();
    let wheels: Vec<BenchWheel> = (0..packages)
        .map(|i| build_wheel(&wheel_dir, i, files))
        .collect();
    let wheel_bytes: u64 = wheels.iter().map(|w| w.size).sum();
    let unpacked_files = packages * (files + 4);

    let (ingest, unzip) = ingest_vs_unzip(work.path(), &wheels, runs);
    let materialized = warm_and_noop(work.path(), &wheels, runs);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (ingest, unzip) = (median(ingest), median(unzip));
    let (warm, noop) = (median(materialized.warm), median(materialized.noop));
    println!(
        "synthetic tier: {packages} wheels, {unpacked_files} files, {:.1} MiB of wheels; {runs} runs; dir {}",
        wheel_bytes as f64 / (1 << 20) as f64,
        base.display()
    );
    println!("{:<28} {:>10}", "measure", "median ms");
    println!("{:<28} {:>10.1}", "ingest (tstore)", ms(ingest));
    println!("{:<28} {:>10.1}", "unzip -q (plain unpack)", ms(unzip));
    println!(
        "{:<28} {:>10.2}",
        "ingest / unzip",
        ingest.as_secs_f64() / unzip.as_secs_f64()
    );
    println!(
        "{:<28} {:>10.1}",
        format!(
            "warm materialize ({})",
            materialized
                .method
                .map(|m| m.to_string())
                .unwrap_or_default()
        ),
        ms(warm)
    );
    println!("{:<28} {:>10.1}", "no-op materialize", ms(noop));
}

/// Ingesting the wheels into a fresh store against unzipping them, run by
/// run, interleaved so both see the same machine.
fn ingest_vs_unzip(
    work: &Path,
    wheels: &[BenchWheel],
    runs: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let (mut ingest, mut unzip) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let store = Store::open(&work.join(format!("ingest-store-{run}"))).unwrap();
        let started = Instant::now();
        ingest_all(&store, wheels);
        ingest.push(started.elapsed());

        let target = work.join(format!("unzip-{run}"));
        std::fs::create_dir_all(&target).unwrap();
        let started = Instant::now();
        for wheel in wheels {
            let status = Command::new("unzip")
                .args(["-q", "-o"])
                .arg(&wheel.path)
                .arg("-d")
                .arg(&target)
                .status()
                .unwrap();
            assert!(status.success());
        }
        unzip.push(started.elapsed());
    }
    (ingest, unzip)
}

/// Times of a warm materialize (every object stored) and of a no-op one.
struct Materialized {
    warm: Vec<Duration>,
    noop: Vec<Duration>,
    method: Option<materialize::LinkMethod>,
}

/// Materializes the wheels as one tier from a full store, `runs` times
/// from scratch, each followed by a no-op materialize.
fn warm_and_noop(work: &Path, wheels: &[BenchWheel], runs: usize) -> Materialized {
    let store = Store::open(&work.join("store")).unwrap();
    let ids = ingest_all(&store, wheels);
    let uv = Uv::locate(&store, &Silent).expect("uv is needed for the bench");
    let interpreter =
        Interpreter::find(&uv, &store, "3.11", true).expect("Python 3.11 is needed for the bench");
    let fetched = fetched_from(wheels, &ids);
    let tier = bench_tier(work.join("venvs/bench"));
    let lock_path = work.join("pylock.bench.toml");
    let input = TierInput {
        inputs_key: "bench".into(),
        store: &store,
        uv: &uv,
        interpreter: &interpreter,
        tier: &tier,
        config_label: "bench".into(),
        lock_path: &lock_path,
        lock_bytes: b"",
        fetched: &fetched,
        compiling: None,
    };
    let options = MaterializeOptions {
        link_mode: LinkMode::Auto,
        force: false,
        keep_generations: 1,
    };
    let mut times = Materialized {
        warm: Vec::new(),
        noop: Vec::new(),
        method: None,
    };
    for _ in 0..runs {
        let _ = std::fs::remove_dir_all(&tier.venv);
        let started = Instant::now();
        match materialize::materialize(&input, &options, &Silent).unwrap() {
            Outcome::Built(report) => times.method = Some(report.method),
            other => panic!("a removed venv cannot be {other:?}"),
        }
        times.warm.push(started.elapsed());
        let started = Instant::now();
        assert!(matches!(
            materialize::materialize(&input, &options, &Silent).unwrap(),
            Outcome::UpToDate { .. }
        ));
        times.noop.push(started.elapsed());
    }
    times
}

/// The ingested wheels as a lock would have selected them.
fn fetched_from(wheels: &[BenchWheel], ids: &[i64]) -> Vec<Fetched> {
    wheels
        .iter()
        .zip(ids)
        .map(|(w, id)| Fetched {
            selected: Selected {
                name: w.name.clone(),
                version: "1.0".into(),
                source: Source::Wheel(PinnedFile {
                    location: Location::File(w.path.clone()),
                    filename: w.filename.clone(),
                    size: Some(w.size),
                    sha256: w.sha256.clone(),
                }),
            },
            stored: Stored::Recorded(*id),
        })
        .collect()
}

/// A tier of nothing but the bench's wheels, built at `venv`.
fn bench_tier(venv: PathBuf) -> Tier {
    Tier {
        name: "bench".into(),
        variant_of: None,
        python: "3.11".into(),
        venv,
        requirements: Vec::new(),
        constraints: Vec::new(),
        index: Default::default(),
        components: Vec::new(),
        compile_bytecode: tstore::config::BytecodeMode::Off,
        solve_group: tstore::config::SolveGroup::Default,
    }
}

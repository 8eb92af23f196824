//! `cargo bench --bench open`: what trusting the index costs every command.
//!
//! A store shaped like Tekton's five tiers (`TSTORE_BENCH_DISTS`
//! distributions, default 450, of 40 files each; `TSTORE_BENCH_TIERS` tiers
//! of 3 kept generations, default 5) is opened again and again: the full
//! `Store::open` (directories, the index, the checks of `store::health`,
//! dead runs' temp files) beside `Db::open` of the same index alone. Medians
//! of `TSTORE_BENCH_RUNS` opens (default 101), the two interleaved.

use std::path::Path;
use std::time::{Duration, Instant};

use tstore::store::Store;
use tstore::store::db::{Bytecode, Db, FileRow, GenerationRow, NewDistribution};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Records `dists` distributions and `tiers` tiers of three generations.
fn populate(store: &Store, dists: usize, tiers: usize) {
    let mut ids = Vec::new();
    for d in 0..dists {
        let name = format!("pkg{d}");
        let files: Vec<FileRow> = (0..40)
            .map(|f| FileRow {
                path: format!("{name}/m{f}.py"),
                object: tstore::store::ObjectKey::parse(&format!("{:064x}", d * 1000 + f)),
                mode: 0o644,
                size: 4096,
                sha256: "x".into(),
                bytecode: Bytecode::Unknown,
            })
            .collect();
        let sha = format!("{d:064x}");
        let id = store
            .db
            .insert_distribution(
                &NewDistribution {
                    name: &name,
                    version: "1.0",
                    filename: &format!("{name}-1.0-py3-none-any.whl"),
                    sha256: &sha,
                    size: 1 << 20,
                    tags: "py3-none-any",
                    url: None,
                    built_from_sdist: None,
                },
                &files,
            )
            .unwrap();
        ids.push(id);
    }
    for t in 0..tiers {
        for number in 1..=3 {
            let venv = format!("/venvs/tier{t}");
            store
                .db
                .record_generation(
                    &format!("tier{t}"),
                    "bench",
                    &GenerationRow {
                        venv: venv.clone(),
                        number,
                        path: format!("/venvs/.tstore-generations/tier{t}/{number}"),
                        plan: format!("plan{t}-{number}"),
                        lock: "lock".into(),
                        link_method: tstore::link::LinkMethod::Hardlink,
                        created_at: 0,
                    },
                    &ids[t * 10..t * 10 + dists / 2],
                )
                .unwrap();
        }
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let dists = env_number("TSTORE_BENCH_DISTS", 450);
    let tiers = env_number("TSTORE_BENCH_TIERS", 5);
    let runs = env_number("TSTORE_BENCH_RUNS", 101);
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("store");
    populate(&Store::open(&home).unwrap(), dists, tiers);
    let index = home.join("v1/store.db");
    let (mut full, mut bare) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let started = Instant::now();
        drop(Store::open(&home).unwrap());
        full.push(started.elapsed());
        let started = Instant::now();
        drop(Db::open(Path::new(&index)).unwrap());
        bare.push(started.elapsed());
    }
    let (full, bare) = (median(full), median(bare));
    println!(
        "store with {dists} distributions, {tiers} tiers x 3 generations; median of {runs} opens"
    );
    println!(
        "Store::open (checks included): {:>8.2} ms",
        full.as_secs_f64() * 1e3
    );
    println!(
        "Db::open alone:                {:>8.2} ms",
        bare.as_secs_f64() * 1e3
    );
    println!(
        "difference:                    {:>8.2} ms",
        (full.as_secs_f64() - bare.as_secs_f64()) * 1e3
    );
}

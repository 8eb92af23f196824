//! `cargo bench --bench compare -- [--profile small|full] [--tiers T1,T2] [--runs N] [--no-cold]
//! [--no-many] [--fs ext4|xfs|here] [--fs-size SIZE] [--disk-only] [--no-replay]
//! [--replay-only] [--smoke]
//! [--tstore-link-mode auto|reflink|hardlink|copy] [--tstore-bytecode true|lazy|false]
//! [--out DIR]`
//!
//! tstore against what users would pick instead, on Tekton's real tiers (the
//! embedded default tiers.toml), side by side in one run:
//!
//! - **tstore**: `tstore materialize TIER` from a full store;
//! - **uv**: `uv venv` + `uv pip sync --link-mode hardlink --offline` from a
//!   warm uv cache, on the same pinned versions (tstore's locks written as
//!   `name==version ; marker` pins: uv 0.13 re-downloads every wheel of a
//!   pylock.toml on each sync, which would not be a warm install);
//! - **copy**: the same with `--link-mode copy` (what pip gives; uv copies
//!   with `copy_file_range`, which on XFS shares the cache's extents like a
//!   reflink, so there the copies cost little time and disk);
//! - **uv + bytecode**: uv hardlink with `--compile-bytecode`, from a copy
//!   of the same warm cache: venvs as quick to import as tstore's;
//! - **cp -al** (warm only): a single-threaded copy of links of the very
//!   generation tstore just built: the floor of building that tree.
//!
//! Scenarios: warm (store/cache full, bytecode compiled, venv gone), no-op
//! (nothing changed), first import of the tier's main packages right after
//! a warm install (tstore links pycs; uv and copies have none), tstore's
//! first build of a tier (which compiles its bytecode once), cold (store/cache
//! empty; network-bound: reported, not chased), upgrade (the lock moves from
//! a month-old resolution to today's), and disk use of all tiers per
//! approach, as the free space deleting them gives back (`du` counts
//! reflinked extents in full), and many venvs: one per Tekton component of
//! the profile's tiers ([`COMPONENTS`]), with what each venv after the first
//! adds on disk. Every time is the median of `--runs` (default 5),
//! the approaches interleaved run by run. Results: a table on stdout,
//! `results.json` and `chart.svg` in `--out` (default `target/bench-compare`).
//!
//! Disk the way users see it (bytes, so a loaded machine does not disturb
//! them): **after use** runs the same import workload in every venv of
//! every approach (every top-level module of every distribution, each in a
//! fresh interpreter that may write bytecode: see `support::workload`) and
//! measures store + venvs, uv cache + venvs and copies before and after it,
//! for the profile's tiers and for the many venvs; **one more venv** is what
//! a second venv of each tier adds (directory blocks included), before and
//! after use; the **upgrade replay** materializes four weekly locks (uv's
//! `--exclude-newer` 28, 21, 14 and 7 days ago) and runs `tstore gc` after
//! each, against `uv pip sync` of the same pins into one venv per tier, and
//! compares the store's growth with the bytes of the files that changed.
//! After use, `tstore gc` runs and the disk is measured again: it shares
//! the pycs Python wrote in tstore's venvs (what `--tstore-bytecode lazy`
//! relies on; `TSTORE_COMPILE_BYTECODE` is set for every tstore command).
//! Sizes are `du` of the union of the trees (a hardlinked inode once), apart
//! from the final totals, which are the free space deleting them gives back.
//!
//! Profiles: `small` = tekton-core, tekton-ai (minutes); `full` = all five
//! tiers (tekton-ml alone is 3.1 GB of wheels); `--tiers` names the tiers
//! instead (comma-separated, any of the five), to measure some of them
//! without the others. Needs uv, Python 3.11,
//! network to PyPI, and `du`. `--fs ext4|xfs` makes a sparse image of
//! `--fs-size` (default 20G) with `mkfs.ext4` (journaled) or `mkfs.xfs` in
//! `TSTORE_BENCH_DIR` (default: the system temp dir), loop-mounts it (root
//! only) and runs everything inside, unmounting it at the end, also on a
//! panic; `--fs here` (the default) runs in `TSTORE_BENCH_DIR` itself.
//! `--disk-only` skips the timed scenarios; `--replay-only` runs the
//! upgrade replay alone (it has its own store, cache and venvs), without
//! the after-use import workload, which imports every module of every
//! distribution in every venv; `--smoke` (what CI runs, with a debug build: `cargo test --bench compare -- --smoke`) checks that the
//! harness works: tekton-core only, disk scenarios only (a few modules per
//! venv), no many venvs, no replay; it asserts no figure.

mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use std::process::Command;
use std::time::{Duration, Instant};
use support::{flag, median, pins_from_lock, settle, shell, try_run as run};

struct Bench {
    work: PathBuf,
    tstore: PathBuf,
    /// `--tstore-link-mode`: passed to every `tstore materialize`.
    link_mode: Option<String>,
    /// `--tstore-bytecode`: `TSTORE_COMPILE_BYTECODE` for every tstore command.
    bytecode: Option<String>,
    /// `--smoke`: lock only the tiers measured, import a few modules per
    /// venv; enough to show every step runs.
    smoke: bool,
}

/// Modules the smoke imports per venv.
const SMOKE_MODULES: usize = 5;

#[derive(serde::Serialize, Default, Clone)]
struct TierResult {
    tier: String,
    packages: usize,
    /// Median seconds per approach and scenario.
    warm: Triple,
    noop: Triple,
    cold: Triple,
    /// First import of the tier's main packages (see [`first_import`]) in a
    /// venv just installed: tstore links pycs, uv and copies have none.
    first_import: Triple,
    /// tstore's first build of the tier with a full store: compiles its
    /// bytecode once (seconds, one run).
    first_build: f64,
    /// uv with `--compile-bytecode` (hardlink, its own warm cache): what a
    /// venv as fast to import as tstore's costs with uv.
    uv_compiled: UvCompiled,
    /// `cp -al` of the generation tstore built (median seconds, warm).
    warm_floor: f64,
}

#[derive(serde::Serialize, Default, Clone, Copy)]
struct UvCompiled {
    warm: f64,
    first_import: f64,
}

#[derive(serde::Serialize, Default, Clone, Copy)]
struct Triple {
    tstore: f64,
    uv: f64,
    copy: f64,
}

#[derive(serde::Serialize, Default)]
struct Results {
    date: String,
    machine: String,
    filesystem: String,
    versions: String,
    /// tstore's `compile-bytecode` (true, lazy or false): what its first
    /// import has to start from.
    tstore_bytecode: String,
    profile: String,
    runs: usize,
    tiers: Vec<TierResult>,
    /// Bytes on disk for all tiers: the free space deleting them gave back.
    disk: Triple,
    /// The same for uv with `--compile-bytecode` (its cache and venvs).
    disk_uv_compiled: f64,
    /// `du -s` of each directory alone (counts reflinked extents in full).
    disk_parts: Vec<(String, u64)>,
    upgrade: Option<Upgrade>,
    many: Option<ManyVenvs>,
    after_use: Option<AfterUse>,
    replay: Option<Replay>,
}

/// The profile's tiers before and after the import workload, and one more
/// venv of each tier.
#[derive(serde::Serialize, Default)]
struct AfterUse {
    /// Union of store/cache and venvs (`du`, each inode once), bytes.
    before_use: Triple,
    after_use: Triple,
    /// After use, then `tstore gc` (only tstore's figure can change).
    after_gc: Triple,
    tiers: Vec<TierUse>,
}

#[derive(serde::Serialize, Default)]
struct TierUse {
    tier: String,
    /// Top-level modules imported in each approach's venv.
    modules: usize,
    /// The modules that failed, per approach (tstore, uv, copy).
    failed: [Vec<String>; 3],
    /// Bytes the workload added to each approach's venv of this tier.
    added_by_use: Triple,
    /// What one more venv of the tier adds to the union (bytes; copy: the
    /// venv alone), right after it is built and after the workload ran in it.
    one_more_before_use: Triple,
    one_more_after_use: Triple,
}

/// Four weekly locks of each tier, materialized one after another.
#[derive(serde::Serialize, Default)]
struct Replay {
    tiers: Vec<String>,
    weeks: Vec<Week>,
}

#[derive(serde::Serialize, Default)]
struct Week {
    /// uv's `--exclude-newer` for this week's locks.
    date: String,
    /// Packages (name + version) not in last week's locks, all tiers.
    packages_changed: usize,
    /// `du` of the store after materialize + `tstore gc` (bytes).
    store: u64,
    /// Of `store`, the objects alone; the rest is metadata (index, its
    /// records, manifests, lock snapshots), which grows with the files of
    /// each new distribution, changed or not.
    store_objects: u64,
    /// The store and the venv root (kept generations) together.
    store_and_venvs: u64,
    /// `du` of uv's cache after `uv pip sync` of the same pins.
    uv_cache: u64,
    uv_cache_and_venvs: u64,
    /// Allocated bytes of the contents in this week's venvs (tstore's
    /// generations, bytecode included) that were in none of last week's.
    changed_files: u64,
}

/// One venv per Tekton component (see [`COMPONENTS`]).
#[derive(serde::Serialize, Default)]
struct ManyVenvs {
    venvs: usize,
    /// Free space given back by deleting everything: store or cache and
    /// every venv (bytes).
    disk: Triple,
    /// Union of store/cache and every venv before and after the import
    /// workload ran in every venv (`du`, bytes).
    before_use: Triple,
    after_use: Triple,
    after_gc: Triple,
    /// Imports that failed, summed over the venvs (tstore, uv, copy).
    imports_failed: [usize; 3],
    /// What each venv after the first added, store or cache already full
    /// (bytes, mean over the others).
    per_extra_venv: Triple,
    /// Median seconds to build one venv, store or cache already full.
    seconds_per_venv: Triple,
}

#[derive(serde::Serialize, Default)]
struct Upgrade {
    tier: String,
    packages_changed: usize,
    tstore_seconds: f64,
    uv_seconds: f64,
    tstore_store_growth: u64,
    uv_cache_growth: u64,
}

fn main() {
    let smoke = support::switch("--smoke");
    let profile = flag("--profile").unwrap_or_else(|| "small".into());
    let named = flag("--tiers");
    let tiers = if smoke {
        vec!["tekton-core"]
    } else if let Some(named) = &named {
        named_tiers(named)
    } else {
        profile_tiers(&profile)
    };
    let runs: usize = if smoke {
        1
    } else {
        flag("--runs").and_then(|r| r.parse().ok()).unwrap_or(5)
    };
    let disk_only = smoke || support::switch("--disk-only");
    let cold_runs = if smoke || disk_only || support::switch("--no-cold") {
        0
    } else {
        runs
    };
    // The many-venvs scenario of the full profile would build 16 plain
    // copies, four of them with PyTorch (about 34 GB).
    let many = !smoke && !support::switch("--no-many");
    let replay = !smoke && !support::switch("--no-replay");
    let replay_only = !smoke && support::switch("--replay-only");
    assert!(
        !replay_only || replay,
        "--replay-only and --no-replay ask for opposite things: give one"
    );
    let out = PathBuf::from(flag("--out").unwrap_or_else(|| "target/bench-compare".into()));
    // Declared before the work folder, so dropped after it: the folder is
    // deleted, then the image unmounted (on a panic too).
    let mounted = support::mount::filesystem_under_test(
        flag("--fs").as_deref(),
        &flag("--fs-size").unwrap_or_else(|| "20G".into()),
    )
    .unwrap_or_else(|e| panic!("filesystem under test: {e}"));
    let base = mounted
        .as_ref()
        .map_or_else(support::base_dir, |m| m.path().to_path_buf());
    let work = support::work_dir_in(&base, "tstore-compare-");
    let bench = Bench {
        work: work.path().to_path_buf(),
        tstore: PathBuf::from(env!("CARGO_BIN_EXE_tstore")),
        link_mode: flag("--tstore-link-mode"),
        bytecode: flag("--tstore-bytecode"),
        smoke,
    };
    std::fs::create_dir_all(&out).unwrap();

    let mut results = bench.results_header(&profile, runs);
    if smoke {
        results.profile = "smoke (tekton-core)".into();
    } else if named.is_some() {
        results.profile = tiers.join(", ");
    }
    eprintln!(
        "{} on {} ({}); {}",
        results.machine,
        results.filesystem,
        bench.work.display(),
        results.versions
    );
    if replay_only {
        results.replay = bench.upgrade_replay(&tiers);
        println!("{}", write_results(&out, &results));
        eprintln!(
            "wrote {}/results.json, chart.svg, results.txt",
            out.display()
        );
        return;
    }
    let first_builds = bench.warm_up(&tiers);
    for (tier, first_build) in tiers.iter().zip(first_builds) {
        let mut result = if disk_only {
            TierResult {
                tier: tier.to_string(),
                packages: bench.locked_packages(tier),
                ..TierResult::default()
            }
        } else {
            bench.measure_tier(tier, runs, cold_runs)
        };
        result.first_build = first_build;
        results.tiers.push(result);
    }
    // The upgrade uses the store's locks: measured before the disk figures,
    // which delete everything.
    if !disk_only && !smoke {
        results.upgrade = bench.upgrade(tiers[0]);
    }
    // The disk scenarios take long: what is measured is written after each,
    // so a run stopped early keeps it.
    results.after_use = Some(bench.after_use(&tiers));
    write_results(&out, &results);
    if replay {
        results.replay = bench.upgrade_replay(&tiers);
        write_results(&out, &results);
    }
    results.many = many.then(|| bench.many_venvs(&tiers));
    write_results(&out, &results);
    bench.measure_disk(&mut results);

    println!("{}", write_results(&out, &results));
    eprintln!(
        "wrote {}/results.json, chart.svg, results.txt",
        out.display()
    );
    drop(work);
    drop(mounted);
}

/// `results.json`, `chart.svg` and `results.txt` in `out`; returns the table.
fn write_results(out: &Path, results: &Results) -> String {
    let table = render_table(results);
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(results).unwrap(),
    )
    .unwrap();
    std::fs::write(out.join("chart.svg"), render_svg(results)).unwrap();
    std::fs::write(out.join("results.txt"), &table).unwrap();
    table
}

/// The tiers `--tiers` names, each one of the full profile's.
fn named_tiers(named: &str) -> Vec<&'static str> {
    let known = profile_tiers("full");
    named
        .split(',')
        .map(|name| {
            known
                .iter()
                .copied()
                .find(|tier| *tier == name.trim())
                .unwrap_or_else(|| panic!("unknown tier {name}: use any of {}", known.join(", ")))
        })
        .collect()
}

/// The tiers a `--profile` measures.
fn profile_tiers(profile: &str) -> Vec<&'static str> {
    match profile {
        "small" => vec!["tekton-core", "tekton-ai"],
        "full" => vec![
            "tekton-core",
            "tekton-ai",
            "tekton-data",
            "tekton-dev",
            "tekton-ml",
        ],
        other => panic!("unknown profile {other}: use small or full"),
    }
}

impl Bench {
    /// The results before any measure: when, where and with what.
    fn results_header(&self, profile: &str, runs: usize) -> Results {
        Results {
            date: support::now(),
            machine: support::machine(),
            filesystem: support::filesystem(&self.work),
            versions: format!(
                "tstore {} (link mode {}, compile-bytecode {}), {}, Python {}",
                env!("CARGO_PKG_VERSION"),
                self.link_mode.as_deref().unwrap_or("from tiers.toml: auto"),
                self.bytecode.as_deref().unwrap_or("true"),
                shell("uv --version"),
                shell(
                    "\"$(uv python find 3.11)\" -c 'import platform; print(platform.python_version())'"
                )
            ),
            tstore_bytecode: self.bytecode.clone().unwrap_or_else(|| "true".to_string()),
            profile: profile.to_string(),
            runs,
            ..Results::default()
        }
    }

    /// Locks every tier and fills both caches; returns the seconds of
    /// tstore's first build of each tier (it compiles its bytecode into the
    /// store: a one-time cost).
    fn warm_up(&self, tiers: &[&str]) -> Vec<f64> {
        // The full lock is what users get (tiers may share a solve group); the
        // smoke locks only what it measures.
        let mut lock = vec!["lock"];
        if self.smoke {
            lock.extend(tiers);
        }
        self.tstore(&lock).expect("tstore lock");
        self.tstore(
            &["fetch"]
                .iter()
                .copied()
                .chain(tiers.iter().copied())
                .collect::<Vec<_>>(),
        )
        .expect("tstore fetch");
        let mut first_builds = Vec::new();
        for tier in tiers {
            self.uv_install(tier, "hardlink", &self.work.join("warmup-venv"))
                .expect("uv warm-up");
            first_builds.push(
                self.tstore(&["materialize", "--frozen", tier])
                    .expect("tstore warm-up")
                    .as_secs_f64(),
            );
        }
        // Its files are links into uv's cache: gone, so that deleting the cache
        // and the measured venvs gives back everything they hold.
        std::fs::remove_dir_all(self.work.join("warmup-venv")).unwrap();
        // From here on uv installs from its cache alone (--offline).
        std::fs::write(self.work.join("uv-cache/.warm"), "").unwrap();
        // uv with --compile-bytecode gets a cache of its own (a plain copy), so
        // its disk total is measured apart from plain uv's.
        run(Command::new("cp")
            .args(["-a", "--reflink=never"])
            .arg(self.work.join("uv-cache"))
            .arg(self.work.join("uv-cache-pyc")))
        .expect("copy of uv's cache");
        first_builds
    }

    /// One tier's warm, no-op, first-import and cold figures (medians);
    /// `first_build` is left for the caller.
    fn measure_tier(&self, tier: &str, runs: usize, cold_runs: usize) -> TierResult {
        let mut samples: [Vec<Duration>; 12] = Default::default();
        for run in 0..runs {
            eprintln!("{tier}: run {}/{runs}", run + 1);
            self.warm_run(tier, &mut samples);
        }
        let m = |i: usize| median(&samples[i]);
        let mut cold = [Vec::new(), Vec::new(), Vec::new()];
        for run in 0..cold_runs {
            eprintln!("{tier}: cold run {}/{cold_runs}", run + 1);
            let (t, u, c) = self.cold(tier, run);
            cold[0].push(t);
            cold[1].push(u);
            cold[2].push(c);
        }
        TierResult {
            tier: tier.to_string(),
            packages: self.locked_packages(tier),
            warm: Triple {
                tstore: m(0),
                uv: m(1),
                copy: m(2),
            },
            noop: Triple {
                tstore: m(3),
                uv: m(4),
                copy: m(5),
            },
            first_build: 0.0,
            warm_floor: m(11),
            first_import: Triple {
                tstore: m(6),
                uv: m(7),
                copy: m(8),
            },
            uv_compiled: UvCompiled {
                warm: m(9),
                first_import: m(10),
            },
            cold: if cold_runs == 0 {
                Triple::default()
            } else {
                Triple {
                    tstore: median(&cold[0]),
                    uv: median(&cold[1]),
                    copy: median(&cold[2]),
                }
            },
        }
    }

    /// One run of each approach on a full cache: a warm build, the first
    /// import in each venv, then a no-op. `samples` is indexed as in
    /// [`Bench::measure_tier`].
    fn warm_run(&self, tier: &str, samples: &mut [Vec<Duration>; 12]) {
        let _ = self.tstore(&["remove", tier]);
        samples[0].push(self.tstore(&["materialize", "--frozen", tier]).unwrap());
        samples[11].push(self.copy_of_links(tier));
        samples[1].push(
            self.uv_install(tier, "hardlink", &self.venv("uv", tier))
                .unwrap(),
        );
        samples[2].push(
            self.uv_install(tier, "copy", &self.venv("copy", tier))
                .unwrap(),
        );
        samples[9].push(
            self.uv_install_from(
                "hardlink+bytecode",
                &self.venv("uvpyc", tier),
                &self.work.join("uv-cache-pyc"),
                &self.pins(tier),
            )
            .unwrap(),
        );
        for (i, venv) in [
            self.venv_of_tstore(tier),
            self.venv("uv", tier),
            self.venv("copy", tier),
            self.venv("uvpyc", tier),
        ]
        .iter()
        .enumerate()
        {
            let sample =
                timed(Command::new(venv.join("bin/python")).args(["-c", first_import(tier)]))
                    .unwrap();
            samples[if i < 3 { 6 + i } else { 10 }].push(sample);
        }
        samples[3].push(self.tstore(&["materialize", "--frozen", tier]).unwrap());
        samples[4].push(
            self.uv_sync(tier, "hardlink", &self.venv("uv", tier))
                .unwrap(),
        );
        samples[5].push(
            self.uv_sync(tier, "copy", &self.venv("copy", tier))
                .unwrap(),
        );
    }

    /// The floor: `cp -al` of the generation tstore just built for `tier`
    /// (the tier's path resolved), into a folder of its own.
    fn copy_of_links(&self, tier: &str) -> Duration {
        let generation = std::fs::canonicalize(self.venv_of_tstore(tier)).unwrap();
        let target = self.venv("cpal", tier);
        let _ = std::fs::remove_dir_all(&target);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        timed(Command::new("cp").arg("-al").arg(&generation).arg(&target)).unwrap()
    }

    /// Disk: every tier of the profile materialized by each approach. `du`
    /// per directory is kept for reference, but it counts a reflinked file's
    /// extents in full; the figures compared are the free space each
    /// approach gives back when it is deleted (after sync).
    fn measure_disk(&self, results: &mut Results) {
        let store = self.work.join("store");
        let venvs = self.work.join("home/venvs");
        for (name, dir) in [
            ("tstore store", store.clone()),
            ("tstore venvs", venvs.clone()),
            ("uv cache", self.work.join("uv-cache")),
            ("uv venvs", self.work.join("venvs-uv")),
            ("copy venvs", self.work.join("venvs-copy")),
        ] {
            results
                .disk_parts
                .push((name.to_string(), disk_bytes(&[&dir])));
        }
        results.disk_uv_compiled = self.freed_by_deleting(&[
            &self.work.join("uv-cache-pyc"),
            &self.work.join("venvs-uvpyc"),
        ]) as f64;
        results.disk = Triple {
            copy: self.freed_by_deleting(&[&self.work.join("venvs-copy")]) as f64,
            uv: self.freed_by_deleting(&[&self.work.join("uv-cache"), &self.work.join("venvs-uv")])
                as f64,
            tstore: self.freed_by_deleting(&[&venvs, &store]) as f64,
        };
    }
}

impl Bench {
    /// Free space gained by deleting `dirs` (after sync, before and after):
    /// what they really held, whatever shares extents or inodes with what.
    fn freed_by_deleting(&self, dirs: &[&Path]) -> u64 {
        settle();
        let before = tstore::fsinfo::free_bytes(&self.work).unwrap();
        // A scenario not run (--disk-only has no bytecode venvs) left none.
        for dir in dirs.iter().filter(|d| d.exists()) {
            std::fs::remove_dir_all(dir).unwrap();
        }
        // Filesystems may free blocks of deleted inodes in the background
        // (XFS): read until two readings 200 ms apart agree.
        let mut last = 0;
        for _ in 0..25 {
            settle();
            let free = tstore::fsinfo::free_bytes(&self.work).unwrap();
            if free == last {
                break;
            }
            last = free;
            std::thread::sleep(Duration::from_millis(200));
        }
        last.saturating_sub(before)
    }

    fn tstore_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.tstore);
        cmd.args(["-q"]).args(args);
        if let (Some(mode), Some(&"materialize")) = (&self.link_mode, args.first()) {
            cmd.args(["--link-mode", mode]);
        }
        if let Some(mode) = &self.bytecode {
            cmd.env("TSTORE_COMPILE_BYTECODE", mode);
        }
        cmd.current_dir(&self.work)
            .env("TSTORE_HOME", self.work.join("store"))
            .env("HOME", self.work.join("home"))
            .env("UV_CACHE_DIR", self.work.join("tstore-uv-cache"));
        cmd
    }

    fn tstore(&self, args: &[&str]) -> Result<Duration, String> {
        timed(&mut self.tstore_cmd(args))
    }

    fn lock(&self, tier: &str) -> PathBuf {
        self.work.join(format!("store/v1/locks/pylock.{tier}.toml"))
    }

    /// One venv per component of the profile's tiers, built by each approach
    /// from a full store or warm cache; disk as freed space, the marginal
    /// cost as what each venv after the first added.
    fn many_venvs(&self, tiers: &[&str]) -> ManyVenvs {
        let dir = self.work.join("many");
        let project = dir.join("project");
        std::fs::create_dir_all(&project).unwrap();
        let (toml, components) = components_toml(tiers, &dir.join("venvs-tstore"));
        std::fs::write(project.join("tiers.toml"), toml).unwrap();
        let store = dir.join("store");
        let tstore = |args: &[&str]| -> Result<Duration, String> {
            let mut cmd = self.tstore_cmd(args);
            cmd.current_dir(&project).env("TSTORE_HOME", &store);
            timed(&mut cmd)
        };
        eprintln!("many venvs: {} components", components.len());
        tstore(&["lock"]).expect("tstore lock (components)");
        // Warm-up: the store gets every wheel and its bytecode.
        for c in &components {
            tstore(&["materialize", "--frozen", c]).expect("tstore warm-up");
        }
        for c in &components {
            tstore(&["remove", c]).unwrap();
        }
        let cache = dir.join("uv-cache");
        let pins: Vec<PathBuf> = components
            .iter()
            .map(|c| {
                let path = dir.join(format!("pins-{c}.txt"));
                std::fs::write(
                    &path,
                    pins_from_lock(&project.join(format!("pylock.{c}.toml"))),
                )
                .unwrap();
                path
            })
            .collect();
        for pin in &pins {
            self.uv_install_from("hardlink", &dir.join("warmup-venv"), &cache, pin)
                .expect("uv warm-up");
        }
        std::fs::remove_dir_all(dir.join("warmup-venv")).unwrap();
        std::fs::write(cache.join(".warm"), "").unwrap();

        let free = || {
            settle();
            tstore::fsinfo::free_bytes(&dir).unwrap()
        };
        // Builds every venv with `build`, returning (median seconds, mean
        // bytes each venv after the first added).
        let measure = |build: &dyn Fn(usize) -> Duration| -> (f64, f64) {
            let mut seconds = Vec::new();
            let mut after_first = 0;
            for i in 0..components.len() {
                seconds.push(build(i));
                if i == 0 {
                    after_first = free();
                }
            }
            let added = after_first.saturating_sub(free());
            (
                median(&seconds),
                added as f64 / components.len().saturating_sub(1).max(1) as f64,
            )
        };
        let (ts_seconds, ts_extra) =
            measure(&|i| tstore(&["materialize", "--frozen", components[i]]).unwrap());
        let (uv_seconds, uv_extra) = measure(&|i| {
            self.uv_install_from(
                "hardlink",
                &dir.join("venvs-uv").join(components[i]),
                &cache,
                &pins[i],
            )
            .unwrap()
        });
        let (cp_seconds, cp_extra) = measure(&|i| {
            self.uv_install_from(
                "copy",
                &dir.join("venvs-copy").join(components[i]),
                &cache,
                &pins[i],
            )
            .unwrap()
        });
        // After use: the workload in every venv, the module list of each
        // component read from its uv venv (the same distributions in all).
        let unions = || Triple {
            tstore: disk_bytes(&[&store, &dir.join("venvs-tstore")]) as f64,
            uv: disk_bytes(&[&cache, &dir.join("venvs-uv")]) as f64,
            copy: disk_bytes(&[&dir.join("venvs-copy")]) as f64,
        };
        let before_use = unions();
        let mut imports_failed = [0; 3];
        for component in &components {
            let uv_venv = dir.join("venvs-uv").join(component);
            let modules = self.modules_of(&uv_venv);
            eprintln!(
                "many venvs: {component}: importing {} modules in each venv",
                modules.len()
            );
            let venvs = [
                dir.join("venvs-tstore").join(component),
                uv_venv,
                dir.join("venvs-copy").join(component),
            ];
            for (i, venv) in venvs.iter().enumerate() {
                imports_failed[i] += support::workload::import_each(
                    venv,
                    &modules,
                    &self.work.join("import-scratch"),
                )
                .failed
                .len();
            }
        }
        let after_use = unions();
        tstore(&["gc"]).expect("tstore gc after use (the components' store)");
        let after_gc = unions();
        ManyVenvs {
            venvs: components.len(),
            before_use,
            after_use,
            after_gc,
            imports_failed,
            per_extra_venv: Triple {
                tstore: ts_extra,
                uv: uv_extra,
                copy: cp_extra,
            },
            seconds_per_venv: Triple {
                tstore: ts_seconds,
                uv: uv_seconds,
                copy: cp_seconds,
            },
            disk: Triple {
                copy: self.freed_by_deleting(&[&dir.join("venvs-copy")]) as f64,
                uv: self.freed_by_deleting(&[&dir.join("venvs-uv"), &cache]) as f64,
                tstore: self.freed_by_deleting(&[&dir.join("venvs-tstore"), &store]) as f64,
            },
        }
    }

    /// Where tstore puts a tier (the default venv-root under the bench HOME).
    fn venv_of_tstore(&self, tier: &str) -> PathBuf {
        self.work.join("home/venvs").join(tier)
    }

    fn venv(&self, approach: &str, tier: &str) -> PathBuf {
        self.work.join(format!("venvs-{approach}")).join(tier)
    }

    fn uv(&self, cache: &Path) -> Command {
        let mut cmd = Command::new("uv");
        cmd.env("UV_CACHE_DIR", cache)
            .env("UV_NO_CONFIG", "1")
            .arg("--quiet");
        cmd
    }

    /// The tier's pins as a requirements file (name==version ; marker).
    /// uv 0.13 re-downloads every wheel of a pylock.toml on each sync, so a
    /// pylock would never let uv use its warm cache; pins do.
    fn pins(&self, tier: &str) -> PathBuf {
        let path = self.work.join(format!("pins-{tier}.txt"));
        if !path.exists() {
            std::fs::write(&path, pins_from_lock(&self.lock(tier))).unwrap();
        }
        path
    }

    /// `uv venv` + `uv pip sync` into a fresh `venv`, from the shared cache
    /// (offline once it is warm).
    fn uv_install(&self, tier: &str, mode: &str, venv: &Path) -> Result<Duration, String> {
        let cache = self.work.join("uv-cache");
        self.uv_install_from(mode, venv, &cache, &self.pins(tier))
    }

    fn uv_install_from(
        &self,
        mode: &str,
        venv: &Path,
        cache: &Path,
        pins: &Path,
    ) -> Result<Duration, String> {
        let _ = std::fs::remove_dir_all(venv);
        let offline = cache.join(".warm").exists();
        // "hardlink+bytecode": uv compiles the venv's bytecode as it installs.
        let (mode, compile) = match mode.strip_suffix("+bytecode") {
            Some(mode) => (mode, true),
            None => (mode, false),
        };
        settle();
        let started = Instant::now();
        run(self.uv(cache).args(["venv", "--python", "3.11"]).arg(venv))?;
        let mut sync = self.uv(cache);
        sync.args(["pip", "sync", "--link-mode", mode, "--python"])
            .arg(venv.join("bin/python"))
            .arg(pins);
        if offline {
            sync.arg("--offline");
        }
        if compile {
            sync.arg("--compile-bytecode");
        }
        run(&mut sync)?;
        Ok(started.elapsed())
    }

    /// `uv pip sync` into an existing, synced venv (the no-op).
    fn uv_sync(&self, tier: &str, mode: &str, venv: &Path) -> Result<Duration, String> {
        timed(
            self.uv(&self.work.join("uv-cache"))
                .args(["pip", "sync", "--offline", "--link-mode", mode, "--python"])
                .arg(venv.join("bin/python"))
                .arg(self.pins(tier)),
        )
    }

    /// Cold: empty store / empty uv cache, same locks.
    fn cold(&self, tier: &str, run: usize) -> (Duration, Duration, Duration) {
        let dir = self.work.join(format!("cold-{tier}-{run}"));
        let store = dir.join("store");
        std::fs::create_dir_all(store.join("v1/locks")).unwrap();
        std::fs::copy(
            self.lock(tier),
            store.join(format!("v1/locks/pylock.{tier}.toml")),
        )
        .unwrap();
        let t = timed(
            self.tstore_cmd(&["materialize", "--frozen", tier])
                .env("TSTORE_HOME", &store)
                .env("HOME", dir.join("home")),
        )
        .unwrap();
        let u = self
            .uv_install_from(
                "hardlink",
                &dir.join("uv-venv"),
                &dir.join("uv-cache"),
                &self.pins(tier),
            )
            .unwrap();
        let c = self
            .uv_install_from(
                "copy",
                &dir.join("copy-venv"),
                &dir.join("copy-cache"),
                &self.pins(tier),
            )
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (t, u, c)
    }

    fn locked_packages(&self, tier: &str) -> usize {
        std::fs::read_to_string(self.lock(tier))
            .map(|t| t.matches("[[packages]]").count())
            .unwrap_or(0)
    }

    /// The tier's lock as uv resolved it a month ago, then today's: time to
    /// move a venv from one to the other, and how much each cache grows.
    fn upgrade(&self, tier: &str) -> Option<Upgrade> {
        let dir = self.work.join("upgrade");
        std::fs::create_dir_all(&dir).unwrap();
        let month_ago = shell("date -u -d '30 days ago' +%Y-%m-%dT00:00:00Z");
        let old_lock = self.lock_as_of(tier, &month_ago, &dir)?;
        let current = std::fs::read_to_string(self.lock(tier)).ok()?;
        let old = std::fs::read_to_string(&old_lock).ok()?;
        let packages_changed = locked_versions(&current)
            .difference(&locked_versions(&old))
            .count();

        // tstore: a project tiers.toml whose lock is first the old one, then
        // today's, on a store of its own (the main store has today's already).
        let store = dir.join("store");
        let project = dir.join("project");
        std::fs::create_dir_all(&project).unwrap();
        let tiers_toml = tstore_tier_toml(tier, &self.work.join("upgrade-venvs"));
        std::fs::write(project.join("tiers.toml"), tiers_toml).unwrap();
        std::fs::copy(&old_lock, project.join(format!("pylock.{tier}.toml"))).unwrap();
        let materialize = || {
            self.tstore_cmd(&["materialize", "--frozen", tier])
                .current_dir(&project)
                .env("TSTORE_HOME", &store)
                .status()
                .unwrap()
        };
        materialize();
        let store_before = disk_bytes(&[&store]);
        std::fs::copy(self.lock(tier), project.join(format!("pylock.{tier}.toml"))).unwrap();
        let started = Instant::now();
        materialize();
        let tstore_seconds = started.elapsed().as_secs_f64();
        let tstore_store_growth = disk_bytes(&[&store]).saturating_sub(store_before);

        let cache = dir.join("uv-cache");
        let venv = dir.join("uv-venv");
        let old_pins = dir.join("old-pins.txt");
        std::fs::write(&old_pins, pins_from_lock(&old_lock)).unwrap();
        self.uv_install_from("hardlink", &venv, &cache, &old_pins)
            .ok()?;
        let cache_before = disk_bytes(&[&cache]);
        let started = Instant::now();
        run(self
            .uv(&cache)
            .args(["pip", "sync", "--link-mode", "hardlink", "--python"])
            .arg(venv.join("bin/python"))
            .arg(self.pins(tier)))
        .ok()?;
        Some(Upgrade {
            tier: tier.to_string(),
            packages_changed,
            tstore_seconds,
            uv_seconds: started.elapsed().as_secs_f64(),
            tstore_store_growth,
            uv_cache_growth: disk_bytes(&[&cache]).saturating_sub(cache_before),
        })
    }

    /// The tier's requirements locked by uv as of `date` (uv's
    /// `--exclude-newer`), in `dir`. The resolution has a uv cache of its
    /// own, so the caches measured hold only what installs put there.
    fn lock_as_of(&self, tier: &str, date: &str, dir: &Path) -> Option<PathBuf> {
        std::fs::create_dir_all(dir).unwrap();
        let old_lock = dir.join(format!("pylock.{tier}.toml"));
        // The tier's own requirements (a flat list of locked names would
        // lose the markers that keep Windows-only packages out).
        let requirements = dir.join(format!("requirements-{tier}.in"));
        let config = tstore::config::Config::parse(
            tstore::config::EMBEDDED_TIERS,
            tstore::config::ConfigSource::Embedded,
            Path::new("."),
        )
        .unwrap();
        let lines: Vec<String> = config
            .tier(tier)
            .unwrap()
            .requirements
            .iter()
            .map(|r| r.text.clone())
            .collect();
        std::fs::write(&requirements, lines.join("\n")).unwrap();
        run(self
            .uv(&self.work.join("resolve-uv-cache"))
            .args([
                "pip",
                "compile",
                "--universal",
                "--format",
                "pylock.toml",
                "--python-version",
                "3.11",
                "--no-header",
                "--exclude-newer",
                date,
            ])
            .arg(&requirements)
            .arg("-o")
            .arg(&old_lock))
        .ok()?;
        Some(old_lock)
    }
}

/// The disk scenarios: after use, one more venv, upgrade replay.
impl Bench {
    /// Store/cache and venvs of every approach, as `du` of their union.
    fn unions(&self) -> Triple {
        Triple {
            tstore: disk_bytes(&[&self.work.join("store"), &self.work.join("home/venvs")]) as f64,
            uv: disk_bytes(&[&self.work.join("uv-cache"), &self.work.join("venvs-uv")]) as f64,
            copy: disk_bytes(&[&self.work.join("venvs-copy")]) as f64,
        }
    }

    /// Every approach's venv of each tier built afresh (the warm runs'
    /// first imports wrote pycs into some), measured, used by the import
    /// workload, measured again; then one more venv of each tier.
    fn after_use(&self, tiers: &[&str]) -> AfterUse {
        let _ = std::fs::remove_dir_all(self.work.join("venvs-cpal"));
        let _ = std::fs::remove_dir_all(self.work.join("venvs-uvpyc"));
        for tier in tiers {
            let _ = self.tstore(&["remove", tier]);
            self.tstore(&["materialize", "--frozen", tier])
                .expect("tstore materialize");
            self.uv_install(tier, "hardlink", &self.venv("uv", tier))
                .expect("uv install");
            self.uv_install(tier, "copy", &self.venv("copy", tier))
                .expect("copy install");
        }
        // What the removed generations alone used (their manifests) goes, as
        // a user's `gc` would take it.
        self.tstore(&["gc"]).expect("tstore gc");
        let mut result = AfterUse {
            before_use: self.unions(),
            ..AfterUse::default()
        };
        for tier in tiers {
            result.tiers.push(self.use_tier(tier));
        }
        result.after_use = self.unions();
        self.tstore(&["gc"]).expect("tstore gc after use");
        result.after_gc = self.unions();
        for (tier, tier_use) in tiers.iter().zip(result.tiers.iter_mut()) {
            let (before, after) = self.one_more_venv(tier);
            tier_use.one_more_before_use = before;
            tier_use.one_more_after_use = after;
        }
        result
    }

    /// The top-level modules of a venv (a few of them in a smoke).
    fn modules_of(&self, venv: &Path) -> Vec<String> {
        let mut modules = support::workload::top_level_modules(venv);
        if self.smoke {
            modules.truncate(SMOKE_MODULES);
        }
        modules
    }

    /// The import workload in each approach's venv of `tier`.
    fn use_tier(&self, tier: &str) -> TierUse {
        let modules = self.modules_of(&self.venv("uv", tier));
        eprintln!(
            "{tier}: importing {} top-level modules in each venv",
            modules.len()
        );
        let venvs = [
            std::fs::canonicalize(self.venv_of_tstore(tier)).unwrap(),
            self.venv("uv", tier),
            self.venv("copy", tier),
        ];
        let mut added = [0.0; 3];
        let mut failed: [Vec<String>; 3] = Default::default();
        for (i, venv) in venvs.iter().enumerate() {
            let before = disk_bytes(&[venv]);
            failed[i] = support::workload::import_each(
                &self.venv_path_for_python(tier, i, venv),
                &modules,
                &self.work.join("import-scratch"),
            )
            .failed;
            added[i] = disk_bytes(&[venv]).saturating_sub(before) as f64;
        }
        TierUse {
            tier: tier.to_string(),
            modules: modules.len(),
            failed,
            added_by_use: Triple {
                tstore: added[0],
                uv: added[1],
                copy: added[2],
            },
            ..TierUse::default()
        }
    }

    /// The path Python runs from: tstore's venv through its stable path (as
    /// users run it), the others as they are.
    fn venv_path_for_python(&self, tier: &str, approach: usize, venv: &Path) -> PathBuf {
        if approach == 0 {
            self.venv_of_tstore(tier)
        } else {
            venv.to_path_buf()
        }
    }

    /// What one more venv of `tier` adds to each approach's union, right
    /// after it is built and after the workload ran in it; removed after.
    /// tstore's is a tier of another name with the same requirements and
    /// lock, in a venv root of its own, on the same store.
    fn one_more_venv(&self, tier: &str) -> (Triple, Triple) {
        let more = self.work.join("more");
        let project = more.join("project");
        let venv_root = self.work.join("home/venvs/more");
        std::fs::create_dir_all(&project).unwrap();
        let name = format!("{tier}-more");
        std::fs::write(
            project.join("tiers.toml"),
            renamed_tier_toml(tier, &name, &venv_root),
        )
        .unwrap();
        std::fs::copy(self.lock(tier), project.join(format!("pylock.{name}.toml"))).unwrap();
        let uv_venv = self.work.join("venvs-uv/more").join(tier);
        let copy_venv = self.work.join("venvs-copy/more").join(tier);

        let base = self.unions();
        let mut cmd = self.tstore_cmd(&["materialize", "--frozen", &name]);
        run(cmd.current_dir(&project)).expect("tstore: one more venv");
        self.uv_install(tier, "hardlink", &uv_venv)
            .expect("uv: one more venv");
        self.uv_install(tier, "copy", &copy_venv)
            .expect("copy: one more venv");
        let built = self.unions();
        let modules = self.modules_of(&uv_venv);
        let scratch = self.work.join("import-scratch");
        for venv in [venv_root.join(&name), uv_venv, copy_venv] {
            support::workload::import_each(&venv, &modules, &scratch);
        }
        let used = self.unions();
        for dir in [
            &more,
            &venv_root,
            &self.work.join("venvs-uv/more"),
            &self.work.join("venvs-copy/more"),
        ] {
            std::fs::remove_dir_all(dir).unwrap();
        }
        let minus = |a: &Triple, b: &Triple| Triple {
            tstore: a.tstore - b.tstore,
            uv: a.uv - b.uv,
            copy: a.copy - b.copy,
        };
        (minus(&built, &base), minus(&used, &base))
    }

    /// Four weekly locks of every tier (uv's `--exclude-newer` 28, 21, 14
    /// and 7 days ago): tstore materializes each week's and runs `gc`; uv
    /// syncs the same pins into one venv per tier, with one cache.
    fn upgrade_replay(&self, tiers: &[&str]) -> Option<Replay> {
        let dir = self.work.join("replay");
        let project = dir.join("project");
        let store = dir.join("store");
        let venv_root = dir.join("venvs-tstore");
        let cache = dir.join("uv-cache");
        let uv_venvs = dir.join("venvs-uv");
        std::fs::create_dir_all(&project).unwrap();
        std::fs::write(
            project.join("tiers.toml"),
            tstore_tier_toml("the replay's tiers", &venv_root),
        )
        .unwrap();
        let tstore = |args: &[&str]| {
            let mut cmd = self.tstore_cmd(args);
            cmd.current_dir(&project).env("TSTORE_HOME", &store);
            run(&mut cmd)
        };
        let mut replay = Replay {
            tiers: tiers.iter().map(|t| t.to_string()).collect(),
            weeks: Vec::new(),
        };
        let mut last_versions = std::collections::BTreeSet::new();
        let mut last_contents = std::collections::HashMap::new();
        for days in [28, 21, 14, 7] {
            let date = shell(&format!("date -u -d '{days} days ago' +%Y-%m-%dT00:00:00Z"));
            eprintln!("upgrade replay: locks as of {date}");
            let week_dir = dir.join(format!("week-{days}"));
            let mut versions = std::collections::BTreeSet::new();
            for tier in tiers {
                let lock = self.lock_as_of(tier, &date, &week_dir)?;
                std::fs::copy(&lock, project.join(format!("pylock.{tier}.toml"))).unwrap();
                versions.extend(locked_versions(&std::fs::read_to_string(&lock).unwrap()));
                let pins = week_dir.join(format!("pins-{tier}.txt"));
                std::fs::write(&pins, pins_from_lock(&lock)).unwrap();
                let venv = uv_venvs.join(tier);
                if venv.exists() {
                    run(self
                        .uv(&cache)
                        .args(["pip", "sync", "--link-mode", "hardlink", "--python"])
                        .arg(venv.join("bin/python"))
                        .arg(&pins))
                    .expect("uv pip sync (replay)");
                } else {
                    self.uv_install_from("hardlink", &venv, &cache, &pins)
                        .expect("uv install (replay)");
                }
            }
            let mut materialize = vec!["materialize", "--frozen"];
            materialize.extend(tiers);
            tstore(&materialize).expect("tstore materialize (replay)");
            tstore(&["gc"]).expect("tstore gc (replay)");
            let mut contents = std::collections::HashMap::new();
            for tier in tiers {
                contents.extend(support::workload::contents(&venv_root.join(tier)));
            }
            replay.weeks.push(Week {
                date,
                packages_changed: versions.difference(&last_versions).count(),
                store: disk_bytes(&[&store]),
                store_objects: disk_bytes(&[&tstore::store::Layout::of_home(&store).objects_dir()]),
                store_and_venvs: disk_bytes(&[&store, &venv_root]),
                uv_cache: disk_bytes(&[&cache]),
                uv_cache_and_venvs: disk_bytes(&[&cache, &uv_venvs]),
                changed_files: support::workload::changed_bytes(&last_contents, &contents),
            });
            last_versions = versions;
            last_contents = contents;
        }
        let _ = std::fs::remove_dir_all(&dir);
        Some(replay)
    }
}

/// The embedded tiers.toml, parsed.
fn embedded_config() -> tstore::config::Config {
    tstore::config::Config::parse(
        tstore::config::EMBEDDED_TIERS,
        tstore::config::ConfigSource::Embedded,
        Path::new("."),
    )
    .unwrap()
}

/// A tiers.toml with one tier, `name`, of the embedded `tier`'s
/// requirements, its venvs under `venv_root`.
fn renamed_tier_toml(tier: &str, name: &str, venv_root: &Path) -> String {
    let config = embedded_config();
    let quote = |text: &str| toml::Value::String(text.to_string()).to_string();
    let lines: Vec<String> = config
        .tier(tier)
        .unwrap()
        .requirements
        .iter()
        .map(|r| quote(&r.text))
        .collect();
    format!(
        "python = \"3.11\"\nvenv-root = {}\n\n[tiers.{name}]\nrequirements = [{}]\n",
        quote(&venv_root.display().to_string()),
        lines.join(", ")
    )
}

/// Each package's name and version, as quoted in a pylock file, read line
/// by line (enough for counting what an upgrade moved).
fn locked_versions(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut name = String::new();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = n.to_string();
        } else if let Some(v) = line.strip_prefix("version = ") {
            out.insert(format!("{name}{v}"));
        }
    }
    out
}

/// The embedded tier, as a project file (so its lock can be swapped).
fn tstore_tier_toml(tier: &str, venv_root: &Path) -> String {
    let embedded = tstore::config::EMBEDDED_TIERS;
    embedded.replace(
        "venv-root = \"~/venvs\"",
        &format!("venv-root = \"{}\"", venv_root.display()),
    ) + &format!("\n# bench: materializes {tier} from a swapped lock\n")
}

fn timed(cmd: &mut Command) -> Result<Duration, String> {
    settle();
    let started = Instant::now();
    run(cmd)?;
    Ok(started.elapsed())
}

/// Allocated bytes under `dirs`, each hardlinked inode once (`du -s` semantics).
fn disk_bytes(dirs: &[&Path]) -> u64 {
    let out = Command::new("du")
        .args(["-s", "-c", "--block-size=1"])
        .args(dirs)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Tekton's components (its README's tier map) with the tier each belongs
/// to and one package of its own: a stand-in for what a service adds to its
/// tier's sets, so that no two venvs are quite the same.
const COMPONENTS: &[(&str, &str, &str)] = &[
    ("apollo", "tekton-core", "schedule"),
    ("telos", "tekton-core", "networkx"),
    ("terma", "tekton-core", "pexpect"),
    ("prometheus", "tekton-core", "croniter"),
    ("budget", "tekton-ai", "tiktoken"),
    ("rhetor", "tekton-ai", "jinja2"),
    ("synthesis", "tekton-ai", "tenacity"),
    ("llmadapter", "tekton-ai", "aiolimiter"),
    ("ergon", "tekton-data", "sqlparse"),
    ("metis", "tekton-data", "tabulate"),
    ("harmonia", "tekton-data", "xmltodict"),
    ("dev", "tekton-dev", "pytest-xdist"),
    ("engram", "tekton-ml", "diskcache"),
    ("hermes", "tekton-ml", "msgpack"),
    ("sophia", "tekton-ml", "joblib"),
    ("athena", "tekton-ml", "rdflib"),
];

/// A tiers.toml with one tier per component of `tiers`: its tier's
/// requirements plus its own package.
fn components_toml(tiers: &[&str], venv_root: &Path) -> (String, Vec<&'static str>) {
    let config = embedded_config();
    let quote = |text: &str| toml::Value::String(text.to_string()).to_string();
    let mut text = format!(
        "python = \"3.11\"\nvenv-root = {}\n",
        quote(&venv_root.display().to_string())
    );
    let mut names = Vec::new();
    for (component, tier, extra) in COMPONENTS.iter().filter(|c| tiers.contains(&c.1)) {
        let mut lines: Vec<String> = config
            .tier(tier)
            .unwrap()
            .requirements
            .iter()
            .map(|r| quote(&r.text))
            .collect();
        lines.push(quote(extra));
        text.push_str(&format!(
            "\n[tiers.{component}]\nrequirements = [{}]\n",
            lines.join(", ")
        ));
        names.push(*component);
    }
    (text, names)
}

/// What a service of the tier imports first (nothing that reaches the network
/// on import: litellm fetches a price list).
fn first_import(tier: &str) -> &'static str {
    match tier {
        "tekton-core" => "import fastapi, pydantic",
        "tekton-ai" => "import fastapi, anthropic, openai",
        "tekton-data" => "import pandas, sqlalchemy",
        "tekton-dev" => "import pytest, mypy",
        "tekton-ml" => "import torch",
        _ => "import sys",
    }
}

fn render_table(r: &Results) -> String {
    let mut t = String::new();
    writeln!(
        t,
        "# tstore vs uv vs copies — {} ({} profile, median of {} runs)",
        r.date, r.profile, r.runs
    )
    .unwrap();
    writeln!(
        t,
        "# {}; filesystem {}; {}",
        r.machine, r.filesystem, r.versions
    )
    .unwrap();
    writeln!(
        t,
        "{:<12} {:>5} | {:>8} {:>8} {:>8} {:>6} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8}",
        "tier",
        "pkgs",
        "warm ts",
        "warm uv",
        "warm cp",
        "ts/uv",
        "noop ts",
        "noop uv",
        "noop cp",
        "cold ts",
        "cold uv",
        "cold cp"
    )
    .unwrap();
    // --disk-only leaves the timed figures at zero: not printed.
    let timed_tiers = || r.tiers.iter().filter(|t| t.warm.tstore > 0.0);
    for tier in timed_tiers() {
        writeln!(
            t,
            "{:<12} {:>5} | {:>7.3}s {:>7.3}s {:>7.3}s {:>6.2} | {:>7.3}s {:>7.3}s {:>7.3}s | {:>7.1}s {:>7.1}s {:>7.1}s",
            tier.tier,
            tier.packages,
            tier.warm.tstore,
            tier.warm.uv,
            tier.warm.copy,
            tier.warm.tstore / tier.warm.uv,
            tier.noop.tstore,
            tier.noop.uv,
            tier.noop.copy,
            tier.cold.tstore,
            tier.cold.uv,
            tier.cold.copy
        )
        .unwrap();
    }
    let tstore_pycs = match r.tstore_bytecode.as_str() {
        "false" => "no pycs",
        "lazy" => "pycs written as imported",
        _ => "linked pycs",
    };
    for tier in timed_tiers() {
        writeln!(
            t,
            "{}: tstore's first build (compiles bytecode once) {:.1}s; first import (`{}`): tstore {:.2}s ({tstore_pycs}), uv {:.2}s, copy {:.2}s (no pycs); uv --compile-bytecode: warm {:.2}s, first import {:.2}s",
            tier.tier,
            tier.first_build,
            first_import(&tier.tier),
            tier.first_import.tstore,
            tier.first_import.uv,
            tier.first_import.copy,
            tier.uv_compiled.warm,
            tier.uv_compiled.first_import
        )
        .unwrap();
    }
    let mib = |b: f64| b / (1 << 20) as f64;
    writeln!(
        t,
        "disk, all tiers (free space given back on delete): tstore (store + venvs) {:.0} MiB; uv (cache + venvs) {:.0} MiB; copies {:.0} MiB; uv --compile-bytecode (cache + venvs) {:.0} MiB",
        mib(r.disk.tstore),
        mib(r.disk.uv),
        mib(r.disk.copy),
        mib(r.disk_uv_compiled)
    )
    .unwrap();
    let parts: Vec<String> = r
        .disk_parts
        .iter()
        .map(|(name, bytes)| format!("{name} {:.0} MiB", mib(*bytes as f64)))
        .collect();
    writeln!(
        t,
        "  (du of each alone, reflinked extents counted in full: {})",
        parts.join(", ")
    )
    .unwrap();
    if let Some(m) = &r.many {
        writeln!(
            t,
            "many venvs ({}, one per component): disk tstore {:.0} MiB, uv {:.0} MiB, copies {:.0} MiB; \
             each venv after the first adds tstore {:.1} MiB, uv {:.1} MiB, copies {:.1} MiB; \
             median build per venv tstore {:.2}s, uv {:.2}s, copy {:.2}s",
            m.venvs,
            mib(m.disk.tstore),
            mib(m.disk.uv),
            mib(m.disk.copy),
            mib(m.per_extra_venv.tstore),
            mib(m.per_extra_venv.uv),
            mib(m.per_extra_venv.copy),
            m.seconds_per_venv.tstore,
            m.seconds_per_venv.uv,
            m.seconds_per_venv.copy
        )
        .unwrap();
    }
    for tier in &r.tiers {
        if tier.warm_floor > 0.0 {
            writeln!(
                t,
                "{}: warm tstore {:.3}s against cp -al of its generation {:.3}s ({:.2}x the floor)",
                tier.tier,
                tier.warm.tstore,
                tier.warm_floor,
                tier.warm.tstore / tier.warm_floor
            )
            .unwrap();
        }
    }
    render_disk_scenarios(&mut t, r);
    if let Some(u) = &r.upgrade {
        writeln!(
            t,
            "upgrade {} ({} packages changed): tstore {:.2}s, store +{:.1} MiB; uv {:.2}s, cache +{:.1} MiB",
            u.tier,
            u.packages_changed,
            u.tstore_seconds,
            mib(u.tstore_store_growth as f64),
            u.uv_seconds,
            mib(u.uv_cache_growth as f64)
        )
        .unwrap();
    }
    t
}

/// The after-use, one-more-venv and replay lines of the table, with the
/// ratios the targets name.
fn render_disk_scenarios(t: &mut String, r: &Results) {
    let mib = |b: f64| b / (1 << 20) as f64;
    let triple = |name: &str, d: &Triple| {
        format!(
            "{name}: tstore {:.1} MiB, uv {:.1} MiB, copies {:.1} MiB (tstore/uv {:.2}x)",
            mib(d.tstore),
            mib(d.uv),
            mib(d.copy),
            d.tstore / d.uv
        )
    };
    if let Some(a) = &r.after_use {
        writeln!(
            t,
            "{}",
            triple("disk of all tiers before use", &a.before_use)
        )
        .unwrap();
        writeln!(
            t,
            "{}",
            triple(
                "disk of all tiers after use (target tstore <= 0.85x uv)",
                &a.after_use
            )
        )
        .unwrap();
        writeln!(
            t,
            "{}",
            triple("disk of all tiers after use and `tstore gc`", &a.after_gc)
        )
        .unwrap();
        for u in &a.tiers {
            writeln!(
                t,
                "{}: {} top-level modules imported in each venv; failed: tstore [{}], uv [{}], copy [{}]",
                u.tier,
                u.modules,
                u.failed[0].join(" "),
                u.failed[1].join(" "),
                u.failed[2].join(" ")
            )
            .unwrap();
            writeln!(t, "  {}", triple("use added to the venv", &u.added_by_use)).unwrap();
            writeln!(
                t,
                "  {}",
                triple("one more venv, before use", &u.one_more_before_use)
            )
            .unwrap();
            writeln!(
                t,
                "  {}",
                triple("one more venv, after use", &u.one_more_after_use)
            )
            .unwrap();
        }
    }
    if let Some(m) = &r.many {
        writeln!(
            t,
            "{}",
            triple(
                &format!("many venvs ({}) before use", m.venvs),
                &m.before_use
            )
        )
        .unwrap();
        writeln!(
            t,
            "{}; imports failed tstore/uv/copy {}/{}/{}",
            triple(&format!("many venvs ({}) after use", m.venvs), &m.after_use),
            m.imports_failed[0],
            m.imports_failed[1],
            m.imports_failed[2]
        )
        .unwrap();
        writeln!(
            t,
            "{}",
            triple(
                &format!("many venvs ({}) after use and `tstore gc`", m.venvs),
                &m.after_gc
            )
        )
        .unwrap();
    }
    if let Some(replay) = &r.replay {
        writeln!(
            t,
            "upgrade replay of {} (weekly locks, tstore gc after each; targets: growth <= 1.05x changed files, week 4 store <= 0.7x uv cache):",
            replay.tiers.join(", ")
        )
        .unwrap();
        let (mut last_store, mut last_objects) = (0, 0);
        for w in &replay.weeks {
            let growth = w.store as f64 - last_store as f64;
            let objects_growth = w.store_objects as f64 - last_objects as f64;
            writeln!(
                t,
                "  {} ({} packages new): store {:.1} MiB (+{:.1}; objects +{:.1}, metadata {:+.1}), with venvs {:.1} MiB; uv cache {:.1} MiB, with venvs {:.1} MiB; store/cache {:.2}x; files changed {:.1} MiB, growth/changed {:.2}x, objects growth/changed {:.2}x",
                w.date,
                w.packages_changed,
                mib(w.store as f64),
                mib(growth),
                mib(objects_growth),
                mib(growth - objects_growth),
                mib(w.store_and_venvs as f64),
                mib(w.uv_cache as f64),
                mib(w.uv_cache_and_venvs as f64),
                w.store as f64 / w.uv_cache as f64,
                mib(w.changed_files as f64),
                growth / w.changed_files as f64,
                objects_growth / w.changed_files as f64
            )
            .unwrap();
            (last_store, last_objects) = (w.store, w.store_objects);
        }
    }
}

/// Two bar groups: warm install time per tier, and disk use per approach.
fn render_svg(r: &Results) -> String {
    let colors = [
        ("tstore", "#2a7ab9"),
        ("uv hardlink", "#e08a1e"),
        ("copy", "#8a8a8a"),
    ];
    let width = 760.0;
    let mut svg = String::new();
    let rows_drawn = r.tiers.iter().filter(|t| t.warm.tstore > 0.0).count()
        + 1
        + usize::from(r.after_use.is_some())
        + usize::from(r.many.is_some());
    let height = 80.0 + rows_drawn as f64 * 90.0;
    writeln!(svg, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#).unwrap();
    writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#).unwrap();
    writeln!(svg, r#"<text x="10" y="20" font-size="14">Warm install time per tier (s) and disk use (MiB)</text>"#).unwrap();
    writeln!(
        svg,
        r#"<text x="420" y="43" fill="gray">median of {} runs, {}, {}</text>"#,
        r.runs, r.date, r.filesystem
    )
    .unwrap();
    for (i, (name, color)) in colors.iter().enumerate() {
        writeln!(svg, r#"<rect x="{}" y="32" width="12" height="12" fill="{color}"/><text x="{}" y="43">{name}</text>"#, 10 + i * 130, 26 + i * 130).unwrap();
    }
    let mut rows: Vec<(String, [f64; 3], &str)> = r
        .tiers
        .iter()
        .filter(|t| t.warm.tstore > 0.0)
        .map(|t| {
            (
                format!("{} warm", t.tier),
                [t.warm.tstore, t.warm.uv, t.warm.copy],
                "s",
            )
        })
        .collect();
    rows.push((
        "disk, all tiers".into(),
        [
            r.disk.tstore / 1048576.0,
            r.disk.uv / 1048576.0,
            r.disk.copy / 1048576.0,
        ],
        "MiB",
    ));
    let in_mib = |d: &Triple| [d.tstore / 1048576.0, d.uv / 1048576.0, d.copy / 1048576.0];
    if let Some(a) = &r.after_use {
        rows.push(("all tiers after use".into(), in_mib(&a.after_use), "MiB"));
    }
    if let Some(m) = &r.many {
        rows.push((
            format!("{} venvs after use", m.venvs),
            in_mib(&m.after_use),
            "MiB",
        ));
    }
    for (row, (label, values, unit)) in rows.iter().enumerate() {
        let y0 = 70.0 + row as f64 * 90.0;
        let max = values.iter().cloned().fold(f64::MIN, f64::max).max(1e-9);
        writeln!(svg, r#"<text x="10" y="{}">{label}</text>"#, y0 + 10.0).unwrap();
        for (i, value) in values.iter().enumerate() {
            let w = (width - 260.0) * value / max;
            let y = y0 + 16.0 + i as f64 * 20.0;
            writeln!(svg, r#"<rect x="150" y="{y}" width="{w:.1}" height="16" fill="{}"/><text x="{:.1}" y="{}">{value:.2} {unit}</text>"#, colors[i].1, 155.0 + w, y + 12.0).unwrap();
        }
    }
    svg.push_str("</svg>\n");
    svg
}

//! Restoring environments on an empty machine (a CI runner): tekton-core
//! and tekton-ai built from
//!
//! - (a) a tstore export: `tstore import` + `tstore materialize --offline`;
//! - (b) a remote store: `tstore materialize --remote` (Garage on 127.0.0.1
//!   when a `garage` binary is on PATH, else a folder remote);
//! - (c) uv's way: untar a zstd archive of uv's cache, then `uv venv` +
//!   `uv pip sync --offline --link-mode hardlink` per tier.
//!
//! After (a) and (c), the first `import fastapi, anthropic, openai` in
//! tekton-ai's venv is timed too: tstore's venv links its pycs, uv's
//! compiles them on that import, so "time to first import" is the restore
//! plus it.
//!
//! Every run starts from nothing but the committed locks (and the archive
//! or the remote), the three approaches interleaved; medians of `--runs`
//! (default 5). (a) and (b) also run with `TSTORE_NO_STAGING=1` (every
//! object published on its own, as before staged shards), in alternating
//! order with the staged runs, so the two compare within one run. Needs
//! network to PyPI for the setup.
//!
//! With `--tstore-bytecode lazy`, every tstore command runs with
//! `TSTORE_COMPILE_BYTECODE=lazy`, and the source machine, as a CI job
//! would before saving its cache, runs the first import once and `tstore
//! gc` before exporting and pushing: the store then holds the pycs of the
//! modules that import used, not of every source.
//!
//! `cargo bench --bench restore -- [--runs N] [--out DIR] [--tstore-bytecode MODE]`;
//! `TSTORE_BENCH_DIR` picks the filesystem.
//!
//! `--incremental` measures bytes instead (issue 16): tekton-core's
//! committed lock (B) and the same lock with a few packages one release
//! back (A, resolved by uv from B's pins). A is pushed to a folder remote,
//! then B; a new machine pulls A, then B. Reported: what the second pull
//! fetched against the sizes of the packs B added to the remote (target
//! <= 1.1x), next to what a CI cache keyed on the lock hash downloads
//! whole: a zstd tarball of uv's cache after syncing B, or a tstore export
//! of B. One run (bytes do not depend on the machine's load).
//! `cargo bench --bench restore -- --incremental [--changed N] [--out DIR]`.

// Shared with the tests, which use more of them than this bench does.
#[path = "../tests/common/garage.rs"]
#[allow(dead_code)]
mod garage;
#[path = "../tests/common/process.rs"]
#[allow(dead_code)]
mod process;

#[path = "restore/incremental.rs"]
mod incremental;
mod support;

use std::path::{Path, PathBuf};

use std::process::Command;
use std::time::{Duration, Instant};
use support::{Run, flag, median, pins_from_lock, settle, shell};

const TIERS: [&str; 2] = ["tekton-core", "tekton-ai"];

#[derive(serde::Serialize, Default)]
struct Results {
    date: String,
    machine: String,
    filesystem: String,
    versions: String,
    runs: usize,
    remote: String,
    /// Median seconds.
    export_import: f64,
    export_materialize: f64,
    remote_restore: f64,
    /// (a) import and (b) with `TSTORE_NO_STAGING=1`.
    export_import_per_object: f64,
    remote_restore_per_object: f64,
    uv_untar: f64,
    uv_sync: f64,
    /// The first `import fastapi, anthropic, openai` in tekton-ai's venv
    /// right after (a) and after (c): tstore's venv has its pycs, uv's
    /// compiles (and writes) them on this import.
    first_import_tstore: f64,
    first_import_uv: f64,
    /// Bytes.
    export_archive: u64,
    uv_cache_archive: u64,
}

/// `--tstore-bytecode`: `TSTORE_COMPILE_BYTECODE` for every tstore command.
static BYTECODE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

fn bytecode_mode() -> Option<&'static str> {
    BYTECODE
        .get_or_init(|| flag("--tstore-bytecode"))
        .as_deref()
}

fn main() {
    if support::switch("--incremental") {
        let out = PathBuf::from(flag("--out").unwrap_or_else(|| "target/bench-incremental".into()));
        let changed: usize = flag("--changed").and_then(|n| n.parse().ok()).unwrap_or(3);
        incremental::run(&out, changed);
        return;
    }
    let runs: usize = flag("--runs").and_then(|r| r.parse().ok()).unwrap_or(5);
    let out = PathBuf::from(flag("--out").unwrap_or_else(|| "target/bench-restore".into()));
    let work = support::work_dir("tstore-restore-");
    std::fs::create_dir_all(&out).unwrap();
    let setup = Setup::prepare(work.path());

    let mut samples: [Vec<Duration>; 9] = Default::default();
    for run in 0..runs {
        eprintln!("run {}/{runs}", run + 1);
        // Staged first in even runs, one by one first in odd ones.
        for staged in [run % 2 == 0, run % 2 != 0] {
            let [import, materialize, first_import] = setup.via_export(staged);
            if staged {
                samples[0].push(import);
                samples[1].push(materialize);
                samples[7].push(first_import);
            } else {
                samples[5].push(import);
            }
        }
        for staged in [run % 2 == 0, run % 2 != 0] {
            samples[if staged { 2 } else { 6 }].push(setup.via_remote(staged));
        }
        let [untar, sync, first_import] = setup.via_uv_cache();
        samples[3].push(untar);
        samples[4].push(sync);
        samples[8].push(first_import);
    }
    let results = setup.results(&samples, runs);
    let table = render_table(&results, runs);
    print!("{table}");
    std::fs::write(out.join("restore.md"), &table).unwrap();
    std::fs::write(
        out.join("restore.json"),
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();
}

/// What every run restores from: the source machine's locks, its export,
/// the remote it pushed to, and an archive of uv's cache.
struct Setup<'w> {
    work: &'w Path,
    tstore: PathBuf,
    source: Machine,
    uv_archive: PathBuf,
    export: PathBuf,
    remote: String,
    remote_env: Vec<(String, String)>,
    /// Kept running until the bench ends.
    _garage: Option<garage::Garage>,
}

impl<'w> Setup<'w> {
    /// The source machine: locks, a full store, uv's cache; then the
    /// export, the push and uv's cache archive made from them.
    fn prepare(work: &'w Path) -> Self {
        let tstore = PathBuf::from(env!("CARGO_BIN_EXE_tstore"));
        let source = Machine::new(work, "source");
        source.tstore(&tstore, &["lock"]).run();
        source
            .tstore(&tstore, &["materialize", "--frozen", TIERS[0], TIERS[1]])
            .run();
        if bytecode_mode() == Some("lazy") {
            first_import(&source.root.join("venvs").join(TIERS[1]));
            source.tstore(&tstore, &["gc"]).run();
        }
        let uv_archive = uv_cache_archive(work, &source, &TIERS);
        let export = work.join("tekton.tar.zst");
        source
            .tstore(
                &tstore,
                &["export", TIERS[0], TIERS[1], "-o", export.to_str().unwrap()],
            )
            .run();
        let (remote, remote_env, garage) = remote(work);
        source
            .tstore(&tstore, &["push", "--remote", &remote, TIERS[0], TIERS[1]])
            .envs(remote_env.iter().map(|(k, v)| (k, v)))
            .run();
        Self {
            work,
            tstore,
            source,
            uv_archive,
            export,
            remote,
            remote_env,
            _garage: garage,
        }
    }

    /// (a) `tstore import` then `tstore materialize --offline`; `staged`:
    /// as tstore does, else with `TSTORE_NO_STAGING=1`. Then the first import.
    fn via_export(&self, staged: bool) -> [Duration; 3] {
        let machine = Machine::fresh(self.work, "a", &self.source);
        let import = timed(
            machine
                .tstore(&self.tstore, &["import", self.export.to_str().unwrap()])
                .envs(staging_env(staged)),
        );
        let materialize = timed(&mut machine.tstore(
            &self.tstore,
            &["materialize", "--offline", TIERS[0], TIERS[1]],
        ));
        let first_import = first_import(&machine.root.join("venvs").join(TIERS[1]));
        machine.delete();
        [import, materialize, first_import]
    }

    /// (b) `tstore materialize --remote`, staged or not as in [`Self::via_export`].
    fn via_remote(&self, staged: bool) -> Duration {
        let machine = Machine::fresh(self.work, "b", &self.source);
        let took = timed(
            machine
                .tstore(
                    &self.tstore,
                    &[
                        "materialize",
                        "--frozen",
                        "--remote",
                        &self.remote,
                        TIERS[0],
                        TIERS[1],
                    ],
                )
                .envs(self.remote_env.iter().map(|(k, v)| (k, v)))
                .envs(staging_env(staged)),
        );
        machine.check(TIERS[1]);
        machine.delete();
        took
    }

    /// (c) uv: untar the cache, then sync each tier from it; then the
    /// first import.
    fn via_uv_cache(&self) -> [Duration; 3] {
        let machine = self.work.join("c");
        std::fs::create_dir_all(&machine).unwrap();
        let untar = timed(
            Command::new("tar")
                .args(["-I", "zstd -T0", "-xf"])
                .arg(&self.uv_archive)
                .arg("-C")
                .arg(&machine),
        );
        settle();
        let started = Instant::now();
        for tier in TIERS {
            uv_sync(
                &machine.join("uv-cache"),
                &machine.join("venvs").join(tier),
                &self.work.join(format!("{tier}.txt")),
                true,
            )
            .run();
        }
        let sync = started.elapsed();
        let first_import = first_import(&machine.join("venvs").join(TIERS[1]));
        std::fs::remove_dir_all(&machine).unwrap();
        [untar, sync, first_import]
    }

    /// Medians of `samples` (in the order of [`Results`]' seconds) and
    /// what the runs ran on.
    fn results(&self, samples: &[Vec<Duration>; 9], runs: usize) -> Results {
        let m = |i: usize| median(&samples[i]);
        Results {
            date: support::now(),
            machine: support::machine(),
            filesystem: support::filesystem(self.work),
            versions: format!(
                "tstore {} (compile-bytecode {}), {}, {}",
                env!("CARGO_PKG_VERSION"),
                bytecode_mode().unwrap_or("true"),
                shell("uv --version"),
                shell("garage --version 2>/dev/null | head -1")
            ),
            runs,
            remote: self.remote.split("://").next().unwrap_or("").to_string()
                + if self.remote.starts_with("s3") {
                    " (Garage on 127.0.0.1)"
                } else {
                    " (folder)"
                },
            export_import: m(0),
            export_materialize: m(1),
            remote_restore: m(2),
            uv_untar: m(3),
            uv_sync: m(4),
            first_import_tstore: m(7),
            first_import_uv: m(8),
            export_import_per_object: m(5),
            remote_restore_per_object: m(6),
            export_archive: std::fs::metadata(&self.export).unwrap().len(),
            uv_cache_archive: std::fs::metadata(&self.uv_archive).unwrap().len(),
        }
    }
}

/// What the first `import fastapi, anthropic, openai` in `venv` takes,
/// with Python free to write pycs (as a user's first run is).
fn first_import(venv: &Path) -> Duration {
    let started = Instant::now();
    Command::new(venv.join("bin/python"))
        .args(["-c", "import fastapi, anthropic, openai"])
        .env_remove("PYTHONDONTWRITEBYTECODE")
        .run();
    started.elapsed()
}

/// `TSTORE_NO_STAGING=1` unless `staged`.
fn staging_env(staged: bool) -> Vec<(&'static str, &'static str)> {
    if staged {
        Vec::new()
    } else {
        vec![("TSTORE_NO_STAGING", "1")]
    }
}

/// uv's cache after syncing each of `tiers`' pins (written beside it as
/// `TIER.txt`), as a tar.zst; the cache itself is removed.
fn uv_cache_archive(work: &Path, source: &Machine, tiers: &[&str]) -> PathBuf {
    let uv_cache = work.join("uv-cache");
    for tier in tiers {
        let pins = work.join(format!("{tier}.txt"));
        std::fs::write(&pins, pins_from_lock(&source.lock(tier))).unwrap();
        uv_sync(&uv_cache, &work.join("uv-warmup").join(tier), &pins, false).run();
    }
    std::fs::remove_dir_all(work.join("uv-warmup")).unwrap();
    let uv_archive = work.join("uv-cache.tar.zst");
    Command::new("tar")
        .args(["-I", "zstd -3 -T0", "-cf"])
        .arg(&uv_archive)
        .arg("-C")
        .arg(work)
        .arg("uv-cache")
        .run();
    std::fs::remove_dir_all(&uv_cache).unwrap();
    uv_archive
}

/// The results as a markdown table.
fn render_table(results: &Results, runs: usize) -> String {
    let uv_total = results.uv_untar + results.uv_sync;
    let export_total = results.export_import + results.export_materialize;
    format!(
        "restore of {} + {} into an empty machine, median of {runs} ({}; {}; {}; {})\n\n\
         | approach | seconds | ratio to (c) |\n|---|---|---|\n\
         | (a) tstore import + materialize --offline | {export_total:.2} ({:.2} + {:.2}) | {:.2} |\n\
         | (b) tstore materialize --remote ({}) | {:.2} | {:.2} |\n\
         | (c) untar uv cache + uv pip sync | {uv_total:.2} ({:.2} + {:.2}) | 1.00 |\n\n\
         without staged shards (TSTORE_NO_STAGING=1), same runs: (a) import {:.2} s \
         (staged {:.2}x of it), (b) {:.2} s (staged {:.2}x of it)\n\n\
         time to first import (restore, then `import fastapi, anthropic, openai` in {}): \
         tstore (a) {:.2} s ({:.2} of it the import), uv (c) {:.2} s ({:.2}): {:.2}x\n\n\
         archives: tstore export {:.1} MiB, uv cache tar.zst {:.1} MiB\n",
        TIERS[0],
        TIERS[1],
        results.machine,
        results.filesystem,
        results.versions,
        results.date,
        results.export_import,
        results.export_materialize,
        export_total / uv_total,
        results.remote,
        results.remote_restore,
        results.remote_restore / uv_total,
        results.uv_untar,
        results.uv_sync,
        results.export_import_per_object,
        results.export_import / results.export_import_per_object,
        results.remote_restore_per_object,
        results.remote_restore / results.remote_restore_per_object,
        TIERS[1],
        export_total + results.first_import_tstore,
        results.first_import_tstore,
        uv_total + results.first_import_uv,
        results.first_import_uv,
        (export_total + results.first_import_tstore) / (uv_total + results.first_import_uv),
        results.export_archive as f64 / 1048576.0,
        results.uv_cache_archive as f64 / 1048576.0,
    )
}

/// A machine: its project (tiers.toml + locks), store and venvs.
struct Machine {
    root: PathBuf,
}

impl Machine {
    fn new(work: &Path, name: &str) -> Self {
        let root = support::machine_root(work, name);
        Self { root }
    }

    /// An empty machine with the source's committed locks.
    fn fresh(work: &Path, name: &str, source: &Machine) -> Self {
        let machine = Self::new(work, name);
        for tier in TIERS {
            std::fs::copy(source.lock(tier), machine.lock(tier)).unwrap();
        }
        machine
    }

    fn lock(&self, tier: &str) -> PathBuf {
        self.root.join(format!("project/pylock.{tier}.toml"))
    }

    /// `tstore -q ARGS` on this machine.
    fn tstore(&self, tstore: &Path, args: &[&str]) -> Command {
        let mut cmd = self.tstore_verbatim(tstore, &["-q"]);
        cmd.args(args);
        cmd
    }

    /// `tstore ARGS` on this machine, with its usual output.
    fn tstore_verbatim(&self, tstore: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(tstore);
        cmd.args(args)
            .current_dir(self.root.join("project"))
            .env("TSTORE_HOME", self.root.join("store"))
            .env_remove("TSTORE_REMOTE");
        if let Some(mode) = bytecode_mode() {
            cmd.env("TSTORE_COMPILE_BYTECODE", mode);
        }
        cmd
    }

    fn check(&self, tier: &str) {
        Command::new(self.root.join("venvs").join(tier).join("bin/python"))
            .args(["-c", "import fastapi, anthropic"])
            .run();
    }

    fn delete(self) {
        std::fs::remove_dir_all(&self.root).unwrap();
    }
}

fn uv_sync(cache: &Path, venv: &Path, pins: &Path, offline: bool) -> Command {
    let mut script = format!(
        "uv venv -q --python 3.11 '{v}' && uv pip sync -q --link-mode hardlink --python '{v}/bin/python' '{p}'",
        v = venv.display(),
        p = pins.display()
    );
    if offline {
        script.push_str(" --offline");
    }
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]).env("UV_CACHE_DIR", cache);
    cmd
}

/// Garage on 127.0.0.1 when a `garage` binary is on PATH, else a folder.
fn remote(work: &Path) -> (String, Vec<(String, String)>, Option<garage::Garage>) {
    if shell("command -v garage").is_empty() {
        eprintln!("no garage binary: the remote is a folder");
        return (
            format!("file://{}", work.join("remote").display()),
            Vec::new(),
            None,
        );
    }
    let server = garage::Garage::start("garage", &work.join("garage"), "envs");
    (
        "s3://envs/tekton".to_string(),
        server.env.clone(),
        Some(server),
    )
}

fn timed(cmd: &mut Command) -> Duration {
    settle();
    let started = Instant::now();
    cmd.run();
    started.elapsed()
}

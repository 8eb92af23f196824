//! A fleet pulling from a team remote: a three-node Garage cluster on
//! 127.0.0.1 (see `tests/common/garage_cluster.rs`) holds tekton-core,
//! pushed once; then N independent machines (each its own TSTORE_HOME, a
//! process of its own) run `tstore pull` of it at the same moment, for
//! N = 1, 2, 4, 8. Machine i is given the nodes' endpoints starting at node
//! i mod 3, so the fleet spreads over the cluster.
//!
//! Reported per N: the wall time until the last pull ended, and where the
//! CPU went: the tstore processes' (getrusage of the reaped children) and
//! the Garage nodes' (utime + stime from /proc). Every machine must then
//! `tstore verify` clean. Needs a `garage` binary and, for the setup,
//! network to PyPI.
//!
//! `cargo bench --bench fleet -- [--runs R] [--sizes 1,2,4,8] [--out DIR]`

#[path = "../tests/common/garage.rs"]
#[allow(dead_code)]
mod garage;
#[path = "../tests/common/garage_cluster.rs"]
#[allow(dead_code)]
mod garage_cluster;
#[path = "../tests/common/process.rs"]
#[allow(dead_code)]
mod process;

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use garage_cluster::GarageCluster;
use support::{Run, flag, median, settle, shell};

const TIER: &str = "tekton-core";
const REMOTE: &str = "s3://fleet/tekton";

/// One N's figures (medians over the runs).
#[derive(serde::Serialize)]
struct Row {
    machines: usize,
    wall_seconds: f64,
    tstore_cpu_seconds: f64,
    garage_cpu_seconds: f64,
    /// What one machine pulled.
    pulled: String,
    /// /proc/loadavg's 1-minute figure before the last run: how busy the
    /// machine was with other work.
    load_before: String,
}

fn main() {
    let runs: usize = flag("--runs").and_then(|r| r.parse().ok()).unwrap_or(1);
    let sizes: Vec<usize> = flag("--sizes")
        .unwrap_or_else(|| "1,2,4,8".into())
        .split(',')
        .map(|n| n.trim().parse().expect("--sizes: numbers, comma-separated"))
        .collect();
    let out = PathBuf::from(flag("--out").unwrap_or_else(|| "target/bench-fleet".into()));
    std::fs::create_dir_all(&out).unwrap();
    assert!(
        !shell("command -v garage").is_empty(),
        "this bench needs a garage binary on PATH (cargo install garage)"
    );
    let work = support::work_dir("tstore-fleet-");
    let tstore = PathBuf::from(env!("CARGO_BIN_EXE_tstore"));
    let mut cluster = GarageCluster::start("garage", &work.path().join("garage"), "fleet");

    let source = Machine::new(work.path(), "source");
    source
        .tstore(&tstore, &["materialize", "--frozen", TIER])
        .run();
    source
        .tstore(&tstore, &["push", "--remote", REMOTE, TIER])
        .envs(cluster.env.iter().map(|(k, v)| (k, v)))
        .run();

    let mut rows = Vec::new();
    for &n in &sizes {
        let mut samples: [Vec<Duration>; 3] = Default::default();
        let mut pulled = String::new();
        let mut load_before = String::new();
        for run in 0..runs {
            load_before = shell("cut -d' ' -f1 /proc/loadavg");
            eprintln!("{n} machine(s), run {}/{runs}", run + 1);
            let figures = fleet_pull(work.path(), &tstore, &cluster, n);
            for (sample, value) in samples.iter_mut().zip(figures.0) {
                sample.push(value);
            }
            pulled = figures.1;
        }
        rows.push(Row {
            machines: n,
            wall_seconds: median(&samples[0]),
            tstore_cpu_seconds: median(&samples[1]),
            garage_cpu_seconds: median(&samples[2]),
            pulled,
            load_before,
        });
    }
    let table = render(&rows, runs);
    print!("{table}");
    std::fs::write(out.join("fleet.md"), &table).unwrap();
    std::fs::write(
        out.join("fleet.json"),
        serde_json::to_string_pretty(&rows).unwrap(),
    )
    .unwrap();
    cluster.stop().unwrap();
}

/// N fresh machines pull at once: [wall, tstore CPU, Garage CPU], and what
/// one of them pulled. Each machine is verified, then deleted.
fn fleet_pull(
    work: &Path,
    tstore: &Path,
    cluster: &GarageCluster,
    n: usize,
) -> ([Duration; 3], String) {
    let machines: Vec<Machine> = (0..n)
        .map(|i| Machine::new(work, &format!("m{i}")))
        .collect();
    let endpoints = cluster.endpoints();
    settle();
    let tstore_before = children_cpu();
    let garage_before = garage_cpu(cluster);
    let started = Instant::now();
    let pulls: Vec<_> = machines
        .iter()
        .enumerate()
        .map(|(i, machine)| {
            let mut order = endpoints.clone();
            order.rotate_left(i % endpoints.len());
            machine
                .tstore(tstore, &["pull", "--remote", REMOTE, TIER])
                .envs(cluster.env.iter().map(|(k, v)| (k, v)))
                .env("TSTORE_REMOTE_ENDPOINTS", order.join(","))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<String> = pulls
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "a pull failed: {text}");
            text
        })
        .collect();
    let wall = started.elapsed();
    let tstore_cpu = children_cpu() - tstore_before;
    let garage_cpu = garage_cpu(cluster) - garage_before;
    for machine in &machines {
        let out = machine.tstore(tstore, &["verify"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("all intact"),
            "verify: {text}"
        );
    }
    let pulled = outputs[0]
        .lines()
        .find(|l| l.contains(": pulled "))
        .unwrap_or_default()
        .to_string();
    for machine in machines {
        std::fs::remove_dir_all(machine.root).unwrap();
    }
    ([wall, tstore_cpu, garage_cpu], pulled)
}

/// User + system CPU of this process's reaped children so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// User + system CPU of the cluster's running nodes so far.
fn garage_cpu(cluster: &GarageCluster) -> Duration {
    // SAFETY: sysconf only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let total: u64 = cluster
        .nodes
        .iter()
        .filter_map(|node| node.pid())
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            // After `pid (comm) `: state is field 3; utime 14, stime 15.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .unwrap()
                .1
                .split_whitespace()
                .collect();
            fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
        })
        .sum();
    Duration::from_secs_f64(total as f64 / ticks)
}

fn render(rows: &[Row], runs: usize) -> String {
    let mut table = format!(
        "Fleet pulls of {TIER} from a three-node Garage cluster on 127.0.0.1 \
         ({}; {}; median of {runs} run(s))\n\n\
         | machines | wall (s) | tstore CPU (s, all) | Garage CPU (s, 3 nodes) | load before | one machine pulled |\n\
         |---:|---:|---:|---:|---:|---|\n",
        support::machine(),
        shell("garage --version 2>/dev/null | head -1"),
    );
    for row in rows {
        table.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} | {} | {} |\n",
            row.machines,
            row.wall_seconds,
            row.tstore_cpu_seconds,
            row.garage_cpu_seconds,
            row.load_before,
            row.pulled
        ));
    }
    table
}

/// A machine: a project with the embedded tiers.toml (venvs under its
/// root), the committed lock, and a store of its own.
struct Machine {
    root: PathBuf,
}

impl Machine {
    fn new(work: &Path, name: &str) -> Self {
        let root = support::machine_root(work, name);
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("pylock.{TIER}.toml")),
            root.join(format!("project/pylock.{TIER}.toml")),
        )
        .unwrap();
        Self { root }
    }

    fn tstore(&self, tstore: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(tstore);
        cmd.args(args)
            .current_dir(self.root.join("project"))
            .env("TSTORE_HOME", self.root.join("store"))
            .env_remove("TSTORE_REMOTE")
            .env_remove("TSTORE_REMOTE_ENDPOINTS");
        cmd
    }
}

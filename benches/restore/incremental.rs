//! `--incremental`: what a pull moves after a lock change (issue 16),
//! against what a CI cache keyed on the lock hash downloads whole. Bytes
//! only; see the bench's doc.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Machine, TIERS, uv_cache_archive};
use crate::support::{self, Run, pins_from_lock, shell};

const TIER: &str = TIERS[0];
/// Packages tried, most recently uploaded first, before giving up on
/// finding `--changed` whose previous release fits the other pins.
const TRIES: usize = 20;

#[derive(serde::Serialize)]
struct Results {
    date: String,
    machine: String,
    versions: String,
    tier: String,
    /// `name A-version -> B-version` for each package lock A moved back.
    changed: Vec<String>,
    /// Packs (wheel and bytecode) the push of B added to the remote.
    new_packs: usize,
    new_pack_bytes: u64,
    /// What the pull of B fetched, as its `-v` lists it.
    pulled_packs: usize,
    pulled_bytes: u64,
    /// Packs that pull fetched which B did not add (should be none).
    pulled_unchanged_packs: usize,
    /// The records that pull reads: the layout file and the records of
    /// the packs it fetched.
    record_bytes: u64,
    /// `pulled_bytes / new_pack_bytes` (target <= 1.1), then with records.
    ratio: f64,
    ratio_with_records: f64,
    /// The pull of A into the empty store, for scale, and how much of it
    /// was bytecode packs (compiled here, which uv's cache has not).
    first_pull_bytes: u64,
    first_pull_bytecode_bytes: u64,
    /// What a CI cache keyed on the lock hash downloads whole after the
    /// change: uv's cache after syncing B (tar, zstd -3), or an export of B.
    uv_cache_archive: u64,
    export_archive: u64,
}

pub fn run(out: &Path, changed: usize) {
    let work = support::work_dir("tstore-incremental-");
    let work = work.path();
    std::fs::create_dir_all(out).unwrap();
    let tstore = PathBuf::from(env!("CARGO_BIN_EXE_tstore"));
    let lock_b = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("pylock.{TIER}.toml"));
    let (lock_a, moved) = older_lock(work, &lock_b, changed);
    eprintln!("lock A moves back: {}", moved.join(", "));

    let folder = work.join("remote");
    let remote = format!("file://{}", folder.display());
    let source = Machine::new(work, "source");
    let push = |lock: &Path| {
        std::fs::copy(lock, source.lock(TIER)).unwrap();
        source
            .tstore(&tstore, &["materialize", "--frozen", TIER])
            .run();
        source
            .tstore(&tstore, &["push", "--remote", &remote, TIER])
            .run();
    };
    push(&lock_a);
    let before = packs_in(&folder);
    push(&lock_b);
    let new_packs: BTreeMap<String, u64> = packs_in(&folder)
        .into_iter()
        .filter(|(key, _)| !before.contains_key(key))
        .collect();
    let export = work.join("b.tar.zst");
    source
        .tstore(&tstore, &["export", TIER, "-o", export.to_str().unwrap()])
        .run();
    // The source holds lock B now.
    let uv_archive = uv_cache_archive(work, &source, &[TIER]);

    let dest = Machine::new(work, "dest");
    let pull = |lock: &Path| {
        std::fs::copy(lock, dest.lock(TIER)).unwrap();
        fetched(&mut dest.tstore_verbatim(&tstore, &["-v", "pull", "--remote", &remote, TIER]))
    };
    let first = pull(&lock_a);
    let second = pull(&lock_b);

    let new_pack_bytes: u64 = new_packs.values().sum();
    let pulled_bytes: u64 = second.values().sum();
    let record_bytes = records_read(&folder, &second);
    let results = Results {
        date: support::now(),
        machine: support::machine(),
        versions: format!(
            "tstore {}, {}",
            env!("CARGO_PKG_VERSION"),
            shell("uv --version")
        ),
        tier: TIER.to_string(),
        changed: moved,
        new_packs: new_packs.len(),
        new_pack_bytes,
        pulled_packs: second.len(),
        pulled_bytes,
        pulled_unchanged_packs: second
            .keys()
            .filter(|key| !new_packs.contains_key(*key))
            .count(),
        record_bytes,
        ratio: pulled_bytes as f64 / new_pack_bytes as f64,
        ratio_with_records: (pulled_bytes + record_bytes) as f64 / new_pack_bytes as f64,
        first_pull_bytes: first.values().sum(),
        first_pull_bytecode_bytes: first
            .iter()
            .filter(|(key, _)| key.starts_with("bytecode/"))
            .map(|(_, bytes)| bytes)
            .sum(),
        uv_cache_archive: std::fs::metadata(&uv_archive).unwrap().len(),
        export_archive: std::fs::metadata(&export).unwrap().len(),
    };
    let table = render_table(&results);
    print!("{table}");
    std::fs::write(out.join("incremental.md"), &table).unwrap();
    std::fs::write(
        out.join("incremental.json"),
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();
}

/// Lock B with up to `count` packages one release back: uv resolves B's
/// pins with those packages' relaxed to "older than B's". Packages are
/// tried from the most recently uploaded down, skipping those whose older
/// releases do not fit the other pins. Returns the lock and
/// `name old -> new` per package moved.
fn older_lock(work: &Path, lock_b: &Path, count: usize) -> (PathBuf, Vec<String>) {
    let dir = work.join("older");
    std::fs::create_dir_all(&dir).unwrap();
    let pins = pins_from_lock(lock_b);
    let mut relaxed: Vec<String> = Vec::new();
    for name in by_upload_time(lock_b).into_iter().take(TRIES) {
        if relaxed.len() == count {
            break;
        }
        let mut names = relaxed.clone();
        names.push(name);
        if resolve(&dir, &relax(&pins, &names)).is_some() {
            relaxed = names;
        }
    }
    assert!(
        !relaxed.is_empty(),
        "none of the {TRIES} packages tried has an older release that fits the other pins"
    );
    let lock = resolve(&dir, &relax(&pins, &relaxed)).expect("it resolved before");
    let (old, new) = (versions(&lock), versions(lock_b));
    let moved = relaxed
        .iter()
        .map(|name| format!("{name} {} -> {}", old[name], new[name]))
        .collect();
    (lock, moved)
}

/// `pins` (`name==version ; marker` lines) with `names` asking for a
/// version older than the pinned one.
fn relax(pins: &str, names: &[String]) -> String {
    pins.lines()
        .map(|line| {
            let relaxed = names
                .iter()
                .any(|name| line.starts_with(&format!("{name}==")));
            let line = if relaxed {
                line.replacen("==", "<", 1)
            } else {
                line.to_string()
            };
            line + "\n"
        })
        .collect()
}

/// uv's universal lock of `pins` in `dir`, or `None` when they do not
/// resolve. The resolution has a uv cache of its own.
fn resolve(dir: &Path, pins: &str) -> Option<PathBuf> {
    let input = dir.join("pins.txt");
    std::fs::write(&input, pins).unwrap();
    let lock = dir.join(format!("pylock.{TIER}.toml"));
    let resolved = Command::new("uv")
        .args([
            "pip",
            "compile",
            "-q",
            "--universal",
            "--format",
            "pylock.toml",
            "--python-version",
            "3.11",
            "--no-header",
        ])
        .arg(&input)
        .arg("-o")
        .arg(&lock)
        .env("UV_CACHE_DIR", dir.join("uv-cache"))
        .output()
        .unwrap();
    resolved.status.success().then_some(lock)
}

/// The packages of a lock that install everywhere (no platform marker),
/// newest upload of their locked version first.
fn by_upload_time(lock: &Path) -> Vec<String> {
    let mut uploaded: Vec<(String, String)> = packages(lock)
        .iter()
        .filter(|p| {
            let marker = p.get("marker").and_then(|m| m.as_str()).unwrap_or("");
            !marker.contains("platform")
        })
        .map(|p| {
            let files = p
                .get("wheels")
                .and_then(|w| w.as_array())
                .into_iter()
                .flatten()
                .chain(p.get("sdist"));
            let newest = files
                .filter_map(|f| f.get("upload-time").map(|t| t.to_string()))
                .max()
                .unwrap_or_default();
            (newest, p["name"].as_str().unwrap().to_string())
        })
        .collect();
    uploaded.sort_by(|a, b| b.cmp(a));
    uploaded.into_iter().map(|(_, name)| name).collect()
}

/// Each package's locked version, by name.
fn versions(lock: &Path) -> BTreeMap<String, String> {
    packages(lock)
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["version"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn packages(lock: &Path) -> Vec<toml::Value> {
    let text = std::fs::read_to_string(lock).unwrap();
    let parsed: toml::Value = toml::from_str(&text).unwrap();
    parsed["packages"].as_array().unwrap().clone()
}

/// The packs a `tstore -v pull` fetched, key → bytes, from its report.
fn fetched(cmd: &mut Command) -> BTreeMap<String, u64> {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed: {stderr}");
    let prefix = format!("{TIER}: fetched ");
    stderr
        .lines()
        .filter_map(|line| line.trim().strip_prefix(&prefix))
        .map(|rest| {
            let (key, rest) = rest.split_once(' ').unwrap();
            let bytes = rest.rsplit(", ").next().unwrap();
            let bytes = bytes.strip_suffix(" bytes").unwrap().parse().unwrap();
            (key.to_string(), bytes)
        })
        .collect()
}

/// The pack files of a folder remote, relative key → size.
fn packs_in(folder: &Path) -> BTreeMap<String, u64> {
    let mut packs = BTreeMap::new();
    let mut dirs = vec![folder.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(path);
            } else if path.to_string_lossy().ends_with(".tar.zst") {
                let key = path.strip_prefix(folder).unwrap().to_string_lossy();
                packs.insert(key.into_owned(), entry.metadata().unwrap().len());
            }
        }
    }
    packs
}

/// The bytes of the records a pull reads besides `packs`: the layout
/// file, and for each pack the record describing it
/// (`distributions/<sha256>.json`, `bytecode/<tag>/<sha256>.json`).
fn records_read(folder: &Path, packs: &BTreeMap<String, u64>) -> u64 {
    let records = packs.keys().map(|key| {
        let record = key.replace(".tar.zst", ".json");
        match record.strip_prefix("packs/") {
            Some(rest) => format!("distributions/{rest}"),
            None => record,
        }
    });
    std::iter::once("tstore-remote.json".to_string())
        .chain(records)
        .map(|record| std::fs::metadata(folder.join(record)).unwrap().len())
        .sum()
}

fn render_table(r: &Results) -> String {
    let mib = |bytes: u64| format!("{:.2} MiB", bytes as f64 / 1048576.0);
    let ratio = |bytes: u64| format!("{:.2}", bytes as f64 / r.new_pack_bytes as f64);
    format!(
        "incremental pull of {} after a lock change of {} packages ({}); {}; {}; {}\n\n\
         | what travels | bytes | ratio to the changed packs |\n|---|---|---|\n\
         | packs the push of B added to the remote ({} packs) | {} ({} B) | 1.00 |\n\
         | `tstore pull` of B after A: packs fetched ({} packs, {} of them unchanged) | {} ({} B) | {:.3} (target <= 1.1) |\n\
         | the same with the records it reads | {} | {:.3} |\n\
         | CI cache keyed on the lock hash: uv cache tar.zst after syncing B | {} | {} |\n\
         | CI cache keyed on the lock hash: tstore export of B | {} | {} |\n\
         | for scale: `tstore pull` of A into an empty store ({} of it bytecode) | {} | {} |\n",
        r.tier,
        r.changed.len(),
        r.changed.join(", "),
        r.machine,
        r.versions,
        r.date,
        r.new_packs,
        mib(r.new_pack_bytes),
        r.new_pack_bytes,
        r.pulled_packs,
        r.pulled_unchanged_packs,
        mib(r.pulled_bytes),
        r.pulled_bytes,
        r.ratio,
        mib(r.pulled_bytes + r.record_bytes),
        r.ratio_with_records,
        mib(r.uv_cache_archive),
        ratio(r.uv_cache_archive),
        mib(r.export_archive),
        ratio(r.export_archive),
        mib(r.first_pull_bytecode_bytes),
        mib(r.first_pull_bytes),
        ratio(r.first_pull_bytes),
    )
}

//! gc and du: what goes, what stays, and the bytes counted.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// 2 MiB of incompressible-enough text, so freed bytes are easy to see.
fn big_text(seed: u32) -> String {
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    (0..(2 << 20) / 16)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            format!("{state:015}\n")
        })
        .collect()
}

struct Setup {
    world: World,
    server: FileServer,
    root: PathBuf,
}

/// Tiers a (alpha, gamma) and b (alpha), materialized under `root`.
fn setup(root: &Path) -> Setup {
    let world = World::new();
    let wheels = world.wheels();
    WheelBuilder::new("alpha", "1.0")
        .file("alpha/__init__.py", "A = 1\n")
        .build(&wheels);
    WheelBuilder::new("gamma", "1.0")
        .file("gamma/__init__.py", "G = 1\n")
        .file("gamma/data.txt", &big_text(7))
        .build(&wheels);
    let server = FileServer::start(&wheels);
    let _project = project_at(
        root,
        "keep-generations = 1\n[tiers.a]\nrequirements = [\"alpha\", \"gamma\"]\n[tiers.b]\nrequirements = [\"alpha\"]\n",
    );
    let setup = Setup {
        world,
        server,
        root: root.to_path_buf(),
    };
    setup.lock("a", &["alpha", "gamma"]);
    setup.lock("b", &["alpha"]);
    setup.ok(&["materialize", "--frozen", "a", "b"]);
    setup
}

impl Setup {
    fn lock(&self, tier: &str, packages: &[&str]) {
        let lock = self.root.join(format!("project/pylock.{tier}.toml"));
        lock_served(&lock, &self.world.wheels(), packages, &self.server.url);
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.world.tstore(args);
        cmd.current_dir(self.root.join("project"))
            .env("TSTORE_HOME", self.root.join("store"));
        cmd
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn venv(&self, tier: &str) -> PathBuf {
        self.root.join("venvs").join(tier)
    }
}

#[test]
fn gc_frees_exactly_what_it_reports() {
    // A filesystem nothing else writes to, so its free space is ours to measure.
    let Some(fs) = Mount::tmpfs_or_skip("64m") else {
        return;
    };
    let s = setup(&fs.path);
    // Nothing is garbage while both tiers use everything.
    let report = s.json(&["gc", "--dry-run", "--json"]);
    assert_eq!(report["distributions"], 0, "{report}");
    assert_eq!(report["objects"], 0, "{report}");

    // Tier a drops gamma; its old generation goes (keep-generations = 1).
    s.lock("a", &["alpha"]);
    s.ok(&["materialize", "--frozen", "a"]);
    let dry = s.json(&["gc", "--dry-run", "--json"]);
    assert_eq!(dry["distributions"], 1, "{dry}");
    let would_free = dry["bytes_freed"].as_u64().unwrap();
    assert!(would_free >= 2 << 20, "{dry}");

    let real = s.json(&["gc", "--json"]);
    assert_eq!(real["bytes_freed"].as_u64().unwrap(), would_free, "{real}");
    // The lock the dropped generation was built from goes with it.
    assert_eq!(real["lock_snapshots"], 1, "{real}");
    let measured = real["measured_free_growth"].as_i64().unwrap();
    // The index's write-ahead log grows a little while gc records the deletion.
    assert!(
        (measured - would_free as i64).abs() <= 256 << 10,
        "reported {would_free}, the filesystem gained {measured}"
    );
    // What is left still works and verifies.
    python_ok(&s.venv("a"), "import alpha");
    python_ok(&s.venv("b"), "import alpha");
    assert_eq!(s.cmd(&["verify"]).status().unwrap().code(), Some(0));
    let again = s.json(&["gc", "--json"]);
    assert_eq!(again["bytes_freed"], 0, "{again}");
}

#[test]
fn an_object_linked_from_outside_the_store_frees_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    // Someone keeps a hardlink to gamma's big file outside any tier.
    let outside = dir.path().join("kept-copy.txt");
    fs_err::hard_link(
        s.venv("a")
            .join("lib/python3.11/site-packages/gamma/data.txt"),
        &outside,
    )
    .unwrap();
    s.lock("a", &["alpha"]);
    s.ok(&["materialize", "--frozen", "a"]);
    let report = s.json(&["gc", "--json"]);
    assert_eq!(report["distributions"], 1, "{report}");
    assert!(
        report["bytes_still_linked"].as_u64().unwrap() >= 2 << 20,
        "{report}"
    );
    assert!(
        report["bytes_freed"].as_u64().unwrap() < 1 << 20,
        "{report}"
    );
    assert_eq!(fs_err::read_to_string(&outside).unwrap(), big_text(7));
}

#[test]
fn gc_keeps_what_a_kept_generation_uses_and_removes_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    // Tier b is removed, but tier a still needs alpha: nothing of alpha goes.
    s.ok(&["remove", "b"]);
    // Leftovers of a crashed run: a temp file of a dead process (removed as
    // soon as a run opens the store), a day-old work folder without a pid
    // (gc's to judge), an unrecorded object.
    let store = dir.path().join("store/v1");
    fs_err::write(store.join("tmp/download-999999-abc"), "partial").unwrap();
    let old_work = store.join("tmp/work-abc");
    fs_err::create_dir(&old_work).unwrap();
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
    std::fs::File::open(&old_work)
        .and_then(|dir| dir.set_modified(two_days_ago))
        .unwrap();
    fs_err::write(store.join("objects/ab").join("ab".repeat(32)), "orphan").unwrap();
    let report = s.json(&["gc", "--json"]);
    assert_eq!(report["distributions"], 0, "{report}");
    assert_eq!(report["temp_entries"], 1, "{report}");
    assert_eq!(report["objects"], 1, "{report}");
    assert!(!store.join("tmp/download-999999-abc").exists());
    assert!(!old_work.exists());
    python_ok(&s.venv("a"), "import alpha, gamma");
    assert_eq!(s.cmd(&["verify"]).status().unwrap().code(), Some(0));
}

/// A store written before manifests were compressed keeps plain
/// `<plan>.json` manifests: gc keeps a kept generation's, verify reads it,
/// and a new build writes the compressed kind.
#[test]
fn plain_manifests_of_an_older_store_are_kept_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    let manifests = dir.path().join("store/v1/manifests");
    let compressed: Vec<PathBuf> = fs_err::read_dir(&manifests)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // Tiers a and b, and a's generation as first built, before its bytecode.
    assert!(compressed.len() >= 2, "{compressed:?}");
    for path in &compressed {
        let name = path.file_name().unwrap().to_str().unwrap();
        let plan = name
            .strip_suffix(".json.zst")
            .expect("a compressed manifest");
        let json = zstd::stream::decode_all(fs_err::read(path).unwrap().as_slice()).unwrap();
        fs_err::write(manifests.join(format!("{plan}.json")), json).unwrap();
        fs_err::remove_file(path).unwrap();
    }
    let report = s.json(&["gc", "--json"]);
    assert_eq!(report["distributions"], 0, "{report}");
    let left: Vec<String> = fs_err::read_dir(&manifests)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    // The kept generations' manifests stay (verify reads each one).
    assert_eq!(left.len(), 2, "one per tier: {left:?}");
    assert!(left.iter().all(|n| n.ends_with(".json")), "{left:?}");
    assert_eq!(s.cmd(&["verify"]).status().unwrap().code(), Some(0));
    // Removing a tier lets gc take its manifest, plain or not.
    s.ok(&["remove", "b"]);
    s.ok(&["gc"]);
    assert_eq!(fs_err::read_dir(&manifests).unwrap().count(), 1);
    assert_eq!(s.cmd(&["verify"]).status().unwrap().code(), Some(0));
    python_ok(&s.venv("a"), "import alpha, gamma");
}

#[test]
fn du_counts_shared_and_unique_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    let report = s.json(&["du", "--json"]);
    let tiers = report["tiers"].as_array().unwrap();
    let tier = |name: &str| tiers.iter().find(|t| t["name"] == name).unwrap().clone();
    let (a, b) = (tier("a"), tier("b"));
    // gamma's 2 MiB is a's alone; alpha is shared by both.
    assert!(a["unique_bytes"].as_u64().unwrap() >= 2 << 20, "{a}");
    assert_eq!(a["shared_bytes"], b["shared_bytes"]);
    assert!(b["shared_bytes"].as_u64().unwrap() > 0, "{b}");
    assert_eq!(b["unique_bytes"], 0, "{b}");
    let plain: u64 = tiers
        .iter()
        .map(|t| t["plain_copy_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(report["plain_copies_bytes"].as_u64().unwrap(), plain);
    let actual = report["store_bytes"].as_u64().unwrap() + report["venv_bytes"].as_u64().unwrap();
    assert_eq!(
        report["saving_bytes"].as_i64().unwrap(),
        plain as i64 - actual as i64
    );
    let table = s.ok(&["du"]);
    assert!(table.contains("as plain copies:"), "{table}");
}

#[test]
fn remove_then_gc_frees_what_du_said_was_only_there() {
    let Some(fs) = Mount::tmpfs_or_skip("64m") else {
        return;
    };
    let s = setup(&fs.path);
    let du = s.json(&["du", "--json"]);
    let a = du["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "a")
        .unwrap()
        .clone();
    let only_a = a["unique_bytes"].as_u64().unwrap();
    assert!(only_a >= 2 << 20, "{a}");
    // a's lock stays in the project: it roots nothing once a is removed.
    s.ok(&["remove", "a"]);
    let report = s.json(&["gc", "--json"]);
    assert_eq!(report["distributions"], 1, "{report}");
    let freed = report["bytes_freed"].as_u64().unwrap();
    assert!(
        freed.abs_diff(only_a) * 100 <= only_a,
        "du said {only_a} bytes only in a; gc freed {freed}"
    );
    python_ok(&s.venv("b"), "import alpha");
    assert_eq!(s.cmd(&["verify"]).status().unwrap().code(), Some(0));
}

#[test]
fn gc_prints_one_unit_and_spells_entries() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    s.ok(&["remove", "a"]);
    // Two day-old work folders without a pid: gc's to judge.
    let store = dir.path().join("store/v1");
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
    for name in ["work-a", "work-b"] {
        let old_work = store.join("tmp").join(name);
        fs_err::create_dir(&old_work).unwrap();
        std::fs::File::open(&old_work)
            .and_then(|dir| dir.set_modified(two_days_ago))
            .unwrap();
    }
    let text = s.ok(&["gc"]);
    assert!(text.contains("2 leftover temp entries"), "{text}");
    let units: std::collections::BTreeSet<&str> = text
        .split_whitespace()
        .map(|w| w.trim_end_matches([',', ':']))
        .filter(|w| ["B", "KiB", "MiB", "GiB"].contains(w))
        .collect();
    assert_eq!(units.len(), 1, "{text}");
}

/// Bytes `du -s -B1` (GNU du: each inode once across its arguments) says
/// `paths` take together.
fn du_s(paths: &[PathBuf]) -> u64 {
    let out = Command::new("du")
        .args(["-s", "-B1"])
        .args(paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            line.split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

#[test]
fn du_agrees_with_du_s_and_verify_on_the_store() {
    // ext4: hardlinks, no reflinks, so `du` counts what the disk holds.
    let fs = match Mount::image("ext4", "64M", &["-q", "-F"]) {
        Ok(fs) => fs,
        Err(reason) => {
            eprintln!("skipped: cannot mount an ext4 image here ({reason})");
            return;
        }
    };
    let s = setup(&fs.path);
    // A second generation of a, with a file of its own, beside the first.
    fs_err::write(
        s.root.join("project/tiers.toml"),
        format!(
            "venv-root = \"{}\"\nkeep-generations = 2\n[tiers.a]\nrequirements = [\"alpha\"]\n[tiers.b]\nrequirements = [\"alpha\"]\n",
            s.root.join("venvs").display()
        ),
    )
    .unwrap();
    s.lock("a", &["alpha"]);
    s.ok(&["materialize", "--frozen", "a"]);

    let report = s.json(&["du", "--json"]);
    let ours = report["store_bytes"].as_u64().unwrap() + report["venv_bytes"].as_u64().unwrap();
    let theirs = du_s(&[s.root.join("store"), s.root.join("venvs")]);
    let off = (ours as f64 - theirs as f64).abs() / theirs as f64;
    eprintln!("tstore du: {ours} bytes; du -s -B1 store venvs: {theirs} bytes");
    assert!(
        off <= 0.01,
        "tstore du: {ours} bytes, du -s: {theirs} bytes ({:.1}% apart)\n{report}",
        off * 100.0
    );
    // Each tier's private bytes are within what du says of its generation.
    for tier in report["tiers"].as_array().unwrap() {
        let private = tier["private_bytes"].as_u64().unwrap();
        let generation = s
            .root
            .join("venvs/.tstore-generations")
            .join(tier["name"].as_str().unwrap())
            .join(tier["generation"].as_u64().unwrap().to_string());
        // Directories alone take blocks.
        assert!(private >= 4096 * 4, "{tier}");
        assert!(private <= du_s(&[generation]), "{tier}");
    }
    // verify names the same size for the store's objects.
    let verify = s.json(&["verify", "--json"]);
    assert_eq!(verify["bytes_checked"], report["object_bytes"], "{verify}");
    let text = s.ok(&["du"]);
    assert!(
        text.contains("with index, manifests and skeletons"),
        "{text}"
    );
}

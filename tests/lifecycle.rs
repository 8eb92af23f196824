//! Generations, rollback, edit and remove.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Tier `t` with alpha; `extras` adds more packages to its lock.
struct Project {
    world: World,
    server: FileServer,
}

impl Project {
    fn new(tiers: &str) -> Self {
        let world = World::new();
        let wheels = world.wheels();
        WheelBuilder::new("alpha", "1.0")
            .file("alpha/__init__.py", "VALUE = 'alpha'\n")
            .console_script("alpha-hello", "alpha.extra:main")
            .file("alpha/extra.py", "def main():\n    print('hi')\n")
            .build(&wheels);
        for name in ["gamma", "delta"] {
            WheelBuilder::new(name, "1.0")
                .file(
                    &format!("{name}/__init__.py"),
                    &format!("NAME = '{name}'\n"),
                )
                .build(&wheels);
        }
        let server = FileServer::start(&wheels);
        world.write_tiers(tiers);
        Self { world, server }
    }

    fn lock(&self, tier: &str, packages: &[&str]) {
        let lock = self.world.project().join(format!("pylock.{tier}.toml"));
        lock_served(&lock, &self.world.wheels(), packages, &self.server.url);
    }
}

fn site(venv: &Path) -> PathBuf {
    venv.join("lib/python3.11/site-packages")
}

#[test]
fn generations_switch_atomically_and_roll_back() {
    let p = Project::new("keep-generations = 2\n[tiers.t]\nrequirements = [\"alpha\"]\n");
    let w = &p.world;
    p.lock("t", &["alpha"]);
    w.ok(&["materialize", "--frozen", "t"]);
    p.lock("t", &["alpha", "gamma"]);
    let out = w.ok(&["materialize", "--frozen", "t"]);
    assert!(out.contains("t: 2 packages"), "{out}");
    let venv = w.venv("t");
    assert!(
        fs_err::symlink_metadata(&venv)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    python_ok(&venv, "import gamma");

    let listing = w.ok(&["generations", "t"]);
    let current: Vec<&str> = listing.lines().filter(|l| l.starts_with('*')).collect();
    assert_eq!(current.len(), 1, "{listing}");
    assert!(
        current[0].split_whitespace().nth(1) == Some("2"),
        "{listing}"
    );

    // Roll back: gamma is gone, the launcher (naming the stable path) still runs.
    let out = w.ok(&["rollback", "t"]);
    assert!(out.contains("generation 1 is in use (was 2)"), "{out}");
    assert!(!python(&venv, "import gamma").status.success());
    let hello = std::process::Command::new(venv.join("bin/alpha-hello"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&hello.stdout).trim(), "hi");
    let printed = python_ok(&venv, "import sys; print(sys.prefix)");
    assert_eq!(printed.trim(), venv.display().to_string());
    w.ok(&["rollback", "t", "2"]);
    python_ok(&venv, "import gamma");
    let err = w.fails(&["rollback", "t", "9"]);
    assert!(
        err.contains("generation 9") && err.contains("kept generations: 1, 2"),
        "{err}"
    );

    // A third generation: with keep-generations = 2 the first goes.
    p.lock("t", &["alpha", "delta"]);
    w.ok(&["materialize", "--frozen", "t"]);
    let gens = w.home().join("venvs/.tstore-generations/t");
    let mut on_disk: Vec<String> = fs_err::read_dir(&gens)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, ["2", "3"]);
    let json: serde_json::Value = serde_json::from_str(
        w.ok(&["generations", "t", "--json"])
            .trim_start_matches(|c| c != '{'),
    )
    .unwrap();
    let numbers: Vec<i64> = json["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 3]);
}

#[test]
fn edit_makes_one_tier_private_and_materialize_restores_sharing() {
    let p = Project::new(
        "[tiers.a]\nrequirements = [\"alpha\"]\n[tiers.b]\nrequirements = [\"alpha\"]\n",
    );
    let w = &p.world;
    p.lock("a", &["alpha"]);
    p.lock("b", &["alpha"]);
    w.ok(&["materialize", "--frozen", "a", "b"]);
    let file_a = site(&w.venv("a")).join("alpha/__init__.py");
    let file_b = site(&w.venv("b")).join("alpha/__init__.py");
    assert_eq!(inode_of(&file_a), inode_of(&file_b));

    let out = w.ok(&["edit", "a", "Alpha"]);
    assert!(out.contains("private, writable copies"), "{out}");
    assert_ne!(inode_of(&file_a), inode_of(&file_b));
    assert_eq!(mode_of(&file_a), 0o644);
    fs_err::write(&file_a, "VALUE = 'patched'\n").unwrap();
    assert_eq!(
        python_ok(&w.venv("a"), "import alpha; print(alpha.VALUE)").trim(),
        "patched"
    );
    assert_eq!(
        python_ok(&w.venv("b"), "import alpha; print(alpha.VALUE)").trim(),
        "alpha"
    );

    let err = w.fails(&["edit", "a", "alpah"]);
    assert!(err.contains("did you mean `alpha`"), "{err}");

    // Materialize brings back the shared file.
    let out = w.ok(&["materialize", "--frozen", "a"]);
    assert!(!out.contains("up to date"), "{out}");
    assert_eq!(inode_of(&file_a), inode_of(&file_b));
    assert_eq!(
        python_ok(&w.venv("a"), "import alpha; print(alpha.VALUE)").trim(),
        "alpha"
    );
}

#[test]
fn remove_deletes_the_venv_and_its_generations() {
    let p = Project::new("[tiers.t]\nrequirements = [\"alpha\"]\n");
    let w = &p.world;
    p.lock("t", &["alpha"]);
    w.ok(&["materialize", "--frozen", "t"]);
    let out = w.ok(&["remove", "t"]);
    assert!(out.contains("removed"), "{out}");
    assert!(fs_err::symlink_metadata(w.venv("t")).is_err());
    assert!(!w.home().join("venvs/.tstore-generations/t").exists());
    let listing = w.ok(&["list", "--json"]);
    assert!(listing.contains("\"materialized\": false"), "{listing}");
    // And it can be built again.
    w.ok(&["materialize", "--frozen", "t"]);
    python_ok(&w.venv("t"), "import alpha");
}

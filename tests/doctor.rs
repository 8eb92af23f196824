//! `tstore doctor` on a healthy store and on broken ones: each problem named
//! with its fix, and a non-zero exit status when materialize would fail.

mod common;

use std::io::{Seek, SeekFrom, Write};

use common::*;

/// Tier `t` holds `shared`, locked by real uv from a local folder.
fn healthy() -> World {
    let world = World::new();
    WheelBuilder::new("shared", "1.0")
        .file("shared/__init__.py", "VERSION = '1.0'\n")
        .build(&world.wheels());
    world.write_tiers(
        "no-index = true\nfind-links = [\"../wheels\"]\n[tiers.t]\nrequirements = [\"shared\"]\n",
    );
    world.ok(&["materialize", "t"]);
    world
}

fn doctor_json(world: &World) -> (Option<i32>, serde_json::Value) {
    let out = world.run(&["doctor", "--json"]);
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json is not JSON ({e}): {out:?}"));
    (out.status.code(), json)
}

/// The check named `name` in doctor's JSON.
fn check<'a>(json: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check `{name}` in {json:#}"))
}

#[test]
fn a_healthy_store_passes_every_check() {
    let world = healthy();
    let out = world.run(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        text.contains(&format!("store      {}", world.store().display())),
        "{text}"
    );
    assert!(text.contains("tiers.toml"), "{text}");
    let venvs = world.home().join("venvs");
    for name in [
        "tmp".to_string(),
        "index".to_string(),
        format!("link:{}", venvs.display()),
        "uv".to_string(),
        "python:t".to_string(),
        "lock:t".to_string(),
        "free-space".to_string(),
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("ok  ") && l.contains(&name)),
            "`{name}` passes: {text}"
        );
    }
    assert!(text.contains("all 7 checks passed"), "{text}");

    let (status, json) = doctor_json(&world);
    assert_eq!(status, Some(0));
    assert_eq!(json["version"], 1, "{json:#}");
    assert_eq!(
        json["locations"]["store"],
        world.store().display().to_string()
    );
    let checks = json["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 7, "{json:#}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{json:#}");
    assert!(
        check(&json, "uv")["detail"]
            .as_str()
            .unwrap()
            .starts_with("uv "),
        "{json:#}"
    );
    let link = check(&json, &format!("link:{}", venvs.display()))["detail"]
        .as_str()
        .unwrap();
    assert!(link.contains("the store's filesystem"), "{link}");
    if link.starts_with("hardlink") {
        assert!(link.contains("links per object"), "{link}");
    }
}

#[test]
fn a_damaged_index_fails_with_repair_as_the_fix() {
    let world = healthy();
    let index = world.store().join("v1/store.db");
    let pristine = fs_err::read(&index).unwrap();
    let size = pristine.len() as u64;
    // The header (the store cannot open it) and a page inside (it opens,
    // SQLite's quick check finds it).
    for offset in [0, size / 2 / 4096 * 4096] {
        fs_err::write(&index, &pristine).unwrap();
        for side in ["store.db-wal", "store.db-shm"] {
            let _ = std::fs::remove_file(world.store().join("v1").join(side));
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&index)
            .unwrap();
        file.seek(SeekFrom::Start(offset)).unwrap();
        file.write_all(&[0xA5; 4096]).unwrap();
        drop(file);
        let out = world.run(&["doctor"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "garbage at {offset}: {out:?}");
        let line = text
            .lines()
            .find(|l| l.starts_with("FAIL") && l.contains("index"))
            .unwrap_or_else(|| panic!("garbage at {offset}: no failed index check: {text}"));
        assert!(line.contains("store.db"), "{line}");
        assert!(text.contains("fix: `tstore verify --repair`"), "{text}");
        assert!(text.contains("materialize would fail"), "{text}");
        let (status, json) = doctor_json(&world);
        assert_eq!(status, Some(1));
        let index_check = check(&json, "index");
        assert_eq!(index_check["ok"], false);
        assert_eq!(index_check["blocking"], true);
    }
}

#[test]
fn a_missing_python_fails_naming_the_tier_and_the_install() {
    let world = healthy();
    world.write_tiers(
        "no-index = true\nfind-links = [\"../wheels\"]\n[tiers.t]\nrequirements = [\"shared\"]\n\
         [tiers.future]\nrequirements = [\"shared\"]\npython = \"3.99\"\n",
    );
    let out = world.run(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("python:future")),
        "{text}"
    );
    assert!(text.contains("`uv python install 3.99`"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok  ") && l.contains("python:t ")),
        "the other tier's Python is fine: {text}"
    );
    // pyenv has one that uv does not see: the fix names its folder.
    let pyenv = world.path().join("pyenv");
    for version in ["3.99.1", "3.99.10", "3.9.1"] {
        fs_err::create_dir_all(pyenv.join("versions").join(version).join("bin")).unwrap();
    }
    let out = world
        .tstore(&["doctor"])
        .env("PYENV_ROOT", &pyenv)
        .output()
        .unwrap();
    let with_pyenv = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        with_pyenv.contains(&format!(
            "fix: pyenv has it, which uv sees only on PATH: add {} to PATH",
            pyenv.join("versions/3.99.10/bin").display()
        )),
        "{with_pyenv}"
    );
    // The new tier has no lock yet: a warning, not a failure of its own.
    assert!(
        text.lines()
            .any(|l| l.starts_with("warn") && l.contains("lock:future")),
        "{text}"
    );
    assert!(text.contains("fix: `tstore lock future`"), "{text}");
}

/// Venvs on a tmpfs, the store elsewhere: no links across filesystems.
#[test]
fn venvs_on_another_filesystem_are_named_and_hardlink_mode_fails() {
    let Some(fs) = Mount::tmpfs_or_skip("16m") else {
        return;
    };
    let world = healthy();
    let root = fs.path.join("venvs");
    let tiers = |mode: &str| {
        format!(
            "no-index = true\nfind-links = [\"../wheels\"]\nvenv-root = \"{}\"\nlink-mode = \"{mode}\"\n\
             [tiers.t]\nrequirements = [\"shared\"]\n",
            root.display()
        )
    };
    world.write_tiers(&tiers("auto"));
    let (status, json) = doctor_json(&world);
    let link = check(&json, &format!("link:{}", root.display()));
    assert_eq!(status, Some(0), "copies still work: {json:#}");
    assert_eq!(link["ok"], false, "{json:#}");
    assert_eq!(link["blocking"], false, "{json:#}");
    let detail = link["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("copy") && detail.contains("another filesystem than the store"),
        "{detail}"
    );
    assert!(
        link["fix"].as_str().unwrap().contains("TSTORE_HOME"),
        "{json:#}"
    );

    world.write_tiers(&tiers("hardlink"));
    let out = world.run(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL") && l.contains(&format!("link:{}", root.display()))),
        "{text}"
    );
    assert!(text.contains("set `link-mode = \"auto\"`"), "{text}");
}

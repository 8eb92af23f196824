//! Rollback with real uv, offline: a rolled-back tier stays rolled back
//! through `run` and `materialize`, its lock follows it, and generations
//! in use are never pruned.

mod common;

use std::path::PathBuf;

use common::*;

const HEAD: &str = "no-index = true\nfind-links = [\"../wheels\"]\n";

fn shared_wheel(world: &World, version: &str) {
    WheelBuilder::new("shared", version)
        .file("shared/__init__.py", &format!("VERSION = '{version}'\n"))
        .build(&world.wheels());
}

/// Tier `t` (`requirements`, `keep` generations kept) with generation 1 on
/// shared 1.0 and generation 2, after `lock --upgrade`, on shared 2.0.
fn two_generations(keep: usize, requirements: &str) -> World {
    let world = World::new();
    shared_wheel(&world, "1.0");
    WheelBuilder::new("other", "1.0")
        .file("other/__init__.py", "")
        .build(&world.wheels());
    world.write_tiers(&tiers(keep, requirements));
    world.ok(&["materialize", "t"]);
    shared_wheel(&world, "2.0");
    world.ok(&["lock", "--upgrade", "t"]);
    world.ok(&["materialize", "t"]);
    assert_eq!(shared_version(&world), "2.0");
    world
}

fn tiers(keep: usize, requirements: &str) -> String {
    format!("keep-generations = {keep}\n{HEAD}[tiers.t]\nrequirements = [{requirements}]\n")
}

fn lock_file(world: &World) -> PathBuf {
    world.project().join("pylock.t.toml")
}

fn shared_version(world: &World) -> String {
    python_ok(
        &world.venv("t"),
        "import shared; print(shared.VERSION, end='')",
    )
}

/// Generation directories on disk, in number order.
fn on_disk(world: &World) -> Vec<i64> {
    let dir = world.home().join("venvs/.tstore-generations/t");
    let mut numbers: Vec<i64> = fs_err::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
        .collect();
    numbers.sort_unstable();
    numbers
}

/// The generation `tstore generations` marks as in use.
fn current(world: &World) -> i64 {
    let out = world.ok(&["generations", "t", "--json"]);
    let json: serde_json::Value =
        serde_json::from_str(out.trim_start_matches(|c| c != '{')).unwrap();
    let current: Vec<i64> = json["generations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["current"].as_bool() == Some(true))
        .map(|g| g["number"].as_i64().unwrap())
        .collect();
    assert_eq!(current.len(), 1, "{json}");
    current[0]
}

#[test]
fn rollback_restores_the_lock_and_run_keeps_the_old_version() {
    let world = two_generations(3, "\"shared\"");
    let out = world.ok(&["rollback", "t"]);
    assert!(out.contains("generation 1 is in use (was 2)"), "{out}");
    assert!(
        out.contains(&lock_file(&world).display().to_string()),
        "the notice names the lock file: {out}"
    );
    assert_eq!(locked_version(&world, "t", "shared"), "1.0");

    // `run` (a component's way to start) finds the tier up to date.
    for _ in 0..2 {
        let out = world
            .tstore(&[
                "run",
                "t",
                "--",
                "python",
                "-c",
                "import shared; print(shared.VERSION)",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1.0");
        assert_eq!(on_disk(&world), [1, 2]);
        assert_eq!(current(&world), 1);
    }

    // Forward again: the newer lock comes back with its venv.
    let out = world.ok(&["rollback", "t", "2"]);
    assert!(out.contains("generation 2 is in use (was 1)"), "{out}");
    assert_eq!(locked_version(&world, "t", "shared"), "2.0");
    let out = world.ok(&["materialize", "t"]);
    assert!(out.contains("t: up to date"), "{out}");
    assert_eq!(on_disk(&world), [1, 2]);
}

#[test]
fn materialize_after_rollback_builds_nothing_and_switches_to_a_kept_generation() {
    let world = two_generations(3, "\"shared\"");
    let newer_lock = fs_err::read(lock_file(&world)).unwrap();
    world.ok(&["rollback", "t"]);
    let out = world.ok(&["materialize", "t"]);
    assert!(out.contains("t: up to date"), "{out}");
    assert_eq!(on_disk(&world), [1, 2]);
    assert_eq!(current(&world), 1);
    assert_eq!(shared_version(&world), "1.0");

    // The newer lock comes back some other way (say `git checkout`): its
    // plan is generation 2's, which is switched to, not built again.
    fs_err::write(lock_file(&world), &newer_lock).unwrap();
    let out = world.ok(&["materialize", "t"]);
    assert!(
        out.contains("t: switched to generation 2 (already built)"),
        "{out}"
    );
    assert_eq!(on_disk(&world), [1, 2]);
    assert_eq!(current(&world), 2);
    assert_eq!(shared_version(&world), "2.0");
    let out = world.ok(&["materialize", "t"]);
    assert!(out.contains("t: up to date"), "{out}");
}

#[test]
fn a_new_requirement_after_rollback_builds_on_top_and_keeps_the_generation_in_use() {
    let world = two_generations(2, "\"shared\"");
    world.ok(&["rollback", "t"]);
    world.write_tiers(&tiers(2, "\"shared\", \"other\""));
    let out = world.ok(&["materialize", "t"]);
    assert!(out.contains("t: 2 packages"), "{out}");
    // Re-locking kept the restored pin.
    assert_eq!(locked_version(&world, "t", "shared"), "1.0");
    assert_eq!(shared_version(&world), "1.0");
    python_ok(&world.venv("t"), "import other");
    // Kept: the two most recently in use, 3 and 1; 2 was rolled back from.
    assert_eq!(on_disk(&world), [1, 3]);
    assert_eq!(current(&world), 3);

    let out = world.ok(&["rollback", "t"]);
    assert!(out.contains("generation 1 is in use (was 3)"), "{out}");
    assert_eq!(locked_version(&world, "t", "other"), "");
    // tiers.toml still asks for `other`: the restored lock is stale, and
    // the notice says what the next materialize does.
    assert!(out.contains("tiers.toml"), "{out}");
}

#[test]
fn a_lock_that_cannot_be_restored_is_left_alone_and_said_so() {
    let world = two_generations(3, "\"shared\"");
    let newer_lock = fs_err::read(lock_file(&world)).unwrap();
    let db = rusqlite::Connection::open(world.store().join("v1/store.db")).unwrap();
    let snapshot: String = db
        .query_row("SELECT lock FROM generations WHERE number = 1", [], |r| {
            r.get(0)
        })
        .unwrap();

    // A snapshot that no longer matches its name is not written over the lock.
    let snapshot = PathBuf::from(snapshot);
    fs_err::set_permissions(
        &snapshot,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    fs_err::write(&snapshot, "garbage").unwrap();
    let out = world.ok(&["rollback", "t"]);
    assert!(out.contains("generation 1 is in use (was 2)"), "{out}");
    assert!(
        out.contains("was left as it is") && out.contains("is damaged"),
        "{out}"
    );
    assert_eq!(fs_err::read(lock_file(&world)).unwrap(), newer_lock);

    // A generation recorded with the lock's path (as before snapshots).
    world.ok(&["rollback", "t", "2"]);
    db.execute(
        "UPDATE generations SET lock = ?1 WHERE number = 1",
        [lock_file(&world).display().to_string()],
    )
    .unwrap();
    let out = world.ok(&["rollback", "t"]);
    assert!(
        out.contains("built before tstore kept each generation's lock")
            && out.contains("--no-sync"),
        "{out}"
    );
    assert_eq!(fs_err::read(lock_file(&world)).unwrap(), newer_lock);
    assert_eq!(shared_version(&world), "1.0");
}

//! Locking with real uv, offline: wheels built by the test are offered
//! through `find-links`.

mod common;

use common::*;

fn build_wheels(world: &World) {
    let dir = world.wheels();
    for version in ["1.0", "2.0"] {
        WheelBuilder::new("shared", version)
            .file("shared/__init__.py", &format!("VERSION = '{version}'\n"))
            .build(&dir);
    }
    WheelBuilder::new("leaf", "1.0")
        .file("leaf/__init__.py", "import shared\n")
        .requires("shared")
        .console_script("leaf-version", "leaf.cli:main")
        .file(
            "leaf/cli.py",
            "import shared\ndef main():\n    print(shared.VERSION)\n",
        )
        .build(&dir);
    WheelBuilder::new("other", "1.0")
        .file("other/__init__.py", "")
        .build(&dir);
}

fn tiers(a: &str, b: &str) -> String {
    format!(
        "no-index = true\nfind-links = [\"../wheels\"]\n\n[sets.common]\nrequirements = [{a}]\n\n\
         [tiers.a]\nsets = [\"common\"]\n\n[tiers.b]\nrequirements = [{b}]\n"
    )
}

#[test]
fn shared_packages_get_one_version_across_tiers_and_locks_are_reused() {
    let world = World::new();
    build_wheels(&world);
    // Alone, `leaf` would take shared 2.0; tier b caps shared below 2.
    world.write_tiers(&tiers("\"leaf\"", "\"shared<2\""));
    let out = world.ok(&["lock"]);
    assert!(
        out.contains("a: locked (versions shared with its solve group)"),
        "{out}"
    );
    assert_eq!(locked_version(&world, "a", "shared"), "1.0");
    assert_eq!(locked_version(&world, "b", "shared"), "1.0");
    let header = fs_err::read_to_string(world.project().join("pylock.a.toml")).unwrap();
    assert!(header.starts_with("# Written by tstore"), "{header}");

    // Unchanged inputs: uv is not run again.
    let before = fs_err::metadata(world.project().join("pylock.a.toml"))
        .unwrap()
        .modified()
        .unwrap();
    let out = world.ok(&["lock"]);
    assert!(
        out.contains("a: up to date") && out.contains("b: up to date"),
        "{out}"
    );
    let after = fs_err::metadata(world.project().join("pylock.a.toml"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);

    // A changed requirement makes the lock stale.
    world.write_tiers(&tiers("\"leaf\", \"other\"", "\"shared<2\""));
    let listing = world.ok(&["list"]);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("a ") && l.contains("stale")),
        "{listing}"
    );
    let out = world.ok(&["lock", "a"]);
    assert!(out.contains("a: locked"), "{out}");
    locked_version(&world, "a", "other");

    // Materialize from those locks, and the launcher sees the aligned version.
    world.ok(&["materialize", "a", "b"]);
    let run = std::process::Command::new(world.venv("a").join("bin/leaf-version"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "1.0");
    let out = world.ok(&["materialize", "a"]);
    assert!(out.contains("a: up to date"), "{out}");
}

#[test]
fn tiers_that_cannot_share_are_locked_alone_and_the_difference_is_named() {
    let world = World::new();
    build_wheels(&world);
    world.write_tiers(&tiers("\"shared>=2\"", "\"shared<2\""));
    let out = world.ok(&["lock"]);
    assert!(out.contains("has no common solution"), "{out}");
    assert!(out.contains("  shared: 1.0 in b; 2.0 in a"), "{out}");
    assert!(out.contains("a: locked on its own"), "{out}");
    assert_eq!(locked_version(&world, "a", "shared"), "2.0");
    assert_eq!(locked_version(&world, "b", "shared"), "1.0");
}

#[test]
fn unresolvable_tier_shows_uvs_reason() {
    let world = World::new();
    build_wheels(&world);
    world.write_tiers(&tiers("\"shared>=3\"", "\"shared<2\""));
    let err = world.fails(&["lock", "a"]);
    assert!(
        err.contains("cannot lock tier `a`") && err.contains("uv pip compile"),
        "{err}"
    );
    assert!(err.contains("shared"), "{err}");
}

#[test]
fn committed_locks_stay_current_in_another_checkout() {
    let world = World::new();
    build_wheels(&world);
    world.write_tiers(&tiers("\"leaf\"", "\"shared<2\""));
    world.ok(&["lock"]);
    // The same project (tiers.toml with a relative find-links, and its locks)
    // checked out somewhere else.
    let elsewhere = World::new();
    for name in ["tiers.toml", "pylock.a.toml", "pylock.b.toml"] {
        fs_err::copy(world.project().join(name), elsewhere.project().join(name)).unwrap();
    }
    let listing = elsewhere.ok(&["list", "--json"]);
    let json: serde_json::Value =
        serde_json::from_str(listing.trim_start_matches(|c| c != '{')).unwrap();
    for tier in json["tiers"].as_array().unwrap() {
        assert_eq!(tier["locked"], "yes", "{listing}");
    }
}

#[test]
fn lock_asks_uv_again_which_interpreter_a_tier_uses() {
    let world = World::new();
    build_wheels(&world);
    world.write_tiers(&tiers("\"leaf\"", "\"other\""));
    let log = world.path().join("uv.log");
    let uv = logging_uv(&world, &log);
    let tstore = |args: &[&str]| {
        let out = world.tstore(args).env("TSTORE_UV", &uv).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    tstore(&["lock"]);
    let after_lock = uv_calls(&log, "python find");
    assert!(
        after_lock >= 1,
        "lock asks which interpreter each tier uses"
    );
    // Builds reuse that answer...
    tstore(&["materialize", "a"]);
    tstore(&["remove", "a"]);
    tstore(&["materialize", "a"]);
    assert_eq!(uv_calls(&log, "python find"), after_lock);
    // ...and a lock asks again, even when the locks themselves are current.
    tstore(&["lock"]);
    assert!(uv_calls(&log, "python find") > after_lock);
}

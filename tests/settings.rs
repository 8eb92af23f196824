//! Settings as uv has them: each global option also an environment variable
//! (`TSTORE_*`), precedence flag > variable > tiers.toml > default, bad
//! values named; `-v` shows every command tstore runs; `NO_COLOR` and
//! `TSTORE_NO_PROGRESS` on a terminal.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;

use common::*;

/// A world whose tier `t` needs `alpha` from find-links, linked by
/// hardlink according to tiers.toml.
fn world() -> World {
    let world = World::new();
    WheelBuilder::new("alpha", "1.0")
        .file("alpha/__init__.py", "X = 1\n")
        .build(&world.wheels());
    world.write_tiers(
        "no-index = true\nfind-links = [\"../wheels\"]\nlink-mode = \"hardlink\"\n\
         [tiers.t]\nrequirements = [\"alpha\"]\n",
    );
    world
}

fn run_with(world: &World, vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = world.tstore(args);
    for (name, value) in vars {
        cmd.env(name, value);
    }
    cmd.output().unwrap()
}

fn ok_with(world: &World, vars: &[(&str, &str)], args: &[&str]) -> String {
    let out = run_with(world, vars, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{vars:?} tstore {args:?} failed:\n{stderr}"
    );
    stderr + &String::from_utf8_lossy(&out.stdout)
}

fn fails_with(world: &World, vars: &[(&str, &str)], args: &[&str]) -> String {
    let out = run_with(world, vars, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{vars:?} tstore {args:?} should fail:\n{stderr}"
    );
    stderr
}

/// Links to `alpha/__init__.py`'s inode in a standalone venv at `dir`.
fn links_of_module(dir: &Path) -> u64 {
    let site = dir.join("lib/python3.11/site-packages");
    fs_err::metadata(site.join("alpha/__init__.py"))
        .unwrap()
        .nlink()
}

#[test]
fn offline_and_frozen_variables_take_effect_and_0_turns_them_off() {
    let world = world();
    let err = fails_with(&world, &[("TSTORE_FROZEN", "1")], &["materialize", "t"]);
    assert!(
        err.contains("--frozen") && err.contains("pylock.t.toml"),
        "{err}"
    );
    assert!(!world.project().join("pylock.t.toml").exists());

    world.ok(&["lock", "t"]);
    // Locked but nothing fetched: offline refuses to download.
    let err = fails_with(&world, &[("TSTORE_OFFLINE", "yes")], &["materialize", "t"]);
    assert!(
        err.contains("the store lacks") && err.contains("alpha"),
        "{err}"
    );
    let err = fails_with(&world, &[("TSTORE_OFFLINE", "on")], &["fetch", "t"]);
    assert!(err.contains("the store lacks"), "{err}");
    ok_with(
        &world,
        &[("TSTORE_OFFLINE", "0"), ("TSTORE_FROZEN", "off")],
        &["materialize", "t"],
    );
    // Now in the store, offline works.
    ok_with(&world, &[("TSTORE_OFFLINE", "TRUE")], &["materialize", "t"]);
}

#[test]
fn concurrent_downloads_variable_sets_how_many_run_at_once() {
    let world = world();
    WheelBuilder::new("beta", "1.0")
        .file("beta/__init__.py", "Y = 2\n")
        .build(&world.wheels());
    world.write_tiers(
        "no-index = true\nfind-links = [\"../wheels\"]\n\
         [tiers.t]\nrequirements = [\"alpha\", \"beta\"]\n",
    );
    let out = ok_with(
        &world,
        &[("TSTORE_CONCURRENT_DOWNLOADS", "1")],
        &["-v", "fetch", "t"],
    );
    assert!(out.contains("2 to download, 1 at once"), "{out}");
    // The default: no more at once than there are files.
    world.ok(&["gc"]);
    let out = world.ok(&["-v", "fetch", "t"]);
    assert!(out.contains("2 to download, 2 at once"), "{out}");
    let err = fails_with(
        &world,
        &[("TSTORE_CONCURRENT_DOWNLOADS", "0")],
        &["fetch", "t"],
    );
    assert!(err.contains("TSTORE_CONCURRENT_DOWNLOADS=\"0\""), "{err}");
}

#[test]
fn link_mode_flag_beats_variable_beats_tiers_toml() {
    let world = world();
    world.ok(&["materialize", "t"]);
    let into = |name: &str| world.path().join(name);
    let into_arg = |name: &str| into(name).display().to_string();

    // tiers.toml says hardlink: the store object and the venv's file.
    world.ok(&["materialize", "t", "--into", &into_arg("toml")]);
    assert!(links_of_module(&into("toml")) >= 2);

    // The variable beats tiers.toml.
    let copy = [("TSTORE_LINK_MODE", "copy")];
    ok_with(
        &world,
        &copy,
        &["materialize", "t", "--into", &into_arg("var")],
    );
    assert_eq!(links_of_module(&into("var")), 1);

    // The flag beats the variable.
    ok_with(
        &world,
        &copy,
        &[
            "materialize",
            "t",
            "--link-mode",
            "hardlink",
            "--into",
            &into_arg("flag"),
        ],
    );
    assert!(links_of_module(&into("flag")) >= 2);
}

#[test]
fn the_bytecode_variable_replaces_every_tiers_compile_bytecode() {
    let world = world();
    let pyc = |name: &str| {
        world
            .path()
            .join(name)
            .join("lib/python3.11/site-packages/alpha/__pycache__/__init__.cpython-311.pyc")
            .is_file()
    };
    let into_arg = |name: &str| world.path().join(name).display().to_string();
    world.ok(&["materialize", "t", "--into", &into_arg("compiled")]);
    assert!(pyc("compiled"));
    for mode in ["false", "lazy"] {
        ok_with(
            &world,
            &[("TSTORE_COMPILE_BYTECODE", mode)],
            &["materialize", "t", "--into", &into_arg(mode)],
        );
    }
    assert!(!pyc("false"));
    // Lazy links the pycs the store has (the first build compiled them).
    assert!(pyc("lazy"));
}

#[test]
fn bad_values_name_the_variable_and_the_accepted_ones() {
    let world = world();
    for name in [
        "TSTORE_OFFLINE",
        "TSTORE_FROZEN",
        "TSTORE_QUIET",
        "TSTORE_VERBOSE",
        "TSTORE_NO_PROGRESS",
    ] {
        let err = fails_with(&world, &[(name, "maybe")], &["list"]);
        assert!(
            err.contains(&format!("{name}=\"maybe\" is not a boolean")),
            "{name}: {err}"
        );
        assert!(
            err.contains("1, true, yes or on") && err.contains("0, false, no or off"),
            "{name}: {err}"
        );
    }
    let err = fails_with(&world, &[("TSTORE_LINK_MODE", "symlink")], &["list"]);
    assert!(
        err.contains("TSTORE_LINK_MODE=\"symlink\" is not a link mode")
            && err.contains("auto, reflink, hardlink or copy"),
        "{err}"
    );
    let err = fails_with(
        &world,
        &[("TSTORE_QUIET", "1"), ("TSTORE_VERBOSE", "1")],
        &["list"],
    );
    assert!(
        err.contains("TSTORE_QUIET and TSTORE_VERBOSE are both on"),
        "{err}"
    );
}

#[test]
fn quiet_and_verbose_variables_yield_to_the_flags() {
    let world = world();
    let note = "is not materialized yet";
    assert!(world.ok(&["which", "t"]).contains(note));
    assert!(!ok_with(&world, &[("TSTORE_QUIET", "1")], &["which", "t"]).contains(note));
    let verbose = ok_with(&world, &[("TSTORE_QUIET", "1")], &["-v", "which", "t"]);
    assert!(verbose.contains(note), "{verbose}");

    let out = ok_with(&world, &[("TSTORE_VERBOSE", "1")], &["lock", "t"]);
    assert!(
        out.contains("ran `") && out.contains("pip compile"),
        "{out}"
    );
    assert!(
        out.contains("setting from the environment: TSTORE_VERBOSE=1"),
        "{out}"
    );
    let out = ok_with(
        &world,
        &[("TSTORE_VERBOSE", "1")],
        &["-q", "lock", "--upgrade", "t"],
    );
    assert!(!out.contains("ran `"), "{out}");
}

/// Every `ran …` line of `-v` output: the command and its duration.
fn ran_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("ran `"))
        .collect()
}

fn has_duration(line: &str) -> bool {
    let Some((_, after)) = line.rsplit_once("` in ") else {
        return false;
    };
    let seconds = after.split('s').next().unwrap_or("");
    seconds.parse::<f64>().is_ok() && seconds.contains('.')
}

#[test]
fn verbose_shows_every_uv_and_python_command_with_its_duration() {
    let world = world();
    let out = world.ok(&["-v", "lock", "t"]);
    let ran = ran_lines(&out);
    assert!(
        ran.iter()
            .any(|l| l.contains("uv") && l.contains(" pip compile ")),
        "{out}"
    );
    assert!(ran.iter().all(|l| has_duration(l)), "{ran:?}");

    let out = world.ok(&["-v", "materialize", "t"]);
    let ran = ran_lines(&out);
    assert!(ran.iter().any(|l| l.contains(" venv ")), "uv venv: {out}");
    // The bytecode workers: Python compiling the store's sources.
    assert!(
        ran.iter()
            .any(|l| l.contains("python") && l.contains(" -I -W ignore -c ")),
        "{out}"
    );
    assert!(ran.iter().all(|l| has_duration(l)), "{ran:?}");

    let out = world.ok(&["-v", "check", "t"]);
    assert!(
        ran_lines(&out)
            .iter()
            .any(|l| l.contains("-c 'import alpha'")),
        "{out}"
    );
    // Without -v: none.
    assert!(ran_lines(&world.ok(&["check", "t"])).is_empty());
}

#[test]
fn no_color_and_no_progress_hold_on_a_terminal() {
    let world = world();
    let (_, colored) = on_terminal(&world, &[], &["--no-such-option"]);
    assert!(
        colored.contains("\x1b["),
        "clap colours errors on a terminal: {colored:?}"
    );
    let (_, plain) = on_terminal(&world, &[("NO_COLOR", "1")], &["--no-such-option"]);
    assert!(plain.contains("--no-such-option"), "{plain:?}");
    assert!(!plain.contains("\x1b["), "{plain:?}");

    world.ok(&["lock", "t"]);
    let (ok, bars) = on_terminal(&world, &[], &["fetch", "t"]);
    assert!(ok, "{bars:?}");
    assert!(bars.contains("downloading ["), "{bars:?}");
    let (ok, quiet_bars) = on_terminal(
        &world,
        &[("TSTORE_NO_PROGRESS", "1")],
        &["materialize", "t"],
    );
    assert!(ok, "{quiet_bars:?}");
    assert!(quiet_bars.contains("1 package"), "{quiet_bars:?}");
    assert!(!quiet_bars.contains(" ["), "{quiet_bars:?}");
    let (ok, flag) = on_terminal(
        &world,
        &[],
        &["--no-progress", "materialize", "t", "--into", "../d"],
    );
    assert!(
        ok && flag.contains("standalone") && !flag.contains(" ["),
        "{flag:?}"
    );
}

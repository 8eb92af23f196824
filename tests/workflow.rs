//! Everyday workflow: pins kept and upgraded by real uv, outdated, diff,
//! check, union tiers, standalone venvs, several Pythons, completions and
//! the man page.

mod common;

use std::process::Command;

use common::*;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn completions_and_man_page_generate() {
    let world = World::new();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef tstore"),
        ("fish", "complete -c tstore"),
    ] {
        let out = world.run(&["completions", shell]);
        assert!(out.status.success(), "{out:?}");
        let text = stdout(&out);
        assert!(text.contains(marker), "{shell}: {text}");
        assert!(
            text.contains("materialize") && text.contains("adopt"),
            "{shell}"
        );
    }
    let man = stdout(&world.run(&["man"]));
    assert!(
        man.starts_with(".ie") || man.contains(".TH tstore"),
        "{man}"
    );
    assert!(man.contains("materialize"), "{man}");
}

/// `shared` 1.0 and (later) 2.0 through find-links, with real uv.
fn shared_wheel(world: &World, version: &str) {
    WheelBuilder::new("shared", version)
        .file("shared/__init__.py", &format!("VERSION = '{version}'\n"))
        .build(&world.wheels());
}

#[test]
fn relocks_keep_pins_until_an_upgrade_and_diff_shows_it() {
    let world = World::new();
    shared_wheel(&world, "1.0");
    WheelBuilder::new("other", "1.0")
        .file("other/__init__.py", "")
        .build(&world.wheels());
    let head = "no-index = true\nfind-links = [\"../wheels\"]\n";
    world.write_tiers(&format!("{head}[tiers.t]\nrequirements = [\"shared\"]\n"));
    world.ok(&["materialize", "t"]);
    assert_eq!(locked_version(&world, "t", "shared"), "1.0");

    // 2.0 appears; a change of requirements re-locks but keeps the pin.
    shared_wheel(&world, "2.0");
    world.write_tiers(&format!(
        "{head}[tiers.t]\nrequirements = [\"shared\", \"other\"]\n"
    ));
    let out = world.ok(&["lock"]);
    assert!(out.contains("\n  + other 1.0"), "{out}");
    assert!(!out.contains("shared 1.0 ->"), "{out}");
    assert_eq!(locked_version(&world, "t", "shared"), "1.0", "pin kept");
    assert_eq!(locked_version(&world, "t", "other"), "1.0");

    // An unlocked tier is named once, not listed package by package.
    world.write_tiers(&format!(
        "{head}[tiers.t]\nrequirements = [\"shared\", \"other\"]\n[tiers.u]\nrequirements = [\"other\"]\n"
    ));
    let out = world.run(&["outdated"]);
    let notes = String::from_utf8_lossy(&out.stderr);
    assert!(
        notes.contains("not locked yet") && notes.contains(": u"),
        "{notes}"
    );
    assert!(
        !stdout(&out).lines().any(|l| l.ends_with(" u")),
        "{}",
        stdout(&out)
    );
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| l.starts_with("shared")
            && l.contains("1.0")
            && l.contains("-> 2.0")
            && l.ends_with(" t")),
        "{text}"
    );
    assert_eq!(
        locked_version(&world, "t", "shared"),
        "1.0",
        "outdated writes nothing"
    );

    // The venv (generation 1) against the new lock: other is added.
    let diff = stdout(&world.run(&["diff", "t"]));
    assert!(diff.contains("+ other 1.0"), "{diff}");

    let out = world.ok(&["lock", "-P", "shared", "t"]);
    assert!(out.contains("  ~ shared 1.0 -> 2.0"), "{out}");
    assert_eq!(locked_version(&world, "t", "shared"), "2.0");
    // What the venv gets, against its previous generation.
    let out = world.ok(&["materialize", "t"]);
    assert!(out.contains("  + other 1.0"), "{out}");
    assert!(out.contains("  ~ shared 1.0 -> 2.0"), "{out}");
    let diff = stdout(&world.run(&["diff", "t", "1", "2"]));
    assert!(
        diff.contains("~ shared 1.0 -> 2.0") && diff.contains("+ other 1.0"),
        "{diff}"
    );
    let err = world.fails(&["diff", "t", "1", "9"]);
    assert!(err.contains("has no generation 9"), "{err}");
}

#[test]
fn check_reports_modules_that_do_not_import() {
    let world = World::new();
    WheelBuilder::new("good", "1.0")
        .file("good/__init__.py", "X = 1\n")
        .file("helper.py", "")
        .build(&world.wheels());
    WheelBuilder::new("broken", "1.0")
        .file("broken/__init__.py", "raise ImportError('needs libfoo')\n")
        .build(&world.wheels());
    let server = FileServer::start(&world.wheels());
    world.write_tiers("[tiers.t]\nrequirements = [\"good\", \"broken\"]\n");
    lock_served(
        &world.project().join("pylock.t.toml"),
        &world.wheels(),
        &["good", "broken"],
        &server.url,
    );
    world.ok(&["materialize", "--frozen", "t"]);
    let out = world.run(&["check", "t"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.contains("FAIL broken (broken): ImportError: needs libfoo"),
        "{text}"
    );
    assert!(
        text.contains("2 of 3 modules from 2 packages imported"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&world.run(&["check", "t", "--json"]))).unwrap();
    assert_eq!(json["failures"].as_array().unwrap().len(), 1);
}

#[test]
fn a_union_tier_shares_everything_with_its_members() {
    let world = World::new();
    shared_wheel(&world, "1.0");
    WheelBuilder::new("other", "1.0")
        .file("other/__init__.py", &"# padding\n".repeat(2000))
        .build(&world.wheels());
    world.write_tiers(
        "no-index = true\nfind-links = [\"../wheels\"]\n\
         [tiers.a]\nrequirements = [\"shared\"]\n[tiers.b]\nrequirements = [\"other\"]\n\
         [tiers.all]\nunion = [\"a\", \"b\"]\n",
    );
    world.ok(&["materialize", "a", "b", "all"]);
    python_ok(&world.venv("all"), "import shared, other");
    let file = |tier: &str, rel: &str| {
        world
            .venv(tier)
            .join("lib/python3.11/site-packages")
            .join(rel)
    };
    assert_eq!(
        inode_of(&file("all", "other/__init__.py")),
        inode_of(&file("b", "other/__init__.py"))
    );
    assert_eq!(
        inode_of(&file("all", "shared/__init__.py")),
        inode_of(&file("a", "shared/__init__.py"))
    );
}

#[test]
fn a_standalone_copy_works_after_the_store_is_gone() {
    let world = World::new();
    WheelBuilder::new("alpha", "1.0")
        .file("alpha/__init__.py", "VALUE = 'alpha'\n")
        .file("alpha/cli.py", "def main():\n    print('standalone')\n")
        .console_script("alpha-hello", "alpha.cli:main")
        .build(&world.wheels());
    let server = FileServer::start(&world.wheels());
    world.write_tiers("[tiers.t]\nrequirements = [\"alpha\"]\n");
    lock_served(
        &world.project().join("pylock.t.toml"),
        &world.wheels(),
        &["alpha"],
        &server.url,
    );
    let image = world.path().join("image/opt/venv");
    let out = world.ok(&[
        "materialize",
        "--frozen",
        "t",
        "--into",
        image.to_str().unwrap(),
        "--link-mode",
        "copy",
    ]);
    assert!(out.contains("(standalone)"), "{out}");
    assert!(
        !world.venv("t").exists(),
        "the tier's own venv is untouched"
    );
    let err = world.fails(&[
        "materialize",
        "--frozen",
        "t",
        "--into",
        image.to_str().unwrap(),
    ]);
    assert!(
        err.contains("exists and is not empty; give --force"),
        "{err}"
    );

    fs_err::remove_dir_all(world.store()).unwrap();
    python_ok(&image, "import alpha; assert alpha.VALUE == 'alpha'");
    let hello = Command::new(image.join("bin/alpha-hello"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&hello.stdout).trim(), "standalone");
    let cfg = fs_err::read_to_string(image.join("pyvenv.cfg")).unwrap();
    assert!(cfg.contains("home = "), "{cfg}");
    let activate = fs_err::read_to_string(image.join("bin/activate")).unwrap();
    assert!(
        activate.contains(&image.display().to_string()),
        "{activate}"
    );
    let init = image.join("lib/python3.11/site-packages/alpha/__init__.py");
    assert_eq!(
        std::os::unix::fs::MetadataExt::nlink(&fs_err::metadata(&init).unwrap()),
        1,
        "a private copy"
    );
}

/// One tier on Python 3.11, 3.12 and 3.13: three venvs, the pure-Python
/// files one object. Needs interpreters that `uv python find` sees (on PATH,
/// as `.ci/run` puts pyenv's); without them it skips, except where
/// `TSTORE_REQUIRE_PYTHONS=1` (CI, when the machine has them) makes a
/// missing one a failure. `TSTORE_TEST_PYTHON_BIN` may name a folder to
/// prepend to PATH.
#[test]
fn several_pythons_share_pure_python_files() {
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = std::env::var_os("TSTORE_TEST_PYTHON_BIN") {
        let mut joined = dir;
        joined.push(":");
        joined.push(&path);
        path = joined;
    }
    let missing: Vec<&str> = ["3.12", "3.13"]
        .into_iter()
        .filter(|version| {
            !Command::new("uv")
                .args(["python", "find", "--no-project", version])
                .env("PATH", &path)
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("TSTORE_REQUIRE_PYTHONS").is_none_or(|v| v != "1"),
            "TSTORE_REQUIRE_PYTHONS=1 but uv finds no Python {missing:?} on PATH"
        );
        eprintln!("skipped: no Python {missing:?} for uv to find");
        return;
    }
    let world = World::new();
    shared_wheel(&world, "1.0");
    world.write_tiers(
        "no-index = true\nfind-links = [\"../wheels\"]\n\
         [tiers.t]\nrequirements = [\"shared\"]\npython = [\"3.11\", \"3.12\", \"3.13\"]\n",
    );
    let out = world
        .tstore(&["materialize", "t"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let venvs = [
        (world.venv("t"), "3.11"),
        (world.home().join("venvs/t-py3.12"), "3.12"),
        (world.home().join("venvs/t-py3.13"), "3.13"),
    ];
    let mut inodes = Vec::new();
    for (venv, version) in &venvs {
        let answer = python_ok(
            venv,
            "import sys, shared; print('%d.%d' % sys.version_info[:2], shared.VERSION)",
        );
        assert_eq!(
            answer.trim(),
            format!("{version} 1.0"),
            "{}",
            venv.display()
        );
        inodes.push(inode_of(&venv.join(format!(
            "lib/python{version}/site-packages/shared/__init__.py"
        ))));
    }
    assert!(
        inodes.iter().all(|inode| *inode == inodes[0]),
        "one object for the three versions: {inodes:?}"
    );
}

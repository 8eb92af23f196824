//! `tstore adopt` on venvs that real pip and real uv built: files become
//! store links in place and every venv works exactly as before.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn site(venv: &Path) -> PathBuf {
    venv.join("lib/python3.11/site-packages")
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Python 3.11 uv finds (the one tiers use).
fn python311() -> PathBuf {
    let out = run_ok(Command::new("uv").args(["python", "find", "3.11"]));
    PathBuf::from(out.trim())
}

/// A venv made by `python -m venv` (with pip) and `pip install`.
fn pip_venv(world: &World, name: &str) -> PathBuf {
    let venv = world.path().join(name);
    run_ok(Command::new(python311()).args(["-m", "venv"]).arg(&venv));
    run_ok(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--no-index", "--find-links"])
            .arg(world.wheels())
            .arg("alpha"),
    );
    venv
}

/// A venv made by `uv venv` and `uv pip install` (hardlinked from uv's cache).
fn uv_venv(world: &World, name: &str) -> PathBuf {
    let venv = world.path().join(name);
    let cache = world.path().join("uv-cache");
    run_ok(
        Command::new("uv")
            .args(["venv", "--quiet", "--python"])
            .arg(python311())
            .arg(&venv)
            .env("UV_CACHE_DIR", &cache),
    );
    run_ok(
        Command::new("uv")
            .args(["pip", "install", "--quiet", "--no-index", "--find-links"])
            .arg(world.wheels())
            .arg("--python")
            .arg(venv.join("bin/python"))
            .arg("alpha")
            .env("UV_CACHE_DIR", &cache),
    );
    venv
}

fn pip_list(venv: &Path) -> String {
    run_ok(Command::new(venv.join("bin/python")).args(["-m", "pip", "list", "--format=freeze"]))
}

fn uv_pip_list(venv: &Path) -> String {
    run_ok(
        Command::new("uv")
            .args(["pip", "list", "--format=freeze", "--python"])
            .arg(venv.join("bin/python")),
    )
}

fn hello(venv: &Path) -> String {
    run_ok(&mut Command::new(venv.join("bin/alpha-hello")))
}

#[test]
fn adopted_pip_and_uv_venvs_share_files_and_work_as_before() {
    let world = World::new();
    WheelBuilder::new("shared", "1.0")
        .file("shared/__init__.py", "VERSION = '1.0'\n")
        .build(&world.wheels());
    WheelBuilder::new("alpha", "1.0")
        .requires("shared")
        .file(
            "alpha/__init__.py",
            "import shared\ndef hello():\n    print('hello', shared.VERSION)\n",
        )
        .file("alpha/extra.py", "EXTRA = 1\n")
        .console_script("alpha-hello", "alpha:hello")
        .build(&world.wheels());
    let (a, b, c) = (
        pip_venv(&world, "pip-a"),
        pip_venv(&world, "pip-b"),
        uv_venv(&world, "uv-c"),
    );
    let before = (pip_list(&a), pip_list(&b), uv_pip_list(&c));
    assert!(before.0.contains("alpha==1.0"), "{}", before.0);
    // A user's note (in no RECORD) and a user's edit (no longer matching RECORD).
    let note = site(&a).join("alpha/notes.txt");
    fs_err::write(&note, "mine\n").unwrap();
    let edited = site(&b).join("alpha/extra.py");
    fs_err::write(&edited, "EXTRA = 2  # patched\n").unwrap();
    let init = |v: &Path| site(v).join("alpha/__init__.py");
    let pip_init = |v: &Path| site(v).join("pip/__init__.py");
    let inodes_before = (inode_of(&init(&a)), inode_of(&init(&b)));

    let (a_s, b_s, c_s) = (
        a.display().to_string(),
        b.display().to_string(),
        c.display().to_string(),
    );
    let out = world.ok(&["adopt", "--dry-run", &a_s, &b_s, &c_s]);
    assert!(out.contains("would link to the store"), "{out}");
    assert_eq!(
        (inode_of(&init(&a)), inode_of(&init(&b))),
        inodes_before,
        "a dry run changes nothing"
    );
    assert_eq!(world.store_counts().1, 0, "a dry run stores nothing");

    let dry_run = out;
    let out = world.ok(&["adopt", &a_s, &b_s, &c_s]);
    // The dry run counted, venv by venv, what the real run then freed.
    let freed = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| Some(l.split_once("free ")?.1.split_once(" now")?.0.to_string()))
            .collect()
    };
    assert_eq!(freed(&dry_run).len(), 3, "{dry_run}");
    assert_eq!(freed(&dry_run), freed(&out), "{dry_run}\n{out}");
    assert!(out.contains("1 file no longer match their RECORD"), "{out}");
    assert!(out.contains(&edited.display().to_string()), "{out}");
    assert!(out.contains(&note.display().to_string()), "{out}");
    assert!(out.contains("by hardlink"), "{out}");

    // Same content, one inode: across pip venvs, and with the uv venv.
    assert_eq!(inode_of(&init(&a)), inode_of(&init(&b)));
    assert_eq!(inode_of(&init(&a)), inode_of(&init(&c)));
    assert_eq!(inode_of(&pip_init(&a)), inode_of(&pip_init(&b)));
    // What the user made or changed is as it was.
    assert_eq!(fs_err::read_to_string(&note).unwrap(), "mine\n");
    assert_eq!(
        fs_err::read_to_string(&edited).unwrap(),
        "EXTRA = 2  # patched\n"
    );
    assert_ne!(
        inode_of(&edited),
        inode_of(&site(&a).join("alpha/extra.py"))
    );
    // Everything works as before.
    assert_eq!(
        (pip_list(&a), pip_list(&b), uv_pip_list(&c)),
        before,
        "installed distributions are unchanged"
    );
    for venv in [&a, &b, &c] {
        assert_eq!(hello(venv).trim(), "hello 1.0");
    }
    python_ok(&b, "import alpha.extra; assert alpha.extra.EXTRA == 2");
    // B's sources now have A's modification time; B's pycs were updated to
    // match, so Python uses them instead of recompiling.
    let verbose = Command::new(b.join("bin/python"))
        .args(["-v", "-c", "import alpha"])
        .output()
        .unwrap();
    let trace = String::from_utf8_lossy(&verbose.stderr);
    assert!(
        trace.contains(&format!("matches {}", init(&b).display())),
        "{trace}"
    );
    assert!(!trace.contains("bad mtime"), "{trace}");
    run_ok(Command::new(a.join("bin/pip")).arg("--version"));

    // Again: nothing left to link.
    let out = world.ok(&["adopt", &a_s]);
    assert!(out.contains("0 files linked"), "{out}");
    let out = world.ok(&["verify"]);
    assert!(out.contains("all intact"), "{out}");

    // gc keeps what adopted venvs use, and lets it go with them.
    let objects = world.store_counts().1;
    assert!(objects > 0);
    let out = world.ok(&["gc"]);
    assert_eq!(world.store_counts().1, objects, "{out}");
    // pip can still uninstall from an adopted venv; the store is untouched.
    run_ok(Command::new(a.join("bin/pip")).args(["uninstall", "--yes", "--quiet", "alpha"]));
    assert_eq!(hello(&b).trim(), "hello 1.0");
    for venv in [&a, &b, &c] {
        fs_err::remove_dir_all(venv).unwrap();
    }
    let out = world.ok(&["gc"]);
    assert!(
        out.contains("3 adopted venvs whose folder is gone were forgotten"),
        "{out}"
    );
    assert_eq!(world.store_counts().1, 0, "{out}");
}

#[test]
fn adopt_refuses_what_is_not_a_venv_and_tiers() {
    let world = World::new();
    let err = world.fails(&["adopt", world.project().to_str().unwrap()]);
    assert!(
        err.contains("is not a virtual environment (it has no pyvenv.cfg)"),
        "{err}"
    );
    let err = world.fails(&["adopt", "/nonexistent/venv"]);
    assert!(err.contains("/nonexistent/venv does not exist"), "{err}");
    let err = world.fails(&["adopt", "--link-mode", "copy", "/nonexistent/venv"]);
    assert!(err.contains("--link-mode copy would save nothing"), "{err}");
}

/// A RECORD is input from whoever built the package: entries that lead out
/// of the venv, lexically or through a symlink, are never touched.
#[test]
fn record_entries_outside_the_venv_are_left_alone() {
    let world = World::new();
    let venv = world.path().join("v");
    run_ok(
        Command::new("uv")
            .args(["venv", "--quiet", "--python"])
            .arg(python311())
            .arg(&venv),
    );
    let outside = world.path().join("outside");
    fs_err::create_dir_all(&outside).unwrap();
    fs_err::write(outside.join("x.py"), "X = 1\n").unwrap();
    fs_err::write(world.path().join("loose.txt"), "X = 1\n").unwrap();
    let site = site(&venv);
    std::os::unix::fs::symlink(&outside, site.join("evil")).unwrap();
    fs_err::create_dir_all(site.join("fake")).unwrap();
    fs_err::write(site.join("fake/a.py"), "X = 1\n").unwrap();
    let dist_info = site.join("fake-1.0.dist-info");
    fs_err::create_dir_all(&dist_info).unwrap();
    fs_err::write(
        dist_info.join("METADATA"),
        "Metadata-Version: 2.1\nName: fake\nVersion: 1.0\n",
    )
    .unwrap();
    let hash = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(b"X = 1\n"))
    };
    fs_err::write(
        dist_info.join("RECORD"),
        format!(
            "fake/a.py,sha256={hash},6\nevil/x.py,sha256={hash},6\n\
             ../../../../loose.txt,sha256={hash},6\nfake/gone.py,,\n\
             fake-1.0.dist-info/METADATA,,\nfake-1.0.dist-info/RECORD,,\n"
        ),
    )
    .unwrap();
    let inodes = (
        inode_of(&outside.join("x.py")),
        inode_of(&world.path().join("loose.txt")),
    );
    let out = world.ok(&["adopt", "-v", venv.to_str().unwrap()]);
    assert!(
        out.contains("evil/x.py: its folder leads outside the venv"),
        "{out}"
    );
    assert!(
        out.contains("`../../../../loose.txt` points outside the venv"),
        "{out}"
    );
    assert!(
        out.contains("fake/gone.py: listed in RECORD but missing"),
        "{out}"
    );
    assert!(out.contains("2 files linked"), "{out}");
    assert_eq!(
        (
            inode_of(&outside.join("x.py")),
            inode_of(&world.path().join("loose.txt"))
        ),
        inodes
    );
    assert_eq!(
        mode_of(&site.join("fake/a.py")) & 0o777,
        0o444,
        "now the store object"
    );
}

//! Bytecode off the critical path: a tier's venv is switched to and usable
//! before its missing bytecode is compiled; the pycs are then linked into
//! the same generation, and a run killed meanwhile leaves a working venv
//! that the next run finishes. Needs uv and Python 3.11 (no network).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;

fn site_packages(venv: &Path) -> PathBuf {
    venv.join("lib/python3.11/site-packages")
}

/// The pyc Python looks for beside `module` (a path under site-packages).
fn pyc_of(venv: &Path, module: &str) -> PathBuf {
    let source = site_packages(venv).join(module);
    let stem = source.file_stem().unwrap().to_str().unwrap().to_string();
    source
        .parent()
        .unwrap()
        .join("__pycache__")
        .join(format!("{stem}.cpython-311.pyc"))
}

/// A PEP 552 checked-hash pyc (the kind tstore compiles), not a timestamp
/// pyc Python writes itself.
fn is_checked_hash_pyc(path: &Path) -> bool {
    let bytes = fs_err::read(path).unwrap();
    bytes.len() > 8 && bytes[4..8] == [3, 0, 0, 0]
}

/// A world with one tier, `t`, of the wheel `delta`, whose `delta/big.py`
/// takes Python a while to compile.
fn setup(world: &World) -> FileServer {
    let mut big = String::with_capacity(8 << 20);
    for i in 0..300_000 {
        big.push_str(&format!("value_{i} = {i} * 2 + len('{i}')\n"));
    }
    WheelBuilder::new("delta", "1.0")
        .file("delta/__init__.py", "from .core import VALUE\n")
        .file("delta/core.py", "VALUE = 7\n")
        .file("delta/big.py", &big)
        .file("delta_top.py", "TOP = 1\n")
        .build(&world.wheels());
    let server = FileServer::start(&world.wheels());
    world.write_tiers("python = \"3.11\"\n[tiers.t]\nrequirements = [\"delta\"]\n");
    lock_served(
        &world.project().join("pylock.t.toml"),
        &world.wheels(),
        &["delta"],
        &server.url,
    );
    server
}

const MODULES: [&str; 4] = [
    "delta/__init__.py",
    "delta/core.py",
    "delta/big.py",
    "delta_top.py",
];

#[test]
fn the_venv_is_usable_before_its_bytecode_and_complete_after() {
    let world = World::new();
    let _server = setup(&world);
    let out = world.ok(&["materialize", "--frozen", "t"]);
    assert!(out.contains("t: usable now at"), "{out}");
    assert!(out.contains("then 4 pycs compiled and linked in"), "{out}");
    let venv = world.venv("t");
    for module in MODULES {
        let pyc = pyc_of(&venv, module);
        assert!(is_checked_hash_pyc(&pyc), "{}", pyc.display());
    }
    assert!(site_packages(&venv).join("delta/__pycache__").is_dir());
    python_ok(&venv, "import delta, delta.big, delta_top");
    let verified = world.ok(&["verify"]);
    assert!(verified.contains("all intact"), "{verified}");
    // The completed generation is the tier's plan: nothing left to do.
    let again = world.ok(&["materialize", "--frozen", "t"]);
    assert!(again.contains("t: up to date"), "{again}");
}

#[test]
fn a_run_killed_while_compiling_leaves_a_working_venv_that_the_next_run_finishes() {
    let world = World::new();
    let _server = setup(&world);
    let mut child = world
        .tstore(&["materialize", "--frozen", "t"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("usable now") {
            child.kill().unwrap();
            break;
        }
    }
    child.wait().unwrap();
    assert!(seen.contains("usable now"), "{seen}");
    assert!(seen.contains("Ctrl-C leaves a working venv"), "{seen}");

    let venv = world.venv("t");
    let generation = fs_err::read_link(&venv).unwrap();
    // Killed before the big module's pyc was linked: the venv imports from
    // source, and Python writes its own (timestamp) pycs meanwhile.
    assert!(!pyc_of(&venv, "delta/big.py").exists());
    let imported = std::process::Command::new(venv.join("bin/python"))
        .args(["-c", "import delta; print(delta.VALUE)"])
        .env_remove("PYTHONDONTWRITEBYTECODE")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&imported.stdout).trim(), "7");
    assert!(!is_checked_hash_pyc(&pyc_of(&venv, "delta/core.py")));
    let verified = world.ok(&["verify"]);
    assert!(verified.contains("all intact"), "{verified}");

    // Not up to date: the next run compiles and links the missing pycs into
    // the same generation, replacing the ones Python wrote.
    let next = world.ok(&["materialize", "--frozen", "t"]);
    assert!(
        next.contains("finishing the bytecode of generation"),
        "{next}"
    );
    assert_eq!(fs_err::read_link(&venv).unwrap(), generation);
    for module in MODULES {
        let pyc = pyc_of(&venv, module);
        assert!(is_checked_hash_pyc(&pyc), "{}", pyc.display());
    }
    let verified = world.ok(&["verify"]);
    assert!(verified.contains("all intact"), "{verified}");
    let again = world.ok(&["materialize", "--frozen", "t"]);
    assert!(again.contains("t: up to date"), "{again}");
    python_ok(&venv, "import delta.big, delta_top");
}

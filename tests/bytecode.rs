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

#[test]
fn a_disk_that_fills_while_compiling_is_an_error_and_the_next_run_compiles_what_failed() {
    // Room for the store and the venv (the 12 MB source of delta/big.py
    // once), not for big.py's 25 MB pyc.
    let Some(fs) = Mount::tmpfs_or_skip("20m") else {
        return;
    };
    let root = fs.path.as_path();
    let world = World::new();
    let server = setup(&world);
    let project = project_at(
        root,
        "python = \"3.11\"\n[tiers.t]\nrequirements = [\"delta\"]\n",
    );
    lock_served(
        &project.join("pylock.t.toml"),
        &world.wheels(),
        &["delta"],
        &server.url,
    );
    let run = |args: &[&str]| world.run_in(&project, &root.join("store"), args);
    let out = run(&["materialize", "--frozen", "t"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("could not be compiled")
            && stderr.contains("delta/big.py")
            && stderr.contains("hint: the disk is full"),
        "{stderr}"
    );
    // The venv works meanwhile; the store verifies.
    let venv = root.join("venvs/t");
    python_ok(&venv, "import delta, delta_top");
    let verify = run(&["verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // With room again, the next run compiles big.py: the full disk was not
    // taken for a source that does not compile.
    fs.resize_tmpfs("96m").unwrap();
    let next = run(&["materialize", "--frozen", "t"]);
    assert!(
        next.status.success(),
        "{}",
        String::from_utf8_lossy(&next.stderr)
    );
    for module in MODULES {
        let pyc = pyc_of(&venv, module);
        assert!(is_checked_hash_pyc(&pyc), "{}", pyc.display());
    }
    // Whole: a pyc cut short would fail this import.
    python_ok(
        &venv,
        "import delta.big; assert delta.big.value_299999 == 599998 + 6",
    );
}

/// Imports `code` in `venv` with Python free to write its pycs (the test
/// environment may forbid it).
fn import_writing_pycs(venv: &Path, code: &str) -> String {
    let out = std::process::Command::new(venv.join("bin/python"))
        .args(["-v", "-c", code])
        .env_remove("PYTHONDONTWRITEBYTECODE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{code}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn links(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs_err::metadata(path).unwrap().nlink()
}

#[test]
fn a_lazy_tier_compiles_nothing_and_shares_the_pycs_python_writes() {
    let world = World::new();
    WheelBuilder::new("eps", "1.0")
        .file(
            "eps/__init__.py",
            "from .core import VALUE\nfrom . import blank\n",
        )
        .file("eps/core.py", "VALUE = 5\n")
        .raw("eps/blank.py", b"", 0o100644)
        .file("eps/unused.py", "UNUSED = 1\n")
        .file("eps_top.py", "TOP = 1\n")
        .build(&world.wheels());
    let server = FileServer::start(&world.wheels());
    world.write_tiers(
        "python = \"3.11\"\ncompile-bytecode = \"lazy\"\n\
         [tiers.a]\nrequirements = [\"eps\"]\n[tiers.b]\nrequirements = [\"eps\"]\n",
    );
    for tier in ["a", "b"] {
        let lock = world.project().join(format!("pylock.{tier}.toml"));
        lock_served(&lock, &world.wheels(), &["eps"], &server.url);
    }
    let built = world.ok(&["-v", "materialize", "--frozen", "a"]);
    assert!(!built.contains("compiled"), "{built}");
    assert!(
        built.contains("bytecode: lazy: 0 pyc(s) the store has are linked"),
        "{built}"
    );
    let (a, b) = (world.venv("a"), world.venv("b"));
    for module in ["eps/__init__.py", "eps/core.py", "eps_top.py"] {
        assert!(!pyc_of(&a, module).exists(), "{module}");
    }

    // Python writes its own timestamp pycs on import; the tier stays as built.
    import_writing_pycs(&a, "import eps, eps_top");
    let core = pyc_of(&a, "eps/core.py");
    assert!(core.is_file() && !is_checked_hash_pyc(&core));
    assert_eq!(links(&core), 1);
    let unchanged = world.ok(&["materialize", "--frozen", "a"]);
    assert!(unchanged.contains("a: up to date"), "{unchanged}");

    // One of them no longer matches its source (its mtime field is off),
    // and one belongs to a file of the user's: both are left alone.
    let top = pyc_of(&a, "eps_top.py");
    let mut stale = fs_err::read(&top).unwrap();
    stale[8] ^= 1;
    fs_err::write(&top, &stale).unwrap();
    fs_err::write(site_packages(&a).join("mine.py"), "MINE = 1\n").unwrap();
    import_writing_pycs(&a, "import mine");
    let mine = pyc_of(&a, "mine.py");

    // A dry run changes nothing, pycs included.
    world.ok(&["gc", "--dry-run"]);
    assert_eq!(links(&core), 1);
    let collected = world.ok(&["gc"]);
    assert!(
        collected.contains(
            "3 pycs Python wrote in the venvs now shared through the store (3 new to it)"
        ),
        "{collected}"
    );
    assert!(
        collected.contains("1 pyc no longer matching their source left alone"),
        "{collected}"
    );
    assert!(is_checked_hash_pyc(&core) && links(&core) == 2);
    assert_eq!(fs_err::read(&top).unwrap(), stale);
    assert_eq!(links(&mine), 1);
    assert!(!pyc_of(&a, "eps/unused.py").exists());
    // (verify reports a file no distribution put there)
    fs_err::remove_file(site_packages(&a).join("mine.py")).unwrap();

    // Python uses the shared pyc as it is.
    let before = inode_of(&core);
    let imported = import_writing_pycs(&a, "import eps; assert eps.VALUE == 5");
    assert!(
        imported.contains(&format!("code object from '{}'", core.display())),
        "{imported}"
    );
    assert_eq!(inode_of(&core), before);
    let verified = world.ok(&["verify"]);
    assert!(verified.contains("all intact"), "{verified}");

    // Another lazy tier links the shared pycs from its first build, and
    // its first import compiles nothing.
    let built = world.ok(&["-v", "materialize", "--frozen", "b"]);
    assert!(
        built.contains("bytecode: lazy: 3 pyc(s) the store has are linked"),
        "{built}"
    );
    assert_eq!(inode_of(&pyc_of(&b, "eps/core.py")), before);
    assert!(is_checked_hash_pyc(&pyc_of(&b, "eps/blank.py")));
    import_writing_pycs(&b, "import eps");
    assert_eq!(inode_of(&pyc_of(&b, "eps/core.py")), before);

    // The shared pycs are kept while a tier uses their sources.
    world.ok(&["gc"]);
    assert!(core.is_file());
    python_ok(&b, "import eps");
}

#[test]
fn a_lazy_tier_rebuilt_first_takes_the_pycs_python_wrote_in_it() {
    let world = World::new();
    for version in ["1.0", "1.1"] {
        WheelBuilder::new("eps", version)
            .file("eps/__init__.py", "from .core import VALUE\n")
            .file("eps/core.py", "VALUE = 5\n")
            .file("eps/version.py", &format!("VERSION = {version:?}\n"))
            .build(&world.wheels());
    }
    let server = FileServer::start(&world.wheels());
    world.write_tiers(
        "python = \"3.11\"\n[tiers.a]\nrequirements = [\"eps\"]\ncompile-bytecode = \"lazy\"\n",
    );
    let lock = world.project().join("pylock.a.toml");
    lock_served(&lock, &world.wheels(), &["eps"], &server.url);
    world.ok(&["materialize", "--frozen", "a"]);
    let venv = world.venv("a");
    import_writing_pycs(&venv, "import eps");
    let written = pyc_of(&venv, "eps/core.py");
    assert_eq!(links(&written), 1);

    // An upgrade: the same core.py in eps 1.1.
    let newer = LockedPackage::served(
        &world.wheels().join("eps-1.1-py3-none-any.whl"),
        &server.url,
    );
    write_pylock(&lock, &[newer]);
    let upgraded = world.ok(&["-v", "materialize", "--frozen", "a"]);
    assert!(upgraded.contains("2 pyc(s) Python wrote in"), "{upgraded}");
    // The new generation links the pyc the old one wrote, which is now a
    // link to the same store object.
    let core = pyc_of(&venv, "eps/core.py");
    assert!(is_checked_hash_pyc(&core));
    assert_eq!(links(&core), 3);
    assert!(!pyc_of(&venv, "eps/version.py").exists());
    python_ok(
        &venv,
        "import eps.version; assert eps.version.VERSION == '1.1'",
    );
}

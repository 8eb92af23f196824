//! Materializing tiers from locks the test writes, with wheels built by the
//! test and served from 127.0.0.1. Needs uv and Python 3.11 (no network).

mod common;

use std::path::{Path, PathBuf};

use common::*;

const TIERS: &str = r#"
python = "3.11"
[tiers.t1]
requirements = ["alpha", "nsa", "nsb", "compiled"]
[tiers.t2]
requirements = ["alpha", "beta"]
"#;

fn native_tag() -> String {
    format!("cp311-cp311-manylinux_2_17_{}", std::env::consts::ARCH)
}

/// Builds the test wheels, serves them, writes tiers.toml and both locks.
fn setup(world: &World) -> FileServer {
    let wheels = world.wheels();
    let alpha = WheelBuilder::new("alpha", "1.0")
        .file("alpha/__init__.py", "from .core import greet\n")
        .file(
            "alpha/core.py",
            "def greet():\n    print('hello from alpha')\n    return 0\n",
        )
        .raw("alpha/run.sh", b"#!/bin/sh\necho run\n", 0o100755)
        .raw("alpha/empty.txt", b"", 0o100644)
        .raw(
            "alpha-1.0.data/scripts/alpha-tool",
            b"#!python\nimport sys\nprint('tool', sys.prefix)\n",
            0o100644,
        )
        .file("alpha-1.0.data/data/share/alpha/readme.txt", "data file\n")
        .console_script("alpha-hello", "alpha.core:greet")
        .build(&wheels);
    let beta = WheelBuilder::new("beta", "2.0")
        .file("beta/__init__.py", "import alpha\nNAME = 'beta'\n")
        .requires("alpha")
        .build(&wheels);
    let nsa = WheelBuilder::new("nsa", "1.0")
        .file("ns/a/__init__.py", "A = 1\n")
        .build(&wheels);
    let nsb = WheelBuilder::new("nsb", "1.0")
        .file("ns/b/__init__.py", "B = 2\n")
        .build(&wheels);
    let compiled_linux = WheelBuilder::new("compiled", "3.1")
        .tag(&native_tag())
        .file("compiled/__init__.py", "from .variant import PLATFORM\n")
        .file("compiled/variant.py", "PLATFORM = 'linux'\n")
        .raw(
            "compiled/_speedups.cpython-311-x86_64-linux-gnu.so",
            b"\x7fELF\x02\x01\x01fake",
            0o100755,
        )
        .build(&wheels);
    let compiled_mac = WheelBuilder::new("compiled", "3.1")
        .tag("cp311-cp311-macosx_11_0_arm64")
        .file("compiled/__init__.py", "from .variant import PLATFORM\n")
        .file("compiled/variant.py", "PLATFORM = 'macos'\n")
        .build(&wheels);

    let server = FileServer::start(&wheels);
    let mut compiled = LockedPackage::served(&compiled_mac, &server.url);
    compiled
        .wheels
        .extend(LockedPackage::served(&compiled_linux, &server.url).wheels);
    let windows_only = LockedPackage {
        name: "winonly".into(),
        version: "1.0".into(),
        marker: Some("sys_platform == 'win32'".into()),
        wheels: vec![(
            format!("{}/winonly-1.0-py3-none-any.whl", server.url),
            "00".repeat(32),
            1,
        )],
    };
    world.write_tiers(TIERS);
    write_pylock(
        &world.project().join("pylock.t1.toml"),
        &[
            LockedPackage::served(&alpha, &server.url),
            compiled,
            LockedPackage::served(&nsa, &server.url),
            LockedPackage::served(&nsb, &server.url),
            windows_only,
        ],
    );
    write_pylock(
        &world.project().join("pylock.t2.toml"),
        &[
            LockedPackage::served(&alpha, &server.url),
            LockedPackage::served(&beta, &server.url),
        ],
    );
    server
}

fn site_packages(venv: &Path) -> PathBuf {
    venv.join("lib/python3.11/site-packages")
}

#[test]
fn materialized_tiers_work_and_share_files() {
    let world = World::new();
    let _server = setup(&world);
    let out = world.ok(&["materialize", "--frozen", "t1", "t2"]);
    assert!(out.contains("t1: 4 packages"), "{out}");

    let t1 = world.venv("t1");
    let t2 = world.venv("t2");
    // Imports, including a namespace package split across two wheels, and
    // the wheel chosen by platform tags.
    let printed = python_ok(
        &t1,
        "import alpha, ns.a, ns.b, compiled; print(compiled.PLATFORM, ns.a.A + ns.b.B)",
    );
    assert_eq!(printed.trim(), "linux 3");
    python_ok(&t2, "import beta; assert beta.NAME == 'beta'");

    // Launchers and rewritten .data scripts run with the venv's interpreter.
    let hello = std::process::Command::new(t1.join("bin/alpha-hello"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&hello.stdout).trim(),
        "hello from alpha"
    );
    let tool = std::process::Command::new(t1.join("bin/alpha-tool"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&tool.stdout).trim(),
        format!("tool {}", t1.display())
    );

    // importlib.metadata sees every distribution; installer and REQUESTED are right.
    let dists = python_ok(
        &t1,
        "import importlib.metadata as m; print(sorted(d.metadata['Name'] for d in m.distributions()))",
    );
    assert_eq!(dists.trim(), "['alpha', 'compiled', 'nsa', 'nsb']");
    let sp = site_packages(&t1);
    assert_eq!(
        fs_err::read_to_string(sp.join("alpha-1.0.dist-info/INSTALLER")).unwrap(),
        "tstore\n"
    );
    assert!(sp.join("alpha-1.0.dist-info/REQUESTED").exists());
    assert!(
        site_packages(&t2)
            .join("beta-2.0.dist-info/REQUESTED")
            .exists()
    );

    // uv agrees the venv is correctly installed.
    assert_uv_pip_check(&t2);
    let listed = std::process::Command::new("uv")
        .args(["pip", "list", "--python"])
        .arg(t1.join("bin/python"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains("compiled"));

    // Modes: executables stay executable, empty files exist, data lands at the root.
    assert_eq!(mode_of(&sp.join("alpha/run.sh")) & 0o111, 0o111);
    assert_eq!(
        fs_err::metadata(sp.join("alpha/empty.txt")).unwrap().len(),
        0
    );
    assert_eq!(
        fs_err::read_to_string(t1.join("share/alpha/readme.txt")).unwrap(),
        "data file\n"
    );

    // A file both tiers use is one inode (hardlinks on this filesystem), and
    // that inode is the read-only store object.
    let a1 = sp.join("alpha/core.py");
    let a2 = site_packages(&t2).join("alpha/core.py");
    assert_eq!(inode_of(&a1), inode_of(&a2));
    assert_eq!(mode_of(&a1), 0o444);
    let (objects, _) = world.object_files();
    assert!(objects > 0);

    // RECORD lists every installed file of the distribution.
    let record = fs_err::read_to_string(sp.join("alpha-1.0.dist-info/RECORD")).unwrap();
    for line in [
        "alpha/core.py,sha256=",
        "../../../bin/alpha-hello,sha256=",
        "../../../bin/alpha-tool,sha256=",
        "alpha-1.0.dist-info/RECORD,,",
    ] {
        assert!(record.contains(line), "RECORD lacks {line}:\n{record}");
    }
}

#[test]
fn repeating_adds_nothing_and_is_a_no_op() {
    let world = World::new();
    let server = setup(&world);
    world.ok(&["materialize", "--frozen", "t1", "t2"]);
    let counts = world.store_counts();
    let objects = world.object_files();
    let requests = server.request_count();

    let out = world.ok(&["materialize", "--frozen", "t1", "t2"]);
    assert!(
        out.contains("t1: up to date") && out.contains("t2: up to date"),
        "{out}"
    );

    // Deleting a venv and fetching again downloads nothing and stores nothing new.
    fs_err::remove_dir_all(world.venv("t1")).unwrap();
    world.ok(&["fetch", "--frozen"]);
    let out = world.ok(&["materialize", "--frozen", "t1"]);
    assert!(
        out.contains("0 downloaded, 4 already in the store"),
        "{out}"
    );
    assert_eq!(server.request_count(), requests);
    assert_eq!(world.store_counts(), counts);
    assert_eq!(world.object_files(), objects);
    python_ok(&world.venv("t1"), "import alpha");
}

#[test]
fn a_changed_venv_is_rebuilt() {
    let world = World::new();
    let _server = setup(&world);
    world.ok(&["materialize", "--frozen", "t2"]);
    // Someone removes a package from site-packages: not up to date any more.
    fs_err::remove_dir_all(site_packages(&world.venv("t2")).join("beta")).unwrap();
    let out = world.ok(&["materialize", "--frozen", "t2"]);
    assert!(!out.contains("up to date"), "{out}");
    python_ok(&world.venv("t2"), "import beta");
}

#[test]
fn failed_materialize_leaves_the_previous_venv_working() {
    let world = World::new();
    let server = setup(&world);
    world.ok(&["materialize", "--frozen", "t2"]);
    let before = inode_of(&world.venv("t2").join("pyvenv.cfg"));

    // The lock now names a wheel whose hash does not match what is served.
    let gamma = WheelBuilder::new("gamma", "1.0")
        .file("gamma/__init__.py", "")
        .build(&world.wheels());
    let mut bad = LockedPackage::served(&gamma, &server.url);
    bad.wheels[0].1 = "ab".repeat(32);
    let alpha = world.wheels().join("alpha-1.0-py3-none-any.whl");
    write_pylock(
        &world.project().join("pylock.t2.toml"),
        &[LockedPackage::served(&alpha, &server.url), bad],
    );
    let err = world.fails(&["materialize", "--frozen", "t2"]);
    assert!(
        err.contains("sha256") && err.contains("gamma-1.0-py3-none-any.whl"),
        "{err}"
    );
    assert_eq!(inode_of(&world.venv("t2").join("pyvenv.cfg")), before);
    python_ok(&world.venv("t2"), "import beta");
    // No staging directories are left behind.
    let leftovers: Vec<_> = fs_err::read_dir(world.home().join("venvs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("staging"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn copy_mode_and_transient_errors() {
    let world = World::new();
    let server = setup(&world);
    // Two 503s in a row are retried.
    server
        .fail_next
        .store(2, std::sync::atomic::Ordering::SeqCst);
    world.ok(&["materialize", "--frozen", "--link-mode", "copy", "t2"]);
    let file = site_packages(&world.venv("t2")).join("alpha/core.py");
    // A copy is a private, writable file.
    assert_eq!(mode_of(&file), 0o644);
    let out = world.ok(&["materialize", "--frozen", "--link-mode", "hardlink", "t1"]);
    assert!(out.contains("hardlinked"), "{out}");
    assert_ne!(
        inode_of(&file),
        inode_of(&site_packages(&world.venv("t1")).join("alpha/core.py"))
    );
}

#[test]
fn store_on_another_filesystem_falls_back_to_copies_with_a_notice() {
    // /dev/shm is a tmpfs: a different filesystem from the venvs' directory.
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("skipped: no /dev/shm to put the store on another filesystem");
        return;
    }
    let world = World::new();
    let _server = setup(&world);
    let store = tempfile::tempdir_in(shm).unwrap();
    let out = world
        .tstore(&["materialize", "--frozen", "t2"])
        .env("TSTORE_HOME", store.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot share files") && stderr.contains("copied"),
        "{stderr}"
    );
    python_ok(&world.venv("t2"), "import beta");
}

#[test]
fn refuses_to_replace_a_venv_it_did_not_make() {
    let world = World::new();
    let _server = setup(&world);
    let foreign = world.venv("t2");
    fs_err::create_dir_all(&foreign).unwrap();
    fs_err::write(foreign.join("pyvenv.cfg"), "home = /usr/bin\n").unwrap();
    fs_err::write(foreign.join("precious.txt"), "keep me").unwrap();
    let err = world.fails(&["materialize", "--frozen", "t2"]);
    assert!(
        err.contains("did not make") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        fs_err::read_to_string(foreign.join("precious.txt")).unwrap(),
        "keep me"
    );
    world.ok(&["materialize", "--frozen", "--force", "t2"]);
    python_ok(&foreign, "import beta");
}

#[test]
fn conflicting_files_warn_and_the_result_is_deterministic() {
    let world = World::new();
    let wheels = world.wheels();
    let one = WheelBuilder::new("one", "1.0")
        .file("shared/x.py", "WHO = 'one'\n")
        .file("shared/__init__.py", "")
        .build(&wheels);
    let two = WheelBuilder::new("two", "1.0")
        .file("shared/x.py", "WHO = 'two'\n")
        .file("shared/__init__.py", "")
        .build(&wheels);
    let server = FileServer::start(&wheels);
    world.write_tiers("[tiers.c]\nrequirements = [\"one\", \"two\"]\n");
    write_pylock(
        &world.project().join("pylock.c.toml"),
        &[
            LockedPackage::served(&two, &server.url),
            LockedPackage::served(&one, &server.url),
        ],
    );
    let out = world.ok(&["materialize", "--frozen", "c"]);
    assert!(
        out.contains("one and two both ship") && out.contains("shared/x.py"),
        "{out}"
    );
    // The same __init__.py in both is not a conflict.
    assert!(!out.contains("__init__.py"), "{out}");
    assert_eq!(
        python_ok(&world.venv("c"), "from shared.x import WHO; print(WHO)").trim(),
        "two"
    );
}

#[test]
fn list_path_and_unknown_tier() {
    let world = World::new();
    let _server = setup(&world);
    world.ok(&["materialize", "--frozen", "t2"]);
    let listing = world.ok(&["list", "--json"]);
    let json: serde_json::Value =
        serde_json::from_str(listing.trim_start_matches(|c| c != '{')).unwrap();
    let t2 = json["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "t2")
        .unwrap();
    assert_eq!(t2["materialized"], true);
    let t1 = json["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "t1")
        .unwrap();
    assert_eq!(t1["materialized"], false);

    let path = world.tstore(&["path", "t2"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&path.stdout).trim(),
        world.venv("t2").display().to_string()
    );

    let err = world.fails(&["materialize", "--frozen", "t3"]);
    assert!(
        err.contains("unknown tier `t3`") && err.contains("t1, t2"),
        "{err}"
    );
    assert!(err.contains("did you mean"), "{err}");
}

#[test]
fn concurrent_processes_share_one_store() {
    let world = World::new();
    let _server = setup(&world);
    let children: Vec<_> = ["t1", "t2", "t1", "t2"]
        .iter()
        .map(|tier| {
            world
                .tstore(&["materialize", "--frozen", tier])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Each wheel is recorded once, whoever ingested it.
    assert_eq!(world.store_counts().0, 5);
    python_ok(&world.venv("t1"), "import alpha, compiled, ns.a");
    python_ok(&world.venv("t2"), "import beta");
    let verify = world.run(&["verify"]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn an_unchanged_tier_is_recognized_without_uv() {
    let world = World::new();
    let _server = setup(&world);
    world.ok(&["materialize", "--frozen", "t2"]);
    // No uv anywhere: the no-op must not need it.
    let out = world
        .tstore(&["materialize", "--frozen", "t2"])
        .env("TSTORE_UV", world.path().join("no-uv-here"))
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("t2: up to date"), "{stderr}");
    // A change the cheap check sees (a package directory gone) still rebuilds.
    fs_err::remove_dir_all(world.venv("t2").join("lib/python3.11/site-packages/beta")).unwrap();
    let out = world.ok(&["materialize", "--frozen", "t2"]);
    assert!(!out.contains("up to date"), "{out}");
    python_ok(&world.venv("t2"), "import beta");
}

#[test]
fn rebuilds_reuse_the_skeleton_and_interpreter_until_python_may_have_changed() {
    let world = World::new();
    let _server = setup(&world);
    let log = world.path().join("uv.log");
    let uv = logging_uv(&world, &log);
    // A directory on PATH where a new interpreter could appear.
    let path_dir = world.path().join("path-dir");
    fs_err::create_dir_all(&path_dir).unwrap();
    let path = format!(
        "{}:{}",
        path_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let build = || {
        let out = world
            .tstore(&["materialize", "--frozen", "t2"])
            .env("TSTORE_UV", &uv)
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        world.ok(&["remove", "t2"]);
    };

    build();
    assert_eq!(uv_calls(&log, "python find"), 1);
    assert_eq!(uv_calls(&log, "venv"), 1);
    build();
    assert_eq!(uv_calls(&log, "python find"), 1, "the choice is reused");
    assert_eq!(uv_calls(&log, "venv"), 1, "the skeleton is reused");

    // Something new on PATH: uv is asked again.
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs_err::write(path_dir.join("python3.11"), "").unwrap();
    build();
    assert_eq!(uv_calls(&log, "python find"), 2);
    assert_eq!(uv_calls(&log, "venv"), 1);
}

#[test]
fn activation_scripts_name_the_venv_even_where_its_path_needs_quoting() {
    let world = World::new();
    let _server = setup(&world);
    let spaced = world.path().join("my venvs/t2");
    world.write_tiers(&format!(
        "{TIERS}\n[tiers.t3]\nrequirements = [\"alpha\"]\nvenv = \"{}\"\n",
        spaced.display()
    ));
    fs_err::copy(
        world.project().join("pylock.t1.toml"),
        world.project().join("pylock.t3.toml"),
    )
    .unwrap();
    world.ok(&["materialize", "--frozen", "t2", "t3"]);
    for (venv, prompt) in [(world.venv("t2"), "t2"), (spaced, "t3")] {
        let script = format!(
            ". '{}/bin/activate' && echo \"$VIRTUAL_ENV|$VIRTUAL_ENV_PROMPT\" && python -c 'import alpha, sys; print(sys.prefix)'",
            venv.display()
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &script])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines = stdout.lines();
        assert_eq!(
            lines.next().unwrap(),
            format!("{}|{prompt}", venv.display())
        );
        assert_eq!(lines.next().unwrap(), venv.display().to_string());
    }
}

#[test]
fn bytecode_is_compiled_once_into_the_store_and_linked_into_every_tier() {
    let world = World::new();
    WheelBuilder::new("gamma", "1.0")
        .file("gamma/__init__.py", "from .core import VALUE\n")
        .file("gamma/core.py", "VALUE = 42\n")
        .raw("gamma/empty.py", b"", 0o100644)
        .file("gamma/broken.py", "def broken(:\n")
        // A top-level module: its pyc lands in site-packages/__pycache__.
        .file("gamma_top.py", "TOP = 1\n")
        .build(&world.wheels());
    let server = FileServer::start(&world.wheels());
    world.write_tiers(
        "python = \"3.11\"\n[tiers.a]\nrequirements = [\"gamma\"]\n\
         [tiers.b]\nrequirements = [\"gamma\"]\n\
         [tiers.plain]\nrequirements = [\"gamma\"]\ncompile-bytecode = false\n",
    );
    for tier in ["a", "b", "plain"] {
        lock_served(
            &world.project().join(format!("pylock.{tier}.toml")),
            &world.wheels(),
            &["gamma"],
            &server.url,
        );
    }
    let first = world.ok(&["-v", "materialize", "--frozen", "a", "b", "plain"]);
    assert!(
        first.contains("bytecode: 4 file(s) compiled into the store, 1 do not compile"),
        "{first}"
    );
    // site-packages/__pycache__ (linked, then written to by Python) does
    // not make an unchanged tier look changed.
    python_ok(&world.venv("a"), "import gamma_top");
    let unchanged = world.ok(&["materialize", "--frozen", "a"]);
    assert!(unchanged.contains("a: up to date"), "{unchanged}");
    // Rebuilding compiles nothing, not even the source that failed.
    world.ok(&["remove", "a"]);
    let again = world.ok(&["-v", "materialize", "--frozen", "a"]);
    assert!(!again.contains("compiled into the store"), "{again}");

    let cache = |tier: &str| site_packages(&world.venv(tier)).join("gamma/__pycache__");
    let core = |tier: &str| cache(tier).join("core.cpython-311.pyc");
    // One compiled object, linked into both tiers.
    assert_eq!(inode_of(&core("a")), inode_of(&core("b")));
    assert!(cache("a").join("empty.cpython-311.pyc").is_file());
    // A source that does not compile gets no pyc and does not fail the build.
    assert!(!cache("a").join("broken.cpython-311.pyc").exists());
    assert!(!cache("plain").exists(), "compile-bytecode = false");

    // Python loads the linked pyc as valid and leaves it alone.
    let before = inode_of(&core("a"));
    let out = std::process::Command::new(world.venv("a").join("bin/python"))
        .args(["-v", "-c", "import gamma; print(gamma.VALUE)"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    assert!(
        stderr.contains(&format!("code object from '{}'", core("a").display())),
        "{stderr}"
    );
    assert_eq!(inode_of(&core("a")), before);

    // The pycs are store objects that gc keeps and verify checks.
    world.ok(&["gc"]);
    let verified = world.ok(&["verify"]);
    assert!(verified.contains("all intact"), "{verified}");
    assert!(core("a").is_file());
    python_ok(&world.venv("b"), "import gamma.core");

    // Once nothing uses the sources, their bytecode goes too.
    for tier in ["a", "b", "plain"] {
        world.ok(&["remove", tier]);
        fs_err::remove_file(world.project().join(format!("pylock.{tier}.toml"))).unwrap();
    }
    world.ok(&["gc"]);
    assert_eq!(world.store_counts(), (0, 0));
    assert_eq!(world.object_files().0, 0);
}

/// A new store's first install plans and links its venv from the rows of
/// its wheels in memory, while they are being recorded in the index. The index then
/// holds exactly those rows: planned again from the index (the lock's bytes
/// changed, not its packages), the venv is up to date. A later tier whose
/// new wheel shares sources with stored bytecode links that bytecode from
/// the start, also before the wheel is recorded.
#[test]
fn a_venv_planned_from_rows_not_yet_recorded_is_the_one_the_index_plans() {
    let world = World::new();
    WheelBuilder::new("first", "1.0")
        .file("first/__init__.py", "from .core import VALUE\n")
        .file("first/core.py", "VALUE = 1\n")
        .raw("first/empty.py", b"", 0o100644)
        .file("first/broken.py", "def broken(:\n")
        .build(&world.wheels());
    // The same sources as `first`, in another package.
    WheelBuilder::new("second", "1.0")
        .file("second/__init__.py", "from .core import VALUE\n")
        .file("second/core.py", "VALUE = 1\n")
        .raw("second/empty.py", b"", 0o100644)
        .file("second/broken.py", "def broken(:\n")
        .build(&world.wheels());
    let server = FileServer::start(&world.wheels());
    world.write_tiers(
        "python = \"3.11\"\n[tiers.a]\nrequirements = [\"first\"]\n\
         [tiers.b]\nrequirements = [\"second\"]\n",
    );
    let lock = |tier: &str| world.project().join(format!("pylock.{tier}.toml"));
    lock_served(&lock("a"), &world.wheels(), &["first"], &server.url);
    lock_served(&lock("b"), &world.wheels(), &["second"], &server.url);

    let first = world.ok(&["-v", "materialize", "--frozen", "a"]);
    assert!(
        first.contains("recording 1 staged wheels (while linking)"),
        "{first}"
    );
    assert!(
        first.contains("bytecode: 3 file(s) compiled into the store, 1 do not compile"),
        "{first}"
    );
    // `second` is staged too (the store's shards are mostly empty) and its
    // sources have bytecode already: nothing is left to compile.
    let second = world.ok(&["-v", "materialize", "--frozen", "b"]);
    assert!(
        second.contains("recording 1 staged wheels (while linking)"),
        "{second}"
    );
    assert!(!second.contains("compiled into the store"), "{second}");
    assert!(!second.contains("compiling the bytecode"), "{second}");
    python_ok(&world.venv("b"), "import second; assert second.VALUE == 1");
    let pyc = site_packages(&world.venv("b")).join("second/__pycache__/core.cpython-311.pyc");
    let shared = site_packages(&world.venv("a")).join("first/__pycache__/core.cpython-311.pyc");
    assert_eq!(inode_of(&pyc), inode_of(&shared));

    for tier in ["a", "b"] {
        // New bytes, same packages: the plan is made again, from the index.
        let mut bytes = fs_err::read(lock(tier)).unwrap();
        bytes.extend_from_slice(b"\n# touched\n");
        fs_err::write(lock(tier), bytes).unwrap();
        let again = world.ok(&["-v", "materialize", "--frozen", tier]);
        assert!(again.contains(&format!("{tier}: up to date")), "{again}");
        assert!(!again.contains("recording"), "{again}");
    }
    world.ok(&["verify"]);
}

/// A wheel the lock gives no size for downloads into a file (as PyTorch's
/// and CUDA's do, being too large for memory); its large files are
/// inflated as their bytes arrive, and the venv holds exactly them.
#[test]
fn large_files_of_a_wheel_still_downloading_are_inflated_as_they_arrive() {
    // A tmpfs, where the blocks of what is inflated can be reserved.
    let Some(fs) = Mount::tmpfs_or_skip("96m") else {
        return;
    };
    let root = fs.path.as_path();
    let world = World::new();
    let library: Vec<u8> = (0..6u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    // Incompressible, after the library: about 2.5 s to arrive.
    let noise = incompressible_bytes(0x9e37_79b9_7f4a_7c15, 160 << 10);
    let wheel = WheelBuilder::new("big", "1.0")
        .file("big/__init__.py", "")
        .raw("big/libbig.so", &library, 0o100755)
        .raw("big/noise.bin", &noise, 0o100644)
        .build(&world.wheels());
    let server = FileServer::start(&world.wheels());
    server
        .bytes_per_second
        .store(64 << 10, std::sync::atomic::Ordering::SeqCst);
    let project = project_at(root, "[tiers.t]\nrequirements = [\"big\"]\n");
    let lock = project.join("pylock.t.toml");
    write_pylock(&lock, &[LockedPackage::served(&wheel, &server.url)]);
    drop_wheel_sizes(&lock);

    let out = world.run_in(
        &project,
        &root.join("store"),
        &["-v", "materialize", "--frozen", "t"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("big-1.0-py3-none-any.whl: 1 large file(s) inflated while it downloaded"),
        "{stderr}"
    );
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&library));
    python_ok(
        &root.join("venvs/t"),
        &format!(
            "import big, hashlib, os\n\
             path = os.path.join(os.path.dirname(big.__file__), 'libbig.so')\n\
             assert hashlib.sha256(open(path, 'rb').read()).hexdigest() == '{digest}'\n\
             assert os.access(path, os.X_OK)"
        ),
    );
    let verify = world.run_in(&project, &root.join("store"), &["verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

//! A lock is checked before it is trusted: the selected distributions must
//! hold what their METADATA and the tier require; a wheel that would damage
//! a venv is refused before anything of it is stored; two wheels installing
//! one path are named with it.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Serves `wheels` (all in the world's wheel folder) as tier `t`'s lock.
fn lock_tier(world: &World, requirements: &[&str], wheels: &[PathBuf]) -> FileServer {
    let server = FileServer::start(&world.wheels());
    let quoted: Vec<String> = requirements.iter().map(|r| format!("{r:?}")).collect();
    world.write_tiers(&format!(
        "[tiers.t]\nrequirements = [{}]\ncompile-bytecode = false\n",
        quoted.join(", ")
    ));
    let packages: Vec<LockedPackage> = wheels
        .iter()
        .map(|w| LockedPackage::served(w, &server.url))
        .collect();
    write_pylock(&world.project().join("pylock.t.toml"), &packages);
    server
}

/// A wheel with one module named after the package.
fn module(name: &str, version: &str) -> WheelBuilder {
    WheelBuilder::new(name, version).file(&format!("{}/__init__.py", name.replace('-', "_")), "")
}

#[test]
fn a_hand_trimmed_lock_is_refused() {
    let world = World::new();
    let requests = module("requests", "2.32.3")
        .requires("urllib3<3,>=1.21.1")
        .requires("idna<4,>=2.5")
        .build(&world.wheels());
    let urllib3 = module("urllib3", "2.2.3").build(&world.wheels());
    let idna = module("idna", "3.10").build(&world.wheels());

    // urllib3 removed by hand.
    let _server = lock_tier(&world, &["requests"], &[requests.clone(), idna.clone()]);
    let err = world.fails(&["materialize", "--frozen", "t"]);
    assert!(
        err.contains("requests 2.32.3")
            && err.contains("urllib3<3,>=1.21.1")
            && err.contains("pylock.t.toml")
            && err.contains("tstore lock"),
        "{err}"
    );
    assert!(!err.contains("idna"), "idna is in the lock: {err}");
    assert!(!world.venv("t").exists(), "a venv was created");
    // `fetch` checks the same.
    let err = world.fails(&["fetch", "--frozen", "t"]);
    assert!(err.contains("urllib3<3,>=1.21.1"), "{err}");

    // Whole. A tier requirement the lock lacks (a stale lock) is the input
    // hash's business: `--frozen` uses the lock as it is.
    let _server = lock_tier(
        &world,
        &["requests", "not-locked-yet"],
        &[requests, urllib3, idna],
    );
    world.ok(&["materialize", "--frozen", "t"]);
    python_ok(&world.venv("t"), "import requests, urllib3, idna");
}

/// A refused lock refuses the venv, not the wheels it brought: a first
/// install records them (while materializing, recording happens beside
/// linking, which a refused lock never reaches), so the mended lock's run
/// downloads only what was missing.
#[test]
fn a_refused_lock_keeps_what_it_downloaded() {
    let world = World::new();
    let requests = module("requests", "2.32.3")
        .requires("idna<4,>=2.5")
        .requires("urllib3<3,>=1.21.1")
        .build(&world.wheels());
    let urllib3 = module("urllib3", "2.2.3").build(&world.wheels());
    let idna = module("idna", "3.10").build(&world.wheels());
    let _server = lock_tier(&world, &["requests"], &[requests.clone(), idna.clone()]);
    world.fails(&["materialize", "--frozen", "t"]);
    assert_eq!(world.store_counts().0, 2, "requests and idna recorded");
    world.ok(&["verify"]);

    let _server = lock_tier(&world, &["requests"], &[requests, urllib3, idna]);
    let out = world.ok(&["materialize", "--frozen", "t"]);
    assert!(
        out.contains("1 downloaded, 2 already in the store"),
        "{out}"
    );
    python_ok(&world.venv("t"), "import requests, urllib3, idna");
}

#[test]
fn a_version_the_requirement_excludes_is_refused() {
    let world = World::new();
    let app = module("app", "1.0")
        .requires("lib (>=1.0,<2)")
        .build(&world.wheels());
    let lib = module("lib", "2.1").build(&world.wheels());
    let _server = lock_tier(&world, &["app"], &[app, lib]);
    let err = world.fails(&["materialize", "--frozen", "t"]);
    assert!(
        err.contains("app 1.0")
            && err.contains("lib (>=1.0,<2)")
            && err.contains("lib 2.1")
            && err.contains("pylock.t.toml"),
        "{err}"
    );
    assert!(!world.venv("t").exists());
}

#[test]
fn false_markers_and_unrequested_extras_do_not_count() {
    let world = World::new();
    let app = module("app", "1.0")
        .requires("legacy-only; python_version < \"3\"")
        .requires("windows-only; sys_platform == \"win32\"")
        .requires("socks-lib>=1; extra == \"socks\"")
        .requires("lib[fast]; python_version >= \"3.8\"")
        .build(&world.wheels());
    // `fast` is requested by app; `docs` by nobody.
    let lib = module("lib", "1.0")
        .requires("speedups; extra == \"fast\"")
        .requires("sphinx; extra == \"docs\"")
        .build(&world.wheels());
    let speedups = module("speedups", "0.3").build(&world.wheels());
    let _server = lock_tier(&world, &["app"], &[app, lib, speedups]);
    world.ok(&["materialize", "--frozen", "t"]);
    python_ok(&world.venv("t"), "import app, lib, speedups");
}

#[test]
fn requested_extras_count() {
    let world = World::new();
    let app = module("app", "1.0")
        .requires("socks-lib>=1; extra == \"socks\"")
        .build(&world.wheels());
    // The tier asks for the extra.
    let _server = lock_tier(&world, &["app[socks]"], std::slice::from_ref(&app));
    let err = world.fails(&["materialize", "--frozen", "t"]);
    assert!(
        err.contains("app 1.0")
            && err.contains("socks-lib>=1")
            && err.contains("[socks]")
            && err.contains("pylock.t.toml"),
        "{err}"
    );

    // Another package asks for it.
    let top = module("top", "1.0")
        .requires("app[socks]>=1")
        .build(&world.wheels());
    let _server = lock_tier(&world, &["top"], &[top.clone(), app.clone()]);
    let err = world.fails(&["materialize", "--frozen", "t"]);
    assert!(err.contains("socks-lib>=1"), "{err}");

    let socks = module("socks-lib", "1.7").build(&world.wheels());
    let _server = lock_tier(&world, &["top"], &[top, app, socks]);
    world.ok(&["materialize", "--frozen", "t"]);
}

/// About 150 packages with a dependency web like a real application's:
/// several requirements each, version ranges, markers that hold and do not,
/// extras requested and not.
#[test]
fn a_tekton_sized_lock_passes() {
    const COUNT: usize = 150;
    let world = World::new();
    let name = |i: usize| format!("dep{i:03}");
    let mut wheels = Vec::new();
    for i in 0..COUNT {
        let mut builder = module(&name(i), "1.0")
            .requires("not-installed; python_version < \"3\"")
            .requires("docs-only; extra == \"docs\"");
        // Up to five requirements on later packages (a DAG, like a lock).
        for step in [1, 3, 7, 19, 41] {
            let j = i + step + i % 5;
            if j >= COUNT {
                continue;
            }
            let spec = match (i + step) % 4 {
                0 => format!("{}>=1.0", name(j)),
                1 => format!("{}<2,>=0.9", name(j)),
                2 => format!("{}~=1.0; python_version >= \"3.8\"", name(j)),
                _ => format!("{}[fast]==1.*", name(j)),
            };
            builder = builder.requires(&spec);
        }
        if i + 2 < COUNT {
            builder = builder.requires(&format!("{}; extra == \"fast\"", name(i + 2)));
        }
        wheels.push(builder.build(&world.wheels()));
    }
    let roots: Vec<String> = (0..10).map(name).collect();
    let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
    let _server = lock_tier(&world, &roots, &wheels);
    let out = world.ok(&["materialize", "--frozen", "t"]);
    assert!(out.contains("150 packages"), "{out}");
    python_ok(&world.venv("t"), "import dep000, dep149");
}

/// Builds each crafted wheel (as `pkg` at its own version), serves it as
/// tier `t`'s only package, and checks it is refused, naming the wheel and
/// `offending`, with nothing recorded or written into the store.
fn assert_refused_before_storing(world: &World, wheel: &Path, offending: &str) {
    let counts = world.store_counts();
    let files = world.object_files();
    let _server = lock_tier(world, &["pkg"], &[wheel.to_path_buf()]);
    let err = world.fails(&["materialize", "--frozen", "t"]);
    let filename = wheel.file_name().unwrap().to_string_lossy();
    assert!(
        err.contains(filename.as_ref()) && err.contains(offending),
        "{filename}: the message should name the wheel and `{offending}`:\n{err}"
    );
    assert!(!err.contains("os error"), "{err}");
    assert_eq!(
        world.store_counts(),
        counts,
        "{filename}: rows were recorded"
    );
    assert_eq!(
        world.object_files(),
        files,
        "{filename}: objects were written"
    );
}

#[test]
fn wheels_that_would_damage_the_venv_leave_nothing_stored() {
    let world = World::new();
    // Something in the store first, so "unchanged" is not "empty".
    let good = module("pkg", "1.0")
        .file("pkg/data.txt", "kept\n")
        .build(&world.wheels());
    let _server = lock_tier(&world, &["pkg"], &[good]);
    world.ok(&["materialize", "--frozen", "t"]);
    assert_ne!(world.store_counts(), (0, 0));

    let cases: Vec<(WheelBuilder, &str)> = vec![
        (module("pkg", "1.1").console_script(".", "pkg:main"), "`.`"),
        (
            module("pkg", "1.2").console_script("../evil", "pkg:main"),
            "../evil",
        ),
        (
            module("pkg", "1.3").console_script("/tmp/tstore-evil", "pkg:main"),
            "/tmp/tstore-evil",
        ),
        (
            module("pkg", "1.4").console_script("sub/tool", "pkg:main"),
            "sub/tool",
        ),
        (
            module("pkg", "1.5").console_script("python3", "pkg:main"),
            "python3",
        ),
        (
            module("pkg", "1.6").file("pkg-1.6.data/unknown/x.txt", "x"),
            "pkg-1.6.data/unknown/x.txt",
        ),
        (
            module("pkg", "1.7").file("pkg-1.7.data/data/pyvenv.cfg", "home = /evil\n"),
            "pkg-1.7.data/data/pyvenv.cfg",
        ),
        (
            module("pkg", "1.8").file("pkg-1.8.data/scripts/python", "#!/bin/sh\n"),
            "pkg-1.8.data/scripts/python",
        ),
        (
            module("pkg", "1.9").file("pkg-1.9.data/data/bin/activate", "evil\n"),
            "pkg-1.9.data/data/bin/activate",
        ),
        (
            module("pkg", "1.10").file("pkg-1.10.data/scripts/activate.fish", "evil\n"),
            "pkg-1.10.data/scripts/activate.fish",
        ),
        (
            module("pkg", "1.11").file("pkg-1.11.data/data/bin/python3.11", "evil\n"),
            "pkg-1.11.data/data/bin/python3.11",
        ),
        (
            module("pkg", "1.12").console_script("activate", "pkg:main"),
            "activate",
        ),
    ];
    for (builder, offending) in cases {
        let wheel = builder.build(&world.wheels());
        assert_refused_before_storing(&world, &wheel, offending);
    }
    // The venv in use is the good one.
    python_ok(&world.venv("t"), "import pkg");
}

#[test]
fn two_wheels_installing_one_path_are_named_with_the_path() {
    let world = World::new();
    let one = module("one", "1.0")
        .file("shared/x.py", "WHO = 'one'\n")
        .build(&world.wheels());
    let two = module("two", "1.0")
        .file("shared/x.py", "WHO = 'two'\n")
        .build(&world.wheels());
    let _server = lock_tier(&world, &["one", "two"], &[one, two]);
    // Like uv and pip, both are installed and the later one's file is used.
    let out = world.ok(&["materialize", "--frozen", "t"]);
    assert!(
        out.contains("one-1.0-py3-none-any.whl")
            && out.contains("two-1.0-py3-none-any.whl")
            && out.contains("site-packages/shared/x.py"),
        "{out}"
    );
    assert_eq!(
        python_ok(&world.venv("t"), "from shared.x import WHO; print(WHO)").trim(),
        "two"
    );
}

#[test]
fn a_requirement_files_hash_must_match_the_locked_file() {
    let world = World::new();
    let alpha = module("alpha", "1.0").build(&world.wheels());
    let server = FileServer::start(&world.wheels());
    write_pylock(
        &world.project().join("pylock.t.toml"),
        &[LockedPackage::served(&alpha, &server.url)],
    );
    let tiers = |hash: &str| {
        fs_err::write(
            world.project().join("requirements.txt"),
            format!("# pinned by digest\r\nalpha==1.0 \\\r\n    --hash=sha256:{hash}"),
        )
        .unwrap();
        world.write_tiers(
            "[sets.pinned]\nfile = \"requirements.txt\"\n[tiers.t]\nsets = [\"pinned\"]\n",
        );
    };
    let wrong = "ab".repeat(32);
    tiers(&wrong);
    let err = world.fails(&["materialize", "--frozen", "t"]);
    assert!(
        err.contains("requirements.txt:2")
            && err.contains(&wrong)
            && err.contains(&sha256_hex(&alpha))
            && err.contains("pylock.t.toml"),
        "{err}"
    );
    assert!(!world.venv("t").exists());
    assert_eq!(world.store_counts().0, 0, "nothing fetched");

    tiers(&sha256_hex(&alpha));
    world.ok(&["materialize", "--frozen", "t"]);
    python_ok(&world.venv("t"), "import alpha");
}

//! A wheel that would damage a venv is refused before anything of it is
//! stored, and two wheels installing one path are named with it.

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

//! A lost, emptied or damaged index: every command that writes or deletes
//! refuses with the path and the way out, gc deletes nothing, and
//! `verify --repair` rebuilds the index from the store's own files.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

use common::*;

struct Setup {
    world: World,
    _server: FileServer,
}

/// Tiers `a` (alpha, beta) and `b` (alpha), hardlinked, with bytecode.
fn setup() -> Setup {
    let world = World::new();
    let wheels = world.wheels();
    WheelBuilder::new("alpha", "1.0")
        .file("alpha/__init__.py", "from .core import VALUE\n")
        .file("alpha/core.py", "VALUE = 'alpha'\n")
        .build(&wheels);
    WheelBuilder::new("beta", "1.0")
        .file("beta/__init__.py", "B = 2\n")
        .console_script("beta-run", "beta:main")
        .build(&wheels);
    let server = FileServer::start(&wheels);
    world.write_tiers(
        "[tiers.a]\nrequirements = [\"alpha\", \"beta\"]\n[tiers.b]\nrequirements = [\"alpha\"]\n",
    );
    let project = world.project();
    lock_served(
        &project.join("pylock.a.toml"),
        &wheels,
        &["alpha", "beta"],
        &server.url,
    );
    lock_served(
        &project.join("pylock.b.toml"),
        &wheels,
        &["alpha"],
        &server.url,
    );
    world.ok(&["materialize", "--frozen", "a", "b"]);
    Setup {
        world,
        _server: server,
    }
}

fn index(world: &World) -> PathBuf {
    world.store().join("v1/store.db")
}

/// What a damaged index must not lead to: lost objects or broken tiers.
fn assert_tiers_import(world: &World) {
    python_ok(
        &world.venv("a"),
        "import alpha, beta; assert alpha.VALUE == 'alpha'",
    );
    python_ok(&world.venv("b"), "import alpha");
}

/// Every writing or deleting command refuses, naming the index and the fix;
/// no object file goes.
fn assert_refused(world: &World) {
    let objects = world.object_files();
    for args in [
        vec!["gc"],
        vec!["materialize", "--frozen", "a"],
        vec!["remove", "b"],
        vec!["verify"],
    ] {
        let err = world.fails(&args);
        assert!(err.contains("cannot be trusted"), "{args:?}: {err}");
        assert!(err.contains("store.db"), "{args:?}: {err}");
        assert!(err.contains("tstore verify --repair"), "{args:?}: {err}");
    }
    assert_eq!(world.object_files(), objects);
    assert!(world.venv("b").exists(), "remove went ahead");
}

/// Rebuild, then the store is whole again: verify clean, gc frees nothing a
/// tier uses, the tiers import and are up to date.
fn assert_rebuilt(world: &World) {
    let objects = world.object_files();
    let out = world.run(&["verify", "--repair"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("index rebuilt"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The pycs every generation links are known again, not compiled again.
    assert!(!text.contains(" 0 bytecode entries"), "{text}");
    let out = world.run(&["verify"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_str(&world.ok(&["gc", "--json"])).unwrap();
    assert_eq!(report["objects"], 0, "{report}");
    assert_eq!(report["distributions"], 0, "{report}");
    assert_eq!(world.object_files(), objects);
    assert_tiers_import(world);
    let again = world.ok(&["materialize", "--frozen", "a", "b"]);
    assert_eq!(again.matches("up to date").count(), 2, "{again}");
    let gens: serde_json::Value =
        serde_json::from_str(&world.ok(&["generations", "a", "--json"])).unwrap();
    assert_eq!(
        gens["generations"].as_array().map(Vec::len),
        Some(1),
        "{gens}"
    );
}

fn remove_wal(world: &World) {
    for side in ["store.db-wal", "store.db-shm"] {
        let _ = std::fs::remove_file(world.store().join("v1").join(side));
    }
}

#[test]
fn an_emptied_index_is_refused_and_rebuilt() {
    let Setup { world, .. } = setup();
    std::fs::File::create(index(&world)).unwrap();
    remove_wal(&world);
    assert_refused(&world);
    assert_rebuilt(&world);
    // The emptied file was kept, not deleted.
    let kept = fs_err::read_dir(world.store().join("v1"))
        .unwrap()
        .flatten()
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("store.db.damaged-")
        });
    assert!(kept);
}

#[test]
fn a_deleted_index_is_refused_and_rebuilt() {
    let Setup { world, .. } = setup();
    fs_err::remove_file(index(&world)).unwrap();
    remove_wal(&world);
    assert_refused(&world);
    assert!(!index(&world).exists(), "a refused open made a new index");
    assert_rebuilt(&world);
}

#[test]
fn garbage_anywhere_in_the_index_never_lets_gc_delete() {
    let Setup { world, .. } = setup();
    let pristine = fs_err::read(index(&world)).unwrap();
    let size = pristine.len() as u64;
    assert!(size > 3 * 4096, "index of {size} bytes");
    for offset in [0, 4096, size / 2 / 4096 * 4096, size - 4096] {
        fs_err::write(index(&world), &pristine).unwrap();
        remove_wal(&world);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(index(&world))
            .unwrap();
        file.seek(SeekFrom::Start(offset)).unwrap();
        file.write_all(&[0xA5; 4096]).unwrap();
        drop(file);
        let objects = world.object_files();
        // gc refuses whichever page was hit.
        let err = world.fails(&["gc"]);
        assert!(
            err.contains("tstore verify --repair"),
            "garbage at {offset}: {err}"
        );
        assert_eq!(world.object_files(), objects, "garbage at {offset}");
        // verify says so instead of "all intact".
        let out = world.run(&["verify"]);
        assert_eq!(out.status.code(), Some(1), "garbage at {offset}");
        assert_rebuilt(&world);
    }
}

#[test]
fn an_index_older_than_the_disk_is_caught() {
    let Setup { world, .. } = setup();
    // An index restored from before tier c existed.
    let old = fs_err::read(index(&world)).unwrap();
    let project = world.project();
    world.write_tiers(
        "[tiers.a]\nrequirements = [\"alpha\", \"beta\"]\n[tiers.b]\nrequirements = [\"alpha\"]\n\
         [tiers.c]\nrequirements = [\"beta\"]\n",
    );
    fs_err::copy(project.join("pylock.a.toml"), project.join("pylock.c.toml")).unwrap();
    world.ok(&["materialize", "--frozen", "c"]);
    fs_err::write(index(&world), old).unwrap();
    remove_wal(&world);
    let err = world.fails(&["gc"]);
    assert!(err.contains("does not know"), "{err}");
    assert!(err.contains("1 generation(s)"), "{err}");
    world.ok(&["verify", "--repair"]);
    // c is a root again: gc keeps its files and it still imports.
    world.ok(&["gc"]);
    python_ok(&world.venv("c"), "import alpha, beta");
    let list = world.ok(&["list"]);
    assert!(list.contains('c'), "{list}");
}

#[test]
fn a_store_from_before_records_gets_them_on_first_open() {
    let Setup { world, .. } = setup();
    let records = world.store().join("v1/records");
    fs_err::remove_dir_all(&records).unwrap();
    // A healthy index: the next command writes the records from it …
    world.ok(&["list"]);
    assert_eq!(fs_err::read_dir(records.join("dists")).unwrap().count(), 2);
    assert_eq!(
        fs_err::read_dir(records.join("generations"))
            .unwrap()
            .count(),
        2
    );
    // … so a later loss of the index is recoverable.
    fs_err::remove_file(index(&world)).unwrap();
    remove_wal(&world);
    assert_rebuilt(&world);
}

#[test]
fn a_blank_index_in_a_store_from_before_records_is_refused() {
    let Setup { world, .. } = setup();
    // A store made before records, whose index an older tstore replaced by
    // a new, empty one after the file was lost.
    fs_err::remove_dir_all(world.store().join("v1/records")).unwrap();
    fs_err::remove_file(index(&world)).unwrap();
    remove_wal(&world);
    rusqlite::Connection::open(index(&world))
        .unwrap()
        .execute_batch("CREATE TABLE placeholder (x)")
        .unwrap();
    let objects = world.object_files();
    let err = world.fails(&["gc"]);
    assert!(err.contains("it is empty"), "{err}");
    assert_eq!(world.object_files(), objects);
    // Objects come back; distributions and generations had no records.
    let out = world.ok(&["verify", "--repair"]);
    assert!(out.contains("index rebuilt"), "{out}");
}

#[test]
fn a_full_disk_while_rebuilding_names_the_store_and_keeps_the_old_index() {
    let Some(fs) = Mount::tmpfs_or_skip("24m") else {
        return;
    };
    let Setup { world, .. } = setup();
    // The store moves to the small filesystem, venvs keep their links there.
    let store = fs.path.join("store");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(world.store())
        .arg(&store)
        .status()
        .unwrap();
    assert!(copied.success());
    let run = |args: &[&str]| {
        world
            .tstore(args)
            .env("TSTORE_HOME", &store)
            .output()
            .unwrap()
    };
    let index = store.join("v1/store.db");
    std::fs::File::create(&index).unwrap();
    // Fill what is left, so the new index cannot be written.
    let filler = fs.path.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![7u8; 1 << 16];
    while std::io::Write::write_all(&mut file, &block).is_ok() {}
    drop(file);

    let out = run(&["verify", "--repair"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("hint: the disk is full"), "{stderr}");
    assert!(stderr.contains(&store.display().to_string()), "{stderr}");
    assert!(stderr.contains("the old one is untouched"), "{stderr}");
    // The emptied index is still where it was; nothing of the attempt is left.
    assert!(index.exists());
    let leftovers: Vec<_> = fs_err::read_dir(store.join("v1/tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // With room again, the same command rebuilds it.
    fs_err::remove_file(&filler).unwrap();
    let out = run(&["verify", "--repair"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("index rebuilt"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

//! Bad input gets a clear error naming the thing and the fix, and nothing of
//! it is ingested or lost.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Serves `wheel` as the only package of tier `t` and materializes it.
fn materialize_single(world: &World, wheel: &Path) -> String {
    let server = FileServer::start(wheel.parent().unwrap());
    world.write_tiers("[tiers.t]\nrequirements = [\"pkg\"]\n");
    write_pylock(
        &world.project().join("pylock.t.toml"),
        &[LockedPackage::served(wheel, &server.url)],
    );
    world.fails(&["materialize", "--frozen", "t"])
}

fn assert_nothing_ingested(world: &World) {
    assert_eq!(world.store_counts(), (0, 0), "the store recorded something");
    assert_eq!(world.object_files().0, 0, "objects were written");
    assert!(!world.venv("t").exists(), "a venv was created");
}

#[test]
fn entry_escaping_with_dotdot_is_refused() {
    let world = World::new();
    let wheel = WheelBuilder::new("pkg", "1.0")
        .file("pkg/__init__.py", "")
        .file("pkg/../../../evil.py", "boom")
        .build(&world.wheels());
    let err = materialize_single(&world, &wheel);
    assert!(
        err.contains("pkg/../../../evil.py") && err.contains("contains `..`"),
        "{err}"
    );
    assert_nothing_ingested(&world);
    assert!(!world.path().join("evil.py").exists());
}

#[test]
fn absolute_entry_is_refused() {
    let world = World::new();
    let wheel = WheelBuilder::new("pkg", "1.0")
        .file("pkg/__init__.py", "")
        .file("/tmp/tstore-absolute-evil.py", "boom")
        .build(&world.wheels());
    let err = materialize_single(&world, &wheel);
    assert!(err.contains("is absolute"), "{err}");
    assert_nothing_ingested(&world);
}

#[test]
fn symlink_entry_is_refused() {
    let world = World::new();
    let wheel = WheelBuilder::new("pkg", "1.0")
        .file("pkg/__init__.py", "")
        .raw("pkg/passwd", b"/etc/passwd", 0o120777)
        .build(&world.wheels());
    let err = materialize_single(&world, &wheel);
    assert!(
        err.contains("pkg/passwd") && err.contains("symbolic link"),
        "{err}"
    );
    assert_nothing_ingested(&world);
}

#[test]
fn metadata_disagreeing_with_the_file_name_is_refused() {
    let world = World::new();
    let mut builder = WheelBuilder::new("pkg", "1.0").file("pkg/__init__.py", "");
    builder.metadata_name = Some("other-pkg".into());
    let err = materialize_single(&world, &builder.build(&world.wheels()));
    assert!(err.contains("METADATA says Name `other-pkg`"), "{err}");
    assert_nothing_ingested(&world);
}

#[test]
fn a_record_size_not_matching_the_content_is_refused() {
    let world = World::new();
    let mut builder = WheelBuilder::new("pkg", "1.0").file("pkg/__init__.py", "x = 1\n");
    builder.wrong_record_size_for = Some("pkg/__init__.py".into());
    let err = materialize_single(&world, &builder.build(&world.wheels()));
    assert!(
        err.contains("`pkg/__init__.py` does not match its RECORD size (6 bytes, RECORD says 7)"),
        "{err}"
    );
    assert_nothing_ingested(&world);
}

/// The lock pins the wheel's own sha256, so its RECORD's hashes are taken
/// as given, as pip and uv take them (some PyTorch wheels were published
/// with hashes that do not match): the venv's RECORD has the line uv writes
/// when it installs the same wheel.
#[test]
fn a_pinned_wheel_whose_record_hash_is_wrong_installs_as_uv_installs_it() {
    let world = World::new();
    let mut builder = WheelBuilder::new("pkg", "1.0").file("pkg/__init__.py", "x = 1\n");
    builder.corrupt_record_for = Some("pkg/__init__.py".into());
    let wheel = builder.build(&world.wheels());
    let server = FileServer::start(wheel.parent().unwrap());
    world.write_tiers("[tiers.t]\nrequirements = [\"pkg\"]\n");
    write_pylock(
        &world.project().join("pylock.t.toml"),
        &[LockedPackage::served(&wheel, &server.url)],
    );
    world.ok(&["materialize", "--frozen", "t"]);
    assert_eq!(
        python_ok(&world.venv("t"), "import pkg; print(pkg.x)").trim(),
        "1"
    );

    let by_uv = world.path().join("uv-venv");
    let cache = world.path().join("uv-cache");
    let uv = |cmd: &mut Command| {
        let out = cmd.env("UV_CACHE_DIR", &cache).output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    uv(Command::new("uv")
        .args(["venv", "--quiet", "--python", "3.11"])
        .arg(&by_uv));
    uv(Command::new("uv")
        .args(["pip", "install", "--quiet", "--python"])
        .arg(by_uv.join("bin/python"))
        .arg(&wheel));

    let line_in = |record: &str| {
        record
            .lines()
            .find(|l| l.starts_with("pkg/__init__.py,"))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no line for pkg/__init__.py in {record}"))
    };
    let line_of = |venv: &Path| {
        line_in(&python_ok(
            venv,
            "import importlib.metadata as m; print(m.distribution('pkg').read_text('RECORD'))",
        ))
    };
    let ours = line_of(&world.venv("t"));
    assert_eq!(ours, line_of(&by_uv), "uv's line");
    assert_eq!(
        ours,
        line_in(&wheel_entry(&wheel, "pkg-1.0.dist-info/RECORD")),
        "the wheel's line"
    );
}

/// The text of `name` inside the zip archive `wheel`.
fn wheel_entry(wheel: &Path, name: &str) -> String {
    use std::io::Read;
    let mut archive = zip::ZipArchive::new(fs_err::File::open(wheel).unwrap()).unwrap();
    let mut text = String::new();
    archive
        .by_name(name)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text
}

#[test]
fn truncated_zip_is_refused() {
    let world = World::new();
    let wheel = WheelBuilder::new("pkg", "1.0")
        .file("pkg/__init__.py", "x = 1\n")
        .build(&world.wheels());
    // Cut the archive (the lock is written from the cut file, so the hash passes).
    let bytes = fs_err::read(&wheel).unwrap();
    fs_err::write(&wheel, &bytes[..bytes.len() / 2]).unwrap();
    let err = materialize_single(&world, &wheel);
    assert!(err.contains("corrupt or truncated zip"), "{err}");
    assert_nothing_ingested(&world);
}

#[test]
fn size_and_hash_mismatches_name_the_file_and_url() {
    let world = World::new();
    let wheel = WheelBuilder::new("pkg", "1.0")
        .file("pkg/__init__.py", "")
        .build(&world.wheels());
    let server = FileServer::start(&world.wheels());
    world.write_tiers("[tiers.t]\nrequirements = [\"pkg\"]\n");
    let mut locked = LockedPackage::served(&wheel, &server.url);
    locked.wheels[0].2 += 1;
    write_pylock(&world.project().join("pylock.t.toml"), &[locked]);
    let err = world.fails(&["materialize", "--frozen", "t"]);
    assert!(
        err.contains("size is") && err.contains(&server.url) && err.contains("tstore lock"),
        "{err}"
    );
    assert_nothing_ingested(&world);

    let mut locked = LockedPackage::served(&wheel, &server.url);
    locked.wheels[0].1 = "cd".repeat(32);
    write_pylock(&world.project().join("pylock.t.toml"), &[locked]);
    let err = world.fails(&["materialize", "--frozen", "t"]);
    assert!(
        err.contains("sha256 is") && err.contains("pkg-1.0-py3-none-any.whl"),
        "{err}"
    );
    assert_nothing_ingested(&world);
}

#[test]
fn network_down_names_the_url_and_offline_names_what_is_missing() {
    let world = World::new();
    let wheel = WheelBuilder::new("pkg", "1.0")
        .file("pkg/__init__.py", "")
        .build(&world.wheels());
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    world.write_tiers("[tiers.t]\nrequirements = [\"pkg\"]\n");
    write_pylock(
        &world.project().join("pylock.t.toml"),
        &[LockedPackage::served(&wheel, &url)],
    );
    let err = world.fails(&["materialize", "--frozen", "t"]);
    assert!(
        err.contains(&format!("{url}/pkg-1.0-py3-none-any.whl")),
        "{err}"
    );
    assert_nothing_ingested(&world);

    let err = world.fails(&["materialize", "--offline", "t"]);
    assert!(
        err.contains("--offline") && err.contains("pkg 1.0"),
        "{err}"
    );
}

#[test]
fn malformed_config_and_lock_are_located() {
    let world = World::new();
    world.write_tiers("[tiers.t]\nrequirements = [\"pkg\"]\nsets = [\"nope\"]\n");
    let err = world.fails(&["list"]);
    assert!(
        err.contains("tiers.toml:3:") && err.contains("unknown set `nope`"),
        "{err}"
    );

    world.write_tiers("[tiers.t]\nrequirements = [\"pkg\"\n");
    let err = world.fails(&["list"]);
    assert!(err.contains("tiers.toml:"), "{err}");

    world.write_tiers("[tiers.t]\nrequirements = [\"pkg\"]\n");
    fs_err::write(
        world.project().join("pylock.t.toml"),
        "lock-version = \"1.0\"\n[[packages]]\nname = \"pkg\"\nwheels = 7\n",
    )
    .unwrap();
    let err = world.fails(&["materialize", "--frozen", "t"]);
    assert!(
        err.contains("pylock.t.toml:4:") && err.contains("tstore lock"),
        "{err}"
    );

    let err = world.fails(&["materialize", "--frozen", "missing"]);
    assert!(err.contains("unknown tier `missing`"), "{err}");
}

#[test]
fn missing_python_is_a_clear_error() {
    let world = World::new();
    world.write_tiers("python = \"3.4\"\n[tiers.t]\nrequirements = [\"pkg\"]\n");
    fs_err::write(
        world.project().join("pylock.t.toml"),
        "lock-version = \"1.0\"\n",
    )
    .unwrap();
    let out = world
        .tstore(&["materialize", "--frozen", "t"])
        .env("UV_PYTHON_DOWNLOADS", "never")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no Python 3.4 interpreter found") && err.contains("uv python install"),
        "{err}"
    );
}

#[test]
fn missing_uv_is_a_clear_error() {
    let world = World::new();
    world.write_tiers("[tiers.t]\nrequirements = [\"pkg\"]\n");
    let out = world
        .tstore(&["lock", "t"])
        .env("TSTORE_UV", world.path().join("no-such-uv"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("TSTORE_UV") && err.contains("no-such-uv"),
        "{err}"
    );
}

/// A uv at `TSTORE_UV` that runs `body` (a shell script).
fn broken_uv(world: &World, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let uv = world.path().join("broken-uv");
    fs_err::write(&uv, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs_err::set_permissions(&uv, std::fs::Permissions::from_mode(0o755)).unwrap();
    uv
}

#[test]
fn a_broken_uv_is_blamed_not_the_python() {
    for (body, status) in [
        (
            "echo 'uv: cannot load libfoo.so' >&2; exit 1",
            "exit status: 1",
        ),
        ("kill -SEGV $$", "SIGSEGV"),
    ] {
        let world = World::new();
        world.write_tiers("[tiers.t]\nrequirements = [\"pkg\"]\n");
        fs_err::write(
            world.project().join("pylock.t.toml"),
            "lock-version = \"1.0\"\n",
        )
        .unwrap();
        let uv = broken_uv(&world, body);
        let out = world
            .tstore(&["materialize", "--frozen", "t"])
            .env("TSTORE_UV", &uv)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(!err.contains("no Python"), "{err}");
        assert!(
            err.contains("uv failed")
                && err.contains(&format!("{} python find", uv.display()))
                && err.contains(status),
            "{err}"
        );
        if body.contains("libfoo") {
            assert!(err.contains("cannot load libfoo.so"), "{err}");
        }
    }
}

#[test]
fn a_truncated_export_names_the_archive_and_the_fix() {
    let world = World::new();
    let wheel = WheelBuilder::new("pkg", "1.0")
        .file("pkg/__init__.py", "")
        .file("pkg/data.txt", &"payload line\n".repeat(40_000))
        .build(&world.wheels());
    let server = FileServer::start(&world.wheels());
    world.write_tiers("[tiers.t]\nrequirements = [\"pkg\"]\n");
    write_pylock(
        &world.project().join("pylock.t.toml"),
        &[LockedPackage::served(&wheel, &server.url)],
    );
    world.ok(&["materialize", "--frozen", "t"]);
    let archive = world.path().join("export.tar.zst");
    world.ok(&["export", "-o", archive.to_str().unwrap()]);
    let bytes = fs_err::read(&archive).unwrap();
    let cut = world.path().join("cut.tar.zst");
    for len in [bytes.len() / 2, bytes.len() - 7, 40] {
        fs_err::write(&cut, &bytes[..len]).unwrap();
        let dst = World::new();
        dst.write_tiers("[tiers.t]\nrequirements = [\"pkg\"]\n");
        let err = dst.fails(&["import", cut.to_str().unwrap()]);
        assert!(
            err.contains(&cut.display().to_string())
                && err.contains("truncated or damaged")
                && err.contains("export it again"),
            "cut at {len} of {}: {err}",
            bytes.len()
        );
        assert_eq!(dst.store_counts().0, 0, "nothing recorded");
    }
}

//! Export/import archives and remote stores (a folder, nginx WebDAV and
//! Garage S3, the servers started here on 127.0.0.1).

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::ProcessGroup;
use common::*;

/// A project with tiers `t1` (alpha, gamma) and `t2` (alpha), served by a
/// local index; `materialize` has filled the store.
struct Source {
    world: World,
    server: Option<FileServer>,
}

fn wheels(world: &World) {
    WheelBuilder::new("alpha", "1.0")
        .file("alpha/__init__.py", "VALUE = 'alpha'\n")
        .file("alpha/big.bin", &"x".repeat(200_000))
        .console_script("alpha-hello", "alpha.cli:hello")
        .file("alpha/cli.py", "def hello():\n    print('hello')\n")
        .build(&world.wheels());
    WheelBuilder::new("gamma", "1.0")
        .file("gamma/__init__.py", "NAME = 'gamma'\n")
        .build(&world.wheels());
}

const TIERS: &str =
    "[tiers.t1]\nrequirements = [\"alpha\", \"gamma\"]\n[tiers.t2]\nrequirements = [\"alpha\"]\n";

fn source() -> Source {
    let world = World::new();
    wheels(&world);
    let server = FileServer::start(&world.wheels());
    world.write_tiers(TIERS);
    for (tier, names) in [("t1", &["alpha", "gamma"][..]), ("t2", &["alpha"][..])] {
        lock_served(
            &world.project().join(format!("pylock.{tier}.toml")),
            &world.wheels(),
            names,
            &server.url,
        );
    }
    world.ok(&["materialize", "--frozen", "t1", "t2"]);
    Source {
        world,
        server: Some(server),
    }
}

/// An empty machine with the same tiers.toml (and no locks unless copied).
fn fresh(copy_locks_from: Option<&World>) -> World {
    let world = World::new();
    world.write_tiers(TIERS);
    if let Some(from) = copy_locks_from {
        for tier in ["t1", "t2"] {
            let name = format!("pylock.{tier}.toml");
            fs_err::copy(from.project().join(&name), world.project().join(&name)).unwrap();
        }
    }
    world
}

#[test]
fn export_is_deterministic_and_an_import_materializes_offline() {
    let mut src = source();
    let a = src.world.path().join("a.tar.zst");
    let b = src.world.path().join("b.tar.zst");
    let out = src.world.ok(&["export", "-o", a.to_str().unwrap()]);
    assert!(out.contains("exported 2 tier(s), 2 distributions"), "{out}");
    // Another run, after the store's files and records were touched.
    src.world.ok(&["gc"]);
    src.world
        .ok(&["export", "t2", "t1", "-o", b.to_str().unwrap()]);
    assert_eq!(
        fs_err::read(&a).unwrap(),
        fs_err::read(&b).unwrap(),
        "same tiers and store, same bytes"
    );
    // Only t2's needs: no gamma.
    let t2_only = src.world.path().join("t2.tar.zst");
    let out = src
        .world
        .ok(&["export", "t2", "-o", t2_only.to_str().unwrap()]);
    assert!(out.contains("1 distributions"), "{out}");

    // No index any more: the archive is all the new machine gets.
    drop(src.server.take());
    let dst = fresh(None);
    let out = dst.ok(&["import", a.to_str().unwrap()]);
    assert!(out.contains("2 new distributions of 2"), "{out}");
    assert!(
        out.contains("t1 (written)") && out.contains("t2 (written)"),
        "{out}"
    );
    let out = dst.ok(&["-v", "materialize", "--offline", "t1", "t2"]);
    assert!(out.contains("0 downloaded"), "{out}");
    assert!(
        !out.contains("compiled into the store"),
        "bytecode came along: {out}"
    );
    python_ok(&dst.venv("t1"), "import alpha, gamma");
    let hello = Command::new(dst.venv("t1").join("bin/alpha-hello"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&hello.stdout).trim(), "hello");
    let out = dst.ok(&["verify"]);
    assert!(out.contains("all intact"), "{out}");

    // Idempotent.
    let objects = dst.store_counts();
    let out = dst.ok(&["import", a.to_str().unwrap()]);
    assert!(out.contains(": 0 new objects"), "{out}");
    assert!(out.contains("t1 (same)"), "{out}");
    assert_eq!(dst.store_counts(), objects);
}

/// Rewrites an archive, changing entries with `edit` (None drops one).
fn rewrite(archive: &Path, out: &Path, mut edit: impl FnMut(&str, Vec<u8>) -> Option<Vec<u8>>) {
    let mut input =
        tar::Archive::new(zstd::Decoder::new(fs_err::File::open(archive).unwrap()).unwrap());
    let encoder = zstd::Encoder::new(fs_err::File::create(out).unwrap(), 3).unwrap();
    let mut output = tar::Builder::new(encoder);
    for entry in input.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if let Some(data) = edit(&name, data) {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            output
                .append_data(&mut header, &name, data.as_slice())
                .unwrap();
        }
    }
    output.into_inner().unwrap().finish().unwrap();
}

#[test]
fn a_damaged_or_truncated_archive_is_refused() {
    let src = source();
    let good = src.world.path().join("good.tar.zst");
    src.world
        .ok(&["export", "t2", "-o", good.to_str().unwrap()]);

    // One object's bytes changed (same size): refused, nothing recorded.
    let bad = src.world.path().join("bad.tar.zst");
    rewrite(&good, &bad, |name, mut data| {
        if name.starts_with("objects/") && data.len() == 200_000 {
            data[1000] = b'y';
        }
        Some(data)
    });
    let dst = fresh(None);
    let err = dst.fails(&["import", bad.to_str().unwrap()]);
    assert!(err.contains("does not match its key"), "{err}");
    assert_eq!(dst.store_counts().0, 0, "no distribution recorded");
    let mut stored = Vec::new();
    walk(&dst.store().join("v1/objects"), &mut stored);
    assert!(
        !stored
            .iter()
            .any(|p| fs_err::metadata(p).unwrap().len() == 200_000),
        "the damaged object was not stored"
    );

    // The last object missing: refused, nothing recorded.
    let short = src.world.path().join("short.tar.zst");
    let last = {
        let mut names = Vec::new();
        rewrite(
            &good,
            &src.world.path().join("copy.tar.zst"),
            |name, data| {
                names.push(name.to_string());
                Some(data)
            },
        );
        names.last().unwrap().clone()
    };
    rewrite(&good, &short, |name, data| (name != last).then_some(data));
    let err = dst.fails(&["import", short.to_str().unwrap()]);
    assert!(err.contains("ends before 1 of its objects"), "{err}");
    assert_eq!(dst.store_counts().0, 0);

    let err = dst.fails(&[
        "import",
        src.world.project().join("tiers.toml").to_str().unwrap(),
    ]);
    assert!(err.contains("is not a tstore export"), "{err}");
    // The good one still imports into the same store.
    dst.ok(&["import", good.to_str().unwrap()]);
    assert_eq!(dst.store_counts().0, 1);
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs_err::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn lock_hash_follows_the_locks() {
    let src = source();
    let hash = |w: &World| {
        let out = w.run(&["lock", "--print-hash"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let first = hash(&src.world);
    assert_eq!(first.len(), 64);
    assert_eq!(hash(&src.world), first);
    let lock = src.world.project().join("pylock.t2.toml");
    let text = fs_err::read_to_string(&lock).unwrap();
    fs_err::write(&lock, format!("{text}\n")).unwrap();
    assert_ne!(hash(&src.world), first);
    fs_err::remove_file(&lock).unwrap();
    let err = src.world.fails(&["lock", "--print-hash"]);
    assert!(err.contains("tier `t2` has no lock"), "{err}");
}

/// Pushes the source's tiers to `remote`, pulls them into a fresh machine
/// with the index gone, and materializes offline.
fn push_then_pull(remote: &str, env: &[(&str, String)]) {
    let mut src = source();
    let run = |world: &World, args: &[&str]| {
        let mut cmd = world.tstore(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(out.status.success(), "tstore {args:?}: {text}");
        text
    };
    let out = run(&src.world, &["push", "--remote", remote]);
    assert!(out.contains("pushed to"), "{out}");
    assert!(!out.contains(" 0 objects"), "{out}");
    // Again: everything is there.
    let out = run(&src.world, &["push", "--remote", remote]);
    assert!(out.contains(": 0 objects (0 B)"), "{out}");

    drop(src.server.take());
    let dst = fresh(Some(&src.world));
    let out = run(&dst, &["pull", "--remote", remote]);
    assert!(out.contains("t1: pulled 2 distributions"), "{out}");
    let out = run(&dst, &["-v", "materialize", "--offline", "t1", "t2"]);
    assert!(
        !out.contains("compiled into the store"),
        "bytecode came along: {out}"
    );
    python_ok(&dst.venv("t1"), "import alpha, gamma");
    let out = run(&dst, &["verify"]);
    assert!(out.contains("all intact"), "{out}");
}

#[test]
fn a_folder_remote_serves_push_and_pull_and_refuses_damage() {
    let holder = scratch_dir();
    let remote = format!("file://{}", holder.path().join("remote").display());
    push_then_pull(&remote, &[]);

    // Damage one object on the remote: a pull refuses it and says so, and
    // materialize falls back to the index for that distribution.
    let src = source();
    src.world.ok(&["push", "--remote", &remote]);
    let mut objects = Vec::new();
    walk(&holder.path().join("remote/objects"), &mut objects);
    let big = objects
        .iter()
        .find(|p| fs_err::metadata(p).unwrap().len() == 200_000)
        .unwrap();
    let mut data = fs_err::read(big).unwrap();
    data[10] ^= 1;
    fs_err::write(big, &data).unwrap();
    let dst = fresh(Some(&src.world));
    let err = dst.fails(&["pull", "--remote", &remote]);
    assert!(
        err.contains("does not match its key") && err.contains("refused"),
        "{err}"
    );
    assert!(dst.store_counts().0 <= 1, "alpha was not recorded");
    let out = dst.ok(&["materialize", "--frozen", "--remote", &remote, "t2"]);
    assert!(
        out.contains("1 downloaded"),
        "alpha came from the index: {out}"
    );
    python_ok(&dst.venv("t2"), "import alpha");

    // A remote that does not answer: the index serves, with a notice.
    let other = fresh(Some(&src.world));
    let port = free_port();
    let out = other.ok(&[
        "materialize",
        "--frozen",
        "--remote",
        &format!("http://127.0.0.1:{port}/nothing"),
        "t1",
    ]);
    assert!(out.contains("the remote store could not be used"), "{out}");
    assert!(out.contains("2 downloaded"), "{out}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, server: &mut ProcessGroup, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = server.child().try_wait() {
            panic!("{what} exited: {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `program` is on PATH; under `.ci/run` (TSTORE_REQUIRE_SERVERS)
/// a missing server fails the test instead of skipping it.
fn have(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found || std::env::var_os("TSTORE_REQUIRE_SERVERS").is_none(),
        "{program} is required here (TSTORE_REQUIRE_SERVERS is set)"
    );
    found
}

#[test]
fn nginx_webdav_remote() {
    if !have("nginx") {
        eprintln!("skipped: nginx is not installed (.ci/run installs it)");
        return;
    }
    let dir = scratch_dir();
    let port = free_port();
    let root = dir.path().join("www");
    fs_err::create_dir_all(&root).unwrap();
    let temp = dir.path().join("tmp");
    fs_err::create_dir_all(&temp).unwrap();
    let conf = dir.path().join("nginx.conf");
    fs_err::write(
        &conf,
        format!(
            "user root;\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n access_log off;\n client_max_body_size 0;\n\
              client_body_temp_path {t}/body;\n proxy_temp_path {t}/proxy;\n fastcgi_temp_path {t}/fcgi;\n\
              uwsgi_temp_path {t}/uwsgi;\n scgi_temp_path {t}/scgi;\n\
              server {{\n  listen 127.0.0.1:{port};\n  root {r};\n  location / {{\n\
                dav_methods PUT DELETE MKCOL COPY MOVE;\n   create_full_put_path on;\n\
                dav_access user:rw group:r all:r;\n  }}\n }}\n}}\n",
            d = dir.path().display(),
            t = temp.display(),
            r = root.display(),
        ),
    )
    .unwrap();
    // nginx stops gracefully on SIGQUIT (what `nginx -s quit` sends): the
    // master lets its workers finish, and they exit with it.
    let mut server = ProcessGroup::spawn(
        "nginx",
        Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path())
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        libc::SIGQUIT,
    );
    wait_for_port(port, &mut server, "nginx");
    push_then_pull(&format!("http://127.0.0.1:{port}/tstore"), &[]);
    assert!(
        root.join("tstore/objects").is_dir(),
        "objects were PUT under the prefix"
    );
    server.stop().unwrap();
}

/// Garage (S3-compatible) on 127.0.0.1, one node, sqlite metadata.
#[test]
fn garage_s3_remote() {
    let garage = std::env::var("TSTORE_TEST_GARAGE").unwrap_or_else(|_| "garage".into());
    if !have(&garage) {
        eprintln!("skipped: no garage binary (.ci/run builds it with cargo install garage)");
        return;
    }
    let dir = scratch_dir();
    let mut server = common::garage::Garage::start(&garage, dir.path(), "tstore");
    let env: Vec<(&str, String)> = server
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    push_then_pull("s3://tstore/team-store", &env);
    server.stop().unwrap();
}

//! Export/import archives and remote stores (a folder, nginx WebDAV and
//! Garage S3, the servers started here on 127.0.0.1).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::garage::free_port;
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

/// gamma 2.0 (with `extra` files) replaces gamma 1.0 in t1's lock, and t1
/// is materialized with it.
fn upgrade_gamma(src: &Source, extra: &[(&str, &str)]) {
    let mut gamma =
        WheelBuilder::new("gamma", "2.0").file("gamma/__init__.py", "NAME = 'gamma 2'\n");
    for (path, text) in extra {
        gamma = gamma.file(path, text);
    }
    gamma.build(&src.world.wheels());
    let url = &src.server.as_ref().unwrap().url;
    write_pylock(
        &src.world.project().join("pylock.t1.toml"),
        &[
            LockedPackage::served(&src.world.wheels().join("alpha-1.0-py3-none-any.whl"), url),
            LockedPackage::served(&src.world.wheels().join("gamma-2.0-py3-none-any.whl"), url),
        ],
    );
    src.world.ok(&["materialize", "--frozen", "t1"]);
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

/// A hand-edited manifest whose second distribution names an object that
/// neither the archive nor the store has: the import is refused and no
/// distribution is recorded, not even the first, whose objects all came.
#[test]
fn an_archive_naming_an_object_it_lacks_records_no_distribution() {
    let src = source();
    let good = src.world.path().join("good.tar.zst");
    src.world
        .ok(&["export", "t1", "-o", good.to_str().unwrap()]);
    let edited = src.world.path().join("edited.tar.zst");
    rewrite(&good, &edited, |name, data| {
        if name != "manifest.json" {
            return Some(data);
        }
        let mut manifest: serde_json::Value = serde_json::from_slice(&data).unwrap();
        let dists = manifest["distributions"].as_array_mut().unwrap();
        assert_eq!(dists.len(), 2, "alpha and gamma");
        let gamma = dists.iter_mut().find(|d| d["name"] == "gamma").unwrap();
        let file = gamma["files"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|f| f["path"] == "gamma/__init__.py")
            .unwrap();
        file["object"] = serde_json::Value::from("0".repeat(64));
        Some(serde_json::to_vec(&manifest).unwrap())
    });
    let dst = fresh(None);
    let err = dst.fails(&["import", edited.to_str().unwrap()]);
    assert!(
        err.contains(&format!("object {} of gamma/__init__.py", "0".repeat(64)))
            && err.contains("is missing, so the distribution was not recorded"),
        "{err}"
    );
    assert_eq!(dst.store_counts().0, 0, "neither alpha nor gamma recorded");
    // The objects that came are kept, and the good archive completes.
    dst.ok(&["import", good.to_str().unwrap()]);
    assert_eq!(dst.store_counts().0, 2);
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

/// Runs tstore in `world` with `env` added; its output (stderr, then
/// stdout) and whether it succeeded.
fn run_env(world: &World, args: &[&str], env: &[(&str, String)]) -> (bool, String) {
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
    (out.status.success(), text)
}

fn ok_env(world: &World, args: &[&str], env: &[(&str, String)]) -> String {
    let (ok, text) = run_env(world, args, env);
    assert!(ok, "tstore {args:?}: {text}");
    text
}

/// Pushes the source's tiers to `remote` (`push_to`: the address to push
/// through, when `remote` is read-only), then pulls them into a fresh
/// machine with no locks and the index gone, and materializes offline.
fn push_then_pull(remote: &str, push_to: Option<&str>, env: &[(&str, String)]) {
    let mut src = source();
    let push_to = push_to.unwrap_or(remote);
    let out = ok_env(&src.world, &["push", "--remote", push_to], env);
    assert!(out.contains("pushed to"), "{out}");
    assert!(out.contains("2 new distribution records"), "{out}");
    assert!(out.contains("locks of t1, t2"), "{out}");
    // Again: everything is there.
    let out = ok_env(&src.world, &["push", "--remote", push_to], env);
    assert!(out.contains(": 0 packs (0 B)"), "{out}");

    drop(src.server.take());
    let dst = fresh(None);
    let out = ok_env(&dst, &["pull", "--remote", remote], env);
    assert!(
        out.contains("tier `t1` had no lock here: took the one it was pushed with"),
        "{out}"
    );
    assert_eq!(
        fs_err::read_to_string(dst.project().join("pylock.t1.toml")).unwrap(),
        fs_err::read_to_string(src.world.project().join("pylock.t1.toml")).unwrap()
    );
    // One pull for both tiers (alpha once); one pack per distribution,
    // one per distribution's bytecode.
    assert!(
        out.contains("t1 + t2: pulled 2 distributions in 4 packs"),
        "{out}"
    );
    let out = ok_env(&dst, &["-v", "materialize", "--offline", "t1", "t2"], env);
    assert!(
        !out.contains("compiled into the store"),
        "bytecode came along: {out}"
    );
    python_ok(&dst.venv("t1"), "import alpha, gamma");
    let out = ok_env(&dst, &["verify"], env);
    assert!(out.contains("all intact"), "{out}");
}

/// The remote's pack files (distributions' and bytecode's), relative.
fn packs_in(remote: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    walk(remote, &mut files);
    let mut packs: Vec<PathBuf> = files
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tar.zst"))
        .map(|p| p.strip_prefix(remote).unwrap().to_path_buf())
        .collect();
    packs.sort();
    packs
}

#[test]
fn a_folder_remote_serves_push_and_pull() {
    let holder = scratch_dir();
    let remote = format!("file://{}", holder.path().join("remote").display());
    push_then_pull(&remote, None, &[]);
    let root = holder.path().join("remote");
    assert!(root.join("tstore-remote.json").is_file());
    assert_eq!(
        packs_in(&root)
            .iter()
            .filter(|p| p.starts_with("packs"))
            .count(),
        2
    );
    let mut roots = Vec::new();
    walk(&root.join("roots"), &mut roots);
    assert_eq!(roots.len(), 2, "one root per lock pushed: {roots:?}");
}

#[test]
fn a_tampered_pack_is_refused_and_nothing_of_it_is_recorded() {
    let holder = scratch_dir();
    let root = holder.path().join("remote");
    let remote = format!("file://{}", root.display());
    let src = source();
    src.world.ok(&["push", "--remote", &remote]);
    // alpha's pack is the big one; change bytes in its middle.
    let big = packs_in(&root)
        .into_iter()
        .filter(|p| p.starts_with("packs"))
        .max_by_key(|p| fs_err::metadata(root.join(p)).unwrap().len())
        .unwrap();
    let path = root.join(&big);
    let mut data = fs_err::read(&path).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0x55;
    data[middle + 1] ^= 0x55;
    fs_err::write(&path, &data).unwrap();

    let dst = fresh(Some(&src.world));
    let err = dst.fails(&["pull", "--remote", &remote, "t2"]);
    assert!(err.contains("refused"), "{err}");
    assert!(
        err.contains(&big.to_string_lossy().into_owned()),
        "names the pack: {err}"
    );
    assert_eq!(dst.store_counts().0, 0, "alpha was not recorded");
    let mut stored = Vec::new();
    walk(&dst.store().join("v1/objects"), &mut stored);
    assert!(
        !stored
            .iter()
            .any(|p| fs_err::metadata(p).unwrap().len() == 200_000),
        "nothing of the damaged pack entered the store"
    );
    // materialize falls back to the index for it.
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
        "t2",
        "t1",
    ]);
    assert_eq!(
        out.matches("the remote store could not be used").count(),
        1,
        "said once, not asked again for t1's gamma: {out}"
    );
    assert_eq!(out.matches("1 downloaded").count(), 2, "{out}");
    python_ok(&other.venv("t1"), "import alpha, gamma");
}

#[test]
fn a_remote_in_another_layout_is_refused_with_the_fix() {
    let holder = scratch_dir();
    let root = holder.path().join("remote");
    let remote = format!("file://{}", root.display());
    let src = source();
    src.world.ok(&["push", "--remote", &remote]);
    let dst = fresh(Some(&src.world));

    // Another layout version, then content without the file (written by
    // an older tstore): both refused by pull and push, saying what to do.
    let version_7 = Some(r#"{"format": "tstore-remote", "version": 7}"#);
    for (layout_file, expected) in [
        (version_7, "layout version 7"),
        (None, "no tstore-remote.json"),
    ] {
        match layout_file {
            Some(text) => fs_err::write(root.join("tstore-remote.json"), text).unwrap(),
            None => fs_err::remove_file(root.join("tstore-remote.json")).unwrap(),
        }
        for args in [
            &["pull", "--remote", &remote][..],
            &["push", "--remote", &remote][..],
        ] {
            let world = if args[0] == "pull" { &dst } else { &src.world };
            let err = world.fails(args);
            assert!(
                err.contains(expected) && err.contains("push to an empty prefix"),
                "{args:?}: {err}"
            );
        }
    }
    assert_eq!(dst.store_counts().0, 0);
}

/// The remote of the incremental pull: a folder pushed to, read through
/// nginx when it is installed (its access log is what the server sent),
/// else as the folder.
struct Watched {
    url: String,
    log: Option<PathBuf>,
    _nginx: Option<ProcessGroup>,
}

impl Watched {
    fn serve(dir: &Path, folder: &Path) -> Self {
        fs_err::create_dir_all(folder).unwrap();
        if !have("nginx") {
            eprintln!("nginx is not installed: only pull's own report is checked");
            return Self {
                url: format!("file://{}", folder.display()),
                log: None,
                _nginx: None,
            };
        }
        let (server, port) = nginx(dir, folder.parent().unwrap(), false);
        let name = folder.file_name().unwrap().to_string_lossy();
        Self {
            url: format!("http://127.0.0.1:{port}/{name}"),
            log: Some(dir.join("access.log")),
            _nginx: Some(server),
        }
    }

    /// The requests logged so far: (method, path under the folder, bytes
    /// of body sent).
    fn requests(&self, folder: &Path) -> Vec<(String, String, u64)> {
        let Some(log) = &self.log else {
            return Vec::new();
        };
        let prefix = format!("/{}/", folder.file_name().unwrap().to_string_lossy());
        fs_err::read_to_string(log)
            .unwrap()
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let [method, uri, _status, bytes] = fields[..] else {
                    panic!("access log line `{line}`");
                };
                let path = uri.strip_prefix(&prefix).unwrap_or(uri);
                (method.to_string(), path.to_string(), bytes.parse().unwrap())
            })
            .collect()
    }
}

/// t1 locked as `packages` (name, version: wheels built beforehand),
/// materialized from the index and pushed to `folder`.
fn push_lock(src: &Source, folder: &Path, packages: &[(&str, &str)]) {
    let url = &src.server.as_ref().unwrap().url;
    let locked: Vec<LockedPackage> = packages
        .iter()
        .map(|(name, version)| {
            let wheel = src
                .world
                .wheels()
                .join(format!("{name}-{version}-py3-none-any.whl"));
            LockedPackage::served(&wheel, url)
        })
        .collect();
    write_pylock(&src.world.project().join("pylock.t1.toml"), &locked);
    src.world.ok(&["materialize", "--frozen", "t1"]);
    let remote = format!("file://{}", folder.display());
    src.world.ok(&["push", "--remote", &remote, "t1"]);
}

/// Issue 16's figure on a small lock: after a lock change of two of four
/// packages, a pull fetches exactly the packs (wheel and bytecode) of the
/// two new distributions, and no more than 1.1x their bytes in all. The
/// unchanged `epsilon` is large and incompressible, so fetching it again
/// would show in the bytes as well as in the packs.
#[test]
fn an_incremental_pull_fetches_only_the_changed_distributions_packs() {
    let holder = scratch_dir();
    let folder = holder.path().join("www/team");
    let watched = Watched::serve(holder.path(), &folder);
    let src = source();
    let wheels = src.world.wheels();
    WheelBuilder::new("gamma", "2.0")
        .file("gamma/__init__.py", "NAME = 'gamma 2'\n")
        .file("gamma/extra.py", "EXTRA = 2\n")
        .build(&wheels);
    for (version, seed) in [("1.0", 1), ("1.1", 2)] {
        WheelBuilder::new("delta", version)
            .file("delta/__init__.py", &format!("VERSION = '{version}'\n"))
            .raw(
                "delta/data.bin",
                &incompressible_bytes(seed, 150_000),
                0o100644,
            )
            .build(&wheels);
    }
    WheelBuilder::new("epsilon", "1.0")
        .file("epsilon/__init__.py", "")
        .raw(
            "epsilon/data.bin",
            &incompressible_bytes(3, 400_000),
            0o100644,
        )
        .build(&wheels);
    let unchanged = [("alpha", "1.0"), ("epsilon", "1.0")];
    let lock_a = [("gamma", "1.0"), ("delta", "1.0")];
    let lock_b = [("gamma", "2.0"), ("delta", "1.1")];

    push_lock(&src, &folder, &[&unchanged[..], &lock_a[..]].concat());
    let dst = fresh(Some(&src.world));
    let out = dst.ok(&["pull", "--remote", &watched.url, "t1"]);
    assert!(out.contains("t1: pulled 4 distributions"), "{out}");

    push_lock(&src, &folder, &[&unchanged[..], &lock_b[..]].concat());
    // B's new distributions' packs on the remote, named by their wheels.
    let new_wheels: Vec<String> = lock_b
        .iter()
        .map(|(name, version)| {
            sha256_hex(&wheels.join(format!("{name}-{version}-py3-none-any.whl")))
        })
        .collect();
    let expected: std::collections::BTreeMap<String, u64> = packs_in(&folder)
        .into_iter()
        .filter(|p| {
            let stem = p.file_name().unwrap().to_string_lossy();
            new_wheels
                .iter()
                .any(|sha| stem == format!("{sha}.tar.zst"))
        })
        .map(|p| {
            let size = fs_err::metadata(folder.join(&p)).unwrap().len();
            (p.to_string_lossy().into_owned(), size)
        })
        .collect();
    assert_eq!(
        expected.len(),
        4,
        "a wheel pack and a bytecode pack each: {expected:?}"
    );
    let expected_bytes: u64 = expected.values().sum();

    fs_err::copy(
        src.world.project().join("pylock.t1.toml"),
        dst.project().join("pylock.t1.toml"),
    )
    .unwrap();
    let logged_before = watched.requests(&folder).len();
    let out = dst.ok(&["-v", "pull", "--remote", &watched.url, "t1"]);
    assert!(
        out.contains(&format!(
            "t1: pulled 2 distributions in 4 packs ({})",
            human(expected_bytes)
        )),
        "{out}"
    );
    // What pull reports, pack by pack.
    let reported: std::collections::BTreeMap<String, u64> = out
        .lines()
        .filter_map(|line| line.trim().strip_prefix("t1: fetched "))
        .map(|rest| {
            let (key, rest) = rest.split_once(' ').unwrap();
            let bytes = rest
                .rsplit(", ")
                .next()
                .unwrap()
                .strip_suffix(" bytes")
                .unwrap();
            (key.to_string(), bytes.parse().unwrap())
        })
        .collect();
    assert_eq!(reported, expected, "{out}");

    // What the server sent, where nginx served it.
    if watched.log.is_some() {
        let requests = watched.requests(&folder).split_off(logged_before);
        let mut packs: Vec<(String, u64)> = requests
            .iter()
            .filter(|(_, path, _)| path.ends_with(".tar.zst"))
            .map(|(method, path, bytes)| {
                assert_eq!(method, "GET", "{requests:?}");
                (path.clone(), *bytes)
            })
            .collect();
        packs.sort();
        assert_eq!(
            packs,
            expected.clone().into_iter().collect::<Vec<_>>(),
            "{requests:?}"
        );
        let served: u64 = requests.iter().map(|(_, _, bytes)| bytes).sum();
        assert!(
            served as f64 <= 1.1 * expected_bytes as f64,
            "{served} bytes served for {expected_bytes} of new packs: {requests:?}"
        );
    }

    let out = dst.ok(&["materialize", "--offline", "t1"]);
    assert!(out.contains("0 downloaded"), "{out}");
    python_ok(
        &dst.venv("t1"),
        "import gamma.extra, delta, epsilon; assert gamma.extra.EXTRA == 2 and delta.VERSION == '1.1'",
    );
}

/// Two pushes of overlapping tiers (both need alpha) at once: both
/// succeed, and the remote serves both tiers whole.
fn concurrent_pushers(remote: &str, env: &[(&str, String)]) {
    let mut src = source();
    let spawn = |tier: &str| {
        let mut cmd = src.world.tstore(&["push", "--remote", remote, tier]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (one, two) = (spawn("t1"), spawn("t2"));
    for child in [one, two] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = ok_env(&src.world, &["push", "--remote", remote], env);
    assert!(
        out.contains(": 0 packs (0 B)"),
        "nothing was left out: {out}"
    );
    drop(src.server.take());
    let dst = fresh(None);
    let out = ok_env(&dst, &["pull", "--remote", remote], env);
    assert!(out.contains("t1 + t2: pulled 2 distributions"), "{out}");
    ok_env(&dst, &["materialize", "--offline", "t1", "t2"], env);
    python_ok(&dst.venv("t1"), "import alpha, gamma");
    let out = ok_env(&dst, &["verify"], env);
    assert!(out.contains("all intact"), "{out}");
}

#[test]
fn concurrent_pushers_to_a_folder() {
    let holder = scratch_dir();
    concurrent_pushers(
        &format!("file://{}", holder.path().join("remote").display()),
        &[],
    );
}

/// Remote gc keeps what recent roots use: gamma 1.0, used only by a lock
/// pushed 40 days ago, goes; alpha and gamma 2.0 stay and still pull.
#[test]
fn remote_gc_keeps_what_recent_roots_use() {
    let holder = scratch_dir();
    let root = holder.path().join("remote");
    let remote = format!("file://{}", root.display());
    let src = source();
    src.world.ok(&["push", "--remote", &remote, "t1"]);
    // That push happened 40 days ago.
    let mut first = Vec::new();
    walk(&root, &mut first);
    let old_root = first
        .iter()
        .find(|p| p.starts_with(root.join("roots")))
        .unwrap()
        .clone();
    let text = fs_err::read_to_string(&old_root).unwrap();
    let forty_days = 40 * 86_400;
    let pushed: u64 = text
        .split("\"pushed_unix\":")
        .nth(1)
        .unwrap()
        .trim()
        .trim_end_matches('}')
        .trim()
        .parse()
        .unwrap();
    fs_err::write(
        &old_root,
        text.replace(&pushed.to_string(), &(pushed - forty_days).to_string()),
    )
    .unwrap();
    let status = Command::new("touch")
        .args(["-d", "40 days ago"])
        .args(&first)
        .status()
        .unwrap();
    assert!(status.success());

    // Pushed now.
    upgrade_gamma(&src, &[]);
    src.world.ok(&["push", "--remote", &remote, "t1"]);

    let packs = packs_in(&root);
    let out = src
        .world
        .ok(&["remote", "gc", "--keep-days", "30", "--remote", &remote]);
    // gamma 1.0: record, pack, bytecode record and pack; the old lock and root.
    assert!(
        out.contains("would delete 6 files of 1 distributions"),
        "{out}"
    );
    assert!(out.contains("2 distributions used by 1 root(s)"), "{out}");
    assert_eq!(packs_in(&root), packs, "a dry run deletes nothing");
    let out = src.world.ok(&[
        "remote",
        "gc",
        "--keep-days",
        "30",
        "--delete",
        "--remote",
        &remote,
    ]);
    assert!(out.contains("deleted 6 files of 1 distributions"), "{out}");
    assert_eq!(packs_in(&root).len(), packs.len() - 2);
    assert!(!old_root.exists());

    let dst = fresh(None);
    let out = dst.ok(&["pull", "--remote", &remote, "t1"]);
    assert!(out.contains("t1: pulled 2 distributions"), "{out}");
    let out = src
        .world
        .ok(&["remote", "gc", "--keep-days", "30", "--remote", &remote]);
    assert!(out.contains("would delete 0 files"), "{out}");
}

/// As the binary prints byte counts.
fn human(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} B")
    } else if bytes < 1024 * 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
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

/// nginx on a free port serving `root` (with WebDAV PUT when `dav`);
/// stopped gracefully with SIGQUIT, as `nginx -s quit` does.
fn nginx(dir: &Path, root: &Path, dav: bool) -> (ProcessGroup, u16) {
    let port = free_port();
    let temp = dir.join("tmp");
    fs_err::create_dir_all(&temp).unwrap();
    let conf = dir.join("nginx.conf");
    let location = if dav {
        "dav_methods PUT DELETE MKCOL COPY MOVE;\n   create_full_put_path on;\n\
         dav_access user:rw group:r all:r;\n"
    } else {
        ""
    };
    fs_err::write(
        &conf,
        format!(
            "user root;\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n log_format served '$request_method $uri $status $body_bytes_sent';\n\
              access_log {d}/access.log served;\n client_max_body_size 0;\n\
              client_body_temp_path {t}/body;\n proxy_temp_path {t}/proxy;\n fastcgi_temp_path {t}/fcgi;\n\
              uwsgi_temp_path {t}/uwsgi;\n scgi_temp_path {t}/scgi;\n\
              server {{\n  listen 127.0.0.1:{port};\n  root {r};\n  location / {{\n{location}  }}\n }}\n}}\n",
            d = dir.display(),
            t = temp.display(),
            r = root.display(),
        ),
    )
    .unwrap();
    let mut server = ProcessGroup::spawn(
        "nginx",
        Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        libc::SIGQUIT,
    );
    wait_for_port(port, &mut server, "nginx");
    (server, port)
}

#[test]
fn nginx_webdav_remote() {
    if !have("nginx") {
        eprintln!("skipped: nginx is not installed (.ci/run installs it)");
        return;
    }
    let dir = scratch_dir();
    let root = dir.path().join("www");
    fs_err::create_dir_all(&root).unwrap();
    let (mut server, port) = nginx(dir.path(), &root, true);
    push_then_pull(&format!("http://127.0.0.1:{port}/tstore"), None, &[]);
    assert!(
        root.join("tstore/packs").is_dir(),
        "packs were PUT under the prefix"
    );
    server.stop().unwrap();
}

/// A static file server (GET only) serving a folder a folder remote was
/// pushed to: pulls work, a push says why it cannot.
#[test]
fn nginx_static_remote_serves_pulls() {
    if !have("nginx") {
        eprintln!("skipped: nginx is not installed (.ci/run installs it)");
        return;
    }
    let dir = scratch_dir();
    let root = dir.path().join("www");
    fs_err::create_dir_all(root.join("team")).unwrap();
    let (mut server, port) = nginx(dir.path(), &root, false);
    let url = format!("http://127.0.0.1:{port}/team");
    let folder = format!("file://{}", root.join("team").display());
    push_then_pull(&url, Some(&folder), &[]);

    // materialize --remote on another fresh machine, index gone.
    let first = fresh(None);
    let out = first.ok(&["pull", "--remote", &url, "t2"]);
    assert!(out.contains("t2: pulled 1 distributions"), "{out}");
    let second = World::new();
    second.write_tiers(TIERS);
    fs_err::copy(
        first.project().join("pylock.t2.toml"),
        second.project().join("pylock.t2.toml"),
    )
    .unwrap();
    let out = second.ok(&["materialize", "--frozen", "--remote", &url, "t2"]);
    assert!(out.contains("0 downloaded"), "{out}");
    python_ok(&second.venv("t2"), "import alpha");

    let err = second.fails(&["remote", "gc", "--remote", &url]);
    assert!(err.contains("cannot be listed"), "{err}");

    let other = source();
    let err = other.world.fails(&["push", "--remote", &url]);
    assert!(
        err.contains("a static file server is read-only") && err.contains("file://"),
        "{err}"
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
    push_then_pull("s3://tstore/team-store", None, &env);
    // A wrong secret: refused, and no secret is printed.
    let wrong = "wrong-secret-0123456789abcdef0123456789";
    let real = env
        .iter()
        .find(|(k, _)| *k == "AWS_SECRET_ACCESS_KEY")
        .unwrap()
        .1
        .clone();
    let bad: Vec<(&str, String)> = env
        .iter()
        .map(|(k, v)| {
            let v = if *k == "AWS_SECRET_ACCESS_KEY" {
                wrong.to_string()
            } else {
                v.clone()
            };
            (*k, v)
        })
        .collect();
    let (ok, text) = run_env(
        &fresh(None),
        &["pull", "--remote", "s3://tstore/team-store"],
        &bad,
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("s3://tstore/team-store"),
        "names the remote: {text}"
    );
    assert!(
        !text.contains(wrong) && !text.contains(&real),
        "no secret in: {text}"
    );
    concurrent_pushers("s3://tstore/concurrent", &env);
    // Listing and deleting through S3: with no days kept, and every file
    // older than now, everything but the layout file goes.
    std::thread::sleep(Duration::from_secs(2));
    let world = fresh(None);
    let out = ok_env(
        &world,
        &[
            "remote",
            "gc",
            "--keep-days",
            "0",
            "--delete",
            "--remote",
            "s3://tstore/concurrent",
        ],
        &env,
    );
    assert!(out.contains("deleted 14 files of 2 distributions"), "{out}");
    let (ok, err) = run_env(
        &world,
        &["pull", "--remote", "s3://tstore/concurrent", "t2"],
        &env,
    );
    assert!(
        !ok && err.contains("has no lock"),
        "the lock went too: {err}"
    );
    let out = ok_env(
        &world,
        &[
            "remote",
            "gc",
            "--keep-days",
            "0",
            "--remote",
            "s3://tstore/concurrent",
        ],
        &env,
    );
    assert!(out.contains("would delete 0 files"), "{out}");
    server.stop().unwrap();
}

/// A machine whose tier `tier` is one wheel `name` of `files` modules
/// (objects in every shard), exported; returns it and the archive.
fn bulky_export(tier: &str, name: &str, files: usize) -> (World, PathBuf) {
    let world = World::new();
    let mut wheel =
        WheelBuilder::new(name, "1.0").file(&format!("{name}/__init__.py"), "OK = True\n");
    for i in 0..files {
        wheel = wheel.file(
            &format!("{name}/mod_{i}.py"),
            &format!("# {name} {i}\nVALUE = {i}\n"),
        );
    }
    wheel.build(&world.wheels());
    let server = FileServer::start(&world.wheels());
    world.write_tiers(&format!("[tiers.{tier}]\nrequirements = [\"{name}\"]\n"));
    lock_served(
        &world.project().join(format!("pylock.{tier}.toml")),
        &world.wheels(),
        &[name],
        &server.url,
    );
    world.ok(&["materialize", "--frozen", tier]);
    let archive = world.path().join(format!("{tier}.tar.zst"));
    world.ok(&["export", "-o", archive.to_str().unwrap()]);
    (world, archive)
}

fn verify_exits_zero(world: &World, context: &str) -> String {
    let out = world.run(&["verify"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "verify after {context}:\n{text}"
    );
    text
}

#[test]
fn an_import_killed_while_staging_or_publishing_leaves_a_sound_store_and_a_rerun_completes() {
    let (_src, archive) = bulky_export("t", "bulk", 2500);
    let dst = World::new();
    dst.write_tiers("[tiers.t]\nrequirements = [\"bulk\"]\n");
    let tmp = dst.store().join("v1/tmp");
    let objects = dst.store().join("v1/objects");
    let staging = || staging_objects(&tmp);
    let published = || any_file_under(&objects);
    // First while objects are written into the stage, then as soon as the
    // first staged shard is in the store.
    let mut kills = Vec::new();
    for (point, reached) in [
        ("staging", &staging as &dyn Fn() -> bool),
        ("publishing", &published),
    ] {
        let mut import = dst.tstore(&["import", archive.to_str().unwrap()]);
        if kill_once_reached(&mut import, reached, point) {
            kills.push(point);
        }
        verify_exits_zero(&dst, &format!("a kill while {point}"));
        assert_tmp_cleared(&tmp);
    }
    eprintln!("killed while: {kills:?}");
    assert!(kills.contains(&"staging"), "killed at: {kills:?}");

    let out = dst.ok(&["import", archive.to_str().unwrap()]);
    assert!(out.contains("1 new distributions of 1"), "{out}");
    dst.ok(&["materialize", "--offline", "t"]);
    python_ok(
        &dst.venv("t"),
        "import bulk.mod_2499 as m; assert m.VALUE == 2499",
    );
    let out = verify_exits_zero(&dst, "the rerun");
    assert!(out.contains("all intact"), "{out}");
}

/// Runs `tstore ARGS` in `world` with the umask 077 (a user who keeps
/// new files to themselves), expecting success.
fn ok_under_strict_umask(world: &World, args: &[&str]) -> String {
    use std::os::unix::process::CommandExt;
    let mut command = world.tstore(args);
    // SAFETY: umask is async-signal-safe and touches no memory.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
    let out = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "tstore {args:?}:\n{text}");
    text
}

/// Objects are read-only for everyone (0444, 0555 executable) whatever the
/// umask, however they arrived: a first install and an import into a new
/// store write them into a stage at their final name, where the mode given
/// to open(2) alone would have lost its group and other bits.
#[test]
fn objects_keep_their_mode_under_a_strict_umask_through_install_and_import() {
    let src = World::new();
    let _server = serve_tier_of_one_wheel_with_a_script(&src, "strict");
    ok_under_strict_umask(&src, &["materialize", "--frozen", "t"]);
    let out = verify_exits_zero(&src, "a first install under umask 077");
    assert!(out.contains("all intact"), "{out}");
    let archive = src.path().join("t.tar.zst");
    src.ok(&["export", "-o", archive.to_str().unwrap()]);

    let dst = World::new();
    dst.write_tiers("[tiers.t]\nrequirements = [\"strict\"]\n");
    ok_under_strict_umask(&dst, &["import", archive.to_str().unwrap()]);
    let out = verify_exits_zero(&dst, "an import under umask 077");
    assert!(out.contains("all intact"), "{out}");
    for world in [&src, &dst] {
        assert_eq!(object_modes(world), [0o444, 0o555]);
    }
}

/// Tier `t` of `world`: the wheel `name` 1.0, a module and an executable
/// script (so objects of both modes), served and locked.
fn serve_tier_of_one_wheel_with_a_script(world: &World, name: &str) -> FileServer {
    WheelBuilder::new(name, "1.0")
        .file(&format!("{name}/__init__.py"), "OK = True\n")
        .raw(
            &format!("{name}.data/scripts/run.sh"),
            b"#!/bin/sh\necho ok\n",
            0o100755,
        )
        .build(&world.wheels());
    let server = FileServer::start(&world.wheels());
    world.write_tiers(&format!("[tiers.t]\nrequirements = [\"{name}\"]\n"));
    lock_served(
        &world.project().join("pylock.t.toml"),
        &world.wheels(),
        &[name],
        &server.url,
    );
    server
}

/// The distinct modes of a store's objects, in order.
fn object_modes(world: &World) -> Vec<u32> {
    let objects = world.store().join("v1/objects");
    let mut modes: Vec<u32> = fs_err::read_dir(&objects)
        .unwrap()
        .flat_map(|shard| fs_err::read_dir(shard.unwrap().path()).unwrap())
        .map(|object| mode_of(&object.unwrap().path()) & 0o777)
        .collect();
    modes.sort_unstable();
    modes.dedup();
    modes
}

/// A default ACL on the store's folders narrows the mode a new file gets,
/// as a umask would, and a first install notices: its objects are still
/// read-only for everyone.
#[test]
fn objects_keep_their_mode_under_a_default_acl() {
    let world = World::new();
    let _server = serve_tier_of_one_wheel_with_a_script(&world, "private");
    let tmp = world.store().join("v1/tmp");
    fs_err::create_dir_all(&tmp).unwrap();
    // Owner only, for everything created under the store's tmp folder.
    let acl = std::process::Command::new("setfacl")
        .args(["-d", "-m", "u::rwx,g::---,o::---"])
        .arg(&tmp)
        .status();
    match acl {
        Ok(status) if status.success() => {}
        other => {
            assert!(
                std::env::var_os("TSTORE_REQUIRE_ACL").is_none(),
                "setfacl failed: {other:?}"
            );
            eprintln!("skipped: setfacl is missing or this filesystem has no ACLs ({other:?})");
            return;
        }
    }
    world.ok(&["materialize", "--frozen", "t"]);
    assert_eq!(object_modes(&world), [0o444, 0o555]);
    let out = verify_exits_zero(&world, "a first install under a default ACL");
    assert!(out.contains("all intact"), "{out}");
}

#[test]
fn concurrent_imports_into_one_new_store_lose_no_object() {
    let (_north, north) = bulky_export("n", "north", 1500);
    let (_south, south) = bulky_export("s", "south", 1500);
    // Both staged (they race for the same empty shards), then a staged
    // import against one that publishes object by object.
    for per_object in [None, Some("1")] {
        let dst = World::new();
        dst.write_tiers(
            "[tiers.n]\nrequirements = [\"north\"]\n[tiers.s]\nrequirements = [\"south\"]\n",
        );
        // Open the store first, so neither import creates it.
        dst.ok(&["verify"]);
        let spawn = |archive: &Path, no_staging: Option<&str>| {
            let mut cmd = dst.tstore(&["import", archive.to_str().unwrap()]);
            if let Some(value) = no_staging {
                cmd.env("TSTORE_NO_STAGING", value);
            }
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let imports = [spawn(&north, None), spawn(&south, per_object)];
        for import in imports {
            let out = import.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = verify_exits_zero(&dst, "two concurrent imports");
        assert!(out.contains("all intact"), "{out}");
        assert!(!out.contains("does not know"), "{out}");
        dst.ok(&["materialize", "--offline", "n", "s"]);
        python_ok(&dst.venv("n"), "import north.mod_1499");
        python_ok(&dst.venv("s"), "import south.mod_1499");
    }
}

/// Several tiers from a remote into a new store: one pull brings every
/// tier's packs before the first tier is built (so all their objects go
/// into staged shards), and each tier still counts what came for it.
#[test]
fn materialize_from_a_remote_pulls_all_tiers_at_once() {
    let holder = scratch_dir();
    let remote = format!("file://{}", holder.path().join("remote").display());
    let mut src = source();
    src.world.ok(&["push", "--remote", &remote]);
    drop(src.server.take());

    let dst = fresh(Some(&src.world));
    let out = dst.ok(&["materialize", "--frozen", "--remote", &remote, "t2", "t1"]);
    // alpha and gamma, a wheel pack and a bytecode pack each.
    assert!(out.contains("t2 + t1: pulled 4/4"), "{out}");
    assert_eq!(out.matches(": pulled ").count(), 1, "one pull: {out}");
    assert!(
        out.contains("(0 downloaded, 1 from the remote store, 0 already in the store)"),
        "t2: alpha: {out}"
    );
    assert!(
        out.contains("(0 downloaded, 1 from the remote store, 1 already in the store)"),
        "t1: gamma came for it, alpha was counted by t2: {out}"
    );
    python_ok(&dst.venv("t1"), "import alpha, gamma");
    let out = dst.ok(&["verify"]);
    assert!(out.contains("all intact"), "{out}");
}

#[test]
fn materialize_from_a_remote_takes_the_pushed_lock_when_none_is_here() {
    let holder = scratch_dir();
    let remote = format!("file://{}", holder.path().join("remote").display());
    let mut src = source();
    src.world.ok(&["push", "--remote", &remote]);
    drop(src.server.take());

    // No lock and no index: only the remote can make t1. (These locks
    // were not made by `tstore lock`, so only --frozen takes them as they
    // are; a lock tstore made is used without it too.)
    let dst = fresh(None);
    let out = dst.ok(&["materialize", "--frozen", "--remote", &remote, "t1"]);
    assert!(
        out.contains("tier `t1` had no lock here: took the one it was pushed with to"),
        "{out}"
    );
    assert_eq!(
        fs_err::read_to_string(dst.project().join("pylock.t1.toml")).unwrap(),
        fs_err::read_to_string(src.world.project().join("pylock.t1.toml")).unwrap()
    );
    python_ok(&dst.venv("t1"), "import alpha, gamma");
    // A lock that is here is kept, and nothing is said.
    let out = dst.ok(&["materialize", "--frozen", "--remote", &remote, "t1"]);
    assert!(!out.contains("had no lock here"), "{out}");
    // --offline asks no remote.
    let other = fresh(None);
    let err = other.fails(&["materialize", "--offline", "--remote", &remote, "t2"]);
    assert!(err.contains("has no lock"), "{err}");
}

//! Crash, disk-full and link-limit safety, each on the real binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::process::{ProcessGroup, processes};
use common::*;

/// A wheel of `files` modules (enough work that a kill lands mid-way).
fn bulky_wheel(dir: &Path, name: &str, files: usize) -> PathBuf {
    let mut builder =
        WheelBuilder::new(name, "1.0").file(&format!("{name}/__init__.py"), "OK = True\n");
    for i in 0..files {
        builder = builder.file(
            &format!("{name}/mod_{i}.py"),
            &format!("# {name} {i}\n{}", "VALUE = 1\n".repeat(50 + i % 200)),
        );
    }
    builder.build(dir)
}

/// A small deterministic random sequence (the seed is printed for reruns).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below.max(1)
    }
}

fn verify_is_clean(world: &World, context: &str) {
    let out = world.run(&["verify"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "verify after {context}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn killing_tstore_at_random_points_never_breaks_the_store_or_the_venv() {
    let world = World::new();
    let wheels = world.wheels();
    let base = bulky_wheel(&wheels, "base", 50);
    let server = FileServer::start(&wheels);
    world.write_tiers("keep-generations = 1\n[tiers.t]\nrequirements = [\"base\"]\n");
    let lock = |extra: Option<&Path>| {
        let mut packages = vec![LockedPackage::served(&base, &server.url)];
        packages.extend(extra.map(|w| LockedPackage::served(w, &server.url)));
        write_pylock(&world.project().join("pylock.t.toml"), &packages);
    };
    lock(None);
    world.ok(&["materialize", "--frozen", "t"]);

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test seed: {seed}");
    let mut random = Lcg(seed);
    let mut kills = 0;
    // How long each command runs when left alone, so kills land throughout.
    let mut longest = [Duration::from_millis(300), Duration::from_millis(100)];
    let mut round = 0;
    while kills < 24 {
        round += 1;
        assert!(
            round < 80,
            "only {kills} kills in {round} rounds (seed {seed})"
        );
        // Each round brings a new wheel: the run downloads, ingests and
        // materializes; every third round collects garbage instead.
        let (args, expect_import): (Vec<&str>, Option<String>) = if round % 3 == 2 {
            (vec!["gc"], None)
        } else {
            let name = format!("extra{round}");
            let wheel = bulky_wheel(&wheels, &name, 300);
            lock(Some(&wheel));
            (vec!["materialize", "--frozen", "t"], Some(name))
        };
        let kind = usize::from(args[0] == "gc");
        let delay = Duration::from_millis(random.next(longest[kind].as_millis() as u64 * 9 / 10));
        let started = Instant::now();
        let mut child = ProcessGroup::spawn(
            "tstore",
            world
                .tstore(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            libc::SIGKILL,
        );
        std::thread::sleep(delay);
        let killed = child.child().try_wait().unwrap().is_none();
        if killed {
            child.signal_leader(libc::SIGKILL);
            kills += 1;
        }
        child.child().wait().unwrap();
        if !killed {
            longest[kind] = longest[kind].max(started.elapsed());
        }
        let context = format!("round {round} ({args:?}, killed after {delay:?}: {killed})");
        // Its children (Python bytecode workers, uv) died with it.
        let left = child.survivors(Duration::from_secs(5));
        assert!(left.is_empty(), "{context}: still running: {left:#?}");
        verify_is_clean(&world, &context);
        // The venv in use works, whichever generation it is.
        python_ok(&world.venv("t"), "import base; assert base.OK");
        // Running again finishes the job.
        world.ok(&args);
        verify_is_clean(&world, &format!("rerun of {context}"));
        if let Some(name) = expect_import {
            python_ok(&world.venv("t"), &format!("import {name}, base"));
        }
    }
}

/// A first install (a new store) writes its objects into a stage and
/// records its wheels only after moving the stage in, while the venv links:
/// a kill while it stages, as it publishes, or while it links before the
/// wheels are recorded leaves a store that verifies, nothing in its tmp
/// once opened again, no venv at the tier's path, and the rerun completes.
#[test]
fn a_first_install_killed_while_staging_publishing_or_recording_leaves_a_sound_store() {
    let world = World::new();
    let wheels = world.wheels();
    let built: Vec<PathBuf> = (0..4)
        .map(|i| bulky_wheel(&wheels, &format!("first{i}"), 600))
        .collect();
    let server = FileServer::start(&wheels);
    let packages: Vec<LockedPackage> = built
        .iter()
        .map(|w| LockedPackage::served(w, &server.url))
        .collect();
    world.write_tiers(
        "[tiers.t]\nrequirements = [\"first0\", \"first1\", \"first2\", \"first3\"]\n",
    );
    write_pylock(&world.project().join("pylock.t.toml"), &packages);
    let tmp = world.store().join("v1/tmp");
    let objects = world.store().join("v1/objects");
    let staging = || staging_objects(&tmp);
    let published = || any_file_under(&objects);
    let generations = world.home().join("venvs/.tstore-generations/t");
    let linking = || {
        std::fs::read_dir(&generations).is_ok_and(|mut entries| {
            entries
                .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with(".staging-")))
        })
    };
    let args = ["materialize", "--frozen", "t"];
    let mut kills = Vec::new();
    for (point, reached, tries) in [
        ("staging", &staging as &dyn Fn() -> bool, 1),
        ("publishing", &published, 1),
        // Linking starts while the wheels are being recorded; a kill there
        // lands before or after their commit: tried until one lands before.
        ("linking", &linking, 5),
    ] {
        for _ in 0..tries {
            // A new machine each time: no store, no venv.
            for dir in [world.store(), world.home().join("venvs")] {
                if dir.exists() {
                    fs_err::remove_dir_all(dir).unwrap();
                }
            }
            let killed = kill_once_reached(&mut world.tstore(&args), reached, point);
            let (recorded, _) = world.store_counts();
            let before_the_commit = killed && recorded == 0 && published();
            if killed {
                kills.push(if before_the_commit {
                    format!("{point}, wheels not recorded")
                } else {
                    point.to_string()
                });
                assert!(
                    !world.venv("t").exists(),
                    "a kill while {point} left a venv"
                );
            }
            verify_is_clean(&world, &format!("a kill while {point}"));
            assert_tmp_cleared(&tmp);
            world.ok(&args);
            verify_is_clean(&world, &format!("the rerun after a kill while {point}"));
            python_ok(
                &world.venv("t"),
                "import first0, first3.mod_599 as m; assert m.VALUE == 1",
            );
            if before_the_commit {
                break;
            }
        }
    }
    eprintln!("killed while: {kills:?}");
    assert!(kills.iter().any(|k| k == "staging"), "killed at: {kills:?}");
    assert!(
        kills.iter().any(|k| k == "linking, wheels not recorded"),
        "never killed while linking before the wheels were recorded: {kills:?}"
    );
}

#[test]
fn a_full_disk_mid_fetch_is_a_clear_error_and_loses_nothing() {
    let Some(fs) = Mount::tmpfs_or_skip("12m") else {
        return;
    };
    let root = fs.path.as_path();
    let world = World::new();
    let wheels = world.wheels();
    let small = WheelBuilder::new("small", "1.0")
        .file("small/__init__.py", "OK = 1\n")
        .build(&wheels);
    // ~16 MiB that does not compress: more than the filesystem holds.
    let noise = incompressible_bytes(88172645463325252u64, 16 << 20);
    let huge = WheelBuilder::new("huge", "1.0")
        .raw("huge/blob.bin", &noise, 0o100644)
        .build(&wheels);
    let server = FileServer::start(&wheels);
    let project = project_at(root, "[tiers.t]\nrequirements = [\"small\"]\n");
    let run = |args: &[&str]| world.run_in(&project, &root.join("store"), args);
    write_pylock(
        &project.join("pylock.t.toml"),
        &[LockedPackage::served(&small, &server.url)],
    );
    assert!(run(&["materialize", "--frozen", "t"]).status.success());

    write_pylock(
        &project.join("pylock.t.toml"),
        &[
            LockedPackage::served(&small, &server.url),
            LockedPackage::served(&huge, &server.url),
        ],
    );
    let out = run(&["materialize", "--frozen", "t"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("No space left on device") && stderr.contains("hint: the disk is full"),
        "{stderr}"
    );
    // No partial downloads or staged objects, the store verifies, the venv works.
    let tmp: Vec<_> = fs_err::read_dir(root.join("store/v1/tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "left in tmp: {tmp:?}");
    let verify = run(&["verify"]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    python_ok(&root.join("venvs/t"), "import small");
}

/// The largest files of a cold install (PyTorch's and CUDA's libraries) are
/// inflated into their staging files through a memory map, and a write
/// into a mapping that meets a full disk kills the process (SIGBUS). Their
/// blocks are reserved first, so a full disk is the same clear error as
/// anywhere else, and once there is room the same wheel installs whole.
#[test]
fn a_large_file_that_does_not_fit_is_a_clear_error_not_a_crash() {
    let Some(fs) = Mount::tmpfs_or_skip("16m") else {
        return;
    };
    let root = fs.path.as_path();
    let world = World::new();
    let wheels = world.wheels();
    // 40 MiB that deflate to a few hundred KiB: the download fits, the
    // inflated file does not.
    let library: Vec<u8> = (0..40u32 << 20).map(|i| (i % 251) as u8).collect();
    let big = WheelBuilder::new("big", "1.0")
        .file("big/__init__.py", "")
        .raw("big/libbig.so", &library, 0o100755)
        .build(&wheels);
    let server = FileServer::start(&wheels);
    let project = project_at(root, "[tiers.t]\nrequirements = [\"big\"]\n");
    let run = |args: &[&str]| world.run_in(&project, &root.join("store"), args);
    write_pylock(
        &project.join("pylock.t.toml"),
        &[LockedPackage::served(&big, &server.url)],
    );
    // Held in memory as it downloads (the lock gives its size), then
    // downloaded into a file, beside a worker that would inflate its
    // library as soon as its bytes are in (its reservation fails too).
    for sizes in ["given", "dropped"] {
        if sizes == "dropped" {
            drop_wheel_sizes(&project.join("pylock.t.toml"));
        }
        let out = run(&["materialize", "--frozen", "t"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code().is_some_and(|code| code != 0),
            "{sizes}: {out:?}"
        );
        assert!(
            stderr.contains("No space left on device") && stderr.contains("hint: the disk is full"),
            "{sizes}: {stderr}"
        );
        let tmp: Vec<_> = fs_err::read_dir(root.join("store/v1/tmp"))
            .unwrap()
            .collect();
        assert!(tmp.is_empty(), "{sizes}: left in tmp: {tmp:?}");
    }

    fs.resize_tmpfs("160m").unwrap();
    let out = run(&["materialize", "--frozen", "t"]);
    assert!(out.status.success(), "{out:?}");
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
}

#[test]
fn an_object_at_the_link_limit_is_renewed_and_linking_continues() {
    let fs = match Mount::image("ext4", "64M", &["-q", "-F"]) {
        Ok(fs) => fs,
        Err(reason) => {
            eprintln!("skipped: cannot mount a loop ext4 here ({reason})");
            return;
        }
    };
    let mountpoint = fs.path.clone();

    let world = World::new();
    let wheel = WheelBuilder::new("pkg", "1.0")
        .file("pkg/__init__.py", "OK = 1\n")
        .build(&world.wheels());
    let server = FileServer::start(&world.wheels());
    let project = project_at(
        &mountpoint,
        "[tiers.a]\nrequirements = [\"pkg\"]\n[tiers.b]\nrequirements = [\"pkg\"]\n",
    );
    for tier in ["a", "b"] {
        write_pylock(
            &project.join(format!("pylock.{tier}.toml")),
            &[LockedPackage::served(&wheel, &server.url)],
        );
    }
    let run = |args: &[&str]| {
        let out = world.run_in(&project, &mountpoint.join("store"), args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["materialize", "--frozen", "a"]);
    let file_a = mountpoint.join("venvs/a/lib/python3.11/site-packages/pkg/__init__.py");
    // Fill the object's links up to ext4's limit of 65,000.
    let hoard = mountpoint.join("hoard");
    fs_err::create_dir(&hoard).unwrap();
    let mut made = 0;
    for i in 0.. {
        match std::fs::hard_link(&file_a, hoard.join(i.to_string())) {
            Ok(()) => made += 1,
            Err(err) if err.raw_os_error() == Some(libc::EMLINK) => break,
            Err(err) => panic!("cannot link: {err}"),
        }
    }
    assert!(made > 60_000, "only {made} links before the limit");

    run(&["materialize", "--frozen", "b"]);
    let file_b = mountpoint.join("venvs/b/lib/python3.11/site-packages/pkg/__init__.py");
    let nlink = |p: &Path| std::os::unix::fs::MetadataExt::nlink(&fs_err::metadata(p).unwrap());
    // b links a fresh object: a new inode with few links, shared by the store.
    assert_ne!(inode_of(&file_a), inode_of(&file_b));
    assert!(nlink(&file_b) == 2, "b's file has {} links", nlink(&file_b));
    python_ok(&mountpoint.join("venvs/b"), "import pkg");
    python_ok(&mountpoint.join("venvs/a"), "import pkg");
    let out = world
        .tstore(&["verify"])
        .current_dir(&project)
        .env("TSTORE_HOME", mountpoint.join("store"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Entries of the store's tmp/ made by process `pid` (`<prefix>-<pid>-…`).
fn temp_entries_of(world: &World, pid: i32) -> Vec<String> {
    let Ok(entries) = fs_err::read_dir(world.store().join("v1/tmp")) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.split('-').nth(1) == Some(pid.to_string().as_str()))
        .collect()
}

/// Waits up to 30 s for `found` to return something.
fn wait_for<T>(what: &str, mut found: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = found() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_interrupted_fetch_removes_its_partial_download_and_exits_128_plus_the_signal() {
    let world = World::new();
    // Incompressible, so the wheel itself is large.
    let noise = incompressible_bytes(0x9e37_79b9_7f4a_7c15_u64, 4 << 20);
    let wheel = WheelBuilder::new("big", "1.0")
        .raw("big/blob.bin", &noise, 0o100644)
        .build(&world.wheels());
    let server = FileServer::start(&world.wheels());
    server
        .bytes_per_second
        .store(256 << 10, std::sync::atomic::Ordering::SeqCst);
    world.write_tiers("[tiers.t]\nrequirements = [\"big\"]\n");
    let lock = world.project().join("pylock.t.toml");
    write_pylock(&lock, &[LockedPackage::served(&wheel, &server.url)]);
    let sized = fs_err::read_to_string(&lock).unwrap();
    // Without a size in the lock, the wheel is downloaded into tmp/; with
    // one, into memory (tmp/ then holds the new store's stage).
    let size = format!("size = {}, ", fs_err::metadata(&wheel).unwrap().len());
    assert!(sized.contains(&size), "{sized}");
    let no_size = sized.replace(&size, "");
    world.ok(&["list"]);
    for (text, signal, code) in [
        (&no_size, libc::SIGINT, 130),
        (&no_size, libc::SIGTERM, 143),
        (&sized, libc::SIGINT, 130),
        (&sized, libc::SIGTERM, 143),
    ] {
        fs_err::write(&lock, text).unwrap();
        let mut tstore = ProcessGroup::spawn(
            "tstore fetch",
            world
                .tstore(&["fetch", "--frozen", "t"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            libc::SIGKILL,
        );
        let pid = tstore.pid();
        let tmp = world.store().join("v1/tmp");
        if text == &no_size {
            // Midway: part of the wheel is on disk.
            wait_for("a partial download", || {
                temp_entries_of(&world, pid).into_iter().find(|name| {
                    fs_err::metadata(tmp.join(name)).is_ok_and(|m| m.is_file() && m.len() > 0)
                })
            });
        } else {
            // The stage is made before downloading; the wheel takes 16 s.
            wait_for("the stage", || temp_entries_of(&world, pid).pop());
            std::thread::sleep(Duration::from_millis(300));
        }
        tstore.signal_leader(signal);
        let status = tstore
            .wait_leader(Duration::from_secs(10))
            .expect("tstore exits when interrupted");
        assert_eq!(status.code(), Some(code), "signal {signal}: {status}");
        let left = temp_entries_of(&world, pid);
        assert!(left.is_empty(), "signal {signal} left in tmp: {left:?}");
    }
    assert_eq!(world.store_counts(), (0, 0), "nothing was recorded");
}

#[test]
fn the_next_run_removes_what_dead_processes_left_in_tmp() {
    let world = World::new();
    world.write_tiers("[tiers.t]\nrequirements = [\"anything\"]\n");
    world.ok(&["list"]);
    let dead = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    };
    let tmp = world.store().join("v1/tmp");
    let alive = std::process::id();
    fs_err::write(tmp.join(format!("download-{dead}-1a2b")), "partial").unwrap();
    fs_err::create_dir_all(tmp.join(format!("build-{dead}-Xy9/dist"))).unwrap();
    fs_err::write(tmp.join(format!("download-{alive}-3c4d")), "in use").unwrap();
    fs_err::write(tmp.join("unnamed"), "not ours to judge").unwrap();

    world.ok(&["list"]);
    let mut left: Vec<String> = fs_err::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [format!("download-{alive}-3c4d"), "unnamed".into()]);
}

#[test]
fn killing_tstore_mid_lock_takes_uv_down_and_its_temp_lock_goes_next_run() {
    let world = World::new();
    WheelBuilder::new("leaf", "1.0")
        .file("leaf/__init__.py", "")
        .build(&world.wheels());
    let offline =
        "no-index = true\nfind-links = [\"../wheels\"]\n[tiers.t]\nrequirements = [\"leaf\"]\n";
    world.write_tiers(offline);
    world.ok(&["lock"]);
    // An index that takes connections and never answers: uv waits on it
    // (for 30 s, uv's default timeout, then it retries).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    world.write_tiers(&format!(
        "index-url = \"http://{}/simple\"\n[tiers.t]\nrequirements = [\"leaf\"]\n",
        silent.local_addr().unwrap()
    ));
    let temp_locks = || -> Vec<String> {
        fs_err::read_dir(world.project())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("pylock.") && name.contains("tstore"))
            .collect()
    };
    let mut tstore = ProcessGroup::spawn(
        "tstore lock",
        world
            .tstore(&["lock"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        libc::SIGKILL,
    );
    let uv = wait_for("uv pip compile", || {
        processes()
            .into_iter()
            .find(|p| p.ppid == tstore.pid() && p.cmdline.contains("pip compile"))
    });
    assert!(!temp_locks().is_empty(), "uv's output is beside the lock");

    tstore.signal_leader(libc::SIGKILL);
    tstore.wait_leader(Duration::from_secs(10)).expect("killed");
    let left = tstore.survivors(Duration::from_secs(5));
    assert!(left.is_empty(), "uv was {uv}; still running: {left:#?}");

    world.write_tiers(offline);
    world.ok(&["lock"]);
    assert_eq!(temp_locks(), Vec::<String>::new());
}

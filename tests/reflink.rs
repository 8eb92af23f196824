//! Reflinks on a real XFS: a loop-mounted image holding both the store and
//! the venvs. Needs root, mkfs.xfs and loop devices; where mounting is not
//! permitted the test says why and skips.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::*;

fn shares_extents(path: &Path) -> bool {
    let out = Command::new("filefrag")
        .arg("-v")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("shared")
}

/// A fresh 320 MiB XFS with reflinks, or `None` (said on stderr) where this
/// machine cannot mount one.
fn xfs() -> Option<Mount> {
    match Mount::image("xfs", "320M", &["-q", "-f", "-m", "reflink=1"]) {
        Ok(mount) => Some(mount),
        Err(reason) => {
            eprintln!("skipped: cannot mount a loop XFS here ({reason})");
            None
        }
    }
}

#[test]
fn reflinked_files_share_extents_not_inodes() {
    let Some(mount) = xfs() else {
        return;
    };
    let root = mount.path.clone();
    let world = World::new();
    let wheel = WheelBuilder::new("pkg", "1.0")
        .file("pkg/__init__.py", &"VALUE = 'reflinked'\n".repeat(400))
        .build(&world.wheels());
    let server = FileServer::start(&world.wheels());
    let project = project_at(
        &root,
        "[tiers.x]\nrequirements = [\"pkg\"]\n[tiers.y]\nrequirements = [\"pkg\"]\n\
         [tiers.z]\nrequirements = [\"pkg\"]\n",
    );
    for tier in ["x", "y", "z"] {
        write_pylock(
            &project.join(format!("pylock.{tier}.toml")),
            &[LockedPackage::served(&wheel, &server.url)],
        );
    }
    let store = root.join("store");
    let out = world.run_in(
        &project,
        &store,
        &[
            "materialize",
            "--frozen",
            "--link-mode",
            "reflink",
            "x",
            "y",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("reflinked"), "{stderr}");

    let file = |tier: &str| {
        root.join("venvs")
            .join(tier)
            .join("lib/python3.11/site-packages/pkg/__init__.py")
    };
    let x = file("x");
    let y = file("y");
    assert_ne!(inode_of(&x), inode_of(&y), "reflinks must not share inodes");
    assert!(
        shares_extents(&x) && shares_extents(&y),
        "files do not share extents"
    );
    // A reflinked file is private: editing it changes no other tier.
    assert_eq!(mode_of(&x), 0o644);
    fs_err::write(&x, "VALUE = 'edited'\n").unwrap();
    assert_eq!(
        python_ok(&root.join("venvs/y"), "import pkg; print(pkg.VALUE)").trim(),
        "reflinked"
    );

    // `auto` hardlinks even where reflinks work: the venv's file is the
    // store's object.
    let out = world.run_in(&project, &store, &["materialize", "--frozen", "z"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("hardlinked"), "{stderr}");
    let z = fs_err::metadata(file("z")).unwrap();
    assert!(z.nlink() >= 2, "auto did not hardlink: nlink {}", z.nlink());
    assert_eq!(
        z.mode() & 0o777,
        0o444,
        "a hardlinked file is the read-only object"
    );
}

/// On XFS, adopt asked to reflink: files keep their inode, mode and time (so the
/// venv's pycs stay valid without rewriting) and share extents.
#[test]
fn adopt_by_reflink_keeps_inodes_modes_and_times() {
    let Some(mount) = xfs() else {
        return;
    };
    let root = mount.path.clone();
    let world = World::new();
    let python = String::from_utf8_lossy(
        &Command::new("uv")
            .args(["python", "find", "3.11"])
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .to_string();
    let venvs: Vec<_> = ["a", "b"].iter().map(|n| root.join(n)).collect();
    for venv in &venvs {
        let made = Command::new(&python)
            .args(["-m", "venv"])
            .arg(venv)
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
    }
    let file = |venv: &Path| venv.join("lib/python3.11/site-packages/pip/__init__.py");
    let meta = |path: &Path| fs_err::metadata(path).unwrap();
    let before: Vec<_> = venvs
        .iter()
        .map(|v| {
            let m = meta(&file(v));
            (m.ino(), m.mode(), m.mtime())
        })
        .collect();
    let out = world
        .tstore(&["adopt", "--link-mode", "reflink"])
        .args(&venvs)
        .env("TSTORE_HOME", root.join("store"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("by reflink"), "{stdout}");
    for (venv, (_, mode, mtime)) in venvs.iter().zip(&before) {
        let m = meta(&file(venv));
        assert_eq!((m.mode(), m.mtime()), (*mode, *mtime), "mode and time kept");
        assert!(shares_extents(&file(venv)), "{}", file(venv).display());
        let trace = Command::new(venv.join("bin/python"))
            .args(["-v", "-c", "import pip"])
            .output()
            .unwrap();
        let trace = String::from_utf8_lossy(&trace.stderr);
        assert!(
            trace.contains(&format!("matches {}", file(venv).display())),
            "{trace}"
        );
    }
    assert_ne!(meta(&file(&venvs[0])).ino(), meta(&file(&venvs[1])).ino());
    let version = Command::new(venvs[1].join("bin/pip"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(version.status.success(), "{version:?}");
}

//! Reflinks on a real XFS: a loop-mounted image holding both the store and
//! the venvs. Needs root, mkfs.xfs and loop devices; where mounting is not
//! permitted the test says why and skips.

mod common;

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

#[test]
fn reflinked_files_share_extents_not_inodes() {
    let mount = match Mount::image("xfs", "320M", &["-q", "-f", "-m", "reflink=1"]) {
        Ok(mount) => mount,
        Err(reason) => {
            eprintln!("skipped: cannot mount a loop XFS here ({reason})");
            return;
        }
    };
    let root = mount.path.clone();
    let world = World::new();
    let wheel = WheelBuilder::new("pkg", "1.0")
        .file("pkg/__init__.py", &"VALUE = 'reflinked'\n".repeat(400))
        .build(&world.wheels());
    let server = FileServer::start(&world.wheels());
    let project = project_at(
        &root,
        "[tiers.x]\nrequirements = [\"pkg\"]\n[tiers.y]\nrequirements = [\"pkg\"]\n",
    );
    for tier in ["x", "y"] {
        write_pylock(
            &project.join(format!("pylock.{tier}.toml")),
            &[LockedPackage::served(&wheel, &server.url)],
        );
    }
    let out = world
        .tstore(&["materialize", "--frozen", "x", "y"])
        .current_dir(&project)
        .env("TSTORE_HOME", root.join("store"))
        .output()
        .unwrap();
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
}

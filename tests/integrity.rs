//! verify and repair.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;

struct Setup {
    world: World,
    _server: FileServer,
}

/// Tiers `a` and `b` share alpha (hardlinked); `c` has it as copies.
fn setup() -> Setup {
    let world = World::new();
    let wheels = world.wheels();
    let alpha = WheelBuilder::new("alpha", "1.0")
        .file("alpha/__init__.py", "from .core import VALUE\n")
        .file("alpha/core.py", "VALUE = 'original'\n")
        .build(&wheels);
    let server = FileServer::start(&wheels);
    world.write_tiers(
        "[tiers.a]\nrequirements = [\"alpha\"]\n[tiers.b]\nrequirements = [\"alpha\"]\n[tiers.c]\nrequirements = [\"alpha\"]\n",
    );
    for tier in ["a", "b", "c"] {
        write_pylock(
            &world.project().join(format!("pylock.{tier}.toml")),
            &[LockedPackage::served(&alpha, &server.url)],
        );
    }
    world.ok(&["materialize", "--frozen", "a", "b"]);
    world.ok(&["materialize", "--frozen", "--link-mode", "copy", "c"]);
    Setup {
        world,
        _server: server,
    }
}

fn core(world: &World, tier: &str) -> PathBuf {
    world
        .venv(tier)
        .join("lib/python3.11/site-packages/alpha/core.py")
}

/// Writes through a read-only file the way root can (others chmod first).
fn overwrite(path: &Path, text: &str) {
    let mode = mode_of(path);
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn value(world: &World, tier: &str) -> String {
    python_ok(&world.venv(tier), "import alpha; print(alpha.VALUE)")
        .trim()
        .to_string()
}

#[test]
fn an_edit_through_a_hardlink_is_found_and_repaired_for_every_tier() {
    let Setup { world, .. } = setup();
    assert_eq!(world.run(&["verify"]).status.code(), Some(0));

    let inode = inode_of(&core(&world, "a"));
    overwrite(&core(&world, "a"), "VALUE = 'tampered'\n");
    // The edit shows in every hardlinked tier: this is what verify must catch.
    assert_eq!(value(&world, "b"), "tampered");

    let out = world.run(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("does not match its hash"), "{text}");
    assert!(text.contains("alpha 1.0 (alpha/core.py)"), "{text}");
    assert!(text.contains("in tiers: a, b"), "{text}");

    let out = world.run(&["verify", "--repair"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("repaired: restored from"), "{text}");
    // Fixed in place: same inode, so both tiers are right again.
    assert_eq!(inode_of(&core(&world, "a")), inode);
    assert_eq!(value(&world, "a"), "original");
    assert_eq!(value(&world, "b"), "original");
    assert_eq!(mode_of(&core(&world, "a")), 0o444);
    assert_eq!(world.run(&["verify"]).status.code(), Some(0));
}

#[test]
fn damaged_tier_files_are_relinked_and_extra_files_left_alone() {
    let Setup { world, .. } = setup();
    fs_err::remove_file(core(&world, "b")).unwrap();
    fs_err::write(core(&world, "c"), "VALUE = 'changed copy'\n").unwrap();
    let stray = world
        .venv("b")
        .join("lib/python3.11/site-packages/stray.py");
    fs_err::write(&stray, "x = 1\n").unwrap();

    let out = world.run(&["verify", "b", "c"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("alpha: lib/python3.11/site-packages/alpha/core.py missing"),
        "{text}"
    );
    assert!(
        text.contains("alpha: lib/python3.11/site-packages/alpha/core.py modified"),
        "{text}"
    );
    assert!(text.contains("stray.py extra"), "{text}");
    // The store itself is intact: a copy's change is private.
    assert!(text.contains("all intact"), "{text}");

    let out = world.run(&["verify", "--repair", "b", "c"]);
    let text = String::from_utf8_lossy(&out.stdout);
    // The stray file is reported, not deleted: problems remain.
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(stray.exists());
    assert_eq!(value(&world, "b"), "original");
    assert_eq!(value(&world, "c"), "original");
    assert_eq!(inode_of(&core(&world, "b")), inode_of(&core(&world, "a")));
    fs_err::remove_file(&stray).unwrap();
    assert_eq!(world.run(&["verify"]).status.code(), Some(0));
}

#[test]
fn edited_packages_are_reported_as_edited_not_corrupt() {
    let Setup { world, .. } = setup();
    world.ok(&["edit", "a", "alpha"]);
    fs_err::write(core(&world, "a"), "VALUE = 'patched'\n").unwrap();
    let out = world.run(&["verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("edited (private copies, see `tstore edit`): alpha"),
        "{text}"
    );
    assert_eq!(value(&world, "b"), "original");
}

#[test]
fn a_symlink_planted_in_site_packages_is_extra() {
    let Setup { world, .. } = setup();
    let link = world
        .venv("a")
        .join("lib/python3.11/site-packages/planted.py");
    std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
    let out = world.run(&["verify", "a"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("planted.py extra"), "{text}");
}

#[test]
fn a_lost_object_is_relinked_from_the_inode_the_tiers_share() {
    let Setup { world, .. } = setup();
    let shared = inode_of(&core(&world, "a"));
    let object = fs_err::read_dir(world.store().join("v1/objects"))
        .unwrap()
        .flat_map(|shard| fs_err::read_dir(shard.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .find(|p| inode_of(p) == shared)
        .expect("core.py's object");
    fs_err::remove_file(&object).unwrap();

    let out = world.run(&["verify", "--repair"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("relinked from"), "{text}");
    // One inode again for the object and both hardlinked tiers: no second copy.
    assert_eq!(inode_of(&object), shared);
    assert_eq!(inode_of(&core(&world, "b")), shared);
    assert_eq!(mode_of(&object), 0o444);
    // Store, a and b: three names, one inode, so du sees no growth.
    assert_eq!(
        std::os::unix::fs::MetadataExt::nlink(&fs_err::metadata(&object).unwrap()),
        3
    );
    assert_eq!(value(&world, "a"), "original");
    assert_eq!(world.run(&["verify"]).status.code(), Some(0));
}

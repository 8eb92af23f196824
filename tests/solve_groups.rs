//! Solve groups with real uv, offline: one tier that conflicts with the rest
//! is split off, and the rest keep sharing versions (and inodes).

mod common;

use common::*;

fn build_wheels(world: &World) {
    let dir = world.wheels();
    for version in ["11.0", "12.0"] {
        WheelBuilder::new("websockets", version)
            .file(
                "websockets/__init__.py",
                &format!("VERSION = '{version}'\n"),
            )
            .build(&dir);
    }
    WheelBuilder::new("shared-dep", "1.0")
        .file("shared_dep/__init__.py", "import websockets\n")
        .requires("websockets>=12")
        .build(&dir);
    for name in ["one", "two", "three", "four"] {
        WheelBuilder::new(name, "1.0")
            .file(&format!("{name}/__init__.py"), "")
            .build(&dir);
    }
}

const FOUR_AND_AN_OUTLIER: &str = "no-index = true\nfind-links = [\"../wheels\"]\n\n\
    [tiers.t1]\nrequirements = [\"shared-dep\", \"one\"]\n\
    [tiers.t2]\nrequirements = [\"shared-dep\", \"two\"]\n\
    [tiers.t3]\nrequirements = [\"shared-dep\", \"three\"]\n\
    [tiers.t4]\nrequirements = [\"shared-dep\", \"four\"]\n\
    [tiers.legacy]\nrequirements = [\"websockets<12; python_version < '3.12'\", \
    \"websockets>=12; python_version >= '3.12'\"]\n";

fn file_in(world: &World, tier: &str, path: &str) -> std::path::PathBuf {
    world
        .venv(tier)
        .join("lib/python3.11/site-packages")
        .join(path)
}

#[test]
fn one_conflicting_tier_is_split_off_and_the_rest_stay_aligned() {
    let world = World::new();
    build_wheels(&world);
    world.write_tiers(FOUR_AND_AN_OUTLIER);
    let out = world.ok(&["lock"]);
    assert!(out.contains("split off `legacy`"), "{out}");
    assert!(
        out.contains("the other 4 tier(s) still share versions"),
        "{out}"
    );
    assert!(out.contains("solve-group = false"), "{out}");
    assert!(out.contains("resolving 5 tiers together"), "{out}");
    for tier in ["t1", "t2", "t3", "t4"] {
        assert!(
            out.contains(&format!("{tier}: locked (versions shared")),
            "{out}"
        );
        assert_eq!(locked_version(&world, tier, "websockets"), "12.0");
    }
    assert!(out.contains("legacy: locked on its own"), "{out}");
    // One line per package, and a tier is named only under the version its
    // interpreter installs (the lock also has 12.0 for Python >= 3.12).
    assert!(
        out.contains("  websockets: 11.0 in legacy; 12.0 in t1, t2, t3, t4"),
        "{out}"
    );

    world.ok(&["materialize", "t1", "t2", "t3", "t4", "legacy"]);
    let shared = inode_of(&file_in(&world, "t1", "websockets/__init__.py"));
    for tier in ["t2", "t3", "t4"] {
        assert_eq!(
            inode_of(&file_in(&world, tier, "websockets/__init__.py")),
            shared
        );
    }
    assert_ne!(
        inode_of(&file_in(&world, "legacy", "websockets/__init__.py")),
        shared
    );
    let version = python_ok(
        &world.venv("legacy"),
        "import websockets; print(websockets.VERSION)",
    );
    assert_eq!(version.trim(), "11.0");

    // The same, said in tiers.toml: no conflict to report, same result.
    world.write_tiers(
        &FOUR_AND_AN_OUTLIER.replace("[tiers.legacy]\n", "[tiers.legacy]\nsolve-group = false\n"),
    );
    let out = world.ok(&["lock"]);
    assert!(!out.contains("split off"), "{out}");
    assert!(out.contains("t1: locked (versions shared"), "{out}");
    assert_eq!(locked_version(&world, "legacy", "websockets"), "11.0");
    assert_eq!(locked_version(&world, "t4", "websockets"), "12.0");

    let json: serde_json::Value = serde_json::from_str(&world.ok(&["lock", "--json"])).unwrap();
    assert_eq!(json["tiers"].as_array().map(Vec::len), Some(5), "{json}");
}

#[test]
fn named_groups_resolve_apart() {
    let world = World::new();
    build_wheels(&world);
    world.write_tiers(
        "no-index = true\nfind-links = [\"../wheels\"]\n\n\
         [tiers.new]\nrequirements = [\"shared-dep\"]\nsolve-group = \"web\"\n\
         [tiers.new2]\nrequirements = [\"websockets\"]\nsolve-group = \"web\"\n\
         [tiers.old]\nrequirements = [\"websockets<12\"]\nsolve-group = \"legacy\"\n\
         [tiers.old2]\nrequirements = [\"websockets\"]\nsolve-group = \"legacy\"\n",
    );
    let out = world.ok(&["lock"]);
    assert!(!out.contains("split off"), "{out}");
    // What old2 gets, and why.
    assert!(
        out.contains("  + websockets 11.0 (pinned by tier old)"),
        "{out}"
    );
    assert_eq!(locked_version(&world, "new2", "websockets"), "12.0");
    // Aligned with `old`, not with the newest release.
    assert_eq!(locked_version(&world, "old2", "websockets"), "11.0");
}

//! End to end against real PyPI with real uv: a handful of small packages,
//! one with a C extension, one published only as an sdist.

mod common;

use common::*;

#[test]
fn small_tiers_from_pypi_import_and_share() {
    let world = World::new();
    world.write_tiers(
        r#"
python = "3.11"
index-url = "https://pypi.org/simple"

[sets.base]
requirements = ["six==1.17.0", "idna>=3"]

[tiers.web]
sets = ["base"]
requirements = ["markupsafe>=2.1"]     # ships a C extension

[tiers.legacy]
sets = ["base"]
requirements = ["uuid==1.30"]          # only an sdist on PyPI
"#,
    );
    let out = world.ok(&["materialize", "web", "legacy"]);
    assert!(out.contains("web: ") && out.contains("legacy: "), "{out}");

    let web = world.venv("web");
    // The compiled speedups module is the one imported.
    let printed = python_ok(
        &web,
        "import markupsafe, six, idna; from markupsafe import _speedups; print(_speedups.__file__.endswith('.so'))",
    );
    assert_eq!(printed.trim(), "True");
    let legacy = world.venv("legacy");
    python_ok(&legacy, "import uuid, six; print(uuid.__file__)");

    // The lock is universal: it lists wheels for other platforms too.
    let lock = fs_err::read_to_string(world.project().join("pylock.web.toml")).unwrap();
    assert!(
        lock.contains("macosx") && lock.contains("win_amd64"),
        "lock is not universal"
    );

    // six is the same file in both tiers.
    let six = |v: &std::path::Path| inode_of(&v.join("lib/python3.11/site-packages/six.py"));
    assert_eq!(six(&web), six(&legacy));

    // A second run downloads and builds nothing.
    let counts = world.store_counts();
    fs_err::remove_dir_all(&legacy).unwrap();
    let out = world.ok(&["materialize", "legacy"]);
    assert!(out.contains("0 downloaded"), "{out}");
    assert_eq!(world.store_counts(), counts);

    assert_uv_pip_check(&web);
}

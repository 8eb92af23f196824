//! `tstore check`: the modules it imports are the ones Python can import
//! from each wheel's files, and every failure it reports is one the same
//! import in a fresh interpreter of the venv produces too.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;

/// Module → distributions, from `check --json`'s `checked`.
fn checked(json: &serde_json::Value) -> BTreeMap<String, Vec<String>> {
    json["checked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let dists = m["distributions"].as_array().unwrap();
            (
                m["module"].as_str().unwrap().to_string(),
                dists
                    .iter()
                    .map(|d| d.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

/// Module → (distribution, "Type: message", undeclared dependency) of each
/// failure in `check --json`.
fn failures(json: &serde_json::Value) -> Vec<(String, String, String, Option<String>)> {
    json["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["module"].as_str().unwrap().to_string(),
                f["distribution"].as_str().unwrap().to_string(),
                format!(
                    "{}: {}",
                    f["error_type"].as_str().unwrap_or("-"),
                    f["message"].as_str().unwrap()
                ),
                f["undeclared_dependency"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// Checks each module `check` imported against `python -c "import M"` in
/// the venv, from a neutral directory: a module fails in one exactly when it
/// fails in the other, with the same exception line.
fn assert_same_as_python(venv: &Path, json: &serde_json::Value) {
    let failed: BTreeMap<String, String> = failures(json)
        .into_iter()
        .map(|(module, _, error, _)| (module, error))
        .collect();
    let neutral = scratch_dir();
    for module in checked(json).keys() {
        let out = std::process::Command::new(venv.join("bin/python"))
            .args(["-c", &format!("import {module}")])
            .current_dir(neutral.path())
            .env_remove("PYTHONPATH")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        match failed.get(module) {
            None => assert!(
                out.status.success(),
                "check imported `{module}` but python fails: {stderr}"
            ),
            Some(error) => {
                assert!(
                    !out.status.success(),
                    "check reports `{module}` ({error}) but python imports it"
                );
                let last = stderr.lines().last().unwrap_or_default();
                assert_eq!(last, error, "{module}");
            }
        }
    }
}

#[test]
fn check_imports_each_layout_as_python_does() {
    let world = World::new();
    let wheels = world.wheels();
    // auditwheel's vendored libraries beside the package, under the
    // distribution's name (faiss-cpu: `faiss/`, `faiss_cpu.libs/`).
    WheelBuilder::new("vendored_cpu", "1.0")
        .file("vendored/__init__.py", "")
        .raw(
            "vendored_cpu.libs/libgomp-a34b3233.so.1.0.0",
            b"\x7fELF",
            0o100755,
        )
        .raw("vendored_cpu.libs/libblas.so", b"\x7fELF", 0o100755)
        .build(&wheels);
    // A stub-only package (PEP 561) for `vendored`.
    WheelBuilder::new("types_vendored", "1.0")
        .file("vendored-stubs/__init__.pyi", "X: int\n")
        .file("vendored-stubs/sub.pyi", "")
        .build(&wheels);
    // A namespace package split across two distributions.
    WheelBuilder::new("nsp_one", "1.0")
        .file("nsp/one/__init__.py", "")
        .build(&wheels);
    WheelBuilder::new("nsp_two", "1.0")
        .file("nsp/two.py", "")
        .build(&wheels);
    // An extension module by name (not a loadable one: Python fails on it
    // too), a plain shared library and a bytecode cache at the top.
    WheelBuilder::new("fastext", "1.0")
        .file("fastext/__init__.py", "")
        .raw(
            "_fastext.cpython-311-x86_64-linux-gnu.so",
            b"not an ELF file",
            0o100755,
        )
        .raw("libhelper.so.1", b"\x7fELF", 0o100755)
        .raw("__pycache__/stray.cpython-311.pyc", b"junk", 0o100644)
        .build(&wheels);
    // Names that are not identifiers, a .pth file, a data-only folder, a
    // package installed from .data/purelib, and a top_level.txt that names
    // what is not there (and has a line that is not UTF-8).
    WheelBuilder::new("odd", "1.0")
        .file("odd/__init__.py", "")
        .file("odd-tools/run.py", "raise SystemExit('not importable')\n")
        .file("2fast/__init__.py", "raise SystemExit('not importable')\n")
        .file("odd.compat.py", "raise SystemExit('not importable')\n")
        .file("odd_paths.pth", "does-not-exist\n")
        .file("odd_docs/index.txt", "docs\n")
        .file("odd-1.0.data/purelib/oddpure/__init__.py", "")
        .raw(
            "odd-1.0.dist-info/top_level.txt",
            b"odd\nghost\nodd_docs\n\xff\xfe not UTF-8\n",
            0o100644,
        )
        .build(&wheels);
    // Failures: a dependency no package of the tier provides, a missing
    // submodule of one the tier has, and a package two distributions ship.
    WheelBuilder::new("inline_plot", "1.0")
        .file("inline_plot/__init__.py", "import plotlib.backend\n")
        .build(&wheels);
    WheelBuilder::new("usesub", "1.0")
        .file("usesub/__init__.py", "import vendored.missing\n")
        .build(&wheels);
    WheelBuilder::new("clash_a", "1.0")
        .file("clash/__init__.py", "raise RuntimeError('clash: broken')\n")
        .build(&wheels);
    WheelBuilder::new("clash_b", "1.0")
        .file("clash/__init__.py", "raise RuntimeError('clash: broken')\n")
        .build(&wheels);
    let names = [
        "vendored_cpu",
        "types_vendored",
        "nsp_one",
        "nsp_two",
        "fastext",
        "odd",
        "inline_plot",
        "usesub",
        "clash_a",
        "clash_b",
    ];
    let server = FileServer::start(&wheels);
    let requirements: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    world.write_tiers(&format!(
        "[tiers.t]\nrequirements = [{}]\n",
        requirements.join(", ")
    ));
    lock_served(
        &world.project().join("pylock.t.toml"),
        &wheels,
        &names,
        &server.url,
    );
    world.ok(&["materialize", "--frozen", "t"]);
    // A module in the current directory does not shadow the venv's.
    fs_err::write(
        world.project().join("vendored.py"),
        "raise ImportError('shadowed by the current directory')\n",
    )
    .unwrap();

    let out = world.run(&["check", "t", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let expected: BTreeMap<String, Vec<String>> = [
        ("_fastext", list(&["fastext"])),
        ("clash", list(&["clash-a", "clash-b"])),
        ("fastext", list(&["fastext"])),
        ("inline_plot", list(&["inline-plot"])),
        ("nsp", list(&["nsp-one", "nsp-two"])),
        ("odd", list(&["odd"])),
        ("odd_docs", list(&["odd"])),
        ("oddpure", list(&["odd"])),
        ("usesub", list(&["usesub"])),
        ("vendored", list(&["vendored-cpu"])),
    ]
    .into_iter()
    .map(|(m, d)| (m.to_string(), d))
    .collect();
    assert_eq!(checked(&json), expected);
    assert_eq!(json["modules"], 10);
    assert_eq!(json["failed_modules"], 4);
    assert_eq!(json["distributions"], 10);

    let failures = failures(&json);
    let row = |module: &str, dist: &str, error: &str, undeclared: Option<&str>| {
        (
            module.to_string(),
            dist.to_string(),
            error.to_string(),
            undeclared.map(str::to_string),
        )
    };
    let fastext = &failures
        .iter()
        .find(|f| f.0 == "_fastext")
        .expect("_fastext fails")
        .2;
    assert!(fastext.starts_with("ImportError: "), "{fastext}");
    assert_eq!(
        failures,
        [
            row("clash", "clash-a", "RuntimeError: clash: broken", None),
            row("clash", "clash-b", "RuntimeError: clash: broken", None),
            row("_fastext", "fastext", fastext, None),
            row(
                "inline_plot",
                "inline-plot",
                "ModuleNotFoundError: No module named 'plotlib'",
                Some("plotlib")
            ),
            row(
                "usesub",
                "usesub",
                "ModuleNotFoundError: No module named 'vendored.missing'",
                None
            ),
        ]
    );
    assert_same_as_python(&world.venv("t"), &json);

    let out = world.run(&["check", "t"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "FAIL inline_plot (inline-plot): ModuleNotFoundError: No module named 'plotlib' \
             (undeclared dependency: no package of the tier provides `plotlib`)"
        ),
        "{text}"
    );
    assert!(
        text.contains("FAIL clash (clash-a): RuntimeError: clash: broken")
            && text.contains("FAIL clash (clash-b): RuntimeError: clash: broken"),
        "{text}"
    );
    assert!(
        text.contains("t: 6 of 10 modules from 10 packages imported"),
        "{text}"
    );
}

/// Real wheels of each shape from PyPI (about 2 MB): pyzmq's `pyzmq.libs`,
/// types-six's `six-stubs`, the `jaraco` namespace of jaraco.functools and
/// jaraco.classes, cffi's top-level extension module, and
/// matplotlib-inline, which imports matplotlib without declaring it.
#[test]
fn check_on_real_wheels_reports_only_real_failures() {
    let world = World::new();
    world.write_tiers(
        r#"
python = "3.11"
index-url = "https://pypi.org/simple"

[tiers.shapes]
requirements = [
    "pyzmq==26.4.0",
    "types-six==1.17.0.20261008",
    "six==1.17.0",
    "jaraco.functools==4.6.0",
    "jaraco.classes==3.4.0",
    "cffi==1.17.1",
    "matplotlib-inline==0.2.2",
]
"#,
    );
    world.ok(&["materialize", "shapes"]);
    let site = world.venv("shapes").join("lib/python3.11/site-packages");
    for shape in [
        "pyzmq.libs",
        "six-stubs",
        "jaraco/functools",
        "jaraco/classes",
    ] {
        assert!(
            site.join(shape).is_dir(),
            "no {shape} in {}",
            site.display()
        );
    }
    assert!(
        fs_err::read_dir(&site).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("_cffi_backend.cpython-")),
        "no extension module at the top of {}",
        site.display()
    );
    let out = world.run(&["check", "shapes", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checked = checked(&json);
    for name in checked.keys() {
        assert!(
            !name.contains("libs") && !name.contains("stubs") && name != "pyzmq",
            "{name} is not a module: {checked:?}"
        );
    }
    assert_eq!(checked["zmq"], ["pyzmq"]);
    assert_eq!(checked["_cffi_backend"], ["cffi"]);
    assert_eq!(checked["jaraco"], ["jaraco-classes", "jaraco-functools"]);
    assert_eq!(checked["six"], ["six"]);
    assert_eq!(
        failures(&json),
        [(
            "matplotlib_inline".to_string(),
            "matplotlib-inline".to_string(),
            "ModuleNotFoundError: No module named 'matplotlib'".to_string(),
            Some("matplotlib".to_string())
        )]
    );
    assert_same_as_python(&world.venv("shapes"), &json);
}

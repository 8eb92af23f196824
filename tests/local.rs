//! Local projects (editable and built) and requirement files as Tekton keeps
//! them, locked and built by real uv, offline: the projects carry their own
//! small PEP 517 backend (`backend-path`), and their index dependencies
//! come from wheels built by the test through `find-links`.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A PEP 517 backend in 40 lines: builds a pure-Python wheel from
/// `[project]` (name, version, dependencies, scripts) and the package found
/// in `src/` or the project root.
const BACKEND: &str = r#"
import base64, hashlib, os, zipfile, tomllib

def _project():
    with open("pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    p = _project()
    name = p["name"].replace("-", "_")
    version = p["version"]
    dist_info = f"{name}-{version}.dist-info"
    base = "src" if os.path.isdir("src") else "."
    files = {}
    for root, _, names in os.walk(os.path.join(base, name)):
        for n in names:
            if not n.endswith(".pyc"):
                full = os.path.join(root, n)
                with open(full, "rb") as f:
                    files[os.path.relpath(full, base)] = f.read()
    meta = f"Metadata-Version: 2.1\nName: {p['name']}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {d}\n" for d in p.get("dependencies", []))
    files[f"{dist_info}/METADATA"] = meta.encode()
    files[f"{dist_info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    if p.get("scripts"):
        ep = "[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in p["scripts"].items())
        files[f"{dist_info}/entry_points.txt"] = ep.encode()
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    filename = f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as z:
        for path, data in sorted(files.items()):
            z.writestr(path, data)
    return filename
"#;

/// Writes a project `dir` named `name` with `dependencies`, its package in
/// `src/` when `src_layout`, and an optional console script.
fn write_project(
    dir: &Path,
    name: &str,
    dependencies: &[&str],
    src_layout: bool,
    script: Option<(&str, &str)>,
    code: &str,
) {
    let package = if src_layout {
        dir.join("src").join(name)
    } else {
        dir.join(name)
    };
    fs_err::create_dir_all(&package).unwrap();
    fs_err::create_dir_all(dir.join("_backend")).unwrap();
    fs_err::write(dir.join("_backend/inline_backend.py"), BACKEND).unwrap();
    let deps: Vec<String> = dependencies.iter().map(|d| format!("\"{d}\"")).collect();
    let scripts = script
        .map(|(n, target)| format!("[project.scripts]\n{n} = \"{target}\"\n"))
        .unwrap_or_default();
    fs_err::write(
        dir.join("pyproject.toml"),
        format!(
            "[build-system]\nrequires = []\nbuild-backend = \"inline_backend\"\n\
             backend-path = [\"_backend\"]\n\n[project]\nname = \"{name}\"\nversion = \"0.1\"\n\
             dependencies = [{}]\n{scripts}",
            deps.join(", ")
        ),
    )
    .unwrap();
    fs_err::write(package.join("__init__.py"), code).unwrap();
}

struct Setup {
    world: World,
    alpha: PathBuf,
}

/// `libs/alpha` (src layout, script `alpha-hello`, depends on beta) and
/// `libs/beta` (flat layout, depends on `shared` from the wheels folder).
fn setup(tiers: &str) -> Setup {
    let world = World::new();
    WheelBuilder::new("shared", "1.0")
        .file("shared/__init__.py", "VERSION = '1.0'\n")
        .build(&world.wheels());
    WheelBuilder::new("other", "1.0")
        .file("other/__init__.py", "NAME = 'other'\n")
        .build(&world.wheels());
    let libs = world.project().join("libs");
    let alpha = libs.join("alpha");
    write_project(
        &alpha,
        "alpha",
        &["beta"],
        true,
        Some(("alpha-hello", "alpha:hello")),
        "import beta\ndef hello():\n    print('hello v1', beta.SHARED)\n",
    );
    write_project(
        &libs.join("beta"),
        "beta",
        &["shared"],
        false,
        None,
        "import shared\nSHARED = shared.VERSION\n",
    );
    world.write_tiers(&format!(
        "no-index = true\nfind-links = [\"../wheels\"]\n{tiers}"
    ));
    Setup { world, alpha }
}

fn edit_alpha(alpha: &Path, text: &str) {
    fs_err::write(
        alpha.join("src/alpha/__init__.py"),
        format!("import beta\ndef hello():\n    print('{text}', beta.SHARED)\n"),
    )
    .unwrap();
}

fn hello(venv: &Path) -> String {
    let out = std::process::Command::new(venv.join("bin/alpha-hello"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn editable_projects_follow_their_source_and_built_ones_rebuild_on_change() {
    let s = setup(
        "[tiers.dev]\nrequirements = [\"./libs/alpha\", \"-e ./libs/beta\"]\n\
         [tiers.prod]\nrequirements = [{ path = \"./libs/alpha\", editable = false }, \
         { path = \"libs/beta\", editable = false }]\n",
    );
    let w = &s.world;
    let out = w.ok(&["materialize", "dev", "prod"]);
    assert!(out.contains("dev: 3 packages"), "{out}");
    // The lock names the folders relative to itself, so the checkout can move.
    let lock = fs_err::read_to_string(w.project().join("pylock.dev.toml")).unwrap();
    assert!(
        lock.contains("path = \"libs/alpha\", editable = true"),
        "{lock}"
    );
    let (dev, prod) = (w.venv("dev"), w.venv("prod"));

    // Editable: modules import from the source folder; metadata says so (PEP 610).
    let where_from = python_ok(
        &dev,
        "import alpha, beta, json, importlib.metadata as m\n\
         print(alpha.__file__)\nprint(beta.__file__)\n\
         print(json.loads(m.distribution('alpha').read_text('direct_url.json'))['dir_info'])\n\
         print(m.version('alpha'), m.distribution('alpha').read_text('REQUESTED') is not None)",
    );
    let lines: Vec<&str> = where_from.lines().collect();
    assert_eq!(
        lines[0],
        s.alpha.join("src/alpha/__init__.py").display().to_string()
    );
    assert!(
        lines[1].ends_with("libs/beta/beta/__init__.py"),
        "{where_from}"
    );
    assert_eq!(lines[2], "{'editable': True}");
    assert_eq!(lines[3], "0.1 True");
    assert_uv_pip_check(&dev);
    // Built: modules live in site-packages.
    let built = python_ok(&prod, "import alpha; print(alpha.__file__)");
    assert!(built.contains("site-packages/alpha/__init__.py"), "{built}");
    assert_eq!(hello(&dev), "hello v1 1.0");
    assert_eq!(hello(&prod), "hello v1 1.0");

    // An edit shows at once in the editable tier; the built one rebuilds.
    edit_alpha(&s.alpha, "hello v2");
    assert_eq!(hello(&dev), "hello v2 1.0");
    assert_eq!(hello(&prod), "hello v1 1.0");
    let out = w.ok(&["materialize", "dev", "prod"]);
    assert!(out.contains("dev: up to date"), "{out}");
    assert!(out.contains("prod: 3 packages"), "{out}");
    assert_eq!(hello(&prod), "hello v2 1.0");
    let out = w.ok(&["materialize", "prod"]);
    assert!(out.contains("prod: up to date"), "{out}");
    // Bytecode caches in the source folder are not source.
    fs_err::create_dir_all(s.alpha.join("src/alpha/__pycache__")).unwrap();
    fs_err::write(
        s.alpha
            .join("src/alpha/__pycache__/__init__.cpython-311.pyc"),
        "cache",
    )
    .unwrap();
    let out = w.ok(&["materialize", "prod"]);
    assert!(out.contains("prod: up to date"), "{out}");

    let out = w.ok(&["verify"]);
    assert!(
        out.contains("all intact")
            && out.contains("dev (generation 1):")
            && out.contains("files, ok"),
        "{out}"
    );
    assert!(out.contains("prod (generation 2):"), "{out}");
}

#[test]
fn a_new_dependency_of_a_local_project_makes_the_lock_stale() {
    let s = setup("[tiers.dev]\nrequirements = [\"./libs/alpha\", \"./libs/beta\"]\n");
    let w = &s.world;
    w.ok(&["materialize", "dev"]);
    assert!(!python(&w.venv("dev"), "import other").status.success());

    // A code edit does not touch the lock ...
    edit_alpha(&s.alpha, "edited");
    let listing = w.ok(&["list"]);
    assert!(listing.contains("dev            3.11    yes"), "{listing}");
    // ... a metadata edit does.
    let pyproject = s.alpha.join("pyproject.toml");
    let text = fs_err::read_to_string(&pyproject).unwrap();
    fs_err::write(
        &pyproject,
        text.replace(
            "dependencies = [\"beta\"]",
            "dependencies = [\"beta\", \"other\"]",
        ),
    )
    .unwrap();
    let listing = w.ok(&["list"]);
    assert!(
        listing.contains("dev            3.11    stale"),
        "{listing}"
    );
    w.ok(&["materialize", "dev"]);
    python_ok(&w.venv("dev"), "import other, alpha");
}

#[test]
fn requirement_files_with_includes_local_projects_and_index_lines() {
    let s = setup("");
    let w = &s.world;
    let reqs = w.project().join("requirements");
    fs_err::create_dir_all(&reqs).unwrap();
    fs_err::write(reqs.join("base.txt"), "shared>=1.0  # every component\n").unwrap();
    fs_err::write(
        reqs.join("web.txt"),
        "-r base.txt\n-e ../libs/beta\n\
         other ; python_version >= \"3.8\"\n",
    )
    .unwrap();
    // tiers.toml has no find-links here: the file's line must reach uv.
    w.write_tiers(
        "no-index = true\n[sets.web]\nfile = \"requirements/web.txt\"\n\
         [tiers.web]\nsets = [\"web\"]\n",
    );
    fs_err::write(
        reqs.join("index.txt"),
        format!("--find-links {}\n", w.wheels().display()),
    )
    .unwrap();
    let err = w.fails(&["lock"]);
    assert!(
        err.contains("No solution found"),
        "without the find-links line: {err}"
    );
    fs_err::write(
        reqs.join("web.txt"),
        "-r base.txt\n-r index.txt\n-e ../libs/beta\nother ; python_version >= \"3.8\"\n",
    )
    .unwrap();
    w.ok(&["materialize", "web"]);
    python_ok(&w.venv("web"), "import beta, other, shared");

    // A change in an included file makes the lock stale.
    let listing = w.ok(&["list"]);
    assert!(listing.contains("web            3.11    yes"), "{listing}");
    fs_err::write(reqs.join("base.txt"), "shared>=1.0\nother\n").unwrap();
    let listing = w.ok(&["list"]);
    assert!(
        listing.contains("web            3.11    stale"),
        "{listing}"
    );

    // Options tstore cannot honour are named with their line.
    fs_err::write(reqs.join("base.txt"), "shared\n--pre\n").unwrap();
    let err = w.fails(&["lock"]);
    assert!(err.contains("base.txt:2") && err.contains("--pre"), "{err}");
}

#[test]
fn a_missing_project_folder_is_named() {
    let s = setup("[tiers.dev]\nrequirements = [\"./libs/gone\"]\n");
    let err = s.world.fails(&["lock"]);
    assert!(
        err.contains("tiers.toml:4:") && err.contains("libs/gone is not a Python project folder"),
        "{err}"
    );
}

//! `tstore run`, `which`, `env` and the component map: Tekton's launcher
//! integration.

mod common;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use common::*;

struct Project {
    world: World,
    _server: FileServer,
}

/// Tier `core` runs components Hermes and Apollo and holds `alpha`.
fn project() -> Project {
    let world = World::new();
    WheelBuilder::new("alpha", "1.0")
        .console_script("alpha-hello", "alpha:hello")
        .file(
            "alpha/__init__.py",
            "VALUE = 'alpha'\ndef hello():\n    print('hello from alpha')\n",
        )
        .build(&world.wheels());
    let server = FileServer::start(&world.wheels());
    world.write_tiers(
        "[tiers.core]\nrequirements = [\"alpha\"]\ncomponents = [\"Hermes\", \"apollo\"]\n\
         [tiers.other]\nrequirements = [\"alpha\"]\n",
    );
    for tier in ["core", "other"] {
        lock_served(
            &world.project().join(format!("pylock.{tier}.toml")),
            &world.wheels(),
            &["alpha"],
            &server.url,
        );
    }
    Project {
        world,
        _server: server,
    }
}

#[test]
fn run_builds_the_tier_then_becomes_the_command() {
    let p = project();
    let w = &p.world;
    let venv = w.venv("core");
    let code = "import alpha, os, sys; print(alpha.VALUE, os.environ['VIRTUAL_ENV'], sys.prefix, \
                'PYTHONHOME' in os.environ); sys.exit(7)";
    let out = w
        .tstore(&["run", "--frozen", "hermes", "--", "python", "-c", code])
        .env("PYTHONHOME", "/nonexistent")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    // stdout is the command's alone; the venv prefix resolves to the current generation.
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(fields[0], "alpha", "{stdout}");
    assert_eq!(fields[1], venv.display().to_string());
    assert_eq!(
        fs_err::canonicalize(fields[2]).unwrap(),
        fs_err::canonicalize(&venv).unwrap()
    );
    assert_eq!(fields[3], "False", "PYTHONHOME must be unset");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("core:"),
        "materialize reported on stderr: {out:?}"
    );

    // Now up to date: nothing on stderr; stdin passes through; console scripts are on PATH.
    let mut child = w
        .tstore(&[
            "run",
            "--frozen",
            "core",
            "python",
            "-c",
            "import sys; print(sys.stdin.read().upper())",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"piped in").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "PIPED IN");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let hello = w.ok(&["run", "--no-sync", "apollo", "--", "alpha-hello"]);
    assert_eq!(hello.trim(), "hello from alpha");

    // A signal that kills the command is seen by whoever started tstore.
    let out = w
        .tstore(&[
            "run",
            "--no-sync",
            "core",
            "--",
            "python",
            "-c",
            "import os, signal; os.kill(os.getpid(), signal.SIGTERM)",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(15), "{out:?}");
}

#[test]
fn run_refuses_what_it_cannot_do_and_says_why() {
    let p = project();
    let w = &p.world;
    let err = w.fails(&["run", "--frozen", "hermse", "--", "python"]);
    assert!(err.contains("did you mean `hermes`"), "{err}");
    assert!(err.contains("apollo, hermes"), "{err}");

    let err = w.fails(&["run", "--no-sync", "other", "--", "python", "-V"]);
    assert!(
        err.contains("tier `other` has no venv") && err.contains("tstore materialize other"),
        "{err}"
    );
    assert!(!w.venv("other").exists());

    let err = w.fails(&["run", "--frozen", "other", "--", "no-such-program-here"]);
    assert!(
        err.contains("`no-such-program-here` was not found"),
        "{err}"
    );
}

#[test]
fn which_env_and_component_list_agree() {
    let p = project();
    let w = &p.world;
    let venv = w.venv("core");
    let which = w.run(&["which", "HERMES"]);
    assert_eq!(
        String::from_utf8_lossy(&which.stdout).trim(),
        format!("core\t{}", venv.display())
    );
    assert!(
        String::from_utf8_lossy(&which.stderr).contains("not materialized yet"),
        "{which:?}"
    );
    let listing = w.ok(&["list", "--components"]);
    let hermes = listing.lines().find(|l| l.starts_with("hermes")).unwrap();
    assert!(hermes.contains("core"), "{listing}");

    w.ok(&["materialize", "--frozen", "core"]);
    let script = format!(
        "eval \"$('{}' env hermes --shell bash)\"; command -v python; echo \"$VIRTUAL_ENV\"; \
         python -c 'import alpha; print(alpha.VALUE)'",
        env!("CARGO_BIN_EXE_tstore")
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .current_dir(w.project())
        .env("TSTORE_HOME", w.store())
        .env("HOME", w.home())
        .env("PYTHONHOME", "/nonexistent")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            venv.join("bin/python").display().to_string().as_str(),
            venv.display().to_string().as_str(),
            "alpha"
        ],
        "{out:?}"
    );
    let fish = w.ok(&["env", "core", "--shell", "fish"]);
    assert!(fish.contains("set -gx PATH '"), "{fish}");
}

#[test]
fn run_in_a_components_folder_reads_the_checkouts_tiers() {
    let p = project();
    let w = &p.world;
    w.ok(&["materialize", "--frozen", "core"]);
    // Tekton's launcher starts a component in its own folder.
    let folder = w.project().join("Hermes").join("hermes");
    fs_err::create_dir_all(&folder).unwrap();
    let out = w
        .tstore(&[
            "run",
            "--frozen",
            "hermes",
            "--",
            "python",
            "-c",
            "import alpha",
        ])
        .current_dir(&folder)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Up to date from the same tiers.toml: nothing rebuilt, nothing said.
    assert!(stderr.is_empty(), "{stderr}");
    let gens: serde_json::Value =
        serde_json::from_str(&w.ok(&["generations", "core", "--json"])).unwrap();
    assert_eq!(
        gens["generations"].as_array().map(Vec::len),
        Some(1),
        "{gens}"
    );
}

#[test]
fn a_venv_built_from_another_tiers_toml_is_named_before_it_is_replaced() {
    let p = project();
    let w = &p.world;
    w.ok(&["materialize", "--frozen", "core"]);
    // The same venv path in a second checkout, with another requirement set.
    let other = w.path().join("elsewhere");
    fs_err::create_dir_all(&other).unwrap();
    fs_err::write(
        other.join("tiers.toml"),
        format!(
            "venv-root = \"{}\"\n[tiers.core]\nrequirements = [\"alpha\", \"beta\"]\n",
            w.home().join("venvs").display()
        ),
    )
    .unwrap();
    WheelBuilder::new("beta", "1.0")
        .file("beta/__init__.py", "")
        .build(&w.wheels());
    let server = FileServer::start(&w.wheels());
    lock_served(
        &other.join("pylock.core.toml"),
        &w.wheels(),
        &["alpha", "beta"],
        &server.url,
    );
    let out = w
        .tstore(&["materialize", "--frozen", "core"])
        .current_dir(&other)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("was built from") && stderr.contains("project/tiers.toml"),
        "{stderr}"
    );
}

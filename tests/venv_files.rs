//! The files a venv gets besides its packages: activation scripts and
//! launchers that name the tier's stable path whatever characters it holds,
//! and modes that do not depend on the umask.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A tier `t` (alpha, with console script `alpha-hello`) whose venv lives
/// under `root`, materialized.
fn materialized_under(root: &Path) -> (World, FileServer, PathBuf) {
    let world = World::new();
    WheelBuilder::new("alpha", "1.0")
        .file("alpha/__init__.py", "VALUE = 'alpha'\n")
        .file(
            "alpha/cli.py",
            "def hello():\n    print('hello from alpha')\n",
        )
        .console_script("alpha-hello", "alpha.cli:hello")
        .build(&world.wheels());
    let server = FileServer::start(&world.wheels());
    let root_text = root.to_str().unwrap();
    let toml_root = root_text.replace('\\', "\\\\").replace('"', "\\\"");
    world.write_tiers(&format!(
        "venv-root = \"{toml_root}\"\n[tiers.t]\nrequirements = [\"alpha\"]\n"
    ));
    lock_served(
        &world.project().join("pylock.t.toml"),
        &world.wheels(),
        &["alpha"],
        &server.url,
    );
    world.ok(&["materialize", "--frozen", "t"]);
    (world, server, root.join("t"))
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn activation_scripts_and_launchers_name_the_stable_path() {
    for name in [
        "plain",
        "it's",
        "say \"hi\"",
        "cost $HOME `id`",
        "two words",
        "naïve ünïcode",
        "all of 'it' \"$x\" é",
        "a ''b'' c",
    ] {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join(name).join("venvs");
        let (_world, _server, venv) = materialized_under(&root);
        let stable = venv.to_str().unwrap();

        // bash: VIRTUAL_ENV, and the launcher found on PATH runs.
        let script = "source \"$1/bin/activate\" && printf '%s\\n' \"$VIRTUAL_ENV\" && \
                      command -v alpha-hello && alpha-hello";
        let out = stdout_of(Command::new("bash").args(["-c", script, "bash", stable]));
        assert_eq!(
            out,
            format!("{stable}\n{stable}/bin/alpha-hello\nhello from alpha\n"),
            "{name}"
        );
        // activate_this.py, run by another Python, names the stable path.
        let code =
            "import os, runpy, sys; runpy.run_path(sys.argv[1]); print(os.environ['VIRTUAL_ENV'])";
        let out = stdout_of(
            Command::new("python3")
                .args(["-c", code])
                .arg(venv.join("bin/activate_this.py")),
        );
        assert_eq!(out, format!("{stable}\n"), "{name}");
        // The interpreter and the launcher through the stable path.
        let out = stdout_of(
            Command::new(venv.join("bin/python"))
                .args(["-c", "import sys, alpha; print(sys.prefix, alpha.VALUE)"]),
        );
        assert_eq!(out, format!("{stable} alpha\n"), "{name}");
        let out = stdout_of(&mut Command::new(venv.join("bin/alpha-hello")));
        assert_eq!(out, "hello from alpha\n", "{name}");
        // No script names where it was built.
        for entry in fs_err::read_dir(venv.join("bin")).unwrap() {
            let path = entry.unwrap().path();
            if path.is_symlink() {
                continue;
            }
            let text = String::from_utf8_lossy(&fs_err::read(&path).unwrap()).into_owned();
            for built_at in [".staging-", "skeleton-"] {
                assert!(
                    !text.contains(built_at),
                    "{name}: {} names {built_at}",
                    path.display()
                );
            }
        }
    }
}

/// Every file and directory under `dir` (symlinks excluded) that the group
/// or others may write, with its mode.
fn writable_by_others(dir: &Path, out: &mut Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    for entry in fs_err::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = fs_err::symlink_metadata(entry.path()).unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            out.push(format!("{:o} {}", mode, entry.path().display()));
        }
        if meta.is_dir() {
            writable_by_others(&entry.path(), out);
        }
    }
}

#[test]
fn modes_do_not_depend_on_the_umask() {
    use std::os::unix::process::CommandExt;

    let world = World::new();
    WheelBuilder::new("alpha", "1.0")
        .file("alpha/__init__.py", "VALUE = 'alpha'\n")
        .file("alpha/cli.py", "def hello():\n    print('hello')\n")
        .raw(
            "alpha-1.0.data/scripts/tool",
            b"#!python\nprint('tool')\n",
            0o100755,
        )
        .console_script("alpha-hello", "alpha.cli:hello")
        .build(&world.wheels());
    WheelBuilder::new("gamma", "1.0")
        .file("gamma/__init__.py", "NAME = 'gamma'\n")
        .build(&world.wheels());
    let server = FileServer::start(&world.wheels());
    world.write_tiers("keep-generations = 2\n[tiers.t]\nrequirements = [\"alpha\"]\n");
    let lock = world.project().join("pylock.t.toml");
    let run = |args: &[&str]| {
        let mut cmd = world.tstore(args);
        // SAFETY: umask is async-signal-safe and touches nothing else.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0);
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "tstore {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    lock_served(&lock, &world.wheels(), &["alpha"], &server.url);
    run(&["materialize", "--frozen", "t"]);
    // A second generation, and an export imported into a second store.
    lock_served(&lock, &world.wheels(), &["alpha", "gamma"], &server.url);
    run(&["materialize", "--frozen", "t"]);
    let archive = world.path().join("t.tar.zst");
    run(&["export", "-o", archive.to_str().unwrap()]);
    run(&["verify"]);
    python_ok(&world.venv("t"), "import alpha, gamma");

    let mut found = Vec::new();
    writable_by_others(&world.store(), &mut found);
    writable_by_others(&world.home().join("venvs"), &mut found);
    assert_eq!(mode_of(&world.home().join("venvs")), 0o755);
    assert!(
        found.is_empty(),
        "writable by others:\n{}",
        found.join("\n")
    );
}

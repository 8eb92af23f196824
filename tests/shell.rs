//! `tstore shell` driven through a pseudo-terminal, and `tstore env`'s
//! `deactivate`.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Project {
    world: World,
    _server: FileServer,
}

/// Tier `core` (component `hermes`) holds `alpha`, locked from a local server.
fn project() -> Project {
    let world = World::new();
    WheelBuilder::new("alpha", "1.0")
        .file("alpha/__init__.py", "VALUE = 'alpha'\n")
        .build(&world.wheels());
    let server = FileServer::start(&world.wheels());
    world.write_tiers("[tiers.core]\nrequirements = [\"alpha\"]\ncomponents = [\"hermes\"]\n");
    lock_served(
        &world.project().join("pylock.core.toml"),
        &world.wheels(),
        &["alpha"],
        &server.url,
    );
    Project {
        world,
        _server: server,
    }
}

/// What a program run on a terminal wrote there, and how it ended.
struct Session {
    output: String,
    status: std::process::ExitStatus,
}

/// Runs `cmd` as the session leader of a new pseudo-terminal, types `input`
/// into it, and collects everything written until the program exits.
fn on_terminal(cmd: &mut Command, input: &str) -> Session {
    let (mut master, slave) = {
        let mut master = -1;
        let mut slave = -1;
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        unsafe {
            (
                std::fs::File::from(OwnedFd::from_raw_fd(master)),
                OwnedFd::from_raw_fd(slave),
            )
        }
    };
    let slave_fd = slave.as_raw_fd();
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()));
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || libc::ioctl(slave_fd, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    // The command holds copies of the terminal's fds until told otherwise;
    // the master reads end-of-file only once every copy is closed.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    drop(slave);
    let mut reader = master.try_clone().unwrap();
    let collector = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the last program holding the terminal has closed it.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    master.write_all(input.as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the shell did not exit within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(master);
    Session {
        output: collector.join().unwrap(),
        status,
    }
}

#[test]
fn shell_starts_bash_with_the_tier_activated_and_exit_leaves() {
    let p = project();
    let w = &p.world;
    let venv = w.venv("core");
    let mut cmd = w.tstore(&["shell", "--frozen", "hermes"]);
    cmd.env("SHELL", "/bin/bash")
        .env("PYTHONHOME", "/nonexistent")
        .env_remove("TSTORE_SHELL")
        .env_remove("VIRTUAL_ENV")
        .env_remove("VIRTUAL_ENV_DISABLE_PROMPT");
    let session = on_terminal(
        &mut cmd,
        "echo \"VE=[$VIRTUAL_ENV]\"\n\
         python -c 'import sys, alpha; print(\"PREFIX=[%s]\" % sys.prefix, alpha.VALUE)'\n\
         exit 3\n",
    );
    let out = &session.output;
    assert_eq!(session.status.code(), Some(3), "the shell's status: {out}");
    assert!(
        out.contains(&format!("VE=[{}]", venv.display())),
        "VIRTUAL_ENV: {out}"
    );
    // The typed line is echoed too; the answer is the one naming a path.
    let prefix = out
        .split("PREFIX=[")
        .find(|rest| rest.starts_with('/'))
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_else(|| panic!("no sys.prefix printed: {out}"));
    assert_eq!(
        fs_err::canonicalize(prefix).unwrap(),
        fs_err::canonicalize(&venv).unwrap(),
        "{out}"
    );
    assert!(out.contains("] alpha"), "the tier's package imports: {out}");
    assert!(out.contains("(core) "), "the prompt names the tier: {out}");
}

#[test]
fn shell_falls_back_to_sh_and_refuses_to_nest() {
    let p = project();
    let w = &p.world;
    w.ok(&["materialize", "--frozen", "core"]);
    let venv = w.venv("core");
    let mut cmd = w.tstore(&["shell", "--no-sync", "core"]);
    cmd.env("SHELL", "/bin/tcsh")
        .env_remove("TSTORE_SHELL")
        .env_remove("VIRTUAL_ENV_DISABLE_PROMPT");
    let session = on_terminal(
        &mut cmd,
        "echo \"VE=[$VIRTUAL_ENV] INSIDE=[$TSTORE_SHELL]\"\n\
         tstore_bin=$(command -v python); echo \"PY=[$tstore_bin]\"\n\
         exit\n",
    );
    let out = &session.output;
    assert!(session.status.success(), "{out}");
    assert!(out.contains("starting sh"), "says why sh: {out}");
    assert!(
        out.contains(&format!("VE=[{}] INSIDE=[core]", venv.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("PY=[{}]", venv.join("bin/python").display())),
        "{out}"
    );
    assert!(out.contains("(core) "), "the prompt names the tier: {out}");

    let nested = w
        .tstore(&["shell", "core"])
        .env("TSTORE_SHELL", "core")
        .env("VIRTUAL_ENV", &venv)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&nested.stderr);
    assert!(!nested.status.success(), "{stderr}");
    assert!(
        stderr.contains("already inside a tstore shell for tier `core`")
            && stderr.contains("`exit`"),
        "{stderr}"
    );
}

#[test]
fn env_deactivate_restores_path_prompt_and_pythonhome_in_bash() {
    let p = project();
    let w = &p.world;
    w.ok(&["materialize", "--frozen", "core"]);
    let venv = w.venv("core");
    let script = format!(
        "PS1='orig> '; export PYTHONHOME=/some/home; before=\"$PATH\"\n\
         eval \"$('{bin}' env core --shell bash)\"\n\
         echo \"IN path=[$(command -v python)] ve=[$VIRTUAL_ENV] ps1=[$PS1] ph=[${{PYTHONHOME-unset}}]\"\n\
         deactivate\n\
         [ \"$PATH\" = \"$before\" ] && echo 'OUT path restored'\n\
         echo \"OUT ve=[${{VIRTUAL_ENV-unset}}] ps1=[$PS1] ph=[$PYTHONHOME]\"\n\
         [ \"$(type -t deactivate)\" = function ] || echo 'OUT deactivate gone'\n",
        bin = env!("CARGO_BIN_EXE_tstore")
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .current_dir(w.project())
        .env("TSTORE_HOME", w.store())
        .env("HOME", w.home())
        .env_remove("VIRTUAL_ENV_DISABLE_PROMPT")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "IN path=[{}] ve=[{}] ps1=[(core) orig> ] ph=[unset]",
                venv.join("bin/python").display(),
                venv.display()
            )
            .as_str(),
            "OUT path restored",
            "OUT ve=[unset] ps1=[orig> ] ph=[/some/home]",
            "OUT deactivate gone",
        ],
        "{out:?}"
    );
}

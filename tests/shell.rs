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
    let (chunks, received) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // EIO once the last program holding the terminal has closed it.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || chunks.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
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
    // What is still on its way; a program the shell left running may hold
    // the terminal open, so stop at a pause rather than at end-of-file.
    let mut all = Vec::new();
    while let Ok(chunk) = received.recv_timeout(Duration::from_secs(2)) {
        all.extend_from_slice(&chunk);
    }
    drop(master);
    Session {
        output: String::from_utf8_lossy(&all).into_owned(),
        status,
    }
}

/// `tstore shell` in `shell` (a path): VIRTUAL_ENV, the venv's Python, the
/// prompt, and `exit 3` leaving with status 3.
fn shell_activates_the_tier(shell: &str) {
    let p = project();
    let w = &p.world;
    let venv = w.venv("core");
    // fish's first start generates completions from man pages in the
    // background (minutes); an existing folder for them skips that.
    fs_err::create_dir_all(w.home().join(".local/share/fish/generated_completions")).unwrap();
    let mut cmd = w.tstore(&["shell", "--frozen", "hermes"]);
    cmd.env("SHELL", shell)
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
    assert_eq!(session.status.code(), Some(3), "{shell}'s status: {out}");
    assert!(
        out.contains(&format!("VE=[{}]", venv.display())),
        "{shell}: VIRTUAL_ENV: {out}"
    );
    // The typed line is echoed too; the answer is the one naming a path.
    let prefix = out
        .split("PREFIX=[")
        .find(|rest| rest.starts_with('/'))
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_else(|| panic!("{shell}: no sys.prefix printed: {out}"));
    assert_eq!(
        fs_err::canonicalize(prefix).unwrap(),
        fs_err::canonicalize(&venv).unwrap(),
        "{shell}: {out}"
    );
    assert!(
        out.contains("] alpha"),
        "{shell}: the tier's package imports: {out}"
    );
    assert!(
        out.contains("(core) "),
        "{shell}: the prompt names the tier: {out}"
    );
}

/// The path of `name` on PATH, or None (the test then skips, saying so).
fn installed(name: &str) -> Option<String> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if path.is_empty() {
        eprintln!("skipped: no {name} on this machine");
        return None;
    }
    Some(path)
}

/// Runs `script` with `shell -c` in the project, with its store and HOME;
/// returns what it printed.
fn run_script(shell: impl AsRef<std::ffi::OsStr>, script: &str, w: &World) -> String {
    let out = Command::new(shell)
        .args(["-c", script])
        .current_dir(w.project())
        .env("TSTORE_HOME", w.store())
        .env("HOME", w.home())
        .env_remove("VIRTUAL_ENV_DISABLE_PROMPT")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn shell_starts_bash_with_the_tier_activated_and_exit_leaves() {
    shell_activates_the_tier(&installed("bash").expect("bash"));
}

#[test]
fn shell_starts_zsh_with_the_tier_activated() {
    if let Some(zsh) = installed("zsh") {
        shell_activates_the_tier(&zsh);
    }
}

#[test]
fn shell_starts_fish_with_the_tier_activated() {
    if let Some(fish) = installed("fish") {
        shell_activates_the_tier(&fish);
    }
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

/// `eval "$(tstore env core)"` then `deactivate` in a POSIX shell (`bash`,
/// `zsh`): PATH, prompt and PYTHONHOME back, VIRTUAL_ENV and the function gone.
fn env_then_deactivate_in(shell: &str) {
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
         case \"$(type deactivate 2>/dev/null)\" in *function*) ;; *) echo 'OUT deactivate gone' ;; esac\n",
        bin = env!("CARGO_BIN_EXE_tstore")
    );
    let stdout = run_script(shell, &script, w);
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
        "{shell}: {stdout}"
    );
}

#[test]
fn env_deactivate_restores_path_prompt_and_pythonhome_in_bash() {
    env_then_deactivate_in("bash");
}

#[test]
fn env_deactivate_restores_path_prompt_and_pythonhome_in_zsh() {
    if let Some(zsh) = installed("zsh") {
        env_then_deactivate_in(&zsh);
    }
}

#[test]
fn env_deactivate_restores_path_prompt_and_pythonhome_in_fish() {
    let Some(fish) = installed("fish") else {
        return;
    };
    let p = project();
    let w = &p.world;
    w.ok(&["materialize", "--frozen", "core"]);
    let venv = w.venv("core");
    let script = format!(
        "set -gx PYTHONHOME /some/home; set before \"$PATH\"\n\
         '{bin}' env core --shell fish | source\n\
         echo \"IN path=[\"(command -v python)\"] ve=[$VIRTUAL_ENV] prompt=[\"(fish_prompt | string match -q '(core) *'; and echo tier)\"]\"\n\
         set -q PYTHONHOME; and echo 'IN ph set'; or echo 'IN ph unset'\n\
         deactivate\n\
         test \"$PATH\" = \"$before\"; and echo 'OUT path restored'\n\
         set -q VIRTUAL_ENV; and echo 'OUT ve set'; or echo 'OUT ve unset'\n\
         echo \"OUT ph=[$PYTHONHOME]\"\n\
         functions -q deactivate; or echo 'OUT deactivate gone'\n\
         functions -q _tstore_old_fish_prompt; or echo 'OUT prompt restored'\n",
        bin = env!("CARGO_BIN_EXE_tstore")
    );
    fs_err::create_dir_all(w.home().join(".local/share/fish/generated_completions")).unwrap();
    let stdout = run_script(fish, &script, w);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "IN path=[{}] ve=[{}] prompt=[tier]",
                venv.join("bin/python").display(),
                venv.display()
            )
            .as_str(),
            "IN ph unset",
            "OUT path restored",
            "OUT ve unset",
            "OUT ph=[/some/home]",
            "OUT deactivate gone",
            "OUT prompt restored",
        ],
        "{stdout}"
    );
}

//! Child processes that end with tstore.
//!
//! tstore runs uv and Python workers. A tstore killed by SIGKILL runs no
//! code, so it cannot stop them itself; left alone, a `uv pip compile` would
//! finish after its parent is gone and write its output beside tiers.toml.
//! [`dies_with_parent`] asks the kernel to send the child SIGKILL when its
//! parent goes away (Linux's `PR_SET_PDEATHSIG`; elsewhere it does nothing).
//!
//! The kernel's "parent" is the thread that started the child: a child must
//! be waited for on the thread that spawned it (`Command::output`, or spawn
//! and wait in one function), or it dies when that thread ends.
//!
//! Every child is run through [`output`] or [`spawn`], which report it when
//! it ends ("ran `uv pip compile …` in 1.23s") as a `-v` detail to the
//! [`Progress`] the front end registered with [`report_commands_to`] (once
//! per process, as a logger is: the children are started deep inside steps
//! that have no reporter of their own).

use std::ffi::OsStr;
use std::io;
use std::process::{Child, Command, ExitStatus, Output};
use std::sync::OnceLock;
use std::time::Instant;

use crate::progress::Progress;

static REPORT_TO: OnceLock<&'static dyn Progress> = OnceLock::new();

/// Reports every child that ends from now on to `progress` (a detail, shown
/// with `-v`). Only the first call counts.
pub fn report_commands_to(progress: &'static dyn Progress) {
    let _ = REPORT_TO.set(progress);
}

/// Runs `cmd` to its end (as [`Command::output`]) and reports it.
pub fn output(cmd: &mut Command) -> io::Result<Output> {
    let started = Started::now(cmd);
    let output = cmd.output()?;
    started.ended(&output.status);
    Ok(output)
}

/// Starts `cmd`; the caller waits for it and passes its status to
/// [`Started::ended`].
pub fn spawn(cmd: &mut Command) -> io::Result<(Child, Started)> {
    let started = Started::now(cmd);
    Ok((cmd.spawn()?, started))
}

/// A child's command line and when it started.
pub struct Started {
    command: String,
    at: Instant,
}

impl Started {
    fn now(cmd: &Command) -> Self {
        Self {
            command: render_short(cmd),
            at: Instant::now(),
        }
    }

    /// Reports the child as ended with `status`.
    pub fn ended(self, status: &ExitStatus) {
        let Some(progress) = REPORT_TO.get() else {
            return;
        };
        let seconds = self.at.elapsed().as_secs_f64();
        let outcome = if status.success() {
            String::new()
        } else {
            format!(" ({status})")
        };
        progress.detail(&format!("ran `{}` in {seconds:.2}s{outcome}", self.command));
    }
}

/// A command as a shell-like string, each argument quoted when it has to be.
pub fn render(cmd: &Command) -> String {
    render_with(cmd, |s| s.to_string_lossy().into_owned())
}

/// [`render`] with a script argument (several lines, as a `-c` script) cut
/// to the start of its first line.
fn render_short(cmd: &Command) -> String {
    render_with(cmd, |s| {
        let text = s.to_string_lossy();
        if !text.contains('\n') {
            return text.into_owned();
        }
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let start: String = first.trim().chars().take(40).collect();
        format!("{start}…")
    })
}

fn render_with(cmd: &Command, text: impl Fn(&OsStr) -> String) -> String {
    let quote = |s: &OsStr| {
        let s = text(s);
        if s.contains([' ', '"', '\'', '\n']) || s.is_empty() {
            format!("'{}'", s.replace('\'', "'\\''"))
        } else {
            s
        }
    };
    std::iter::once(quote(cmd.get_program()))
        .chain(cmd.get_args().map(quote))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Makes `cmd`'s process receive SIGKILL when tstore (the spawning thread)
/// ends, however it ends.
pub fn dies_with_parent(cmd: &mut Command) -> &mut Command {
    crate::platform::kill_with_parent(cmd)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    const SIGKILL: i32 = 9;

    /// Keeps every detail; registered once for the whole test binary.
    struct Collect(std::sync::Mutex<Vec<String>>);

    impl Progress for Collect {
        fn detail(&self, message: &str) {
            self.0.lock().unwrap().push(message.to_string());
        }
    }

    static COLLECTED: Collect = Collect(std::sync::Mutex::new(Vec::new()));

    #[test]
    fn each_child_is_reported_with_its_duration_and_a_failed_status() {
        report_commands_to(&COLLECTED);
        let out = output(Command::new("sh").args(["-c", "exit 3 # reported"])).unwrap();
        assert_eq!(out.status.code(), Some(3));
        let (mut child, started) = spawn(Command::new("sh").args(["-c", ": spawned"])).unwrap();
        started.ended(&child.wait().unwrap());
        let seen = COLLECTED.0.lock().unwrap().clone();
        let failed = seen
            .iter()
            .find(|l| l.contains("# reported"))
            .expect("the failed child is reported");
        assert!(
            failed.starts_with("ran `sh -c 'exit 3 # reported'` in "),
            "{failed}"
        );
        assert!(failed.ends_with("s (exit status: 3)"), "{failed}");
        let spawned = seen
            .iter()
            .find(|l| l.contains(": spawned"))
            .expect("the spawned child is reported");
        assert!(spawned.ends_with('s'), "{spawned}");
    }

    #[test]
    fn a_short_rendering_cuts_scripts_to_their_first_line() {
        let mut cmd = Command::new("python3");
        cmd.args(["-I", "-c", "import sys\nprint(sys.path)", "two words"]);
        assert_eq!(
            render_short(&cmd),
            "python3 -I -c 'import sys…' 'two words'"
        );
        assert_eq!(
            render(&cmd),
            "python3 -I -c 'import sys\nprint(sys.path)' 'two words'"
        );
    }

    #[test]
    fn a_child_is_killed_when_the_thread_that_started_it_ends() {
        let mut child = std::thread::spawn(|| {
            dies_with_parent(Command::new("sleep").arg("60"))
                .spawn()
                .unwrap()
        })
        .join()
        .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(SIGKILL), "{status}");
    }
}

//! Processes the tests start: each in a process group of its own, stopped
//! the way the program's documentation says, and only then, after a
//! timeout, SIGKILL to the whole group (which reaches every process it made,
//! such as nginx's workers). Also what `/proc` says about a process.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// How long a stopped group gets before its SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A child in its own process group, stopped when dropped.
pub struct ProcessGroup {
    child: Child,
    what: String,
    /// The signal that asks the program to stop (nginx: SIGQUIT, Garage:
    /// SIGTERM).
    stop_signal: libc::c_int,
    stopped: bool,
}

impl ProcessGroup {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(what: &str, cmd: &mut Command, stop_signal: libc::c_int) -> Self {
        let child = cmd
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Self {
            child,
            what: what.into(),
            stop_signal,
            stopped: false,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends `signal` to the leader only (the group's pgid is its pid).
    pub fn signal_leader(&self, signal: libc::c_int) {
        // SAFETY: kill only sends a signal to the process we started.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// The leader's exit status, waiting up to `timeout`.
    pub fn wait_leader(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The group's processes still running after up to `timeout` (once the
    /// leader is reaped, as a zombie counts as running for the kernel).
    pub fn survivors(&self, timeout: Duration) -> Vec<Proc> {
        let deadline = Instant::now() + timeout;
        loop {
            let left: Vec<Proc> = processes()
                .into_iter()
                .filter(|p| p.pgid == self.pid() && p.state != 'Z')
                .collect();
            if left.is_empty() || Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the group: the stop signal to the leader, then waits for it
    /// and every process of its group. Anything still running after
    /// [`STOP_TIMEOUT`] is killed with SIGKILL, and named in the error.
    pub fn stop(&mut self) -> Result<(), String> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let started = Instant::now();
        if self.child.try_wait().unwrap().is_none() {
            self.signal_leader(self.stop_signal);
        }
        let leader = self.wait_leader(STOP_TIMEOUT);
        let left = self.survivors(STOP_TIMEOUT.saturating_sub(started.elapsed()));
        if leader.is_some() && left.is_empty() {
            return Ok(());
        }
        // SAFETY: the group is the one this value created.
        unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
        let _ = self.child.wait();
        let names: Vec<String> = left.iter().map(Proc::to_string).collect();
        Err(format!(
            "{} did not stop within {STOP_TIMEOUT:?} of its stop signal; killed {}",
            self.what,
            if names.is_empty() {
                "its leader".into()
            } else {
                names.join("; ")
            }
        ))
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            // A second panic while unwinding would abort the test binary.
            if std::thread::panicking() {
                eprintln!("{err}");
            } else {
                panic!("{err}");
            }
        }
    }
}

/// One process, as `/proc` describes it.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    /// R, S, D, Z, …
    pub state: char,
    pub comm: String,
    pub cmdline: String,
    pub cwd: String,
}

impl std::fmt::Display for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} ({}): `{}` in {}",
            self.pid, self.comm, self.cmdline, self.cwd
        )
    }
}

/// Every process this test can see.
pub fn processes() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter_map(read_proc)
        .collect()
}

fn read_proc(pid: i32) -> Option<Proc> {
    let dir = format!("/proc/{pid}");
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // `pid (comm) state ppid pgrp …`: comm may hold spaces and parentheses.
    let (head, tail) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let mut fields = tail.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    let cmdline = std::fs::read(format!("{dir}/cmdline"))
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .unwrap_or_default();
    let cwd = std::fs::read_link(format!("{dir}/cwd"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    Some(Proc {
        pid,
        ppid,
        pgid,
        state,
        comm,
        cmdline: cmdline.trim_end().to_string(),
        cwd,
    })
}

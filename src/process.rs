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

use std::process::Command;

/// Makes `cmd`'s process receive SIGKILL when tstore (the spawning thread)
/// ends, however it ends.
#[cfg(target_os = "linux")]
pub fn dies_with_parent(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    let hook = move || {
        // SAFETY: prctl, getppid and _exit are async-signal-safe, as code
        // between fork and exec must be.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the request above was made;
            // then no signal would ever come.
            if libc::getppid() != parent {
                libc::_exit(128 + libc::SIGKILL);
            }
        }
        Ok(())
    };
    // SAFETY: the hook only calls async-signal-safe functions and touches no
    // memory shared with the parent.
    unsafe { cmd.pre_exec(hook) }
}

#[cfg(not(target_os = "linux"))]
pub fn dies_with_parent(cmd: &mut Command) -> &mut Command {
    cmd
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

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
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    }
}

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
pub fn dies_with_parent(cmd: &mut Command) -> &mut Command {
    crate::platform::kill_with_parent(cmd)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    const SIGKILL: i32 = 9;

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

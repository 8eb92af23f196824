//! Finding and running uv.
//!
//! uv is `$TSTORE_UV`, else `uv` on `PATH`, else a pinned release tstore
//! installs into the store from PyPI (the uv wheel carries the binary).
//! Every failed uv call reports the command, its exit status and stderr.

pub mod install;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};

use anyhow::{Context, bail};

use crate::progress::Progress;
use crate::store::Store;

/// The uv release tstore installs when it finds none.
pub const PINNED_UV_VERSION: &str = "0.13.9";

#[derive(Debug, Clone)]
pub struct Uv {
    pub path: PathBuf,
}

/// A uv invocation that failed.
#[derive(Debug, thiserror::Error)]
pub enum UvError {
    /// uv ran and failed (or was killed by a signal).
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Exited {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    /// uv succeeded but printed nothing where an answer was due.
    #[error("`{command}` failed (exit status 0, but it printed {missing}):\n{stderr}")]
    NoAnswer {
        command: String,
        /// What it should have printed ("no interpreter").
        missing: &'static str,
        stderr: String,
    },
    #[error("`{command}` failed (could not start)")]
    NotStarted {
        command: String,
        #[source]
        source: std::io::Error,
    },
}

impl UvError {
    /// uv's exit code; `None` when a signal killed it or it never ran.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Self::Exited { status, .. } => status.code(),
            Self::NoAnswer { .. } => Some(0),
            Self::NotStarted { .. } => None,
        }
    }

    /// What uv wrote to stderr (empty when it never ran).
    pub fn stderr(&self) -> &str {
        match self {
            Self::Exited { stderr, .. } | Self::NoAnswer { stderr, .. } => stderr,
            Self::NotStarted { .. } => "",
        }
    }
}

impl Uv {
    /// Finds uv, installing the pinned release into the store if needed.
    pub fn locate(store: &Store, progress: &dyn Progress) -> anyhow::Result<Self> {
        if let Some(found) = Self::find_existing(store)? {
            return Ok(found);
        }
        let installed = Self::installed_path(store);
        progress.notice(&format!(
            "uv not found (set TSTORE_UV or put uv on PATH); installing uv {PINNED_UV_VERSION} from PyPI into {}",
            installed.display()
        ));
        install::install(store, PINNED_UV_VERSION, &installed)
            .with_context(|| format!("cannot install uv {PINNED_UV_VERSION} from PyPI"))?;
        Ok(Self { path: installed })
    }

    /// uv where [`Uv::locate`] looks, without installing it: `TSTORE_UV`
    /// (an error if it names nothing), `PATH`, the copy in the store.
    pub fn find_existing(store: &Store) -> anyhow::Result<Option<Self>> {
        if let Some(path) = std::env::var_os("TSTORE_UV").filter(|v| !v.is_empty()) {
            let path = PathBuf::from(path);
            if !path.is_file() {
                bail!(
                    "TSTORE_UV points at {}, which does not exist: fix or unset it",
                    path.display()
                );
            }
            return Ok(Some(Self { path }));
        }
        if let Some(path) = find_on_path("uv") {
            return Ok(Some(Self { path }));
        }
        let installed = Self::installed_path(store);
        Ok(installed.is_file().then_some(Self { path: installed }))
    }

    /// Where [`Uv::locate`] installs the pinned uv.
    fn installed_path(store: &Store) -> PathBuf {
        store
            .tools_dir()
            .join(format!("uv-{PINNED_UV_VERSION}"))
            .join("uv")
    }

    /// A uv command that dies with tstore (see [`crate::process`]).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.path);
        crate::process::dies_with_parent(&mut cmd);
        // tstore decides what to resolve; a user's uv.toml must not change it silently.
        cmd.env("UV_NO_CONFIG", "1");
        cmd
    }

    /// Runs `cmd`, returning its output, or an error with command and stderr.
    pub fn run(&self, cmd: &mut Command) -> Result<Output, UvError> {
        let output = output(cmd)?;
        if !output.status.success() {
            return Err(UvError::Exited {
                command: render(cmd),
                status: output.status,
                stderr: stderr_text(&output),
            });
        }
        Ok(output)
    }

    pub fn version(&self) -> anyhow::Result<String> {
        let out = self.run(self.command().arg("--version"))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `cmd` to its end, whatever its exit status.
pub fn output(cmd: &mut Command) -> Result<Output, UvError> {
    crate::process::output(cmd).map_err(|source| UvError::NotStarted {
        command: render(cmd),
        source,
    })
}

/// A finished command's stderr, as text without surrounding blank space.
pub fn stderr_text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_string()
}

/// A command as a shell-like string, for error messages.
pub fn render(cmd: &Command) -> String {
    crate::process::render(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_sh(script: &str) -> Result<Output, UvError> {
        let uv = Uv {
            path: "/bin/sh".into(),
        };
        uv.run(Command::new("/bin/sh").args(["-c", script]))
    }

    #[test]
    fn a_failed_run_keeps_exit_code_and_stderr() {
        let err = run_sh("echo 'uv: broken' >&2; exit 3").unwrap_err();
        assert_eq!(err.exit_code(), Some(3));
        assert_eq!(err.stderr(), "uv: broken");
        assert_eq!(
            err.to_string(),
            "`/bin/sh -c 'echo '\\''uv: broken'\\'' >&2; exit 3'` failed (exit status: 3):\nuv: broken"
        );
    }

    #[test]
    fn a_signal_leaves_no_exit_code_but_is_named() {
        let err = run_sh("kill -KILL $$").unwrap_err();
        assert_eq!(err.exit_code(), None);
        assert!(err.to_string().contains("SIGKILL"), "{err}");
    }

    #[test]
    fn a_uv_that_cannot_start_keeps_its_io_error() {
        let uv = Uv {
            path: "/no/such/uv".into(),
        };
        let err = uv.run(&mut uv.command()).unwrap_err();
        assert!(matches!(err, UvError::NotStarted { .. }), "{err:?}");
        assert_eq!(err.exit_code(), None);
        let io = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .expect("the io::Error is the source");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    }
}

//! Finding and running uv.
//!
//! uv is `$TSTORE_UV`, else `uv` on `PATH`, else a pinned release tstore
//! installs into the store from PyPI (the uv wheel carries the binary).
//! Every failed uv call reports the command, its exit status and stderr.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
#[error("`{command}` failed ({status}):\n{stderr}")]
pub struct UvError {
    pub command: String,
    pub status: String,
    pub stderr: String,
}

impl Uv {
    /// Finds uv, installing the pinned release into the store if needed.
    pub fn locate(store: &Store, progress: &dyn Progress) -> anyhow::Result<Self> {
        if let Some(path) = std::env::var_os("TSTORE_UV").filter(|v| !v.is_empty()) {
            let path = PathBuf::from(path);
            if !path.is_file() {
                bail!(
                    "TSTORE_UV points at {}, which does not exist: fix or unset it",
                    path.display()
                );
            }
            return Ok(Self { path });
        }
        if let Some(path) = find_on_path("uv") {
            return Ok(Self { path });
        }
        let installed = store
            .tools_dir()
            .join(format!("uv-{PINNED_UV_VERSION}"))
            .join("uv");
        if installed.is_file() {
            return Ok(Self { path: installed });
        }
        progress.notice(&format!(
            "uv not found (set TSTORE_UV or put uv on PATH); installing uv {PINNED_UV_VERSION} from PyPI into {}",
            installed.display()
        ));
        crate::fetch::install_uv(store, PINNED_UV_VERSION, &installed)
            .with_context(|| format!("cannot install uv {PINNED_UV_VERSION} from PyPI"))?;
        Ok(Self { path: installed })
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
        let rendered = render(cmd);
        let output = cmd.output().map_err(|e| UvError {
            command: rendered.clone(),
            status: "could not start".into(),
            stderr: e.to_string(),
        })?;
        if !output.status.success() {
            return Err(UvError {
                command: rendered,
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(output)
    }

    pub fn version(&self) -> anyhow::Result<String> {
        let out = self.run(self.command().arg("--version"))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The interpreter `uv python find REQUEST` picks.
    pub fn find_python(&self, request: &str) -> anyhow::Result<PathBuf> {
        let mut cmd = self.command();
        cmd.args(["python", "find", "--no-project", request]);
        match self.run(&mut cmd) {
            Ok(out) => Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())),
            Err(err) => bail!(
                "no Python {request} interpreter found ({}): install one (e.g. `uv python install {request}`) \
                 or change `python` in tiers.toml",
                err.stderr.lines().last().unwrap_or("uv found none")
            ),
        }
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

/// A command as a shell-like string, for error messages.
pub fn render(cmd: &Command) -> String {
    let quote = |s: &OsStr| {
        let s = s.to_string_lossy();
        if s.contains([' ', '"', '\'']) || s.is_empty() {
            format!("'{}'", s.replace('\'', "'\\''"))
        } else {
            s.into_owned()
        }
    };
    std::iter::once(quote(cmd.get_program()))
        .chain(cmd.get_args().map(quote))
        .collect::<Vec<_>>()
        .join(" ")
}

//! `tstore shell`: the user's shell, started with a tier activated.
//!
//! The shell is `$SHELL` when it is bash, zsh, fish or a POSIX sh (dash,
//! ash, ksh), else `sh`. It gets the tier's environment (as `tstore run`
//! gives a command) plus `TSTORE_SHELL=<tier>`, and reads the user's own
//! startup files first, then lines that put the venv first on `PATH` again
//! and prefix the prompt with `(tier)`:
//!
//! - bash: `--rcfile` naming a file that sources `~/.bashrc` first;
//! - zsh: `ZDOTDIR` pointing at a folder whose `.zshenv` and `.zshrc` source
//!   the user's (from their `ZDOTDIR`, else `~`) and then activate;
//! - fish: `--init-command`, which runs after fish's own configuration;
//! - sh: `ENV`, the file a POSIX interactive shell reads.
//!
//! The files live in a temp folder for as long as the shell runs; tstore
//! waits for the shell and exits with its status. Inside a tstore shell,
//! `tstore shell` refuses (a shell in a shell hides which tier is active).

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use tstore::activate::{self, Dialect, EnvChange, quote};

use super::LockArgs;
use super::launch;
use super::session::Session;

/// Set inside a shell `tstore shell` started, to the tier's name.
const MARKER: &str = "TSTORE_SHELL";

/// The shells tstore knows how to hand startup lines to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bash,
    Zsh,
    Fish,
    Posix,
}

impl Kind {
    fn dialect(self) -> Dialect {
        match self {
            Kind::Fish => Dialect::Fish,
            _ => Dialect::Posix,
        }
    }
}

/// The shell to start: `$SHELL` if it is one tstore knows, else `sh`.
fn choose(shell_var: Option<OsString>) -> (PathBuf, Kind, Option<String>) {
    let fallback = |why: String| (PathBuf::from("sh"), Kind::Posix, Some(why));
    let Some(shell) = shell_var.filter(|s| !s.is_empty()).map(PathBuf::from) else {
        return fallback("$SHELL is not set; starting sh".to_string());
    };
    let name = shell
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kind = match name.as_str() {
        "bash" => Kind::Bash,
        "zsh" => Kind::Zsh,
        "fish" => Kind::Fish,
        "sh" | "dash" | "ash" | "ksh" | "mksh" => Kind::Posix,
        _ => {
            return fallback(format!(
                "$SHELL is {}, which tstore cannot activate a tier in (bash, zsh, fish and sh \
                 it can); starting sh",
                shell.display()
            ));
        }
    };
    (shell, kind, None)
}

/// Starts the shell with the tier (or component) `target` activated, after
/// bringing the tier up to date unless `no_sync`; returns the shell's exit
/// status.
pub fn shell(
    session: &Session<'_>,
    target: &str,
    no_sync: bool,
    lock: LockArgs,
) -> anyhow::Result<u8> {
    use tstore::progress::Progress;

    if let Some(active) = std::env::var_os(MARKER) {
        let venv = std::env::var_os("VIRTUAL_ENV").unwrap_or_default();
        bail!(
            "already inside a tstore shell for tier `{}` (VIRTUAL_ENV={}): type `exit` to leave \
             it, then run `tstore shell {target}`",
            active.to_string_lossy(),
            Path::new(&venv).display()
        );
    }
    let tier = session.config.tier_or_component(target)?;
    launch::prepare(session, tier, no_sync, lock, "a shell")?;

    let (program, kind, why) = choose(std::env::var_os("SHELL"));
    if let Some(why) = why {
        session.reporter.notice(&why);
    }
    let startup = tempfile::Builder::new()
        .prefix("tstore-shell-")
        .tempdir()
        .context("cannot create a temp folder for the shell's startup file")?;
    let lines = activate::startup_lines(&tier.venv, &tier.name, kind.dialect());
    let mut cmd = Command::new(&program);
    hand_over(&mut cmd, kind, startup.path(), &lines)?;
    for change in activate::changes(&tier.venv, &tier.name, std::env::var_os("PATH").as_deref()) {
        match change {
            EnvChange::Set(name, value) => cmd.env(name, value),
            EnvChange::Unset(name) => cmd.env_remove(name),
        };
    }
    cmd.env(MARKER, &tier.name);
    session.reporter.notice(&format!(
        "entering tier `{}` ({}); `exit` leaves",
        tier.name,
        tier.venv.display()
    ));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start the shell {}", program.display()))?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
        (None, None) => 1,
    })
}

/// Writes the startup file(s) into `dir` and points the shell at them.
fn hand_over(cmd: &mut Command, kind: Kind, dir: &Path, lines: &str) -> anyhow::Result<()> {
    let write = |name: &str, text: String| -> anyhow::Result<PathBuf> {
        let path = dir.join(name);
        fs_err::write(&path, text)?;
        Ok(path)
    };
    match kind {
        Kind::Bash => {
            let rc = write(
                "bashrc",
                format!("if [ -f ~/.bashrc ]; then . ~/.bashrc; fi\n{lines}"),
            )?;
            cmd.arg("--rcfile").arg(rc).arg("-i");
        }
        Kind::Zsh => {
            // zsh reads $ZDOTDIR/.zshenv, then $ZDOTDIR/.zshrc; ours source
            // the user's and give ZDOTDIR back before the user's .zshrc.
            let home = std::env::var_os("ZDOTDIR")
                .or_else(|| std::env::var_os("HOME"))
                .map(PathBuf::from)
                .unwrap_or_default();
            let user = quote(&home.to_string_lossy(), Dialect::Posix);
            let restore = match std::env::var_os("ZDOTDIR") {
                Some(_) => format!("ZDOTDIR={user}"),
                None => "unset ZDOTDIR".to_string(),
            };
            write(
                ".zshenv",
                format!("if [ -f {user}/.zshenv ]; then . {user}/.zshenv; fi\n"),
            )?;
            write(
                ".zshrc",
                format!("{restore}\nif [ -f {user}/.zshrc ]; then . {user}/.zshrc; fi\n{lines}"),
            )?;
            cmd.env("ZDOTDIR", dir).arg("-i");
        }
        Kind::Fish => {
            let init = write("activate.fish", lines.to_string())?;
            let source = format!("source {}", quote(&init.to_string_lossy(), Dialect::Fish));
            cmd.arg("--init-command").arg(source).arg("-i");
        }
        Kind::Posix => {
            let env = write("shrc", lines.to_string())?;
            cmd.env("ENV", env).arg("-i");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_shells_are_used_and_others_fall_back_to_sh() {
        let pick = |s: &str| choose(Some(OsString::from(s)));
        assert_eq!(pick("/usr/bin/zsh").1, Kind::Zsh);
        assert_eq!(pick("/usr/local/bin/fish").1, Kind::Fish);
        assert_eq!(pick("/bin/bash").0, PathBuf::from("/bin/bash"));
        let (program, kind, why) = pick("/bin/tcsh");
        assert_eq!((program, kind), (PathBuf::from("sh"), Kind::Posix));
        assert!(why.unwrap().contains("/bin/tcsh"));
        assert!(choose(None).2.unwrap().contains("$SHELL is not set"));
    }
}

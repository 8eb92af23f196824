//! The environment a program runs with inside a tier's venv, for `tstore run`
//! (applied to a child) and `tstore env` (printed as shell lines).
//!
//! It is what `bin/activate` does, minus the prompt: `VIRTUAL_ENV`, the
//! venv's `bin` first on `PATH`, `PYTHONHOME` removed (it would point the
//! interpreter at another prefix). The venv path used is the tier's stable
//! path, never a generation directory, so a later materialize or rollback
//! applies to programs started afterwards.

use std::ffi::{OsStr, OsString};
use std::path::Path;

/// One change to the environment: set to a value, or remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvChange {
    Set(&'static str, OsString),
    Unset(&'static str),
}

/// The changes that activate `venv` for tier `prompt`, given the current
/// `PATH` (`None` when unset).
pub fn changes(venv: &Path, prompt: &str, path: Option<&OsStr>) -> Vec<EnvChange> {
    let bin = venv.join("bin");
    let mut new_path = bin.into_os_string();
    if let Some(path) = path.filter(|p| !p.is_empty()) {
        new_path.push(":");
        new_path.push(path);
    }
    vec![
        EnvChange::Set("VIRTUAL_ENV", venv.as_os_str().to_owned()),
        EnvChange::Set("VIRTUAL_ENV_PROMPT", OsString::from(prompt)),
        EnvChange::Set("PATH", new_path),
        EnvChange::Unset("PYTHONHOME"),
    ]
}

/// Shell dialects `tstore env` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// bash, zsh and other POSIX shells.
    Posix,
    Fish,
}

impl Dialect {
    /// The dialect of the login shell named by `$SHELL` (POSIX unless fish).
    pub fn from_shell_var(shell: Option<&OsStr>) -> Self {
        match shell.and_then(|s| Path::new(s).file_name()) {
            Some(name) if name == "fish" => Self::Fish,
            _ => Self::Posix,
        }
    }
}

/// Shell lines that activate `venv`; `PATH` is extended at eval time, so the
/// lines stay right in a shell whose PATH differs from tstore's.
pub fn shell_lines(venv: &Path, prompt: &str, dialect: Dialect) -> String {
    let quote = |value: &OsStr| match dialect {
        Dialect::Posix => posix_quote(&value.to_string_lossy()),
        Dialect::Fish => fish_quote(&value.to_string_lossy()),
    };
    let mut out = String::new();
    for change in changes(venv, prompt, None) {
        let line = match (dialect, change) {
            (Dialect::Posix, EnvChange::Set("PATH", bin)) => {
                format!("export PATH={}\"${{PATH:+:$PATH}}\"", quote(&bin))
            }
            (Dialect::Fish, EnvChange::Set("PATH", bin)) => {
                format!("set -gx PATH {} $PATH", quote(&bin))
            }
            (Dialect::Posix, EnvChange::Set(name, value)) => {
                format!("export {name}={}", quote(&value))
            }
            (Dialect::Fish, EnvChange::Set(name, value)) => {
                format!("set -gx {name} {}", quote(&value))
            }
            (Dialect::Posix, EnvChange::Unset(name)) => format!("unset {name}"),
            (Dialect::Fish, EnvChange::Unset(name)) => format!("set -e {name}"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    // A shell caches where commands live; forget it so `python` means the
    // venv's from now on.
    if dialect == Dialect::Posix {
        out.push_str("hash -r 2>/dev/null || true\n");
    }
    out
}

fn posix_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn fish_quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', r"\\").replace('\'', r"\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_is_prepended_and_pythonhome_removed() {
        let changes = changes(Path::new("/v/t"), "t", Some(OsStr::new("/usr/bin")));
        assert!(changes.contains(&EnvChange::Set("PATH", "/v/t/bin:/usr/bin".into())));
        assert!(changes.contains(&EnvChange::Unset("PYTHONHOME")));
        let alone = super::changes(Path::new("/v/t"), "t", None);
        assert!(alone.contains(&EnvChange::Set("PATH", "/v/t/bin".into())));
    }

    #[test]
    fn quotes_survive_odd_paths() {
        let posix = shell_lines(Path::new("/v/it's here"), "t", Dialect::Posix);
        assert!(
            posix.contains(r"export VIRTUAL_ENV='/v/it'\''s here'"),
            "{posix}"
        );
        let fish = shell_lines(Path::new("/v/it's"), "t", Dialect::Fish);
        assert!(fish.contains(r"set -gx VIRTUAL_ENV '/v/it\'s'"), "{fish}");
        assert_eq!(
            Dialect::from_shell_var(Some(OsStr::new("/usr/bin/fish"))),
            Dialect::Fish
        );
    }
}

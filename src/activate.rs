//! The environment a program runs with inside a tier's venv, for `tstore run`
//! (applied to a child) and `tstore env` (printed as shell lines).
//!
//! It is what `bin/activate` does: `VIRTUAL_ENV`, the venv's `bin` first on
//! `PATH`, `PYTHONHOME` removed (it would point the interpreter at another
//! prefix), and for shells the prompt prefixed with `(tier)` and a
//! `deactivate` that undoes it all. The venv path used is the tier's stable
//! path, never a generation directory, so a later materialize or rollback
//! applies to programs started afterwards.
//!
//! `tstore shell` starts a shell with the same environment
//! ([`startup_lines`] after the user's startup files).

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

/// Shell lines that activate `venv` for `eval` (`tstore env`): the old
/// `PATH`, `PYTHONHOME` and prompt are saved, the venv's environment set, the
/// prompt prefixed with `(prompt)` (unless `VIRTUAL_ENV_DISABLE_PROMPT` is
/// set, as venv's own scripts do), and a `deactivate` function defined that
/// restores all three and unsets `VIRTUAL_ENV`. A `deactivate` already
/// defined (an earlier activation, tstore's or a venv's) runs first. `PATH`
/// is extended at eval time, so the lines stay right in a shell whose PATH
/// differs from tstore's.
pub fn shell_lines(venv: &Path, prompt: &str, dialect: Dialect) -> String {
    let mut out = String::new();
    match dialect {
        Dialect::Posix => {
            out.push_str(POSIX_DEACTIVATE);
            out.push_str(
                "_TSTORE_OLD_PATH=\"${PATH-}\"\n\
                 if [ -n \"${PYTHONHOME+set}\" ]; then _TSTORE_OLD_PYTHONHOME=\"$PYTHONHOME\"; fi\n\
                 if [ -z \"${VIRTUAL_ENV_DISABLE_PROMPT-}\" ]; then _TSTORE_OLD_PS1=\"${PS1-}\"; fi\n",
            );
        }
        Dialect::Fish => {
            out.push_str(FISH_DEACTIVATE);
            out.push_str(
                "set -gx _TSTORE_OLD_PATH $PATH\n\
                 set -q PYTHONHOME; and set -gx _TSTORE_OLD_PYTHONHOME $PYTHONHOME\n",
            );
        }
    }
    out.push_str(&activation(venv, prompt, dialect, PathStep::Prepend));
    out
}

/// Lines a shell started by `tstore shell` runs after the user's own
/// startup files: the venv's environment (its `bin` put first on `PATH`
/// again unless it already is, in case a startup file prepended to it) and
/// the prompt. No `deactivate`: `exit` leaves.
pub fn startup_lines(venv: &Path, prompt: &str, dialect: Dialect) -> String {
    activation(venv, prompt, dialect, PathStep::UnlessFirst)
}

/// How the venv's `bin` goes onto `PATH`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PathStep {
    Prepend,
    UnlessFirst,
}

/// The environment of [`changes`] and the prompt, in `dialect`.
fn activation(venv: &Path, prompt: &str, dialect: Dialect, step: PathStep) -> String {
    let quote = |value: &OsStr| match dialect {
        Dialect::Posix => posix_quote(&value.to_string_lossy()),
        Dialect::Fish => fish_quote(&value.to_string_lossy()),
    };
    let mut out = String::new();
    for change in changes(venv, prompt, None) {
        let line = match (dialect, change) {
            (Dialect::Posix, EnvChange::Set("PATH", bin)) => {
                let bin = quote(&bin);
                let prepend = format!("export PATH={bin}\"${{PATH:+:$PATH}}\"");
                match step {
                    PathStep::Prepend => prepend,
                    PathStep::UnlessFirst => {
                        format!("case \"${{PATH-}}\" in {bin}|{bin}:*) ;; *) {prepend} ;; esac")
                    }
                }
            }
            (Dialect::Fish, EnvChange::Set("PATH", bin)) => {
                let bin = quote(&bin);
                match step {
                    PathStep::Prepend => format!("set -gx PATH {bin} $PATH"),
                    PathStep::UnlessFirst => {
                        format!("test \"$PATH[1]\" = {bin}; or set -gx PATH {bin} $PATH")
                    }
                }
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
    match dialect {
        Dialect::Posix => {
            out.push_str(
                "if [ -z \"${VIRTUAL_ENV_DISABLE_PROMPT-}\" ]; then PS1=\"($VIRTUAL_ENV_PROMPT) ${PS1-}\"; fi\n",
            );
            // A shell caches where commands live; forget it so `python`
            // means the venv's from now on.
            out.push_str("hash -r 2>/dev/null || true\n");
        }
        Dialect::Fish => out.push_str(FISH_PROMPT),
    }
    out
}

/// Undoes what [`shell_lines`] did; runs the previous `deactivate` first.
/// Only a shell function named `deactivate` is called: pyenv-virtualenv puts
/// a program of that name on PATH that refuses to run.
const POSIX_DEACTIVATE: &str = r#"case "$(type deactivate 2>/dev/null)" in *function*) deactivate ;; esac
deactivate () {
    if [ -n "${_TSTORE_OLD_PATH+set}" ]; then PATH="$_TSTORE_OLD_PATH"; export PATH; unset _TSTORE_OLD_PATH; fi
    if [ -n "${_TSTORE_OLD_PYTHONHOME+set}" ]; then PYTHONHOME="$_TSTORE_OLD_PYTHONHOME"; export PYTHONHOME; unset _TSTORE_OLD_PYTHONHOME; fi
    if [ -n "${_TSTORE_OLD_PS1+set}" ]; then PS1="$_TSTORE_OLD_PS1"; unset _TSTORE_OLD_PS1; fi
    unset VIRTUAL_ENV VIRTUAL_ENV_PROMPT
    unset -f deactivate
    hash -r 2>/dev/null || true
}
"#;

const FISH_DEACTIVATE: &str = r#"functions -q deactivate; and deactivate
function deactivate --description 'Leave the tier tstore env activated'
    if set -q _TSTORE_OLD_PATH
        set -gx PATH $_TSTORE_OLD_PATH
        set -e _TSTORE_OLD_PATH
    end
    if set -q _TSTORE_OLD_PYTHONHOME
        set -gx PYTHONHOME $_TSTORE_OLD_PYTHONHOME
        set -e _TSTORE_OLD_PYTHONHOME
    end
    if functions -q _tstore_old_fish_prompt
        functions -e fish_prompt
        functions -c _tstore_old_fish_prompt fish_prompt
        functions -e _tstore_old_fish_prompt
    end
    set -e VIRTUAL_ENV
    set -e VIRTUAL_ENV_PROMPT
    functions -e deactivate
end
"#;

/// Prefixes fish's prompt with `(tier) `, keeping the previous prompt (and
/// the status it shows) to restore.
const FISH_PROMPT: &str = r#"if not set -q VIRTUAL_ENV_DISABLE_PROMPT; and functions -q fish_prompt; and not functions -q _tstore_old_fish_prompt
    functions -c fish_prompt _tstore_old_fish_prompt
    function fish_prompt
        set -l last_status $status
        printf '(%s) ' $VIRTUAL_ENV_PROMPT
        echo -n "exit $last_status" | source
        _tstore_old_fish_prompt
    end
end
"#;

/// `text` as one word in `dialect`, in single quotes.
pub fn quote(text: &str, dialect: Dialect) -> String {
    match dialect {
        Dialect::Posix => posix_quote(text),
        Dialect::Fish => fish_quote(text),
    }
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

    #[test]
    fn env_lines_define_deactivate_and_shell_lines_do_not() {
        for dialect in [Dialect::Posix, Dialect::Fish] {
            let env = shell_lines(Path::new("/v/t"), "t", dialect);
            assert!(env.contains("deactivate"), "{env}");
            assert!(env.contains("_TSTORE_OLD_PATH"), "{env}");
            let startup = startup_lines(Path::new("/v/t"), "t", dialect);
            assert!(!startup.contains("deactivate"), "{startup}");
            assert!(startup.contains("VIRTUAL_ENV_PROMPT"), "{startup}");
        }
        let posix = startup_lines(Path::new("/v/t"), "t", Dialect::Posix);
        assert!(
            posix.contains("case \"${PATH-}\" in '/v/t/bin'|'/v/t/bin':*) ;;"),
            "{posix}"
        );
        let fish = startup_lines(Path::new("/v/t"), "t", Dialect::Fish);
        assert!(
            fish.contains("test \"$PATH[1]\" = '/v/t/bin'; or set -gx PATH"),
            "{fish}"
        );
        assert!(
            fish.contains("functions -c fish_prompt _tstore_old_fish_prompt"),
            "{fish}"
        );
    }
}

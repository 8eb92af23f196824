//! Settings a flag, an environment variable or tiers.toml can give, in
//! that order of precedence (as uv's `UV_*` variables): a flag beats its
//! variable, a variable beats tiers.toml, tiers.toml beats the default.
//!
//! clap reads the flags; this module reads the variables (clap's own `env`
//! support cannot name the variable in its error for a bad value) and
//! applies them where no flag was given.

use anyhow::bail;
use tstore::config::{BytecodeMode, LinkMode};

use super::{Cli, Command};

pub const OFFLINE: &str = "TSTORE_OFFLINE";
pub const FROZEN: &str = "TSTORE_FROZEN";
pub const LINK_MODE: &str = "TSTORE_LINK_MODE";
pub const QUIET: &str = "TSTORE_QUIET";
pub const VERBOSE: &str = "TSTORE_VERBOSE";
pub const NO_PROGRESS: &str = "TSTORE_NO_PROGRESS";
pub const CONCURRENT_DOWNLOADS: &str = "TSTORE_CONCURRENT_DOWNLOADS";
pub const COMPILE_BYTECODE: &str = "TSTORE_COMPILE_BYTECODE";
pub const NO_STAGING: &str = "TSTORE_NO_STAGING";

/// How much tstore prints, once flags and variables are weighed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    pub quiet: bool,
    pub verbose: u8,
    pub progress: bool,
}

/// The settings of one run, from `cli`'s flags and the environment.
#[derive(Debug)]
pub struct Settings {
    pub output: Output,
    /// `TSTORE_LINK_MODE`: replaces tiers.toml's `link-mode`; `--link-mode`
    /// still beats it (the command's own option is applied later).
    pub link_mode: Option<LinkMode>,
    /// `TSTORE_COMPILE_BYTECODE`: replaces every tier's `compile-bytecode`.
    pub compile_bytecode: Option<BytecodeMode>,
    /// `TSTORE_CONCURRENT_DOWNLOADS`: how many downloads run at once.
    pub concurrent_downloads: Option<usize>,
    /// Not `TSTORE_NO_STAGING`: imports and pulls stage new shards.
    pub staging: bool,
    /// The variables that were set, as `NAME=value`, for `-v`.
    pub from_environment: Vec<String>,
}

impl Settings {
    /// Reads the variables, fills in the options of `cli.command` that no
    /// flag set, and returns the rest.
    pub fn resolve(cli: &mut Cli) -> anyhow::Result<Self> {
        Self::resolve_with(cli, &|name| std::env::var_os(name))
    }

    fn resolve_with(
        cli: &mut Cli,
        env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    ) -> anyhow::Result<Self> {
        let seen = std::cell::RefCell::new(Vec::new());
        let var = |name: &str| {
            let value = variable(name, env)?;
            if let Some(text) = &value {
                seen.borrow_mut().push(format!("{name}={text}"));
            }
            Ok::<_, anyhow::Error>(value)
        };
        let boolean = |name: &str| -> anyhow::Result<Option<bool>> {
            var(name)?.map(|text| parse_bool(name, &text)).transpose()
        };
        let output = if cli.quiet || cli.verbose > 0 {
            Output {
                quiet: cli.quiet,
                verbose: cli.verbose,
                progress: true,
            }
        } else {
            let quiet = boolean(QUIET)?.unwrap_or(false);
            let verbose = boolean(VERBOSE)?.unwrap_or(false);
            if quiet && verbose {
                bail!("{QUIET} and {VERBOSE} are both on: unset one of them");
            }
            Output {
                quiet,
                verbose: u8::from(verbose),
                progress: true,
            }
        };
        let output = Output {
            progress: !(cli.no_progress || boolean(NO_PROGRESS)?.unwrap_or(false)),
            ..output
        };
        let link_mode = var(LINK_MODE)?
            .map(|text| {
                text.parse::<LinkMode>().map_err(|_| {
                    anyhow::anyhow!(
                        "{LINK_MODE}={text:?} is not a link mode: use auto, reflink, hardlink or \
                         copy (or unset it)"
                    )
                })
            })
            .transpose()?;
        let compile_bytecode = var(COMPILE_BYTECODE)?
            .map(|text| {
                text.parse::<BytecodeMode>().map_err(|_| {
                    anyhow::anyhow!(
                        "{COMPILE_BYTECODE}={text:?} is not a bytecode mode: use true, lazy or \
                         false (or unset it)"
                    )
                })
            })
            .transpose()?;
        let concurrent_downloads = var(CONCURRENT_DOWNLOADS)?
            .map(|text| match text.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(anyhow::anyhow!(
                    "{CONCURRENT_DOWNLOADS}={text:?} is not a number of downloads: use a whole \
                     number of 1 or more (or unset it)"
                )),
            })
            .transpose()?;
        let staging = !boolean(NO_STAGING)?.unwrap_or(false);
        let offline = boolean(OFFLINE)?.unwrap_or(false);
        let frozen = boolean(FROZEN)?.unwrap_or(false);
        match &mut cli.command {
            Command::Fetch { lock, .. }
            | Command::Materialize { lock, .. }
            | Command::Run { lock, .. } => {
                lock.offline |= offline;
                lock.frozen |= frozen;
            }
            Command::Lock { offline: flag, .. } => *flag |= offline,
            _ => {}
        }
        Ok(Self {
            output,
            link_mode,
            compile_bytecode,
            concurrent_downloads,
            staging,
            from_environment: seen.into_inner(),
        })
    }
}

/// A variable's text; unset and empty are the same (as for uv).
fn variable(
    name: &str,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> anyhow::Result<Option<String>> {
    match env(name) {
        None => Ok(None),
        Some(value) if value.is_empty() => Ok(None),
        Some(value) => match value.into_string() {
            Ok(text) => Ok(Some(text)),
            Err(value) => bail!("{name}={value:?} is not valid UTF-8: fix or unset it"),
        },
    }
}

/// uv's words for on and off, in any case.
fn parse_bool(name: &str, text: &str) -> anyhow::Result<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => bail!(
            "{name}={text:?} is not a boolean: use 1, true, yes or on to turn it on, 0, false, no \
             or off to turn it off (or unset it)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn resolve(args: &[&str], vars: &[(&str, &str)]) -> anyhow::Result<(Settings, Cli)> {
        let mut cli =
            Cli::try_parse_from(std::iter::once("tstore").chain(args.iter().copied())).unwrap();
        let env = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| std::ffi::OsString::from(v))
        };
        let settings = Settings::resolve_with(&mut cli, &env)?;
        Ok((settings, cli))
    }

    fn lock_args(cli: &Cli) -> super::super::LockArgs {
        match &cli.command {
            Command::Materialize { lock, .. } => *lock,
            other => panic!("not materialize: {other:?}"),
        }
    }

    #[test]
    fn booleans_take_uvs_words_in_any_case() {
        for on in ["1", "true", "YES", "On"] {
            let (_, cli) = resolve(&["materialize", "t"], &[(OFFLINE, on)]).unwrap();
            assert!(lock_args(&cli).offline, "{on}");
        }
        for off in ["0", "false", "no", "OFF", ""] {
            let (_, cli) = resolve(&["materialize", "t"], &[(OFFLINE, off)]).unwrap();
            assert!(!lock_args(&cli).offline, "{off}");
        }
    }

    #[test]
    fn no_staging_is_a_boolean_that_turns_staging_off() {
        let staging =
            |vars: &[(&str, &str)]| resolve(&["import", "f"], vars).map(|(s, _)| s.staging);
        assert!(staging(&[]).unwrap());
        assert!(!staging(&[(NO_STAGING, "1")]).unwrap());
        assert!(!staging(&[(NO_STAGING, "yes")]).unwrap());
        assert!(staging(&[(NO_STAGING, "0")]).unwrap());
        let err = staging(&[(NO_STAGING, "please")]).unwrap_err().to_string();
        assert!(
            err.starts_with("TSTORE_NO_STAGING=\"please\" is not a boolean"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_value_names_the_variable_and_the_accepted_words() {
        let err = resolve(&["materialize", "t"], &[(FROZEN, "maybe")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("TSTORE_FROZEN=\"maybe\" is not a boolean"),
            "{err}"
        );
        assert!(
            err.contains("1, true, yes or on") && err.contains("0, false, no"),
            "{err}"
        );
        let err = resolve(&["list"], &[(LINK_MODE, "symlink")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("TSTORE_LINK_MODE=\"symlink\""), "{err}");
        assert!(err.contains("auto, reflink, hardlink or copy"), "{err}");
        for bad in ["0", "-3", "many"] {
            let err = resolve(&["fetch"], &[(CONCURRENT_DOWNLOADS, bad)])
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("TSTORE_CONCURRENT_DOWNLOADS={bad:?}")),
                "{err}"
            );
        }
        let (settings, _) = resolve(&["fetch"], &[(CONCURRENT_DOWNLOADS, "32")]).unwrap();
        assert_eq!(settings.concurrent_downloads, Some(32));
        let err = resolve(&["list"], &[(COMPILE_BYTECODE, "yes")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("TSTORE_COMPILE_BYTECODE=\"yes\" is not a bytecode mode")
                && err.contains("true, lazy or false"),
            "{err}"
        );
        for (text, mode) in [
            ("lazy", BytecodeMode::Lazy),
            ("false", BytecodeMode::Off),
            ("true", BytecodeMode::Compile),
        ] {
            let (settings, _) = resolve(&["list"], &[(COMPILE_BYTECODE, text)]).unwrap();
            assert_eq!(settings.compile_bytecode, Some(mode));
        }
    }

    #[test]
    fn a_flag_beats_the_output_variables() {
        let (settings, _) = resolve(&["-v", "list"], &[(QUIET, "1")]).unwrap();
        assert_eq!(settings.output.verbose, 1);
        assert!(!settings.output.quiet);
        let (settings, _) = resolve(&["list"], &[(QUIET, "1")]).unwrap();
        assert!(settings.output.quiet);
        let err = resolve(&["list"], &[(QUIET, "1"), (VERBOSE, "yes")]).unwrap_err();
        assert!(err.to_string().contains("both on"), "{err}");
        let (settings, _) = resolve(&["list"], &[(NO_PROGRESS, "1")]).unwrap();
        assert!(!settings.output.progress);
        assert_eq!(settings.from_environment, ["TSTORE_NO_PROGRESS=1"]);
    }
}

//! pip-style requirement files: one PEP 508 requirement a line, `#`
//! comments, `\` continuations, `-r FILE` includes and `-c FILE` constraints
//! (paths relative to the including file).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::ConfigError;

/// One requirement with the place it was written, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequirementLine {
    /// The requirement as written (trimmed).
    pub text: String,
    /// Normalized distribution name (PEP 503).
    pub name: String,
    /// `file:line[:col]` it came from.
    pub origin: String,
}

impl RequirementLine {
    pub fn parse(text: &str, origin: String) -> Result<Self, ConfigError> {
        let text = text.trim();
        let parsed =
            uv_pep508::Requirement::<uv_pep508::VerbatimUrl>::from_str(text).map_err(|err| {
                ConfigError::Invalid {
                    location: origin.clone(),
                    message: format!(
                        "`{text}` is not a valid requirement (PEP 508, e.g. `fastapi>=0.105`): {}",
                        first_line(&err.to_string())
                    ),
                }
            })?;
        Ok(Self {
            text: text.to_string(),
            name: parsed.name.to_string(),
            origin,
        })
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// Reads `path` (and what it includes) into `requirements`/`constraints`.
/// `stack` holds the files being read, to report include cycles.
pub(super) fn read_file(
    path: &Path,
    stack: &mut Vec<PathBuf>,
    requirements: &mut Vec<RequirementLine>,
    constraints: &mut Vec<RequirementLine>,
) -> Result<(), ConfigError> {
    let canonical = fs_err::canonicalize(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if stack.contains(&canonical) {
        stack.push(canonical);
        let chain: Vec<String> = stack.iter().map(|p| p.display().to_string()).collect();
        return Err(ConfigError::Invalid {
            location: chain[chain.len() - 2].clone(),
            message: format!(
                "requirement files include each other in a cycle ({}): remove one `-r` line",
                chain.join(" -> ")
            ),
        });
    }
    let text = fs_err::read_to_string(&canonical).map_err(|source| ConfigError::Read {
        path: canonical.clone(),
        source,
    })?;
    stack.push(canonical.clone());
    let dir = canonical.parent().unwrap_or(Path::new(".")).to_path_buf();

    for (line_no, line) in logical_lines(&text) {
        let origin = format!("{}:{line_no}", canonical.display());
        let include = |arg: &str| -> Result<PathBuf, ConfigError> {
            let target = dir.join(arg.trim());
            if target.is_file() {
                Ok(target)
            } else {
                Err(ConfigError::Invalid {
                    location: origin.clone(),
                    message: format!(
                        "included file {} does not exist (paths are relative to the including file)",
                        target.display()
                    ),
                })
            }
        };
        if let Some(arg) = option_argument(&line, &["-r", "--requirement"]) {
            read_file(&include(arg)?, stack, requirements, constraints)?;
        } else if let Some(arg) = option_argument(&line, &["-c", "--constraint"]) {
            // Everything in a constraints file is a constraint.
            let mut nested = Vec::new();
            read_file(&include(arg)?, stack, &mut nested, constraints)?;
            constraints.extend(nested);
        } else if line.starts_with('-') {
            return Err(ConfigError::Invalid {
                location: origin,
                message: format!(
                    "`{line}` is not supported in requirement files here: set indexes with \
                     `index-url`/`extra-index-urls`/`find-links` in tiers.toml, and write \
                     requirements as plain PEP 508 lines"
                ),
            });
        } else {
            requirements.push(RequirementLine::parse(&line, origin)?);
        }
    }
    stack.pop();
    Ok(())
}

/// `-r file`, `-rfile`, `--requirement=file`, `--requirement file`.
fn option_argument<'a>(line: &'a str, names: &[&str]) -> Option<&'a str> {
    for name in names {
        if let Some(rest) = line.strip_prefix(name) {
            let rest = rest.strip_prefix('=').unwrap_or(rest);
            if name.starts_with("--")
                && !(rest.starts_with(char::is_whitespace) || line.contains('='))
            {
                continue;
            }
            let arg = rest.trim();
            if !arg.is_empty() {
                return Some(arg);
            }
        }
    }
    None
}

/// Lines with comments stripped and `\` continuations joined, numbered by
/// the line they start on.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let without_comment = match raw.find(" #").or_else(|| raw.find("\t#")) {
            Some(i) => &raw[..i],
            None if raw.trim_start().starts_with('#') => "",
            None => raw,
        };
        let (start, mut acc) = pending.take().unwrap_or((index + 1, String::new()));
        let trimmed = without_comment.trim_end();
        if let Some(body) = trimmed.strip_suffix('\\') {
            acc.push_str(body);
            pending = Some((start, acc));
            continue;
        }
        acc.push_str(trimmed);
        let line = acc.trim().to_string();
        if !line.is_empty() {
            out.push((start, line));
        }
    }
    if let Some((start, acc)) = pending
        && !acc.trim().is_empty()
    {
        out.push((start, acc.trim().to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_includes_comments_and_continuations() {
        let dir = tempfile::tempdir().unwrap();
        fs_err::write(
            dir.path().join("base.txt"),
            "pydantic>=2  # models\n# only a comment\n",
        )
        .unwrap();
        fs_err::write(
            dir.path().join("web.txt"),
            "-r base.txt\nfastapi \\\n  >=0.105\n-c pins.txt\n",
        )
        .unwrap();
        fs_err::write(dir.path().join("pins.txt"), "starlette<1\n").unwrap();
        let (mut reqs, mut cons) = (Vec::new(), Vec::new());
        read_file(
            &dir.path().join("web.txt"),
            &mut Vec::new(),
            &mut reqs,
            &mut cons,
        )
        .unwrap();
        let texts: Vec<_> = reqs.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts, ["pydantic>=2", "fastapi   >=0.105"]);
        assert!(reqs[1].origin.ends_with("web.txt:2"), "{}", reqs[1].origin);
        assert_eq!(cons[0].name, "starlette");
    }

    #[test]
    fn include_cycle_and_unsupported_option_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        fs_err::write(dir.path().join("a.txt"), "-r b.txt\n").unwrap();
        fs_err::write(dir.path().join("b.txt"), "-r a.txt\n").unwrap();
        let err = read_file(
            &dir.path().join("a.txt"),
            &mut Vec::new(),
            &mut Vec::new(),
            &mut Vec::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("cycle"), "{err}");

        fs_err::write(dir.path().join("c.txt"), "x\n-e ./local\n").unwrap();
        let err = read_file(
            &dir.path().join("c.txt"),
            &mut Vec::new(),
            &mut Vec::new(),
            &mut Vec::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("c.txt:2") && err.contains("not supported"),
            "{err}"
        );
    }
}

//! pip-style requirement files: one PEP 508 requirement a line, `#`
//! comments, `\` continuations, `-r FILE` includes and `-c FILE` constraints
//! (paths relative to the including file), local projects (`-e PATH` for
//! editable, a bare `./path` for a built wheel, as pip reads them) and the
//! index options `--index-url`, `--extra-index-url`, `--find-links`,
//! `--no-index`, which apply to the tier that uses the file.

use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use super::ConfigError;

/// One requirement with the place it was written, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequirementLine {
    /// The requirement as uv gets it (trimmed; a local project's path is
    /// relative to tiers.toml, where uv runs).
    pub text: String,
    /// Normalized distribution name (PEP 503); empty for a local project
    /// whose name is only known once uv reads its metadata.
    pub name: String,
    /// `file:line[:col]` it came from.
    pub origin: String,
    pub local: Option<LocalProject>,
}

/// A project folder on this machine, installed from its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalProject {
    /// Absolute.
    pub path: PathBuf,
    /// Linked to the source by a `.pth` file (edits take effect at once)
    /// rather than built into a wheel.
    pub editable: bool,
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
            local: None,
        })
    }

    /// A local project at `path` (absolute), written for uv relative to
    /// `config_dir` so locks and their input hashes do not depend on where
    /// the checkout is.
    pub fn local(
        path: &Path,
        editable: bool,
        origin: String,
        config_dir: &Path,
    ) -> Result<Self, ConfigError> {
        let path = normalize(path);
        if !crate::local::is_project(&path) {
            return Err(ConfigError::Invalid {
                location: origin,
                message: format!(
                    "{} is not a Python project folder (it has no pyproject.toml, setup.py or \
                     setup.cfg); local requirements name the folder that holds one",
                    path.display()
                ),
            });
        }
        let relative = relative_path(&path, &normalize(config_dir));
        let shown = match &relative {
            Some(rel) if rel.starts_with("..") => rel.display().to_string(),
            Some(rel) if rel.as_os_str().is_empty() => ".".to_string(),
            Some(rel) => format!("./{}", rel.display()),
            None => path.display().to_string(),
        };
        Ok(Self {
            text: if editable {
                format!("-e {shown}")
            } else {
                shown
            },
            name: project_name(&path).unwrap_or_default(),
            origin,
            local: Some(LocalProject { path, editable }),
        })
    }
}

/// Whether a requirement string names a folder rather than a package.
pub fn looks_like_path(text: &str) -> bool {
    text == "." || text == ".." || ["./", "../", "/", "~/"].iter().any(|p| text.starts_with(p))
}

/// The project's name when its metadata states it statically.
fn project_name(dir: &Path) -> Option<String> {
    let normalize_name = |n: &str| {
        uv_normalize::PackageName::from_str(n.trim())
            .ok()
            .map(|n| n.to_string())
    };
    if let Ok(text) = fs_err::read_to_string(dir.join("pyproject.toml"))
        && let Ok(doc) = text.parse::<toml::Table>()
        && let Some(name) = doc
            .get("project")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
    {
        return normalize_name(name);
    }
    let text = fs_err::read_to_string(dir.join("setup.cfg")).ok()?;
    let mut in_metadata = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_metadata = line == "[metadata]";
        } else if in_metadata
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "name"
        {
            return normalize_name(value);
        }
    }
    None
}

/// `path` without `.` and with `..` applied (no symlinks resolved).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// `path` relative to `base` (both absolute and normalized).
fn relative_path(path: &Path, base: &Path) -> Option<PathBuf> {
    if !path.is_absolute() || !base.is_absolute() {
        return None;
    }
    let path: Vec<Component> = path.components().collect();
    let base: Vec<Component> = base.components().collect();
    let common = path.iter().zip(&base).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..base.len() {
        out.push("..");
    }
    for part in &path[common..] {
        out.push(part);
    }
    Some(out)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// Index options found in requirement files, with where each was written.
#[derive(Debug, Clone, Default)]
pub struct IndexLines {
    pub index_url: Option<(String, String)>,
    pub extra_index_urls: Vec<String>,
    /// Directories made absolute; URLs as written.
    pub find_links: Vec<String>,
    pub no_index: bool,
}

impl IndexLines {
    pub fn is_empty(&self) -> bool {
        self.index_url.is_none()
            && self.extra_index_urls.is_empty()
            && self.find_links.is_empty()
            && !self.no_index
    }
}

/// What reading requirement files collects for a tier.
#[derive(Debug, Default)]
pub struct Collected {
    pub requirements: Vec<RequirementLine>,
    pub constraints: Vec<RequirementLine>,
    pub index: IndexLines,
}

/// Reads `path` (and what it includes) into `out`. `stack` holds the
/// files being read, to report include cycles; `config_dir` is where uv
/// runs, for local project paths.
pub(super) fn read_file(
    path: &Path,
    stack: &mut Vec<PathBuf>,
    out: &mut Collected,
    config_dir: &Path,
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
        let local_path = |arg: &str| normalize(&super::expand_path(arg.trim(), &dir));
        if let Some(arg) = option_argument(&line, &["-r", "--requirement"]) {
            read_file(&include(arg)?, stack, out, config_dir)?;
        } else if let Some(arg) = option_argument(&line, &["-c", "--constraint"]) {
            // Everything in a constraints file is a constraint.
            let mut nested = Collected::default();
            read_file(&include(arg)?, stack, &mut nested, config_dir)?;
            out.constraints.extend(nested.requirements);
            out.constraints.extend(nested.constraints);
            merge_index(&mut out.index, nested.index)?;
        } else if let Some(arg) = option_argument(&line, &["-e", "--editable"]) {
            out.requirements.push(RequirementLine::local(
                &local_path(arg),
                true,
                origin,
                config_dir,
            )?);
        } else if let Some(arg) = option_argument(&line, &["-i", "--index-url"]) {
            let lines = IndexLines {
                index_url: Some((arg.to_string(), origin)),
                ..IndexLines::default()
            };
            merge_index(&mut out.index, lines)?;
        } else if let Some(arg) = option_argument(&line, &["--extra-index-url"]) {
            out.index.extra_index_urls.push(arg.to_string());
        } else if let Some(arg) = option_argument(&line, &["-f", "--find-links"]) {
            out.index.find_links.push(if arg.contains("://") {
                arg.to_string()
            } else {
                local_path(arg).display().to_string()
            });
        } else if line == "--no-index" {
            out.index.no_index = true;
        } else if line.starts_with('-') {
            return Err(ConfigError::Invalid {
                location: origin,
                message: format!(
                    "`{line}` is not supported in requirement files here: tstore reads `-r`, `-c`, \
                     `-e`, `--index-url`, `--extra-index-url`, `--find-links` and `--no-index`; \
                     write requirements as plain PEP 508 lines"
                ),
            });
        } else if looks_like_path(&line) {
            // As pip reads it: a bare path is built and installed, not editable.
            out.requirements.push(RequirementLine::local(
                &local_path(&line),
                false,
                origin,
                config_dir,
            )?);
        } else {
            out.requirements
                .push(RequirementLine::parse(&line, origin)?);
        }
    }
    stack.pop();
    Ok(())
}

/// Adds `more` to `into`; two different `--index-url`s are an error.
pub(super) fn merge_index(into: &mut IndexLines, more: IndexLines) -> Result<(), ConfigError> {
    if let Some((url, origin)) = more.index_url {
        match &into.index_url {
            Some((existing, first)) if *existing != url => {
                return Err(ConfigError::Invalid {
                    location: origin,
                    message: format!(
                        "`--index-url {url}` conflicts with `--index-url {existing}` from {first}: \
                         a tier has one main index; make the other an `--extra-index-url`"
                    ),
                });
            }
            _ => into.index_url = Some((url, origin)),
        }
    }
    into.extra_index_urls.extend(more.extra_index_urls);
    into.find_links.extend(more.find_links);
    into.no_index |= more.no_index;
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
        let mut out = Collected::default();
        read_file(
            &dir.path().join("web.txt"),
            &mut Vec::new(),
            &mut out,
            dir.path(),
        )
        .unwrap();
        let (reqs, cons) = (out.requirements, out.constraints);
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
            &mut Collected::default(),
            dir.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("cycle"), "{err}");

        fs_err::write(dir.path().join("c.txt"), "x\n--pre\n").unwrap();
        let err = read_file(
            &dir.path().join("c.txt"),
            &mut Vec::new(),
            &mut Collected::default(),
            dir.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("c.txt:2") && err.contains("not supported"),
            "{err}"
        );
    }

    #[test]
    fn local_projects_and_index_options() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for project in ["libs/alpha", "libs/beta"] {
            fs_err::create_dir_all(root.join(project)).unwrap();
        }
        fs_err::write(
            root.join("libs/alpha/pyproject.toml"),
            "[project]\nname = \"Alpha_Lib\"\n",
        )
        .unwrap();
        fs_err::write(root.join("libs/beta/setup.py"), "").unwrap();
        fs_err::create_dir_all(root.join("project/requirements")).unwrap();
        fs_err::write(
            root.join("project/requirements/local.txt"),
            "-e ../../libs/alpha\n../../libs/beta\n--index-url https://example/simple\n\
             --extra-index-url https://extra/simple\n-f ./wheels\n",
        )
        .unwrap();
        let mut out = Collected::default();
        read_file(
            &root.join("project/requirements/local.txt"),
            &mut Vec::new(),
            &mut out,
            &root.join("project"),
        )
        .unwrap();
        let texts: Vec<_> = out.requirements.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts, ["-e ../libs/alpha", "../libs/beta"]);
        assert_eq!(out.requirements[0].name, "alpha-lib");
        assert!(out.requirements[0].local.as_ref().unwrap().editable);
        assert!(!out.requirements[1].local.as_ref().unwrap().editable);
        assert_eq!(
            out.index.index_url.as_ref().unwrap().0,
            "https://example/simple"
        );
        assert_eq!(out.index.extra_index_urls, ["https://extra/simple"]);
        assert!(out.index.find_links[0].ends_with("project/requirements/wheels"));

        fs_err::write(root.join("project/bad.txt"), "./nothing-here\n").unwrap();
        let err = read_file(
            &root.join("project/bad.txt"),
            &mut Vec::new(),
            &mut Collected::default(),
            &root.join("project"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not a Python project folder"), "{err}");
    }
}

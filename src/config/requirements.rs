//! pip-style requirement files, read as pip and uv read them.
//!
//! Text: UTF-8 (a UTF-8 byte-order mark is skipped; UTF-16 with its mark is
//! decoded), lines ending in `\n`, `\r\n` or `\r`, the last one with or
//! without an end. A line ending in `\` continues on the next one, unless it
//! is a comment line; a comment line also ends a continuation. `#` starts a
//! comment at the start of a line or after whitespace only, so `#egg=` and
//! `#sha256=` in URLs stay. `${VAR}` is replaced by the environment variable
//! (uv-pep508's `expand_env_vars`), after comments are removed.
//!
//! Lines: a PEP 508 requirement (parsed by uv-pep508), optionally followed by
//! `--hash=ALGO:HEX` options; `-r`/`--requirement` and `-c`/`--constraint`
//! (paths relative to the including file); local projects (`-e PATH` for
//! editable, a bare `./path` or `file:` URL for a built wheel, relative to the
//! including file); the index options `--index-url`, `--extra-index-url`,
//! `--find-links`, `--no-index`, which apply to the tier that uses the file.
//! Everything else a tier cannot honour (VCS and remote archive URLs, pip's
//! other options) is refused with `file:line` and the reason.
//!
//! uv's own reader, the crate `uv-requirements-txt`, is not used: see
//! ARCHITECTURE.md ("Requirement files").

mod options;
mod text;

use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use super::ConfigError;
use options::{hash_options, refusal, split_option, split_trailing_options};
use text::{decode, logical_lines};

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
    /// `ALGO:HEX` digests from `--hash` options, as written; the file the
    /// lock pins must match one (`lock::requirement_hashes`).
    pub hashes: Vec<String>,
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
        if let Some(uv_pep508::VersionOrUrl::Url(url)) = &parsed.version_or_url
            && let Some(why) = unsupported_url(url.as_str())
        {
            return Err(ConfigError::Invalid {
                location: origin,
                message: format!("`{text}`: {why}"),
            });
        }
        Ok(Self {
            text: text.to_string(),
            name: parsed.name.to_string(),
            origin,
            local: None,
            hashes: Vec::new(),
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
        if path.is_file() {
            return Err(ConfigError::Invalid {
                location: origin,
                message: format!(
                    "{} is a file: tstore installs a local project from its folder (the one \
                     with pyproject.toml, setup.py or setup.cfg); for a wheel or sdist, put it in \
                     a `--find-links` folder and require it by name",
                    path.display()
                ),
            });
        }
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
            hashes: Vec::new(),
        })
    }
}

/// Whether a requirement string names a folder rather than a package.
pub fn looks_like_path(text: &str) -> bool {
    text == "." || text == ".." || ["./", "../", "/", "~/"].iter().any(|p| text.starts_with(p))
}

/// Why a tier cannot install from `url`, if it cannot: tstore's lock reader
/// installs packages from an index and local folders only.
fn unsupported_url(url: &str) -> Option<&'static str> {
    let (scheme, _) = uv_pep508::split_scheme(url)?;
    match uv_pep508::Scheme::parse(scheme)? {
        uv_pep508::Scheme::File => None,
        uv_pep508::Scheme::Http | uv_pep508::Scheme::Https => Some(
            "a direct URL to an archive is not supported (the lock reader installs from an \
             index or a local folder); publish the file to an index or a `--find-links` folder \
             and require it by name and version",
        ),
        _ => Some(
            "VCS requirements are not supported (the lock reader cannot install from a \
             repository); check the repository out and name its folder (`-e ./path`), or \
             require a released version",
        ),
    }
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
    let bytes = fs_err::read(&canonical).map_err(|source| ConfigError::Read {
        path: canonical.clone(),
        source,
    })?;
    let text = decode(&bytes).ok_or_else(|| ConfigError::Invalid {
        location: canonical.display().to_string(),
        message: "not UTF-8 text (requirement files are read as UTF-8, or as UTF-16 when they \
                  start with its byte-order mark)"
            .to_string(),
    })?;
    stack.push(canonical.clone());
    let file = FileContext {
        dir: canonical.parent().unwrap_or(Path::new("/")).to_path_buf(),
        config_dir,
    };
    for (line_no, line) in logical_lines(&text) {
        let origin = format!("{}:{line_no}", canonical.display());
        if line.starts_with('-') {
            file.option(&line, origin, stack, out)?;
        } else {
            out.requirements.push(file.requirement(&line, origin)?);
        }
    }
    stack.pop();
    Ok(())
}

/// The value of option `name`, checked: `None` when the option takes no
/// value and is applied here (`--no-index`); an error for an option that
/// needs a value and has none, or one tstore does not accept.
fn option_value<'v>(
    name: &str,
    value: Option<&'v str>,
    origin: &str,
    out: &mut Collected,
) -> Result<Option<&'v str>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        location: origin.to_string(),
        message,
    };
    let takes_value = matches!(
        name,
        "-r" | "--requirement"
            | "-c"
            | "--constraint"
            | "-e"
            | "--editable"
            | "-i"
            | "--index-url"
            | "--extra-index-url"
            | "-f"
            | "--find-links"
    );
    match (takes_value, value) {
        (true, Some(value)) => Ok(Some(value)),
        (true, None) => Err(invalid(format!("`{name}` needs a value"))),
        (false, None) if name == "--no-index" => {
            out.index.no_index = true;
            Ok(None)
        }
        (false, Some(value)) if name == "--no-index" => Err(invalid(format!(
            "`--no-index` takes no value (found `{value}`)"
        ))),
        (false, _) => Err(invalid(refusal(name))),
    }
}

/// Where the file being read is, for the paths written in it.
struct FileContext<'a> {
    /// The including file's folder: includes and local paths are relative
    /// to it.
    dir: PathBuf,
    /// tiers.toml's folder, where uv runs.
    config_dir: &'a Path,
}

impl FileContext<'_> {
    /// A line that starts with an option.
    fn option(
        &self,
        line: &str,
        origin: String,
        stack: &mut Vec<PathBuf>,
        out: &mut Collected,
    ) -> Result<(), ConfigError> {
        let (name, value) = split_option(line);
        let Some(value) = option_value(name, value, &origin, out)? else {
            return Ok(());
        };
        match name {
            "-r" | "--requirement" => {
                read_file(&self.include(value, &origin)?, stack, out, self.config_dir)
            }
            "-c" | "--constraint" => self.constraints(value, &origin, stack, out),
            "-e" | "--editable" => {
                out.requirements.push(self.editable(value, origin)?);
                Ok(())
            }
            "-i" | "--index-url" => {
                let lines = IndexLines {
                    index_url: Some((value.to_string(), origin)),
                    ..IndexLines::default()
                };
                merge_index(&mut out.index, lines)
            }
            "--extra-index-url" => {
                out.index.extra_index_urls.push(value.to_string());
                Ok(())
            }
            _ => {
                // `-f` / `--find-links`: a URL, or a folder relative to the file.
                out.index.find_links.push(if value.contains("://") {
                    value.to_string()
                } else {
                    self.path(value).display().to_string()
                });
                Ok(())
            }
        }
    }

    /// A `-c FILE` line. Everything a constraints file holds or includes is
    /// a constraint, and a constraint names a package.
    fn constraints(
        &self,
        value: &str,
        origin: &str,
        stack: &mut Vec<PathBuf>,
        out: &mut Collected,
    ) -> Result<(), ConfigError> {
        let mut nested = Collected::default();
        read_file(
            &self.include(value, origin)?,
            stack,
            &mut nested,
            self.config_dir,
        )?;
        if let Some(local) = nested.requirements.iter().find(|r| r.local.is_some()) {
            return Err(ConfigError::Invalid {
                location: local.origin.clone(),
                message: format!(
                    "`{}` is a local project, read as a constraint through `-c` at \
                     {origin}: a constraint limits the versions of a named package; \
                     include this file with `-r` instead",
                    local.text
                ),
            });
        }
        out.constraints.extend(nested.requirements);
        out.constraints.extend(nested.constraints);
        merge_index(&mut out.index, nested.index)
    }

    /// The file a `-r` or `-c` line names.
    fn include(&self, value: &str, origin: &str) -> Result<PathBuf, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            location: origin.to_string(),
            message,
        };
        let target = match value.split_once("://") {
            Some(("file", _)) => file_url_path(value)
                .ok_or_else(|| invalid(format!("`{value}` is not a file URL of a local path")))?,
            Some(_) => {
                return Err(invalid(format!(
                    "`{value}`: requirement files are read from this machine only; save it \
                     beside the including file and include it by path"
                )));
            }
            None => self.path(value),
        };
        if target.is_file() {
            Ok(target)
        } else {
            Err(invalid(format!(
                "included file {} does not exist (paths are relative to the including file)",
                target.display()
            )))
        }
    }

    /// `-e TARGET`: a local project folder, linked editable.
    fn editable(&self, value: &str, origin: String) -> Result<RequirementLine, ConfigError> {
        let (target, options) = split_trailing_options(value);
        if let Some(option) = options.split_whitespace().next() {
            let name = split_option(option).0;
            return Err(ConfigError::Invalid {
                location: origin,
                message: if name == "--hash" {
                    "an editable project is linked from its folder: there is no file for \
                     `--hash` to check; remove the hash"
                        .to_string()
                } else {
                    refusal(name)
                },
            });
        }
        let path = self.local_target(target, &origin)?;
        RequirementLine::local(&path, true, origin, self.config_dir)
    }

    /// A requirement line: PEP 508, a local path or a URL, then options.
    fn requirement(&self, line: &str, origin: String) -> Result<RequirementLine, ConfigError> {
        let (target, options) = split_trailing_options(line);
        let hashes = hash_options(options, &origin)?;
        let mut requirement = if looks_like_path(target) || target.starts_with("file:") {
            let path = self.local_target(target, &origin)?;
            if !hashes.is_empty() {
                return Err(ConfigError::Invalid {
                    location: origin,
                    message: format!(
                        "`{target}` is built from its folder: there is no file for `--hash` to \
                         check; remove the hash"
                    ),
                });
            }
            RequirementLine::local(&path, false, origin, self.config_dir)?
        } else if let Some(why) = unsupported_url(target) {
            return Err(ConfigError::Invalid {
                location: origin,
                message: format!("`{target}`: {why}"),
            });
        } else if (target.ends_with(".txt") || target.ends_with(".in"))
            && self.dir.join(target).is_file()
        {
            return Err(ConfigError::Invalid {
                location: origin,
                message: format!(
                    "`{target}` is a file beside this one, not a package: include it with \
                     `-r {target}`"
                ),
            });
        } else {
            RequirementLine::parse(target, origin)?
        };
        requirement.hashes = hashes;
        Ok(requirement)
    }

    /// The folder a local project line names (`./x`, `../x`, `/x`, `~/x`,
    /// a bare name after `-e`, or a `file:` URL); VCS and remote URLs are
    /// refused.
    fn local_target(&self, target: &str, origin: &str) -> Result<PathBuf, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            location: origin.to_string(),
            message,
        };
        if let Some(why) = unsupported_url(target) {
            return Err(invalid(format!("`{target}`: {why}")));
        }
        let path = if target.starts_with("file:") {
            file_url_path(target)
                .ok_or_else(|| invalid(format!("`{target}` is not a file URL of a local path")))?
        } else {
            self.path(target)
        };
        if target.ends_with(']')
            && let Some((folder, _)) = target.split_once('[')
        {
            return Err(invalid(format!(
                "`{target}`: extras of a local project are not supported; require \
                 `{folder}` and list what the extra adds in the same set"
            )));
        }
        Ok(path)
    }

    /// A path written in the file, made absolute.
    fn path(&self, written: &str) -> PathBuf {
        normalize(&super::expand_path(written.trim(), &self.dir))
    }
}

/// The local path of a `file:` URL.
fn file_url_path(text: &str) -> Option<PathBuf> {
    url::Url::parse(text).ok()?.to_file_path().ok()
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
    fn options_take_a_value_or_none() {
        let mut out = Collected::default();
        let value = |name, value, out: &mut Collected| {
            option_value(name, value, "req.txt:3", out).map_err(|e| e.to_string())
        };
        assert_eq!(value("-r", Some("a.txt"), &mut out), Ok(Some("a.txt")));
        assert_eq!(
            value("--index-url", None, &mut out),
            Err("req.txt:3: `--index-url` needs a value".to_string())
        );
        assert!(!out.index.no_index);
        assert_eq!(value("--no-index", None, &mut out), Ok(None));
        assert!(out.index.no_index);
        assert_eq!(
            value("--no-index", Some("x"), &mut out),
            Err("req.txt:3: `--no-index` takes no value (found `x`)".to_string())
        );
        let refused = value("--pre", None, &mut out).unwrap_err();
        assert!(refused.contains("not supported"), "{refused}");
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

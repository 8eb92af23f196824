//! Reading PEP 751 lock files (`pylock.*.toml`) and choosing, for one
//! interpreter, the distribution to install for each package: the package's
//! marker is evaluated, then the best wheel by the interpreter's tags, else
//! the sdist.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, bail};
use serde::Deserialize;
use uv_distribution_filename::WheelFilename;
use uv_pep508::MarkerTree;
use uv_platform_tags::TagCompatibility;

use crate::dist::{Location, PinnedFile, Selected, Source};
use crate::interpreter::Interpreter;

/// The header line tstore prepends to the locks it writes.
pub const INPUT_HASH_PREFIX: &str = "# tstore-input-hash: ";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PyLock {
    pub lock_version: String,
    #[serde(default)]
    pub packages: Vec<Package>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Package {
    pub name: String,
    pub version: Option<String>,
    pub marker: Option<String>,
    #[serde(default)]
    pub wheels: Vec<Artifact>,
    pub sdist: Option<Artifact>,
    pub directory: Option<toml::Value>,
    pub vcs: Option<toml::Value>,
    pub archive: Option<toml::Value>,
}

/// A wheel or sdist entry: where it is and what it must hash to.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Artifact {
    pub name: Option<String>,
    pub url: Option<String>,
    pub path: Option<String>,
    pub size: Option<u64>,
    #[serde(default)]
    pub hashes: BTreeMap<String, String>,
}

impl PyLock {
    pub fn read(path: &Path) -> anyhow::Result<(Self, String)> {
        let text = fs_err::read_to_string(path)?;
        let lock = Self::parse(&text, path)?;
        Ok((lock, text))
    }

    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Self> {
        let lock: PyLock = toml::from_str(text).map_err(|err| {
            let line = err
                .span()
                .map_or(1, |s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            anyhow::anyhow!(
                "{}:{line}: not a valid pylock.toml: {}; delete it and run `tstore lock` to write it again",
                path.display(),
                err.message().trim()
            )
        })?;
        if !lock.lock_version.starts_with("1.") {
            bail!(
                "{}: lock-version {} is not supported (only 1.x): re-create it with `tstore lock`",
                path.display(),
                lock.lock_version
            );
        }
        Ok(lock)
    }

    /// Picks what to install for `interpreter`; `lock_dir` anchors relative paths.
    pub fn select(
        &self,
        interpreter: &Interpreter,
        lock_dir: &Path,
        lock_path: &Path,
    ) -> anyhow::Result<Vec<Selected>> {
        let mut out = Vec::new();
        for package in &self.packages {
            let context = || format!("{}: package `{}`", lock_path.display(), package.name);
            if let Some(marker) = &package.marker {
                let tree = MarkerTree::from_str(marker)
                    .with_context(|| format!("invalid marker `{marker}`"))
                    .with_context(context)?;
                if !tree.evaluate(&interpreter.markers, &[]) {
                    continue;
                }
            }
            if let Some(directory) = &package.directory {
                let path = directory
                    .get("path")
                    .and_then(|p| p.as_str())
                    .with_context(|| format!("{}: `directory` has no `path`", context()))?;
                let editable = directory
                    .get("editable")
                    .and_then(|e| e.as_bool())
                    .unwrap_or(false);
                out.push(Selected {
                    name: package.name.clone(),
                    version: package.version.clone().unwrap_or_else(|| "(local)".into()),
                    source: Source::Local {
                        path: crate::config::normalize_path(&lock_dir.join(path)),
                        editable,
                    },
                });
                continue;
            }
            if package.vcs.is_some() || package.archive.is_some() {
                bail!(
                    "{}: VCS and archive sources are not supported yet; depend on a released \
                     version from an index, or on a local checkout (`./path` in tiers.toml)",
                    context()
                );
            }
            let version = package
                .version
                .clone()
                .with_context(|| format!("{}: has no version", context()))?;
            let source = choose_artifact(package, interpreter, lock_dir).with_context(context)?;
            out.push(Selected {
                name: package.name.clone(),
                version,
                source,
            });
        }
        Ok(out)
    }
}

fn choose_artifact(
    package: &Package,
    interpreter: &Interpreter,
    lock_dir: &Path,
) -> anyhow::Result<Source> {
    let mut best: Option<(TagCompatibility, PinnedFile)> = None;
    for wheel in &package.wheels {
        let pinned = pin(wheel, lock_dir)?;
        let filename = WheelFilename::from_str(&pinned.filename)
            .with_context(|| format!("wheel `{}`", pinned.filename))?;
        let compatibility = filename.compatibility(&interpreter.tags);
        if compatibility.is_compatible() && best.as_ref().is_none_or(|(c, _)| compatibility > *c) {
            best = Some((compatibility, pinned));
        }
    }
    if let Some((_, pinned)) = best {
        return Ok(Source::Wheel(pinned));
    }
    if let Some(sdist) = &package.sdist {
        return Ok(Source::Sdist(pin(sdist, lock_dir)?));
    }
    bail!(
        "none of its {} wheels fits Python {}.{} on {} ({}), and the lock has no sdist to build",
        package.wheels.len(),
        interpreter.version.0,
        interpreter.version.1,
        interpreter.markers.sys_platform(),
        interpreter.markers.platform_machine(),
    )
}

fn pin(artifact: &Artifact, lock_dir: &Path) -> anyhow::Result<PinnedFile> {
    let location = match (&artifact.url, &artifact.path) {
        (Some(url), _) => match url.strip_prefix("file://") {
            Some(path) => Location::File(PathBuf::from(percent_decode(path))),
            None => Location::Url(url.clone()),
        },
        (None, Some(path)) => Location::File(lock_dir.join(path)),
        (None, None) => bail!("an artifact has neither `url` nor `path`"),
    };
    let filename = match &artifact.name {
        Some(name) => name.clone(),
        None => {
            let text = match &location {
                Location::Url(url) => url.split(['?', '#']).next().unwrap_or(url).to_string(),
                Location::File(path) => path.display().to_string(),
            };
            percent_decode(text.rsplit('/').next().unwrap_or(&text))
        }
    };
    let sha256 = artifact
        .hashes
        .get("sha256")
        .cloned()
        .with_context(|| {
            format!(
                "`{filename}` has no sha256 hash in the lock: tstore installs only verified files"
            )
        })?
        .to_lowercase();
    Ok(PinnedFile {
        location,
        filename,
        size: artifact.size,
        sha256,
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The input hash recorded in a lock's header, if any.
pub fn recorded_input_hash(text: &str) -> Option<&str> {
    text.lines()
        .take_while(|l| l.starts_with('#') || l.trim().is_empty())
        .find_map(|l| l.strip_prefix(INPUT_HASH_PREFIX))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uv_output_and_reports_bad_lines() {
        let text = "# tstore-input-hash: abc\nlock-version = \"1.0\"\ncreated-by = \"uv\"\n\n[[packages]]\nname = \"six\"\nversion = \"1.17.0\"\nwheels = [{ url = \"https://example/six-1.17.0-py2.py3-none-any.whl\", size = 11050, hashes = { sha256 = \"AB\" } }]\n";
        let lock = PyLock::parse(text, Path::new("pylock.t.toml")).unwrap();
        assert_eq!(lock.packages[0].name, "six");
        let pinned = pin(&lock.packages[0].wheels[0], Path::new("/l")).unwrap();
        assert_eq!(pinned.filename, "six-1.17.0-py2.py3-none-any.whl");
        assert_eq!(pinned.sha256, "ab");
        assert_eq!(recorded_input_hash(text), Some("abc"));

        let err = PyLock::parse(
            "lock-version = \"1.0\"\n[[packages]]\nname = 3\n",
            Path::new("p.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("p.toml:3:"), "{err}");
    }

    /// CPython 3.11 on x86_64 glibc Linux.
    fn linux_cpython() -> Interpreter {
        let markers = crate::interpreter::cpython_311_linux_markers();
        let platform: uv_platform_tags::Platform = serde_json::from_value(serde_json::json!({
            "os": { "name": "manylinux", "major": 2, "minor": 28 },
            "arch": "x86_64",
        }))
        .unwrap();
        let tags = uv_platform_tags::Tags::from_env(
            platform,
            (3, 11),
            "cpython",
            (3, 11),
            uv_platform_tags::TagsOptions {
                manylinux_compatible: true,
                ..Default::default()
            },
        )
        .unwrap();
        Interpreter {
            executable: "/usr/bin/python3.11".into(),
            markers,
            tags,
            version: (3, 11),
            gil_disabled: false,
            cache_tag: Some("cpython-311".into()),
            magic: "a70d0d0a".into(),
        }
    }

    #[test]
    fn selection_follows_markers_and_tags_and_names_bad_markers() {
        let text = r#"lock-version = "1.0"
[[packages]]
name = "a"
version = "1"
marker = "sys_platform == 'linux'"
wheels = [
  { url = "https://x/a-1-cp311-cp311-win_amd64.whl", hashes = { sha256 = "01" } },
  { url = "https://x/a-1-py3-none-any.whl", hashes = { sha256 = "02" } },
  { url = "https://x/a-1-cp311-cp311-manylinux_2_17_x86_64.whl", hashes = { sha256 = "03" } },
]
[[packages]]
name = "b"
version = "1"
marker = "sys_platform == 'win32'"
wheels = [{ url = "https://x/b-1-py3-none-any.whl", hashes = { sha256 = "04" } }]
"#;
        let lock = PyLock::parse(text, Path::new("pylock.t.toml")).unwrap();
        let selected = lock
            .select(
                &linux_cpython(),
                Path::new("/p"),
                Path::new("pylock.t.toml"),
            )
            .unwrap();
        assert_eq!(selected.len(), 1, "b is for Windows only");
        assert_eq!(
            selected[0].label(),
            "a-1-cp311-cp311-manylinux_2_17_x86_64.whl"
        );

        let bad = text.replace("sys_platform == 'win32'", "sys_platform ==");
        let lock = PyLock::parse(&bad, Path::new("pylock.t.toml")).unwrap();
        let err = lock
            .select(
                &linux_cpython(),
                Path::new("/p"),
                Path::new("pylock.t.toml"),
            )
            .unwrap_err();
        let causes: Vec<String> = err.chain().map(ToString::to_string).collect();
        assert_eq!(causes[0], "pylock.t.toml: package `b`");
        assert_eq!(causes[1], "invalid marker `sys_platform ==`");
        assert!(
            causes.len() > 2,
            "the parser's own words follow: {causes:?}"
        );
    }

    #[test]
    fn relative_paths_and_file_urls() {
        let artifact = Artifact {
            name: None,
            url: None,
            path: Some("wheels/a-1-py3-none-any.whl".into()),
            size: None,
            hashes: [("sha256".to_string(), "00".to_string())].into(),
        };
        let pinned = pin(&artifact, Path::new("/proj")).unwrap();
        assert_eq!(
            pinned.location,
            Location::File("/proj/wheels/a-1-py3-none-any.whl".into())
        );
        let artifact = Artifact {
            url: Some("file:///w/a%2Bb-1-py3-none-any.whl".into()),
            path: None,
            ..artifact
        };
        assert_eq!(
            pin(&artifact, Path::new("/")).unwrap().filename,
            "a+b-1-py3-none-any.whl"
        );
    }
}

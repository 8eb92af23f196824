//! The base Python interpreter of a tier: where it is, its PEP 508 marker
//! environment and the wheel tags it accepts.
//!
//! The interpreter is asked once (a small script printing JSON); the answer is
//! cached in the store keyed by the interpreter's path, size and mtime. Tags
//! come from `uv-platform-tags`, markers from `uv-pep508`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use uv_pep508::MarkerEnvironment;
use uv_platform_tags::{Platform, Tags, TagsOptions};

use crate::store::Store;
use crate::uv::{Uv, UvError};

const QUERY: &str = r#"
import importlib.util, json, os, platform, sys, sysconfig
def fmt(v):
    s = "%d.%d.%d" % (v.major, v.minor, v.micro)
    if v.releaselevel != "final":
        s += {"alpha": "a", "beta": "b", "candidate": "rc"}[v.releaselevel] + str(v.serial)
    return s
markers = {
    "implementation_name": sys.implementation.name,
    "implementation_version": fmt(sys.implementation.version),
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_python_implementation": platform.python_implementation(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}
osinfo = None
if sys.platform.startswith("linux"):
    libc = ""
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, OSError, ValueError):
        pass
    if libc.startswith("glibc "):
        major, minor = libc.split()[1].split(".")[:2]
        osinfo = {"name": "manylinux", "major": int(major), "minor": int(minor)}
    else:
        import subprocess
        try:
            out = subprocess.run(["ldd", "--version"], capture_output=True, text=True).stderr
        except OSError:
            out = ""
        for line in out.splitlines():
            if line.startswith("Version "):
                major, minor = line.split()[1].split(".")[:2]
                osinfo = {"name": "musllinux", "major": int(major), "minor": int(minor)}
elif sys.platform == "darwin":
    major, minor = (platform.mac_ver()[0].split(".") + ["0"])[:2]
    osinfo = {"name": "macos", "major": int(major), "minor": int(minor)}
elif sys.platform == "win32":
    osinfo = {"name": "windows"}
arch = platform.machine().lower()
print(json.dumps({
    "markers": markers,
    "os": osinfo,
    "arch": {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch),
    "gil_disabled": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
    "version": [sys.version_info[0], sys.version_info[1]],
    "implementation_version": [sys.implementation.version[0], sys.implementation.version[1]],
    "cache_tag": sys.implementation.cache_tag,
    "magic": importlib.util.MAGIC_NUMBER.hex(),
}))
"#;

/// What an interpreter says about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct QueryAnswer {
    markers: MarkerEnvironment,
    os: Option<serde_json::Value>,
    arch: String,
    gil_disabled: bool,
    version: (u8, u8),
    implementation_version: (u8, u8),
    /// `sys.implementation.cache_tag` (None: the interpreter writes no pycs).
    cache_tag: Option<String>,
    /// `importlib.util.MAGIC_NUMBER` in hex.
    magic: String,
}

/// A base interpreter with what it takes to pick wheels for it.
pub struct Interpreter {
    /// The executable `uv python find` returned.
    pub executable: PathBuf,
    pub markers: MarkerEnvironment,
    pub tags: Tags,
    pub version: (u8, u8),
    /// Free-threaded builds name their lib directory `pythonX.Yt`.
    pub gil_disabled: bool,
    /// `sys.implementation.cache_tag` (`cpython-311`), naming pyc files.
    pub cache_tag: Option<String>,
    /// The pyc magic number in hex: pycs are only shared between
    /// interpreters with the same tag and magic.
    pub magic: String,
}

impl Interpreter {
    /// Finds the interpreter for `request` with uv and queries it. With
    /// `reuse`, uv's last answer for the same request and environment is
    /// taken while nothing it depends on changed (see [`FindCache`]).
    pub fn find(uv: &Uv, store: &Store, request: &str, reuse: bool) -> anyhow::Result<Self> {
        let cache = FindCache::new(store, uv, request);
        let executable = match reuse.then(|| cache.lookup()).flatten() {
            Some(found) => found,
            None => {
                let found = find_with_uv(uv, request)?;
                // Only a speed-up: failing to remember is not an error.
                let _ = cache.remember(store, &found);
                found
            }
        };
        Self::query(store, &executable)
    }

    pub fn query(store: &Store, executable: &Path) -> anyhow::Result<Self> {
        let answer = cached_query(store, executable)?;
        let platform: Platform = serde_json::from_value(serde_json::json!({
            "os": answer.os.clone().unwrap_or(serde_json::Value::Null),
            "arch": answer.arch,
        }))
        .with_context(|| {
            format!(
                "{} runs on a platform tstore cannot pick wheels for (os {:?}, arch {})",
                executable.display(),
                answer.os,
                answer.arch
            )
        })?;
        let tags = Tags::from_env(
            platform,
            answer.version,
            answer.markers.implementation_name(),
            answer.implementation_version,
            TagsOptions {
                manylinux_compatible: true,
                gil_disabled: answer.gil_disabled,
                ..TagsOptions::default()
            },
        )
        .with_context(|| format!("cannot compute wheel tags for {}", executable.display()))?;
        Ok(Self {
            executable: executable.to_path_buf(),
            markers: answer.markers,
            tags,
            version: answer.version,
            gil_disabled: answer.gil_disabled,
            cache_tag: answer.cache_tag,
            magic: answer.magic,
        })
    }

    /// What store bytecode is keyed by: cache tag and magic number
    /// (`cpython-311-a70d0d0a`); None where the interpreter has no cache tag.
    pub fn bytecode_tag(&self) -> Option<String> {
        self.cache_tag
            .as_ref()
            .map(|tag| format!("{tag}-{}", self.magic))
    }

    /// `lib/pythonX.Y/site-packages`, relative to the venv root.
    pub fn site_packages(&self) -> PathBuf {
        let suffix = if self.gil_disabled { "t" } else { "" };
        PathBuf::from(format!(
            "lib/python{}.{}{suffix}/site-packages",
            self.version.0, self.version.1
        ))
    }
}

/// The interpreter `uv python find REQUEST` picks.
///
/// uv fails the same way (exit status 2) when it finds no interpreter and
/// when something else goes wrong, so the failure is put down to a missing
/// Python only when uv exited normally and still answers `uv --version`;
/// otherwise uv itself is reported as broken, with command, status and stderr.
fn find_with_uv(uv: &Uv, request: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::process::ExitStatusExt;

    let mut cmd = uv.command();
    cmd.args(["python", "find", "--no-project", request]);
    let uv_failed = |err: UvError| {
        anyhow::Error::new(err).context(format!(
            "uv failed while looking for a Python {request} interpreter: check or reinstall \
             the uv at {} (or point TSTORE_UV at a working one)",
            uv.path.display()
        ))
    };
    let output = crate::uv::output(&mut cmd).map_err(uv_failed)?;
    let stderr = crate::uv::stderr_text(&output);
    if output.status.success() {
        let found = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if found.is_empty() {
            return Err(uv_failed(UvError::NoAnswer {
                command: crate::uv::render(&cmd),
                missing: "no interpreter",
                stderr,
            }));
        }
        return Ok(PathBuf::from(found));
    }
    if output.status.signal().is_some() || !uv_answers_version(uv) {
        return Err(uv_failed(UvError::Exited {
            command: crate::uv::render(&cmd),
            status: output.status,
            stderr,
        }));
    }
    bail!(
        "no Python {request} interpreter found ({}): install one (e.g. `uv python install {request}`) \
         or change `python` in tiers.toml",
        stderr.lines().last().unwrap_or("uv found none")
    )
}

/// Whether uv runs at all: `uv --version` succeeds and names uv.
fn uv_answers_version(uv: &Uv) -> bool {
    uv.version().is_ok_and(|v| v.starts_with("uv "))
}

fn cached_query(store: &Store, executable: &Path) -> anyhow::Result<QueryAnswer> {
    let stamp =
        file_stamp(executable).with_context(|| format!("cannot read {}", executable.display()))?;
    let key = blake3::hash(format!("query-2\0{}\0{stamp}", executable.display()).as_bytes());
    let cache = store
        .interpreters_dir()
        .join(format!("{}.json", &key.to_hex()[..32]));
    if let Ok(text) = fs_err::read_to_string(&cache)
        && let Ok(answer) = serde_json::from_str(&text)
    {
        return Ok(answer);
    }
    // -S: the answer needs nothing `site` sets up, and `site` ran every
    // `.pth` of the interpreter's site-packages (one importing certifi made
    // this query take 40 ms instead of 23 on a first install's path).
    let output = crate::process::output(
        crate::process::dies_with_parent(&mut Command::new(executable))
            .args(["-I", "-S", "-c", QUERY]),
    )
    .with_context(|| format!("cannot run {}", executable.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed to describe itself ({}): {}",
            executable.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let answer: QueryAnswer = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("unexpected answer from {}", executable.display()))?;
    let temp = store.temp_path("interpreter");
    crate::fsinfo::write_with_mode(
        &temp,
        &serde_json::to_vec(&answer)?,
        crate::fsinfo::FILE_MODE,
    )?;
    fs_err::rename(&temp, &cache)?;
    Ok(answer)
}

/// Remembers which interpreter `uv python find REQUEST` picked, so building
/// a venv does not start uv (and the interpreters it probes) each time.
///
/// The answer is keyed by the request, uv, the working directory and the
/// environment uv reads (PATH, `UV_*`, `PYENV*`, `VIRTUAL_ENV`,
/// `CONDA_PREFIX`), and it is used only while every place a new interpreter
/// would appear is unchanged: each PATH directory, uv's managed-Python
/// directory, pyenv's version files, and `.python-version` files from the
/// working directory up, as well as the interpreter itself.
struct FindCache {
    path: PathBuf,
    watched: Vec<PathBuf>,
}

#[derive(Serialize, Deserialize, PartialEq)]
struct FindAnswer {
    executable: PathBuf,
    /// (path, [`file_stamp`] or None when absent) of every watched path.
    watched: Vec<(PathBuf, Option<String>)>,
}

impl FindCache {
    fn new(store: &Store, uv: &Uv, request: &str) -> Self {
        let cwd = std::env::current_dir().unwrap_or_default();
        let mut env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
            .filter(|(k, _)| {
                k == "PATH"
                    || k.starts_with("UV_")
                    || k.starts_with("PYENV")
                    || k == "VIRTUAL_ENV"
                    || k == "CONDA_PREFIX"
                    || k == "XDG_DATA_HOME"
                    || k == "HOME"
            })
            .collect();
        env.sort();
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"tstore-find-2\0");
        for part in [
            request.as_bytes(),
            uv.path.as_os_str().as_encoded_bytes(),
            cwd.as_os_str().as_encoded_bytes(),
        ] {
            hasher
                .update(&(part.len() as u64).to_le_bytes())
                .update(part);
        }
        for (k, v) in &env {
            hasher
                .update(k.as_bytes())
                .update(b"=")
                .update(v.as_bytes())
                .update(b"\0");
        }
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let home = var("HOME").unwrap_or_default();
        let mut watched: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        watched.push(var("UV_PYTHON_INSTALL_DIR").unwrap_or_else(|| {
            var("XDG_DATA_HOME")
                .unwrap_or_else(|| home.join(".local/share"))
                .join("uv/python")
        }));
        let pyenv_root = var("PYENV_ROOT").unwrap_or_else(|| home.join(".pyenv"));
        watched.push(pyenv_root.join("version"));
        watched.push(pyenv_root.join("versions"));
        watched.extend(cwd.ancestors().map(|dir| dir.join(".python-version")));
        Self {
            path: store
                .interpreters_dir()
                .join(format!("find-{}.json", &hasher.finalize().to_hex()[..32])),
            watched,
        }
    }

    fn state(&self, executable: &Path) -> Vec<(PathBuf, Option<String>)> {
        self.watched
            .iter()
            .map(PathBuf::as_path)
            .chain([executable])
            .map(|path| (path.to_path_buf(), file_stamp(path).ok()))
            .collect()
    }

    fn lookup(&self) -> Option<PathBuf> {
        let text = std::fs::read(&self.path).ok()?;
        let answer: FindAnswer = serde_json::from_slice(&text).ok()?;
        (answer.watched == self.state(&answer.executable) && answer.executable.is_file())
            .then_some(answer.executable)
    }

    fn remember(&self, store: &Store, executable: &Path) -> anyhow::Result<()> {
        let answer = FindAnswer {
            executable: executable.to_path_buf(),
            watched: self.state(executable),
        };
        let temp = store.temp_path("find");
        crate::fsinfo::write_with_mode(
            &temp,
            &serde_json::to_vec(&answer)?,
            crate::fsinfo::FILE_MODE,
        )?;
        fs_err::rename(&temp, &self.path)?;
        Ok(())
    }
}

/// Size and modification time of `path`: they change when the file (or a
/// directory's entries) change, so a cache key made from them goes stale
/// with the file.
pub fn file_stamp(path: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("{}:{mtime}", meta.len()))
}

/// The marker environment of CPython 3.11 on x86_64 glibc Linux, for tests
/// of what markers select.
#[cfg(test)]
pub(crate) fn cpython_311_linux_markers() -> uv_pep508::MarkerEnvironment {
    uv_pep508::MarkerEnvironment::try_from(uv_pep508::MarkerEnvironmentBuilder {
        implementation_name: "cpython",
        implementation_version: "3.11.9",
        os_name: "posix",
        platform_machine: "x86_64",
        platform_python_implementation: "CPython",
        platform_release: "6.1",
        platform_system: "Linux",
        platform_version: "#1",
        python_full_version: "3.11.9",
        python_version: "3.11",
        sys_platform: "linux",
    })
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.pth` file runs whenever `site` is imported; one that prints (some
    /// do, to warn) would come before the answer on stdout.
    #[test]
    fn a_pth_file_that_prints_does_not_garble_the_interpreters_answer() {
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().join("venv");
        let made = Command::new("python3.11")
            .args(["-m", "venv", "--without-pip"])
            .arg(&venv)
            .status();
        let Ok(made) = made else {
            eprintln!("skipped: no python3.11 on PATH");
            return;
        };
        assert!(made.success(), "python3.11 -m venv failed");
        let site = venv.join("lib/python3.11/site-packages");
        fs_err::write(
            site.join("noisy.pth"),
            "import sys; sys.stdout.write('a warning on stdout\\n')\n",
        )
        .unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let interpreter = Interpreter::query(&store, &venv.join("bin/python")).unwrap();
        assert_eq!(interpreter.version, (3, 11));
        assert_eq!(interpreter.cache_tag.as_deref(), Some("cpython-311"));
    }
}

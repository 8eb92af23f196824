//! Local source projects (a folder with pyproject.toml or setup.py named as a
//! requirement): what decides their lock, what decides their build, and
//! where an editable install finds their modules.
//!
//! - The lock depends on the project's metadata files only
//!   ([`metadata_hash`]): a code edit does not re-lock.
//! - A non-editable install is a wheel built by `uv build` and keyed by a
//!   hash of the whole source tree ([`tree_hash`]), so it is rebuilt exactly
//!   when a source file changes.
//! - An editable install uses the wheel built from the same metadata for its
//!   dist-info (metadata, entry points) and puts the folders that hold the
//!   project's top-level modules on `sys.path` by a `.pth` file
//!   ([`import_roots`]), so edits take effect without materializing again.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Files whose content decides a project's metadata (name, version,
/// dependencies, entry points).
const METADATA_FILES: [&str; 3] = ["pyproject.toml", "setup.py", "setup.cfg"];

/// Directories never part of a project's source: VCS data, caches, build
/// output and virtual environments.
const SKIPPED_DIRS: [&str; 13] = [
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    ".venv",
    "venv",
    ".tox",
    ".nox",
    "build",
    "dist",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
];

fn skipped(name: &str) -> bool {
    SKIPPED_DIRS.contains(&name) || name.ends_with(".egg-info") || name == "node_modules"
}

/// Hash of the project's metadata files (missing ones count as absent).
pub fn metadata_hash(project: &Path) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"tstore-local-metadata-1\0");
    for name in METADATA_FILES {
        hasher.update(name.as_bytes());
        match fs_err::read(project.join(name)) {
            Ok(bytes) => {
                hasher.update(&(bytes.len() as u64).to_le_bytes());
                hasher.update(&bytes);
            }
            Err(_) => {
                hasher.update(b"\0absent");
            }
        }
    }
    hasher.finalize().to_hex().to_string()
}

/// Hash of every source file of the project (relative path, exec bit,
/// content; symlinks by target), in path order, skipping [`SKIPPED_DIRS`],
/// `*.egg-info` and `*.pyc`.
pub fn tree_hash(project: &Path) -> anyhow::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"tstore-local-tree-1\0");
    hash_dir(project, Path::new(""), &mut hasher)
        .with_context(|| format!("cannot read the source tree of {}", project.display()))?;
    Ok(hasher.finalize().to_hex().to_string())
}

fn hash_dir(root: &Path, rel: &Path, hasher: &mut blake3::Hasher) -> anyhow::Result<()> {
    let mut entries: Vec<_> = fs_err::read_dir(root.join(rel))?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .map(|e| e.file_name())
        .collect();
    entries.sort();
    for name in entries {
        let text = name.to_string_lossy();
        let path = rel.join(&name);
        let full = root.join(&path);
        let meta = fs_err::symlink_metadata(&full)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            if !skipped(&text) {
                hash_dir(root, &path, hasher)?;
            }
            continue;
        }
        if text.ends_with(".pyc") {
            continue;
        }
        let label = path.as_os_str().as_encoded_bytes();
        hasher.update(&(label.len() as u64).to_le_bytes());
        hasher.update(label);
        if kind.is_symlink() {
            hasher.update(b"L");
            hasher.update(fs_err::read_link(&full)?.as_os_str().as_encoded_bytes());
        } else if kind.is_file() {
            hasher.update(if meta.permissions().mode() & 0o111 != 0 {
                b"X"
            } else {
                b"F"
            });
            hasher.update(&meta.len().to_le_bytes());
            let mut file = fs_err::File::open(&full)?;
            let mut buf = [0u8; 64 * 1024];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
        }
    }
    Ok(())
}

/// The folders of `project` to put on `sys.path` so that each of the
/// wheel's `top_level` names (a package directory or a `name.py` module)
/// imports from the source: `project/src`, `project` or wherever the name is
/// found, nearest first.
pub fn import_roots(project: &Path, top_level: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut roots: Vec<PathBuf> = Vec::new();
    for name in top_level {
        let found = find_top_level(project, name, 0)?.with_context(|| {
            format!(
                "cannot find `{name}` (a module of the wheel built from {}) in its source folder, \
                 so an editable install cannot point at it; install it non-editable \
                 (`{{ path = \"…\", editable = false }}`)",
                project.display()
            )
        })?;
        if !roots.contains(&found) {
            roots.push(found);
        }
    }
    Ok(roots)
}

/// Breadth-first: the shallowest folder under `dir` that holds `name`.
fn find_top_level(dir: &Path, name: &str, depth: usize) -> anyhow::Result<Option<PathBuf>> {
    let candidate = dir.join(name);
    if candidate.exists() {
        return Ok(Some(dir.to_path_buf()));
    }
    if depth >= 3 {
        return Ok(None);
    }
    let mut subdirs: Vec<PathBuf> = fs_err::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            !skipped(&n) && !n.starts_with('.')
        })
        .map(|e| e.path())
        .collect();
    // `src` first: the layout packaging guides recommend.
    subdirs.sort_by_key(|p| (p.file_name() != Some("src".as_ref()), p.clone()));
    for sub in subdirs {
        if let Some(found) = find_top_level(&sub, name, depth + 1)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Top-level importable names of a wheel from its file paths: package
/// directories and single-file modules outside `.dist-info`/`.data`.
pub fn wheel_top_level<'a>(paths: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for path in paths {
        let (first, rest) = path.split_once('/').unwrap_or((path, ""));
        if first.ends_with(".dist-info") || first.ends_with(".data") {
            continue;
        }
        let name = if rest.is_empty() {
            // A file at the top: a module (`x.py`, `x.cpython-311-….so`) or
            // something else (`x.pth`) an editable install does not need.
            if first.ends_with(".py") || first.ends_with(".so") {
                first.to_string()
            } else {
                continue;
            }
        } else {
            first.to_string()
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Whether `dir` holds a Python project (one of its metadata files).
pub fn is_project(dir: &Path) -> bool {
    METADATA_FILES.iter().any(|f| dir.join(f).is_file())
}

/// Checks the project folder exists before uv is asked to build it.
pub fn check_project(project: &Path) -> anyhow::Result<()> {
    if !is_project(project) {
        bail!(
            "{} is not a Python project folder (no pyproject.toml, setup.py or setup.cfg); \
             fix the path in tiers.toml and run `tstore lock`",
            project.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_hash_follows_sources_not_caches() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs_err::create_dir_all(p.join("src/pkg/__pycache__")).unwrap();
        fs_err::write(p.join("pyproject.toml"), "[project]\nname='pkg'\n").unwrap();
        fs_err::write(p.join("src/pkg/__init__.py"), "A = 1\n").unwrap();
        let first = tree_hash(p).unwrap();
        fs_err::write(p.join("src/pkg/__pycache__/x.cpython-311.pyc"), "junk").unwrap();
        fs_err::create_dir_all(p.join(".git")).unwrap();
        fs_err::write(p.join(".git/HEAD"), "ref").unwrap();
        assert_eq!(tree_hash(p).unwrap(), first);
        let metadata = metadata_hash(p);
        fs_err::write(p.join("src/pkg/__init__.py"), "A = 2\n").unwrap();
        assert_ne!(tree_hash(p).unwrap(), first);
        assert_eq!(metadata_hash(p), metadata, "code is not metadata");
    }

    #[test]
    fn import_roots_find_src_and_flat_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs_err::create_dir_all(p.join("src/pkg")).unwrap();
        fs_err::write(p.join("single.py"), "").unwrap();
        let top = wheel_top_level(
            [
                "pkg/__init__.py",
                "single.py",
                "pkg-1.dist-info/METADATA",
                "extra.pth",
            ]
            .into_iter(),
        );
        assert_eq!(top, ["pkg", "single.py"]);
        let roots = import_roots(p, &top).unwrap();
        assert_eq!(roots, [p.join("src"), p.to_path_buf()]);
        let err = import_roots(p, &["missing".to_string()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("editable = false"), "{err}");
    }
}

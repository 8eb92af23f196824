//! The import workload of the after-use scenarios: every top-level module of
//! every distribution in a venv, each imported by a fresh interpreter that
//! may write bytecode, as a venv in real use does.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Interpreters run at once: imports are mostly CPU-bound, and several
/// keep both cores busy while one waits on the disk.
const JOBS: usize = 4;

/// A module whose import takes longer than this is stopped and counted as
/// failed (one that waits on the network, say).
const TIMEOUT_SECONDS: &str = "120";

#[derive(serde::Serialize, Default, Clone, Debug)]
pub struct Imports {
    /// Top-level modules tried.
    pub modules: usize,
    /// Modules whose import failed (or timed out): counted and skipped.
    pub failed: Vec<String>,
}

/// The venv's `site-packages` (the first `lib/python*/site-packages`).
pub fn site_packages(venv: &Path) -> PathBuf {
    let lib = venv.join("lib");
    std::fs::read_dir(&lib)
        .unwrap_or_else(|e| panic!("{}: {e}", lib.display()))
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| panic!("no site-packages under {}", lib.display()))
}

/// Every distribution's top-level modules: its `top_level.txt` where it has
/// one, else the first component of each importable path in its RECORD.
pub fn top_level_modules(venv: &Path) -> Vec<String> {
    let site = site_packages(venv);
    let mut modules = BTreeSet::new();
    for entry in std::fs::read_dir(&site).unwrap().filter_map(Result::ok) {
        let dist_info = entry.path();
        if dist_info.extension().is_none_or(|e| e != "dist-info") {
            continue;
        }
        let names = match std::fs::read_to_string(dist_info.join("top_level.txt")) {
            Ok(text) => text.lines().map(|l| l.trim().to_string()).collect(),
            Err(_) => std::fs::read_to_string(dist_info.join("RECORD"))
                .map(|record| modules_of_record(&record))
                .unwrap_or_default(),
        };
        modules.extend(names.into_iter().filter(|n| is_module_name(n)));
    }
    modules.into_iter().collect()
}

/// The top-level names a RECORD installs: `pkg/…` and `mod.py` or
/// `mod.<abi>.so` at the root.
fn modules_of_record(record: &str) -> Vec<String> {
    record
        .lines()
        .filter_map(|line| line.split(',').next())
        .filter_map(|path| match path.split_once('/') {
            Some((top, rest)) if rest.ends_with(".py") || rest.contains(".so") => {
                Some(top.to_string())
            }
            Some(_) => None,
            None if path.ends_with(".py") || path.ends_with(".so") => {
                path.split('.').next().map(str::to_string)
            }
            None => None,
        })
        .filter(|top| !top.ends_with(".dist-info") && !top.ends_with(".data"))
        .collect()
}

/// A name `import` accepts (top_level.txt may list paths or be empty).
fn is_module_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name != "__pycache__"
}

/// Imports each of `modules` in a fresh interpreter of `venv`, with
/// `PYTHONDONTWRITEBYTECODE` unset so the interpreter writes the pycs it
/// misses; `scratch` is their working folder and HOME (outside every tree
/// measured). A failure is counted, not fatal.
pub fn import_each(venv: &Path, modules: &[String], scratch: &Path) -> Imports {
    std::fs::create_dir_all(scratch).unwrap();
    let python = venv.join("bin/python");
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..JOBS {
            scope.spawn(|| {
                while let Some(module) = modules.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let ok = Command::new("timeout")
                        .arg(TIMEOUT_SECONDS)
                        .arg(&python)
                        .args(["-c", &format!("import {module}")])
                        .current_dir(scratch)
                        .env_remove("PYTHONDONTWRITEBYTECODE")
                        .env_remove("PYTHONPATH")
                        .env_remove("PYTHONPYCACHEPREFIX")
                        .env("HOME", scratch)
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success());
                    if !ok {
                        failed.lock().unwrap().push(module.clone());
                    }
                }
            });
        }
    });
    let mut failed = failed.into_inner().unwrap();
    failed.sort();
    Imports {
        modules: modules.len(),
        failed,
    }
}

/// Allocated bytes of each distinct content among the regular files under
/// `dir` (blake3 of the bytes → st_blocks × 512): what a content-addressed
/// store must hold at least for that tree.
pub fn contents(dir: &Path) -> HashMap<[u8; 32], u64> {
    use std::os::unix::fs::MetadataExt;
    let mut out = HashMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                let bytes = std::fs::read(entry.path()).unwrap_or_default();
                out.insert(*blake3::hash(&bytes).as_bytes(), meta.blocks() * 512);
            }
        }
    }
    out
}

/// Allocated bytes of the contents in `new` that `old` lacks.
pub fn changed_bytes(old: &HashMap<[u8; 32], u64>, new: &HashMap<[u8; 32], u64>) -> u64 {
    new.iter()
        .filter(|(hash, _)| !old.contains_key(*hash))
        .map(|(_, bytes)| bytes)
        .sum()
}

//! `tstore check`: import every top-level module of every distribution in a
//! tier, each in a fresh interpreter, in parallel, and report the failures.
//!
//! The modules of a distribution are its `top_level.txt` when the wheel has
//! one, else the top-level packages and modules of its file list.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;

use crate::store::{ObjectKey, Store};

/// One import that failed.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub distribution: String,
    pub module: String,
    /// The exception line (`ModuleNotFoundError: No module named 'x'`).
    pub error: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    pub distributions: usize,
    pub modules: usize,
    pub failures: Vec<Failure>,
}

/// Longest an import may take before it counts as failed.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(120);

/// The importable top-level names of a distribution (sorted).
pub fn top_level_modules(store: &Store, dist_id: i64) -> anyhow::Result<Vec<String>> {
    let rows = store.db.distribution_files(dist_id)?;
    if let Some(row) = rows.iter().find(|r| {
        r.path
            .split_once('/')
            .is_some_and(|(dir, file)| dir.ends_with(".dist-info") && file == "top_level.txt")
    }) {
        let text = match &row.object {
            Some(key) => {
                let key = ObjectKey::parse(key)
                    .ok_or_else(|| anyhow::anyhow!("bad object key `{key}`"))?;
                fs_err::read_to_string(store.object_path(&key))?
            }
            None => String::new(),
        };
        let mut names: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            // `a/b` in old top_level.txt files means the package `a.b`.
            .map(|l| l.replace('/', "."))
            .filter(|l| is_module_name(l))
            .collect();
        names.sort();
        names.dedup();
        return Ok(names);
    }
    let mut names: Vec<String> =
        crate::local::wheel_top_level(rows.iter().map(|r| r.path.as_str()))
            .into_iter()
            .map(|n| {
                // `x.py`, `x.cpython-311-x86_64-linux-gnu.so`, `x.abi3.so` → `x`.
                n.split('.').next().unwrap_or(&n).to_string()
            })
            .filter(|n| is_module_name(n))
            .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

fn is_module_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .split('.')
            .all(|part| part.chars().all(|c| c.is_alphanumeric() || c == '_') && !part.is_empty())
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Imports each (distribution, module) with `venv`'s interpreter, `jobs` at
/// a time.
pub fn check(
    venv: &Path,
    modules: &[(String, String)],
    jobs: usize,
    progress: &dyn crate::progress::Progress,
) -> anyhow::Result<Vec<Failure>> {
    let python = venv.join("bin/python");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .build()?;
    progress.start("importing", modules.len() as u64, 0);
    let mut failures: Vec<Failure> = pool.install(|| {
        modules
            .par_iter()
            .filter_map(|(distribution, module)| {
                let result = import(&python, module);
                progress.item_done(module);
                result.err().map(|error| Failure {
                    distribution: distribution.clone(),
                    module: module.clone(),
                    error,
                })
            })
            .collect()
    });
    progress.finish();
    failures.sort_by(|a, b| (&a.distribution, &a.module).cmp(&(&b.distribution, &b.module)));
    Ok(failures)
}

/// Imports `module` in a fresh interpreter; the error line if it fails.
fn import(python: &Path, module: &str) -> Result<(), String> {
    let mut child = crate::process::dies_with_parent(&mut Command::new(python))
        .args(["-c", &format!("import {module}")])
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > IMPORT_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the import did not finish in {} s",
                    IMPORT_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e.to_string()),
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(error_line(&stderr).unwrap_or_else(|| format!("exited with {}", out.status)))
}

/// The exception line of a traceback: its last line that is not indented.
fn error_line(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with(' ') && !l.starts_with('\t'))
        .map(|l| l.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exception_line_is_reported() {
        let trace = "Traceback (most recent call last):\n  File \"<string>\", line 1, in <module>\n\
                     ModuleNotFoundError: No module named 'x'\n";
        assert_eq!(
            error_line(trace).unwrap(),
            "ModuleNotFoundError: No module named 'x'"
        );
        assert!(is_module_name("yaml") && is_module_name("google.protobuf"));
        assert!(!is_module_name("my-pkg") && !is_module_name("1x"));
    }
}

//! What the bench binaries share: arguments, the machine's description,
//! shell helpers, medians, and a lock's pins for uv.
#![allow(dead_code)]

pub mod mount;
pub mod workload;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A machine's folder `work/name` with its project: the embedded
/// tiers.toml, its venvs under the folder. Returns the folder.
pub fn machine_root(work: &Path, name: &str) -> PathBuf {
    let root = work.join(name);
    std::fs::create_dir_all(root.join("project")).unwrap();
    std::fs::write(
        root.join("project/tiers.toml"),
        tstore::config::EMBEDDED_TIERS.replace(
            "venv-root = \"~/venvs\"",
            &format!("venv-root = \"{}\"", root.join("venvs").display()),
        ),
    )
    .unwrap();
    root
}

/// Runs a command that must succeed, with its stderr in the panic if not.
pub trait Run {
    fn run(&mut self);
}

impl Run for Command {
    fn run(&mut self) {
        let out = self.output().unwrap();
        assert!(
            out.status.success(),
            "{self:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `--name VALUE` from the command line.
pub fn flag(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// Whether `--name` is on the command line.
pub fn switch(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// A scratch folder named `prefix…` on the filesystem under test
/// (`TSTORE_BENCH_DIR`, else the system temp dir).
pub fn work_dir(prefix: &str) -> tempfile::TempDir {
    work_dir_in(&base_dir(), prefix)
}

/// A scratch folder named `prefix…` in `base` (made if missing).
pub fn work_dir_in(base: &Path, prefix: &str) -> tempfile::TempDir {
    fs_err::create_dir_all(base).unwrap();
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .unwrap()
}

/// `TSTORE_BENCH_DIR`, else the system temp dir.
pub fn base_dir() -> PathBuf {
    std::env::var_os("TSTORE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// Cores, memory and kernel, for the results.
pub fn machine() -> String {
    format!(
        "{} cores, {}, kernel {}",
        shell("nproc"),
        shell("free -h | awk '/Mem:/ {print $2}'"),
        shell("uname -r")
    )
}

/// The filesystem type and device holding `dir`.
pub fn filesystem(dir: &Path) -> String {
    shell(&format!(
        "findmnt -n -o FSTYPE,SOURCE --target {}",
        dir.display()
    ))
}

pub fn now() -> String {
    shell("date -u +%Y-%m-%dT%H:%M:%SZ")
}

/// Writes back what earlier steps (deleting the previous venv above all)
/// left dirty, so a timed command does not pay for them.
pub fn settle() {
    let _ = Command::new("sync").status();
}

pub fn shell(script: &str) -> String {
    Command::new("sh")
        .args(["-c", script])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub fn median(samples: &[Duration]) -> f64 {
    let mut s: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// A lock's packages as `name==version ; marker` lines.
pub fn pins_from_lock(lock: &Path) -> String {
    let (parsed, _) = tstore::lock::PyLock::read(lock).unwrap();
    parsed
        .packages
        .iter()
        .map(|p| {
            let pin = format!("{}=={}", p.name, p.version.clone().unwrap_or_default());
            match &p.marker {
                Some(marker) => format!("{pin} ; {marker}\n"),
                None => format!("{pin}\n"),
            }
        })
        .collect()
}

/// Runs `cmd`; its stderr in the error when it fails.
pub fn try_run(cmd: &mut std::process::Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

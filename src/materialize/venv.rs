//! The venv directory itself: its PEP 405 skeleton (made by `uv venv`) and
//! the keys tstore keeps in its `pyvenv.cfg` (the plan it was built from, the
//! packages `tstore edit` made private).

#[cfg(target_os = "linux")]
use std::ffi::CString;
#[cfg(target_os = "linux")]
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::Context;

use crate::uv::Uv;

/// The `pyvenv.cfg` key holding the hash of the plan a venv was built from.
const PLAN_KEY: &str = "tstore-plan";
/// The `pyvenv.cfg` key listing packages made private by `tstore edit`.
const EDITED_KEY: &str = "tstore-edited";

/// Creates the skeleton at `staging` for a venv that will live at `target`.
pub fn create_skeleton(
    uv: &Uv,
    interpreter: &Path,
    staging: &Path,
    target: &Path,
    prompt: &str,
) -> anyhow::Result<()> {
    let mut cmd = uv.command();
    cmd.args([
        "venv",
        "--quiet",
        "--no-project",
        "--prompt",
        prompt,
        "--python",
    ])
    .arg(interpreter)
    .arg(staging);
    uv.run(&mut cmd)
        .context("cannot create the venv skeleton")?;
    // Activation scripts spell out the venv's path: make them name the final one.
    let staging_text = staging.display().to_string();
    let target_text = target.display().to_string();
    for entry in fs_err::read_dir(staging.join("bin"))? {
        let path = entry?.path();
        let is_activate = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("activate"));
        if is_activate {
            let text = fs_err::read_to_string(&path)?;
            if text.contains(&staging_text) {
                fs_err::write(&path, text.replace(&staging_text, &target_text))?;
            }
        }
    }
    Ok(())
}

/// Adds tstore's keys to `pyvenv.cfg`.
pub fn write_marker(venv: &Path, plan_hash: &str) -> anyhow::Result<()> {
    let cfg = venv.join("pyvenv.cfg");
    let mut text = fs_err::read_to_string(&cfg)?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "tstore = {}\n{PLAN_KEY} = {plan_hash}\n",
        env!("CARGO_PKG_VERSION")
    ));
    fs_err::write(&cfg, text)?;
    Ok(())
}

/// The plan hash recorded in a venv's `pyvenv.cfg`, if tstore built it.
pub fn recorded_plan(venv: &Path) -> Option<String> {
    let text = std::fs::read_to_string(venv.join("pyvenv.cfg")).ok()?;
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == PLAN_KEY).then(|| value.trim().to_string())
    })
}

/// Packages `tstore edit` made private in this venv.
pub fn edited_packages(venv: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(venv.join("pyvenv.cfg")) else {
        return Vec::new();
    };
    text.lines()
        .find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == EDITED_KEY).then(|| {
                value
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Records that `package` was made private in this venv.
pub fn mark_edited(venv: &Path, package: &str) -> anyhow::Result<()> {
    let mut edited = edited_packages(venv);
    if !edited.iter().any(|p| p == package) {
        edited.push(package.to_string());
    }
    let cfg = venv.join("pyvenv.cfg");
    let text = fs_err::read_to_string(&cfg)?;
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| {
            l.split_once('=')
                .is_none_or(|(k, _)| k.trim() != EDITED_KEY)
        })
        .map(str::to_string)
        .collect();
    lines.push(format!("{EDITED_KEY} = {}", edited.join(",")));
    // Written beside and renamed over: a reader never sees half a file.
    let temp = venv.join(".pyvenv.cfg.tstore-tmp");
    fs_err::write(&temp, lines.join("\n") + "\n")?;
    fs_err::rename(&temp, &cfg)?;
    Ok(())
}

/// Swaps two paths in one step where the kernel can; false where it cannot.
#[cfg(target_os = "linux")]
pub fn exchange(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let from = CString::new(a.as_os_str().as_bytes())?;
    let to = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both paths are valid NUL-terminated strings.
    let result = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    Ok(result == 0)
}

#[cfg(not(target_os = "linux"))]
pub fn exchange(_a: &Path, _b: &Path) -> anyhow::Result<bool> {
    Ok(false)
}

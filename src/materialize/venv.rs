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
/// The `pyvenv.cfg` key holding the hash of the inputs a venv was built from.
const INPUTS_KEY: &str = "tstore-inputs";
/// The `pyvenv.cfg` key holding site-packages and the hash of its entries.
const ENTRIES_KEY: &str = "tstore-entries";
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
/// What a generation was built from, kept in its `pyvenv.cfg`.
pub struct Marker<'a> {
    /// Hash of the plan (every file and its source).
    pub plan: &'a str,
    /// Hash of the inputs tstore can read without uv (see `inputs_key`).
    pub inputs: &'a str,
    /// site-packages, relative to the venv.
    pub site_packages: &'a Path,
    /// Hash of the names directly in site-packages.
    pub entries: &'a str,
}

/// Adds tstore's keys to `pyvenv.cfg`.
pub fn write_marker(venv: &Path, marker: &Marker<'_>) -> anyhow::Result<()> {
    let cfg = venv.join("pyvenv.cfg");
    let mut text = fs_err::read_to_string(&cfg)?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "tstore = {}\n{PLAN_KEY} = {}\n{INPUTS_KEY} = {}\n{ENTRIES_KEY} = {} {}\n",
        env!("CARGO_PKG_VERSION"),
        marker.plan,
        marker.inputs,
        marker.site_packages.display(),
        marker.entries,
    ));
    fs_err::write(&cfg, text)?;
    Ok(())
}

fn recorded(venv: &Path, wanted: &str) -> Option<String> {
    let text = std::fs::read_to_string(venv.join("pyvenv.cfg")).ok()?;
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == wanted).then(|| value.trim().to_string())
    })
}

/// The plan hash recorded in a venv's `pyvenv.cfg`, if tstore built it.
pub fn recorded_plan(venv: &Path) -> Option<String> {
    recorded(venv, PLAN_KEY)
}

/// The inputs key recorded in a venv's `pyvenv.cfg`.
pub fn recorded_inputs(venv: &Path) -> Option<String> {
    recorded(venv, INPUTS_KEY)
}

/// Hash of a set of names (order does not matter).
pub fn entries_hash<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut names: Vec<&str> = names.into_iter().collect();
    names.sort_unstable();
    let mut hasher = blake3::Hasher::new();
    for name in names {
        hasher.update(name.as_bytes()).update(b"\0");
    }
    hasher.finalize().to_hex()[..32].to_string()
}

/// Whether site-packages holds the same top-level names as when the venv
/// was built (one directory read).
pub fn entries_unchanged(venv: &Path) -> bool {
    let Some(value) = recorded(venv, ENTRIES_KEY) else {
        return false;
    };
    let Some((dir, expected)) = value.rsplit_once(' ') else {
        return false;
    };
    let Ok(entries) = std::fs::read_dir(venv.join(dir)) else {
        return false;
    };
    let names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "__pycache__")
        .collect();
    entries_hash(names.iter().map(String::as_str)) == expected
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

//! The venv itself: its PEP 405 skeleton (made by `uv venv`), the marker
//! tstore leaves in `pyvenv.cfg`, and the atomic swap of a finished venv into
//! place.
//!
//! A venv is built in `.<name>.tstore-staging-*` beside its final path and
//! swapped in with `renameat2(RENAME_EXCHANGE)` (Linux), so the path always
//! holds a complete venv: the old one until the swap, the new one after.
//! Elsewhere two renames leave a moment with no venv at the path.

#[cfg(target_os = "linux")]
use std::ffi::CString;
#[cfg(target_os = "linux")]
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::uv::Uv;

/// The `pyvenv.cfg` key holding the hash of the plan a venv was built from.
const PLAN_KEY: &str = "tstore-plan";

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

/// Refuses to replace something at `target` that tstore did not make.
pub fn check_replaceable(target: &Path, force: bool) -> anyhow::Result<()> {
    match fs_err::symlink_metadata(target) {
        Err(_) => Ok(()),
        Ok(meta) if !meta.is_dir() => bail!(
            "{} exists and is not a directory; move it away or set the tier's `venv` in tiers.toml",
            target.display()
        ),
        Ok(_) if recorded_plan(target).is_some() || force => Ok(()),
        Ok(_) if target.join("pyvenv.cfg").is_file() => bail!(
            "{} is a venv tstore did not make; replacing it would lose it. Move it away, or pass \
             --force to replace it",
            target.display()
        ),
        Ok(_) => bail!(
            "{} exists and is not a venv; move it away or set the tier's `venv` in tiers.toml",
            target.display()
        ),
    }
}

/// A staging path beside `target`.
pub fn staging_path(target: &Path) -> anyhow::Result<PathBuf> {
    let parent = target
        .parent()
        .context("a venv path needs a parent directory")?;
    let name = target
        .file_name()
        .context("a venv path needs a name")?
        .to_string_lossy();
    Ok(parent.join(format!(
        ".{name}.tstore-staging-{}-{}",
        std::process::id(),
        crate::store::unique_suffix()
    )))
}

/// Removes staging directories of `target` left by processes that died.
pub fn remove_stale_staging(target: &Path) {
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return;
    };
    let prefix = format!(".{}.tstore-staging-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        let pid: i32 = rest
            .split('-')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let alive = pid > 0 && unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Moves the finished venv at `staging` to `target`, atomically replacing
/// what is there; the old venv is deleted afterwards.
pub fn swap_into_place(staging: &Path, target: &Path) -> anyhow::Result<()> {
    if fs_err::symlink_metadata(target).is_err() {
        fs_err::rename(staging, target)?;
        return Ok(());
    }
    if exchange(staging, target)? {
        // `staging` now holds the old venv.
        fs_err::remove_dir_all(staging)
            .context("the new venv is in place, but removing the old one failed")?;
        return Ok(());
    }
    // No RENAME_EXCHANGE on this filesystem: two renames, a brief gap.
    let old = staging.with_extension("old");
    fs_err::rename(target, &old)?;
    if let Err(err) = fs_err::rename(staging, target) {
        let _ = fs_err::rename(&old, target);
        return Err(err.into());
    }
    fs_err::remove_dir_all(&old)?;
    Ok(())
}

/// Swaps two paths in one step where the kernel can; false where it cannot.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> anyhow::Result<bool> {
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
fn exchange(_a: &Path, _b: &Path) -> anyhow::Result<bool> {
    Ok(false)
}

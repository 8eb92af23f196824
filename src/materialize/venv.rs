//! The venv directory itself: its PEP 405 skeleton (made by `uv venv`) and
//! the keys tstore keeps in its `pyvenv.cfg` (the plan it was built from, the
//! packages `tstore edit` made private).

#[cfg(target_os = "linux")]
use std::ffi::CString;
#[cfg(target_os = "linux")]
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::store::Store;
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
///
/// `uv venv` runs once per (uv, interpreter) into a template in the store;
/// each venv gets a copy with the template's path and prompt replaced by its
/// own, which saves starting uv for every build. Where a path needs quoting
/// in shell scripts, uv runs for the venv itself, as it quotes per shell.
pub fn create_skeleton(
    uv: &Uv,
    store: &Store,
    interpreter: &Path,
    staging: &Path,
    target: &Path,
    prompt: &str,
) -> anyhow::Result<()> {
    // The template's text names the path it was built at, in the store's tmp.
    if !is_plain_path(target) || !is_plain_path(&store.tmp_dir()) {
        run_uv_venv(uv, interpreter, staging, prompt)?;
        return replace_in_activation_scripts(staging, &staging.display().to_string(), target);
    }
    let template = skeleton_template(uv, store, interpreter)?;
    copy_template(&template, staging, target, prompt)
        .with_context(|| format!("cannot copy the venv skeleton {}", template.display()))
}

/// The prompt the template is made with, replaced by the tier's name.
const TEMPLATE_PROMPT: &str = "tstore-template-prompt";
/// A file in the template naming the path it was created at.
const TEMPLATE_ORIGIN: &str = ".tstore-template-origin";

fn skeleton_template(uv: &Uv, store: &Store, interpreter: &Path) -> anyhow::Result<PathBuf> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"tstore-skeleton-1\0");
    for path in [uv.path.as_path(), interpreter] {
        let stamp = crate::interpreter::file_stamp(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        hasher.update(path.as_os_str().as_encoded_bytes());
        hasher.update(format!("\0{stamp}\0").as_bytes());
    }
    let template = store
        .skeletons_dir()
        .join(&hasher.finalize().to_hex()[..32]);
    if template.join(TEMPLATE_ORIGIN).is_file() {
        return Ok(template);
    }
    // Built in the store's tmp (same filesystem), so that gc removes what a
    // killed build leaves there like any other temp entry.
    let building = store.temp_path("skeleton");
    let made = run_uv_venv(uv, interpreter, &building, TEMPLATE_PROMPT).and_then(|()| {
        fs_err::write(
            building.join(TEMPLATE_ORIGIN),
            building.as_os_str().as_encoded_bytes(),
        )?;
        Ok(())
    });
    if let Err(err) = made {
        let _ = fs_err::remove_dir_all(&building);
        return Err(err);
    }
    // Another process may have published the same template meanwhile.
    if std::fs::rename(&building, &template).is_err() {
        let _ = fs_err::remove_dir_all(&building);
        if !template.join(TEMPLATE_ORIGIN).is_file() {
            bail!("cannot publish the venv skeleton at {}", template.display());
        }
    }
    Ok(template)
}

fn run_uv_venv(uv: &Uv, interpreter: &Path, dir: &Path, prompt: &str) -> anyhow::Result<()> {
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
    .arg(dir);
    uv.run(&mut cmd)
        .context("cannot create the venv skeleton")?;
    Ok(())
}

/// Copies the template to `staging`, naming `target` and `prompt` where the
/// template names its own path and prompt.
fn copy_template(
    template: &Path,
    staging: &Path,
    target: &Path,
    prompt: &str,
) -> anyhow::Result<()> {
    let origin = fs_err::read_to_string(template.join(TEMPLATE_ORIGIN))?;
    let target_text = target.display().to_string();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let from = template.join(&relative);
        let to = staging.join(&relative);
        fs_err::create_dir(&to)?;
        for entry in fs_err::read_dir(&from)? {
            let entry = entry?;
            let name = entry.file_name();
            if relative.as_os_str().is_empty() && name == TEMPLATE_ORIGIN {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(relative.join(&name));
            } else if kind.is_symlink() {
                std::os::unix::fs::symlink(fs_err::read_link(entry.path())?, to.join(&name))
                    .with_context(|| format!("cannot create {}", to.join(&name).display()))?;
            } else {
                let bytes = fs_err::read(entry.path())?;
                let bytes = match std::str::from_utf8(&bytes) {
                    Ok(text) if text.contains(&origin) || text.contains(TEMPLATE_PROMPT) => text
                        .replace(&origin, &target_text)
                        .replace(TEMPLATE_PROMPT, prompt)
                        .into_bytes(),
                    _ => bytes,
                };
                let dest = to.join(&name);
                fs_err::write(&dest, bytes)?;
                fs_err::set_permissions(&dest, entry.metadata()?.permissions())?;
            }
        }
    }
    Ok(())
}

/// Activation scripts spell out the venv's path: make them name `target`.
fn replace_in_activation_scripts(venv: &Path, from: &str, target: &Path) -> anyhow::Result<()> {
    let target_text = target.display().to_string();
    for entry in fs_err::read_dir(venv.join("bin"))? {
        let path = entry?.path();
        let is_activate = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("activate"));
        if is_activate {
            let text = fs_err::read_to_string(&path)?;
            if text.contains(from) {
                fs_err::write(&path, text.replace(from, &target_text))?;
            }
        }
    }
    Ok(())
}

/// A path no shell needs quoted, so plain text replacement keeps every
/// activation script valid.
fn is_plain_path(path: &Path) -> bool {
    path.to_str().is_some_and(|p| {
        p.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+@,:=".contains(c))
    })
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

/// Hash of a set of names in site-packages (order does not matter).
/// `__pycache__` is left out: tstore may link it and Python may create it,
/// and either way it says nothing about which packages are installed.
pub fn entries_hash<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut names: Vec<&str> = names.into_iter().filter(|n| *n != "__pycache__").collect();
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

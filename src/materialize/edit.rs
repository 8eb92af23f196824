//! `tstore edit TIER PACKAGE`: one package's files in one tier's current
//! generation become private, writable copies, so a developer can patch them
//! without touching the store or any other tier. The venv records the package
//! in `pyvenv.cfg`; `verify` reports it as edited, and the next `materialize`
//! builds a fresh generation with the shared files again.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::bail;

use super::manifest::Manifest;
use super::plan::FileSource;
use super::venv;
use crate::store::Store;

pub struct EditReport {
    /// Files that were store links and are now private copies.
    pub copied: usize,
    /// The generation directory that was changed.
    pub generation: PathBuf,
    /// The package's files, relative to the venv.
    pub files: Vec<PathBuf>,
}

/// Normalized (PEP 503) package name, or the name as given if it is invalid.
pub fn normalize(name: &str) -> String {
    uv_normalize::PackageName::from_str(name)
        .map(|n| n.to_string())
        .unwrap_or_else(|_| name.to_string())
}

pub fn make_private(store: &Store, target: &Path, package: &str) -> anyhow::Result<EditReport> {
    let row = super::generations::current_record(store, target)?;
    let manifest = Manifest::load(store, &row.plan)?;
    let wanted = normalize(package);
    let entries: Vec<_> = manifest
        .files
        .iter()
        .filter(|f| normalize(&f.dist) == wanted)
        .collect();
    if entries.is_empty() {
        let mut names: Vec<&str> = manifest.files.iter().map(|f| &*f.dist).collect();
        names.sort_unstable();
        names.dedup();
        let hint = crate::config::closest(&wanted, &names)
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        bail!("`{package}` is not installed in {}{hint}", target.display());
    }

    let root = std::path::PathBuf::from(&row.path);
    let mut copied = 0;
    for entry in &entries {
        let FileSource::Object(key) = &entry.source else {
            continue; // written per venv already
        };
        let dest = root.join(&entry.dest);
        let temp = dest.with_file_name(format!(
            ".{}.tstore-edit",
            dest.file_name().unwrap_or_default().to_string_lossy()
        ));
        fs_err::copy(store.object_path(key), &temp)?;
        let mode = if key.executable { 0o755 } else { 0o644 };
        fs_err::set_permissions(&temp, std::fs::Permissions::from_mode(mode))?;
        fs_err::rename(&temp, &dest)?;
        copied += 1;
    }
    venv::mark_edited(&root, &wanted)?;
    Ok(EditReport {
        copied,
        generation: root,
        files: entries.iter().map(|e| e.dest.clone()).collect(),
    })
}

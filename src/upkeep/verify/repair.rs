//! Repairs for what [`super::verify`] found: objects restored in place
//! (keeping their inode) from a good copy or the wheel downloaded again and
//! sha256-checked; tier files linked or written again.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{FileFault, GoodCopy, ObjectFault, TierReport, TierState};
use crate::dist::Location;
use crate::link::Linker;
use crate::materialize::plan::FileSource;
use crate::progress::Progress;
use crate::store::db::{DistributionSource, ObjectUser};
use crate::store::{ObjectKey, Store};

/// Restores one object; returns how.
pub(super) fn repair_object(
    store: &Store,
    key: &ObjectKey,
    fault: ObjectFault,
    good_copies: &HashMap<ObjectKey, GoodCopy>,
    progress: &dyn Progress,
) -> anyhow::Result<String> {
    let path = store.object_path(key);
    let mode = key.mode();
    if fault == ObjectFault::Mode {
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        return Ok("mode restored".into());
    }
    if fault == ObjectFault::Missing
        && let Some(copy) = good_copies.get(key).filter(|c| c.hardlinked)
        && let Ok(note) = relink_into_store(store, &copy.path, &path, mode)
    {
        return Ok(note);
    }
    let (content, source) = match good_copies.get(key) {
        Some(copy) => (
            fs_err::read(&copy.path)?,
            format!("from {}", copy.path.display()),
        ),
        None => content_from_wheel(store, key, progress)?,
    };
    if blake3::hash(&content).as_bytes() != &key.hash {
        anyhow::bail!("the replacement content does not hash to the object either");
    }
    match fault {
        ObjectFault::Missing => {
            let temp = store.temp_path("repair");
            fs_err::write(&temp, &content)?;
            fs_err::set_permissions(&temp, std::fs::Permissions::from_mode(mode))?;
            fs_err::rename(&temp, &path)?;
        }
        _ => {
            // In place: the inode every hardlinked venv file shares is fixed.
            fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
            let written = (|| -> std::io::Result<()> {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&path)?;
                file.write_all(&content)?;
                file.sync_all()
            })();
            fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            written.with_context(|| format!("cannot rewrite {}", path.display()))?;
        }
    }
    Ok(format!("restored {source}"))
}

/// A lost object whose inode hardlinked tiers still share: that inode *is*
/// the content, so it is linked back into the store (temp name, then
/// rename) and every tier shares the object again, with no second copy.
fn relink_into_store(
    store: &Store,
    copy: &Path,
    object: &Path,
    mode: u32,
) -> anyhow::Result<String> {
    let temp = store.temp_path("relink");
    fs_err::hard_link(copy, &temp)?;
    let linked = fs_err::set_permissions(&temp, std::fs::Permissions::from_mode(mode))
        .and_then(|()| fs_err::rename(&temp, object));
    if let Err(err) = linked {
        let _ = std::fs::remove_file(&temp);
        return Err(err.into());
    }
    Ok(format!(
        "relinked from {} (the inode the hardlinked tiers share)",
        copy.display()
    ))
}

/// The object's content, taken from one of the wheels that hold it,
/// downloaded again and checked against its recorded sha256.
fn content_from_wheel(
    store: &Store,
    key: &ObjectKey,
    progress: &dyn Progress,
) -> anyhow::Result<(Vec<u8>, String)> {
    let users = store.db.object_users(key)?;
    let client = crate::http::client()?;
    let mut reasons = Vec::new();
    for ObjectUser {
        dist_id,
        name,
        version,
        path: member,
    } in users
    {
        let DistributionSource {
            url,
            sha256,
            filename,
            built_from,
        } = store.db.distribution_source(dist_id)?;
        if let Some(built_from) = built_from {
            reasons.push(if built_from.starts_with("local-") {
                format!("{name} {version} was built from a local folder")
            } else {
                format!("{name} {version} was built from an sdist")
            });
            continue;
        }
        let Some(url) = url else {
            reasons.push(format!("{name} {version} has no recorded URL"));
            continue;
        };
        let location = if url.contains("://") {
            Location::Url(url.clone())
        } else {
            Location::File(PathBuf::from(&url))
        };
        let temp = store.temp_path("redownload");
        let result = (|| -> anyhow::Result<Vec<u8>> {
            let got = crate::http::download(&client, location.origin(), &temp, progress)?;
            anyhow::ensure!(
                got.sha256 == sha256,
                "{url} no longer matches the sha256 recorded for {filename}"
            );
            let mut archive = zip::ZipArchive::new(std::fs::File::open(&temp)?)?;
            let mut entry = archive.by_name(&member)?;
            let mut content = Vec::new();
            entry.read_to_end(&mut content)?;
            Ok(content)
        })();
        let _ = std::fs::remove_file(&temp);
        match result {
            Ok(content) if blake3::hash(&content).as_bytes() == &key.hash => {
                return Ok((content, format!("from {filename}")));
            }
            Ok(_) => reasons.push(format!("{member} in {filename} has other content")),
            Err(err) => reasons.push(format!("{err:#}")),
        }
    }
    anyhow::bail!(
        "no good copy in any tier and no wheel to take it from ({})",
        if reasons.is_empty() {
            "no distribution holds it".to_string()
        } else {
            reasons.join("; ")
        }
    )
}

/// Links or writes damaged tier files again (objects that could not be
/// repaired are skipped: linking them would spread the damage).
pub(super) fn repair_tier_files(
    store: &Store,
    tier: &TierState,
    report: &mut TierReport,
    broken: &HashSet<ObjectKey>,
) {
    let linker = Linker::with_method(tier.method, store);
    let by_path: HashMap<&Path, &crate::materialize::plan::PlannedFile> = tier
        .manifest
        .files
        .iter()
        .map(|f| (f.dest.as_path(), f))
        .collect();
    for problem in &mut report.problems {
        if problem.fault == FileFault::Extra {
            continue;
        }
        let Some(file) = by_path.get(problem.path.as_path()) else {
            continue;
        };
        let dest = tier.root.join(&file.dest);
        let result = (|| -> anyhow::Result<()> {
            if let Some(parent) = dest.parent() {
                fs_err::create_dir_all(parent)?;
            }
            let _ = std::fs::remove_file(&dest);
            match &file.source {
                FileSource::Object(key) => {
                    anyhow::ensure!(!broken.contains(key), "its object is damaged");
                    linker.link(&store.object_path(key), &dest, key.executable)?;
                }
                FileSource::Empty => {
                    fs_err::write(&dest, b"")?;
                }
                FileSource::Content(bytes, mode) => {
                    fs_err::write(&dest, bytes)?;
                    fs_err::set_permissions(&dest, std::fs::Permissions::from_mode(*mode))?;
                }
            }
            Ok(())
        })();
        problem.repaired = result.is_ok();
    }
}

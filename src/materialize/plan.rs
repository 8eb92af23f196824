//! A tier's manifest: every file its venv holds and where it comes from.
//!
//! Planning reads the store (file lists, `entry_points.txt`, scripts) and
//! decides everything; applying the plan is a separate, parallel, dumb step.
//! Wheel paths map to the venv per the binary distribution format: the
//! archive root and `.data/purelib|platlib` to site-packages, `.data/scripts`
//! to `bin/`, `.data/headers` to `include/site/pythonX.Y/<name>/`,
//! `.data/data` to the venv root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::Digest;

use super::scripts;
use crate::fetch::Fetched;
use crate::store::db::FileRow;
use crate::store::wheel::{self, csv_field, safe_relative_path};
use crate::store::{ObjectKey, Store};

/// Where one venv file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FileSource {
    /// Linked (or copied) from a store object.
    Object(#[serde(with = "key_text")] ObjectKey),
    /// An empty file, created fresh.
    Empty,
    /// Written from these bytes (launchers, scripts, RECORD…), with this mode.
    Content(#[serde(with = "base64_text")] Vec<u8>, u32),
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PlannedFile {
    /// Relative to the venv root.
    pub dest: PathBuf,
    pub source: FileSource,
    /// The distribution it belongs to (for conflict messages).
    pub dist: String,
}

/// The whole venv, minus the skeleton `uv venv` creates.
#[derive(Debug, Default)]
pub struct Plan {
    pub files: Vec<PlannedFile>,
    /// Directories to create, parents first.
    pub dirs: Vec<PathBuf>,
    /// Names directly under site-packages, for the cheap up-to-date check.
    pub site_packages_entries: BTreeSet<String>,
    pub site_packages: PathBuf,
    /// Hash of everything above plus the venv's location and interpreter.
    pub hash: String,
    /// Conflicting paths between distributions, already resolved.
    pub warnings: Vec<String>,
}

pub struct PlanInput<'a> {
    pub store: &'a Store,
    pub fetched: &'a [Fetched],
    /// Normalized names that get a `REQUESTED` marker.
    pub requested: &'a [String],
    /// The final venv path (launchers name its interpreter).
    pub venv: &'a Path,
    pub site_packages: PathBuf,
    pub python_version: (u8, u8),
    pub interpreter: &'a Path,
}

pub fn build(input: &PlanInput<'_>) -> anyhow::Result<Plan> {
    let python = input.venv.join("bin/python");
    let mut by_dest: BTreeMap<PathBuf, PlannedFile> = BTreeMap::new();
    let mut warnings = Vec::new();

    let mut fetched: Vec<&Fetched> = input.fetched.iter().collect();
    fetched.sort_by(|a, b| a.selected.name.cmp(&b.selected.name));
    for item in fetched {
        let rows = input.store.db.distribution_files(item.dist_id)?;
        let dist_files = plan_distribution(input, &python, &item.selected.name, &rows)
            .with_context(|| {
                format!(
                    "cannot plan {} {}",
                    item.selected.name, item.selected.version
                )
            })?;
        for file in dist_files {
            if let Some(previous) = by_dest.get(&file.dest)
                && previous.source != file.source
            {
                warnings.push(format!(
                    "{} and {} both ship {} with different content; {}'s copy is used",
                    previous.dist,
                    file.dist,
                    file.dest.display(),
                    file.dist
                ));
            }
            by_dest.insert(file.dest.clone(), file);
        }
    }

    let mut dirs = BTreeSet::new();
    let mut site_packages_entries = BTreeSet::new();
    let mut hasher = blake3::Hasher::new();
    hasher.update(concat!("tstore-plan-1/", env!("CARGO_PKG_VERSION")).as_bytes());
    hasher.update(input.venv.as_os_str().as_encoded_bytes());
    hasher.update(input.interpreter.as_os_str().as_encoded_bytes());
    for file in by_dest.values() {
        let mut parent = file.dest.parent();
        while let Some(dir) = parent.filter(|p| !p.as_os_str().is_empty()) {
            if !dirs.insert(dir.to_path_buf()) {
                break;
            }
            parent = dir.parent();
        }
        if let Ok(rest) = file.dest.strip_prefix(&input.site_packages)
            && let Some(first) = rest.components().next()
        {
            site_packages_entries.insert(first.as_os_str().to_string_lossy().into_owned());
        }
        hasher.update(file.dest.as_os_str().as_encoded_bytes());
        match &file.source {
            FileSource::Object(key) => hasher.update(key.to_string().as_bytes()),
            FileSource::Empty => hasher.update(b"empty"),
            FileSource::Content(bytes, mode) => hasher.update(bytes).update(&mode.to_le_bytes()),
        };
    }
    Ok(Plan {
        files: by_dest.into_values().collect(),
        dirs: dirs.into_iter().collect(),
        site_packages_entries,
        site_packages: input.site_packages.clone(),
        hash: hasher.finalize().to_hex().to_string(),
        warnings,
    })
}

/// The files of one distribution, including its RECORD, INSTALLER,
/// REQUESTED and launchers.
fn plan_distribution(
    input: &PlanInput<'_>,
    python: &Path,
    name: &str,
    rows: &[FileRow],
) -> anyhow::Result<Vec<PlannedFile>> {
    let dist_info = rows
        .iter()
        .filter_map(|r| r.path.strip_suffix("/METADATA"))
        .find(|dir| dir.ends_with(".dist-info") && !dir.contains('/'))
        .with_context(|| format!("the store has no .dist-info for {name}: the record is damaged"))?
        .to_string();
    let data_dir = format!("{}.data", dist_info.trim_end_matches(".dist-info"));
    let site = &input.site_packages;
    let (major, minor) = input.python_version;

    let mut files = Vec::with_capacity(rows.len() + 4);
    // (path relative to site-packages, sha256, size) for RECORD.
    let mut record: Vec<(String, String, u64)> = Vec::with_capacity(rows.len() + 4);
    let relative_to_site = |dest: &Path| -> String {
        match dest.strip_prefix(site) {
            Ok(rest) => rest.display().to_string(),
            Err(_) => format!("../../../{}", dest.display()),
        }
    };
    let push_content = |files: &mut Vec<PlannedFile>,
                        record: &mut Vec<(String, String, u64)>,
                        dest: PathBuf,
                        bytes: Vec<u8>,
                        mode: u32| {
        record.push((
            relative_to_site(&dest),
            sha256_b64(&bytes),
            bytes.len() as u64,
        ));
        files.push(PlannedFile {
            dest,
            source: FileSource::Content(bytes, mode),
            dist: name.to_string(),
        });
    };

    let skip: [String; 3] = [
        format!("{dist_info}/RECORD"),
        format!("{dist_info}/INSTALLER"),
        format!("{dist_info}/REQUESTED"),
    ];
    for row in rows {
        if skip.contains(&row.path) {
            continue;
        }
        let inside = safe_relative_path(&row.path)
            .map_err(|e| anyhow::anyhow!("store path `{}` {e}", row.path))?;
        let dest = match row.path.strip_prefix(&format!("{data_dir}/")) {
            None => site.join(&inside),
            Some(rest) => {
                let (scheme, rest) = rest.split_once('/').unwrap_or((rest, ""));
                let rest =
                    safe_relative_path(rest).map_err(|e| anyhow::anyhow!("`{}` {e}", row.path))?;
                match scheme {
                    "purelib" | "platlib" => site.join(rest),
                    "headers" => {
                        PathBuf::from(format!("include/site/python{major}.{minor}/{name}"))
                            .join(rest)
                    }
                    "data" => rest,
                    "scripts" => {
                        let dest = Path::new("bin").join(rest);
                        let content = read_object(input.store, row)?;
                        push_content(
                            &mut files,
                            &mut record,
                            dest,
                            scripts::rewrite_script(&content, python),
                            0o755,
                        );
                        continue;
                    }
                    other => bail!("`{}` uses unknown .data scheme `{other}`", row.path),
                }
            }
        };
        record.push((relative_to_site(&dest), row.sha256.clone(), row.size));
        let source = match &row.object {
            None => FileSource::Empty,
            Some(key) => FileSource::Object(
                ObjectKey::parse(key)
                    .with_context(|| format!("bad object key `{key}` in the store index"))?,
            ),
        };
        files.push(PlannedFile {
            dest,
            source,
            dist: name.to_string(),
        });
    }

    if let Some(row) = rows
        .iter()
        .find(|r| r.path == format!("{dist_info}/entry_points.txt"))
    {
        let text = String::from_utf8_lossy(&read_object(input.store, row)?).into_owned();
        for entry in wheel::parse_entry_points(&text).map_err(|e| anyhow::anyhow!(e))? {
            let script = safe_relative_path(&entry.name)
                .ok()
                .filter(|p| p.components().count() == 1)
                .with_context(|| {
                    format!("entry point name `{}` is not a plain file name", entry.name)
                })?;
            push_content(
                &mut files,
                &mut record,
                Path::new("bin").join(script),
                scripts::launcher(&entry, python),
                0o755,
            );
        }
    }

    let dist_info_dir = site.join(&dist_info);
    push_content(
        &mut files,
        &mut record,
        dist_info_dir.join("INSTALLER"),
        b"tstore\n".to_vec(),
        0o644,
    );
    if input.requested.iter().any(|r| r == name) {
        push_content(
            &mut files,
            &mut record,
            dist_info_dir.join("REQUESTED"),
            Vec::new(),
            0o644,
        );
    }
    let mut text = String::new();
    for (path, sha, size) in &record {
        text.push_str(&format!("{},sha256={sha},{size}\n", csv_field(path)));
    }
    text.push_str(&format!(
        "{},,\n",
        csv_field(&format!("{dist_info}/RECORD"))
    ));
    files.push(PlannedFile {
        dest: dist_info_dir.join("RECORD"),
        source: FileSource::Content(text.into_bytes(), 0o644),
        dist: name.to_string(),
    });
    Ok(files)
}

fn read_object(store: &Store, row: &FileRow) -> anyhow::Result<Vec<u8>> {
    match &row.object {
        None => Ok(Vec::new()),
        Some(key) => {
            let key = ObjectKey::parse(key).with_context(|| format!("bad object key `{key}`"))?;
            fs_err::read(store.object_path(&key))
                .context("a store object is missing: the store is damaged")
        }
    }
}

fn sha256_b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(bytes))
}

/// Object keys as their text form in manifests.
mod key_text {
    use crate::store::ObjectKey;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(key: &ObjectKey, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(key)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectKey, D::Error> {
        let text = String::deserialize(d)?;
        ObjectKey::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("bad object key `{text}`")))
    }
}

/// Written file contents as base64 in manifests.
mod base64_text {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        STANDARD
            .decode(String::deserialize(d)?)
            .map_err(serde::de::Error::custom)
    }
}

//! A tier's manifest: every file its venv holds and where it comes from.
//!
//! Planning reads the store (file lists, `entry_points.txt`, scripts) and
//! decides everything; applying the plan is a separate, parallel, dumb step.
//! Wheel paths map to the venv per the binary distribution format: the
//! archive root and `.data/purelib|platlib` to site-packages, `.data/scripts`
//! to `bin/`, `.data/headers` to `include/site/pythonX.Y/<name>/`,
//! `.data/data` to the venv root.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rayon::prelude::*;
use sha2::Digest;

use super::scripts;
use crate::fetch::Fetched;
use crate::lock::pylock::Source;
use crate::store::db::{Bytecode, FileRow};
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
    pub dist: Arc<str>,
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
    /// Paths two distributions both ship, with the wheels and which copy is used.
    pub warnings: Vec<String>,
}

pub struct PlanInput<'a> {
    pub store: &'a Store,
    /// Normalized names that get a `REQUESTED` marker.
    pub requested: &'a [String],
    /// The final venv path (launchers name its interpreter).
    pub venv: &'a Path,
    pub site_packages: PathBuf,
    pub python_version: (u8, u8),
    pub interpreter: &'a Path,
    /// The interpreter's cache tag (`cpython-311`, naming pyc files) when
    /// bytecode is linked; `None` links none.
    pub pyc_cache_tag: Option<&'a str>,
}

/// One distribution's rows from the store, read once: for planning, and
/// before that for finding the sources that still need bytecode.
pub struct DistributionFiles<'a> {
    pub fetched: &'a Fetched,
    pub rows: Vec<FileRow>,
}

/// Reads every distribution's files, in name order, with what the store
/// knows of their bytecode for `bytecode_tag`.
pub fn read_distributions<'a>(
    store: &Store,
    fetched: &'a [Fetched],
    bytecode_tag: Option<&str>,
) -> anyhow::Result<Vec<DistributionFiles<'a>>> {
    let mut fetched: Vec<&Fetched> = fetched.iter().collect();
    fetched.sort_by(|a, b| a.selected.name.cmp(&b.selected.name));
    fetched
        .into_iter()
        .map(|item| {
            Ok(DistributionFiles {
                fetched: item,
                rows: store
                    .db
                    .distribution_files_with_bytecode(item.dist_id, bytecode_tag)?,
            })
        })
        .collect()
}

/// The `.py` files Python imports from site-packages that the store has no
/// bytecode entry for: (source object key or [`EMPTY_SOURCE`], path in the
/// wheel), each source once.
pub fn sources_without_bytecode(
    dists: &[DistributionFiles<'_>],
) -> anyhow::Result<Vec<(String, String)>> {
    let mut seen = HashSet::new();
    let mut sources = Vec::new();
    for dist in dists {
        if is_editable(&dist.fetched.selected.source) {
            continue;
        }
        let data_prefix = data_prefix(&dist.fetched.selected.name, &dist.rows)?;
        for row in &dist.rows {
            if row.bytecode == Bytecode::Unknown
                && row.path.ends_with(".py")
                && imports_from_site_packages(&row.path, &data_prefix)
            {
                let source = row.bytecode_source();
                if seen.insert(source.clone()) {
                    sources.push((source, row.path.clone()));
                }
            }
        }
    }
    Ok(sources)
}

/// Puts what compiling gave (by source) into the rows.
pub fn apply_bytecode(dists: &mut [DistributionFiles<'_>], compiled: &HashMap<String, Bytecode>) {
    for row in dists.iter_mut().flat_map(|d| d.rows.iter_mut()) {
        if let Some(state) = compiled.get(&row.bytecode_source()) {
            row.bytecode = state.clone();
        }
    }
}

/// Plans the venv of `dists` (from [`read_distributions`]).
pub fn build(input: &PlanInput<'_>, dists: &[DistributionFiles<'_>]) -> anyhow::Result<Plan> {
    let python = input.venv.join("bin/python");
    let per_dist = dists
        .par_iter()
        .map(|dist| {
            let item = dist.fetched;
            plan_distribution(
                input,
                &python,
                &item.selected.name,
                &item.selected.source,
                &dist.rows,
            )
            .with_context(|| {
                format!(
                    "cannot plan {} {}",
                    item.selected.name, item.selected.version
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut files: Vec<PlannedFile> = per_dist.into_iter().flatten().collect();
    // Paths are ordered by their bytes (cheaper than component order and as
    // deterministic); the sort is stable, so of two distributions shipping
    // the same path the one later by name wins, and is next to the other.
    files.sort_by(|a, b| path_bytes(&a.dest).cmp(path_bytes(&b.dest)));
    // Like uv and pip, which install both wheels and leave the file of the
    // one written last, the plan keeps one copy and says which wheels clash.
    let wheel_of = |dist: &str| {
        dists
            .iter()
            .find(|d| d.fetched.selected.name == dist)
            .map_or_else(|| dist.to_string(), |d| d.fetched.selected.label())
    };
    let mut warnings = Vec::new();
    let mut kept: Vec<PlannedFile> = Vec::with_capacity(files.len());
    for file in files {
        match kept.last_mut() {
            Some(previous) if previous.dest == file.dest => {
                if previous.source != file.source {
                    warnings.push(format!(
                        "{} and {} both ship {} with different content ({} and {}); {}'s copy is used",
                        previous.dist,
                        file.dist,
                        file.dest.display(),
                        wheel_of(&previous.dist),
                        wheel_of(&file.dist),
                        file.dist
                    ));
                }
                *previous = file;
            }
            _ => kept.push(file),
        }
    }

    let mut dirs: HashSet<&Path> = HashSet::new();
    let mut site_packages_entries = BTreeSet::new();
    let site_prefix = path_bytes(&input.site_packages);
    let mut hasher = blake3::Hasher::new();
    hasher.update(concat!("tstore-plan-2/", env!("CARGO_PKG_VERSION")).as_bytes());
    hasher.update(input.venv.as_os_str().as_encoded_bytes());
    hasher.update(input.interpreter.as_os_str().as_encoded_bytes());
    let mut last_parent: Option<&Path> = None;
    for file in &kept {
        let parent = file.dest.parent();
        if parent != last_parent {
            last_parent = parent;
            let mut dir = parent;
            while let Some(d) = dir.filter(|p| !p.as_os_str().is_empty()) {
                if !dirs.insert(d) {
                    break;
                }
                dir = d.parent();
            }
        }
        let dest = path_bytes(&file.dest);
        if let Some(rest) = dest
            .strip_prefix(site_prefix)
            .and_then(|rest| rest.strip_prefix(b"/"))
        {
            let first = rest.split(|b| *b == b'/').next().unwrap_or(rest);
            if !site_packages_entries.contains(first) {
                site_packages_entries.insert(first.to_vec());
            }
        }
        hasher
            .update(&(dest.len() as u64).to_le_bytes())
            .update(dest);
        match &file.source {
            FileSource::Object(key) => hasher.update(&key.hash).update(&[u8::from(key.executable)]),
            FileSource::Empty => hasher.update(b"empty"),
            FileSource::Content(bytes, mode) => hasher
                .update(&(bytes.len() as u64).to_le_bytes())
                .update(bytes)
                .update(&mode.to_le_bytes()),
        };
    }
    // Parents first: by depth, then by bytes for a stable order.
    let mut dirs: Vec<PathBuf> = dirs.into_iter().map(Path::to_path_buf).collect();
    dirs.sort_by_cached_key(|d| (d.components().count(), d.as_os_str().to_owned()));
    Ok(Plan {
        files: kept,
        dirs,
        site_packages_entries: site_packages_entries
            .into_iter()
            .map(|name| String::from_utf8_lossy(&name).into_owned())
            .collect(),
        site_packages: input.site_packages.clone(),
        hash: hasher.finalize().to_hex().to_string(),
        warnings,
    })
}

fn path_bytes(path: &Path) -> &[u8] {
    path.as_os_str().as_encoded_bytes()
}

/// The files of one distribution, including its RECORD, INSTALLER,
/// REQUESTED and launchers.
fn plan_distribution(
    input: &PlanInput<'_>,
    python: &Path,
    name: &str,
    source: &Source,
    rows: &[FileRow],
) -> anyhow::Result<Vec<PlannedFile>> {
    let dist_info = dist_info_dir(name, rows)?;
    let data_prefix = data_prefix(name, rows)?;
    let site = &input.site_packages;
    let (major, minor) = input.python_version;
    // One shared name for every file of the distribution.
    let dist: Arc<str> = Arc::from(name);

    let mut files = Vec::with_capacity(rows.len() + 4);
    let mut record = RecordWriter::default();
    let push_content = |files: &mut Vec<PlannedFile>,
                        record: &mut RecordWriter,
                        dest: PathBuf,
                        bytes: Vec<u8>,
                        mode: u32| {
        record.push(
            &relative_to_site(site, &dest),
            &sha256_b64(&bytes),
            bytes.len() as u64,
        );
        files.push(PlannedFile {
            dest,
            source: FileSource::Content(bytes, mode),
            dist: dist.clone(),
        });
    };

    let skip: [String; 4] = [
        format!("{dist_info}/RECORD"),
        format!("{dist_info}/INSTALLER"),
        format!("{dist_info}/REQUESTED"),
        format!("{dist_info}/direct_url.json"),
    ];
    // An editable project's modules stay in its folder: of its wheel only
    // the metadata and scripts are installed, and a `.pth` file puts the
    // folders holding its modules on sys.path.
    let editable_from = match source {
        Source::Local {
            path,
            editable: true,
        } => Some(path.as_path()),
        _ => None,
    };
    if let Some(project) = editable_from {
        let top_level = crate::local::wheel_top_level(rows.iter().map(|r| r.path.as_str()));
        let roots = crate::local::import_roots(project, &top_level)?;
        let mut text = String::new();
        for root in roots {
            text.push_str(&root.to_string_lossy());
            text.push('\n');
        }
        push_content(
            &mut files,
            &mut record,
            site.join(format!(
                "__editable__.{}.pth",
                dist_info.trim_end_matches(".dist-info")
            )),
            text.into_bytes(),
            0o644,
        );
    }
    if let Source::Local { path, editable } = source {
        // PEP 610: where the project came from, and that it is editable.
        let direct_url = serde_json::json!({
            "url": file_url(path),
            "dir_info": if *editable {
                serde_json::json!({"editable": true})
            } else {
                serde_json::json!({})
            },
        });
        push_content(
            &mut files,
            &mut record,
            site.join(&dist_info).join("direct_url.json"),
            direct_url.to_string().into_bytes(),
            0o644,
        );
    }
    for row in rows {
        if skip.contains(&row.path) {
            continue;
        }
        if editable_from.is_some() {
            let metadata = row
                .path
                .strip_prefix(dist_info.as_str())
                .is_some_and(|rest| rest.starts_with('/'));
            let scripts_or_data = row.path.starts_with(&data_prefix)
                && !imports_from_site_packages(&row.path, &data_prefix);
            if !metadata && !scripts_or_data {
                continue;
            }
        }
        let inside = safe_relative_path(&row.path)
            .map_err(|e| anyhow::anyhow!("store path `{}` {e}", row.path))?;
        let dest = match row.path.strip_prefix(&data_prefix) {
            None => {
                record.push(&inside.to_string_lossy(), &row.sha256, row.size);
                site.join(&inside)
            }
            Some(rest) => {
                wheel::check_install_path(&row.path, &data_prefix)
                    .map_err(|e| anyhow::anyhow!("`{}` {e}", row.path))?;
                let (scheme, rest) = rest.split_once('/').unwrap_or((rest, ""));
                let rest =
                    safe_relative_path(rest).map_err(|e| anyhow::anyhow!("`{}` {e}", row.path))?;
                let dest = match scheme {
                    "purelib" | "platlib" => site.join(rest),
                    "headers" => {
                        PathBuf::from(format!("include/site/python{major}.{minor}/{name}"))
                            .join(rest)
                    }
                    "data" => rest.into_owned(),
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
                };
                record.push(&relative_to_site(site, &dest), &row.sha256, row.size);
                dest
            }
        };
        let source = match row.object {
            None => FileSource::Empty,
            Some(key) => FileSource::Object(key),
        };
        if let (Some(cache_tag), Bytecode::Object(pyc)) = (input.pyc_cache_tag, &row.bytecode)
            && imports_from_site_packages(&row.path, &data_prefix)
            && let Some(pyc_dest) = pyc_path(&dest, cache_tag)
        {
            files.push(PlannedFile {
                dest: pyc_dest,
                source: FileSource::Object(*pyc),
                dist: dist.clone(),
            });
        }
        files.push(PlannedFile {
            dest,
            source,
            dist: dist.clone(),
        });
    }

    if let Some(row) = rows
        .iter()
        .find(|r| r.path == format!("{dist_info}/entry_points.txt"))
    {
        let text = String::from_utf8_lossy(&read_object(input.store, row)?).into_owned();
        for entry in wheel::parse_entry_points(&text).map_err(|e| anyhow::anyhow!(e))? {
            // Checked at ingest too; a store may hold wheels ingested before.
            wheel::check_script_name(&entry.name)
                .map_err(|e| anyhow::anyhow!("entry point `{}` {e}", entry.name))?;
            push_content(
                &mut files,
                &mut record,
                Path::new("bin").join(&entry.name),
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
    let mut text = record.text;
    text.push_str(&csv_field(&format!("{dist_info}/RECORD")));
    text.push_str(",,\n");
    files.push(PlannedFile {
        dest: dist_info_dir.join("RECORD"),
        source: FileSource::Content(text.into_bytes(), 0o644),
        dist,
    });
    Ok(files)
}

/// The distribution's `<name>-<version>.dist-info` directory.
fn dist_info_dir(name: &str, rows: &[FileRow]) -> anyhow::Result<String> {
    Ok(rows
        .iter()
        .filter_map(|r| r.path.strip_suffix("/METADATA"))
        .find(|dir| dir.ends_with(".dist-info") && !dir.contains('/'))
        .with_context(|| format!("the store has no .dist-info for {name}: the record is damaged"))?
        .to_string())
}

fn is_editable(source: &Source) -> bool {
    matches!(source, Source::Local { editable: true, .. })
}

/// A `file://` URL for an absolute path, percent-encoding what RFC 3986
/// does not allow in a path.
fn file_url(path: &Path) -> String {
    let mut url = String::from("file://");
    for &byte in path.as_os_str().as_encoded_bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&byte) {
            url.push(byte as char);
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
    url
}

/// `<name>-<version>.data/`, the prefix of the wheel's scheme directories.
fn data_prefix(name: &str, rows: &[FileRow]) -> anyhow::Result<String> {
    let dist_info = dist_info_dir(name, rows)?;
    Ok(format!(
        "{}.data/",
        dist_info.trim_end_matches(".dist-info")
    ))
}

/// Whether a wheel path lands in site-packages, where Python imports from:
/// the archive root and `.data/purelib|platlib`, not scripts, data or headers.
fn imports_from_site_packages(path: &str, data_prefix: &str) -> bool {
    match path.strip_prefix(data_prefix) {
        None => true,
        Some(rest) => rest.starts_with("purelib/") || rest.starts_with("platlib/"),
    }
}

/// Where Python looks for the bytecode of `source` (a `.py` file):
/// `__pycache__/<stem>.<cache tag>.pyc` beside it.
fn pyc_path(source: &Path, cache_tag: &str) -> Option<PathBuf> {
    let stem = source.file_name()?.to_str()?.strip_suffix(".py")?;
    Some(
        source
            .parent()?
            .join("__pycache__")
            .join(format!("{stem}.{cache_tag}.pyc")),
    )
}

/// The installed RECORD, written as files are planned.
#[derive(Default)]
struct RecordWriter {
    text: String,
}

impl RecordWriter {
    fn push(&mut self, path: &str, sha256: &str, size: u64) {
        use std::fmt::Write;
        self.text.push_str(&csv_field(path));
        let _ = writeln!(self.text, ",sha256={sha256},{size}");
    }
}

/// `dest` (relative to the venv) as RECORD names it: relative to site-packages.
fn relative_to_site(site: &Path, dest: &Path) -> String {
    match dest.strip_prefix(site) {
        Ok(rest) => rest.display().to_string(),
        Err(_) => format!("../../../{}", dest.display()),
    }
}

fn read_object(store: &Store, row: &FileRow) -> anyhow::Result<Vec<u8>> {
    match &row.object {
        None => Ok(Vec::new()),
        Some(key) => fs_err::read(store.object_path(key))
            .context("a store object is missing: the store is damaged"),
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

#[cfg(test)]
mod tests {
    use super::imports_from_site_packages;

    #[test]
    fn only_files_in_site_packages_are_importable() {
        let data = "pkg-1.0.data/";
        assert!(imports_from_site_packages("pkg/mod.py", data));
        assert!(imports_from_site_packages(
            "pkg-1.0.data/purelib/pkg/mod.py",
            data
        ));
        assert!(imports_from_site_packages(
            "pkg-1.0.data/platlib/mod.py",
            data
        ));
        assert!(!imports_from_site_packages(
            "pkg-1.0.data/scripts/tool.py",
            data
        ));
        assert!(!imports_from_site_packages(
            "pkg-1.0.data/data/share/x.py",
            data
        ));
        assert!(!imports_from_site_packages(
            "pkg-1.0.data/headers/x.py",
            data
        ));
        // Another distribution's data directory name is just a directory here.
        assert!(imports_from_site_packages(
            "other-2.0.data/scripts/x.py",
            data
        ));
    }
}

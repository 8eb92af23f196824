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
use crate::dist::Source;
use crate::fetch::{Fetched, Stored};
use crate::store::db::{Bytecode, FileRow};
use crate::store::wheel::{
    self, csv_field, data_prefix, dist_info_dir, imports_from_site_packages, safe_relative_path,
};
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
/// knows of their bytecode for `bytecode_tag`: from the index, or for a
/// wheel not recorded yet from the rows it will be recorded with, so a new
/// store's venv is planned while its wheels are being recorded.
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
            let rows = match &item.stored {
                Stored::Recorded(id) => store
                    .db
                    .distribution_files_with_bytecode(*id, bytecode_tag)?,
                Stored::Unrecorded(wheel) => rows_in_memory(store, wheel.rows(), bytecode_tag)?,
            };
            Ok(DistributionFiles {
                fetched: item,
                rows,
            })
        })
        .collect()
}

/// A wheel's rows not read from the index, as the index would give them:
/// in path order, with the bytecode it knows for their sources.
fn rows_in_memory(
    store: &Store,
    rows: &[FileRow],
    bytecode_tag: Option<&str>,
) -> anyhow::Result<Vec<FileRow>> {
    let mut rows = rows.to_vec();
    rows.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    if let Some(tag) = bytecode_tag {
        store.db.add_bytecode(&mut rows, tag)?;
    }
    Ok(rows)
}

/// The `.py` files Python imports from site-packages that the store has no
/// bytecode entry for: (source object key or [`crate::store::db::EMPTY_SOURCE`], path in the
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
        let name = &dist.fetched.selected.name;
        for (source, path) in crate::store::bytecode::sources_to_compile(name, &dist.rows)? {
            if seen.insert(source.clone()) {
                sources.push((source, path));
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
    let files = plan_each_distribution(input, dists)?;
    let wheel_of = |dist: &str| {
        dists
            .iter()
            .find(|d| d.fetched.selected.name == dist)
            .map_or_else(|| dist.to_string(), |d| d.fetched.selected.label())
    };
    let (files, warnings) = keep_one_file_per_path(files, wheel_of);
    let summary = summarize(input, &files);
    Ok(Plan {
        files,
        dirs: summary.dirs,
        site_packages_entries: summary.site_packages_entries,
        site_packages: input.site_packages.clone(),
        hash: summary.hash,
        warnings,
    })
}

/// Every distribution's files, planned in parallel, ordered by the bytes of
/// their paths (cheaper than component order and as deterministic). The
/// sort is stable, so of two distributions shipping the same path the one
/// later by name comes last, next to the other.
fn plan_each_distribution(
    input: &PlanInput<'_>,
    dists: &[DistributionFiles<'_>],
) -> anyhow::Result<Vec<PlannedFile>> {
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
    files.sort_by(|a, b| path_bytes(&a.dest).cmp(path_bytes(&b.dest)));
    Ok(files)
}

/// Of `files` (sorted by path) that share a path, keeps the last; a warning
/// names the two wheels when their copies differ. Like uv and pip, which
/// install both wheels and leave the file of the one written last.
fn keep_one_file_per_path(
    files: Vec<PlannedFile>,
    wheel_of: impl Fn(&str) -> String,
) -> (Vec<PlannedFile>, Vec<String>) {
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
    (kept, warnings)
}

/// What a plan derives from its files.
struct Summary {
    /// Parents first: by depth, then by bytes for a stable order.
    dirs: Vec<PathBuf>,
    site_packages_entries: BTreeSet<String>,
    hash: String,
}

/// The directories `files` need, the names directly under site-packages,
/// and the plan's hash (of the files, the venv's location and interpreter).
fn summarize(input: &PlanInput<'_>, files: &[PlannedFile]) -> Summary {
    let mut dirs: HashSet<&Path> = HashSet::new();
    let mut site_packages_entries = BTreeSet::new();
    let site_prefix = path_bytes(&input.site_packages);
    let mut hasher = blake3::Hasher::new();
    hasher.update(concat!("tstore-plan-2/", env!("CARGO_PKG_VERSION")).as_bytes());
    hasher.update(input.venv.as_os_str().as_encoded_bytes());
    hasher.update(input.interpreter.as_os_str().as_encoded_bytes());
    let mut last_parent: Option<&Path> = None;
    for file in files {
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
        hash_file(&mut hasher, dest, &file.source);
    }
    let mut dirs: Vec<PathBuf> = dirs.into_iter().map(Path::to_path_buf).collect();
    dirs.sort_by_cached_key(|d| (d.components().count(), d.as_os_str().to_owned()));
    Summary {
        dirs,
        site_packages_entries: site_packages_entries
            .into_iter()
            .map(|name| String::from_utf8_lossy(&name).into_owned())
            .collect(),
        hash: hasher.finalize().to_hex().to_string(),
    }
}

fn hash_file(hasher: &mut blake3::Hasher, dest: &[u8], source: &FileSource) {
    hasher
        .update(&(dest.len() as u64).to_le_bytes())
        .update(dest);
    match source {
        FileSource::Object(key) => hasher.update(&key.hash).update(&[u8::from(key.executable)]),
        FileSource::Empty => hasher.update(b"empty"),
        FileSource::Content(bytes, mode) => hasher
            .update(&(bytes.len() as u64).to_le_bytes())
            .update(bytes)
            .update(&mode.to_le_bytes()),
    };
}

fn path_bytes(path: &Path) -> &[u8] {
    path.as_os_str().as_encoded_bytes()
}

/// The files of one distribution, in the steps of installing a wheel
/// (PEP 427 and the installation spec): what PEP 610 and an editable
/// install add, the wheel's files placed by scheme, launchers for its entry
/// points, then the installer's own files, RECORD last since it lists the
/// others.
fn plan_distribution(
    input: &PlanInput<'_>,
    python: &Path,
    name: &str,
    source: &Source,
    rows: &[FileRow],
) -> anyhow::Result<Vec<PlannedFile>> {
    let mut plan = DistributionPlan::new(input, python, name, rows)?;
    let mut editable = false;
    if let Source::Local {
        path,
        editable: is_editable,
    } = source
    {
        editable = *is_editable;
        if editable {
            plan.editable_pth(path, rows)?;
        }
        plan.direct_url(path, editable);
    }
    plan.wheel_files(rows, editable)?;
    plan.launchers(rows)?;
    plan.installer_files(input.requested.iter().any(|r| r == name));
    Ok(plan.finish())
}

/// Where a wheel path goes in the venv.
#[derive(Debug, PartialEq, Eq)]
enum Placement {
    /// Linked from the store to `dest`, listed in RECORD as `record`.
    Linked { dest: PathBuf, record: String },
    /// A `.data/scripts` file, written to `bin/` with its `#!python` line
    /// naming the venv's interpreter.
    Script(PathBuf),
}

/// The install schemes of one distribution: the archive root and
/// `.data/purelib|platlib` to site-packages, `.data/scripts` to `bin/`,
/// `.data/headers` to `include/site/pythonX.Y/<name>/`, `.data/data` to the
/// venv root.
struct Schemes<'a> {
    site: &'a Path,
    /// `<name>-<version>.data/`.
    data_prefix: String,
    headers: PathBuf,
}

impl Schemes<'_> {
    fn place(&self, wheel_path: &str) -> anyhow::Result<Placement> {
        let inside = safe_relative_path(wheel_path)
            .map_err(|e| anyhow::anyhow!("store path `{wheel_path}` {e}"))?;
        let Some(rest) = wheel_path.strip_prefix(&self.data_prefix) else {
            return Ok(Placement::Linked {
                dest: self.site.join(&inside),
                record: inside.to_string_lossy().into_owned(),
            });
        };
        wheel::check_install_path(wheel_path, &self.data_prefix)
            .map_err(|e| anyhow::anyhow!("`{wheel_path}` {e}"))?;
        let (scheme, rest) = rest.split_once('/').unwrap_or((rest, ""));
        let rest = safe_relative_path(rest).map_err(|e| anyhow::anyhow!("`{wheel_path}` {e}"))?;
        let dest = match scheme {
            "purelib" | "platlib" => self.site.join(rest),
            "headers" => self.headers.join(rest),
            "data" => rest.into_owned(),
            "scripts" => return Ok(Placement::Script(Path::new("bin").join(rest))),
            other => bail!("`{wheel_path}` uses unknown .data scheme `{other}`"),
        };
        Ok(Placement::Linked {
            record: relative_to_site(self.site, &dest),
            dest,
        })
    }
}

/// One distribution's files as they are planned, with its RECORD.
struct DistributionPlan<'a> {
    store: &'a Store,
    python: &'a Path,
    pyc_cache_tag: Option<&'a str>,
    schemes: Schemes<'a>,
    /// `<name>-<version>.dist-info`.
    dist_info: String,
    /// One shared name for every file of the distribution.
    dist: Arc<str>,
    files: Vec<PlannedFile>,
    record: RecordWriter,
}

impl<'a> DistributionPlan<'a> {
    fn new(
        input: &'a PlanInput<'_>,
        python: &'a Path,
        name: &str,
        rows: &[FileRow],
    ) -> anyhow::Result<Self> {
        let (major, minor) = input.python_version;
        Ok(Self {
            store: input.store,
            python,
            pyc_cache_tag: input.pyc_cache_tag,
            schemes: Schemes {
                site: &input.site_packages,
                data_prefix: data_prefix(name, rows)?,
                headers: PathBuf::from(format!("include/site/python{major}.{minor}/{name}")),
            },
            dist_info: dist_info_dir(name, rows)?,
            dist: Arc::from(name),
            files: Vec::with_capacity(rows.len() + 4),
            record: RecordWriter::default(),
        })
    }

    fn site(&self) -> &'a Path {
        self.schemes.site
    }

    /// Plans a file written from `bytes`, and lists it in RECORD.
    fn write(&mut self, dest: PathBuf, bytes: Vec<u8>, mode: u32) {
        self.record.push(
            &relative_to_site(self.site(), &dest),
            &sha256_b64(&bytes),
            bytes.len() as u64,
        );
        self.files.push(PlannedFile {
            dest,
            source: FileSource::Content(bytes, mode),
            dist: self.dist.clone(),
        });
    }

    /// An editable project's modules stay in its folder: a `.pth` file puts
    /// the folders holding them on sys.path.
    fn editable_pth(&mut self, project: &Path, rows: &[FileRow]) -> anyhow::Result<()> {
        let top_level = crate::local::wheel_top_level(rows.iter().map(|r| r.path.as_str()));
        let mut text = String::new();
        for root in crate::local::import_roots(project, &top_level)? {
            text.push_str(&root.to_string_lossy());
            text.push('\n');
        }
        let dest = self.site().join(format!(
            "__editable__.{}.pth",
            self.dist_info.trim_end_matches(".dist-info")
        ));
        self.write(dest, text.into_bytes(), 0o644);
        Ok(())
    }

    /// PEP 610: where a local project came from, and whether it is editable.
    fn direct_url(&mut self, project: &Path, editable: bool) {
        let direct_url = serde_json::json!({
            "url": file_url(project),
            "dir_info": if editable {
                serde_json::json!({"editable": true})
            } else {
                serde_json::json!({})
            },
        });
        let dest = self.site().join(&self.dist_info).join("direct_url.json");
        self.write(dest, direct_url.to_string().into_bytes(), 0o644);
    }

    /// The wheel's own files, each where its scheme puts it, with its
    /// bytecode. Of an editable project's wheel only the metadata, scripts
    /// and data are installed: its modules are imported from its folder.
    fn wheel_files(&mut self, rows: &[FileRow], editable: bool) -> anyhow::Result<()> {
        for row in rows {
            if self.is_written_by_installer(&row.path)
                || (editable && self.is_importable_module(&row.path))
            {
                continue;
            }
            match self.schemes.place(&row.path)? {
                Placement::Script(dest) => {
                    let content = read_object(self.store, row)?;
                    let script = scripts::rewrite_script(&content, self.python);
                    self.write(dest, script, 0o755);
                }
                Placement::Linked { dest, record } => {
                    self.record.push(&record, &row.sha256, row.size);
                    self.link(row, dest)?;
                }
            }
        }
        Ok(())
    }

    /// The files an installer writes itself, so the wheel's copies (if it
    /// ships any) are not installed.
    fn is_written_by_installer(&self, wheel_path: &str) -> bool {
        wheel_path
            .strip_prefix(self.dist_info.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|file| {
                ["RECORD", "INSTALLER", "REQUESTED", "direct_url.json"].contains(&file)
            })
    }

    /// Whether a wheel path is part of the code Python imports (not
    /// metadata, scripts, data or headers).
    fn is_importable_module(&self, wheel_path: &str) -> bool {
        let metadata = wheel_path
            .strip_prefix(self.dist_info.as_str())
            .is_some_and(|rest| rest.starts_with('/'));
        let scripts_or_data = wheel_path.starts_with(&self.schemes.data_prefix)
            && !imports_from_site_packages(wheel_path, &self.schemes.data_prefix);
        !metadata && !scripts_or_data
    }

    /// Plans `row`'s store object at `dest`, preceded by its bytecode when
    /// the store has it and Python would import it from there.
    fn link(&mut self, row: &FileRow, dest: PathBuf) -> anyhow::Result<()> {
        let source = match row.object {
            None => FileSource::Empty,
            Some(key) => FileSource::Object(key),
        };
        if let (Some(cache_tag), Bytecode::Object(pyc)) = (self.pyc_cache_tag, &row.bytecode)
            && imports_from_site_packages(&row.path, &self.schemes.data_prefix)
            && let Some(pyc_dest) = pyc_path(&dest, cache_tag)
        {
            self.files.push(PlannedFile {
                dest: pyc_dest,
                source: FileSource::Object(*pyc),
                dist: self.dist.clone(),
            });
        }
        self.files.push(PlannedFile {
            dest,
            source,
            dist: self.dist.clone(),
        });
        Ok(())
    }

    /// A launcher in `bin/` for each console and GUI entry point.
    fn launchers(&mut self, rows: &[FileRow]) -> anyhow::Result<()> {
        let entry_points = format!("{}/entry_points.txt", self.dist_info);
        let Some(row) = rows.iter().find(|r| r.path == entry_points) else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(&read_object(self.store, row)?).into_owned();
        for entry in wheel::parse_entry_points(&text).map_err(|e| anyhow::anyhow!(e))? {
            // Checked at ingest too; a store may hold wheels ingested before.
            wheel::check_script_name(&entry.name)
                .map_err(|e| anyhow::anyhow!("entry point `{}` {e}", entry.name))?;
            let launcher = scripts::launcher(&entry, self.python);
            self.write(Path::new("bin").join(&entry.name), launcher, 0o755);
        }
        Ok(())
    }

    /// INSTALLER, and REQUESTED when the distribution was asked for by name.
    fn installer_files(&mut self, requested: bool) {
        let dist_info = self.site().join(&self.dist_info);
        self.write(dist_info.join("INSTALLER"), b"tstore\n".to_vec(), 0o644);
        if requested {
            self.write(dist_info.join("REQUESTED"), Vec::new(), 0o644);
        }
    }

    /// The planned files with RECORD, which lists them all and itself
    /// without a hash.
    fn finish(mut self) -> Vec<PlannedFile> {
        let dest = self.site().join(&self.dist_info).join("RECORD");
        let mut text = self.record.text;
        text.push_str(&csv_field(&format!("{}/RECORD", self.dist_info)));
        text.push_str(",,\n");
        self.files.push(PlannedFile {
            dest,
            source: FileSource::Content(text.into_bytes(), 0o644),
            dist: self.dist,
        });
        self.files
    }
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
    use super::*;

    const SITE: &str = "lib/python3.12/site-packages";

    /// A store in a temporary folder and the venv planned from it.
    struct Fixture {
        _home: tempfile::TempDir,
        store: Store,
        requested: Vec<String>,
    }

    impl Fixture {
        fn new() -> Self {
            let home = tempfile::tempdir().unwrap();
            let store = Store::open(home.path()).unwrap();
            Self {
                _home: home,
                store,
                requested: vec!["pkg".to_string()],
            }
        }

        fn input(&self) -> PlanInput<'_> {
            PlanInput {
                store: &self.store,
                requested: &self.requested,
                venv: Path::new("/venv"),
                site_packages: PathBuf::from(SITE),
                python_version: (3, 12),
                interpreter: Path::new("/usr/bin/python3.12"),
                pyc_cache_tag: Some("cpython-312"),
            }
        }

        /// A row whose bytes are in the store (scripts and entry points are read).
        fn stored(&self, path: &str, bytes: &[u8]) -> FileRow {
            let key = ObjectKey {
                hash: *blake3::hash(bytes).as_bytes(),
                executable: false,
            };
            std::fs::write(self.store.object_path(&key), bytes).unwrap();
            FileRow {
                object: Some(key),
                size: bytes.len() as u64,
                sha256: sha256_b64(bytes),
                ..row(path)
            }
        }

        fn plan(&self, source: &Source, rows: &[FileRow]) -> Vec<PlannedFile> {
            let input = self.input();
            plan_distribution(&input, Path::new("/venv/bin/python"), "pkg", source, rows).unwrap()
        }
    }

    /// A linked file's row; its object is not read while planning.
    fn row(path: &str) -> FileRow {
        FileRow {
            path: path.to_string(),
            object: Some(ObjectKey::parse(&format!("{:064x}", path.len())).unwrap()),
            mode: 0o644,
            size: 3,
            sha256: "c2hh".to_string(),
            bytecode: Bytecode::Unknown,
        }
    }

    fn from_index() -> Source {
        Source::Wheel(crate::dist::PinnedFile {
            location: crate::dist::Location::Url(
                "https://example.invalid/pkg-1.0-py3-none-any.whl".to_string(),
            ),
            filename: "pkg-1.0-py3-none-any.whl".to_string(),
            sha256: String::new(),
            size: None,
        })
    }

    fn dests(files: &[PlannedFile]) -> Vec<String> {
        files.iter().map(|f| f.dest.display().to_string()).collect()
    }

    fn find<'f>(files: &'f [PlannedFile], dest: &str) -> &'f PlannedFile {
        files
            .iter()
            .find(|f| f.dest == Path::new(dest))
            .unwrap_or_else(|| panic!("{dest} is not planned: {:?}", dests(files)))
    }

    fn content(file: &PlannedFile) -> (String, u32) {
        match &file.source {
            FileSource::Content(bytes, mode) => (String::from_utf8(bytes.clone()).unwrap(), *mode),
            other => panic!("{} is not written but {other:?}", file.dest.display()),
        }
    }

    fn record_lines(files: &[PlannedFile]) -> Vec<String> {
        let record = find(files, &format!("{SITE}/pkg-1.0.dist-info/RECORD"));
        content(record).0.lines().map(str::to_string).collect()
    }

    #[test]
    fn data_scripts_land_in_bin_with_the_venv_interpreter() {
        let fx = Fixture::new();
        let rows = [
            row("pkg-1.0.dist-info/METADATA"),
            fx.stored("pkg-1.0.data/scripts/tool", b"#!python\nprint(1)\n"),
        ];
        let files = fx.plan(&from_index(), &rows);
        let (text, mode) = content(find(&files, "bin/tool"));
        assert_eq!(text, "#!/venv/bin/python\nprint(1)\n");
        assert_eq!(mode, 0o755);
        let script_hash = sha256_b64(text.as_bytes());
        assert!(
            record_lines(&files).contains(&format!(
                "../../../bin/tool,sha256={script_hash},{}",
                text.len()
            )),
            "{:?}",
            record_lines(&files)
        );
    }

    #[test]
    fn each_data_scheme_has_its_place() {
        let schemes = Schemes {
            site: Path::new(SITE),
            data_prefix: "pkg-1.0.data/".to_string(),
            headers: PathBuf::from("include/site/python3.12/pkg"),
        };
        let linked = |path: &str| match schemes.place(path).unwrap() {
            Placement::Linked { dest, record } => (dest.display().to_string(), record),
            other => panic!("{path} is not linked: {other:?}"),
        };
        assert_eq!(
            linked("pkg/mod.py"),
            (format!("{SITE}/pkg/mod.py"), "pkg/mod.py".to_string())
        );
        assert_eq!(
            linked("pkg-1.0.data/purelib/pkg/a.py"),
            (format!("{SITE}/pkg/a.py"), "pkg/a.py".to_string())
        );
        assert_eq!(
            linked("pkg-1.0.data/platlib/pkg/b.so"),
            (format!("{SITE}/pkg/b.so"), "pkg/b.so".to_string())
        );
        assert_eq!(
            linked("pkg-1.0.data/headers/pkg.h"),
            (
                "include/site/python3.12/pkg/pkg.h".to_string(),
                "../../../include/site/python3.12/pkg/pkg.h".to_string()
            )
        );
        assert_eq!(
            linked("pkg-1.0.data/data/share/pkg/x.txt"),
            (
                "share/pkg/x.txt".to_string(),
                "../../../share/pkg/x.txt".to_string()
            )
        );
        assert_eq!(
            schemes.place("pkg-1.0.data/scripts/tool").unwrap(),
            Placement::Script(PathBuf::from("bin/tool"))
        );
        assert!(schemes.place("pkg-1.0.data/other/x").is_err());
        assert!(schemes.place("../escape.py").is_err());
        assert!(schemes.place("pkg-1.0.data/data/../../escape").is_err());
    }

    #[test]
    fn headers_are_linked_under_include_site() {
        let fx = Fixture::new();
        let rows = [
            row("pkg-1.0.dist-info/METADATA"),
            row("pkg-1.0.data/headers/pkg.h"),
        ];
        let files = fx.plan(&from_index(), &rows);
        let header = find(&files, "include/site/python3.12/pkg/pkg.h");
        assert!(matches!(header.source, FileSource::Object(_)));
        assert!(
            record_lines(&files)
                .contains(&"../../../include/site/python3.12/pkg/pkg.h,sha256=c2hh,3".to_string())
        );
    }

    #[test]
    fn editable_project_gets_a_pth_and_only_its_metadata_and_scripts() {
        let fx = Fixture::new();
        let project = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(project.path().join("src/pkg")).unwrap();
        std::fs::write(project.path().join("src/pkg/__init__.py"), "").unwrap();
        let rows = [
            row("pkg-1.0.dist-info/METADATA"),
            row("pkg/__init__.py"),
            row("pkg-1.0.data/purelib/pkg/extra.py"),
            fx.stored("pkg-1.0.data/scripts/tool", b"#!python\n"),
            row("pkg-1.0.data/data/share/pkg.txt"),
        ];
        let source = Source::Local {
            path: project.path().to_path_buf(),
            editable: true,
        };
        let files = fx.plan(&source, &rows);
        let mut planned = dests(&files);
        planned.sort();
        assert_eq!(
            planned,
            [
                "bin/tool".to_string(),
                format!("{SITE}/__editable__.pkg-1.0.pth"),
                format!("{SITE}/pkg-1.0.dist-info/INSTALLER"),
                format!("{SITE}/pkg-1.0.dist-info/METADATA"),
                format!("{SITE}/pkg-1.0.dist-info/RECORD"),
                format!("{SITE}/pkg-1.0.dist-info/REQUESTED"),
                format!("{SITE}/pkg-1.0.dist-info/direct_url.json"),
                "share/pkg.txt".to_string(),
            ]
        );
        let (pth, _) = content(find(&files, &format!("{SITE}/__editable__.pkg-1.0.pth")));
        assert_eq!(pth, format!("{}\n", project.path().join("src").display()));
        let (direct_url, _) = content(find(
            &files,
            &format!("{SITE}/pkg-1.0.dist-info/direct_url.json"),
        ));
        assert_eq!(
            direct_url,
            format!(
                r#"{{"dir_info":{{"editable":true}},"url":"file://{}"}}"#,
                project.path().display()
            )
        );
    }

    #[test]
    fn local_project_says_where_it_came_from() {
        let fx = Fixture::new();
        let rows = [row("pkg-1.0.dist-info/METADATA"), row("pkg/__init__.py")];
        let source = Source::Local {
            path: PathBuf::from("/src/my project/ü"),
            editable: false,
        };
        let files = fx.plan(&source, &rows);
        let (direct_url, _) = content(find(
            &files,
            &format!("{SITE}/pkg-1.0.dist-info/direct_url.json"),
        ));
        assert_eq!(
            direct_url,
            r#"{"dir_info":{},"url":"file:///src/my%20project/%C3%BC"}"#
        );
        // Not editable: the modules are installed.
        find(&files, &format!("{SITE}/pkg/__init__.py"));
        // A wheel from an index has no direct_url.json.
        let files = fx.plan(&from_index(), &rows);
        assert!(!dests(&files).iter().any(|d| d.ends_with("direct_url.json")));
    }

    #[test]
    fn record_lists_every_planned_file() {
        let fx = Fixture::new();
        let rows = [
            row("pkg-1.0.dist-info/METADATA"),
            fx.stored(
                "pkg-1.0.dist-info/entry_points.txt",
                b"[console_scripts]\npkg-cli = pkg.cli:main\n",
            ),
            row("pkg/__init__.py"),
            row("pkg-1.0.data/data/share/x.txt"),
            fx.stored("pkg-1.0.data/scripts/tool", b"#!/bin/sh\n"),
            // A wheel's own installer files are replaced by the installer's.
            row("pkg-1.0.dist-info/RECORD"),
            row("pkg-1.0.dist-info/INSTALLER"),
        ];
        let files = fx.plan(&from_index(), &rows);
        let mut listed: Vec<String> = record_lines(&files)
            .iter()
            .map(|line| line.split(',').next().unwrap().to_string())
            .map(|path| Path::new(SITE).join(path).display().to_string())
            .collect();
        listed.sort();
        let mut planned: Vec<String> = files
            .iter()
            .map(|f| {
                if f.dest.starts_with(SITE) {
                    f.dest.display().to_string()
                } else {
                    format!("{SITE}/../../../{}", f.dest.display())
                }
            })
            .collect();
        planned.sort();
        assert_eq!(listed, planned);
        let (installer, _) = content(find(&files, &format!("{SITE}/pkg-1.0.dist-info/INSTALLER")));
        assert_eq!(installer, "tstore\n");
        let (launcher, mode) = content(find(&files, "bin/pkg-cli"));
        assert!(launcher.starts_with("#!/venv/bin/python\n"));
        assert!(launcher.contains("from pkg.cli import main"));
        assert_eq!(mode, 0o755);
        assert!(record_lines(&files).ends_with(&["pkg-1.0.dist-info/RECORD,,".to_string()]));
    }

    #[test]
    fn requested_marker_only_for_requested_distributions() {
        let mut fx = Fixture::new();
        let rows = [row("pkg-1.0.dist-info/METADATA")];
        let requested = format!("{SITE}/pkg-1.0.dist-info/REQUESTED");
        assert!(dests(&fx.plan(&from_index(), &rows)).contains(&requested));
        fx.requested.clear();
        assert!(!dests(&fx.plan(&from_index(), &rows)).contains(&requested));
    }

    #[test]
    fn bytecode_is_linked_beside_importable_sources() {
        let fx = Fixture::new();
        let pyc = ObjectKey::parse(&format!("{:064x}", 7)).unwrap();
        let with_pyc = |path: &str| FileRow {
            bytecode: Bytecode::Object(pyc),
            ..row(path)
        };
        let rows = [
            row("pkg-1.0.dist-info/METADATA"),
            with_pyc("pkg/mod.py"),
            with_pyc("pkg-1.0.data/data/share/tool.py"),
        ];
        let files = fx.plan(&from_index(), &rows);
        let planned = dests(&files);
        assert!(planned.contains(&format!("{SITE}/pkg/__pycache__/mod.cpython-312.pyc")));
        assert!(!planned.iter().any(|d| d.starts_with("share/__pycache__")));
    }

    #[test]
    fn of_two_copies_of_a_path_the_later_is_kept_and_a_difference_named() {
        let file = |dest: &str, dist: &str, bytes: &[u8]| PlannedFile {
            dest: PathBuf::from(dest),
            source: FileSource::Content(bytes.to_vec(), 0o644),
            dist: Arc::from(dist),
        };
        let files = vec![
            file("a", "one", b"1"),
            file("a", "two", b"2"),
            file("b", "one", b"same"),
            file("b", "two", b"same"),
            file("c", "two", b"3"),
        ];
        let (kept, warnings) = keep_one_file_per_path(files, |dist| format!("{dist}.whl"));
        let kept: Vec<(String, String)> = kept
            .iter()
            .map(|f| (f.dest.display().to_string(), f.dist.to_string()))
            .collect();
        assert_eq!(
            kept,
            [("a", "two"), ("b", "two"), ("c", "two")].map(|(d, n)| (d.to_string(), n.to_string()))
        );
        assert_eq!(
            warnings,
            [
                "one and two both ship a with different content (one.whl and two.whl); two's copy is used"
            ]
        );
    }
}

//! The index's witnesses: small JSON files beside the SQLite index from
//! which a lost or damaged index is rebuilt (`tstore verify --repair`).
//!
//! ```text
//! v1/records/
//!   dists/<wheel sha256>.json         a distribution and every file of it
//!   generations/<venv key>-<N>.json   a kept generation: tier, venv, plan, lock, distributions
//!   adopted/<path key>.json           an adopted venv and the objects it links to
//! ```
//!
//! Objects need no record: their names are their hashes. Bytecode needs
//! none either: a generation's manifest names each pyc beside its source.
//!
//! Records stay a subset of the index: one is written after the index row it
//! describes commits, and removed before that row is deleted. A crash can
//! leave a row without its record (written at the next open), never a record
//! the index lacks, so a record the index does not know means the index lost
//! data: the cheap check every command makes before it trusts the index.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::store::LinkMethod;

/// A distribution's record, without its files (as an export or a remote
/// carries it, too).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DistDetails {
    pub name: String,
    pub version: String,
    pub filename: String,
    pub sha256: String,
    pub size: u64,
    pub tags: String,
    pub url: Option<String>,
    /// For a wheel tstore built: the sdist's sha256 or the local project key.
    pub built_from: Option<String>,
}

/// One kept generation of a tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationRow {
    pub venv: String,
    pub number: i64,
    pub path: String,
    pub plan: String,
    pub lock: String,
    #[serde(with = "link_method_text")]
    pub link_method: LinkMethod,
    pub created_at: i64,
}

/// The link method named by the word it displays as (how the index and
/// records store it).
pub fn link_method_from_text(text: &str) -> Option<LinkMethod> {
    [LinkMethod::Reflink, LinkMethod::Hardlink, LinkMethod::Copy]
        .into_iter()
        .find(|method| method.to_string() == text)
}

/// Link methods as their word in records.
mod link_method_text {
    use crate::store::LinkMethod;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(method: &LinkMethod, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(method)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LinkMethod, D::Error> {
        let text = String::deserialize(d)?;
        super::link_method_from_text(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown link method `{text}`")))
    }
}

/// A distribution as recorded (and as it travels in archives and remotes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributionEntry {
    #[serde(flatten)]
    pub details: DistDetails,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    /// Object key; `None` for an empty file.
    pub object: Option<String>,
    pub mode: u32,
    pub size: u64,
    pub sha256: String,
}

/// A kept generation, with its distributions named by wheel sha256 (ids are
/// the index's own and do not survive a rebuild).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationRecord {
    pub name: String,
    pub config: String,
    #[serde(flatten)]
    pub generation: GenerationRow,
    pub distributions: Vec<String>,
}

/// An adopted venv and every object it links to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdoptedRecord {
    pub path: String,
    pub adopted_at: i64,
    pub objects: Vec<(String, u64)>,
}

/// The `records/` directory of a store.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

const KINDS: [&str; 3] = ["dists", "generations", "adopted"];

impl Records {
    pub fn at(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the store has records at all (stores made before them have not).
    pub fn exist(&self) -> bool {
        self.dir.join(KINDS[0]).is_dir()
    }

    pub fn create_dirs(dir: &Path) -> std::io::Result<()> {
        for kind in KINDS {
            crate::fsinfo::create_dir_all_with_mode(&dir.join(kind), crate::fsinfo::DIR_MODE)?;
        }
        Ok(())
    }

    fn dist_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("dists").join(format!("{sha256}.json"))
    }

    fn generation_path(&self, venv: &str, number: i64) -> PathBuf {
        self.dir
            .join("generations")
            .join(format!("{}-{number}.json", path_key(venv)))
    }

    fn adopted_path(&self, path: &str) -> PathBuf {
        self.dir
            .join("adopted")
            .join(format!("{}.json", path_key(path)))
    }

    pub fn write_distribution(&self, entry: &DistributionEntry) -> anyhow::Result<()> {
        write_atomic(&self.dist_path(&entry.details.sha256), entry)
    }

    pub fn remove_distribution(&self, sha256: &str) -> anyhow::Result<()> {
        remove_if_present(&self.dist_path(sha256))
    }

    pub fn write_generation(&self, record: &GenerationRecord) -> anyhow::Result<()> {
        let generation = &record.generation;
        write_atomic(
            &self.generation_path(&generation.venv, generation.number),
            record,
        )
    }

    pub fn remove_generation(&self, venv: &str, number: i64) -> anyhow::Result<()> {
        remove_if_present(&self.generation_path(venv, number))
    }

    /// Removes the records of every generation of the tier at `venv`.
    pub fn remove_generations_of(&self, venv: &str) -> anyhow::Result<()> {
        let prefix = format!("{}-", path_key(venv));
        for name in self.names("generations")? {
            if name.starts_with(&prefix) {
                remove_if_present(&self.dir.join("generations").join(name))?;
            }
        }
        Ok(())
    }

    pub fn write_adopted(&self, record: &AdoptedRecord) -> anyhow::Result<()> {
        write_atomic(&self.adopted_path(&record.path), record)
    }

    pub fn remove_adopted(&self, path: &str) -> anyhow::Result<()> {
        remove_if_present(&self.adopted_path(path))
    }

    /// Wheel sha256s that have a distribution record.
    pub fn distribution_keys(&self) -> anyhow::Result<HashSet<String>> {
        Ok(self.json_stems("dists")?.collect())
    }

    /// `<venv key>-<N>` of every generation record.
    pub fn generation_keys(&self) -> anyhow::Result<HashSet<String>> {
        Ok(self.json_stems("generations")?.collect())
    }

    /// `<path key>` of every adopted-venv record.
    pub fn adopted_keys(&self) -> anyhow::Result<HashSet<String>> {
        Ok(self.json_stems("adopted")?.collect())
    }

    pub fn read_distributions(&self) -> anyhow::Result<Vec<Readable<DistributionEntry>>> {
        self.read_all("dists")
    }

    pub fn read_generations(&self) -> anyhow::Result<Vec<Readable<GenerationRecord>>> {
        self.read_all("generations")
    }

    pub fn read_adopted(&self) -> anyhow::Result<Vec<Readable<AdoptedRecord>>> {
        self.read_all("adopted")
    }

    fn read_all<T: for<'de> Deserialize<'de>>(
        &self,
        kind: &str,
    ) -> anyhow::Result<Vec<Readable<T>>> {
        let mut out = Vec::new();
        for name in self.names(kind)? {
            if !name.ends_with(".json") {
                continue;
            }
            let path = self.dir.join(kind).join(&name);
            let parsed = fs_err::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| Ok(serde_json::from_slice(&bytes)?));
            out.push(match parsed {
                Ok(value) => Readable::Ok(value),
                Err(err) => Readable::Damaged(path, format!("{err:#}")),
            });
        }
        Ok(out)
    }

    fn json_stems(&self, kind: &str) -> anyhow::Result<impl Iterator<Item = String>> {
        Ok(self
            .names(kind)?
            .into_iter()
            .filter_map(|n| n.strip_suffix(".json").map(str::to_owned)))
    }

    fn names(&self, kind: &str) -> anyhow::Result<Vec<String>> {
        let dir = self.dir.join(kind);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", dir.display())),
        };
        Ok(entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect())
    }
}

/// A record file, or why it could not be read.
pub enum Readable<T> {
    Ok(T),
    Damaged(PathBuf, String),
}

/// The name a venv or adopted path's records go under.
pub fn path_key(path: &str) -> String {
    blake3::hash(path.as_bytes()).to_hex()[..16].to_string()
}

/// The record key of generation `number` of the tier at `venv`.
pub fn generation_key(venv: &str, number: i64) -> String {
    format!("{}-{number}", path_key(venv))
}

fn write_atomic(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let dir = path.parent().expect("record paths have a parent");
    let mut temp = tempfile::NamedTempFile::with_prefix_in(".record-", dir)
        .with_context(|| format!("cannot write a record in {}", dir.display()))?;
    serde_json::to_writer(std::io::BufWriter::new(temp.as_file_mut()), value)?;
    temp.as_file_mut().flush()?;
    temp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generations_link_method_is_written_as_its_word() {
        let row = GenerationRow {
            venv: "/v/t".into(),
            number: 1,
            path: "/v/.tstore-generations/t/1".into(),
            plan: "p".into(),
            lock: "/s/l.toml".into(),
            link_method: LinkMethod::Reflink,
            created_at: 5,
        };
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(json["link_method"], "reflink");
        let back: GenerationRow = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, row);

        let mut unknown = json;
        unknown["link_method"] = "teleport".into();
        let err = serde_json::from_value::<GenerationRow>(unknown).unwrap_err();
        assert!(
            err.to_string().contains("unknown link method `teleport`"),
            "{err}"
        );
    }
}

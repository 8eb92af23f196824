//! Moving store content between stores: an export archive (`archive`) or a
//! remote store (`remote`).
//!
//! What travels is what a set of tiers needs: their distributions' records
//! ([`DistributionEntry`]), the objects those name, and the bytecode the
//! store compiled for their sources. On arrival an object counts only once
//! its content hashed to its key ([`receive_object`]), and records are added
//! only when every object they name is in the store ([`record`]).

pub mod archive;
pub mod pack;
pub mod remote;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::dist::{Selected, Source};
use crate::store::stage::Stage;
use crate::store::{ObjectKey, Store};

pub use crate::store::records::{DistributionEntry, FileEntry};

/// A source's bytecode for one interpreter tag (`pyc: None`: does not compile).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BytecodeEntry {
    pub source: String,
    pub tag: String,
    pub pyc: Option<String>,
}

/// What a set of tiers needs from a store.
#[derive(Debug, Default)]
pub struct Needed {
    /// Sorted by sha256.
    pub distributions: Vec<DistributionEntry>,
    /// Sorted.
    pub bytecode: Vec<BytecodeEntry>,
    /// Every object named above, with its size.
    pub objects: BTreeMap<String, u64>,
}

impl Needed {
    pub fn bytes(&self) -> u64 {
        self.objects.values().sum()
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "{what} does not match its key {key}: {problem}. It was refused and nothing was recorded for it"
)]
pub struct ObjectMismatch {
    pub what: String,
    pub key: String,
    pub problem: String,
}

/// The store's distribution for each selected package, or a message naming
/// what the store lacks.
pub fn stored_distribution(store: &Store, item: &Selected) -> anyhow::Result<Option<i64>> {
    let found = match &item.source {
        Source::Wheel(w) => store.db.distribution_by_sha256(&w.sha256)?,
        Source::Sdist(s) => store.db.sdist_build(&s.sha256)?,
        Source::Local { path, editable } => store
            .db
            .sdist_build(&crate::fetch::local_build_key(path, *editable)?)?,
    };
    Ok(found.map(|d| d.id))
}

/// Collects the records, bytecode and objects of distributions `ids`.
pub fn needed(store: &Store, ids: &[i64]) -> anyhow::Result<Needed> {
    let mut out = Needed::default();
    let mut distributions = BTreeMap::new();
    let mut sources = Vec::new();
    for &id in ids {
        let entry = store.db.distribution_entry(id)?;
        for file in &entry.files {
            if let Some(key) = &file.object {
                out.objects.insert(key.clone(), file.size);
                if file.path.ends_with(".py") {
                    sources.push(key.clone());
                }
            }
        }
        distributions.insert(entry.details.sha256.clone(), entry);
    }
    sources.sort();
    sources.dedup();
    sources.push(crate::store::db::EMPTY_SOURCE.to_string());
    for crate::store::db::BytecodeRow { source, tag, pyc } in store.db.bytecode_of(&sources)? {
        if let Some((key, size)) = &pyc {
            out.objects.insert(key.to_string(), *size);
        }
        out.bytecode.push(BytecodeEntry {
            source,
            tag,
            pyc: pyc.map(|(k, _)| k.to_string()),
        });
    }
    out.bytecode.sort();
    out.distributions = distributions.into_values().collect();
    Ok(out)
}

/// Parses an object key from an archive or a remote, refusing anything that
/// is not one (it becomes a file name in the store).
pub fn parse_key(text: &str) -> anyhow::Result<ObjectKey> {
    let key = ObjectKey::parse(text)
        .with_context(|| format!("`{text}` is not an object key (blake3 hex, optional -x)"))?;
    if key.to_string() != text {
        bail!("`{text}` is not an object key in canonical form");
    }
    Ok(key)
}

/// An object arriving from elsewhere: written to the store's tmp (or
/// straight into a [`Stage`]) while it is hashed, published only if its
/// size and blake3 match its key; removed otherwise.
pub struct Incoming {
    temp: std::path::PathBuf,
    /// `temp` is the object's place in a stage.
    staged: bool,
    file: Option<fs_err::File>,
    hasher: blake3::Hasher,
    size: u64,
    key: ObjectKey,
    expected_size: u64,
    what: String,
}

impl Incoming {
    /// `None` when the store already has the object.
    pub fn start(
        store: &Store,
        key: &str,
        expected_size: u64,
        what: &str,
    ) -> anyhow::Result<Option<Self>> {
        Self::start_in(store, None, key, expected_size, what)
    }

    /// As [`Incoming::start`], writing the object in place in `stage` when
    /// the stage holds its shard (the store had none of that shard when the
    /// stage began, so there is nothing to look up).
    pub fn start_in(
        store: &Store,
        stage: Option<&Stage>,
        key: &str,
        expected_size: u64,
        what: &str,
    ) -> anyhow::Result<Option<Self>> {
        let parsed = parse_key(key)?;
        let stage = stage.filter(|stage| stage.holds(&parsed));
        if let Some(stage) = stage
            && let Some(file) = stage.create(&parsed)?
        {
            let temp = stage.object_path(&parsed);
            return Ok(Some(Self::new(
                fs_err::File::from_parts(file, &temp),
                temp,
                true,
                parsed,
                expected_size,
                what,
            )));
        }
        // Staged already by another writer of this run, which may yet
        // refuse it: this copy is checked on its own and staged at publish.
        if stage.is_none() && store.object_path(&parsed).exists() {
            return Ok(None);
        }
        let temp = store.temp_path("receive");
        let file = fs_err::File::create(&temp)?;
        Ok(Some(Self::new(
            file,
            temp,
            false,
            parsed,
            expected_size,
            what,
        )))
    }

    fn new(
        file: fs_err::File,
        temp: std::path::PathBuf,
        staged: bool,
        key: ObjectKey,
        expected_size: u64,
        what: &str,
    ) -> Self {
        Self {
            temp,
            staged,
            file: Some(file),
            hasher: blake3::Hasher::new(),
            size: 0,
            key,
            expected_size,
            what: what.to_string(),
        }
    }

    pub fn write(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        self.size += chunk.len() as u64;
        if self.size > self.expected_size {
            return Err(self
                .mismatch("more bytes arrived than its size".into())
                .into());
        }
        self.hasher.update(chunk);
        self.file
            .as_mut()
            .expect("written before finish")
            .write_all(chunk)?;
        Ok(())
    }

    fn mismatch(&self, problem: String) -> ObjectMismatch {
        ObjectMismatch {
            what: self.what.clone(),
            key: self.key.to_string(),
            problem,
        }
    }

    /// Checks size and content, then publishes the object (into `stage`
    /// when that holds its shard).
    pub fn finish(self, store: &Store, stage: Option<&Stage>) -> anyhow::Result<()> {
        self.verify()?.publish_to(store, stage).map(|_| ())
    }

    /// Checks size and content; the object is published later, by
    /// [`Verified::publish`], or dropped with the [`Verified`].
    pub fn verify(mut self) -> anyhow::Result<Verified> {
        if self.size != self.expected_size {
            return Err(self
                .mismatch(format!(
                    "{} bytes arrived, {} were expected (truncated?)",
                    self.size, self.expected_size
                ))
                .into());
        }
        if *self.hasher.finalize().as_bytes() != self.key.hash {
            return Err(self
                .mismatch("its content hashes to something else".into())
                .into());
        }
        drop(self.file.take());
        Ok(Verified {
            temp: std::mem::take(&mut self.temp),
            staged: self.staged,
            key: self.key,
        })
    }
}

/// An object whose bytes matched its key, still in the store's tmp.
pub struct Verified {
    temp: std::path::PathBuf,
    staged: bool,
    key: ObjectKey,
}

impl Verified {
    /// Moves the object into the store. Not synced, as no object is (see
    /// ARCHITECTURE.md, "Crash safety"): a kill leaves it whole, a power
    /// loss may not, which `tstore verify` finds.
    pub fn publish(self, store: &Store) -> anyhow::Result<()> {
        self.publish_to(store, None).map(|_| ())
    }

    /// Moves the object into the store, or into `stage` when that holds
    /// its shard ([`Stage::publish`] moves it on); an object already in
    /// its place in the stage stays there. Returns whether this copy is the
    /// one kept: a second copy of an object another pack of the same pull
    /// staged first is dropped, and not counted as new.
    pub fn publish_to(mut self, store: &Store, stage: Option<&Stage>) -> anyhow::Result<bool> {
        let kept = match stage.filter(|stage| stage.holds(&self.key)) {
            _ if self.staged => true,
            Some(stage) => stage.adopt(&self.temp, &self.key)?,
            None => {
                crate::store::ingest::publish_object(store, &self.temp, &self.key)?;
                true
            }
        };
        self.temp = std::path::PathBuf::new();
        Ok(kept)
    }
}

impl Drop for Verified {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // A verified object's file moved on; anything left is refused.
        if !self.temp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Stores `bytes` as object `key` if the store lacks it, after checking
/// size and blake3. Returns whether the object was new.
pub fn receive_bytes(
    store: &Store,
    stage: Option<&Stage>,
    key: &str,
    bytes: &[u8],
    what: &str,
) -> anyhow::Result<bool> {
    let Some(mut incoming) = Incoming::start_in(store, stage, key, bytes.len() as u64, what)?
    else {
        return Ok(false);
    };
    incoming.write(bytes)?;
    incoming.finish(store, stage)?;
    Ok(true)
}

/// Streams `reader` into the store as object `key` if the store lacks it,
/// checking size and blake3 first. Returns whether the object was new.
pub fn receive_object(
    store: &Store,
    stage: Option<&Stage>,
    key: &str,
    expected_size: u64,
    mut reader: impl Read,
    what: &str,
) -> anyhow::Result<bool> {
    let Some(mut incoming) = Incoming::start_in(store, stage, key, expected_size, what)? else {
        std::io::copy(&mut reader, &mut std::io::sink())?;
        return Ok(false);
    };
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        incoming.write(&buf[..n])?;
    }
    incoming.finish(store, stage)?;
    Ok(true)
}

/// Records distributions and bytecode whose objects are all in the store,
/// or none of the distributions if an object is missing. Returns how many
/// distributions were new.
///
/// `arrived` (key → size) holds objects this transfer put in the store or
/// found there, each checked against its key; they are not looked for
/// again. The caller holds the store shared, so nothing removes them.
pub fn record<K: std::borrow::Borrow<str> + std::hash::Hash + Eq>(
    store: &Store,
    distributions: &[DistributionEntry],
    bytecode: &[BytecodeEntry],
    arrived: &HashMap<K, u64>,
) -> anyhow::Result<usize> {
    let present = |key: &str| -> anyhow::Result<bool> {
        Ok(arrived.contains_key(key) || store.object_path(&parse_key(key)?).is_file())
    };
    let mut new = 0;
    let mut to_insert = Vec::new();
    for dist in distributions {
        for file in &dist.files {
            if let Some(key) = &file.object
                && !present(key)?
            {
                bail!(
                    "{} {}: object {key} of {} is missing, so the distribution was not recorded",
                    dist.details.name,
                    dist.details.version,
                    file.path
                );
            }
            crate::store::wheel::safe_relative_path(&file.path).map_err(|e| {
                anyhow::anyhow!(
                    "{} {}: path `{}` {e}",
                    dist.details.name,
                    dist.details.version,
                    file.path
                )
            })?;
        }
        let known = store
            .db
            .distribution_by_sha256(&dist.details.sha256)?
            .is_some();
        if !known {
            new += 1;
            to_insert.push(dist);
        } else if let Some(from) = &dist.details.built_from
            && store.db.sdist_build(from)?.is_none()
        {
            // Known wheel, unknown build key: add the mapping.
            to_insert.push(dist);
        }
    }
    store.db.insert_entries(&to_insert)?;
    let mut by_tag: BTreeMap<&str, Vec<(String, crate::store::db::Pyc)>> = BTreeMap::new();
    for entry in bytecode {
        let pyc = match &entry.pyc {
            Some(key) => {
                let parsed = parse_key(key)?;
                let size = match arrived.get(key.as_str()) {
                    Some(size) => *size,
                    None => match fs_err::metadata(store.object_path(&parsed)) {
                        Ok(meta) => meta.len(),
                        Err(_) => continue,
                    },
                };
                Some((parsed, size))
            }
            None => None,
        };
        by_tag
            .entry(&entry.tag)
            .or_default()
            .push((entry.source.clone(), pyc));
    }
    for (tag, mut entries) in by_tag {
        // In key order, the index's pages fill one after another.
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        store.db.record_bytecode(tag, &entries)?;
    }
    Ok(new)
}

/// The lock files of tiers, by name, for an archive or a remote.
pub fn read_locks(locks: &[(String, std::path::PathBuf)]) -> anyhow::Result<Vec<(String, String)>> {
    locks
        .iter()
        .map(|(tier, path)| {
            Ok((
                tier.clone(),
                fs_err::read_to_string(path).with_context(|| {
                    format!("tier `{tier}` has no lock: run `tstore lock {tier}`")
                })?,
            ))
        })
        .collect()
}

/// Writes `text` to `path` unless it holds exactly that; returns whether it
/// was written. A different existing file is kept (the caller says so).
pub fn write_lock_if_absent(path: &Path, text: &str) -> anyhow::Result<LockOutcome> {
    match fs_err::read_to_string(path) {
        Ok(existing) if existing == text => Ok(LockOutcome::Same),
        Ok(_) => Ok(LockOutcome::KeptDifferent),
        Err(_) => {
            if let Some(dir) = path.parent() {
                fs_err::create_dir_all(dir)?;
            }
            let temp = path.with_extension(format!("toml.tmp-{}", std::process::id()));
            fs_err::write(&temp, text)?;
            fs_err::rename(&temp, path)?;
            Ok(LockOutcome::Written)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockOutcome {
    Written,
    Same,
    KeptDifferent,
}

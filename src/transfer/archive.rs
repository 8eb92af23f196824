//! `tstore export` / `tstore import`: one tar + zstd file holding exactly
//! what some tiers need.
//!
//! Layout, in this order (so import can check everything against the
//! manifest while streaming):
//!
//! ```text
//! manifest.json               format, tiers (+ lock sha256), distributions
//!                             with their files, bytecode, objects (key, size)
//! locks/pylock.<tier>.toml    the tiers' locks
//! objects/<key>               every object, sorted by key; the key is the
//!                             content's blake3 (the checksum import checks)
//! ```
//!
//! The output is deterministic: entries sorted, JSON from sorted records,
//! tar headers with mtime 0, uid/gid 0 and fixed modes, zstd at a fixed
//! level on one thread. The same tiers and store give the same bytes.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::{BytecodeEntry, DistributionEntry, Needed};
use crate::progress::Progress;
use crate::store::Store;
use crate::store::stage::Stage;

const FORMAT: &str = "tstore-export-1";
pub(super) const ZSTD_LEVEL: i32 = 3;

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    tiers: Vec<TierEntry>,
    distributions: Vec<DistributionEntry>,
    bytecode: Vec<BytecodeEntry>,
    objects: Vec<ObjectEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TierEntry {
    name: String,
    lock_sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ObjectEntry {
    key: String,
    size: u64,
}

/// What an export wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportReport {
    pub tiers: usize,
    pub distributions: usize,
    pub objects: usize,
    /// Total size of the objects.
    pub object_bytes: u64,
    /// Size of the archive.
    pub archive_bytes: u64,
}

/// Writes the archive of `locks` (tier name, lock text) and `needed` to
/// `out`, through a temp file renamed into place.
pub fn export(
    store: &Store,
    locks: &[(String, String)],
    needed: &Needed,
    out: &Path,
    progress: &dyn Progress,
) -> anyhow::Result<ExportReport> {
    let mut locks = locks.to_vec();
    locks.sort();
    let manifest = manifest_of(&locks, needed);
    if let Some(dir) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs_err::create_dir_all(dir)?;
    }
    let temp = out.with_file_name(format!(
        ".{}.tmp-{}",
        out.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let contents = Contents {
        store,
        manifest: &manifest,
        locks: &locks,
        bytes: needed.bytes(),
    };
    if let Err(err) = write_archive(&temp, &contents, progress) {
        let _ = std::fs::remove_file(&temp);
        return Err(err);
    }
    fs_err::rename(&temp, out)?;
    Ok(ExportReport {
        tiers: locks.len(),
        distributions: manifest.distributions.len(),
        objects: manifest.objects.len(),
        object_bytes: needed.bytes(),
        archive_bytes: fs_err::metadata(out)?.len(),
    })
}

/// The manifest of an archive holding `locks` (sorted) and `needed`.
fn manifest_of(locks: &[(String, String)], needed: &Needed) -> Manifest {
    Manifest {
        format: FORMAT.to_string(),
        tiers: locks
            .iter()
            .map(|(name, text)| TierEntry {
                name: name.clone(),
                lock_sha256: hex::encode(sha2::Sha256::digest(text.as_bytes())),
            })
            .collect(),
        distributions: needed.distributions.clone(),
        bytecode: needed.bytecode.clone(),
        objects: needed
            .objects
            .iter()
            .map(|(key, size)| ObjectEntry {
                key: key.clone(),
                size: *size,
            })
            .collect(),
    }
}

/// What goes into an archive.
struct Contents<'a> {
    store: &'a Store,
    manifest: &'a Manifest,
    locks: &'a [(String, String)],
    /// Total size of the objects, for the progress bar.
    bytes: u64,
}

/// Writes the manifest, the locks and the objects, in that order, to
/// `path` and syncs it.
fn write_archive(
    path: &Path,
    contents: &Contents<'_>,
    progress: &dyn Progress,
) -> anyhow::Result<()> {
    let file = fs_err::File::create(path)?;
    let encoder = zstd::Encoder::new(std::io::BufWriter::new(file), ZSTD_LEVEL)?;
    let mut tar = tar::Builder::new(encoder);
    let manifest_bytes = serde_json::to_vec_pretty(contents.manifest)?;
    append_entry(
        &mut tar,
        "manifest.json",
        manifest_bytes.len() as u64,
        &mut manifest_bytes.as_slice(),
    )?;
    for (name, text) in contents.locks {
        append_entry(
            &mut tar,
            &format!("locks/pylock.{name}.toml"),
            text.len() as u64,
            &mut text.as_bytes(),
        )?;
    }
    let objects = &contents.manifest.objects;
    progress.start("exporting", objects.len() as u64, contents.bytes);
    for object in objects {
        let key = super::parse_key(&object.key)?;
        let mut file = fs_err::File::open(contents.store.object_path(&key)).with_context(|| {
            format!("the store lacks object {}: run `tstore verify`", object.key)
        })?;
        append_entry(
            &mut tar,
            &format!("objects/{}", object.key),
            object.size,
            &mut ProgressReader {
                inner: &mut file,
                progress,
            },
        )?;
        progress.item_done("");
    }
    progress.finish();
    let encoder = tar.into_inner()?;
    let mut writer = encoder.finish()?;
    std::io::Write::flush(&mut writer)?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(())
}

/// One regular file in the archive, with the same owner, mode and time
/// whatever the machine, so the same contents give the same bytes.
pub(super) fn append_entry(
    tar: &mut tar::Builder<impl std::io::Write>,
    name: &str,
    size: u64,
    data: &mut dyn Read,
) -> anyhow::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, data)
        .with_context(|| format!("cannot write {name} into the archive"))
}

/// What an import added.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    /// Tier name and lock text, for the caller to place.
    #[serde(skip)]
    pub locks: Vec<(String, String)>,
    pub tiers: Vec<String>,
    pub objects_new: usize,
    pub objects_present: usize,
    pub bytes_new: u64,
    pub distributions_new: usize,
    pub distributions: usize,
}

/// Adds an archive to the store: each object is checked against its key
/// (blake3) and size before it is stored; records are added only once all
/// the objects they name are in the store. Importing twice adds nothing.
///
/// Objects of shards the store has none of yet are written in place in a
/// [`Stage`] and published a shard at a time (an empty store: 256 renames).
///
/// A file that is not zstd is refused as not an export; one that is, but
/// whose stream breaks off or does not decode, is reported as truncated or
/// damaged whichever step noticed it.
pub fn import(store: &Store, path: &Path, progress: &dyn Progress) -> anyhow::Result<ImportReport> {
    let mut file = fs_err::File::open(path)?;
    let mut magic = [0u8; 4];
    let starts_as_zstd = file.read_exact(&mut magic).is_ok() && magic == ZSTD_MAGIC;
    if !starts_as_zstd {
        bail!("{} is not a tstore export (not zstd)", path.display());
    }
    std::io::Seek::rewind(&mut file)?;
    let decoder = zstd::Decoder::new(file)
        .with_context(|| format!("{} is not a tstore export (zstd)", path.display()))?;
    let broken = std::rc::Rc::new(std::cell::RefCell::new(None));
    let stream = Decompressed {
        inner: decoder,
        broken: broken.clone(),
    };
    let imported = import_stream(store, path, stream, progress);
    match (imported, broken.take()) {
        (Err(_), Some(cause)) => bail!(
            "{} is truncated or damaged ({cause}): objects that arrived intact were kept, \
             nothing was recorded; copy the file again or export it again",
            path.display()
        ),
        (imported, _) => imported,
    }
}

/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The decompressed archive, remembering the first decompression error so
/// that the error reported is about the file, not the entry being read.
struct Decompressed<R> {
    inner: R,
    broken: std::rc::Rc<std::cell::RefCell<Option<String>>>,
}

impl<R: Read> Read for Decompressed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|err| {
            self.broken
                .borrow_mut()
                .get_or_insert_with(|| err.to_string());
        })
    }
}

fn import_stream(
    store: &Store,
    path: &Path,
    stream: impl Read,
    progress: &dyn Progress,
) -> anyhow::Result<ImportReport> {
    let mut tar = tar::Archive::new(stream);
    let mut entries = tar
        .entries()
        .with_context(|| format!("{} is not a tstore export (tar)", path.display()))?;
    let manifest = read_manifest(&mut entries, path)?;
    let mut report = ImportReport {
        tiers: manifest.tiers.iter().map(|t| t.name.clone()).collect(),
        distributions: manifest.distributions.len(),
        ..ImportReport::default()
    };
    let stage = Stage::begin(store)?;
    let sizes = manifest
        .objects
        .iter()
        .map(|o| (o.key.as_str(), o.size))
        .collect();
    let reception = Reception::new(store, &stage, path, &manifest, &sizes, progress);
    let mut seen = HashSet::new();
    let read = reception.receive(entries, &mut report.locks, &mut seen);
    let outcomes = reception.outcomes.into_inner().unwrap();
    // Every staged object matched its key, so they count even when the
    // archive turns out damaged further on.
    stage.publish()?;
    for outcome in outcomes {
        let (size, new) = outcome?;
        if new {
            report.objects_new += 1;
            report.bytes_new += size;
        } else {
            report.objects_present += 1;
        }
    }
    read?;
    progress.finish();
    check_complete(path, &manifest, &seen, report.locks.len())?;
    // Every object of the manifest arrived and matched its key.
    report.distributions_new =
        super::record(store, &manifest.distributions, &manifest.bytecode, &sizes)?;
    Ok(report)
}

/// The archive's first entry, which must be a manifest in this format.
fn read_manifest<R: Read>(
    entries: &mut tar::Entries<'_, R>,
    path: &Path,
) -> anyhow::Result<Manifest> {
    let not_export = || format!("{} is not a tstore export", path.display());
    let mut first = entries
        .next()
        .with_context(not_export)?
        .with_context(not_export)?;
    if first.path()?.to_string_lossy() != "manifest.json" {
        bail!("{}: it does not start with manifest.json", not_export());
    }
    let mut text = String::new();
    first.read_to_string(&mut text)?;
    let manifest: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{}: manifest.json is damaged", path.display()))?;
    if manifest.format != FORMAT {
        bail!(
            "{}: format `{}` is not one this tstore reads ({FORMAT}); export it again with this version",
            path.display(),
            manifest.format
        );
    }
    Ok(manifest)
}

/// Every object and lock the manifest lists arrived (`seen`: object keys).
fn check_complete(
    path: &Path,
    manifest: &Manifest,
    seen: &HashSet<String>,
    locks: usize,
) -> anyhow::Result<()> {
    let missing = manifest
        .objects
        .iter()
        .filter(|o| !seen.contains(&o.key))
        .count();
    if missing > 0 {
        bail!(
            "{}: the archive ends before {missing} of its objects (truncated?); the objects that \
             arrived were kept, nothing was recorded. Export it again",
            path.display(),
        );
    }
    if locks != manifest.tiers.len() {
        bail!(
            "{}: some locks listed in the manifest are missing",
            path.display()
        );
    }
    Ok(())
}

/// Objects handed to the workers at once: key, size, bytes, and what to
/// call the entry in an error.
type Batch = Vec<(String, u64, Vec<u8>, String)>;

/// Objects this big stream through the reading thread instead of being
/// held in memory for a worker.
const STREAMED_OBJECT: u64 = 16 * 1024 * 1024;

/// Where the entries of one archive go while it is read. The tar stream is
/// read on one thread; objects are hashed and written by workers, so
/// decompression and writing overlap.
struct Reception<'a> {
    store: &'a Store,
    stage: &'a Stage,
    path: &'a Path,
    progress: &'a dyn Progress,
    /// Object key → size, from the manifest.
    sizes: &'a HashMap<&'a str, u64>,
    /// Lock entry name → its sha256, from the manifest.
    lock_hashes: HashMap<String, &'a str>,
    failed: AtomicBool,
    /// Per object: its size and whether it was new, or why it was refused.
    outcomes: Mutex<Vec<anyhow::Result<(u64, bool)>>>,
}

impl<'a> Reception<'a> {
    fn new(
        store: &'a Store,
        stage: &'a Stage,
        path: &'a Path,
        manifest: &'a Manifest,
        sizes: &'a HashMap<&'a str, u64>,
        progress: &'a dyn Progress,
    ) -> Self {
        Self {
            store,
            stage,
            path,
            progress,
            sizes,
            lock_hashes: manifest
                .tiers
                .iter()
                .map(|t| {
                    (
                        format!("locks/pylock.{}.toml", t.name),
                        t.lock_sha256.as_str(),
                    )
                })
                .collect(),
            failed: AtomicBool::new(false),
            outcomes: Mutex::new(Vec::new()),
        }
    }

    /// Reads the entries after the manifest: locks into `locks`, objects
    /// into the store (their keys into `seen`). Stops at the first refused
    /// object; its reason is among the outcomes.
    fn receive<R: Read>(
        &self,
        entries: tar::Entries<'_, R>,
        locks: &mut Vec<(String, String)>,
        seen: &mut HashSet<String>,
    ) -> anyhow::Result<()> {
        let total: u64 = self.sizes.values().sum();
        self.progress
            .start("importing", self.sizes.len() as u64, total);
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Batch>(16);
        let receiver = Mutex::new(receiver);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| self.store_batches(&receiver));
            }
            let mut batches = Batches {
                sender,
                batch: Vec::new(),
                bytes: 0,
            };
            for entry in entries {
                if self.failed.load(Ordering::Relaxed) {
                    break;
                }
                let entry =
                    entry.with_context(|| format!("{}: damaged archive", self.path.display()))?;
                self.receive_entry(entry, locks, seen, &mut batches)?;
            }
            batches.flush()
        })
    }

    /// One entry: a lock checked against its checksum, or an object.
    fn receive_entry<R: Read>(
        &self,
        mut entry: tar::Entry<'_, R>,
        locks: &mut Vec<(String, String)>,
        seen: &mut HashSet<String>,
        batches: &mut Batches,
    ) -> anyhow::Result<()> {
        let path = self.path.display();
        let name = entry.path()?.to_string_lossy().into_owned();
        if let Some(expected) = self.lock_hashes.get(&name) {
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            if hex::encode(sha2::Sha256::digest(text.as_bytes())) != *expected {
                bail!("{path}: {name} does not match its checksum");
            }
            let tier = name
                .trim_start_matches("locks/pylock.")
                .trim_end_matches(".toml")
                .to_string();
            locks.push((tier, text));
            return Ok(());
        }
        let Some(key) = name.strip_prefix("objects/") else {
            bail!("{path}: unexpected entry {name}");
        };
        let size = *self
            .sizes
            .get(key)
            .with_context(|| format!("{path}: {name} is not in its manifest"))?;
        seen.insert(key.to_string());
        let what = format!("{name} in {path}");
        if size > STREAMED_OBJECT {
            let reader = ProgressReader {
                inner: &mut entry,
                progress: self.progress,
            };
            let result =
                super::receive_object(self.store, Some(self.stage), key, size, reader, &what);
            self.record_outcome(result.map(|new| (size, new)));
            return Ok(());
        }
        // At most the size: a longer entry is refused by the hash.
        let mut bytes = Vec::with_capacity(size as usize);
        (&mut entry).take(size + 1).read_to_end(&mut bytes)?;
        batches.push((key.to_string(), size, bytes, what))
    }

    /// A worker: stores the objects of each batch until the reader is done.
    fn store_batches(&self, receiver: &Mutex<std::sync::mpsc::Receiver<Batch>>) {
        loop {
            let job = receiver.lock().unwrap().recv();
            let Ok(batch) = job else {
                break;
            };
            for (key, size, bytes, what) in batch {
                self.progress.bytes(size);
                let result = if bytes.len() as u64 == size {
                    super::receive_bytes(self.store, Some(self.stage), &key, &bytes, &what)
                } else {
                    // Let the size check word the refusal.
                    super::receive_object(
                        self.store,
                        Some(self.stage),
                        &key,
                        size,
                        bytes.as_slice(),
                        &what,
                    )
                };
                self.record_outcome(result.map(|new| (size, new)));
            }
        }
    }

    fn record_outcome(&self, result: anyhow::Result<(u64, bool)>) {
        if result.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        self.outcomes.lock().unwrap().push(result);
        self.progress.item_done("");
    }
}

/// Small objects gathered for the workers: one hand-over per object would
/// cost more than writing a small one.
struct Batches {
    sender: std::sync::mpsc::SyncSender<Batch>,
    batch: Batch,
    bytes: u64,
}

impl Batches {
    fn push(&mut self, object: (String, u64, Vec<u8>, String)) -> anyhow::Result<()> {
        self.bytes += object.1;
        self.batch.push(object);
        if self.batch.len() >= 64 || self.bytes >= 4 * 1024 * 1024 {
            self.bytes = 0;
            self.send()?;
        }
        Ok(())
    }

    /// Sends what is left; dropping `self` then tells the workers to stop.
    fn flush(mut self) -> anyhow::Result<()> {
        if !self.batch.is_empty() {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> anyhow::Result<()> {
        self.sender
            .send(std::mem::take(&mut self.batch))
            .map_err(|_| anyhow::anyhow!("the import workers stopped"))
    }
}

/// Reports bytes read to the progress bar.
struct ProgressReader<'a, R: Read> {
    inner: &'a mut R,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.bytes(n as u64);
        Ok(n)
    }
}

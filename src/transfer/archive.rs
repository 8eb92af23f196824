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

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::{BytecodeEntry, DistributionEntry, Needed};
use crate::progress::Progress;
use crate::store::Store;

const FORMAT: &str = "tstore-export-1";
const ZSTD_LEVEL: i32 = 3;

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
    let manifest = Manifest {
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
    };
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty());
    let temp = out.with_file_name(format!(
        ".{}.tmp-{}",
        out.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    if let Some(dir) = dir {
        fs_err::create_dir_all(dir)?;
    }
    let written = (|| -> anyhow::Result<()> {
        let file = fs_err::File::create(&temp)?;
        let encoder = zstd::Encoder::new(std::io::BufWriter::new(file), ZSTD_LEVEL)?;
        let mut tar = tar::Builder::new(encoder);
        let mut append = |name: &str, size: u64, data: &mut dyn Read| -> anyhow::Result<()> {
            let mut header = tar::Header::new_gnu();
            header.set_size(size);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, name, data)
                .with_context(|| format!("cannot write {name} into the archive"))
        };
        let manifest_bytes = serde_json::to_vec_pretty(&manifest)?;
        append(
            "manifest.json",
            manifest_bytes.len() as u64,
            &mut manifest_bytes.as_slice(),
        )?;
        for (name, text) in &locks {
            append(
                &format!("locks/pylock.{name}.toml"),
                text.len() as u64,
                &mut text.as_bytes(),
            )?;
        }
        progress.start("exporting", manifest.objects.len() as u64, needed.bytes());
        for object in &manifest.objects {
            let key = super::parse_key(&object.key)?;
            let mut file = fs_err::File::open(store.object_path(&key)).with_context(|| {
                format!("the store lacks object {}: run `tstore verify`", object.key)
            })?;
            append(
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
    })();
    if let Err(err) = written {
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
    drop(first);
    let manifest: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{}: manifest.json is damaged", path.display()))?;
    if manifest.format != FORMAT {
        bail!(
            "{}: format `{}` is not one this tstore reads ({FORMAT}); export it again with this version",
            path.display(),
            manifest.format
        );
    }
    let sizes: HashMap<&str, u64> = manifest
        .objects
        .iter()
        .map(|o| (o.key.as_str(), o.size))
        .collect();
    let lock_hashes: HashMap<String, &str> = manifest
        .tiers
        .iter()
        .map(|t| {
            (
                format!("locks/pylock.{}.toml", t.name),
                t.lock_sha256.as_str(),
            )
        })
        .collect();

    let mut report = ImportReport {
        tiers: manifest.tiers.iter().map(|t| t.name.clone()).collect(),
        distributions: manifest.distributions.len(),
        ..ImportReport::default()
    };
    let mut seen: HashSet<String> = HashSet::new();
    let total: u64 = sizes.values().sum();
    progress.start("importing", sizes.len() as u64, total);
    // The tar stream is read here; objects are hashed and written by
    // workers, so decompression and writing overlap. Big objects stream
    // through this thread instead of being held in memory.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
    let failed = std::sync::atomic::AtomicBool::new(false);
    let outcomes: std::sync::Mutex<Vec<anyhow::Result<(u64, bool)>>> = Default::default();
    // Objects go to the workers in batches: one hand-over per object would
    // cost more than writing a small one.
    type Batch = Vec<(String, u64, Vec<u8>, String)>;
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Batch>(16);
    let receiver = std::sync::Mutex::new(receiver);
    let record_outcome = |result: anyhow::Result<(u64, bool)>| {
        if result.is_err() {
            failed.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        outcomes.lock().unwrap().push(result);
        progress.item_done("");
    };
    let read = std::thread::scope(|scope| -> anyhow::Result<()> {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let job = receiver.lock().unwrap().recv();
                    let Ok(batch) = job else {
                        break;
                    };
                    for (key, size, bytes, what) in batch {
                        progress.bytes(size);
                        let result = if bytes.len() as u64 == size {
                            super::receive_bytes(store, &key, &bytes, &what)
                        } else {
                            // Let the size check word the refusal.
                            super::receive_object(store, &key, size, bytes.as_slice(), &what)
                        };
                        record_outcome(result.map(|new| (size, new)));
                    }
                }
            });
        }
        let sender = sender;
        let mut batch: Batch = Vec::new();
        let mut batch_bytes = 0u64;
        for entry in entries {
            if failed.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let mut entry =
                entry.with_context(|| format!("{}: damaged archive", path.display()))?;
            let name = entry.path()?.to_string_lossy().into_owned();
            if let Some(expected) = lock_hashes.get(&name) {
                let mut text = String::new();
                entry.read_to_string(&mut text)?;
                if hex::encode(sha2::Sha256::digest(text.as_bytes())) != *expected {
                    bail!("{}: {name} does not match its checksum", path.display());
                }
                let tier = name
                    .trim_start_matches("locks/pylock.")
                    .trim_end_matches(".toml")
                    .to_string();
                report.locks.push((tier, text));
            } else if let Some(key) = name.strip_prefix("objects/") {
                let size = *sizes.get(key).with_context(|| {
                    format!("{}: {name} is not in its manifest", path.display())
                })?;
                seen.insert(key.to_string());
                let what = format!("{name} in {}", path.display());
                if size > 16 * 1024 * 1024 {
                    let result = super::receive_object(
                        store,
                        key,
                        size,
                        ProgressReader {
                            inner: &mut entry,
                            progress,
                        },
                        &what,
                    );
                    record_outcome(result.map(|new| (size, new)));
                } else {
                    // At most the size: a longer entry is refused by the hash.
                    let mut bytes = Vec::with_capacity(size as usize);
                    (&mut entry).take(size + 1).read_to_end(&mut bytes)?;
                    batch_bytes += size;
                    batch.push((key.to_string(), size, bytes, what));
                    if batch.len() >= 64 || batch_bytes >= 4 * 1024 * 1024 {
                        batch_bytes = 0;
                        sender
                            .send(std::mem::take(&mut batch))
                            .map_err(|_| anyhow::anyhow!("the import workers stopped"))?;
                    }
                }
            } else {
                bail!("{}: unexpected entry {name}", path.display());
            }
        }
        if !batch.is_empty() {
            sender
                .send(batch)
                .map_err(|_| anyhow::anyhow!("the import workers stopped"))?;
        }
        Ok(())
    });
    for outcome in outcomes.into_inner().unwrap() {
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
    let missing: Vec<&str> = manifest
        .objects
        .iter()
        .map(|o| o.key.as_str())
        .filter(|k| !seen.contains(*k))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{}: the archive ends before {} of its objects (truncated?); the objects that arrived \
             were kept, nothing was recorded. Export it again",
            path.display(),
            missing.len()
        );
    }
    if report.locks.len() != manifest.tiers.len() {
        bail!(
            "{}: some locks listed in the manifest are missing",
            path.display()
        );
    }
    report.distributions_new = super::record(store, &manifest.distributions, &manifest.bytecode)?;
    Ok(report)
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

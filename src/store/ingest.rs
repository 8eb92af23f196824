//! Wheel → store objects.
//!
//! A wheel is checked before anything of it counts: its file name, every entry
//! name (through [`safe_relative_path`]), no symlinks, `METADATA` agreeing with
//! the file name, where each file and launcher would land in a venv (a
//! `.data` scheme of the five, no `entry_points.txt` script name that is not
//! a plain file name, nothing on the venv's own `pyvenv.cfg`, interpreter or
//! activation scripts), and each file's size agreeing with `RECORD`, and its
//! sha256 too unless the lock pins the wheel's own (see [`EntrySha256`]).
//! Contents are inflated out of the zip (in parallel over entries; whole with
//! libdeflate where that is safe, else streamed, CRC-32 checked either way),
//! hashed with blake3 (and sha256 where RECORD's is not taken), and
//! staged in the store's tmp directory; only when the whole wheel checks out
//! are new objects renamed into `objects/` (read-only) and the distribution
//! recorded in SQLite. A reader never sees a partial object.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rayon::prelude::*;
use sha2::Digest;
use uv_distribution_filename::{WheelFilename, WheelFilenameError};
use zip::ZipArchive;

use crate::budget::{MemoryBudget, Reserved};
use crate::fsinfo;
use crate::platform;

use super::ahead::InflatedAhead;
use super::db::{Db, FileRow, NewDistribution};
use super::inflate::{
    self, Deflated, IN_MEMORY_LIMIT, INFLATING, Inflated, InflatedFile, Inflater,
};
use super::stage::Stage;
use super::wheel::{self, safe_relative_path};
use super::{Layout, ObjectKey, Store};

/// A wheel to ingest (`pinned` says whether the caller verified it
/// against its lock entry).
pub struct WheelFile<'a> {
    pub content: WheelContent<'a>,
    /// The wheel's proper file name (the file on disk may be a temp name).
    pub filename: &'a str,
    /// Hex sha256 of the whole file.
    pub sha256: &'a str,
    pub size: u64,
    /// Where the wheel (or the sdist it was built from) was fetched.
    pub url: Option<&'a str>,
    /// sha256 of the sdist this wheel was built from, if tstore built it.
    pub built_from_sdist: Option<&'a str>,
    /// Whether `sha256` matched a hash the lock pins before the wheel was
    /// read: its entries then take the sha256 RECORD gives them instead of
    /// being hashed again (see [`EntrySha256`]).
    pub pinned: bool,
    /// Large entries inflated while the wheel downloaded, taken where they
    /// match the central directory.
    pub inflated_ahead: Option<&'a InflatedAhead>,
}

/// The sha256 of one of a wheel's entries (which the venv's RECORD lists),
/// hashed as the entry is read or taken from RECORD.
///
/// A wheel whose own sha256 matched the lock is, byte for byte, the archive
/// its publisher uploaded, RECORD included: RECORD is unsigned data inside
/// that archive, so hashing every entry against it proves nothing the pin
/// did not, and each entry's CRC-32 (checked by the inflater and the zip
/// reader) catches damage to its bytes. Hashing them anyway took 0.7 s of
/// the 6.8 s of CPU of a cold tekton-dev install. A wheel nothing pins (one
/// tstore built) is hashed and checked against its RECORD, as the wheel
/// spec asks.
enum EntrySha256<'r> {
    Hashing(sha2::Sha256),
    /// The urlsafe-base64 digest a pinned wheel's RECORD gives.
    Given(&'r str),
}

impl<'r> EntrySha256<'r> {
    /// Given when the wheel is pinned and RECORD gives the entry a sha256
    /// in the form RECORD writes (urlsafe base64 of 32 bytes, no padding),
    /// which goes into the venv's RECORD as is; else hashed, so that any
    /// other text is checked, and refused, as before.
    fn for_entry(pinned: bool, recorded: Option<&'r wheel::RecordEntry>) -> Self {
        match recorded.and_then(|entry| entry.hash.as_ref()) {
            Some((algo, value)) if pinned && algo == "sha256" && is_sha256_digest(value) => {
                Self::Given(value)
            }
            _ => Self::hashed(),
        }
    }

    fn hashed() -> Self {
        Self::Hashing(sha2::Sha256::new())
    }

    fn update(&mut self, chunk: &[u8]) {
        if let Self::Hashing(hasher) = self {
            hasher.update(chunk);
        }
    }

    /// The urlsafe-base64 digest, as RECORD writes it.
    fn finish(self) -> String {
        match self {
            Self::Hashing(hasher) => URL_SAFE_NO_PAD.encode(hasher.finalize()),
            Self::Given(value) => value.to_string(),
        }
    }
}

/// Whether `text` is a sha256 digest as RECORD writes it: the canonical
/// urlsafe base64 of 32 bytes, without padding (43 characters).
fn is_sha256_digest(text: &str) -> bool {
    URL_SAFE_NO_PAD
        .decode(text)
        .is_ok_and(|bytes| bytes.len() == 32)
}

/// Where a wheel's bytes are.
#[derive(Clone, Copy)]
pub enum WheelContent<'a> {
    /// A file (the file on disk may have a temp name). Only tstore's own
    /// files: ingest maps it, and a mapped file cut short while it is read
    /// kills the process (SIGBUS).
    File(&'a Path),
    /// A buffer: a download small enough to keep in memory is never
    /// written to disk and read back.
    Memory(&'a [u8]),
}

impl<'a> WheelContent<'a> {
    /// A reader over the wheel; each worker opens its own.
    fn open(self) -> std::io::Result<Opened<'a>> {
        Ok(match self {
            Self::File(path) => Opened::File(ZipSource::new(SharedFile::new(File::open(path)?))),
            Self::Memory(bytes) => Opened::Memory(std::io::Cursor::new(bytes)),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("`{wheel}` is not a valid wheel file name: {source}")]
    Filename {
        wheel: String,
        #[source]
        source: WheelFilenameError,
    },
    #[error(
        "{wheel}: corrupt or truncated zip archive ({}{source}); nothing was ingested",
        .entry.as_deref().map(|e| format!("{e}: ")).unwrap_or_default()
    )]
    Zip {
        wheel: String,
        /// The entry being read, when the archive opened.
        entry: Option<String>,
        #[source]
        source: ZipFailure,
    },
    #[error("{wheel}: entry `{entry}` {reason}; refusing to ingest this wheel")]
    UnsafeEntry {
        wheel: String,
        entry: String,
        reason: String,
    },
    #[error(
        "{wheel}: entry point `{name}` in entry_points.txt {reason}; refusing to ingest this wheel"
    )]
    UnsafeScript {
        wheel: String,
        name: String,
        reason: String,
    },
    #[error("{wheel}: {message}; nothing was ingested")]
    Invalid { wheel: String, message: String },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Why a wheel's archive could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ZipFailure {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Zip(#[from] zip::result::ZipError),
}

/// One zip entry after hashing.
struct HashedEntry {
    row: FileRow,
    /// The content of its object (none for an empty file), to put in
    /// place once the whole wheel checks out.
    pending: Option<(Pending, ObjectKey)>,
}

/// Entries held in memory until their wheel checks out, by all the ingests
/// of this process at once; those that do not fit go to their staging file
/// as they come. The bound matters for wheels like PyTorch's, whose small
/// files alone are hundreds of MB (measured peaks are in BENCHMARKS.md).
static HELD_ENTRIES: MemoryBudget = MemoryBudget::new(32 << 20);

/// An object's bytes, waiting for the rest of their wheel to check out.
enum Pending {
    /// Held in memory; `temp` is where they are staged if the object goes
    /// into `objects/` on its own.
    Memory {
        bytes: Vec<u8>,
        temp: PathBuf,
        _held: Reserved<'static>,
    },
    /// Spilled to this staging file as they streamed, with the object's
    /// mode.
    File(PathBuf),
}

impl Pending {
    /// `key`'s streamed content, kept in memory while it fits in
    /// [`HELD_ENTRIES`], else written to `temp`; a spilled file is finished.
    /// An entry over [`IN_MEMORY_LIMIT`] (one inflated whole) is always
    /// written, as a streamed one would have been, so it cannot take the
    /// small entries' budget. Files are made read-only through their handle.
    fn new(content: Content, temp: PathBuf, key: &ObjectKey) -> anyhow::Result<Self> {
        Ok(match content {
            Content::InMemory(bytes) if bytes.len() as u64 > IN_MEMORY_LIMIT => {
                write_with_mode(&temp, &bytes, key.mode())?;
                Self::File(temp)
            }
            Content::InMemory(bytes) => match HELD_ENTRIES.take(bytes.len() as u64) {
                Some(held) => Self::Memory {
                    bytes,
                    temp,
                    _held: held,
                },
                None => {
                    write_with_mode(&temp, &bytes, key.mode())?;
                    Self::File(temp)
                }
            },
            Content::Written(file) => {
                file.set_permissions(std::fs::Permissions::from_mode(key.mode()))
                    .with_context(|| format!("cannot write {}", temp.display()))?;
                Self::File(temp)
            }
        })
    }
}

/// Ingests `wheel` into `store` and returns its distribution id. Re-ingesting a
/// wheel with a known sha256 returns the existing record without reading it.
pub fn ingest_wheel(store: &Store, wheel: &WheelFile<'_>) -> Result<i64, IngestError> {
    match stage_wheel(store, None, wheel)? {
        Ingested::Recorded(id) => Ok(id),
        Ingested::Unrecorded(new) => Ok(record_wheels(&store.db, &[new])?[0]),
    }
}

/// A wheel ingested, recorded or still to record.
pub enum Ingested {
    /// The store had it (or its objects went straight into `objects/` and
    /// it was recorded).
    Recorded(i64),
    /// Its objects are in a [`Stage`] (and `objects/`): record it with
    /// [`record_wheels`] once the stage is published.
    Unrecorded(UnrecordedWheel),
}

/// A checked wheel whose objects are in place, not recorded yet.
#[derive(Debug)]
pub struct UnrecordedWheel {
    name: String,
    version: String,
    tags: String,
    filename: String,
    sha256: String,
    size: u64,
    url: Option<String>,
    built_from_sdist: Option<String>,
    rows: Vec<FileRow>,
}

impl UnrecordedWheel {
    /// Its files, as recording it inserts them (bytecode unknown). The
    /// index keeps the rows of whichever process recorded the wheel first.
    pub fn rows(&self) -> &[FileRow] {
        &self.rows
    }
}

/// Checks and hashes `wheel` and puts its new objects in place: into
/// `stage` for the shards it holds (a new store: written at their final
/// name, no rename each), else one by one into `objects/`. Only once the
/// whole wheel checks out is any object written outside the store's tmp.
pub fn stage_wheel(
    store: &Store,
    stage: Option<&Stage>,
    wheel: &WheelFile<'_>,
) -> Result<Ingested, IngestError> {
    if let Some(existing) = store.db.distribution_by_sha256(wheel.sha256)? {
        if let Some(sdist) = wheel.built_from_sdist {
            record_sdist_build(store, wheel, &existing.name, &existing.version, sdist)?;
        }
        return Ok(Ingested::Recorded(existing.id));
    }
    let reader = wheel.content.open().map_err(|e| IngestError::Zip {
        wheel: wheel.filename.to_string(),
        entry: None,
        source: e.into(),
    })?;
    let filename = parse_filename(wheel.filename)?;
    let mut archive = open_archive(reader, wheel.filename)?;
    let Inspection {
        filename,
        file_indices,
        record,
        record_name,
    } = inspect(&mut archive, filename, wheel.filename)?;
    let recorded: HashMap<&str, &wheel::RecordEntry> =
        record.iter().map(|e| (e.path.as_str(), e)).collect();

    let staging = store.temp_path("ingest");
    fs_err::create_dir_all(&staging).context("cannot create a staging directory in the store")?;
    // Large entries inflate from the archive's bytes, not through a reader.
    // Mapped only on a filesystem where blocks can be reserved: that rules
    // out network and FUSE filesystems, where a failed read through a
    // mapping is a SIGBUS.
    let mapped = match wheel.content {
        WheelContent::File(path) if platform::reserves_blocks(path) => inflate::map_wheel(path),
        _ => None,
    };
    let whole_wheel = match wheel.content {
        WheelContent::File(_) => mapped.as_deref(),
        WheelContent::Memory(bytes) => Some(bytes),
    };
    let result = hash_entries(
        wheel,
        whole_wheel,
        &archive,
        &file_indices,
        &staging,
        &recorded,
        &record_name,
    );
    // Everything checked out: put new objects in place.
    let placed = result.and_then(|entries| {
        entries
            .into_par_iter()
            .map(|entry| {
                if let Some((pending, key)) = entry.pending {
                    place_object(store, stage, pending, &key, entry.row.size)?;
                }
                Ok(entry.row)
            })
            .collect::<Result<Vec<FileRow>, IngestError>>()
    });
    let _ = fs_err::remove_dir_all(&staging);
    let new = UnrecordedWheel {
        name: filename.name.to_string(),
        version: filename.version.to_string(),
        tags: wheel_tags(&filename),
        filename: wheel.filename.to_string(),
        sha256: wheel.sha256.to_string(),
        size: wheel.size,
        url: wheel.url.map(str::to_string),
        built_from_sdist: wheel.built_from_sdist.map(str::to_string),
        rows: placed?,
    };
    if stage.is_some() {
        return Ok(Ingested::Unrecorded(new));
    }
    Ok(Ingested::Recorded(record_wheels(&store.db, &[new])?[0]))
}

/// The tags part of a wheel's file name (`py3-none-any`).
fn wheel_tags(filename: &WheelFilename) -> String {
    filename
        .to_string()
        .strip_suffix(".whl")
        .and_then(|stem| stem.splitn(3, '-').nth(2).map(str::to_string))
        .unwrap_or_default()
}

/// Records wheels whose objects are all in `objects/`, in one
/// transaction; returns their ids, in order.
pub fn record_wheels<W: Borrow<UnrecordedWheel>>(
    db: &Db,
    wheels: &[W],
) -> anyhow::Result<Vec<i64>> {
    let rows: Vec<(NewDistribution<'_>, &[FileRow])> = wheels
        .iter()
        .map(|w| {
            let w = w.borrow();
            let dist = NewDistribution {
                name: &w.name,
                version: &w.version,
                filename: &w.filename,
                sha256: &w.sha256,
                size: w.size,
                tags: &w.tags,
                url: w.url.as_deref(),
                built_from_sdist: w.built_from_sdist.as_deref(),
            };
            (dist, w.rows.as_slice())
        })
        .collect();
    db.insert_distributions(&rows)
}

/// What a wheel says about itself, checked before any content is read.
pub struct Inspection {
    pub filename: WheelFilename,
    /// Indices of the zip entries that are files.
    pub file_indices: Vec<usize>,
    pub record: Vec<wheel::RecordEntry>,
    /// `<name>-<version>.dist-info/RECORD`.
    pub record_name: String,
}

/// Checks a wheel's file name and every entry name, refuses links, reads
/// and checks METADATA (against the file name), WHEEL and RECORD, and checks
/// where its files and launchers would land in a venv, so a wheel that lies
/// about itself or would damage a venv is refused before any content is
/// staged.
pub fn inspect_archive<R: Read + Seek>(
    reader: R,
    wheel_name: &str,
) -> Result<Inspection, IngestError> {
    let filename = parse_filename(wheel_name)?;
    inspect(&mut open_archive(reader, wheel_name)?, filename, wheel_name)
}

fn parse_filename(wheel_name: &str) -> Result<WheelFilename, IngestError> {
    WheelFilename::from_str(wheel_name).map_err(|e| IngestError::Filename {
        wheel: wheel_name.to_string(),
        source: e,
    })
}

/// Reads a wheel's central directory.
fn open_archive<R: Read + Seek>(reader: R, wheel_name: &str) -> Result<ZipArchive<R>, IngestError> {
    ZipArchive::new(reader).map_err(|e| IngestError::Zip {
        wheel: wheel_name.to_string(),
        entry: None,
        source: e.into(),
    })
}

/// [`inspect_archive`] of an archive already open, whose file name parsed.
fn inspect<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    filename: WheelFilename,
    wheel_name: &str,
) -> Result<Inspection, IngestError> {
    let invalid = |message: String| IngestError::Invalid {
        wheel: wheel_name.to_string(),
        message,
    };
    let (file_indices, names) = list_files(archive, wheel_name)?;

    let dist_info = find_dist_info(&names, &filename).map_err(invalid)?;
    let mut read_text = |name: &str| -> Result<String, IngestError> {
        let mut entry = archive.by_name(name).map_err(|_| IngestError::Invalid {
            wheel: wheel_name.to_string(),
            message: format!("{name} is missing"),
        })?;
        let mut text = String::new();
        entry
            .read_to_string(&mut text)
            .map_err(|e| IngestError::Zip {
                wheel: wheel_name.to_string(),
                entry: Some(name.to_string()),
                source: e.into(),
            })?;
        Ok(text)
    };
    let metadata = read_text(&format!("{dist_info}/METADATA"))?;
    let (meta_name, meta_version) = wheel::parse_metadata(&metadata).map_err(invalid)?;
    check_name_and_version(&filename, &meta_name, &meta_version).map_err(invalid)?;
    wheel::check_wheel_file(&read_text(&format!("{dist_info}/WHEEL"))?).map_err(invalid)?;
    let record_name = format!("{dist_info}/RECORD");
    let record = wheel::parse_record(&read_text(&record_name)?).map_err(invalid)?;
    // Where each file and launcher will land in a venv is known now: a
    // wheel that would land on the venv's own files is refused here, not
    // when a tier is planned.
    let data_prefix = format!("{}.data/", dist_info.trim_end_matches(".dist-info"));
    for name in &names {
        wheel::check_install_path(name, &data_prefix).map_err(|reason| {
            IngestError::UnsafeEntry {
                wheel: wheel_name.to_string(),
                entry: name.clone(),
                reason,
            }
        })?;
    }
    let entry_points = format!("{dist_info}/entry_points.txt");
    if names.contains(&entry_points) {
        for script in wheel::parse_entry_points(&read_text(&entry_points)?).map_err(invalid)? {
            wheel::check_script_name(&script.name).map_err(|reason| IngestError::UnsafeScript {
                wheel: wheel_name.to_string(),
                name: script.name.clone(),
                reason,
            })?;
        }
    }
    Ok(Inspection {
        filename,
        file_indices,
        record,
        record_name,
    })
}

/// The archive's file entries (indices and names), after checking that
/// every entry's name is a safe relative path and none is a symlink.
fn list_files<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    wheel_name: &str,
) -> Result<(Vec<usize>, Vec<String>), IngestError> {
    let mut file_indices = Vec::new();
    let mut names = Vec::new();
    for index in 0..archive.len() {
        let entry = archive.by_index_raw(index).map_err(|e| IngestError::Zip {
            wheel: wheel_name.to_string(),
            entry: None,
            source: e.into(),
        })?;
        let name = entry.name().to_string();
        if let Err(reason) = safe_relative_path(&name) {
            return Err(IngestError::UnsafeEntry {
                wheel: wheel_name.to_string(),
                entry: name,
                reason: format!("is not a safe relative path: it {reason}"),
            });
        }
        if entry.unix_mode().is_some_and(|m| m & 0o170000 == 0o120000) {
            return Err(IngestError::UnsafeEntry {
                wheel: wheel_name.to_string(),
                entry: name,
                reason: "is a symbolic link (wheels may only hold regular files)".into(),
            });
        }
        if !entry.is_dir() {
            file_indices.push(index);
            names.push(name);
        }
    }
    Ok((file_indices, names))
}

/// Records that the known wheel `wheel` was also built from `sdist`.
fn record_sdist_build(
    store: &Store,
    wheel: &WheelFile<'_>,
    name: &str,
    version: &str,
    sdist: &str,
) -> anyhow::Result<i64> {
    store.db.insert_distribution(
        &NewDistribution {
            name,
            version,
            filename: wheel.filename,
            sha256: wheel.sha256,
            size: wheel.size,
            tags: "",
            url: wheel.url,
            built_from_sdist: Some(sdist),
        },
        &[],
    )
}

/// An open wheel, read from its file or its buffer. A clone reads on its
/// own, from wherever it seeks.
enum Opened<'a> {
    File(ZipSource<SharedFile>),
    Memory(std::io::Cursor<&'a [u8]>),
}

impl Clone for Opened<'_> {
    fn clone(&self) -> Self {
        match self {
            Self::File(source) => Self::File(ZipSource::new(source.inner.get_ref().rewound())),
            Self::Memory(bytes) => Self::Memory(bytes.clone()),
        }
    }
}

/// An open file read at a position of its own (`pread`): handles share the
/// file, not a position, so workers read one wheel at once.
struct SharedFile {
    file: std::sync::Arc<File>,
    position: u64,
}

impl SharedFile {
    fn new(file: File) -> Self {
        Self {
            file: std::sync::Arc::new(file),
            position: 0,
        }
    }

    /// Another handle on the file, at its start (where a new [`ZipSource`]
    /// takes it to be).
    fn rewound(&self) -> Self {
        Self {
            file: self.file.clone(),
            position: 0,
        }
    }
}

impl Read for SharedFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(&*self.file, buf, self.position)?;
        self.position += n as u64;
        Ok(n)
    }
}

impl Seek for SharedFile {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            std::io::SeekFrom::Start(offset) => Some(offset),
            std::io::SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
            std::io::SeekFrom::End(delta) => self.file.metadata()?.len().checked_add_signed(delta),
        };
        self.position =
            target.ok_or_else(|| std::io::Error::other("seek before the start of the wheel"))?;
        Ok(self.position)
    }
}

impl Read for Opened<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::File(file) => file.read(buf),
            Self::Memory(bytes) => bytes.read(buf),
        }
    }
}

impl Seek for Opened<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        match self {
            Self::File(file) => file.seek(to),
            Self::Memory(bytes) => bytes.seek(to),
        }
    }
}

/// A wheel file read through a buffer that survives seeks into it. The zip
/// reader seeks to every entry's header, and a `BufReader` drops its buffer
/// on every seek: it read up to 256 KiB again per entry, and kernel copies
/// were 29 % of a cold tekton-ai install's samples. It also asks for
/// its position once per central directory entry, which this answers
/// without a system call.
struct ZipSource<R> {
    inner: BufReader<R>,
    /// Where the next read starts, kept here since asking the file costs a
    /// system call.
    position: u64,
}

impl<R: Read> ZipSource<R> {
    fn new(inner: R) -> Self {
        Self {
            inner: BufReader::with_capacity(256 << 10, inner),
            position: 0,
        }
    }
}

impl<R: Read> Read for ZipSource<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.position += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for ZipSource<R> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            std::io::SeekFrom::Start(offset) => offset,
            std::io::SeekFrom::Current(delta) => self
                .position
                .checked_add_signed(delta)
                .ok_or_else(|| std::io::Error::other("seek before the start of the wheel"))?,
            std::io::SeekFrom::End(_) => {
                self.position = self.inner.seek(to)?;
                return Ok(self.position);
            }
        };
        // Within the buffer, this moves in it; beyond, it seeks the file.
        let delta = i64::try_from(target).map_err(std::io::Error::other)?
            - i64::try_from(self.position).map_err(std::io::Error::other)?;
        self.inner.seek_relative(delta)?;
        self.position = target;
        Ok(target)
    }
}

/// Hashes every file entry, in parallel. Each worker reads through a clone
/// of `archive`: its central directory is shared, its reader its own
/// (reopening the wheel per worker parsed the directory again each time,
/// up to 33 times per wheel inside a pool of 8).
fn hash_entries(
    wheel: &WheelFile<'_>,
    whole_wheel: Option<&[u8]>,
    archive: &ZipArchive<Opened<'_>>,
    indices: &[usize],
    staging: &Path,
    recorded: &HashMap<&str, &wheel::RecordEntry>,
    record_name: &str,
) -> Result<Vec<HashedEntry>, IngestError> {
    let chunk = (indices.len() / (rayon::current_num_threads() * 4)).max(32);
    let chunks: Vec<Result<Vec<HashedEntry>, IngestError>> = indices
        .par_chunks(chunk)
        .map(|chunk| {
            let mut archive = archive.clone();
            let mut inflater = Inflater::new(&INFLATING);
            chunk
                .iter()
                .map(|&index| {
                    let mut reading = Reading {
                        archive: &mut archive,
                        inflater: &mut inflater,
                        whole_wheel,
                    };
                    hash_entry(wheel, &mut reading, index, staging, recorded, record_name)
                })
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(indices.len());
    for chunk in chunks {
        out.extend(chunk?);
    }
    Ok(out)
}

/// What one worker reads entries with: its clone of the archive, its
/// inflater, and the whole archive's bytes when they are in memory or
/// mapped (for [`Inflater::inflate_into_file`]).
struct Reading<'r, 'w> {
    archive: &'r mut ZipArchive<Opened<'w>>,
    inflater: &'r mut Inflater,
    whole_wheel: Option<&'r [u8]>,
}

fn hash_entry(
    wheel: &WheelFile<'_>,
    reading: &mut Reading<'_, '_>,
    index: usize,
    staging: &Path,
    recorded: &HashMap<&str, &wheel::RecordEntry>,
    record_name: &str,
) -> Result<HashedEntry, IngestError> {
    let zip_error = |e: zip::result::ZipError| IngestError::Zip {
        wheel: wheel.filename.to_string(),
        entry: None,
        source: e.into(),
    };
    let raw = reading.archive.by_index_raw(index).map_err(zip_error)?;
    let path = raw.name().to_string();
    let expected = recorded.get(path.as_str()).copied();
    // RECORD cannot give its own hash.
    let sha256 = EntrySha256::for_entry(wheel.pinned && path != record_name, expected);
    let executable = raw.unix_mode().is_some_and(|m| m & 0o111 != 0);
    drop(raw);
    let EntryBytes {
        streamed,
        temp,
        _held,
    } = read_entry(wheel, reading, index, &path, staging, sha256)?;
    if path != record_name
        && let Some(expected) = expected
    {
        let hash_ok = match &expected.hash {
            Some((algo, value)) if algo == "sha256" => *value == streamed.sha256,
            _ => true,
        };
        let wrong = if !hash_ok {
            Some("hash".to_string())
        } else {
            expected
                .size
                .filter(|&size| size != streamed.size)
                .map(|size| format!("size ({} bytes, RECORD says {size})", streamed.size))
        };
        if let Some(what) = wrong {
            return Err(IngestError::Invalid {
                wheel: wheel.filename.to_string(),
                message: format!(
                    "`{path}` does not match its RECORD {what} (the wheel is corrupt)"
                ),
            });
        }
    }
    let mut row = FileRow {
        path,
        object: None,
        mode: if executable { 0o755 } else { 0o644 },
        size: streamed.size,
        sha256: streamed.sha256,
        bytecode: Default::default(),
    };
    if row.size == 0 {
        return Ok(HashedEntry { row, pending: None });
    }
    let key = ObjectKey {
        hash: streamed.blake3,
        executable,
    };
    let pending = Pending::new(streamed.content, temp, &key)?;
    row.object = Some(key);
    Ok(HashedEntry {
        row,
        pending: Some((pending, key)),
    })
}

/// An entry's bytes, hashed, where its staging file is, and a large
/// entry's hold on [`INFLATING`] (until its bytes are placed).
struct EntryBytes {
    streamed: Streamed,
    temp: PathBuf,
    _held: Option<Reserved<'static>>,
}

/// Reads the entry `index` (named `path`) from the fastest source that
/// vouches for its bytes: inflated while its wheel downloaded, inflated
/// whole into memory or into its staging file, else streamed by the zip
/// reader, whose errors name what is wrong.
fn read_entry(
    wheel: &WheelFile<'_>,
    reading: &mut Reading<'_, '_>,
    index: usize,
    path: &str,
    staging: &Path,
    sha256: EntrySha256<'_>,
) -> Result<EntryBytes, IngestError> {
    let zip_error = |source: ZipFailure| IngestError::Zip {
        wheel: wheel.filename.to_string(),
        entry: Some(path.to_string()),
        source,
    };
    let raw = reading
        .archive
        .by_index_raw(index)
        .map_err(|e| zip_error(e.into()))?;
    // Taken only where RECORD's digest is: nothing hashed it with sha256.
    if let EntrySha256::Given(_) = sha256
        && let Some(entry) = wheel.inflated_ahead.and_then(|ahead| ahead.take(&raw))
    {
        return Ok(EntryBytes {
            streamed: Streamed {
                blake3: entry.blake3,
                sha256: sha256.finish(),
                size: entry.size,
                content: Content::Written(entry.file),
            },
            temp: entry.path,
            _held: None,
        });
    }
    let temp = staging.join(format!("{index}"));
    let deflated = Deflated::of(&raw).filter(|entry| entry.size > IN_MEMORY_LIMIT);
    let declared = raw.size();
    let whole = reading
        .inflater
        .inflate(raw)
        .map_err(|e| zip_error(e.into()))?;
    if let Some(Inflated { bytes, held }) = whole {
        return Ok(EntryBytes {
            streamed: Streamed::whole(bytes, sha256),
            temp,
            _held: held,
        });
    }
    if let (Some(entry), Some(wheel_bytes)) = (deflated, reading.whole_wheel)
        && let Some(inflated) = reading
            .inflater
            .inflate_into_file(wheel_bytes, &entry, &temp)
            .with_context(|| format!("cannot write {}", temp.display()))?
    {
        return Ok(EntryBytes {
            streamed: Streamed::in_file(inflated, sha256),
            temp,
            _held: None,
        });
    }
    // What the fast paths do not vouch for is read by the zip reader, whose
    // errors name what is wrong.
    let mut entry = reading
        .archive
        .by_index(index)
        .map_err(|e| zip_error(e.into()))?;
    let streamed = stream_entry(&mut entry, declared, &temp, sha256).map_err(|err| match err {
        StreamError::Read(source) => zip_error(source.into()),
        StreamError::Stage(err) => IngestError::Other(err),
    })?;
    Ok(EntryBytes {
        streamed,
        temp,
        _held: None,
    })
}

/// An entry's bytes, hashed as they streamed out of the archive.
struct Streamed {
    blake3: [u8; 32],
    /// urlsafe-base64 sha256, as RECORD writes it.
    sha256: String,
    size: u64,
    content: Content,
}

/// Where an entry's bytes are: small ones in memory, large ones in their
/// staging file, written as they streamed or inflated.
enum Content {
    InMemory(Vec<u8>),
    Written(File),
}

impl Streamed {
    /// An entry read whole into memory, hashed.
    fn whole(bytes: Vec<u8>, mut sha256: EntrySha256<'_>) -> Self {
        sha256.update(&bytes);
        Self {
            blake3: *blake3::hash(&bytes).as_bytes(),
            sha256: sha256.finish(),
            size: bytes.len() as u64,
            content: Content::InMemory(bytes),
        }
    }

    /// An entry inflated into its staging file, hashed through its mapping.
    fn in_file(inflated: InflatedFile, mut sha256: EntrySha256<'_>) -> Self {
        sha256.update(inflated.bytes());
        Self {
            blake3: inflated.blake3(),
            sha256: sha256.finish(),
            size: inflated.bytes().len() as u64,
            content: Content::Written(inflated.into_file()),
        }
    }
}

enum StreamError {
    /// Reading the archive failed.
    Read(std::io::Error),
    /// Writing the staging file failed.
    Stage(anyhow::Error),
}

/// Reads an entry of `declared` size, hashing it with blake3 (and sha256,
/// unless it is given).
/// One of at most [`IN_MEMORY_LIMIT`] is read straight into its buffer and
/// hashed whole, a copy fewer than through a read buffer (memory copies
/// were 5 % of a cold install's samples);
/// a larger one, or one that turns out larger than it declared, goes to
/// `temp` as it is read.
fn stream_entry(
    entry: &mut impl Read,
    declared: u64,
    temp: &Path,
    sha256: EntrySha256<'_>,
) -> Result<Streamed, StreamError> {
    let mut head = Vec::new();
    if declared <= IN_MEMORY_LIMIT {
        // At most IN_MEMORY_LIMIT, so the declared size is safe to reserve.
        head.reserve_exact(declared as usize);
        (&mut *entry)
            .take(IN_MEMORY_LIMIT + 1)
            .read_to_end(&mut head)
            .map_err(StreamError::Read)?;
        if head.len() as u64 <= IN_MEMORY_LIMIT {
            return Ok(Streamed::whole(head, sha256));
        }
    }
    spill_entry(entry, head, temp, sha256)
}

/// Streams `head` and then the rest of `entry` to `temp`, hashing.
fn spill_entry(
    entry: &mut impl Read,
    head: Vec<u8>,
    temp: &Path,
    mut sha: EntrySha256<'_>,
) -> Result<Streamed, StreamError> {
    let stage_error = |err: std::io::Error| {
        StreamError::Stage(
            anyhow::Error::new(err).context(format!("cannot write {}", temp.display())),
        )
    };
    let mut blake = blake3::Hasher::new();
    let mut writer =
        std::io::BufWriter::with_capacity(1 << 20, File::create(temp).map_err(stage_error)?);
    let mut take = |chunk: &[u8]| -> Result<(), StreamError> {
        blake.update(chunk);
        sha.update(chunk);
        writer.write_all(chunk).map_err(stage_error)
    };
    take(&head)?;
    let mut size = head.len() as u64;
    let mut buffer = vec![0u8; 256 << 10];
    loop {
        let n = entry.read(&mut buffer).map_err(StreamError::Read)?;
        if n == 0 {
            break;
        }
        take(&buffer[..n])?;
        size += n as u64;
    }
    let file = writer
        .into_inner()
        .map_err(|err| stage_error(err.into_error()))?;
    Ok(Streamed {
        blake3: *blake.finalize().as_bytes(),
        sha256: sha.finish(),
        size,
        content: Content::Written(file),
    })
}

/// Puts a new object of a checked wheel in place: at its final name in
/// `stage` when that holds its shard, else into `objects/` through a
/// staging file, unless the store has it already.
fn place_object(
    store: &Store,
    stage: Option<&Stage>,
    pending: Pending,
    key: &ObjectKey,
    size: u64,
) -> anyhow::Result<()> {
    if let Some(stage) = stage.filter(|stage| stage.holds(key)) {
        return match pending {
            Pending::Memory { bytes, .. } => write_staged(stage, key, &bytes),
            Pending::File(temp) => stage.adopt(&temp, key).map(drop),
        };
    }
    let have_object = fs_err::metadata(store.object_path(key)).is_ok_and(|m| m.len() == size);
    let temp = match pending {
        Pending::Memory { .. } if have_object => return Ok(()),
        Pending::File(temp) if have_object => {
            let _ = fs_err::remove_file(&temp);
            return Ok(());
        }
        Pending::Memory { bytes, temp, .. } => {
            write_with_mode(&temp, &bytes, key.mode())?;
            temp
        }
        Pending::File(temp) => temp,
    };
    move_into_objects(store, &temp, key)
}

/// Writes `key`'s object at its name in `stage`, unless another wheel of
/// this run has. A failed write leaves no file behind and keeps the stage
/// from being published: another wheel may have found the name taken and
/// counted on the object.
fn write_staged(stage: &Stage, key: &ObjectKey, bytes: &[u8]) -> anyhow::Result<()> {
    let written = stage.create(key).and_then(|created| match created {
        None => Ok(()),
        Some(mut file) => file
            .write_all(bytes)
            .with_context(|| format!("cannot write {}", stage.object_path(key).display())),
    });
    written.inspect_err(|err| stage.abandon(key, err))
}

/// Creates `path` holding `bytes`, with `mode` whatever the umask.
fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    // The mode is set through the open file: a chmod by path after it is
    // closed walked the path again, for each of the ~20,000 objects of a
    // cold install.
    fsinfo::write_with_mode(path, bytes, mode).context("cannot stage an object")
}

/// Moves a staged file into `objects/` as a read-only object.
pub(crate) fn publish_object(store: &Layout, staged: &Path, key: &ObjectKey) -> anyhow::Result<()> {
    fs_err::set_permissions(staged, std::fs::Permissions::from_mode(key.mode()))?;
    move_into_objects(store, staged, key)
}

/// Moves a staged file that already has its object's mode into `objects/`.
fn move_into_objects(store: &Layout, staged: &Path, key: &ObjectKey) -> anyhow::Result<()> {
    let target = store.object_path(key);
    let moved = std::fs::rename(staged, &target).or_else(|err| {
        // A staged shard (`stage`) may have replaced the empty one this
        // rename resolved: the path leads to the new one now.
        if err.kind() == std::io::ErrorKind::NotFound {
            std::fs::rename(staged, &target)
        } else {
            Err(err)
        }
    });
    moved
        .with_context(|| format!("cannot move {} to {}", staged.display(), target.display()))
        .context("cannot move an object into the store")?;
    Ok(())
}

/// Finds `<name>-<version>.dist-info` among the wheel's entries.
fn find_dist_info(names: &[String], filename: &WheelFilename) -> Result<String, String> {
    let mut dirs: Vec<&str> = names
        .iter()
        .filter_map(|n| n.split_once('/').map(|(top, _)| top))
        .filter(|top| top.ends_with(".dist-info"))
        .collect();
    dirs.sort_unstable();
    dirs.dedup();
    let wanted = filename.name.as_ref();
    let matching: Vec<&str> = dirs
        .iter()
        .copied()
        .filter(|d| {
            let stem = d.trim_end_matches(".dist-info");
            let name = stem.rsplit_once('-').map_or(stem, |(n, _)| n);
            uv_normalize::PackageName::from_str(name).is_ok_and(|n| n.as_ref() == wanted)
        })
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(format!(
            "no `{wanted}-<version>.dist-info` directory (found: {})",
            dirs.join(", ")
        )),
        many => Err(format!(
            "several .dist-info directories for {wanted}: {}",
            many.join(", ")
        )),
    }
}

fn check_name_and_version(
    filename: &WheelFilename,
    name: &str,
    version: &str,
) -> Result<(), String> {
    let meta_name = uv_normalize::PackageName::from_str(name)
        .map_err(|e| format!("METADATA Name `{name}` is invalid: {e}"))?;
    if meta_name != filename.name {
        return Err(format!(
            "METADATA says Name `{name}` but the file name says `{}`",
            filename.name
        ));
    }
    let meta_version = uv_pep440::Version::from_str(version)
        .map_err(|e| format!("METADATA Version `{version}` is invalid: {e}"))?;
    if meta_version != filename.version {
        return Err(format!(
            "METADATA says Version `{version}` but the file name says `{}`",
            filename.version
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::error::Error;
    use std::io::Cursor;

    use super::*;

    /// Counts the bytes taken from the file under a [`ZipSource`].
    struct Counted {
        inner: Cursor<Vec<u8>>,
        bytes: std::rc::Rc<std::cell::Cell<u64>>,
    }

    impl Read for Counted {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.bytes.set(self.bytes.get() + n as u64);
            Ok(n)
        }
    }

    impl Seek for Counted {
        fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
            self.inner.seek(to)
        }
    }

    #[test]
    fn an_entry_longer_than_it_declares_goes_to_disk_whole_and_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join("entry");
        let check = |data: &[u8], declared: u64, spilled: bool| {
            let streamed = stream_entry(
                &mut Cursor::new(data),
                declared,
                &temp,
                EntrySha256::hashed(),
            )
            .unwrap_or_else(|_| panic!("streamed"));
            assert_eq!(streamed.size, data.len() as u64);
            assert_eq!(streamed.blake3, *blake3::hash(data).as_bytes());
            assert_eq!(
                streamed.sha256,
                URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(data))
            );
            match streamed.content {
                Content::InMemory(bytes) => {
                    assert!(!spilled, "held in memory");
                    assert_eq!(bytes, data);
                }
                Content::Written(file) => {
                    assert!(spilled, "spilled");
                    drop(file);
                    assert_eq!(std::fs::read(&temp).unwrap(), data);
                }
            }
        };
        let small = b"print('hello')\n".repeat(100);
        check(&small, small.len() as u64, false);
        // A zip entry may lie about its size: memory stays bounded.
        let big: Vec<u8> = (0..IN_MEMORY_LIMIT + 4096)
            .map(|i| (i % 253) as u8)
            .collect();
        check(&big, 10, true);
        check(&big, big.len() as u64, true);
        check(&small, 2 * IN_MEMORY_LIMIT, true);
    }

    /// A wheel of `modules` files, each different, deflated.
    fn many_module_wheel(modules: usize) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        let mut record = String::new();
        let mut add = |zip: &mut zip::ZipWriter<Cursor<Vec<u8>>>, name: &str, text: &str| {
            zip.start_file(name, options).unwrap();
            zip.write_all(text.as_bytes()).unwrap();
            record.push_str(&format!("{name},,\n"));
        };
        for i in 0..modules {
            add(
                &mut zip,
                &format!("demo/mod_{i}.py"),
                &format!("VALUE = {i}\n").repeat(i % 50 + 1),
            );
        }
        add(
            &mut zip,
            "demo-1.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
        );
        add(
            &mut zip,
            "demo-1.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n",
        );
        record.push_str("demo-1.0.dist-info/RECORD,,\n");
        zip.start_file("demo-1.0.dist-info/RECORD", options)
            .unwrap();
        zip.write_all(record.as_bytes()).unwrap();
        zip.finish().unwrap().into_inner()
    }

    #[test]
    fn a_wheel_read_by_many_workers_from_its_file_gives_what_it_gives_from_memory() {
        let bytes = many_module_wheel(600);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo-1.0-py3-none-any.whl");
        std::fs::write(&path, &bytes).unwrap();
        let files_of = |content: WheelContent<'_>, store: &str| {
            let store = Store::open(&dir.path().join(store)).unwrap();
            let wheel = WheelFile {
                content,
                filename: "demo-1.0-py3-none-any.whl",
                sha256: "0",
                size: bytes.len() as u64,
                url: None,
                built_from_sdist: None,
                pinned: false,
                inflated_ahead: None,
            };
            let id = ingest_wheel(&store, &wheel).unwrap_or_else(|e| panic!("{e}"));
            let mut rows = store.db.distribution_files(id).unwrap();
            rows.sort_by(|a, b| a.path.cmp(&b.path));
            for row in &rows {
                let object = store.object_path(row.object.as_ref().unwrap());
                let blake = blake3::hash(&std::fs::read(object).unwrap());
                assert_eq!(blake.as_bytes(), &row.object.unwrap().hash, "{}", row.path);
            }
            rows
        };
        let from_file = files_of(WheelContent::File(&path), "a");
        assert_eq!(from_file.len(), 603);
        assert_eq!(from_file, files_of(WheelContent::Memory(&bytes), "b"));
    }

    /// A wheel whose RECORD gives `demo/a.py` (whose content is `x = 1`)
    /// the sha256 `digest`, and itself that of `x = 2`.
    fn wheel_recording(digest: &str) -> Vec<u8> {
        let own = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(b"x = 2\n"));
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, text) in [
            ("demo/a.py", "x = 1\n"),
            (
                "demo-1.0.dist-info/METADATA",
                "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
            ),
            (
                "demo-1.0.dist-info/WHEEL",
                "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n",
            ),
            (
                "demo-1.0.dist-info/RECORD",
                &format!(
                    "demo/a.py,sha256={digest},6\ndemo-1.0.dist-info/METADATA,,\n\
                     demo-1.0.dist-info/WHEEL,,\ndemo-1.0.dist-info/RECORD,sha256={own},\n"
                ),
            ),
        ] {
            zip.start_file(name, options).unwrap();
            zip.write_all(text.as_bytes()).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    /// `demo-1.0-py3-none-any.whl` held in `bytes`.
    fn demo_wheel(bytes: &[u8], pinned: bool) -> WheelFile<'_> {
        WheelFile {
            content: WheelContent::Memory(bytes),
            filename: "demo-1.0-py3-none-any.whl",
            sha256: "0",
            size: bytes.len() as u64,
            url: None,
            built_from_sdist: None,
            pinned,
            inflated_ahead: None,
        }
    }

    #[test]
    fn record_hashes_are_checked_unless_the_lock_pins_the_wheel() {
        let wrong = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(b"x = 2\n"));
        let bytes = wheel_recording(&wrong);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let wheel = |pinned| demo_wheel(&bytes, pinned);

        let err = ingest_wheel(&store, &wheel(false)).unwrap_err().to_string();
        assert!(
            err.contains("`demo/a.py` does not match its RECORD hash"),
            "{err}"
        );
        assert!(store.db.distribution_by_sha256("0").unwrap().is_none());

        let id = ingest_wheel(&store, &wheel(true)).unwrap_or_else(|e| panic!("{e}"));
        let rows = store.db.distribution_files(id).unwrap();
        let row = rows.iter().find(|r| r.path == "demo/a.py").unwrap();
        assert_eq!(row.sha256, wrong, "RECORD's digest, for the venv's RECORD");
        assert_eq!(
            row.object.unwrap().hash,
            *blake3::hash(b"x = 1\n").as_bytes()
        );
        let record = rows.iter().find(|r| r.path.ends_with("/RECORD")).unwrap();
        let record_text = std::fs::read(store.object_path(&record.object.unwrap())).unwrap();
        assert_eq!(
            record.sha256,
            URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&record_text)),
            "RECORD itself is hashed, whatever it says of itself"
        );
    }

    #[test]
    fn a_pinned_wheel_whose_record_digest_is_not_in_record_form_is_checked() {
        let right = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(b"x = 1\n"));
        // Padded: not what RECORD writes, so not copied into a venv's RECORD.
        let bytes = wheel_recording(&format!("{right}="));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let err = ingest_wheel(&store, &demo_wheel(&bytes, true))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`demo/a.py` does not match its RECORD hash"),
            "{err}"
        );
        assert!(is_sha256_digest(&right));
        assert!(!is_sha256_digest("ab,cd"));
    }

    #[test]
    fn a_given_digest_is_taken_for_entries_in_memory_and_spilled() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join("entry");
        let small = b"x = 1\n".to_vec();
        let large = vec![7u8; IN_MEMORY_LIMIT as usize + 1];
        for data in [small, large] {
            let streamed = stream_entry(
                &mut Cursor::new(&data),
                data.len() as u64,
                &temp,
                EntrySha256::Given("given"),
            )
            .unwrap_or_else(|_| panic!("streamed"));
            assert_eq!(streamed.sha256, "given");
            assert_eq!(streamed.blake3, *blake3::hash(&data).as_bytes());
        }
    }

    #[test]
    fn entries_beyond_the_memory_budget_go_to_their_staging_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = plain_key(7);
        // All but 100 bytes of the budget (other tests hold a few, briefly).
        let nearly_all = loop {
            let free = HELD_ENTRIES.available();
            if let Some(held) = HELD_ENTRIES.take(free.saturating_sub(100)) {
                break held;
            }
        };
        let temp = dir.path().join("over");
        let pending = Pending::new(Content::InMemory(vec![1; 4096]), temp.clone(), &key).unwrap();
        assert!(matches!(pending, Pending::File(_)), "written out");
        assert_eq!(std::fs::read(&temp).unwrap(), vec![1; 4096]);
        assert_eq!(mode_of(&temp), 0o444);
        drop(nearly_all);
        let temp = dir.path().join("under");
        let pending = Pending::new(Content::InMemory(vec![2; 4096]), temp.clone(), &key).unwrap();
        assert!(matches!(pending, Pending::Memory { .. }), "held");
        assert!(!temp.exists());
    }

    #[test]
    fn an_entry_inflated_whole_over_the_memory_limit_is_written_out_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let key = plain_key(8);
        let temp = dir.path().join("large");
        let large = vec![3; IN_MEMORY_LIMIT as usize + 1];
        let pending = Pending::new(Content::InMemory(large.clone()), temp.clone(), &key).unwrap();
        assert!(matches!(pending, Pending::File(_)), "not held in memory");
        assert_eq!(std::fs::read(&temp).unwrap(), large);
    }

    #[test]
    fn a_large_entry_past_the_memory_budget_is_hashed_from_its_inflated_file() {
        let data: Vec<u8> = (0..IN_MEMORY_LIMIT + 4096)
            .map(|i| (i % 251) as u8)
            .collect();
        let wheel = inflate::tests::one_entry_wheel(zip::CompressionMethod::Deflated, &data);
        let (dir, reserves) = crate::platform::reserving_tempdir();
        let path = dir.path().join("demo-1.0-py3-none-any.whl");
        std::fs::write(&path, &wheel).unwrap();
        let mapped = inflate::map_wheel(&path).expect("a wheel file maps");
        // The zip reader reads a damaged copy: only the path that inflates
        // from the whole archive's bytes gives the entry as it is.
        let start = ZipArchive::new(Cursor::new(&wheel))
            .unwrap()
            .by_index_raw(0)
            .unwrap()
            .data_start() as usize;
        let mut damaged = wheel.clone();
        damaged[start + 100] ^= 0x55;
        static NONE: MemoryBudget = MemoryBudget::new(0);
        for (index, whole) in [&wheel[..], &mapped[..]].into_iter().enumerate() {
            let mut archive = ZipArchive::new(Opened::Memory(Cursor::new(&damaged[..]))).unwrap();
            let mut inflater = Inflater::new(&NONE);
            let mut reading = Reading {
                archive: &mut archive,
                inflater: &mut inflater,
                whole_wheel: Some(whole),
            };
            let staging = dir.path().join(format!("staging-{index}"));
            std::fs::create_dir(&staging).unwrap();
            let hashed = hash_entry(
                &demo_wheel(&wheel, false),
                &mut reading,
                0,
                &staging,
                &HashMap::new(),
                "RECORD",
            );
            let entry = match hashed {
                Ok(entry) => entry,
                Err(err) if !reserves => {
                    assert!(matches!(err, IngestError::Zip { .. }), "{err}");
                    continue;
                }
                Err(err) => panic!("not inflated from the archive's bytes: {err}"),
            };
            assert_eq!(entry.row.size, data.len() as u64);
            let sha256 = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&data));
            assert_eq!(entry.row.sha256, sha256);
            let Some((Pending::File(temp), key)) = entry.pending else {
                panic!("a large entry is not held in memory");
            };
            assert_eq!(key.hash, *blake3::hash(&data).as_bytes());
            assert_eq!(std::fs::read(&temp).unwrap(), data);
            assert_eq!(mode_of(&temp) & 0o777, 0o444, "read-only");
        }
    }

    /// The key of a non-executable object whose hash is `byte` repeated.
    fn plain_key(byte: u8) -> ObjectKey {
        ObjectKey {
            hash: [byte; 32],
            executable: false,
        }
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn zip_source_reads_each_byte_once_when_seeks_stay_in_its_buffer() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let bytes = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut source = ZipSource::new(Counted {
            inner: Cursor::new(data.clone()),
            bytes: bytes.clone(),
        });
        let mut read_at = |to: std::io::SeekFrom, expected_at: usize| {
            assert_eq!(source.seek(to).unwrap(), expected_at as u64);
            let mut buf = [0u8; 100];
            source.read_exact(&mut buf).unwrap();
            assert_eq!(buf[..], data[expected_at..expected_at + 100], "{to:?}");
        };
        // What the zip reader does: entry after entry, each by its offset.
        for at in (0..200_000).step_by(1_000) {
            read_at(std::io::SeekFrom::Start(at as u64), at);
        }
        read_at(std::io::SeekFrom::Current(-5_000), 199_100 - 5_000);
        assert!(
            bytes.get() <= 256 << 10,
            "one buffer's worth read, not one per seek: {}",
            bytes.get()
        );
        // Beyond the buffer and from the end, it seeks the file.
        read_at(std::io::SeekFrom::Start(900_000), 900_000);
        read_at(std::io::SeekFrom::End(-100), 999_900);
        read_at(std::io::SeekFrom::Start(10), 10);
    }

    #[test]
    fn a_damaged_deflated_entry_is_refused_naming_it() {
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("X{} = {}\n", i, i * 7919 % 1000).into_bytes())
            .collect();
        let mut wheel = inflate::tests::one_entry_wheel(zip::CompressionMethod::Deflated, &text);
        let start = ZipArchive::new(Cursor::new(&wheel))
            .unwrap()
            .by_index_raw(0)
            .unwrap()
            .data_start() as usize;
        wheel[start + 100] ^= 0x55;
        assert_eq!(
            inflate::tests::inflate_first(&wheel),
            None,
            "the fast path vouches only for good data"
        );
        // The zip reader then reads it, and its error names the entry.
        let mut archive = ZipArchive::new(Opened::Memory(Cursor::new(&wheel[..]))).unwrap();
        let mut inflater = Inflater::new(&INFLATING);
        let mut reading = Reading {
            archive: &mut archive,
            inflater: &mut inflater,
            whole_wheel: Some(&wheel),
        };
        let wheel_file = demo_wheel(&wheel, false);
        let dir = tempfile::tempdir().unwrap();
        let Err(err) = hash_entry(
            &wheel_file,
            &mut reading,
            0,
            dir.path(),
            &HashMap::new(),
            "RECORD",
        ) else {
            panic!("a damaged entry was hashed");
        };
        assert!(
            matches!(&err, IngestError::Zip { entry: Some(name), .. } if name == "demo/a.py"),
            "{err}"
        );
    }

    #[test]
    fn a_broken_archive_keeps_the_zip_error_as_its_cause() {
        let err = inspect_archive(Cursor::new(b"not a zip".to_vec()), "a-1-py3-none-any.whl")
            .err()
            .unwrap();
        let message = err.to_string();
        assert!(
            message.starts_with("a-1-py3-none-any.whl: corrupt or truncated zip archive (")
                && message.ends_with("); nothing was ingested"),
            "{message}"
        );
        let source = err.source().expect("a cause");
        assert!(
            matches!(
                source.downcast_ref::<ZipFailure>(),
                Some(ZipFailure::Zip(_))
            ),
            "{source:?}"
        );
    }

    /// Streams `bytes` as an entry and makes it pending at `temp`.
    fn pending(bytes: &[u8], temp: &Path) -> (Pending, ObjectKey) {
        let streamed = stream_entry(
            &mut Cursor::new(bytes),
            bytes.len() as u64,
            temp,
            EntrySha256::hashed(),
        )
        .ok()
        .unwrap();
        let key = ObjectKey {
            hash: streamed.blake3,
            executable: false,
        };
        let pending = Pending::new(streamed.content, temp.to_path_buf(), &key).unwrap();
        (pending, key)
    }

    #[test]
    fn objects_are_placed_read_only_and_dropped_when_the_store_has_them() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path()).unwrap();
        let temp = store.temp_path("test");
        let large = vec![9u8; IN_MEMORY_LIMIT as usize + 1];
        let small = b"VALUE = 1\n".to_vec();
        for bytes in [&large, &small] {
            let (first, key) = pending(bytes, &temp);
            place_object(&store, None, first, &key, bytes.len() as u64).unwrap();
            let object = store.object_path(&key);
            assert_eq!(std::fs::read(&object).unwrap(), *bytes);
            let mode = std::fs::metadata(&object).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o444);
            assert!(!temp.exists(), "the staging file was moved");
            // The store has it: the second copy is dropped, the object kept.
            let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&object).unwrap());
            let (again, _) = pending(bytes, &temp);
            place_object(&store, None, again, &key, bytes.len() as u64).unwrap();
            assert!(!temp.exists(), "the second copy is removed");
            let now = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&object).unwrap());
            assert_eq!(inode, now, "the object is not replaced");
        }
    }

    #[test]
    fn objects_of_staged_shards_wait_in_the_stage_until_it_is_published() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path()).unwrap();
        let stage = Stage::begin(&store).unwrap();
        assert_eq!(stage.shards(), 256, "a new store stages every shard");
        let temp = store.temp_path("test");
        let large = vec![7u8; IN_MEMORY_LIMIT as usize + 1];
        let small = b"VALUE = 2\n".to_vec();
        let mut keys = Vec::new();
        for bytes in [&large, &small] {
            let (first, key) = pending(bytes, &temp);
            place_object(&store, Some(&stage), first, &key, bytes.len() as u64).unwrap();
            // A second wheel with the same file finds it staged.
            let (again, _) = pending(bytes, &temp);
            place_object(&store, Some(&stage), again, &key, bytes.len() as u64).unwrap();
            assert!(!store.object_path(&key).exists(), "not in objects/ yet");
            assert_eq!(std::fs::read(stage.object_path(&key)).unwrap(), *bytes);
            keys.push((key, bytes));
        }
        stage.publish().unwrap();
        for (key, bytes) in keys {
            let object = store.object_path(&key);
            assert_eq!(std::fs::read(&object).unwrap(), *bytes);
            let mode = std::fs::metadata(&object).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o444);
        }
    }

    #[test]
    fn a_bad_file_name_keeps_the_parse_error_as_its_cause() {
        let err = inspect_archive(Cursor::new(Vec::new()), "not-a-wheel.zip")
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("`not-a-wheel.zip` is not a valid wheel file name: "),
            "{err}"
        );
        assert!(
            err.source()
                .is_some_and(|s| s.downcast_ref::<WheelFilenameError>().is_some())
        );
    }
}

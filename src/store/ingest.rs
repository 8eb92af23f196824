//! Wheel → store objects.
//!
//! A wheel is checked before anything of it counts: its file name, every entry
//! name (through [`safe_relative_path`]), no symlinks, `METADATA` agreeing with
//! the file name, where each file and launcher would land in a venv (a
//! `.data` scheme of the five, no `entry_points.txt` script name that is not
//! a plain file name, nothing on the venv's own `pyvenv.cfg`, interpreter or
//! activation scripts), and each file's sha256 agreeing with `RECORD`. Contents are
//! streamed out of the zip (in parallel over entries), hashed with blake3 and
//! sha256, and staged in the store's tmp directory; only when the whole wheel
//! checks out are new objects renamed into `objects/` (read-only) and the
//! distribution recorded in SQLite. A reader never sees a partial object.

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

use super::db::{FileRow, NewDistribution};
use super::wheel::{self, safe_relative_path};
use super::{Layout, ObjectKey, Store};

/// A wheel file on disk, verified against its lock entry by the caller.
pub struct WheelFile<'a> {
    pub path: &'a Path,
    /// The wheel's proper file name (the file on disk may be a temp name).
    pub filename: &'a str,
    /// Hex sha256 of the whole file.
    pub sha256: &'a str,
    pub size: u64,
    /// Where the wheel (or the sdist it was built from) was fetched.
    pub url: Option<&'a str>,
    /// sha256 of the sdist this wheel was built from, if tstore built it.
    pub built_from_sdist: Option<&'a str>,
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

/// Files of this size or less are hashed in memory; larger ones stream
/// through a staging file.
const IN_MEMORY_LIMIT: u64 = 4 << 20;

/// One zip entry after hashing.
struct HashedEntry {
    row: FileRow,
    /// Staged content for an object the store does not have yet.
    staged: Option<(PathBuf, ObjectKey)>,
}

/// Ingests `wheel` into `store` and returns its distribution id. Re-ingesting a
/// wheel with a known sha256 returns the existing record without reading it.
pub fn ingest_wheel(store: &Store, wheel: &WheelFile<'_>) -> Result<i64, IngestError> {
    if let Some(existing) = store.db.distribution_by_sha256(wheel.sha256)? {
        if let Some(sdist) = wheel.built_from_sdist {
            record_dist(
                store,
                wheel,
                &existing.name,
                &existing.version,
                "",
                &[],
                Some(sdist),
            )?;
        }
        return Ok(existing.id);
    }
    let file = File::open(wheel.path).map_err(|e| IngestError::Zip {
        wheel: wheel.filename.to_string(),
        entry: None,
        source: e.into(),
    })?;
    let Inspection {
        filename,
        file_indices,
        record,
        record_name,
    } = inspect_archive(ZipSource::new(file), wheel.filename)?;
    let recorded: HashMap<&str, &wheel::RecordEntry> =
        record.iter().map(|e| (e.path.as_str(), e)).collect();

    let staging = store.temp_path("ingest");
    fs_err::create_dir_all(&staging).context("cannot create a staging directory in the store")?;
    let result = hash_entries(
        store,
        wheel,
        &file_indices,
        &staging,
        &recorded,
        &record_name,
    );
    let outcome = result.and_then(|entries| {
        // Everything checked out: publish new objects, then record the wheel.
        for entry in &entries {
            if let Some((staged, key)) = &entry.staged {
                publish_object(store, staged, key)?;
            }
        }
        let rows: Vec<FileRow> = entries.into_iter().map(|e| e.row).collect();
        let tags = filename.to_string();
        let tags = tags
            .strip_suffix(".whl")
            .and_then(|stem| stem.splitn(3, '-').nth(2).map(str::to_string))
            .unwrap_or_default();
        record_dist(
            store,
            wheel,
            filename.name.as_ref(),
            &filename.version.to_string(),
            &tags,
            &rows,
            wheel.built_from_sdist,
        )
    });
    let _ = fs_err::remove_dir_all(&staging);
    outcome
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
    let filename = WheelFilename::from_str(wheel_name).map_err(|e| IngestError::Filename {
        wheel: wheel_name.to_string(),
        source: e,
    })?;
    let zip_error = |e: zip::result::ZipError| IngestError::Zip {
        wheel: wheel_name.to_string(),
        entry: None,
        source: e.into(),
    };
    let invalid = |message: String| IngestError::Invalid {
        wheel: wheel_name.to_string(),
        message,
    };
    let mut archive = ZipArchive::new(reader).map_err(zip_error)?;
    let (file_indices, names) = list_files(&mut archive, wheel_name)?;

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

fn record_dist(
    store: &Store,
    wheel: &WheelFile<'_>,
    name: &str,
    version: &str,
    tags: &str,
    rows: &[FileRow],
    built_from_sdist: Option<&str>,
) -> Result<i64, IngestError> {
    Ok(store.db.insert_distribution(
        &NewDistribution {
            name,
            version,
            filename: wheel.filename,
            sha256: wheel.sha256,
            size: wheel.size,
            tags,
            url: wheel.url,
            built_from_sdist,
        },
        rows,
    )?)
}

fn open_archive(path: &Path) -> Result<ZipArchive<ZipSource<File>>, zip::result::ZipError> {
    ZipArchive::new(ZipSource::new(File::open(path)?))
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

/// Hashes every file entry, in parallel; each worker opens its own archive.
fn hash_entries(
    store: &Store,
    wheel: &WheelFile<'_>,
    indices: &[usize],
    staging: &Path,
    recorded: &HashMap<&str, &wheel::RecordEntry>,
    record_name: &str,
) -> Result<Vec<HashedEntry>, IngestError> {
    let chunk = (indices.len() / (rayon::current_num_threads() * 4)).max(32);
    let chunks: Vec<Result<Vec<HashedEntry>, IngestError>> = indices
        .par_chunks(chunk)
        .map(|chunk| {
            let mut archive = open_archive(wheel.path).map_err(|e| IngestError::Zip {
                wheel: wheel.filename.to_string(),
                entry: None,
                source: e.into(),
            })?;
            chunk
                .iter()
                .map(|&index| {
                    hash_entry(
                        store,
                        wheel,
                        &mut archive,
                        index,
                        staging,
                        recorded,
                        record_name,
                    )
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

fn hash_entry(
    store: &Store,
    wheel: &WheelFile<'_>,
    archive: &mut ZipArchive<ZipSource<File>>,
    index: usize,
    staging: &Path,
    recorded: &HashMap<&str, &wheel::RecordEntry>,
    record_name: &str,
) -> Result<HashedEntry, IngestError> {
    let mut entry = archive.by_index(index).map_err(|e| IngestError::Zip {
        wheel: wheel.filename.to_string(),
        entry: None,
        source: e.into(),
    })?;
    let path = entry.name().to_string();
    let executable = entry.unix_mode().is_some_and(|m| m & 0o111 != 0);
    let declared = entry.size();
    let temp = staging.join(format!("{index}"));
    let streamed = stream_entry(&mut entry, declared, &temp).map_err(|err| match err {
        StreamError::Read(source) => IngestError::Zip {
            wheel: wheel.filename.to_string(),
            entry: Some(path.clone()),
            source: source.into(),
        },
        StreamError::Stage(err) => IngestError::Other(err),
    })?;
    if path != record_name
        && let Some(expected) = recorded.get(path.as_str())
    {
        let hash_ok = match &expected.hash {
            Some((algo, value)) if algo == "sha256" => *value == streamed.sha256,
            _ => true,
        };
        if !hash_ok || expected.size.is_some_and(|s| s != streamed.size) {
            return Err(IngestError::Invalid {
                wheel: wheel.filename.to_string(),
                message: format!(
                    "`{path}` does not match its RECORD hash or size (the wheel is corrupt)"
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
        return Ok(HashedEntry { row, staged: None });
    }
    let key = ObjectKey {
        hash: streamed.blake3,
        executable,
    };
    let have_object = fs_err::metadata(store.object_path(&key)).is_ok_and(|m| m.len() == row.size);
    let staged = stage(streamed.content, have_object, &temp)?.map(|temp| (temp, key));
    row.object = Some(key);
    Ok(HashedEntry { row, staged })
}

/// An entry's bytes, hashed as they streamed out of the archive.
struct Streamed {
    blake3: [u8; 32],
    /// urlsafe-base64 sha256, as RECORD writes it.
    sha256: String,
    size: u64,
    content: Content,
}

/// Where a streamed entry's bytes are: small ones in memory, large ones
/// spilled to a staging file as they streamed.
enum Content {
    InMemory(Vec<u8>),
    Spilled(std::io::BufWriter<File>),
}

enum StreamError {
    /// Reading the archive failed.
    Read(std::io::Error),
    /// Writing the staging file failed.
    Stage(anyhow::Error),
}

/// Reads an entry of `declared` size, hashing it with blake3 and sha256;
/// entries over [`IN_MEMORY_LIMIT`] go to `temp` as they are read.
fn stream_entry(
    entry: &mut impl Read,
    declared: u64,
    temp: &Path,
) -> Result<Streamed, StreamError> {
    let mut blake = blake3::Hasher::new();
    let mut sha = sha2::Sha256::new();
    // Sized by the entry (most are a few KiB): a zeroed 256 KiB per entry
    // was most of what a cold install spent in memset. A size the entry
    // lies about only changes how many reads it takes.
    let chunk = usize::try_from(declared)
        .map_or(256 << 10, |d| d.saturating_add(1).clamp(8 << 10, 256 << 10));
    let mut buffer = vec![0u8; chunk];
    let mut content = if declared > IN_MEMORY_LIMIT {
        let file = File::create(temp)
            .with_context(|| format!("cannot write {}", temp.display()))
            .map_err(StreamError::Stage)?;
        Content::Spilled(std::io::BufWriter::with_capacity(1 << 20, file))
    } else {
        // At most IN_MEMORY_LIMIT, so the declared size is safe to reserve.
        Content::InMemory(Vec::with_capacity(declared as usize))
    };
    let mut size = 0u64;
    loop {
        let n = entry.read(&mut buffer).map_err(StreamError::Read)?;
        if n == 0 {
            break;
        }
        let chunk = &buffer[..n];
        blake.update(chunk);
        sha.update(chunk);
        size += n as u64;
        match &mut content {
            Content::Spilled(writer) => writer
                .write_all(chunk)
                .with_context(|| format!("cannot write {}", temp.display()))
                .map_err(StreamError::Stage)?,
            Content::InMemory(bytes) => bytes.extend_from_slice(chunk),
        }
    }
    Ok(Streamed {
        blake3: *blake.finalize().as_bytes(),
        sha256: URL_SAFE_NO_PAD.encode(sha.finalize()),
        size,
        content,
    })
}

/// Leaves a new object's bytes staged at `temp`, returning it; when the
/// store already has the object, drops them.
fn stage(content: Content, have_object: bool, temp: &Path) -> anyhow::Result<Option<PathBuf>> {
    match content {
        Content::Spilled(writer) if have_object => {
            drop(writer);
            let _ = fs_err::remove_file(temp);
            Ok(None)
        }
        Content::InMemory(_) if have_object => Ok(None),
        Content::Spilled(writer) => {
            writer
                .into_inner()
                .map_err(std::io::IntoInnerError::into_error)
                .with_context(|| format!("cannot write {}", temp.display()))?;
            Ok(Some(temp.to_path_buf()))
        }
        Content::InMemory(bytes) => {
            fs_err::write(temp, &bytes).context("cannot stage an object")?;
            Ok(Some(temp.to_path_buf()))
        }
    }
}

/// Moves a staged file into `objects/` as a read-only object.
pub(crate) fn publish_object(store: &Layout, staged: &Path, key: &ObjectKey) -> anyhow::Result<()> {
    let mode = if key.executable { 0o555 } else { 0o444 };
    fs_err::set_permissions(staged, std::fs::Permissions::from_mode(mode))?;
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

    #[test]
    fn large_entries_stream_to_their_staging_file_and_are_dropped_if_the_store_has_them() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join("0");
        let bytes = vec![9u8; IN_MEMORY_LIMIT as usize + 1];
        let streamed = stream_entry(&mut Cursor::new(&bytes), bytes.len() as u64, &temp)
            .ok()
            .unwrap();
        assert_eq!(streamed.blake3, *blake3::hash(&bytes).as_bytes());
        assert_eq!(streamed.size, bytes.len() as u64);
        assert_eq!(
            stage(streamed.content, false, &temp).unwrap(),
            Some(temp.clone())
        );
        assert_eq!(std::fs::read(&temp).unwrap(), bytes);

        let again = stream_entry(&mut Cursor::new(&bytes), bytes.len() as u64, &temp)
            .ok()
            .unwrap();
        assert_eq!(stage(again.content, true, &temp).unwrap(), None);
        assert!(!temp.exists());
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

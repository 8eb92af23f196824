//! Deflated wheel entries, inflated with libdeflate: on tekton-data's
//! wheels that took half the time of the zip reader's streaming zlib-rs
//! (0.80 s against 1.53 s for the 326 MB of entries up to 4 MiB), and
//! inflating was 43 % of a cold install's CPU.
//!
//! libdeflate takes a whole stream and fills a whole output in one call.
//! An entry of up to [`INFLATE_WHOLE_LIMIT`] gets a buffer in memory while
//! [`INFLATING`] lasts. A larger one, or one the budget cannot take (the
//! shared libraries of PyTorch and CUDA, hundreds of MB each, streamed by
//! zlib-rs were 43 % of a cold tekton-ml install's CPU), is inflated
//! straight into its staging file, mapped, once the file's blocks are
//! reserved: a write into a mapping that meets a full disk is a SIGBUS,
//! not an error, so where [`platform::reserve_blocks`] cannot vouch for the
//! reservation the entry streams as before.
//!
//! Nothing here reports a damaged entry: whatever does not inflate to
//! exactly its declared size with its CRC-32 is left to the zip reader,
//! whose errors say what is wrong.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use memmap2::{Mmap, MmapMut};

use crate::budget::{MemoryBudget, Reserved};
use crate::platform;

/// Files of this size or less are hashed in memory; larger ones go through
/// a staging file.
pub(super) const IN_MEMORY_LIMIT: u64 = 4 << 20;

/// The most deflate can shrink: 258 bytes into about 2 bits.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// Entries larger than this are never given a buffer in memory.
const INFLATE_WHOLE_LIMIT: u64 = 32 << 20;

/// Bytes of entries larger than [`IN_MEMORY_LIMIT`] being inflated into
/// memory, for the whole process: every download ingests as it ends (16 at
/// once by default), and their large entries go to their files while this
/// is spent.
pub(super) static INFLATING: MemoryBudget = MemoryBudget::new(64 << 20);

/// A deflated, unencrypted entry: where its stream is in the wheel, and
/// what it inflates to.
pub(super) struct Deflated {
    start: u64,
    compressed_size: u64,
    pub size: u64,
    crc32: u32,
}

impl Deflated {
    /// `entry`'s stream, when it is deflated and not encrypted (the raw
    /// reader does not refuse an encrypted entry; the zip reader does).
    pub fn of(entry: &zip::read::ZipFile<'_, impl Read>) -> Option<Self> {
        (entry.compression() == zip::CompressionMethod::Deflated && !entry.encrypted()).then(|| {
            Self {
                start: entry.data_start(),
                compressed_size: entry.compressed_size(),
                size: entry.size(),
                crc32: entry.crc32(),
            }
        })
    }

    /// The stream's bytes within `wheel`, the whole archive; `None` when
    /// the directory points outside it.
    fn stream<'w>(&self, wheel: &'w [u8]) -> Option<&'w [u8]> {
        let start = usize::try_from(self.start).ok()?;
        let end = start.checked_add(usize::try_from(self.compressed_size).ok()?)?;
        wheel.get(start..end)
    }
}

/// Maps a wheel file for reading, for [`Inflater::inflate_into_file`];
/// `None` when it cannot be mapped (its large entries then stream).
///
/// Only tstore's own files may be mapped: its downloads and the wheels
/// `uv build` writes into its temp directory. A file cut short while
/// mapped would kill the process with SIGBUS.
pub(super) fn map_wheel(path: &Path) -> Option<Mmap> {
    let file = File::open(path).ok()?;
    // SAFETY: the file is one of tstore's own (see above), which nothing
    // truncates or writes while its wheel is ingested.
    unsafe { Mmap::map(&file) }.ok()
}

/// Inflates deflated entries with libdeflate; one per worker.
pub(super) struct Inflater {
    decompressor: libdeflater::Decompressor,
    /// What entries above [`IN_MEMORY_LIMIT`] take their buffer from.
    large: &'static MemoryBudget,
}

/// An entry inflated into memory; a large one counts against the
/// inflater's budget until this is dropped.
pub(super) struct Inflated {
    pub bytes: Vec<u8>,
    pub held: Option<Reserved<'static>>,
}

/// An entry inflated into its staging file, mapped until it is hashed.
pub(super) struct InflatedFile {
    map: MmapMut,
    file: File,
}

impl InflatedFile {
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The bytes' blake3, on several threads: the largest entries, hundreds
    /// of MB, are the last of a cold install to finish.
    pub fn blake3(&self) -> [u8; 32] {
        *blake3::Hasher::new()
            .update_rayon(&self.map)
            .finalize()
            .as_bytes()
    }

    /// The file, unmapped; its pages stay in the page cache until the
    /// kernel writes them back, as written ones would.
    pub fn into_file(self) -> File {
        drop(self.map);
        self.file
    }
}

impl Inflater {
    pub fn new(large: &'static MemoryBudget) -> Self {
        Self {
            decompressor: libdeflater::Decompressor::new(),
            large,
        }
    }

    /// The entry's bytes when it is deflated, of at most
    /// [`IN_MEMORY_LIMIT`] (or of at most [`INFLATE_WHOLE_LIMIT`] that fit
    /// the budget), and inflates to exactly its declared size with a
    /// matching CRC-32; `None` when any of that fails. Only reading the
    /// archive is an error here.
    pub fn inflate(
        &mut self,
        mut raw: zip::read::ZipFile<'_, impl Read>,
    ) -> std::io::Result<Option<Inflated>> {
        let Some(entry) = Deflated::of(&raw).filter(|e| e.size <= INFLATE_WHOLE_LIMIT) else {
            return Ok(None);
        };
        // A deflate stream of `size` bytes can be somewhat longer than
        // them, never 2x (stored blocks cost 5 bytes in 64 KiB).
        let compressed_size = entry.compressed_size.min(2 * entry.size + 64);
        // A large entry counts both its buffers until its bytes are placed.
        let held = if entry.size > IN_MEMORY_LIMIT {
            match self.large.take(entry.size + compressed_size) {
                Some(held) => Some(held),
                None => return Ok(None),
            }
        } else {
            None
        };
        let mut compressed = Vec::with_capacity(compressed_size as usize);
        (&mut raw)
            .take(compressed_size)
            .read_to_end(&mut compressed)?;
        let mut bytes = vec![0; entry.size as usize];
        let inflated = self
            .decompressor
            .deflate_decompress(&compressed, &mut bytes);
        Ok(match inflated {
            Ok(n) if n == bytes.len() && crc32fast::hash(&bytes) == entry.crc32 => {
                Some(Inflated { bytes, held })
            }
            _ => None,
        })
    }

    /// Inflates `entry`, a stream within `wheel` (the whole archive, in
    /// memory or mapped), into a new file at `temp`: see
    /// [`Self::inflate_stream_into_file`].
    pub fn inflate_into_file(
        &mut self,
        wheel: &[u8],
        entry: &Deflated,
        temp: &Path,
    ) -> std::io::Result<Option<InflatedFile>> {
        match entry.stream(wheel) {
            Some(stream) => self.inflate_stream_into_file(stream, entry.size, entry.crc32, temp),
            None => Ok(None),
        }
    }

    /// Inflates the deflate `stream` into a new file at `temp`,
    /// preallocated and mapped. `None`, with `temp` removed, when the
    /// blocks cannot be reserved or mapped, for whatever reason (a full disk,
    /// a quota, an entry that declares more than it holds: the zip reader
    /// then meets and names the real problem), or the stream does not
    /// inflate to exactly `size` bytes with the CRC-32 `crc32`. An error only
    /// when `temp` cannot be created.
    pub fn inflate_stream_into_file(
        &mut self,
        stream: &[u8],
        size: u64,
        crc32: u32,
        temp: &Path,
    ) -> std::io::Result<Option<InflatedFile>> {
        let Ok(length) = usize::try_from(size) else {
            return Ok(None);
        };
        // Deflate shrinks at most 1032:1, so a larger size is a lie; the
        // zip reader refuses it without reserving its blocks first.
        if length == 0 || size / MAX_DEFLATE_RATIO > stream.len() as u64 {
            return Ok(None);
        }
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(temp)?;
        // Removed on the way out unless the entry inflates: with it go the
        // blocks a failed fallocate got (ext4 keeps them).
        let unused = || -> std::io::Result<Option<InflatedFile>> {
            let _ = std::fs::remove_file(temp);
            Ok(None)
        };
        if !platform::reserve_blocks(&file, size).unwrap_or(false) {
            return unused();
        }
        // SAFETY: the file is new, in a staging directory only this process
        // writes, so nothing cuts it short while mapped, and its blocks are
        // reserved, so no write into the mapping meets a full disk.
        let Ok(mut map) = (unsafe { MmapMut::map_mut(&file) }) else {
            return unused();
        };
        let inflated = self.decompressor.deflate_decompress(stream, &mut map);
        if matches!(inflated, Ok(n) if n == length) && crc32fast::hash(&map) == crc32 {
            return Ok(Some(InflatedFile { map, file }));
        }
        unused()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::io::{Cursor, Write};

    use zip::ZipArchive;

    use super::*;

    /// The first entry of `wheel`, read raw, through a new inflater that
    /// takes large entries' buffers from `budget`.
    fn inflate_first_with(wheel: &[u8], budget: &'static MemoryBudget) -> Option<Vec<u8>> {
        let mut archive = ZipArchive::new(Cursor::new(wheel)).unwrap();
        Inflater::new(budget)
            .inflate(archive.by_index_raw(0).unwrap())
            .unwrap()
            .map(|inflated| inflated.bytes)
    }

    pub(in crate::store) fn inflate_first(wheel: &[u8]) -> Option<Vec<u8>> {
        static AMPLE: MemoryBudget = MemoryBudget::new(INFLATE_WHOLE_LIMIT);
        inflate_first_with(wheel, &AMPLE)
    }

    pub(in crate::store) fn one_entry_wheel(
        method: zip::CompressionMethod,
        text: &[u8],
    ) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default().compression_method(method);
        zip.start_file("demo/a.py", options).unwrap();
        zip.write_all(text).unwrap();
        zip.finish().unwrap().into_inner()
    }

    #[test]
    fn a_deflated_entry_is_inflated_whole_and_anything_else_left_to_the_zip_reader() {
        let text = b"VALUE = [1, 2, 3]\n".repeat(500);
        let deflated = one_entry_wheel(zip::CompressionMethod::Deflated, &text);
        assert_eq!(inflate_first(&deflated), Some(text.clone()));
        let stored = one_entry_wheel(zip::CompressionMethod::Stored, &text);
        assert_eq!(inflate_first(&stored), None);
        let empty = one_entry_wheel(zip::CompressionMethod::Deflated, b"");
        assert_eq!(inflate_first(&empty), Some(Vec::new()));
    }

    #[test]
    fn a_large_entry_is_inflated_whole_only_while_its_budget_lasts() {
        let large: Vec<u8> = (0..IN_MEMORY_LIMIT + 4096)
            .map(|i| (i % 251) as u8)
            .collect();
        let wheel = one_entry_wheel(zip::CompressionMethod::Deflated, &large);
        assert_eq!(inflate_first(&wheel), Some(large.clone()));
        // While another entry holds most of the budget, this one streams;
        // once that is placed, it is inflated whole again.
        static SHARED: MemoryBudget = MemoryBudget::new(2 * IN_MEMORY_LIMIT);
        let other = SHARED.take(IN_MEMORY_LIMIT).unwrap();
        assert_eq!(
            inflate_first_with(&wheel, &SHARED),
            None,
            "streamed instead"
        );
        drop(other);
        assert_eq!(inflate_first_with(&wheel, &SHARED), Some(large.clone()));
        assert_eq!(
            SHARED.available(),
            2 * IN_MEMORY_LIMIT,
            "released once read"
        );
        // Beyond the limit it streams whatever the budget.
        let huge = vec![7u8; INFLATE_WHOLE_LIMIT as usize + 1];
        let wheel = one_entry_wheel(zip::CompressionMethod::Deflated, &huge);
        assert_eq!(inflate_first(&wheel), None);
    }

    /// The first entry of `wheel`'s stream.
    fn first_entry(wheel: &[u8]) -> Deflated {
        let mut archive = ZipArchive::new(Cursor::new(wheel)).unwrap();
        Deflated::of(&archive.by_index_raw(0).unwrap()).unwrap()
    }

    #[test]
    fn a_large_entry_is_inflated_into_its_preallocated_file() {
        let data: Vec<u8> = (0..IN_MEMORY_LIMIT + 4096)
            .map(|i| (i % 251) as u8)
            .collect();
        let wheel = one_entry_wheel(zip::CompressionMethod::Deflated, &data);
        let (dir, reserves) = crate::platform::reserving_tempdir();
        let temp = dir.path().join("0");
        let inflated = Inflater::new(&INFLATING)
            .inflate_into_file(&wheel, &first_entry(&wheel), &temp)
            .unwrap();
        assert!(inflated.is_some() || !reserves, "a tmpfs reserves blocks");
        if let Some(inflated) = inflated {
            assert_eq!(inflated.bytes(), &data[..]);
            drop(inflated.into_file());
            assert_eq!(std::fs::read(&temp).unwrap(), data);
        }
    }

    #[test]
    fn an_entry_that_does_not_inflate_to_what_it_declares_is_left_to_the_stream() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("X{} = {}\n", i, i * 7919 % 1000).into_bytes())
            .collect();
        let wheel = one_entry_wheel(zip::CompressionMethod::Deflated, &data);
        let (dir, reserves) = crate::platform::reserving_tempdir();
        let temp = dir.path().join("0");
        let mut inflater = Inflater::new(&INFLATING);
        let mut inflate = |wheel: &[u8], entry: &Deflated| {
            inflater
                .inflate_into_file(wheel, entry, &temp)
                .unwrap()
                .map(|inflated| inflated.bytes().to_vec())
        };
        let good = first_entry(&wheel);
        let longer = Deflated {
            size: good.size + 1,
            ..first_entry(&wheel)
        };
        assert_eq!(inflate(&wheel, &longer), None, "shorter than declared");
        let shorter = Deflated {
            size: good.size - 1,
            ..first_entry(&wheel)
        };
        assert_eq!(inflate(&wheel, &shorter), None, "longer than declared");
        let elsewhere = Deflated {
            start: wheel.len() as u64,
            ..first_entry(&wheel)
        };
        assert_eq!(inflate(&wheel, &elsewhere), None, "outside the archive");
        let mut damaged = wheel.clone();
        damaged[good.start as usize + 1000] ^= 0x55;
        assert_eq!(inflate(&damaged, &good), None, "damaged");
        let whole = inflate(&wheel, &good);
        assert!(whole == Some(data) || !reserves, "the entry as it is");
    }
}

//! A wheel's large entries, inflated while the wheel downloads.
//!
//! A cold tekton-ml downloads 2.9 GiB of wheels, and the largest (PyTorch's,
//! CUDA's) finish downloading last: inflating their libraries once each
//! wheel was complete took the 6–11 s after the last byte arrived. A zip's
//! entries come one after the other, each behind a local header that gives
//! its compressed size and CRC-32, so each large entry can be inflated as
//! soon as its own bytes are in the file, while the rest still download.
//!
//! Nothing done here counts until the wheel checks out: the results are
//! taken by [`super::ingest`] only for an entry the central directory
//! describes exactly as its local header did (offset, name, sizes, CRC-32),
//! after the whole file matched the lock's sha256, and only where RECORD's
//! sha256 of the entry is taken as given (a pinned wheel); the rest of the
//! wheel's checks are the same as ever. Entries the local headers cannot
//! describe up front (a data descriptor, ZIP64 sizes, encryption) stop the
//! reading ahead, and ingest reads them as usual.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use memmap2::MmapOptions;

use super::inflate::{IN_MEMORY_LIMIT, INFLATING, Inflater};

const LOCAL_HEADER: u32 = 0x0403_4b50;
const LOCAL_HEADER_LEN: u64 = 30;
/// General purpose flags: encrypted, and sizes in a data descriptor.
const ENCRYPTED: u16 = 1;
const DATA_DESCRIPTOR: u16 = 1 << 3;
const DEFLATED: u16 = 8;

/// An entry inflated ahead, keyed in [`InflatedAhead`] by its local
/// header's offset.
pub(super) struct AheadEntry {
    pub name: Vec<u8>,
    pub compressed_size: u64,
    pub size: u64,
    pub crc32: u32,
    pub blake3: [u8; 32],
    /// Its staging file, holding exactly the inflated bytes.
    pub path: PathBuf,
    pub file: File,
}

/// What was inflated ahead of a wheel's ingest; its folder (and the files
/// no entry took) goes when this is dropped.
pub struct InflatedAhead {
    dir: PathBuf,
    entries: Mutex<HashMap<u64, AheadEntry>>,
    taken: AtomicUsize,
}

impl InflatedAhead {
    /// The entry inflated from `entry`'s local header, when it was inflated
    /// and the central directory describes it as that header did.
    pub(super) fn take(
        &self,
        entry: &zip::read::ZipFile<'_, impl std::io::Read>,
    ) -> Option<AheadEntry> {
        // Only large entries are inflated ahead: the others need no lock.
        if entry.size() <= IN_MEMORY_LIMIT {
            return None;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let taken = entries.remove(&entry.header_start())?;
        (taken.name == entry.name_raw()
            && entry.compression() == zip::CompressionMethod::Deflated
            && !entry.encrypted()
            && taken.compressed_size == entry.compressed_size()
            && taken.size == entry.size()
            && taken.crc32 == entry.crc32())
        .then(|| {
            self.taken.fetch_add(1, Ordering::Relaxed);
            taken
        })
    }

    /// How many entries ingest took.
    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::Relaxed)
    }

    /// How many entries are waiting to be taken.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for InflatedAhead {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How far the download is, as the worker sees it.
#[derive(Clone, Copy)]
enum Download {
    /// This many bytes are in the file.
    Writing(u64),
    /// The download ended, failed or is about to start over: the worker
    /// finishes the entry it is inflating and starts no other. Ingest
    /// inflates the rest on all its workers.
    Over,
}

struct Shared {
    download: Mutex<Download>,
    changed: Condvar,
    done: Mutex<HashMap<u64, AheadEntry>>,
}

impl Shared {
    /// Waits until `end` bytes are in the file; `false` when the download
    /// is over first.
    fn wait_for(&self, end: u64) -> bool {
        let mut download = self.download.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match *download {
                Download::Writing(written) if written >= end => return true,
                Download::Over => return false,
                Download::Writing(_) => {
                    download = self
                        .changed
                        .wait(download)
                        .unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }

    fn set(&self, to: Download) {
        *self.download.lock().unwrap_or_else(|e| e.into_inner()) = to;
        self.changed.notify_all();
    }
}

/// A worker inflating the large entries of a wheel being downloaded.
pub struct Ahead {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
    dir: PathBuf,
}

impl Ahead {
    /// Starts reading the wheel being written at `wheel` (one of tstore's
    /// own downloads: the worker maps parts of it), inflating its large
    /// entries into files in `dir`, which it creates.
    pub fn start(wheel: &Path, dir: PathBuf) -> std::io::Result<Self> {
        let file = File::open(wheel)?;
        std::fs::create_dir_all(&dir)?;
        let shared = Arc::new(Shared {
            download: Mutex::new(Download::Writing(0)),
            changed: Condvar::new(),
            done: Mutex::new(HashMap::new()),
        });
        let spawned = {
            let (shared, dir) = (shared.clone(), dir.clone());
            std::thread::Builder::new()
                .name("inflate-ahead".into())
                .spawn(move || read_ahead(&file, &dir, &shared))
        };
        let worker = spawned.inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&dir);
        })?;
        Ok(Self {
            shared,
            worker: Mutex::new(Some(worker)),
            dir,
        })
    }

    /// Waits for the worker to end.
    fn join(&self) {
        let worker = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(worker) = worker {
            let _ = worker.join();
        }
    }

    /// `total` bytes of the wheel are in its file.
    pub fn written(&self, total: u64) {
        self.shared.set(Download::Writing(total));
    }

    /// Stops the worker and waits for it, forgetting what it inflated: for
    /// a file about to be cut short and written again, parts of which the
    /// worker maps.
    pub fn stop(&self) {
        self.shared.set(Download::Over);
        self.join();
        // Their disk goes now: the retry may need it.
        let stale =
            std::mem::take(&mut *self.shared.done.lock().unwrap_or_else(|e| e.into_inner()));
        for entry in stale.into_values() {
            let _ = std::fs::remove_file(&entry.path);
        }
    }

    /// The download ended: waits for the entry in progress and gives what
    /// was inflated (nothing after a retry).
    pub fn finish(mut self) -> InflatedAhead {
        self.shared.set(Download::Over);
        self.join();
        let entries =
            std::mem::take(&mut *self.shared.done.lock().unwrap_or_else(|e| e.into_inner()));
        InflatedAhead {
            dir: std::mem::take(&mut self.dir),
            entries: Mutex::new(entries),
            taken: AtomicUsize::new(0),
        }
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.stop();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One local header, as far as reading ahead needs it.
struct LocalHeader {
    flags: u16,
    method: u16,
    crc32: u32,
    compressed_size: u64,
    size: u64,
    name: Vec<u8>,
    data_start: u64,
}

/// Reads the local header at `at` once its bytes are in; `None` at the
/// central directory, past the end, or when the worker is to stop.
fn local_header(file: &File, at: u64, shared: &Shared) -> Option<LocalHeader> {
    use std::os::unix::fs::FileExt;
    let mut fixed = [0u8; LOCAL_HEADER_LEN as usize];
    if !shared.wait_for(at + LOCAL_HEADER_LEN) {
        return None;
    }
    file.read_exact_at(&mut fixed, at).ok()?;
    let u16_at = |i: usize| u16::from_le_bytes([fixed[i], fixed[i + 1]]);
    let u32_at =
        |i: usize| u32::from_le_bytes([fixed[i], fixed[i + 1], fixed[i + 2], fixed[i + 3]]);
    if u32_at(0) != LOCAL_HEADER {
        return None;
    }
    let (name_len, extra_len) = (u64::from(u16_at(26)), u64::from(u16_at(28)));
    let data_start = at + LOCAL_HEADER_LEN + name_len + extra_len;
    if !shared.wait_for(data_start) {
        return None;
    }
    let mut name = vec![0u8; name_len as usize];
    file.read_exact_at(&mut name, at + LOCAL_HEADER_LEN).ok()?;
    Some(LocalHeader {
        flags: u16_at(6),
        method: u16_at(8),
        crc32: u32_at(14),
        compressed_size: u64::from(u32_at(18)),
        size: u64::from(u32_at(22)),
        name,
        data_start,
    })
}

impl LocalHeader {
    /// Whether the header alone says where the entry ends and what it
    /// inflates to (no data descriptor, no ZIP64 sizes, not encrypted).
    fn describes_its_entry(&self) -> bool {
        self.flags & (DATA_DESCRIPTOR | ENCRYPTED) == 0
            && self.compressed_size != u64::from(u32::MAX)
            && self.size != u64::from(u32::MAX)
    }
}

/// The worker: follows the local headers through the file as it grows and
/// inflates each large deflated entry once all its bytes are in. (Inflating
/// them as their bytes arrived, with zlib-rs, took more CPU and ended no
/// sooner: BENCHMARKS.md.)
fn read_ahead(file: &File, dir: &Path, shared: &Shared) {
    let mut inflater = Inflater::new(&INFLATING);
    let mut at = 0;
    while let Some(header) = local_header(file, at, shared) {
        if !header.describes_its_entry() {
            return;
        }
        let end = header.data_start + header.compressed_size;
        if header.method == DEFLATED && header.size > IN_MEMORY_LIMIT {
            if !shared.wait_for(end) {
                return;
            }
            match inflate_entry(file, dir, at, &header, &mut inflater) {
                Some(entry) => {
                    let mut done = shared.done.lock().unwrap_or_else(|e| e.into_inner());
                    done.insert(at, entry);
                }
                // Left to ingest, which reports what is wrong with it.
                None => return,
            }
        }
        at = end;
    }
}

/// Inflates the entry `header` (at `at`) from the file into `dir`.
fn inflate_entry(
    file: &File,
    dir: &Path,
    at: u64,
    header: &LocalHeader,
    inflater: &mut Inflater,
) -> Option<AheadEntry> {
    let len = usize::try_from(header.compressed_size).ok()?;
    // SAFETY: the file is tstore's own download, written only by the
    // thread that reports its progress here, and only cut short (on a
    // retry) after `Ahead::stop` has waited for this worker; the mapped
    // range lies within what was written.
    let stream = unsafe {
        MmapOptions::new()
            .offset(header.data_start)
            .len(len)
            .map(file)
    }
    .ok()?;
    let path = dir.join(format!("ahead-{at}"));
    let inflated = inflater
        .inflate_stream_into_file(&stream, header.size, header.crc32, &path)
        .ok()??;
    let blake3 = inflated.blake3();
    Some(AheadEntry {
        name: header.name.clone(),
        compressed_size: header.compressed_size,
        size: header.size,
        crc32: header.crc32,
        blake3,
        path,
        file: inflated.into_file(),
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Seek, Write};
    use std::time::{Duration, Instant};

    use zip::ZipArchive;
    use zip::write::SimpleFileOptions;

    use super::*;

    fn library(len: usize, step: usize) -> Vec<u8> {
        (0..len).map(|i| (i * step % 251) as u8).collect()
    }

    /// A wheel of a small file, two large deflated libraries (`pkg/liba.so`
    /// from `liba`) and a large stored file between them.
    fn wheel_with(liba: &[u8], stream: bool) -> Vec<u8> {
        let deflated =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        let stored =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        let entries: [(&str, Vec<u8>, SimpleFileOptions); 4] = [
            ("pkg/__init__.py", b"X = 1\n".to_vec(), deflated),
            ("pkg/liba.so", liba.to_vec(), deflated),
            ("pkg/stored.bin", library(5 << 20, 3), stored),
            ("pkg/libb.so", library(6 << 20, 7), deflated),
        ];
        if stream {
            // Written to a stream, sizes go in data descriptors.
            let mut zip = zip::ZipWriter::new_stream(Vec::new());
            for (name, bytes, options) in &entries {
                zip.start_file(*name, *options).unwrap();
                zip.write_all(bytes).unwrap();
            }
            return zip.finish().unwrap().into_inner();
        }
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, bytes, options) in &entries {
            zip.start_file(*name, *options).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    /// A worker beside an empty wheel file, in a folder where blocks can be
    /// reserved if there is one: the folder, whether they can, the file to
    /// write the wheel into, and the worker.
    fn started() -> (crate::platform::ScratchDir, bool, File, Ahead) {
        let (dir, reserves) = crate::platform::reserving_tempdir();
        let path = dir.path().join("w.whl");
        let file = File::create(&path).unwrap();
        let ahead = Ahead::start(&path, dir.path().join("ahead")).unwrap();
        (dir, reserves, file, ahead)
    }

    /// Writes `bytes[from..to]` to `file`, telling `ahead` as a download does.
    fn download(file: &mut File, ahead: &Ahead, bytes: &[u8], from: usize, to: usize) {
        for start in (from..to).step_by(64 << 10) {
            let end = (start + (64 << 10)).min(to);
            file.write_all(&bytes[start..end]).unwrap();
            ahead.written(end as u64);
        }
    }

    /// Waits until `count` entries are inflated, where blocks can be
    /// reserved (elsewhere none are).
    fn wait_for_inflated(ahead: &Ahead, count: usize, reserves: bool) {
        let started = Instant::now();
        while reserves && ahead.shared.done.lock().unwrap().len() < count {
            assert!(started.elapsed() < Duration::from_secs(20), "not inflated");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn large_entries_are_inflated_as_their_bytes_arrive_and_taken_where_the_directory_agrees() {
        let liba = library(5 << 20, 1);
        let wheel = wheel_with(&liba, false);
        let mut archive = ZipArchive::new(Cursor::new(&wheel)).unwrap();
        let (a_header, a_middle, a_ends) = {
            let a = archive.by_index_raw(1).unwrap();
            let ends = a.data_start() + a.compressed_size();
            (a.header_start(), (a.data_start() + ends) / 2, ends as usize)
        };
        let (dir, reserves, mut file, ahead) = started();

        download(&mut file, &ahead, &wheel, 0, a_middle as usize);
        assert!(
            !dir.path().join(format!("ahead/ahead-{a_header}")).exists(),
            "nothing inflated before all its bytes are in"
        );
        download(&mut file, &ahead, &wheel, a_middle as usize, a_ends);
        // liba.so is inflated before the rest of the wheel arrives.
        wait_for_inflated(&ahead, 1, reserves);
        download(&mut file, &ahead, &wheel, a_ends, wheel.len());
        // libb.so may be all in by the time the worker comes to it: then
        // it is inflated whole, which needs its blocks reserved.
        wait_for_inflated(&ahead, 2, reserves);
        let inflated = ahead.finish();
        if !reserves {
            return;
        }
        assert_eq!(inflated.len(), 2, "the two deflated libraries");
        let libb = library(6 << 20, 7);
        for (index, content) in [(0, None), (1, Some(&liba)), (2, None), (3, Some(&libb))] {
            let raw = archive.by_index_raw(index).unwrap();
            let taken = inflated.take(&raw);
            assert_eq!(taken.is_some(), content.is_some(), "{}", raw.name());
            if let (Some(taken), Some(content)) = (taken, content) {
                assert_eq!(&std::fs::read(&taken.path).unwrap(), content);
                assert_eq!(taken.blake3, *blake3::hash(content).as_bytes());
            }
        }
        assert!(inflated.is_empty(), "each is taken once");
        drop(inflated);
        assert!(
            !dir.path().join("ahead").exists(),
            "its folder goes with it"
        );
    }

    #[test]
    fn entries_already_in_the_file_are_inflated_whole() {
        let liba = library(5 << 20, 1);
        let wheel = wheel_with(&liba, false);
        let (_dir, reserves, mut file, ahead) = started();
        file.write_all(&wheel).unwrap();
        ahead.written(wheel.len() as u64);
        wait_for_inflated(&ahead, 2, reserves);
        let inflated = ahead.finish();
        let mut archive = ZipArchive::new(Cursor::new(&wheel)).unwrap();
        let raw = archive.by_index_raw(1).unwrap();
        if let Some(taken) = inflated.take(&raw) {
            assert_eq!(std::fs::read(&taken.path).unwrap(), liba);
            assert_eq!(taken.blake3, *blake3::hash(&liba).as_bytes());
        } else {
            assert!(!reserves, "inflated where blocks can be reserved");
        }
    }

    #[test]
    fn an_entry_the_directory_describes_otherwise_is_not_taken() {
        let wheel = wheel_with(&library(5 << 20, 1), false);
        // The same layout, but liba.so's bytes (so its CRC-32) differ.
        let other = wheel_with(&library(5 << 20, 2), false);
        let (_dir, reserves, mut file, ahead) = started();
        download(&mut file, &ahead, &wheel, 0, wheel.len());
        wait_for_inflated(&ahead, 2, reserves);
        let inflated = ahead.finish();
        let mut archive = ZipArchive::new(Cursor::new(&other)).unwrap();
        let raw = archive.by_index_raw(1).unwrap();
        assert!(inflated.take(&raw).is_none());
        assert_eq!(inflated.len(), usize::from(reserves), "libb.so is left");
    }

    /// Waits for the worker to end on its own (at the central directory,
    /// or at a header it cannot follow).
    fn wait_for_the_worker(ahead: &Ahead) {
        let started = Instant::now();
        while !ahead
            .worker
            .lock()
            .unwrap()
            .as_ref()
            .is_none_or(|worker| worker.is_finished())
        {
            assert!(started.elapsed() < Duration::from_secs(20), "still running");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_local_header_that_does_not_give_its_sizes_ends_the_reading_ahead() {
        let wheel = wheel_with(&library(5 << 20, 1), false);
        let mut archive = ZipArchive::new(Cursor::new(&wheel)).unwrap();
        let mut header_of = |index| archive.by_index_raw(index).unwrap().header_start() as usize;
        let (liba, stored) = (header_of(1), header_of(2));
        // (what a local header is made to say, which header, where in it, the
        // bytes, how many libraries are inflated)
        let cases: [(&str, usize, usize, &[u8], usize); 5] = [
            ("as written", liba, 6, &[], 2),
            ("sizes in a data descriptor", liba, 6, &[0x08, 0x00], 0),
            ("encrypted", liba, 6, &[0x01, 0x00], 0),
            ("ZIP64 compressed size", liba, 18, &[0xff; 4], 0),
            // Past it, libb.so would be inflated.
            ("ZIP64 size", stored, 22, &[0xff; 4], 1),
        ];
        for (what, header, offset, patch, inflated) in cases {
            let mut patched = wheel.clone();
            let at = header + offset;
            patched[at..at + patch.len()].copy_from_slice(patch);
            let (_dir, reserves, mut file, ahead) = started();
            file.write_all(&patched).unwrap();
            ahead.written(patched.len() as u64);
            wait_for_the_worker(&ahead);
            let expected = if reserves { inflated } else { 0 };
            assert_eq!(ahead.finish().len(), expected, "{what}");
        }
    }

    #[test]
    fn a_download_started_over_keeps_nothing_inflated_before() {
        let wheel = wheel_with(&library(5 << 20, 1), false);
        let (dir, reserves, mut file, ahead) = started();
        download(&mut file, &ahead, &wheel, 0, wheel.len() - 100);
        wait_for_inflated(&ahead, 2, reserves);
        let inflated_files = || std::fs::read_dir(dir.path().join("ahead")).unwrap().count();
        assert_eq!(inflated_files(), if reserves { 2 } else { 0 });
        ahead.stop();
        assert_eq!(inflated_files(), 0, "their disk is given back at once");
        // A retry empties the file and writes it again; nothing reads it now.
        file.set_len(0).unwrap();
        file.seek(std::io::SeekFrom::Start(0)).unwrap();
        download(&mut file, &ahead, &wheel, 0, wheel.len());
        assert!(ahead.finish().is_empty());
    }

    #[test]
    fn a_download_cut_short_stops_the_worker() {
        let wheel = wheel_with(&library(5 << 20, 1), false);
        let (_dir, _, mut file, ahead) = started();
        download(&mut file, &ahead, &wheel, 0, 1000);
        // The server closed early: the worker must not wait for bytes that
        // never come.
        let inflated = ahead.finish();
        assert!(inflated.is_empty());
    }
}

//! A pack: some objects of the store as one tar + zstd stream, the unit a
//! remote store holds (one per distribution, one per distribution and
//! bytecode tag).
//!
//! ```text
//! objects/<key>     every object, sorted by key, each once
//! ```
//!
//! Headers are fixed (mtime 0, uid 0, mode 0644) as in an export, so the
//! same objects make the same bytes. A pack is described by a [`PackRef`]
//! (the blake3 and size of its compressed bytes) and read against the list
//! of objects it must hold: every object is hashed and sized on arrival and
//! kept in the store's tmp (or in place in a [`Stage`]) until the whole pack
//! has proved itself, so a pack that is damaged anywhere adds nothing to
//! the store.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::{Incoming, ObjectMismatch, Verified};
use crate::progress::Progress;
use crate::store::Store;
use crate::store::stage::Stage;

/// A pack's identity: the blake3 and size of its compressed bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRef {
    pub blake3: String,
    pub size: u64,
}

/// Writes the pack of `objects` (key → size) from `store` to `out`.
pub fn write(
    store: &Store,
    objects: &BTreeMap<String, u64>,
    out: &Path,
) -> anyhow::Result<PackRef> {
    let file = fs_err::File::create(out)?;
    let hashing = HashingWriter {
        inner: std::io::BufWriter::new(file),
        hasher: blake3::Hasher::new(),
        size: 0,
    };
    let encoder = zstd::Encoder::new(hashing, super::archive::ZSTD_LEVEL)?;
    let mut tar = tar::Builder::new(encoder);
    for (key, size) in objects {
        let parsed = super::parse_key(key)?;
        let mut file = fs_err::File::open(store.object_path(&parsed))
            .with_context(|| format!("the store lacks object {key}: run `tstore verify`"))?;
        super::archive::append_entry(&mut tar, &format!("objects/{key}"), *size, &mut file)?;
    }
    let mut hashing = tar.into_inner()?.finish()?;
    hashing.inner.flush()?;
    Ok(PackRef {
        blake3: hashing.hasher.finalize().to_hex().to_string(),
        size: hashing.size,
    })
}

struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Objects of a pack that proved themselves, not yet in the store.
#[derive(Default)]
pub struct Received {
    verified: Vec<Verified>,
    /// Objects the store already had.
    pub present: usize,
    /// Size of the objects that are new.
    pub bytes_new: u64,
}

impl Received {
    /// Objects that are new to the store.
    pub fn new_objects(&self) -> usize {
        self.verified.len()
    }

    /// Moves the new objects into the store, or into `stage` for the
    /// shards it holds (the stage's own publish moves them on). Returns
    /// how many were new there: an object another pack staged first is not.
    pub fn publish(self, store: &Store, stage: Option<&Stage>) -> anyhow::Result<usize> {
        let mut new = 0;
        for object in self.verified {
            new += usize::from(object.publish_to(store, stage)?);
        }
        Ok(new)
    }
}

/// Reads a pack from `reader`, which must be the pack `pack` holding
/// exactly `objects` (key → size), writing new objects of the shards
/// `stage` holds in place there. `what` names it in errors.
pub fn read(
    store: &Store,
    stage: Option<&Stage>,
    reader: impl Read,
    pack: &PackRef,
    objects: &BTreeMap<String, u64>,
    what: &str,
    progress: &dyn Progress,
) -> anyhow::Result<Received> {
    let hashing = HashingReader {
        inner: reader,
        hasher: blake3::Hasher::new(),
        size: 0,
        limit: pack.size,
        progress,
    };
    let decoder = zstd::Decoder::new(hashing).with_context(|| format!("{what}: not zstd"))?;
    let mut archive = tar::Archive::new(decoder);
    let mut received = Received::default();
    let mut seen = HashSet::new();
    // One buffer per pack: a zeroed one per object cost more than reading
    // the small ones.
    let mut buf = vec![0u8; 64 * 1024];
    let entries = archive
        .entries()
        .with_context(|| format!("{what} is damaged"))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("{what} is damaged"))?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let Some(key) = name.strip_prefix("objects/") else {
            bail!("{what} holds `{name}`, which is not an object");
        };
        let Some(&size) = objects.get(key) else {
            bail!("{what} holds object {key}, which its record does not list");
        };
        if !seen.insert(key.to_string()) {
            bail!("{what} holds object {key} twice");
        }
        let Some(mut incoming) =
            Incoming::start_in(store, stage, key, size, &format!("{what}: {key}"))?
        else {
            std::io::copy(&mut entry, &mut std::io::sink())?;
            received.present += 1;
            continue;
        };
        loop {
            let n = entry
                .read(&mut buf)
                .with_context(|| format!("{what} is damaged"))?;
            if n == 0 {
                break;
            }
            incoming.write(&buf[..n])?;
        }
        received.verified.push(incoming.verify()?);
        received.bytes_new += size;
    }
    if seen.len() != objects.len() {
        bail!(
            "{what} ends before {} of the objects its record lists (truncated?)",
            objects.len() - seen.len()
        );
    }
    // The rest of the stream (tar padding, the end of the zstd frame) is
    // part of the pack's hash.
    let mut decoder = archive.into_inner();
    std::io::copy(&mut decoder, &mut std::io::sink())
        .with_context(|| format!("{what} is damaged"))?;
    let mut rest = decoder.finish();
    std::io::copy(&mut rest, &mut std::io::sink()).with_context(|| format!("{what} is damaged"))?;
    let hashing = rest.into_inner();
    if hashing.size != pack.size {
        return Err(ObjectMismatch {
            what: what.to_string(),
            key: pack.blake3.clone(),
            problem: format!(
                "{} bytes arrived, {} were expected",
                hashing.size, pack.size
            ),
        }
        .into());
    }
    if hashing.hasher.finalize().to_hex().as_str() != pack.blake3 {
        return Err(ObjectMismatch {
            what: what.to_string(),
            key: pack.blake3.clone(),
            problem: "its content hashes to something else".into(),
        }
        .into());
    }
    Ok(received)
}

/// Hashes and counts what passes, refusing more than `limit` bytes.
struct HashingReader<'a, R> {
    inner: R,
    hasher: blake3::Hasher,
    size: u64,
    limit: u64,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.size += n as u64;
        if self.size > self.limit {
            return Err(std::io::Error::other(format!(
                "more than the {} bytes its record gives arrived",
                self.limit
            )));
        }
        self.hasher.update(&buf[..n]);
        self.progress.bytes(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;

    fn stored(store: &Store, content: &[u8]) -> (String, u64) {
        let key = crate::store::ObjectKey {
            hash: *blake3::hash(content).as_bytes(),
            executable: false,
        }
        .to_string();
        super::super::receive_bytes(store, None, &key, content, "test").unwrap();
        (key, content.len() as u64)
    }

    #[test]
    fn a_pack_round_trips_and_a_changed_byte_adds_nothing() {
        let home = tempfile::tempdir().unwrap();
        let from = Store::open(&home.path().join("a")).unwrap();
        let objects: BTreeMap<String, u64> =
            [stored(&from, b"one"), stored(&from, &vec![7u8; 100_000])]
                .into_iter()
                .collect();
        let out = home.path().join("p.tar.zst");
        let pack = write(&from, &objects, &out).unwrap();
        let again = write(&from, &objects, &home.path().join("q.tar.zst")).unwrap();
        assert_eq!(pack, again, "same objects, same pack");
        let bytes = std::fs::read(&out).unwrap();

        let to = Store::open(&home.path().join("b")).unwrap();
        let path_of = |key: &str| to.object_path(&crate::store::ObjectKey::parse(key).unwrap());
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(read(&to, None, damaged.as_slice(), &pack, &objects, "p", &Silent).is_err());
        assert!(objects.keys().all(|k| !path_of(k).exists()));

        let got = read(&to, None, bytes.as_slice(), &pack, &objects, "p", &Silent).unwrap();
        assert_eq!((got.new_objects(), got.present), (2, 0));
        assert_eq!(got.publish(&to, None).unwrap(), 2);
        assert!(objects.keys().all(|k| path_of(k).exists()));
        let got = read(&to, None, bytes.as_slice(), &pack, &objects, "p", &Silent).unwrap();
        assert_eq!((got.new_objects(), got.present), (0, 2));
    }

    #[test]
    fn an_object_two_packs_carry_into_one_stage_is_new_once() {
        let home = tempfile::tempdir().unwrap();
        let from = Store::open(&home.path().join("a")).unwrap();
        let shared = stored(&from, b"in both packs");
        let first: BTreeMap<String, u64> = [shared.clone(), stored(&from, b"only in the first")]
            .into_iter()
            .collect();
        let second: BTreeMap<String, u64> = [shared, stored(&from, b"only in the second")]
            .into_iter()
            .collect();
        let (one, two) = (home.path().join("1.tar.zst"), home.path().join("2.tar.zst"));
        let (pack_one, pack_two) = (
            write(&from, &first, &one).unwrap(),
            write(&from, &second, &two).unwrap(),
        );

        let to = Store::open(&home.path().join("b")).unwrap();
        let stage = crate::store::stage::Stage::begin(&to).unwrap();
        let read_pack = |path: &std::path::Path, pack: &PackRef, objects| {
            let bytes = std::fs::read(path).unwrap();
            read(
                &to,
                Some(&stage),
                bytes.as_slice(),
                pack,
                objects,
                "p",
                &Silent,
            )
            .unwrap()
        };
        let got_one = read_pack(&one, &pack_one, &first);
        let got_two = read_pack(&two, &pack_two, &second);
        assert_eq!((got_one.new_objects(), got_two.new_objects()), (2, 2));
        assert_eq!(got_one.publish(&to, Some(&stage)).unwrap(), 2);
        assert_eq!(
            got_two.publish(&to, Some(&stage)).unwrap(),
            1,
            "the shared object was staged by the first pack"
        );
        stage.publish().unwrap();
        let path_of = |key: &str| to.object_path(&crate::store::ObjectKey::parse(key).unwrap());
        assert!(
            first
                .keys()
                .chain(second.keys())
                .all(|k| path_of(k).exists())
        );
    }
}

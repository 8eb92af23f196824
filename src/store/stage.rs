//! Many new objects at once (an import, a pull into a new store), published
//! a shard at a time instead of an object at a time.
//!
//! ```text
//! tmp/stage-<pid>-<suffix>/ab/<key>   objects of shard `ab`, written in place,
//!                                     read-only from their creation
//! ```
//!
//! A [`Stage`] covers the shards of `objects/` that held no object when it
//! began. Objects of those shards are written straight to their final name
//! inside the stage (no temp name, no rename each, and no chmod each where
//! the stage's folder keeps the mode a file is created with), and
//! [`Stage::publish`] moves each staged shard over the store's empty one with
//! one `rename(2)`: 256 renames for a whole store instead of one per object.
//!
//! Why this is safe:
//!
//! - kill -9: until its shard is renamed, an object lives in `tmp/` under
//!   this process's pid, which the next open removes; a renamed shard holds
//!   only objects that matched their key (a writer that fails a check removes
//!   its file first). Objects without records are what an interrupted
//!   per-object publish leaves too: gc removes them, a rerun reuses them.
//! - another process publishing into the same store: `rename(2)` replaces a
//!   directory only while it is empty, so a shard that gained an object
//!   meanwhile is never replaced or hidden; the rename fails and that shard's
//!   objects are published one by one. A publisher whose rename raced ours
//!   into the replaced (removed) directory sees `ENOENT` and retries
//!   ([`super::ingest::publish_object`]).
//!
//! A store with staging turned off ([`Store::set_staging`], the binary's
//! `TSTORE_NO_STAGING`) publishes every object on its own, as a store that
//! is already full would (for comparisons, and for filesystems whose rename
//! misbehaves).

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;

use super::{ObjectKey, Store};
use crate::fsinfo::{DIR_MODE, create_dir_all_with_mode};

/// Staged shards of one store, removed with whatever they still hold when
/// dropped.
pub struct Stage {
    dir: PathBuf,
    objects: PathBuf,
    /// Per first byte of a key: whether that shard is staged.
    staged: [bool; 256],
    /// Why an object whose name was taken could not be written (see
    /// [`Stage::abandon`]): the stage is then never published.
    broken: Mutex<Option<std::io::Error>>,
    /// Whether a file created in the stage gets exactly the mode it is
    /// created with (probed when it began: no umask bit and no default ACL
    /// narrows it), so [`Stage::create`] needs no chmod after.
    exact_modes: bool,
}

/// What [`Stage::publish`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// Shards moved into the store whole.
    pub shards: usize,
    /// Objects of shards that another process wrote into meanwhile, moved
    /// one by one.
    pub one_by_one: usize,
}

impl Stage {
    /// Stages every shard of `store` that holds no object now.
    pub fn begin(store: &Store) -> anyhow::Result<Self> {
        let mut stage = Self {
            dir: store.temp_path("stage"),
            objects: store.objects_dir(),
            staged: [false; 256],
            broken: Mutex::new(None),
            exact_modes: false,
        };
        if !store.stages_new_shards() {
            return Ok(stage);
        }
        for byte in 0..=255u8 {
            let shard = store.object_shard(byte);
            let empty = match std::fs::read_dir(&shard) {
                Ok(mut entries) => entries.next().is_none(),
                Err(err) if err.kind() == ErrorKind::NotFound => true,
                Err(err) => {
                    return Err(err).with_context(|| format!("cannot list {}", shard.display()));
                }
            };
            if empty {
                let staged = stage.shard(byte);
                create_dir_all_with_mode(&staged, DIR_MODE)
                    .context("cannot stage objects in the store's tmp folder")?;
                stage.staged[byte as usize] = true;
            }
        }
        if stage.shards() > 0 {
            stage.exact_modes = creates_exact_modes(&stage.dir);
        }
        Ok(stage)
    }

    /// Whether `key`'s object is written into the stage.
    pub fn holds(&self, key: &ObjectKey) -> bool {
        self.staged[key.hash[0] as usize]
    }

    /// How many shards are staged.
    pub fn shards(&self) -> usize {
        self.staged.iter().filter(|s| **s).count()
    }

    fn shard(&self, byte: u8) -> PathBuf {
        self.dir.join(format!("{byte:02x}"))
    }

    /// Where `key`'s object goes in the stage.
    pub fn object_path(&self, key: &ObjectKey) -> PathBuf {
        self.shard(key.hash[0]).join(key.to_string())
    }

    /// Creates `key`'s object in the stage, read-only from the start (the
    /// returned handle may still write it); `None` when the stage has it
    /// already (another writer of this run). The caller removes the file
    /// if its content turns out not to match the key.
    pub fn create(&self, key: &ObjectKey) -> anyhow::Result<Option<File>> {
        let path = self.object_path(key);
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(key.mode())
            .open(&path);
        match created {
            Ok(file) if self.exact_modes => Ok(Some(file)),
            // Set again through the file: the mode given to open is
            // narrowed by the umask or a default ACL, and `verify` expects
            // exactly this one.
            Ok(file) => match file.set_permissions(std::fs::Permissions::from_mode(key.mode())) {
                Ok(()) => Ok(Some(file)),
                Err(err) => {
                    let _ = std::fs::remove_file(&path);
                    Err(err).with_context(|| format!("cannot make {} read-only", path.display()))
                }
            },
            Err(err) if err.kind() == ErrorKind::AlreadyExists => Ok(None),
            Err(err) => Err(err).with_context(|| format!("cannot write {}", path.display())),
        }
    }

    /// Removes `key`'s object after writing it failed with `err`. A writer
    /// of this run that found its name taken ([`Stage::create`] gave
    /// `None`) counts on that object, so from here the stage is never
    /// published: [`Stage::publish`] fails with `err` (its io kind kept, so
    /// a full disk is still recognised), and nothing of the run moves in.
    pub fn abandon(&self, key: &ObjectKey, err: &anyhow::Error) {
        let _ = std::fs::remove_file(self.object_path(key));
        let kind = err
            .chain()
            .find_map(|cause| cause.downcast_ref::<std::io::Error>())
            .map_or(ErrorKind::Other, std::io::Error::kind);
        let mut broken = self.broken.lock().unwrap_or_else(|e| e.into_inner());
        broken.get_or_insert_with(|| std::io::Error::new(kind, format!("{err:#}")));
    }

    /// Moves a finished object from `temp` into the stage, unless the stage
    /// has it by now; returns whether it moved.
    pub fn adopt(&self, temp: &Path, key: &ObjectKey) -> anyhow::Result<bool> {
        let target = self.object_path(key);
        if target.exists() {
            let _ = std::fs::remove_file(temp);
            return Ok(false);
        }
        fs_err::set_permissions(temp, std::fs::Permissions::from_mode(key.mode()))?;
        fs_err::rename(temp, &target).context("cannot stage an object")?;
        Ok(true)
    }

    /// Moves every staged shard that holds objects into the store: whole
    /// over the store's empty shard, else object by object. Refuses, moving
    /// nothing, once an object was abandoned.
    pub fn publish(self) -> anyhow::Result<Published> {
        let broken = self.broken.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(err) = broken {
            return Err(anyhow::Error::new(err).context(
                "an object of this run could not be written, and other wheels may count on it; \
                 nothing of this run was moved into the store",
            ));
        }
        let mut published = Published::default();
        for byte in 0..=255u8 {
            if !self.staged[byte as usize] {
                continue;
            }
            let staged = self.shard(byte);
            let Ok(mut entries) = std::fs::read_dir(&staged) else {
                continue;
            };
            if entries.next().is_none() {
                continue;
            }
            let target = self.objects.join(format!("{byte:02x}"));
            match std::fs::rename(&staged, &target) {
                Ok(()) => published.shards += 1,
                Err(err) if is_not_empty(&err) => {
                    published.one_by_one += publish_each(&staged, &target)?;
                }
                Err(err) => {
                    return Err(err).with_context(|| {
                        format!("cannot move {} to {}", staged.display(), target.display())
                    });
                }
            }
        }
        Ok(published)
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        // What is left was refused or not published; the next open removes
        // it if this fails.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The store's shard is no longer empty (Linux says ENOTEMPTY, POSIX
/// allows EEXIST).
fn is_not_empty(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::DirectoryNotEmpty | ErrorKind::AlreadyExists
    )
}

/// Moves each object of `staged` into `target`, keeping the store's copy of
/// an object it has (venvs may link that inode). Returns how many moved.
fn publish_each(staged: &Path, target: &Path) -> anyhow::Result<usize> {
    let mut moved = 0;
    for entry in fs_err::read_dir(staged)? {
        let entry = entry?;
        let destination = target.join(entry.file_name());
        if destination.exists() {
            continue;
        }
        fs_err::rename(entry.path(), &destination)
            .context("cannot move an object into the store")?;
        moved += 1;
    }
    Ok(moved)
}

/// Whether a file created in `dir` (the stage, whose shards inherit its
/// ACL; a shard itself is published, the probe must not be) gets exactly
/// the mode it is created with, for both modes an object has: a file of
/// each is created and its mode read back. Not only a umask or a POSIX
/// default ACL changes it (they narrow); inherited
/// NFSv4 or ZFS ACL entries may set bits, so 0444 is probed too. The chmod
/// this lets [`Stage::create`] skip was one system call per object (about
/// 24,000 of a cold tekton-dev's 29,717). Anything unexpected answers no,
/// keeping the chmod.
fn creates_exact_modes(dir: &Path) -> bool {
    [0o444, 0o555].into_iter().all(|mode| {
        let probe = dir.join(format!(".mode-probe-{mode:o}"));
        let exact = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&probe)
            .and_then(|file| file.metadata())
            .is_ok_and(|meta| meta.permissions().mode() & 0o7777 == mode);
        let _ = std::fs::remove_file(&probe);
        exact
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(first: u8, n: u8) -> ObjectKey {
        let mut hash = [n; 32];
        hash[0] = first;
        ObjectKey {
            hash,
            executable: false,
        }
    }

    fn stage_object(stage: &Stage, key: &ObjectKey) {
        use std::io::Write;
        stage
            .create(key)
            .unwrap()
            .expect("new")
            .write_all(b"x")
            .unwrap();
    }

    #[test]
    fn a_stage_with_an_abandoned_object_moves_nothing_in() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path()).unwrap();
        let stage = Stage::begin(&store).unwrap();
        stage_object(&stage, &key(0x00, 1));
        let shared = key(0x01, 1);
        let _writing = stage.create(&shared).unwrap().expect("new");
        // Another wheel finds the name taken and counts on the object.
        assert!(stage.create(&shared).unwrap().is_none());
        let full = anyhow::Error::new(std::io::Error::from(ErrorKind::StorageFull))
            .context("cannot write the object");
        stage.abandon(&shared, &full);

        let err = stage.publish().unwrap_err();
        let io = err
            .chain()
            .find_map(|cause| cause.downcast_ref::<std::io::Error>())
            .expect("an io error on the chain");
        assert_eq!(io.kind(), ErrorKind::StorageFull, "{err:#}");
        assert!(
            format!("{err:#}").contains("cannot write the object"),
            "{err:#}"
        );
        assert!(
            !store.object_path(&key(0x00, 1)).exists(),
            "nothing moved in"
        );
    }

    #[test]
    fn empty_shards_move_whole_and_a_shard_that_filled_meanwhile_is_kept() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path()).unwrap();
        std::fs::write(store.object_path(&key(0x01, 1)), b"old").unwrap();

        let stage = Stage::begin(&store).unwrap();
        assert!(
            !stage.holds(&key(0x01, 2)),
            "a shard with objects is not staged"
        );
        assert_eq!(stage.shards(), 255);
        for k in [key(0x00, 1), key(0x00, 2), key(0x02, 1)] {
            stage_object(&stage, &k);
        }
        assert!(stage.create(&key(0x00, 1)).unwrap().is_none());
        // Another process publishes into shard 02 before this one does.
        std::fs::write(store.object_path(&key(0x02, 9)), b"theirs").unwrap();
        let dir = stage.dir.clone();

        let published = stage.publish().unwrap();
        assert_eq!(
            published,
            Published {
                shards: 1,
                one_by_one: 1
            }
        );
        for k in [key(0x00, 1), key(0x00, 2), key(0x02, 1), key(0x02, 9)] {
            assert!(store.object_path(&k).is_file(), "{k}");
        }
        assert!(!dir.exists(), "the stage is removed");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(store.object_path(&key(0x00, 1)))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o444);
    }
}

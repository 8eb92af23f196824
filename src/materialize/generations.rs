//! Generations of a tier's venv.
//!
//! Each materialize that changes a tier builds a complete venv in
//! `<parent>/.tstore-generations/<name>/<N>`; the tier's own path (say
//! `~/venvs/tekton-ai`) is a relative symlink to the current generation,
//! replaced by `rename(2)` so it switches atomically. Launchers, activation
//! scripts and `pyvenv.cfg` name the stable path, and Python keeps
//! `sys.prefix` at the path it was started through, so running programs and
//! new ones keep working across a switch or a rollback.
//!
//! Each generation keeps the lock it was built from: a copy of the lock
//! file's bytes in the store (`lock-snapshots/<sha256>.toml`, named in the
//! generation's record), which `rollback` puts back at the tier's lock path
//! so that venv and lock agree again.
//!
//! `.tstore-generations/<name>/.use-order` lists the generation numbers in
//! the order they were last put in use (built or switched to), most recent
//! last; pruning keeps the most recently used ones.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha2::Digest;

use super::venv;
use crate::store::Store;
use crate::store::db::GenerationRow;

/// The file in a tier's generations directory that records the order in
/// which generations were put in use.
const USE_ORDER: &str = ".use-order";

/// Where a tier's generations live, and its stable path.
pub struct Generations {
    pub target: PathBuf,
    pub dir: PathBuf,
    name: String,
}

impl Generations {
    pub fn of(target: &Path) -> anyhow::Result<Self> {
        let parent = target
            .parent()
            .context("a venv path needs a parent directory")?;
        let name = target
            .file_name()
            .context("a venv path needs a name")?
            .to_string_lossy()
            .into_owned();
        Ok(Self {
            target: target.to_path_buf(),
            dir: parent.join(".tstore-generations").join(&name),
            name,
        })
    }

    pub fn path(&self, number: i64) -> PathBuf {
        self.dir.join(number.to_string())
    }

    /// A fresh directory name to build generation `number` in.
    pub fn staging(&self, number: i64) -> PathBuf {
        self.dir.join(format!(
            ".staging-{number}-{}-{}",
            std::process::id(),
            crate::store::unique_suffix()
        ))
    }

    /// The generation the tier's path points at, if it is one of ours.
    pub fn current(&self) -> Option<i64> {
        let link = std::fs::read_link(&self.target).ok()?;
        let expected_parent = Path::new(".tstore-generations").join(&self.name);
        if link.parent()? != expected_parent {
            return None;
        }
        link.file_name()?.to_str()?.parse().ok()
    }

    /// Generation numbers that exist as directories.
    pub fn on_disk(&self) -> Vec<i64> {
        let mut numbers: Vec<i64> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        numbers.sort_unstable();
        numbers
    }

    /// One more than any generation recorded or on disk.
    pub fn next_number(&self, recorded: impl IntoIterator<Item = i64>) -> i64 {
        recorded
            .into_iter()
            .chain(self.on_disk())
            .max()
            .unwrap_or(0)
            + 1
    }

    /// Refuses to replace something at the tier's path that tstore did not make.
    pub fn check_replaceable(&self, force: bool) -> anyhow::Result<()> {
        let target = &self.target;
        let Ok(meta) = fs_err::symlink_metadata(target) else {
            return Ok(());
        };
        if meta.file_type().is_symlink() {
            if self.current().is_some() || force {
                return Ok(());
            }
            bail!(
                "{} is a symlink tstore did not make; remove it, or pass --force to replace the link \
                 (what it points to is left alone)",
                target.display()
            );
        }
        if !meta.is_dir() {
            bail!(
                "{} exists and is not a directory; move it away or set the tier's `venv` in tiers.toml",
                target.display()
            );
        }
        if venv::recorded_plan(target).is_some() || force {
            return Ok(());
        }
        if target.join("pyvenv.cfg").is_file() {
            bail!(
                "{} is a venv tstore did not make; replacing it would lose it. Move it away, or pass \
                 --force to replace it",
                target.display()
            );
        }
        bail!(
            "{} exists and is not a venv; move it away or set the tier's `venv` in tiers.toml",
            target.display()
        )
    }

    /// Points the tier's path at generation `number`, atomically.
    pub fn switch_to(&self, number: i64) -> anyhow::Result<()> {
        let parent = self
            .target
            .parent()
            .context("a venv path needs a parent directory")?;
        let link = parent.join(format!(
            ".{}.tstore-link-{}-{}",
            self.name,
            std::process::id(),
            crate::store::unique_suffix()
        ));
        let relative = Path::new(".tstore-generations")
            .join(&self.name)
            .join(number.to_string());
        std::os::unix::fs::symlink(&relative, &link)
            .with_context(|| format!("cannot create {}", link.display()))?;
        let result = match fs_err::symlink_metadata(&self.target) {
            Ok(meta) if meta.is_dir() => replace_directory(&link, &self.target),
            _ => fs_err::rename(&link, &self.target).map_err(Into::into),
        };
        if result.is_err() {
            let _ = fs_err::remove_file(&link);
        }
        result?;
        self.record_use(number).with_context(|| {
            format!(
                "{} points at generation {number}, but {} could not be updated",
                self.target.display(),
                self.dir.join(USE_ORDER).display()
            )
        })
    }

    /// Generation numbers in the order they were last put in use, most
    /// recent last (empty for generations made before this was recorded).
    pub fn use_order(&self) -> Vec<i64> {
        std::fs::read_to_string(self.dir.join(USE_ORDER))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }

    /// Moves `number` to the end of the use order (temp + rename); numbers
    /// whose directory is gone are dropped.
    fn record_use(&self, number: i64) -> anyhow::Result<()> {
        let on_disk = self.on_disk();
        let mut order: Vec<i64> = self
            .use_order()
            .into_iter()
            .filter(|n| *n != number && on_disk.contains(n))
            .collect();
        order.push(number);
        let text: String = order.iter().map(|n| format!("{n}\n")).collect();
        let temp = self.dir.join(format!(
            "{USE_ORDER}.tmp-{}-{}",
            std::process::id(),
            crate::store::unique_suffix()
        ));
        write_then_rename(&temp, text.as_bytes(), None, &self.dir.join(USE_ORDER))
    }

    /// Removes staging directories and link files left by dead processes.
    pub fn remove_stale(&self) {
        let alive = |pid: &str| crate::store::process_alive(pid.parse().unwrap_or(0));
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix(".staging-") {
                let pid = rest.split('-').nth(1).unwrap_or("");
                if !alive(pid) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            } else if let Some(rest) = name.strip_prefix(&format!("{USE_ORDER}.tmp-"))
                && !alive(rest.split('-').next().unwrap_or(""))
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let Some(parent) = self.target.parent() else {
            return;
        };
        let prefix = format!(".{}.tstore-link-", self.name);
        for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix(&prefix)
                && !alive(rest.split('-').next().unwrap_or(""))
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Which of the `recorded` generation numbers to keep: the `keep` (at
    /// least 1) most recently put in use, and the current one whatever the
    /// use order says. So after a rollback to N and a new generation on top,
    /// N (in use until then) outlives the generation rolled back from.
    /// Generations the use order does not name count as used before every
    /// one it names, the higher number the more recent.
    pub fn kept(&self, recorded: &[i64], keep: usize) -> Vec<i64> {
        let order = self.use_order();
        let mut most_recent_first = recorded.to_vec();
        most_recent_first
            .sort_unstable_by_key(|n| std::cmp::Reverse((order.iter().position(|u| u == n), *n)));
        let mut kept: Vec<i64> = most_recent_first.into_iter().take(keep.max(1)).collect();
        if let Some(current) = self.current()
            && !kept.contains(&current)
        {
            kept.push(current);
        }
        kept
    }

    /// Deletes the generations [`Self::kept`] does not keep.
    pub fn prune(&self, store: &Store, keep: usize) -> anyhow::Result<Vec<i64>> {
        let venv = self.target.display().to_string();
        let numbers: Vec<i64> = store
            .db
            .generations(&venv)?
            .iter()
            .map(|g| g.number)
            .collect();
        let kept = self.kept(&numbers, keep);
        let mut removed = Vec::new();
        for number in numbers {
            if kept.contains(&number) {
                continue;
            }
            // Forget it first: a directory left by a crash is found by gc,
            // a record without a directory would be a root that is not there.
            store.db.delete_generation(&venv, number)?;
            let path = self.path(number);
            if path.exists() {
                fs_err::remove_dir_all(&path)?;
            }
            removed.push(number);
        }
        Ok(removed)
    }

    /// Removes the tier's path (if ours) and every generation.
    pub fn remove_all(&self) -> anyhow::Result<()> {
        match fs_err::symlink_metadata(&self.target) {
            Ok(meta) if meta.file_type().is_symlink() && self.current().is_some() => {
                fs_err::remove_file(&self.target)?
            }
            Ok(meta) if meta.is_dir() && venv::recorded_plan(&self.target).is_some() => {
                fs_err::remove_dir_all(&self.target)?
            }
            Ok(_) => bail!(
                "{} is not a venv tstore made; leaving it alone",
                self.target.display()
            ),
            Err(_) => {}
        }
        if self.dir.exists() {
            fs_err::remove_dir_all(&self.dir)?;
        }
        Ok(())
    }
}

/// Puts the symlink `link` where the directory `target` is, then deletes the
/// directory: in one step where the kernel can exchange two paths.
fn replace_directory(link: &Path, target: &Path) -> anyhow::Result<()> {
    if venv::exchange(link, target)? {
        // `link`'s name now holds the old directory.
        fs_err::remove_dir_all(link)?;
        return Ok(());
    }
    let old = target.with_extension(format!("tstore-old-{}", std::process::id()));
    fs_err::rename(target, &old)?;
    if let Err(err) = fs_err::rename(link, target) {
        let _ = fs_err::rename(&old, target);
        return Err(err.into());
    }
    fs_err::remove_dir_all(&old)?;
    Ok(())
}

/// What a rollback did.
#[derive(Debug, Clone)]
pub struct Rollback {
    pub from: i64,
    pub to: i64,
    pub lock: LockRestore,
}

/// What became of the tier's lock file in a rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockRestore {
    /// It now holds the lock the generation was built from.
    Restored,
    /// It held those bytes already.
    Unchanged,
    /// It was left alone, for this reason.
    Unavailable(String),
}

/// Points the tier at generation `to` (default: the newest one older than
/// the current) and puts the lock that generation was built from back at
/// `lock_path`, so that the next `materialize` finds the tier up to date.
/// The lock is written first; if the switch then fails, its old bytes go
/// back.
pub fn rollback(
    store: &Store,
    target: &Path,
    to: Option<i64>,
    lock_path: &Path,
) -> anyhow::Result<Rollback> {
    let generations = Generations::of(target)?;
    let _guard =
        crate::store::FileLock::acquire(&store.lock_file(&target.display().to_string()), || {})?;
    let current = generations
        .current()
        .with_context(|| format!("{} is not a materialized tier", target.display()))?;
    let kept: Vec<GenerationRow> = store
        .db
        .generations(&target.display().to_string())?
        .into_iter()
        .filter(|g| generations.path(g.number).is_dir())
        .collect();
    let numbers: Vec<i64> = kept.iter().map(|g| g.number).collect();
    let to = match to {
        Some(n) if numbers.contains(&n) => n,
        Some(n) => bail!(
            "generation {n} of {} is not kept; kept generations: {}",
            target.display(),
            join_numbers(&numbers)
        ),
        None => numbers
            .iter()
            .copied()
            .filter(|n| *n < current)
            .max()
            .with_context(|| {
                format!(
                    "{} has no generation older than {current} to roll back to (kept: {})",
                    target.display(),
                    join_numbers(&numbers)
                )
            })?,
    };
    let row = kept
        .iter()
        .find(|g| g.number == to)
        .expect("`to` is one of the kept generations");
    let previous_lock = std::fs::read(lock_path).ok();
    let lock = match lock_snapshot(store, row) {
        Err(reason) => LockRestore::Unavailable(reason),
        Ok(bytes) if previous_lock.as_ref() == Some(&bytes) => LockRestore::Unchanged,
        Ok(bytes) => {
            write_beside(lock_path, &bytes)?;
            LockRestore::Restored
        }
    };
    if let Err(err) = generations.switch_to(to) {
        if lock == LockRestore::Restored {
            let _ = match &previous_lock {
                Some(bytes) => write_beside(lock_path, bytes),
                None => fs_err::remove_file(lock_path).map_err(Into::into),
            };
        }
        return Err(err);
    }
    store.db.set_current(&target.display().to_string(), to)?;
    Ok(Rollback {
        from: current,
        to,
        lock,
    })
}

/// Saves a lock file's bytes as the snapshot a new generation keeps
/// (`lock-snapshots/<sha256>.toml`, read-only, temp + rename; an existing
/// snapshot of the right size is kept). Returns its path, which the
/// generation's record names.
pub fn save_lock_snapshot(store: &Store, lock: &[u8]) -> anyhow::Result<PathBuf> {
    let path = store.lock_snapshot_path(&hex::encode(sha2::Sha256::digest(lock)));
    if fs_err::metadata(&path).is_ok_and(|m| m.len() == lock.len() as u64) {
        return Ok(path);
    }
    if let Some(dir) = path.parent() {
        crate::fsinfo::create_dir_all_with_mode(dir, crate::fsinfo::DIR_MODE)?;
    }
    // A prefix without '-': temp names are <prefix>-<pid>-<suffix>, and
    // gc finds a dead writer's leftovers by that pid.
    write_then_rename(&store.temp_path("snapshot"), lock, Some(0o444), &path)?;
    Ok(path)
}

/// The bytes of the lock generation `row` was built from, checked against
/// the snapshot's name; else why they cannot be had. The snapshot is looked
/// up by name in this store, so a moved store still finds it.
fn lock_snapshot(store: &Store, row: &GenerationRow) -> Result<Vec<u8>, String> {
    let recorded = Path::new(&row.lock);
    let sha256 = recorded
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|stem| {
            recorded.parent().and_then(Path::file_name) == Some("lock-snapshots".as_ref())
                && stem.len() == 64
                && stem.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .ok_or_else(|| {
            format!(
                "generation {} was built before tstore kept each generation's lock",
                row.number
            )
        })?;
    let path = store.lock_snapshot_path(sha256);
    let bytes = std::fs::read(&path).map_err(|err| {
        format!(
            "the lock generation {} was built from cannot be read ({}: {err})",
            row.number,
            path.display()
        )
    })?;
    if hex::encode(sha2::Sha256::digest(&bytes)) != sha256 {
        return Err(format!(
            "the lock generation {} was built from is damaged ({} does not match its name)",
            row.number,
            path.display()
        ));
    }
    Ok(bytes)
}

/// Replaces the file at `path` with `bytes`: a temp file in the same
/// directory, renamed over it.
fn write_beside(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = dir.join(format!(
        ".{}.tstore-{}-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        crate::store::unique_suffix()
    ));
    write_then_rename(&temp, bytes, None, path)
}

/// Writes `bytes` to `temp` (with `mode`, if given) and renames it to
/// `path`; on failure the temp file is removed.
fn write_then_rename(
    temp: &Path,
    bytes: &[u8],
    mode: Option<u32>,
    path: &Path,
) -> anyhow::Result<()> {
    let result = (|| -> anyhow::Result<()> {
        crate::fsinfo::write_with_mode(temp, bytes, mode.unwrap_or(crate::fsinfo::FILE_MODE))?;
        fs_err::rename(temp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(temp);
    }
    result
}

/// Deletes a tier's venv path, every generation and its records; the
/// objects it alone used go at the next gc.
pub fn remove(store: &Store, target: &Path) -> anyhow::Result<()> {
    let generations = Generations::of(target)?;
    let _guard =
        crate::store::FileLock::acquire(&store.lock_file(&target.display().to_string()), || {})?;
    generations.remove_all()?;
    store.db.remove_tier(&target.display().to_string())?;
    Ok(())
}

fn join_numbers(numbers: &[i64]) -> String {
    if numbers.is_empty() {
        return "none".into();
    }
    numbers
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The generation a tier's path points at, with its record.
pub fn current_record(
    store: &Store,
    target: &Path,
) -> anyhow::Result<crate::store::db::GenerationRow> {
    let number = Generations::of(target)?.current().with_context(|| {
        format!(
            "{} does not point at a tstore generation: run `tstore materialize` for it",
            target.display()
        )
    })?;
    store
        .db
        .generations(&target.display().to_string())?
        .into_iter()
        .find(|g| g.number == number)
        .with_context(|| {
            format!(
                "the store has no record of generation {number} of {}",
                target.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generations 1..=4 on disk, `t` pointing at `current`.
    fn four(current: i64) -> (tempfile::TempDir, Generations) {
        let dir = tempfile::tempdir().unwrap();
        let generations = Generations::of(&dir.path().join("t")).unwrap();
        for n in 1..=4 {
            fs_err::create_dir_all(generations.path(n)).unwrap();
        }
        generations.switch_to(current).unwrap();
        (dir, generations)
    }

    #[test]
    fn without_a_use_order_the_newest_are_kept() {
        let (_dir, generations) = four(2);
        fs_err::remove_file(generations.dir.join(USE_ORDER)).unwrap();
        assert_eq!(generations.kept(&[1, 2, 3, 4], 2), [4, 3, 2]);
        assert_eq!(generations.kept(&[1, 2, 3, 4], 0), [4, 2]);
    }

    #[test]
    fn the_most_recently_used_are_kept() {
        // Built 1..4 in turn, then rolled back to 2, then forward to 4.
        let (_dir, generations) = four(1);
        for n in [2, 3, 4, 2] {
            generations.switch_to(n).unwrap();
        }
        assert_eq!(generations.use_order(), [1, 3, 4, 2]);
        assert_eq!(generations.kept(&[1, 2, 3, 4], 2), [2, 4]);
        generations.switch_to(4).unwrap();
        assert_eq!(generations.kept(&[1, 2, 3, 4], 2), [4, 2]);
        assert_eq!(generations.kept(&[1, 2, 3, 4], 3), [4, 2, 3]);
        // A number the order does not know counts as older than those it does.
        assert_eq!(generations.kept(&[1, 2, 3, 4, 0], 5), [4, 2, 3, 1, 0]);
    }

    #[test]
    fn the_use_order_forgets_generations_that_are_gone() {
        let (_dir, generations) = four(1);
        generations.switch_to(3).unwrap();
        fs_err::remove_dir_all(generations.path(1)).unwrap();
        generations.switch_to(2).unwrap();
        assert_eq!(generations.use_order(), [3, 2]);
    }
}

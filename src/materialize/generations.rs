//! Generations of a tier's venv.
//!
//! Each materialize that changes a tier builds a complete venv in
//! `<parent>/.tstore-generations/<name>/<N>`; the tier's own path (say
//! `~/venvs/tekton-ai`) is a relative symlink to the current generation,
//! replaced by `rename(2)` so it switches atomically. Launchers, activation
//! scripts and `pyvenv.cfg` name the stable path, and Python keeps
//! `sys.prefix` at the path it was started through, so running programs and
//! new ones keep working across a switch or a rollback.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::venv;
use crate::store::Store;

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
        result
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

    /// Deletes the oldest generations beyond `keep` (never the current one).
    /// Which of the `recorded` generation numbers to keep: the newest
    /// `keep` (at least 1), and the current one even if a rollback made it older.
    pub fn kept(&self, recorded: &[i64], keep: usize) -> Vec<i64> {
        let mut newest_first = recorded.to_vec();
        newest_first.sort_unstable_by(|a, b| b.cmp(a));
        let mut kept: Vec<i64> = newest_first.into_iter().take(keep.max(1)).collect();
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

/// Points the tier at generation `to` (default: the newest one older than
/// the current); returns (from, to).
pub fn rollback(store: &Store, target: &Path, to: Option<i64>) -> anyhow::Result<(i64, i64)> {
    let generations = Generations::of(target)?;
    let _guard =
        crate::store::FileLock::acquire(&store.lock_file(&target.display().to_string()), || {})?;
    let current = generations
        .current()
        .with_context(|| format!("{} is not a materialized tier", target.display()))?;
    let kept: Vec<i64> = store
        .db
        .generations(&target.display().to_string())?
        .iter()
        .map(|g| g.number)
        .filter(|n| generations.path(*n).is_dir())
        .collect();
    let to = match to {
        Some(n) if kept.contains(&n) => n,
        Some(n) => bail!(
            "generation {n} of {} is not kept; kept generations: {}",
            target.display(),
            join_numbers(&kept)
        ),
        None => kept
            .iter()
            .copied()
            .filter(|n| *n < current)
            .max()
            .with_context(|| {
                format!(
                    "{} has no generation older than {current} to roll back to (kept: {})",
                    target.display(),
                    join_numbers(&kept)
                )
            })?,
    };
    generations.switch_to(to)?;
    store.db.set_current(&target.display().to_string(), to)?;
    Ok((current, to))
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

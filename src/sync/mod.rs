//! Bringing tiers up to date, the job every front end shares (`tstore
//! materialize`, `run`, `fetch`, `--into`, export, the benches):
//!
//! ```text
//! lock (or reuse) ─► inputs unchanged since the venv was built? done, without uv
//!   ─► select for the interpreter ─► --hash check ─► pull from the remote
//!   ─► fetch the rest ─► closure check ─► materialize
//! ```
//!
//! [`Workspace`] holds what the steps share; each call returns a report and
//! leaves printing to its caller. Notices that belong to the job (a venv
//! built from another tiers.toml, an unusable remote) go through
//! [`Progress::notice`].

mod locks;
mod transfer;
mod workspace;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::{LinkMode, Tier};
use crate::fetch::{self, FetchOptions, Fetched};
use crate::interpreter::Interpreter;
use crate::lock::TierLock;
use crate::lock::changes::{self, VersionChange};
use crate::materialize::{self, BuildReport, MaterializeOptions, Outcome, TierInput};
use crate::progress::{Progress, timed};
use crate::store::bytecode::Compiler;
use crate::transfer::remote::TransferReport;

pub use locks::LockRules;
pub use transfer::{TiersNeed, bytecode_tag};
pub use workspace::{Selection, Workspace};

/// How to sync.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncOptions {
    pub locks: LockRules,
    /// `None`: the configuration's `link-mode`.
    pub link_mode: Option<LinkMode>,
    /// Replace a venv at the target that tstore did not make.
    pub force: bool,
}

/// Where a tier's distributions came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchFigures {
    /// Distributions the lock selects.
    pub distributions: usize,
    pub downloaded: usize,
    /// Bytes downloaded from the index.
    pub bytes: u64,
    /// Built from source (sdists, local projects).
    pub built: usize,
    /// From the remote store.
    pub pulled: usize,
    /// In the store before this run.
    pub already_stored: usize,
}

/// A fetched tier (`tstore fetch`).
#[derive(Debug, Clone)]
pub struct FetchedTier {
    pub tier: String,
    pub figures: FetchFigures,
}

/// What syncing one tier did.
#[derive(Debug, Clone)]
pub enum TierOutcome {
    /// The venv was built from exactly these inputs: nothing was fetched.
    Unchanged,
    /// Fetched and planned; the venv already held that plan.
    UpToDate,
    /// A kept generation had this plan already; the tier's path now points at it.
    Switched {
        generation: i64,
    },
    Built(BuildReport),
}

/// One tier of a [`SyncReport`].
#[derive(Debug, Clone)]
pub struct TierReport {
    pub tier: String,
    pub venv: PathBuf,
    pub outcome: TierOutcome,
    /// From the start of the tier's lock to the end of its materialize.
    pub elapsed: Duration,
    /// `None` when the tier was [`TierOutcome::Unchanged`].
    pub fetched: Option<FetchFigures>,
    /// Versions against the previous generation (empty unless the venv changed).
    pub changes: Vec<VersionChange>,
}

impl TierReport {
    /// Whether the tier's path now holds something else than before.
    pub fn changed(&self) -> bool {
        matches!(
            self.outcome,
            TierOutcome::Switched { .. } | TierOutcome::Built(_)
        )
    }
}

#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub tiers: Vec<TierReport>,
}

/// `--into DIR`: a standalone venv.
#[derive(Debug, Clone)]
pub struct IntoReport {
    pub venv: PathBuf,
    pub build: BuildReport,
}

/// What one tier needs, fetched into the store and checked.
struct TierFetch {
    interpreter: Rc<Interpreter>,
    lock_path: PathBuf,
    fetched: Vec<Fetched>,
    figures: FetchFigures,
    /// Compiling the bytecode of what was downloaded, begun during the fetch.
    compiler: Option<Compiler>,
}

impl Workspace {
    /// Brings `tiers` up to date: locks, then each tier in turn. `done`
    /// sees each tier's report as soon as it is finished, so a caller can
    /// print it before the next tier starts.
    pub fn sync(
        &self,
        tiers: &[&Tier],
        options: &SyncOptions,
        progress: &dyn Progress,
        done: &mut dyn FnMut(&TierReport),
    ) -> anyhow::Result<SyncReport> {
        let _store = self.share_store(progress)?;
        let locks = self.ensure_locks(tiers, options.locks, progress)?;
        let materialize_options = MaterializeOptions {
            link_mode: options.link_mode.unwrap_or(self.config.link_mode),
            force: options.force,
            keep_generations: self.config.keep_generations,
        };
        // Only with a remote and several tiers: the no-op path stays one
        // inputs check per tier.
        if !options.locks.offline && self.has_remote() && tiers.len() > 1 {
            let building = tiers
                .iter()
                .copied()
                .filter(|tier| !self.unchanged(tier, materialize_options.link_mode))
                .collect::<Vec<_>>();
            self.pull_ahead(&building, progress);
        }
        let mut report = SyncReport::default();
        for &tier in tiers {
            let started = started_with_lock(&locks, tier);
            let tier_report =
                self.sync_tier(tier, started, options.locks, &materialize_options, progress)?;
            done(&tier_report);
            report.tiers.push(tier_report);
        }
        Ok(report)
    }

    /// Fetches what `tiers` need into the store, without materializing.
    /// `done` sees each tier as soon as it is fetched.
    pub fn fetch(
        &self,
        tiers: &[&Tier],
        rules: LockRules,
        progress: &dyn Progress,
        done: &mut dyn FnMut(&FetchedTier),
    ) -> anyhow::Result<Vec<FetchedTier>> {
        let _store = self.share_store(progress)?;
        self.ensure_locks(tiers, rules, progress)?;
        if !rules.offline {
            self.pull_ahead(tiers, progress);
        }
        let mut out = Vec::new();
        for &tier in tiers {
            let fetched = FetchedTier {
                tier: tier.name.clone(),
                figures: self
                    .fetch_tier(tier, rules.offline, false, progress)?
                    .figures,
            };
            done(&fetched);
            out.push(fetched);
        }
        Ok(out)
    }

    /// Builds `tier` as a standalone venv at `dir`: no generations, no
    /// record in the store.
    pub fn sync_into(
        &self,
        tier: &Tier,
        dir: &Path,
        options: &SyncOptions,
        progress: &dyn Progress,
    ) -> anyhow::Result<IntoReport> {
        let _store = self.share_store(progress)?;
        self.ensure_locks(&[tier], options.locks, progress)?;
        let mut standalone = tier.clone();
        standalone.venv = std::path::absolute(dir)
            .with_context(|| format!("cannot use {} as a venv path", dir.display()))?;
        // Read and found first: between the fetch and materializing (which
        // records the wheels the fetch left unrecorded) nothing may fail.
        let lock_bytes = fs_err::read(self.lock_path(&tier.name))?;
        let uv = self.uv(progress)?;
        let fetch = self.fetch_tier(tier, options.locks.offline, true, progress)?;
        let build = materialize::materialize_into(
            &TierInput {
                inputs_key: String::new(),
                store: &self.store,
                uv,
                interpreter: &fetch.interpreter,
                tier: &standalone,
                config_label: self.config.source.to_string(),
                lock_path: &fetch.lock_path,
                lock_bytes: &lock_bytes,
                fetched: &fetch.fetched,
                compiling: fetch.compiler.as_ref(),
            },
            &MaterializeOptions {
                link_mode: options.link_mode.unwrap_or(self.config.link_mode),
                force: options.force,
                keep_generations: 1,
            },
            progress,
        )?;
        Ok(IntoReport {
            venv: standalone.venv,
            build,
        })
    }

    /// One tier, its lock made: skipped when its inputs are unchanged, else
    /// fetched and materialized.
    fn sync_tier(
        &self,
        tier: &Tier,
        started: Instant,
        rules: LockRules,
        options: &MaterializeOptions,
        progress: &dyn Progress,
    ) -> anyhow::Result<TierReport> {
        let (lock_bytes, inputs_key) = self.inputs_key(tier, options.link_mode)?;
        if materialize::is_unchanged(&tier.venv, &inputs_key) {
            return Ok(TierReport {
                tier: tier.name.clone(),
                venv: tier.venv.clone(),
                outcome: TierOutcome::Unchanged,
                elapsed: started.elapsed(),
                fetched: None,
                changes: Vec::new(),
            });
        }
        // Found first: between the fetch and materialize (which records
        // the wheels the fetch left unrecorded) nothing may fail.
        let uv = self.uv(progress)?;
        let fetch = timed(progress, "interpreter, lock and store check", || {
            self.fetch_tier(tier, rules.offline, true, progress)
        })?;
        self.warn_if_built_from_another_config(tier, progress);
        let before = self.installed_versions(tier);
        let outcome = materialize::materialize(
            &TierInput {
                inputs_key,
                store: &self.store,
                uv,
                interpreter: &fetch.interpreter,
                tier,
                config_label: self.config.source.to_string(),
                lock_path: &fetch.lock_path,
                lock_bytes: &lock_bytes,
                fetched: &fetch.fetched,
                compiling: fetch.compiler.as_ref(),
            },
            options,
            progress,
        )?;
        let elapsed = started.elapsed();
        let (venv, outcome) = match outcome {
            Outcome::UpToDate { venv } => (venv, TierOutcome::UpToDate),
            Outcome::Switched { venv, generation } => (venv, TierOutcome::Switched { generation }),
            Outcome::Built(build) => (build.venv.clone(), TierOutcome::Built(build)),
        };
        let mut report = TierReport {
            tier: tier.name.clone(),
            venv,
            outcome,
            elapsed,
            fetched: Some(fetch.figures),
            changes: Vec::new(),
        };
        if report.changed() {
            let after = fetch
                .fetched
                .iter()
                .map(|f| (f.selected.name.clone(), f.selected.version.clone()))
                .collect();
            report.changes = changes::changes(&before, &after);
        }
        Ok(report)
    }

    /// Selects what `tier` needs, pulls what the remote store has, fetches
    /// the rest and checks that the result is complete. When the tier is
    /// `materializing`, the venv skeleton is prepared meanwhile and the
    /// bytecode of what is downloaded starts compiling as it comes in.
    fn fetch_tier(
        &self,
        tier: &Tier,
        offline: bool,
        materializing: bool,
        progress: &dyn Progress,
    ) -> anyhow::Result<TierFetch> {
        progress.tier(&tier.name);
        let Selection {
            interpreter,
            selected,
            lock_path,
        } = timed(progress, "interpreter and lock", || {
            self.select(tier, progress)
        })?;
        crate::lock::requirement_hashes::check(tier, &selected, &lock_path)?;
        let uv = if offline {
            self.uv(progress).ok()
        } else {
            Some(self.uv(progress)?)
        };
        let tag = bytecode_tag(tier, &interpreter);
        let compiler = tag
            .as_deref()
            .filter(|_| materializing && tier.compile_bytecode.compiles())
            .map(|tag| Compiler::in_background(&self.store, &interpreter.executable, tag));
        let (store, python) = (&self.store, interpreter.executable.as_path());
        let (pulled, fetched) = std::thread::scope(|scope| {
            if let (true, Some(uv)) = (materializing, uv) {
                // Its own errors come again, and are reported, when the
                // venv is built.
                scope.spawn(move || materialize::venv::prepare_skeleton(uv, store, python));
            }
            let pulled = if offline {
                0
            } else {
                self.claim_pulled_ahead(&selected)
                    + self
                        .pull_or_fall_back(&selected, tag.as_deref(), progress)
                        .distributions_moved
            };
            let fetched = fetch::fetch(
                store,
                uv,
                &interpreter,
                &selected,
                &FetchOptions {
                    offline,
                    concurrent_downloads: self.concurrent_downloads,
                },
                compiler.as_ref(),
                progress,
            );
            (pulled, fetched)
        });
        let (mut fetched, report) = fetched.with_context(|| format!("tier `{}`", tier.name))?;
        if !materializing {
            // Materializing records a new store's wheels while it links;
            // without it, they are recorded now.
            fetch::record_in_place(&self.store.db, &mut fetched, progress)?;
        }
        let closure = materialize::closure::ClosureInput {
            store: &self.store,
            tier,
            interpreter: &interpreter,
            lock_path: &lock_path,
            fetched: &fetched,
        };
        let checked = timed(progress, "closure check", || {
            materialize::closure::check(&closure, progress)
        });
        if let Err(refused) = checked {
            // The lock is refused, not what it downloaded: recorded, a
            // rerun with a mended lock finds it in the store.
            if let Err(err) = fetch::record_in_place(&self.store.db, &mut fetched, progress) {
                progress.notice(&format!(
                    "recording the downloaded wheels failed too: {err:#}"
                ));
            }
            return Err(refused);
        }
        let figures = FetchFigures {
            distributions: fetched.len(),
            downloaded: report.downloaded,
            bytes: report.bytes,
            built: report.built,
            pulled,
            already_stored: report.already_stored.saturating_sub(pulled),
        };
        Ok(TierFetch {
            interpreter,
            lock_path,
            fetched,
            figures,
            compiler,
        })
    }

    /// The tier's lock and the key of what building it takes
    /// ([`materialize::inputs_key`]).
    fn inputs_key(&self, tier: &Tier, link_mode: LinkMode) -> anyhow::Result<(Vec<u8>, String)> {
        let lock_path = self.lock_path(&tier.name);
        let lock_bytes = fs_err::read(&lock_path)?;
        let key = materialize::inputs_key(&self.store, tier, &lock_path, &lock_bytes, link_mode)?;
        Ok((lock_bytes, key))
    }

    /// Whether the tier's venv is built from exactly its inputs now (a
    /// no-op); an error counts as not.
    fn unchanged(&self, tier: &Tier, link_mode: LinkMode) -> bool {
        self.inputs_key(tier, link_mode)
            .is_ok_and(|(_, key)| materialize::is_unchanged(&tier.venv, &key))
    }

    /// With a remote and several tiers to fetch, pulls what they lack in one
    /// go before the first is built ([`Workspace::pull_groups`]): into a new
    /// store, every object then goes into staged shards. Best effort: a
    /// tier that cannot be selected here fails, and says why, when built.
    fn pull_ahead(&self, tiers: &[&Tier], progress: &dyn Progress) {
        if tiers.len() < 2 || !self.has_remote() {
            return;
        }
        let Ok(groups) = self.pull_groups(tiers, progress) else {
            return;
        };
        for group in groups {
            progress.tier(&group.tiers.join(" + "));
            let report = self.pull_or_fall_back(&group.selected, group.tag.as_deref(), progress);
            self.pulled_ahead.borrow_mut().extend(report.pulled);
        }
    }

    /// How many of `selected` a pull ahead brought; each is counted for the
    /// first tier that asks, as a pull per tier would have.
    fn claim_pulled_ahead(&self, selected: &[crate::dist::Selected]) -> usize {
        let mut ahead = self.pulled_ahead.borrow_mut();
        selected
            .iter()
            .filter_map(|item| item.pinned())
            .filter(|file| ahead.remove(&file.sha256))
            .count()
    }

    /// Pulls what the remote store has of `selected`. An unusable remote is
    /// not fatal: the index has everything, so it is said (once per run)
    /// and the index is used.
    fn pull_or_fall_back(
        &self,
        selected: &[crate::dist::Selected],
        bytecode_tag: Option<&str>,
        progress: &dyn Progress,
    ) -> TransferReport {
        if self.remote_failed.get() {
            return TransferReport::default();
        }
        self.pull_missing(selected, bytecode_tag, progress)
            .unwrap_or_else(|err| {
                self.remote_failed.set(true);
                progress.notice(&format!(
                    "the remote store could not be used ({err:#}); downloading from the index instead"
                ));
                TransferReport::default()
            })
    }

    /// What the store recorded of the tier's venv path, if it was materialized.
    pub fn recorded_tier(&self, tier: &Tier) -> Option<crate::store::db::TierRow> {
        let venv = tier.venv.display().to_string();
        self.store
            .db
            .tiers()
            .ok()?
            .into_iter()
            .find(|t| t.venv == venv)
    }

    /// A venv path built from one tiers.toml and now from another (a command
    /// run outside the checkout reads the embedded tiers, say) is said before
    /// it is replaced; `tstore rollback` brings the previous generation back.
    fn warn_if_built_from_another_config(&self, tier: &Tier, progress: &dyn Progress) {
        let now = self.config.source.to_string();
        let Some(row) = self.recorded_tier(tier) else {
            return;
        };
        if row.config != now {
            progress.notice(&format!(
                "{} was built from {}, and is now built from {now}; run tstore where that file is \
                 (or pass --config) to keep it, or `tstore rollback {}` afterwards",
                tier.venv.display(),
                row.config,
                tier.name
            ));
        }
    }

    /// Name → version of what the tier's current generation holds (none for
    /// a tier never materialized).
    fn installed_versions(&self, tier: &Tier) -> BTreeMap<String, String> {
        let Some(row) = self.recorded_tier(tier) else {
            return BTreeMap::new();
        };
        self.store
            .db
            .generation_distributions(&row.venv, row.current)
            .unwrap_or_default()
            .into_iter()
            .map(|d| (d.name, d.version))
            .collect()
    }
}

/// When `tier`'s sync counts as started: its time covers its lock too.
fn started_with_lock(locks: &[TierLock], tier: &Tier) -> Instant {
    let locked_in = locks
        .iter()
        .find(|l| l.tier == tier.name)
        .map_or(Duration::ZERO, |l| l.took);
    Instant::now()
        .checked_sub(locked_in)
        .unwrap_or_else(Instant::now)
}

#[cfg(test)]
mod tests;

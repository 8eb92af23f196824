//! What every step of a sync shares: the configuration, the store, uv and
//! the interpreters found so far, and the remote store.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::config::{Config, Tier};
use crate::dist::Selected;
use crate::interpreter::Interpreter;
use crate::lock::{self, PyLock};
use crate::progress::Progress;
use crate::store::{FileLock, Store};
use crate::transfer::remote::Remote;
use crate::uv::Uv;

/// One configuration and one store, with what is found on first use (uv,
/// interpreters, the remote store) kept for the rest of the run.
pub struct Workspace {
    pub config: Config,
    pub store: Store,
    uv: OnceCell<Uv>,
    interpreters: RefCell<HashMap<String, Rc<Interpreter>>>,
    /// Whether uv's remembered choice of interpreter may be reused
    /// (see [`Workspace::refresh_interpreters`]).
    reuse_interpreter_choice: Cell<bool>,
    /// `--remote` / `TSTORE_REMOTE`, else tiers.toml's `remote`.
    remote_url: Option<String>,
    remote: OnceCell<Remote>,
    /// Downloads at once (`TSTORE_CONCURRENT_DOWNLOADS`).
    pub concurrent_downloads: usize,
    /// Wheels (sha256) pulled for several tiers at once and not yet
    /// counted in a tier's figures.
    pub(super) pulled_ahead: RefCell<HashSet<String>>,
    /// Set once the remote failed in this run: said once, not tried again.
    pub(super) remote_failed: Cell<bool>,
}

/// What a tier's lock selects for its interpreter.
pub struct Selection {
    pub interpreter: Rc<Interpreter>,
    pub selected: Vec<Selected>,
    pub lock_path: PathBuf,
}

impl Workspace {
    /// `remote`, when given, overrides the configuration's `remote`.
    pub fn new(config: Config, store: Store, remote: Option<String>) -> Self {
        let remote_url = remote.or_else(|| config.remote.clone());
        Self {
            config,
            store,
            uv: OnceCell::new(),
            interpreters: RefCell::new(HashMap::new()),
            reuse_interpreter_choice: Cell::new(true),
            remote_url,
            remote: OnceCell::new(),
            concurrent_downloads: crate::fetch::DEFAULT_CONCURRENT_DOWNLOADS,
            pulled_ahead: RefCell::new(HashSet::new()),
            remote_failed: Cell::new(false),
        }
    }

    /// The tiers.toml at `config` (else the one found from here) and the
    /// store at its default home.
    pub fn open(config: Option<&Path>, remote: Option<String>) -> anyhow::Result<Self> {
        let config = Config::discover(config)?;
        let store = Store::open(&Store::default_home())?;
        Ok(Self::new(config, store, remote))
    }

    /// The remote store, if one is configured (opened on first use).
    pub fn remote(&self) -> anyhow::Result<Option<&Remote>> {
        let Some(url) = &self.remote_url else {
            return Ok(None);
        };
        if let Some(remote) = self.remote.get() {
            return Ok(Some(remote));
        }
        let remote = Remote::open(url)?;
        Ok(Some(self.remote.get_or_init(|| remote)))
    }

    /// Whether a remote store is configured (`--remote`, `TSTORE_REMOTE`
    /// or tiers.toml).
    pub fn has_remote(&self) -> bool {
        self.remote_url.is_some()
    }

    /// uv, located (or installed into the store) on first use.
    pub fn uv(&self, progress: &dyn Progress) -> anyhow::Result<&Uv> {
        if let Some(uv) = self.uv.get() {
            return Ok(uv);
        }
        let uv = Uv::locate(&self.store, progress)?;
        progress.detail(&format!("using uv at {}", uv.path.display()));
        Ok(self.uv.get_or_init(|| uv))
    }

    /// The interpreter `python` asks for, found once per run.
    pub fn interpreter(
        &self,
        python: &str,
        progress: &dyn Progress,
    ) -> anyhow::Result<Rc<Interpreter>> {
        if let Some(found) = self.interpreters.borrow().get(python) {
            return Ok(found.clone());
        }
        let found = Rc::new(Interpreter::find(
            self.uv(progress)?,
            &self.store,
            python,
            self.reuse_interpreter_choice.get(),
        )?);
        progress.detail(&format!("Python {python}: {}", found.executable.display()));
        self.interpreters
            .borrow_mut()
            .insert(python.to_string(), found.clone());
        Ok(found)
    }

    /// Asks uv again which interpreter each tier's request means and
    /// remembers the answer, for the rest of this run and for later builds.
    /// Best effort: a tier whose Python is missing is reported when it is
    /// materialized, not here.
    pub fn refresh_interpreters(&self, tiers: &[&Tier], progress: &dyn Progress) {
        self.reuse_interpreter_choice.set(false);
        self.interpreters.borrow_mut().clear();
        for tier in tiers {
            let _ = self.interpreter(&tier.python, progress);
        }
    }

    pub fn lock_path(&self, tier: &str) -> PathBuf {
        lock::lock_path(&self.config, &self.store, tier)
    }

    /// The tier's lock path; an error saying how to make it when there is none.
    pub fn existing_lock(&self, tier: &Tier) -> anyhow::Result<PathBuf> {
        let path = self.lock_path(&tier.name);
        if !path.is_file() {
            anyhow::bail!(
                "tier `{}` has no lock at {}; run `tstore lock {}` first",
                tier.name,
                path.display(),
                tier.name
            );
        }
        Ok(path)
    }

    /// What to install for `tier` on its interpreter, from its lock.
    pub fn select(&self, tier: &Tier, progress: &dyn Progress) -> anyhow::Result<Selection> {
        let interpreter = self.interpreter(&tier.python, progress)?;
        let lock_path = self.lock_path(&tier.name);
        let (lock, _) = PyLock::read(&lock_path)?;
        let dir = lock_path.parent().unwrap_or(Path::new("."));
        let selected = lock.select(&interpreter, dir, &lock_path)?;
        Ok(Selection {
            interpreter,
            selected,
            lock_path,
        })
    }

    /// Held while a command adds or uses objects, so gc and repair wait.
    pub fn share_store(&self, progress: &dyn Progress) -> anyhow::Result<FileLock> {
        FileLock::acquire_shared(&self.store.usage_lock(), || {
            progress.notice("waiting for `tstore gc` or `tstore verify --repair` to finish")
        })
    }
}

//! What the commands of one run share: configuration, store, uv and the
//! interpreters found so far.

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::bail;
use tstore::config::{Config, Tier};
use tstore::dist::Selected;
use tstore::interpreter::Interpreter;
use tstore::lock::{self, LockOptions, PyLock, TierLock};
use tstore::progress::Progress;
use tstore::store::Store;
use tstore::uv::Uv;

use super::LockArgs;
use super::report::Reporter;

pub struct Session<'a> {
    pub config: Config,
    pub store: Store,
    pub reporter: &'a Reporter,
    uv: OnceCell<Uv>,
    interpreters: RefCell<HashMap<String, Rc<Interpreter>>>,
    /// Whether uv's remembered choice of interpreter may be reused
    /// (see [`Session::refresh_interpreters`]).
    reuse_interpreter_choice: std::cell::Cell<bool>,
    /// `--remote` / `TSTORE_REMOTE`, else tiers.toml's `remote`.
    remote_url: Option<String>,
    remote: OnceCell<tstore::transfer::remote::Remote>,
}

impl<'a> Session<'a> {
    pub fn open(
        config: Option<&Path>,
        remote: Option<String>,
        reporter: &'a Reporter,
    ) -> anyhow::Result<Self> {
        let config = Config::discover(config)?;
        let store = Store::open(&Store::default_home())?;
        let remote_url = remote.or_else(|| config.remote.clone());
        Ok(Self {
            config,
            store,
            reporter,
            uv: OnceCell::new(),
            interpreters: RefCell::new(HashMap::new()),
            reuse_interpreter_choice: std::cell::Cell::new(true),
            remote_url,
            remote: OnceCell::new(),
        })
    }

    /// The remote store, if one is configured (opened on first use).
    pub fn remote(&self) -> anyhow::Result<Option<&tstore::transfer::remote::Remote>> {
        let Some(url) = &self.remote_url else {
            return Ok(None);
        };
        if let Some(remote) = self.remote.get() {
            return Ok(Some(remote));
        }
        let remote = tstore::transfer::remote::Remote::open(url)?;
        Ok(Some(self.remote.get_or_init(|| remote)))
    }

    pub fn uv(&self) -> anyhow::Result<&Uv> {
        if let Some(uv) = self.uv.get() {
            return Ok(uv);
        }
        let uv = Uv::locate(&self.store, self.reporter)?;
        self.reporter
            .detail(&format!("using uv at {}", uv.path.display()));
        Ok(self.uv.get_or_init(|| uv))
    }

    pub fn interpreter(&self, python: &str) -> anyhow::Result<Rc<Interpreter>> {
        if let Some(found) = self.interpreters.borrow().get(python) {
            return Ok(found.clone());
        }
        let found = Rc::new(Interpreter::find(
            self.uv()?,
            &self.store,
            python,
            self.reuse_interpreter_choice.get(),
        )?);
        self.reporter
            .detail(&format!("Python {python}: {}", found.executable.display()));
        self.interpreters
            .borrow_mut()
            .insert(python.to_string(), found.clone());
        Ok(found)
    }

    /// Asks uv again which interpreter each tier's request means and
    /// remembers the answer, for the rest of this run and for later builds.
    /// Best effort: a tier whose Python is missing is reported when it is
    /// materialized, not here.
    pub fn refresh_interpreters(&self, tiers: &[&Tier]) {
        self.reuse_interpreter_choice.set(false);
        self.interpreters.borrow_mut().clear();
        for tier in tiers {
            let _ = self.interpreter(&tier.python);
        }
    }

    pub fn lock_path(&self, tier: &str) -> PathBuf {
        lock::lock_path(&self.config, &self.store, tier)
    }

    /// Makes sure each tier has a lock: locks with uv unless `--frozen` or
    /// `--offline` say to use what exists.
    pub fn ensure_locks(&self, tiers: &[&Tier], args: LockArgs) -> anyhow::Result<Vec<TierLock>> {
        if args.frozen || args.offline {
            let flag = if args.frozen { "--frozen" } else { "--offline" };
            let mut out = Vec::new();
            for tier in tiers {
                let path = self.lock_path(&tier.name);
                if !path.is_file() {
                    bail!(
                        "{flag}: tier `{}` has no lock at {}; run `tstore lock {}` first",
                        tier.name,
                        path.display(),
                        tier.name
                    );
                }
                if args.offline
                    && !args.frozen
                    && !lock::is_current(&self.config, &self.store, tier)
                {
                    self.reporter.notice(&format!(
                        "the lock of `{}` does not match tiers.toml any more; --offline uses it as it is",
                        tier.name
                    ));
                }
                out.push(TierLock::reused(&tier.name, path));
            }
            return Ok(out);
        }
        // Current locks need no uv at all.
        if tiers
            .iter()
            .all(|t| lock::is_current(&self.config, &self.store, t))
        {
            return Ok(tiers
                .iter()
                .map(|tier| TierLock::reused(&tier.name, self.lock_path(&tier.name)))
                .collect());
        }
        lock::lock_tiers(
            &self.config,
            &self.store,
            self.uv()?,
            tiers,
            &LockOptions::default(),
            self.reporter,
        )
    }

    /// What to install for `tier` on its interpreter, from its lock.
    pub fn select(&self, tier: &Tier) -> anyhow::Result<(Rc<Interpreter>, Vec<Selected>, PathBuf)> {
        let interpreter = self.interpreter(&tier.python)?;
        let path = self.lock_path(&tier.name);
        let (lock, _) = PyLock::read(&path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let selected = lock.select(&interpreter, dir, &path)?;
        Ok((interpreter, selected, path))
    }
}

//! What the commands of one run share: the library's [`Workspace`] (the
//! configuration, the store, uv, interpreters, the remote) and the terminal
//! reporter it reports through.

use std::ops::Deref;
use std::path::Path;

use tstore::config::Tier;
use tstore::sync::{LockRules, Selection, Workspace};
use tstore::uv::Uv;

use super::LockArgs;
use super::report::Reporter;

pub struct Session<'a> {
    pub workspace: Workspace,
    pub reporter: &'a Reporter,
}

/// A session reads as its workspace (`session.config`, `session.store`).
impl Deref for Session<'_> {
    type Target = Workspace;

    fn deref(&self) -> &Workspace {
        &self.workspace
    }
}

impl<'a> Session<'a> {
    pub fn open(
        config: Option<&Path>,
        remote: Option<String>,
        reporter: &'a Reporter,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            workspace: Workspace::open(config, remote)?,
            reporter,
        })
    }

    pub fn uv(&self) -> anyhow::Result<&Uv> {
        self.workspace.uv(self.reporter)
    }

    pub fn refresh_interpreters(&self, tiers: &[&Tier]) {
        self.workspace.refresh_interpreters(tiers, self.reporter);
    }

    pub fn select(&self, tier: &Tier) -> anyhow::Result<Selection> {
        self.workspace.select(tier, self.reporter)
    }

    /// Held while a command adds or uses objects, so gc and repair wait.
    pub fn share_store(&self) -> anyhow::Result<tstore::store::FileLock> {
        self.workspace.share_store(self.reporter)
    }
}

impl From<LockArgs> for LockRules {
    fn from(args: LockArgs) -> Self {
        LockRules {
            offline: args.offline,
            frozen: args.frozen,
        }
    }
}

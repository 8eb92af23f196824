//! The first step of a sync: every tier has a lock, made with uv unless
//! `--frozen` or `--offline` say to use what exists.

use crate::config::Tier;
use crate::lock::{self, LockOptions, TierLock};
use crate::progress::Progress;

use super::Workspace;

/// How locks may be made (`--frozen`, `--offline`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockRules {
    /// Use only the store and existing locks; a stale lock is used as it is,
    /// with a notice.
    pub offline: bool,
    /// Use the existing locks without checking them against tiers.toml.
    pub frozen: bool,
}

impl LockRules {
    /// The flag that forbids locking, as the user typed it (`--frozen` wins).
    fn forbidding_flag(self) -> Option<&'static str> {
        if self.frozen {
            Some("--frozen")
        } else if self.offline {
            Some("--offline")
        } else {
            None
        }
    }
}

impl Workspace {
    /// Makes sure each tier has a lock: a tier with none takes the one it
    /// was last pushed with from the remote (unless `--offline`), else locks
    /// with uv unless `rules` say to use what exists. A lock still current
    /// needs no uv at all.
    pub fn ensure_locks(
        &self,
        tiers: &[&Tier],
        rules: LockRules,
        progress: &dyn Progress,
    ) -> anyhow::Result<Vec<TierLock>> {
        if !rules.offline {
            self.take_missing_locks(tiers, progress);
        }
        if let Some(flag) = rules.forbidding_flag() {
            return tiers
                .iter()
                .map(|tier| self.existing_lock_as_is(tier, rules, flag, progress))
                .collect();
        }
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
            self.uv(progress)?,
            tiers,
            &LockOptions::default(),
            progress,
        )
    }

    /// The tier's lock, which must exist, used without locking; `--offline`
    /// alone says so when tiers.toml moved on since.
    fn existing_lock_as_is(
        &self,
        tier: &Tier,
        rules: LockRules,
        flag: &str,
        progress: &dyn Progress,
    ) -> anyhow::Result<TierLock> {
        let path = self.lock_path(&tier.name);
        if !path.is_file() {
            anyhow::bail!(
                "{flag}: tier `{}` has no lock at {}; run `tstore lock {}` first",
                tier.name,
                path.display(),
                tier.name
            );
        }
        if rules.offline && !rules.frozen && !lock::is_current(&self.config, &self.store, tier) {
            progress.notice(&format!(
                "the lock of `{}` does not match tiers.toml any more; --offline uses it as it is",
                tier.name
            ));
        }
        Ok(TierLock::reused(&tier.name, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::tests::{Notices, workspace};

    #[test]
    fn frozen_and_offline_fail_naming_the_missing_lock() {
        let (_dir, ws) = workspace();
        let tiers = ws.config.select(&["base".to_string()]).unwrap();
        for (rules, flag) in [
            (
                LockRules {
                    frozen: true,
                    offline: false,
                },
                "--frozen",
            ),
            (
                LockRules {
                    frozen: true,
                    offline: true,
                },
                "--frozen",
            ),
            (
                LockRules {
                    frozen: false,
                    offline: true,
                },
                "--offline",
            ),
        ] {
            let err = ws
                .ensure_locks(&tiers, rules, &Notices::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("{flag}: tier `base` has no lock at")),
                "{err}"
            );
            assert!(err.ends_with("run `tstore lock base` first"), "{err}");
        }
    }

    #[test]
    fn offline_uses_a_stale_lock_with_a_notice_frozen_silently() {
        let (_dir, ws) = workspace();
        let tiers = ws.config.select(&["base".to_string()]).unwrap();
        let path = ws.lock_path("base");
        fs_err::write(&path, "lock-version = \"1.0\"\n").unwrap();

        let offline = Notices::default();
        let locks = ws
            .ensure_locks(
                &tiers,
                LockRules {
                    offline: true,
                    frozen: false,
                },
                &offline,
            )
            .unwrap();
        assert_eq!(locks.len(), 1);
        assert_eq!(locks[0].path, path);
        assert_eq!(locks[0].status, lock::LockStatus::Reused);
        assert_eq!(
            offline.taken(),
            ["the lock of `base` does not match tiers.toml any more; --offline uses it as it is"]
        );

        let frozen = Notices::default();
        ws.ensure_locks(
            &tiers,
            LockRules {
                offline: true,
                frozen: true,
            },
            &frozen,
        )
        .unwrap();
        assert!(frozen.taken().is_empty());
    }
}

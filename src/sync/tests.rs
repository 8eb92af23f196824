//! A workspace on a temp dir, and a progress that keeps its notices.

use std::sync::Mutex;

use super::*;
use crate::config::{Config, ConfigSource};
use crate::store::Store;

/// A `Progress` that keeps the notices it was given.
#[derive(Default)]
pub(super) struct Notices(Mutex<Vec<String>>);

impl Notices {
    pub(super) fn taken(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

impl Progress for Notices {
    fn notice(&self, message: &str) {
        self.0.lock().unwrap().push(message.to_string());
    }
}

/// Tiers `base` and `extra` from a tiers.toml in a temp dir, venvs and
/// store beside it.
pub(super) fn workspace() -> (tempfile::TempDir, Workspace) {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    fs_err::create_dir_all(&project).unwrap();
    let text = format!(
        "venv-root = \"{}\"\n[tiers.base]\nrequirements = [\"one\"]\n\
         [tiers.extra]\nrequirements = [\"two\"]\n",
        dir.path().join("venvs").display()
    );
    let source = ConfigSource::File(project.join("tiers.toml"));
    fs_err::write(project.join("tiers.toml"), &text).unwrap();
    let config = Config::parse(&text, source, &project).unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    (dir, Workspace::new(config, store, None))
}

/// Makes `tier`'s venv look built by tstore from its current inputs.
fn pretend_built(ws: &Workspace, tier: &Tier) {
    let lock_path = ws.lock_path(&tier.name);
    let lock_bytes = fs_err::read(&lock_path).unwrap();
    let key = materialize::inputs_key(
        &ws.store,
        tier,
        &lock_path,
        &lock_bytes,
        ws.config.link_mode,
    )
    .unwrap();
    let site = Path::new("lib/python3.11/site-packages");
    fs_err::create_dir_all(tier.venv.join(site)).unwrap();
    fs_err::create_dir_all(tier.venv.join("bin")).unwrap();
    fs_err::write(tier.venv.join("bin/python"), "").unwrap();
    fs_err::write(tier.venv.join("pyvenv.cfg"), "home = /usr/bin\n").unwrap();
    materialize::venv::write_marker(
        &tier.venv,
        &materialize::venv::Marker {
            plan: "plan",
            inputs: &key,
            site_packages: site,
            entries: &materialize::venv::entries_hash([]),
        },
    )
    .unwrap();
}

#[test]
fn a_tier_built_from_the_same_inputs_is_reported_unchanged_without_uv() {
    let (_dir, ws) = workspace();
    let tiers = ws.config.select(&["base".to_string()]).unwrap();
    fs_err::write(ws.lock_path("base"), "lock-version = \"1.0\"\n").unwrap();
    pretend_built(&ws, tiers[0]);
    let options = SyncOptions {
        locks: LockRules {
            frozen: true,
            offline: false,
        },
        ..SyncOptions::default()
    };
    let mut seen = Vec::new();
    let report = ws
        .sync(&tiers, &options, &Notices::default(), &mut |t| {
            seen.push(t.tier.clone())
        })
        .unwrap();
    assert_eq!(seen, ["base"]);
    let [tier] = report.tiers.as_slice() else {
        panic!("one tier expected: {report:?}");
    };
    assert!(matches!(tier.outcome, TierOutcome::Unchanged));
    assert!(!tier.changed());
    assert!(tier.fetched.is_none());
    assert_eq!(tier.venv, tiers[0].venv);
}

#[test]
fn a_tier_counts_its_lock_time() {
    let (_dir, ws) = workspace();
    let tiers = ws.config.select(&["base".to_string()]).unwrap();
    let mut lock = TierLock::reused("base", ws.lock_path("base"));
    lock.took = Duration::from_millis(200);
    let started = started_with_lock(&[lock], tiers[0]);
    assert!(started.elapsed() >= Duration::from_millis(200));
    let other = started_with_lock(&[], tiers[0]);
    assert!(other.elapsed() < Duration::from_millis(200));
}

#[test]
fn an_unusable_remote_is_a_notice_and_nothing_pulled() {
    let (_dir, ws) = workspace();
    let ws = Workspace::new(ws.config, ws.store, Some("not a url".to_string()));
    let notices = Notices::default();
    assert_eq!(
        ws.pull_or_fall_back(&[], None, &notices)
            .distributions_moved,
        0
    );
    let said = notices.taken();
    let [notice] = said.as_slice() else {
        panic!("one notice expected: {said:?}");
    };
    assert!(
        notice.starts_with("the remote store could not be used (remote `not a url` is not a URL"),
        "{notice}"
    );
    assert!(
        notice.ends_with("; downloading from the index instead"),
        "{notice}"
    );
}

#[test]
fn without_a_remote_nothing_is_pulled_and_nothing_said() {
    let (_dir, ws) = workspace();
    let notices = Notices::default();
    assert_eq!(
        ws.pull_or_fall_back(&[], None, &notices)
            .distributions_moved,
        0
    );
    assert!(notices.taken().is_empty());
}

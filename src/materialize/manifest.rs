//! A generation's manifest: every file of the venv and where it comes from
//! (the plan's file list), saved in the store as `manifests/<plan hash>.json`
//! when the generation is built. `verify`, `edit` and `du` read it instead of
//! planning again.

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::plan::{Plan, PlannedFile};
use crate::store::Store;

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// `lib/pythonX.Y/site-packages`, relative to the venv.
    pub site_packages: PathBuf,
    pub files: Vec<PlannedFile>,
}

impl Manifest {
    pub fn of(plan: &Plan) -> Self {
        Self {
            site_packages: plan.site_packages.clone(),
            files: plan.files.clone(),
        }
    }

    /// Writes the manifest for `plan_hash` (temp + rename) unless it exists.
    pub fn save(&self, store: &Store, plan_hash: &str) -> anyhow::Result<()> {
        let path = store.manifest_path(plan_hash);
        if path.is_file() {
            return Ok(());
        }
        let temp = store.temp_path("manifest");
        crate::fsinfo::write_with_mode(
            &temp,
            &serde_json::to_vec(self)?,
            crate::fsinfo::FILE_MODE,
        )?;
        fs_err::rename(&temp, &path)?;
        Ok(())
    }

    pub fn load(store: &Store, plan_hash: &str) -> anyhow::Result<Self> {
        let path = store.manifest_path(plan_hash);
        let bytes =
            fs_err::read(&path).context("the generation's manifest is missing from the store")?;
        serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", path.display()))
    }
}

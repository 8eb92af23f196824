//! A generation's manifest: every file of the venv and where it comes from
//! (the plan's file list), saved in the store as
//! `manifests/<plan hash>.json.zst` (JSON, zstd-compressed: a tekton-ai
//! manifest is 11 MB of JSON) when the generation is built. `verify`, `edit`,
//! `du` and gc read it instead of planning again. A store written before
//! manifests were compressed has `<plan hash>.json`, which is still read.

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::plan::{Plan, PlannedFile};
use crate::store::Layout;

/// zstd's fastest levels: a manifest is written on every build.
const LEVEL: i32 = 1;

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
    pub fn save(&self, store: &Layout, plan_hash: &str) -> anyhow::Result<()> {
        let path = store.manifest_path(plan_hash);
        if path.is_file() {
            return Ok(());
        }
        let json = serde_json::to_vec(self)?;
        let compressed = zstd::bulk::compress(&json, LEVEL)?;
        let temp = store.temp_path("manifest");
        crate::fsinfo::write_with_mode(&temp, &compressed, crate::fsinfo::FILE_MODE)?;
        fs_err::rename(&temp, &path)?;
        Ok(())
    }

    /// Reads the manifest for `plan_hash`, compressed or (from an older
    /// store) plain.
    pub fn load(store: &Layout, plan_hash: &str) -> anyhow::Result<Self> {
        let (path, json) = match fs_err::read(store.manifest_path(plan_hash)) {
            Ok(compressed) => {
                let path = store.manifest_path(plan_hash);
                let json = zstd::stream::decode_all(compressed.as_slice())
                    .with_context(|| format!("{} is damaged", path.display()))?;
                (path, json)
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let path = store.plain_manifest_path(plan_hash);
                let json = fs_err::read(&path)
                    .context("the generation's manifest is missing from the store")?;
                (path, json)
            }
            Err(err) => return Err(err.into()),
        };
        serde_json::from_slice(&json).with_context(|| format!("{} is damaged", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::materialize::plan::FileSource;
    use std::sync::Arc;

    fn manifest() -> Manifest {
        Manifest {
            site_packages: PathBuf::from("lib/python3.11/site-packages"),
            files: vec![PlannedFile {
                dest: PathBuf::from("lib/python3.11/site-packages/a.py"),
                source: FileSource::Empty,
                dist: Arc::from("a"),
            }],
        }
    }

    #[test]
    fn a_manifest_is_saved_compressed_and_a_plain_one_from_an_older_store_still_loads() {
        let home = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(home.path()).unwrap();
        manifest().save(&store, "p1").unwrap();
        let saved = fs_err::read(store.manifest_path("p1")).unwrap();
        assert_eq!(&saved[..4], &[0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
        assert_eq!(Manifest::load(&store, "p1").unwrap().files.len(), 1);

        fs_err::write(
            store.plain_manifest_path("p2"),
            serde_json::to_vec(&manifest()).unwrap(),
        )
        .unwrap();
        assert_eq!(Manifest::load(&store, "p2").unwrap().files.len(), 1);

        let missing = Manifest::load(&store, "p3").unwrap_err();
        assert!(
            format!("{missing:#}").contains("missing from the store"),
            "{missing:#}"
        );
        fs_err::write(store.manifest_path("p4"), b"not zstd").unwrap();
        let damaged = Manifest::load(&store, "p4").unwrap_err();
        assert!(format!("{damaged:#}").contains("is damaged"), "{damaged:#}");
    }
}

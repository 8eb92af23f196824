//! The SQLite index of the store: schema, pragmas and every query.
//!
//! Busy timeout first, then WAL, so several tstore processes can share a store;
//! writes happen in short IMMEDIATE transactions.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, bail};
use rayon::prelude::*;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::ObjectKey;
use super::records::{
    AdoptedRecord, DistributionEntry, FileEntry, GenerationRecord, Records, generation_key,
    path_key,
};
pub use super::records::{DistDetails, GenerationRow};
use crate::store::LinkMethod;

/// Schema version written to `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 3;

/// Bytecode of sources no file uses any more is forgotten (gc).
const FORGET_ORPHAN_BYTECODE: &str = "DELETE FROM bytecode WHERE CASE source \
     WHEN 'empty' THEN NOT EXISTS (SELECT 1 FROM files f WHERE f.object IS NULL AND f.path LIKE '%.py') \
     ELSE NOT EXISTS (SELECT 1 FROM files f WHERE f.object = bytecode.source) END";

/// Within `tx`, deletes the distributions `ids` (their files go with them),
/// the records of adopted venvs that are gone, and the bytecode of sources
/// no file uses any more; returns the objects
/// nothing refers to after that.
fn forget_distributions(
    tx: &rusqlite::Transaction<'_>,
    ids: &[i64],
    adopted_venvs: &[String],
) -> anyhow::Result<Vec<ObjectRow>> {
    {
        let mut stmt = tx.prepare_cached("DELETE FROM distributions WHERE id = ?1")?;
        for id in ids {
            stmt.execute([id])?;
        }
        let mut stmt = tx.prepare_cached("DELETE FROM adopted_venvs WHERE path = ?1")?;
        for path in adopted_venvs {
            stmt.execute([path])?;
        }
    }
    tx.execute(FORGET_ORPHAN_BYTECODE, [])?;
    let mut stmt = tx.prepare(UNREFERENCED_OBJECTS)?;
    let orphans = stmt
        .query_map([], object_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(orphans)
}

/// Objects that neither a file, nor the bytecode of a used source, nor an
/// adopted venv refers to.
const UNREFERENCED_OBJECTS: &str = "SELECT key, size FROM objects o \
     WHERE NOT EXISTS (SELECT 1 FROM files f WHERE f.object = o.key) \
     AND NOT EXISTS (SELECT 1 FROM bytecode b WHERE b.pyc = o.key) \
     AND NOT EXISTS (SELECT 1 FROM adopted_objects a WHERE a.object = o.key)";
const SCHEMA: &str = include_str!("../../store-schema.sql");

/// A value the index holds that does not parse as what its column stores:
/// the index is damaged (it only ever writes values it parsed).
#[derive(Debug, thiserror::Error)]
#[error("the store index holds `{text}`, which is not {expected}")]
pub struct MalformedValue {
    pub text: String,
    pub expected: &'static str,
}

fn malformed(text: &str, expected: &'static str) -> FromSqlError {
    FromSqlError::Other(Box::new(MalformedValue {
        text: text.to_owned(),
        expected,
    }))
}

/// Object keys are stored as their text form (`hex[-x]`).
impl FromSql for ObjectKey {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        ObjectKey::parse(text).ok_or_else(|| malformed(text, "an object key"))
    }
}

impl ToSql for ObjectKey {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.to_string()))
    }
}

/// Link methods are stored as the word they display as.
impl FromSql for LinkMethod {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        super::records::link_method_from_text(text).ok_or_else(|| malformed(text, "a link method"))
    }
}

impl ToSql for LinkMethod {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.to_string()))
    }
}

/// A store object as the index records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectRow {
    pub key: ObjectKey,
    pub size: u64,
}

/// A distribution's identity: its id, wheel sha256, and the sdist sha256
/// (or local project key) it was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistributionRow {
    pub id: i64,
    pub sha256: String,
    pub built_from: Option<String>,
}

/// A file of a distribution that is one given object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectUser {
    pub dist_id: i64,
    pub name: String,
    pub version: String,
    /// Path inside the wheel.
    pub path: String,
}

/// Where a distribution came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistributionSource {
    pub url: Option<String>,
    pub sha256: String,
    pub filename: String,
    pub built_from: Option<String>,
}

/// What the store holds of one source's bytecode for one interpreter tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BytecodeRow {
    /// The source's object key, or [`EMPTY_SOURCE`].
    pub source: String,
    pub tag: String,
    pub pyc: Pyc,
}

/// A distribution as recorded in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistRecord {
    pub id: i64,
    pub name: String,
    pub version: String,
    pub filename: String,
    pub sha256: String,
}

/// One file of a distribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    /// Path inside the wheel.
    pub path: String,
    /// `None` for empty files.
    pub object: Option<ObjectKey>,
    pub mode: u32,
    pub size: u64,
    /// urlsafe-base64 sha256, as RECORD writes it: for a wheel the lock
    /// pins, the one its RECORD gives (`ingest::EntrySha256`).
    pub sha256: String,
    /// What the store holds of this file's bytecode for the tag asked for.
    pub bytecode: Bytecode,
}

impl FileRow {
    /// The `bytecode` table's key for this file as a source: its object key,
    /// or [`EMPTY_SOURCE`] for an empty file.
    pub fn bytecode_source(&self) -> String {
        self.object
            .map_or_else(|| EMPTY_SOURCE.to_owned(), |key| key.to_string())
    }
}

/// A compiled source's pyc object key and size; `None`: does not compile.
pub type Pyc = Option<(ObjectKey, u64)>;

/// The `bytecode` table's key for an empty source (empty files have no object).
pub const EMPTY_SOURCE: &str = "empty";

/// What the store knows of a `.py` file's bytecode for one interpreter tag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Bytecode {
    /// Not compiled for this tag (or no tag was asked for).
    #[default]
    Unknown,
    /// Compiling it failed once; it is not tried again.
    DoesNotCompile,
    /// The pyc's object key.
    Object(ObjectKey),
}

/// A wheel ready to be recorded.
#[derive(Clone, Copy)]
pub struct NewDistribution<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub filename: &'a str,
    pub sha256: &'a str,
    pub size: u64,
    pub tags: &'a str,
    pub url: Option<&'a str>,
    pub built_from_sdist: Option<&'a str>,
}

/// A materialized tier: its stable venv path and current generation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TierRow {
    pub venv: String,
    pub name: String,
    pub config: String,
    pub current: i64,
}

/// What the index holds, named as [`Records`] name it.
#[derive(Debug, Default)]
pub struct IndexKeys {
    pub distributions: std::collections::HashSet<String>,
    pub generations: std::collections::HashSet<String>,
    pub adopted: std::collections::HashSet<String>,
    /// Whether any object is recorded (not a count: counting scans the table).
    pub has_objects: bool,
}

pub struct Db {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// The on-disk witnesses of what is recorded here; `None` for an index
    /// being rebuilt from them (and in unit tests).
    records: Option<Records>,
}

impl Db {
    /// Opens (creating if needed) an index that keeps no records.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open the store index {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(60))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let mut db = Self::with_settings(conn, path)?;
        db.migrate(path)?;
        Ok(db)
    }

    /// `conn` (to the index at `path`, in WAL mode) with the settings each
    /// connection needs.
    fn with_settings(conn: Connection, path: &Path) -> anyhow::Result<Self> {
        // NORMAL in WAL mode: a commit is durable once the WAL is synced at
        // the next checkpoint; a power loss can lose the last commits but
        // never corrupts the file. What it loses, the records rebuild.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Up to 64 MiB of pages (2 MiB by default), taken only as used: a
        // store's whole index fits, so recording an import or a pull does
        // not evict and read back the index pages its random keys touch.
        conn.pragma_update(None, "cache_size", -65536)?;
        // A checkpoint every 64 MiB of WAL (4 MiB by default): each one
        // fsyncs, which on a journaled filesystem also commits the metadata
        // of every file written since, and holds the index meanwhile. A cold
        // install of tekton-ai spent about 1 s in 15 of them.
        conn.pragma_update(None, "wal_autocheckpoint", 16384)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            records: None,
        })
    }

    /// Opens the store's index, which writes a record of each change to `records`.
    pub fn open_with_records(path: &Path, records: Records) -> anyhow::Result<Self> {
        let mut db = Self::open(path)?;
        db.records = Some(records);
        Ok(db)
    }

    /// Another connection to the same index, keeping the same records: a
    /// long write on it (recording a new store's wheels) leaves this one
    /// free to read meanwhile. The index is open already, in WAL mode and
    /// migrated: only the per-connection settings are made, none of the
    /// steps that bypass SQLite's busy handler (`Store::open` holds
    /// `run/open.lock` for those).
    pub fn open_another(&self) -> anyhow::Result<Self> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("cannot open the store index {}", self.path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(60))?;
        let mut db = Self::with_settings(conn, &self.path)?;
        db.records = self.records.clone();
        Ok(db)
    }

    /// SQLite's own check of the file: `PRAGMA quick_check` (O(size), skips
    /// index-vs-table comparisons) or, with `full`, `integrity_check`.
    /// Returns the problems it lists; empty when the file is sound.
    pub fn integrity_problems(&self, full: bool) -> Vec<String> {
        let pragma = if full {
            "PRAGMA integrity_check(100)"
        } else {
            "PRAGMA quick_check(100)"
        };
        let conn = self.conn();
        let rows: rusqlite::Result<Vec<String>> = conn
            .prepare(pragma)
            .and_then(|mut stmt| stmt.query_map([], |r| r.get(0))?.collect());
        match rows {
            Ok(rows) if rows.len() == 1 && rows[0] == "ok" => Vec::new(),
            Ok(rows) => rows,
            Err(err) => vec![err.to_string()],
        }
    }

    fn migrate(&mut self, path: &Path) -> anyhow::Result<()> {
        let conn = self.conn.get_mut().expect("db mutex poisoned");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            bail!(
                "the store index {} has schema version {version}, newer than this tstore understands \
                 ({SCHEMA_VERSION}): upgrade tstore, or point TSTORE_HOME at another store",
                path.display()
            );
        }
        if version < SCHEMA_VERSION {
            tx.execute_batch(SCHEMA)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().expect("db mutex poisoned")
    }

    pub fn distribution_by_sha256(&self, sha256: &str) -> anyhow::Result<Option<DistRecord>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                "SELECT id, name, version, filename, sha256 FROM distributions WHERE sha256 = ?1",
                [sha256],
                dist_from_row,
            )
            .optional()?;
        Ok(row)
    }

    /// The wheel built earlier from the sdist with this sha256.
    pub fn sdist_build(&self, sdist_sha256: &str) -> anyhow::Result<Option<DistRecord>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                "SELECT d.id, d.name, d.version, d.filename, d.sha256 FROM sdist_builds b \
                 JOIN distributions d ON d.id = b.dist_id WHERE b.sdist_sha256 = ?1",
                [sdist_sha256],
                dist_from_row,
            )
            .optional()?;
        Ok(row)
    }

    /// Records a wheel and its files in one transaction. If another process
    /// recorded the same wheel first, returns that record.
    pub fn insert_distribution(
        &self,
        dist: &NewDistribution<'_>,
        files: &[FileRow],
    ) -> anyhow::Result<i64> {
        Ok(self.insert_distributions(&[(*dist, files)])?[0])
    }

    /// Writes the record of distribution `id` as the index holds it.
    fn write_distribution_record(&self, id: i64) -> anyhow::Result<()> {
        let Some(records) = &self.records else {
            return Ok(());
        };
        records.write_distribution(&self.distribution_entry(id)?)
    }

    /// Records distributions as records and archives carry them (see
    /// [`Db::insert_distribution`]), all in one transaction: the indexes of
    /// `files` and `objects` take keys all over, so a commit per
    /// distribution wrote most of their pages again each time (an import of
    /// 152 distributions spent 2 s there). Returns their ids, in order.
    pub fn insert_entries(&self, entries: &[&DistributionEntry]) -> anyhow::Result<Vec<i64>> {
        let rows = entries
            .iter()
            .map(|entry| Ok((new_distribution(entry), file_rows(entry)?)))
            .collect::<Result<Vec<_>, MalformedValue>>()?;
        self.insert_distributions(&rows)
    }

    /// Records distributions and their files (see
    /// [`Db::insert_distribution`]) all in one transaction, for the reason
    /// [`Db::insert_entries`] gives. Returns their ids, in order.
    pub fn insert_distributions<Files: AsRef<[FileRow]>>(
        &self,
        distributions: &[(NewDistribution<'_>, Files)],
    ) -> anyhow::Result<Vec<i64>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut ids = Vec::with_capacity(distributions.len());
        let mut new = Vec::new();
        let mut read_back = Vec::new();
        for (dist, files) in distributions {
            let (id, changed) = insert_distribution_in(&tx, dist, files.as_ref())?;
            ids.push(id);
            // A wheel built from an sdist (rare) may see its mapping
            // replaced later in the batch (`INSERT OR REPLACE`): its record
            // is read from the index after the commit.
            if changed && dist.built_from_sdist.is_none() {
                new.push(new_entry(dist, files.as_ref()));
            } else if changed {
                read_back.push(id);
            }
        }
        tx.commit()?;
        drop(conn);
        self.write_new_distribution_records(&new)?;
        for id in read_back {
            self.write_distribution_record(id)?;
        }
        Ok(ids)
    }

    /// Writes the records of distributions this process just added, from
    /// the rows it inserted (they are what the index holds), several at
    /// once: reading each back and writing one after the other took a
    /// third of recording a new store's wheels (54-63 ms of 175-190 for
    /// tekton-data's 90).
    fn write_new_distribution_records(&self, entries: &[DistributionEntry]) -> anyhow::Result<()> {
        let Some(records) = &self.records else {
            return Ok(());
        };
        entries
            .par_iter()
            .try_for_each(|entry| records.write_distribution(entry))
    }

    /// A distribution's details and files, as records and archives carry them.
    pub fn distribution_entry(&self, id: i64) -> anyhow::Result<DistributionEntry> {
        let files = self
            .distribution_files(id)?
            .iter()
            .map(file_entry)
            .collect();
        Ok(DistributionEntry {
            details: self.distribution_details(id)?,
            files,
        })
    }

    /// The object of `name` directly inside a distribution's `.dist-info`
    /// folder (`METADATA`, say): `None` when the distribution has no such
    /// file, `Some(None)` when it is empty. Reads that one row, where
    /// [`Db::distribution_files`] reads every file of the distribution.
    pub fn dist_info_file(
        &self,
        dist_id: i64,
        name: &str,
    ) -> anyhow::Result<Option<Option<ObjectKey>>> {
        let conn = self.conn();
        // GLOB is case-sensitive; `name` is one of tstore's own file names
        // (no `*`, `?` or `[`). The pattern also matches a nested
        // `a/b.dist-info/<name>`, which the filter below drops.
        let mut stmt = conn.prepare_cached(
            "SELECT path, object FROM files \
             WHERE dist_id = ?1 AND path GLOB '*.dist-info/' || ?2 ORDER BY path",
        )?;
        let rows = stmt
            .query_map(params![dist_id, name], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<ObjectKey>>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .find(|(path, _)| is_dist_info_file(path, name))
            .map(|(_, object)| object))
    }

    pub fn distribution_files(&self, dist_id: i64) -> anyhow::Result<Vec<FileRow>> {
        self.distribution_files_with_bytecode(dist_id, None)
    }

    /// The files of a distribution, each with what is known of its bytecode
    /// for `tag` (see [`Db::record_bytecode`]).
    pub fn distribution_files_with_bytecode(
        &self,
        dist_id: i64,
        tag: Option<&str>,
    ) -> anyhow::Result<Vec<FileRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT f.path, f.object, f.mode, f.size, f.sha256, b.source IS NOT NULL, b.pyc \
             FROM files f \
             LEFT JOIN bytecode b ON b.source = coalesce(f.object, 'empty') AND b.tag = ?2 \
             WHERE f.dist_id = ?1 ORDER BY f.path",
        )?;
        let rows = stmt
            .query_map(params![dist_id, tag], |r| {
                Ok(FileRow {
                    path: r.get(0)?,
                    object: r.get(1)?,
                    mode: r.get(2)?,
                    size: r.get::<_, i64>(3)? as u64,
                    sha256: r.get(4)?,
                    bytecode: match (r.get::<_, bool>(5)?, r.get::<_, Option<ObjectKey>>(6)?) {
                        (false, _) => Bytecode::Unknown,
                        (true, None) => Bytecode::DoesNotCompile,
                        (true, Some(pyc)) => Bytecode::Object(pyc),
                    },
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Fills in what the index knows of each row's bytecode for `tag`, as
    /// [`Db::distribution_files_with_bytecode`] reads it, for rows not read
    /// from the index (a wheel not recorded yet).
    pub fn add_bytecode(&self, rows: &mut [FileRow], tag: &str) -> anyhow::Result<()> {
        let conn = self.conn();
        // A new store has none: the usual case for rows not recorded yet.
        let any: bool =
            conn.query_row("SELECT EXISTS (SELECT 1 FROM bytecode)", [], |r| r.get(0))?;
        if !any {
            return Ok(());
        }
        let mut stmt =
            conn.prepare_cached("SELECT pyc FROM bytecode WHERE source = ?1 AND tag = ?2")?;
        for row in rows {
            let found: Option<Option<ObjectKey>> = stmt
                .query_row(params![row.bytecode_source(), tag], |r| r.get(0))
                .optional()?;
            row.bytecode = match found {
                None => Bytecode::Unknown,
                Some(None) => Bytecode::DoesNotCompile,
                Some(Some(pyc)) => Bytecode::Object(pyc),
            };
        }
        Ok(())
    }

    /// Records compiled bytecode: (source key or `empty`, pyc object key and
    /// size, or `None` where the source does not compile).
    pub fn record_bytecode(&self, tag: &str, entries: &[(String, Pyc)]) -> anyhow::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut object_stmt =
                tx.prepare_cached("INSERT OR IGNORE INTO objects (key, size) VALUES (?1, ?2)")?;
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO bytecode (source, tag, pyc) VALUES (?1, ?2, ?3)",
            )?;
            for (source, pyc) in entries {
                if let Some((key, size)) = pyc {
                    object_stmt.execute(params![key, *size as i64])?;
                }
                stmt.execute(params![source, tag, pyc.as_ref().map(|(k, _)| *k)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a new generation and makes it the tier's current one.
    pub fn record_generation(
        &self,
        name: &str,
        config: &str,
        generation: &GenerationRow,
        dist_ids: &[i64],
    ) -> anyhow::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO tiers (venv, name, config, current) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (venv) DO UPDATE SET name = ?2, config = ?3, current = ?4",
            params![generation.venv, name, config, generation.number],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO generations (venv, number, path, plan, lock, link_method, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                generation.venv,
                generation.number,
                generation.path,
                generation.plan,
                generation.lock,
                generation.link_method,
                generation.created_at
            ],
        )?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO generation_distributions (venv, number, dist_id) VALUES (?1, ?2, ?3)",
            )?;
            for id in dist_ids {
                stmt.execute(params![generation.venv, generation.number, id])?;
            }
        }
        tx.commit()?;
        drop(conn);
        if let Some(records) = &self.records {
            records.write_generation(&self.generation_record(name, config, generation)?)?;
        }
        Ok(())
    }

    /// A generation's record: its row and its distributions' sha256s.
    fn generation_record(
        &self,
        name: &str,
        config: &str,
        generation: &GenerationRow,
    ) -> anyhow::Result<GenerationRecord> {
        let distributions = self
            .generation_distributions(&generation.venv, generation.number)?
            .into_iter()
            .map(|d| d.sha256)
            .collect();
        Ok(GenerationRecord {
            name: name.to_owned(),
            config: config.to_owned(),
            generation: generation.clone(),
            distributions,
        })
    }

    pub fn set_current(&self, venv: &str, number: i64) -> anyhow::Result<()> {
        self.conn().execute(
            "UPDATE tiers SET current = ?2 WHERE venv = ?1",
            params![venv, number],
        )?;
        Ok(())
    }

    pub fn tiers(&self) -> anyhow::Result<Vec<TierRow>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT venv, name, config, current FROM tiers ORDER BY name, venv")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(TierRow {
                    venv: r.get(0)?,
                    name: r.get(1)?,
                    config: r.get(2)?,
                    current: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Kept generations of the tier at `venv`, oldest first.
    pub fn generations(&self, venv: &str) -> anyhow::Result<Vec<GenerationRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT venv, number, path, plan, lock, link_method, created_at FROM generations \
             WHERE venv = ?1 ORDER BY number",
        )?;
        let rows = stmt
            .query_map([venv], |r| {
                Ok(GenerationRow {
                    venv: r.get(0)?,
                    number: r.get(1)?,
                    path: r.get(2)?,
                    plan: r.get(3)?,
                    lock: r.get(4)?,
                    link_method: r.get(5)?,
                    created_at: r.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn delete_generation(&self, venv: &str, number: i64) -> anyhow::Result<()> {
        if let Some(records) = &self.records {
            records.remove_generation(venv, number)?;
        }
        self.conn().execute(
            "DELETE FROM generations WHERE venv = ?1 AND number = ?2",
            params![venv, number],
        )?;
        Ok(())
    }

    /// Forgets a tier and all its generations.
    pub fn remove_tier(&self, venv: &str) -> anyhow::Result<()> {
        if let Some(records) = &self.records {
            records.remove_generations_of(venv)?;
        }
        self.conn()
            .execute("DELETE FROM tiers WHERE venv = ?1", [venv])?;
        Ok(())
    }

    /// Distributions of a generation, with names, for reports.
    pub fn generation_distributions(
        &self,
        venv: &str,
        number: i64,
    ) -> anyhow::Result<Vec<DistRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT d.id, d.name, d.version, d.filename, d.sha256 FROM generation_distributions g \
             JOIN distributions d ON d.id = g.dist_id WHERE g.venv = ?1 AND g.number = ?2 ORDER BY d.name",
        )?;
        let rows = stmt
            .query_map(params![venv, number], dist_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Every distribution.
    pub fn all_distributions(&self) -> anyhow::Result<Vec<DistributionRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT d.id, d.sha256, b.sdist_sha256 FROM distributions d \
             LEFT JOIN sdist_builds b ON b.dist_id = d.id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(DistributionRow {
                    id: r.get(0)?,
                    sha256: r.get(1)?,
                    built_from: r.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Removes distributions (and their files) by id, in one transaction,
    /// then every object no remaining file refers to; returns those objects.
    pub fn delete_distributions(
        &self,
        ids: &[i64],
        adopted_venvs: &[String],
    ) -> anyhow::Result<Vec<ObjectRow>> {
        if let Some(records) = &self.records {
            for id in ids {
                records.remove_distribution(&self.distribution_details(*id)?.sha256)?;
            }
            for path in adopted_venvs {
                records.remove_adopted(path)?;
            }
        }
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let orphans = forget_distributions(&tx, ids, adopted_venvs)?;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM objects WHERE key = ?1")?;
            for orphan in &orphans {
                stmt.execute([orphan.key])?;
            }
        }
        tx.commit()?;
        Ok(orphans)
    }

    /// Objects no file refers to, without deleting them (for --dry-run).
    pub fn unreferenced_objects_after(
        &self,
        ids: &[i64],
        adopted_venvs: &[String],
    ) -> anyhow::Result<Vec<ObjectRow>> {
        let mut conn = self.conn();
        // A transaction that is rolled back: the same statements as the real run.
        let tx = conn.transaction()?;
        let orphans = forget_distributions(&tx, ids, adopted_venvs)?;
        tx.rollback()?;
        Ok(orphans)
    }

    /// Every recorded object.
    pub fn all_objects(&self) -> anyhow::Result<Vec<ObjectRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT key, size FROM objects")?;
        let rows = stmt
            .query_map([], object_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The files of distributions that are this object.
    pub fn object_users(&self, key: &ObjectKey) -> anyhow::Result<Vec<ObjectUser>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT d.id, d.name, d.version, f.path FROM files f JOIN distributions d ON d.id = f.dist_id \
             WHERE f.object = ?1 ORDER BY d.name",
        )?;
        let rows = stmt
            .query_map([key], |r| {
                Ok(ObjectUser {
                    dist_id: r.get(0)?,
                    name: r.get(1)?,
                    version: r.get(2)?,
                    path: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Where a distribution was fetched from, and its wheel sha256 and file name.
    pub fn distribution_source(&self, id: i64) -> anyhow::Result<DistributionSource> {
        let conn = self.conn();
        Ok(conn.query_row(
            "SELECT d.url, d.sha256, d.filename, b.sdist_sha256 FROM distributions d \
             LEFT JOIN sdist_builds b ON b.dist_id = d.id WHERE d.id = ?1",
            [id],
            |r| {
                Ok(DistributionSource {
                    url: r.get(0)?,
                    sha256: r.get(1)?,
                    filename: r.get(2)?,
                    built_from: r.get(3)?,
                })
            },
        )?)
    }

    /// Records an object published outside a wheel ingest (adopt).
    pub fn record_object(&self, key: &str, size: u64) -> anyhow::Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO objects (key, size) VALUES (?1, ?2)",
            params![key, size as i64],
        )?;
        Ok(())
    }

    /// Records objects in one transaction (an index rebuilt from the disk).
    pub fn record_objects(&self, objects: &[ObjectRow]) -> anyhow::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt =
                tx.prepare_cached("INSERT OR IGNORE INTO objects (key, size) VALUES (?1, ?2)")?;
            for object in objects {
                stmt.execute(params![object.key, object.size as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The record keys of what the index holds (see [`Records`]).
    pub fn record_keys(&self) -> anyhow::Result<IndexKeys> {
        let conn = self.conn();
        let strings = |sql: &str| -> anyhow::Result<Vec<String>> {
            let mut stmt = conn.prepare(sql)?;
            let rows = stmt
                .query_map([], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(rows)
        };
        let distributions = strings("SELECT sha256 FROM distributions")?
            .into_iter()
            .collect();
        let adopted = strings("SELECT path FROM adopted_venvs")?
            .iter()
            .map(|p| path_key(p))
            .collect();
        let mut stmt = conn.prepare("SELECT venv, number FROM generations")?;
        let generations = stmt
            .query_map([], |r| {
                Ok(generation_key(&r.get::<_, String>(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        let has_objects: bool =
            conn.query_row("SELECT EXISTS (SELECT 1 FROM objects)", [], |r| r.get(0))?;
        Ok(IndexKeys {
            distributions,
            generations,
            adopted,
            has_objects,
        })
    }

    /// Writes the records of everything the index holds that has none (a
    /// crash between a commit and its record, or a store made before
    /// records); returns how many were written. Callers hold the store
    /// exclusively, so no deletion races the writes.
    pub fn write_missing_records(&self) -> anyhow::Result<usize> {
        let Some(records) = &self.records else {
            return Ok(0);
        };
        let have_dists = records.distribution_keys()?;
        let have_generations = records.generation_keys()?;
        let have_adopted = records.adopted_keys()?;
        let mut written = 0;
        for dist in self.all_distributions()? {
            if !have_dists.contains(&dist.sha256) {
                self.write_distribution_record(dist.id)?;
                written += 1;
            }
        }
        for tier in self.tiers()? {
            for generation in self.generations(&tier.venv)? {
                if !have_generations.contains(&generation_key(&generation.venv, generation.number))
                {
                    let record = self.generation_record(&tier.name, &tier.config, &generation)?;
                    records.write_generation(&record)?;
                    written += 1;
                }
            }
        }
        for path in self.adopted_venvs()? {
            if !have_adopted.contains(&path_key(&path)) {
                self.write_adopted_record(&path)?;
                written += 1;
            }
        }
        Ok(written)
    }

    /// Records that the venv at `path` links to `objects` (adding to what an
    /// earlier adopt of it recorded).
    pub fn record_adopted(&self, path: &str, objects: &[(String, u64)]) -> anyhow::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO adopted_venvs (path, adopted_at) VALUES (?1, ?2) \
             ON CONFLICT (path) DO UPDATE SET adopted_at = excluded.adopted_at",
            params![path, unix_now()],
        )?;
        {
            let mut object_stmt =
                tx.prepare_cached("INSERT OR IGNORE INTO objects (key, size) VALUES (?1, ?2)")?;
            let mut link_stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO adopted_objects (venv, object) VALUES (?1, ?2)",
            )?;
            for (key, size) in objects {
                object_stmt.execute(params![key, *size as i64])?;
                link_stmt.execute(params![path, key])?;
            }
        }
        tx.commit()?;
        drop(conn);
        self.write_adopted_record(path)
    }

    fn write_adopted_record(&self, path: &str) -> anyhow::Result<()> {
        let Some(records) = &self.records else {
            return Ok(());
        };
        let conn = self.conn();
        let adopted_at: i64 = conn.query_row(
            "SELECT adopted_at FROM adopted_venvs WHERE path = ?1",
            [path],
            |r| r.get(0),
        )?;
        let mut stmt = conn.prepare(
            "SELECT a.object, o.size FROM adopted_objects a JOIN objects o ON o.key = a.object \
             WHERE a.venv = ?1 ORDER BY a.object",
        )?;
        let objects = stmt
            .query_map([path], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        drop(conn);
        records.write_adopted(&AdoptedRecord {
            path: path.to_owned(),
            adopted_at,
            objects,
        })
    }

    /// Paths of every adopted venv.
    pub fn adopted_venvs(&self) -> anyhow::Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT path FROM adopted_venvs ORDER BY path")?;
        let rows = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Forgets an adopted venv (its objects become collectable).
    pub fn forget_adopted(&self, path: &str) -> anyhow::Result<()> {
        if let Some(records) = &self.records {
            records.remove_adopted(path)?;
        }
        self.conn()
            .execute("DELETE FROM adopted_venvs WHERE path = ?1", [path])?;
        Ok(())
    }

    /// Everything recorded about a distribution but its files: name,
    /// version, file name, sha256, size, tags, url and the key it was built
    /// from (sdist sha256 or local project key).
    pub fn distribution_details(&self, id: i64) -> anyhow::Result<DistDetails> {
        let conn = self.conn();
        Ok(conn.query_row(
            "SELECT d.name, d.version, d.filename, d.sha256, d.size, d.tags, d.url, b.sdist_sha256 \
             FROM distributions d LEFT JOIN sdist_builds b ON b.dist_id = d.id WHERE d.id = ?1",
            [id],
            |r| {
                Ok(DistDetails {
                    name: r.get(0)?,
                    version: r.get(1)?,
                    filename: r.get(2)?,
                    sha256: r.get(3)?,
                    size: r.get::<_, i64>(4)? as u64,
                    tags: r.get(5)?,
                    url: r.get(6)?,
                    built_from: r.get(7)?,
                })
            },
        )?)
    }

    /// Every bytecode row (any tag) of these sources.
    pub fn bytecode_of(&self, sources: &[String]) -> anyhow::Result<Vec<BytecodeRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT b.tag, b.pyc, o.size FROM bytecode b LEFT JOIN objects o ON o.key = b.pyc \
             WHERE b.source = ?1 ORDER BY b.tag",
        )?;
        let mut out = Vec::new();
        for source in sources {
            let rows = stmt.query_map([source], |r| {
                let pyc: Option<ObjectKey> = r.get(1)?;
                let size: Option<i64> = r.get(2)?;
                Ok(BytecodeRow {
                    source: source.clone(),
                    tag: r.get(0)?,
                    pyc: pyc.map(|p| (p, size.unwrap_or(0) as u64)),
                })
            })?;
            for row in rows {
                out.push(row?);
            }
        }
        Ok(out)
    }

    /// Object count and total bytes of distinct contents.
    pub fn object_totals(&self) -> anyhow::Result<(u64, u64)> {
        let conn = self.conn();
        let (count, bytes): (i64, i64) = conn.query_row(
            "SELECT count(*), coalesce(sum(size), 0) FROM objects",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((count as u64, bytes as u64))
    }
}

fn object_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ObjectRow> {
    Ok(ObjectRow {
        key: r.get(0)?,
        size: r.get::<_, i64>(1)? as u64,
    })
}

/// Parses an object key the index is given as text (from a record).
fn parse_object_key(text: &str) -> Result<ObjectKey, MalformedValue> {
    ObjectKey::parse(text).ok_or_else(|| MalformedValue {
        text: text.to_owned(),
        expected: "an object key",
    })
}

fn dist_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DistRecord> {
    Ok(DistRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        version: r.get(2)?,
        filename: r.get(3)?,
        sha256: r.get(4)?,
    })
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Inserts `dist` and its files in `tx` unless a distribution with its
/// sha256 is there; adds its sdist mapping either way. Returns its id and
/// whether its record needs writing (new, or a new mapping).
fn insert_distribution_in(
    tx: &rusqlite::Transaction<'_>,
    dist: &NewDistribution<'_>,
    files: &[FileRow],
) -> anyhow::Result<(i64, bool)> {
    let existing: Option<i64> = tx
        .query_row(
            "SELECT id FROM distributions WHERE sha256 = ?1",
            [dist.sha256],
            |r| r.get(0),
        )
        .optional()?;
    let id = match existing {
        Some(id) => id,
        None => {
            tx.execute(
                "INSERT INTO distributions (name, version, filename, sha256, size, tags, url, ingested_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    dist.name,
                    dist.version,
                    dist.filename,
                    dist.sha256,
                    dist.size as i64,
                    dist.tags,
                    dist.url,
                    unix_now()
                ],
            )?;
            let id = tx.last_insert_rowid();
            insert_files(tx, id, files)?;
            id
        }
    };
    if let Some(sdist) = dist.built_from_sdist {
        tx.execute(
            "INSERT OR REPLACE INTO sdist_builds (sdist_sha256, dist_id) VALUES (?1, ?2)",
            params![sdist, id],
        )?;
    }
    Ok((id, existing.is_none() || dist.built_from_sdist.is_some()))
}

/// Whether `path` (in a wheel) is the file `name` directly inside the
/// wheel's top-level `.dist-info` folder.
pub fn is_dist_info_file(path: &str, name: &str) -> bool {
    path.strip_suffix(name)
        .and_then(|dir| dir.strip_suffix('/'))
        .is_some_and(|dir| !dir.contains('/') && dir.ends_with(".dist-info"))
}

/// The record of a distribution just inserted from `dist` and `files`: what
/// [`Db::distribution_entry`] would read back (files in the index's order).
fn new_entry(dist: &NewDistribution<'_>, files: &[FileRow]) -> DistributionEntry {
    let mut files: Vec<FileEntry> = files.iter().map(file_entry).collect();
    files.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    DistributionEntry {
        details: DistDetails {
            name: dist.name.to_string(),
            version: dist.version.to_string(),
            filename: dist.filename.to_string(),
            sha256: dist.sha256.to_string(),
            size: dist.size,
            tags: dist.tags.to_string(),
            url: dist.url.map(str::to_string),
            built_from: dist.built_from_sdist.map(str::to_string),
        },
        files,
    }
}

/// A file row as records and archives carry it.
fn file_entry(row: &FileRow) -> FileEntry {
    FileEntry {
        path: row.path.clone(),
        object: row.object.map(|key| key.to_string()),
        mode: row.mode,
        size: row.size,
        sha256: row.sha256.clone(),
    }
}

fn insert_files(tx: &rusqlite::Transaction<'_>, id: i64, files: &[FileRow]) -> anyhow::Result<()> {
    let mut object_stmt =
        tx.prepare_cached("INSERT OR IGNORE INTO objects (key, size) VALUES (?1, ?2)")?;
    let mut file_stmt = tx.prepare_cached(
        "INSERT INTO files (dist_id, path, object, mode, size, sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for file in files {
        // Formatted once for both rows.
        let object = file.object.map(|key| key.to_string());
        if let Some(object) = &object {
            object_stmt.execute(params![object, file.size as i64])?;
        }
        file_stmt.execute(params![
            id,
            file.path,
            object,
            file.mode,
            file.size as i64,
            file.sha256
        ])?;
    }
    Ok(())
}

/// A record's details as a row to insert.
fn new_distribution(entry: &DistributionEntry) -> NewDistribution<'_> {
    let details = &entry.details;
    NewDistribution {
        name: &details.name,
        version: &details.version,
        filename: &details.filename,
        sha256: &details.sha256,
        size: details.size,
        tags: &details.tags,
        url: details.url.as_deref(),
        built_from_sdist: details.built_from.as_deref(),
    }
}

/// A record's files as rows to insert (their bytecode unknown).
fn file_rows(entry: &DistributionEntry) -> Result<Vec<FileRow>, MalformedValue> {
    entry
        .files
        .iter()
        .map(|f| {
            Ok(FileRow {
                path: f.path.clone(),
                object: f.object.as_deref().map(parse_object_key).transpose()?,
                mode: f.mode,
                size: f.size,
                sha256: f.sha256.clone(),
                bytecode: Bytecode::Unknown,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::store::records::Readable;

    fn key(byte: u8) -> ObjectKey {
        ObjectKey {
            hash: [byte; 32],
            executable: false,
        }
    }

    /// Records a distribution whose only file is `source.py`, the object `key`.
    fn insert_with_source(db: &Db, sha256: &str, key: ObjectKey) -> i64 {
        let files = vec![FileRow {
            path: "m/source.py".into(),
            object: Some(key),
            mode: 0o644,
            size: 3,
            sha256: "x".into(),
            bytecode: Bytecode::Unknown,
        }];
        let dist = NewDistribution {
            name: sha256,
            version: "1",
            filename: "m-1-py3-none-any.whl",
            sha256,
            size: 10,
            tags: "py3-none-any",
            url: None,
            built_from_sdist: None,
        };
        db.insert_distribution(&dist, &files).unwrap()
    }

    fn orphan_keys(db: &Db, ids: &[i64], adopted: &[String]) -> Vec<ObjectKey> {
        let mut keys: Vec<ObjectKey> = db
            .unreferenced_objects_after(ids, adopted)
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn a_dist_info_file_by_path_is_only_the_top_level_one() {
        assert!(is_dist_info_file("m-1.dist-info/METADATA", "METADATA"));
        for path in [
            "vendored/m-1.dist-info/METADATA",
            "m-1.data/METADATA",
            "METADATA",
            "m-1.dist-info/METADATA.bak",
            "m-1.dist-info/sub/METADATA",
        ] {
            assert!(!is_dist_info_file(path, "METADATA"), "{path}");
        }
    }

    /// Rows not read from the index get the bytecode the index would join
    /// to them: compiled, does not compile, unknown, for the empty source
    /// too, only for the tag asked for.
    #[test]
    fn bytecode_added_to_rows_in_memory_is_what_the_index_joins() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("store.db")).unwrap();
        let row = |path: &str, object: Option<ObjectKey>| FileRow {
            path: path.into(),
            object,
            mode: 0o644,
            size: u64::from(object.is_some()),
            sha256: "x".into(),
            bytecode: Bytecode::Unknown,
        };
        let rows = vec![
            row("m/compiled.py", Some(key(1))),
            row("m/broken.py", Some(key(2))),
            row("m/new.py", Some(key(3))),
            row("m/__init__.py", None),
        ];
        let tag = "cpython-311-a70d0d0a";
        let mut fresh = rows.clone();
        db.add_bytecode(&mut fresh, tag).unwrap();
        assert!(fresh.iter().all(|r| r.bytecode == Bytecode::Unknown));

        let dist = NewDistribution {
            name: "m",
            version: "1",
            filename: "m-1-py3-none-any.whl",
            sha256: "m",
            size: 10,
            tags: "py3-none-any",
            url: None,
            built_from_sdist: None,
        };
        let id = db.insert_distribution(&dist, &rows).unwrap();
        db.record_bytecode(
            tag,
            &[
                (key(1).to_string(), Some((key(9), 5))),
                (key(2).to_string(), None),
                (EMPTY_SOURCE.to_string(), Some((key(8), 5))),
            ],
        )
        .unwrap();
        db.record_bytecode("cpython-312-cb0d0d0a", &[(key(3).to_string(), None)])
            .unwrap();
        for tag in [tag, "cpython-312-cb0d0d0a", "cpython-313-f30d0d0a"] {
            let mut in_memory = rows.clone();
            in_memory.sort_by(|a, b| a.path.cmp(&b.path));
            db.add_bytecode(&mut in_memory, tag).unwrap();
            let from_index = db.distribution_files_with_bytecode(id, Some(tag)).unwrap();
            assert_eq!(in_memory, from_index, "{tag}");
        }
        let mut in_memory = rows;
        in_memory.sort_by(|a, b| a.path.cmp(&b.path));
        db.add_bytecode(&mut in_memory, tag).unwrap();
        let states: Vec<_> = in_memory.iter().map(|r| r.bytecode.clone()).collect();
        assert_eq!(
            states,
            [
                Bytecode::Object(key(8)),
                Bytecode::DoesNotCompile,
                Bytecode::Object(key(9)),
                Bytecode::Unknown
            ]
        );
    }

    #[test]
    fn a_pyc_lives_while_its_source_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("store.db")).unwrap();
        let (source, pyc) = (key(1), key(2));
        let a = insert_with_source(&db, "a", source);
        let b = insert_with_source(&db, "b", source);
        db.record_bytecode("cpython-312", &[(source.to_string(), Some((pyc, 5)))])
            .unwrap();
        // b still uses the source: neither it nor its pyc is an orphan.
        assert_eq!(orphan_keys(&db, &[a], &[]), vec![]);
        assert_eq!(orphan_keys(&db, &[a, b], &[]), vec![source, pyc]);
        // The preview changed nothing; the real deletion says the same.
        let mut deleted: Vec<ObjectKey> = db
            .delete_distributions(&[a, b], &[])
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        deleted.sort();
        assert_eq!(deleted, vec![source, pyc]);
        assert_eq!(db.all_objects().unwrap(), vec![]);
    }

    #[test]
    fn an_adopted_venvs_objects_go_only_once_it_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("store.db")).unwrap();
        db.record_adopted("/venvs/old", &[(key(3).to_string(), 7)])
            .unwrap();
        assert_eq!(orphan_keys(&db, &[], &[]), vec![]);
        assert_eq!(orphan_keys(&db, &[], &["/venvs/old".into()]), vec![key(3)]);
    }

    #[test]
    fn a_malformed_key_in_the_index_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("store.db")).unwrap();
        db.conn()
            .execute("INSERT INTO objects (key, size) VALUES ('zz', 1)", [])
            .unwrap();
        let err = db.all_objects().unwrap_err();
        let malformed = err
            .chain()
            .find_map(|cause| {
                let sqlite = cause.downcast_ref::<rusqlite::Error>()?;
                let rusqlite::Error::FromSqlConversionFailure(_, _, inner) = sqlite else {
                    return None;
                };
                inner
                    .downcast_ref::<MalformedValue>()
                    .map(|m| m.text.clone())
            })
            .expect("a MalformedValue in the chain");
        assert_eq!(malformed, "zz");
    }

    /// An index in `dir` that writes its records, and their folder.
    fn db_with_records(dir: &Path) -> (Db, std::path::PathBuf) {
        let records = dir.join("records");
        Records::create_dirs(&records).unwrap();
        let db =
            Db::open_with_records(&dir.join("store.db"), Records::at(records.clone())).unwrap();
        (db, records)
    }

    /// A 3-byte, non-executable file of a wheel.
    fn file_row(path: &str, object: Option<ObjectKey>) -> FileRow {
        FileRow {
            path: path.into(),
            object,
            mode: 0o644,
            size: 3,
            sha256: "x".into(),
            bytecode: Bytecode::Unknown,
        }
    }

    /// A pure-Python wheel of version 1, as ingest records it.
    fn new_wheel<'a>(name: &'a str, filename: &'a str, sha256: &'a str) -> NewDistribution<'a> {
        NewDistribution {
            name,
            version: "1",
            filename,
            sha256,
            size: 10,
            tags: "py3-none-any",
            url: None,
            built_from_sdist: None,
        }
    }

    #[test]
    fn each_distribution_record_is_what_the_index_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let (db, records) = db_with_records(dir.path());
        // Files not in path order, an empty one, an executable one.
        let a_files = vec![
            file_row("a/z.py", Some(key(1))),
            file_row("a/__init__.py", None),
            file_row("a-1.dist-info/METADATA", Some(key(2))),
        ];
        let mut b_files = vec![file_row("b.py", Some(key(1)))];
        b_files[0].mode = 0o755;
        let a = new_wheel("a", "a-1-py3-none-any.whl", "00");
        let b = NewDistribution {
            built_from_sdist: Some("sdist-of-b"),
            url: Some("https://example.org/b-1.tar.gz"),
            ..new_wheel("b", "b-1-py3-none-any.whl", "01")
        };
        let ids = db
            .insert_distributions(&[(a, a_files.as_slice()), (b, b_files.as_slice())])
            .unwrap();
        let read_records = || -> HashMap<String, DistributionEntry> {
            Records::at(records.clone())
                .read_distributions()
                .unwrap()
                .into_iter()
                .map(|r| match r {
                    Readable::Ok(entry) => (entry.details.sha256.clone(), entry),
                    Readable::Damaged(path, why) => panic!("{}: {why}", path.display()),
                })
                .collect()
        };
        let on_disk = read_records();
        assert_eq!(on_disk.len(), 2);
        for (id, sha256) in ids.iter().zip(["00", "01"]) {
            assert_eq!(on_disk[sha256], db.distribution_entry(*id).unwrap());
        }
        // `a` again, now also built from an sdist: its record is rewritten.
        let a_built = NewDistribution {
            built_from_sdist: Some("sdist-of-a"),
            ..a
        };
        assert_eq!(db.insert_distribution(&a_built, &a_files).unwrap(), ids[0]);
        let on_disk = read_records();
        assert_eq!(on_disk["00"], db.distribution_entry(ids[0]).unwrap());
        assert_eq!(
            on_disk["00"].details.built_from.as_deref(),
            Some("sdist-of-a")
        );
    }

    #[test]
    fn an_sdist_given_twice_in_one_batch_is_recorded_as_the_index_maps_it() {
        let dir = tempfile::tempdir().unwrap();
        let (db, records) = db_with_records(dir.path());
        let files = vec![file_row("a.py", Some(key(1)))];
        let first = NewDistribution {
            built_from_sdist: Some("sdist"),
            ..new_wheel("a", "a-1-py3-none-any.whl", "00")
        };
        let second = NewDistribution {
            built_from_sdist: Some("sdist"),
            ..new_wheel("a", "a-1-cp311-none-any.whl", "01")
        };
        let ids = db
            .insert_distributions(&[(first, files.as_slice()), (second, files.as_slice())])
            .unwrap();
        for entry in Records::at(records).read_distributions().unwrap() {
            let Readable::Ok(entry) = entry else {
                panic!("a damaged record")
            };
            let id = ids[usize::from(entry.details.sha256 == "01")];
            assert_eq!(entry, db.distribution_entry(id).unwrap());
        }
        assert_eq!(db.distribution_details(ids[0]).unwrap().built_from, None);
    }

    #[test]
    fn a_dist_info_file_is_found_only_at_the_top_of_the_wheel() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("store.db")).unwrap();
        let metadata = ObjectKey::parse(&"ab".repeat(32));
        let nested = ObjectKey::parse(&"cd".repeat(32));
        let files = vec![
            file_row("a/__init__.py", ObjectKey::parse(&"ef".repeat(32))),
            file_row("a/vendored/b-2.dist-info/METADATA", nested),
            file_row("a-1.dist-info/METADATA", metadata),
            file_row("a-1.dist-info/INSTALLER", None),
        ];
        let dist = new_wheel("a", "a-1-py3-none-any.whl", "00");
        let id = db.insert_distribution(&dist, &files).unwrap();
        assert_eq!(db.dist_info_file(id, "METADATA").unwrap(), Some(metadata));
        // An empty file is there, with no object.
        assert_eq!(db.dist_info_file(id, "INSTALLER").unwrap(), Some(None));
        assert_eq!(db.dist_info_file(id, "RECORD").unwrap(), None);
        // Only the nested copy has this one: not the distribution's own.
        let only_nested = vec![file_row("a/vendored/b-2.dist-info/METADATA", nested)];
        let other = new_wheel("b", "b-1-py3-none-any.whl", "01");
        let id = db.insert_distribution(&other, &only_nested).unwrap();
        assert_eq!(db.dist_info_file(id, "METADATA").unwrap(), None);
    }

    #[test]
    fn reopening_keeps_data_and_rejects_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let db = Db::open(&path).unwrap();
        let files = vec![FileRow {
            path: "a/__init__.py".into(),
            object: ObjectKey::parse(&"ab".repeat(32)),
            mode: 0o644,
            size: 3,
            sha256: "x".into(),
            bytecode: Bytecode::Unknown,
        }];
        let dist = new_wheel("a", "a-1-py3-none-any.whl", "00");
        let id = db.insert_distribution(&dist, &files).unwrap();
        // A second insert of the same wheel is the same record.
        assert_eq!(db.insert_distribution(&dist, &files).unwrap(), id);
        drop(db);
        let db = Db::open(&path).unwrap();
        assert_eq!(db.distribution_files(id).unwrap(), files);
        assert_eq!(db.object_totals().unwrap(), (1, 3));
        drop(db);

        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let err = Db::open(&path).err().unwrap().to_string();
        assert!(err.contains("newer than this tstore"), "{err}");
    }
}

//! Whether the index can be trusted: cheap checks every open makes, so that
//! nothing writes or deletes on the word of an index that lost data.
//!
//! - The index file is missing or empty while the store holds objects or
//!   records: it was deleted or truncated.
//! - SQLite cannot read it (a damaged header, say).
//! - Records on disk name distributions, generations or adopted venvs the
//!   index does not know (see [`super::records`]): it is older than the disk.
//! - In a store from before records: the index knows no object while object
//!   files exist.
//!
//! SQLite's own page check (`quick_check`) reads the whole file, so it runs
//! only where the index decides deletions (gc) and in `verify`.

use std::path::PathBuf;

use super::Layout;
use super::db::Db;
use super::records::Records;

/// The index failed a check; what to do is in the message.
#[derive(Debug, thiserror::Error)]
#[error(
    "the store index {} cannot be trusted: {problem}\n  \
     Nothing was changed. Rebuild it from the store's own files with `tstore verify --repair` \
     (the damaged index is kept beside it).",
    path.display()
)]
pub struct IndexDamaged {
    pub path: PathBuf,
    pub problem: IndexProblem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexProblem {
    #[error("it is missing, while the store holds objects or records")]
    Missing,
    #[error("it is empty, while the store holds objects or records")]
    Empty,
    #[error("SQLite cannot read it ({0})")]
    Unreadable(String),
    #[error("SQLite reports it malformed: {}", .0.join("; "))]
    Malformed(Vec<String>),
    #[error(
        "it does not know {distributions} distribution(s), {generations} generation(s) and \
         {adopted} adopted venv(s) that the store's records describe"
    )]
    Behind {
        distributions: usize,
        generations: usize,
        adopted: usize,
    },
}

/// Before the index is opened: a missing or zero-length file in a store
/// that has content is a lost index (opening it would make a new, empty one).
pub fn check_index_file(layout: &Layout, records: &Records) -> Option<IndexProblem> {
    let problem = match std::fs::metadata(layout.index_path()) {
        Err(_) => IndexProblem::Missing,
        Ok(meta) if meta.len() == 0 => IndexProblem::Empty,
        Ok(_) => return None,
    };
    (has_records(records) || any_object(layout)).then_some(problem)
}

/// After the index is opened: does it know everything the records describe,
/// and any object when object files exist?
pub fn check_index(layout: &Layout, db: &Db, records: &Records) -> Option<IndexProblem> {
    match behind_records(db, records) {
        Err(err) => return Some(unreadable(&err)),
        Ok(Some(problem)) => return Some(problem),
        Ok(None) => {}
    }
    // With records, an emptied index is caught by them; objects without
    // rows are then only what an interrupted or refused run left (gc's).
    // A store from before records has nothing else to go by.
    match db.record_keys() {
        Err(err) => Some(unreadable(&err)),
        Ok(keys) if !keys.has_objects && !records.exist() && any_object(layout) => {
            Some(IndexProblem::Empty)
        }
        Ok(_) => None,
    }
}

/// Records first, then the index: a record is written after its row and
/// removed before it, so this order never sees a record of a row being
/// added as unknown. A record of a row being deleted can be; those are
/// looked at again.
fn behind_records(db: &Db, records: &Records) -> anyhow::Result<Option<IndexProblem>> {
    let dists = records.distribution_keys()?;
    let generations = records.generation_keys()?;
    let adopted = records.adopted_keys()?;
    let index = db.record_keys()?;
    let unknown = |have: &std::collections::HashSet<String>,
                   known: &std::collections::HashSet<String>| {
        have.difference(known).cloned().collect::<Vec<_>>()
    };
    let suspects = (
        unknown(&dists, &index.distributions),
        unknown(&generations, &index.generations),
        unknown(&adopted, &index.adopted),
    );
    if suspects.0.is_empty() && suspects.1.is_empty() && suspects.2.is_empty() {
        return Ok(None);
    }
    // Again, for suspects only: still recorded, and still unknown?
    let dists = records.distribution_keys()?;
    let generations = records.generation_keys()?;
    let adopted = records.adopted_keys()?;
    let index = db.record_keys()?;
    let confirmed = |suspects: Vec<String>,
                     have: &std::collections::HashSet<String>,
                     known: &std::collections::HashSet<String>| {
        suspects
            .into_iter()
            .filter(|k| have.contains(k) && !known.contains(k))
            .count()
    };
    let problem = IndexProblem::Behind {
        distributions: confirmed(suspects.0, &dists, &index.distributions),
        generations: confirmed(suspects.1, &generations, &index.generations),
        adopted: confirmed(suspects.2, &adopted, &index.adopted),
    };
    Ok(match problem {
        IndexProblem::Behind {
            distributions: 0,
            generations: 0,
            adopted: 0,
        } => None,
        problem => Some(problem),
    })
}

fn has_records(records: &Records) -> bool {
    [
        records.distribution_keys(),
        records.generation_keys(),
        records.adopted_keys(),
    ]
    .into_iter()
    .any(|keys| keys.is_ok_and(|k| !k.is_empty()))
}

/// Whether any object file exists (stops at the first).
pub fn any_object(layout: &Layout) -> bool {
    let Ok(shards) = std::fs::read_dir(layout.objects_dir()) else {
        return false;
    };
    shards.flatten().any(|shard| {
        std::fs::read_dir(shard.path()).is_ok_and(|mut entries| entries.next().is_some())
    })
}

fn unreadable(err: &anyhow::Error) -> IndexProblem {
    let corrupt = err.chain().any(|cause| {
        cause
            .downcast_ref::<rusqlite::Error>()
            .and_then(rusqlite::Error::sqlite_error_code)
            .is_some_and(|code| {
                matches!(
                    code,
                    rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
                )
            })
    });
    if corrupt {
        IndexProblem::Malformed(vec![format!("{err:#}")])
    } else {
        IndexProblem::Unreadable(format!("{err:#}"))
    }
}

/// Whether an error comes from a damaged index file (SQLite's "malformed"
/// or "not a database"), wherever in the program it surfaced.
pub fn is_index_damage(err: &anyhow::Error) -> bool {
    matches!(unreadable(err), IndexProblem::Malformed(_))
}

//! Recording a new store's wheels while their venv is built.
//!
//! A first install's wheels (those whose objects the fetch staged: shards
//! that were empty when it began) come out of the fetch unrecorded
//! ([`crate::fetch::Stored::Unrecorded`]): their objects are in `objects/`,
//! their rows only in memory. Writing those rows is one long transaction
//! (31,013 rows for tekton-dev: 0.24-0.45 s on ext4 alone, 0.5-0.6 s beside
//! linking) that would otherwise sit between the last download and the
//! first link. It runs here on another thread, on a connection of its own,
//! while the venv is planned and linked from the same rows.
//!
//! What keeps this safe:
//! - the generation is recorded, and the tier's path switched to it, only
//!   after the rows commit ([`Recording::dist_ids`]): a generation row never
//!   names a distribution the index lacks;
//! - `gc` and repair wait for the store-wide lock this run holds, so no
//!   object of these wheels can go while their rows are being written;
//! - a kill before the commit leaves published objects without rows, which
//!   a kill between publishing the stage and recording always could: `gc`
//!   removes them, a rerun downloads the wheels again and finds the objects
//!   in place.

use std::cell::RefCell;
use std::thread::{Scope, ScopedJoinHandle};

use crate::fetch::{self, Fetched};
use crate::progress::{Progress, timed};
use crate::store::Store;

/// The recording of a tier's unrecorded wheels, running or done. Used by
/// the thread that started it.
pub struct Recording<'scope> {
    state: RefCell<State<'scope>>,
}

type Running<'scope> = ScopedJoinHandle<'scope, anyhow::Result<Vec<i64>>>;

enum State<'scope> {
    /// Recording on its own thread.
    Running(Running<'scope>),
    /// Every item's id, in the order of the tier's fetched items.
    Done(Vec<i64>),
    /// The error was returned to the first caller that waited.
    Failed,
}

impl<'scope> Recording<'scope> {
    /// Starts recording the wheels of `fetched` the index lacks, if any, on
    /// a thread of `scope` with a connection of its own to the index.
    pub fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        store: &'env Store,
        fetched: &'env [Fetched],
        progress: &'env dyn Progress,
    ) -> Self {
        let count = fetch::unrecorded_count(fetched);
        let state = if count == 0 {
            State::Done(fetched.iter().filter_map(Fetched::dist_id).collect())
        } else {
            State::Running(scope.spawn(move || {
                // This thread's write would otherwise hold the connection
                // that planning reads with.
                let db = store.db.open_another()?;
                let step = format!("recording {count} staged wheels (while linking)");
                timed(progress, &step, || fetch::record(&db, fetched))
            }))
        };
        Self {
            state: RefCell::new(state),
        }
    }

    /// Every fetched item's id in the index, in order, once the recording
    /// has committed (waits for it).
    pub fn dist_ids(&self) -> anyhow::Result<Vec<i64>> {
        let mut state = self.state.borrow_mut();
        // Failed until the thread is joined without error.
        *state = match std::mem::replace(&mut *state, State::Failed) {
            State::Running(running) => State::Done(join(running)?),
            other => other,
        };
        match &*state {
            State::Done(ids) => Ok(ids.clone()),
            _ => anyhow::bail!("recording the new wheels in the store index failed"),
        }
    }

    /// Waits for the recording; its error, if it failed and no caller of
    /// [`Recording::dist_ids`] has seen it yet.
    pub fn finish(self) -> anyhow::Result<()> {
        match self.state.into_inner() {
            State::Running(running) => join(running).map(drop),
            State::Done(_) | State::Failed => Ok(()),
        }
    }
}

/// What the recording thread gave; its panic goes on in this thread.
fn join(running: Running<'_>) -> anyhow::Result<Vec<i64>> {
    running
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

//! The store's upkeep: what keeps it small and sound once tiers are built.
//!
//! `gc` deletes what no root needs, `verify` checks objects and venvs against
//! the index (and repairs or rebuilds it), `du` says where the bytes are, and
//! `adopt` brings venvs made by other tools into the store. `doctor` checks
//! what a materialize depends on and says how to fix what fails.

pub mod adopt;
pub mod doctor;
pub mod du;
pub mod gc;
pub mod verify;

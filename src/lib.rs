//! tstore: many Python virtual environments for the disk price of one.
//!
//! The data flow, one module per step:
//!
//! ```text
//! config (tiers.toml) ─► lock (uv → pylock.<tier>.toml) ─► fetch (download, verify)
//!        ─► store (ingest: wheel → blake3 objects + SQLite) ─► materialize (plan, link, swap)
//! ```
//!
//! `uv` runs uv; `interpreter` describes the base Python (markers, tags);
//! `dist` holds the selected distributions that lock hands to the later
//! steps; `http` downloads one file, hashed as it streams;
//! `progress` is how the library reports to whoever drives it.

pub mod activate;
pub mod budget;
pub mod check;
pub mod config;
pub mod dist;
pub mod failures;
pub mod fetch;
pub mod fsinfo;
pub mod http;
pub mod interpreter;
pub mod link;
pub mod local;
pub mod lock;
pub mod materialize;
pub mod platform;
pub mod process;
pub mod progress;
pub mod store;
pub mod sync;
pub mod transfer;
pub mod upkeep;
pub mod uv;

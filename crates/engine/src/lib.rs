//! The projection engine: every lead's facts in compact form, indexes maintained by fact
//! differences, and immutable snapshots that readers use without waiting for the writer.
//!
//! - [`state::Writer`] applies log entries: each changed lead is re-derived once per batch
//!   ([`facts::derive`]: the oracle's rules over [`record::Rec`]s' symbols) and the difference
//!   of its old and new facts goes into the [`state::FunnelIndex`].
//! - [`state::Engine`] is one published state; [`funnel::funnel`] and [`reports`] answer
//!   every report from it, byte-identical to the fold in `funnel_core::report`.
//! - [`live::Live`] keeps an engine up with the ledger; [`live::replay`] builds one for any
//!   log prefix (without the history: it is asked only about its own head).
//!
//! No tokio, no NATS, no HTTP: this crate is what both the service and offline replay run.

pub mod checkpoint;
pub mod credits;
pub mod dict;
pub mod facts;
pub mod funnel;
mod gather;
pub mod heap;
pub mod history;
mod id_slots;
pub mod index;
pub mod live;
pub mod markov;
mod metrics;
pub mod packed;
pub mod record;
pub mod reports;
pub mod slots;
pub mod state;

pub use live::{replay, replay_unless, Live};
pub use metrics::Metrics;
pub use state::{Engine, Target, Writer};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The ledger failed or is damaged: stop and report.
    #[error(transparent)]
    Ledger(#[from] funnel_ledger::LedgerError),
    /// The log fed to the engine has a gap: an invariant broke; stop loudly and rebuild.
    #[error(transparent)]
    Projection(#[from] funnel_core::projection::ProjectionError),
    /// The engine's checkpoint is damaged or does not match the ledger: rebuild from the log.
    #[error("engine checkpoint: {0}")]
    Checkpoint(String),
    /// A replay was stopped because nobody waits for its answer any more.
    #[error("replay cancelled: the request is gone")]
    Cancelled,
}

/// Wall-clock time in microseconds since the epoch (recording time, and `as_of` by default).
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

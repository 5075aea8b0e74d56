//! Ingest and projection: everything between JetStream and the query service.
//!
//! [`ingest::run`] pulls batches from the durable consumer, appends valid events to the
//! [`funnel_ledger::Ledger`], flushes, dead-letters refused events and only then acks.
//! [`live::Live`] keeps a [`funnel_core::Projection`] caught up with the ledger and
//! checkpoints it; [`live::replay`] is the same fold, offline, over any prefix of the log.

pub mod ingest;
pub mod live;
mod metrics;
mod settings;

pub use live::{replay, Live, Origin};
pub use metrics::Metrics;
pub use settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// The ledger failed or is damaged: stop, report, do not ack.
    #[error(transparent)]
    Ledger(#[from] funnel_ledger::LedgerError),
    /// The projection refused the log (a gap): an invariant broke; stop loudly.
    #[error(transparent)]
    Projection(#[from] funnel_core::projection::ProjectionError),
    /// The checkpoint store failed.
    #[error("checkpoint store: {0}")]
    Store(#[from] sled::Error),
    /// NATS or JetStream refused a setup step or the pull loop ended; retry after reconnecting.
    #[error("nats: {0}")]
    Nats(String),
}

/// Wall-clock time in microseconds since the epoch (recording time).
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

//! Ingest and projection: everything between JetStream and the query service.
//!
//! [`ingest::run`] pulls batches from the durable consumer, appends valid events to the
//! [`funnel_ledger::Ledger`], flushes, dead-letters refused events and only then acks.
//! [`live::run`] keeps a [`funnel_engine::Live`] caught up with the ledger after every batch.

pub mod ingest;
pub mod live;
mod settings;

pub use funnel_engine::{now_micros, Metrics};
pub use settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// The ledger failed or is damaged: stop, report, do not ack.
    #[error(transparent)]
    Ledger(#[from] funnel_ledger::LedgerError),
    /// The engine refused the log (a gap) or could not read it: stop loudly.
    #[error(transparent)]
    Engine(#[from] funnel_engine::EngineError),
    /// NATS or JetStream refused a setup step or the pull loop ended; retry after reconnecting.
    #[error("nats: {0}")]
    Nats(String),
}

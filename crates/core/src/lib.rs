//! The funnel domain, with no I/O and no clock: the event contract ([`event`]), the rules in
//! force over time ([`rules`]), each lead's milestones re-derived from its own events
//! ([`lead`]), the projection that folds the log ([`projection`]) and the reports computed
//! from it ([`report`]). Everything here is deterministic, so it can be property-tested and
//! so that live service and offline replay agree byte for byte.

pub mod attribution;
pub mod event;
pub mod lead;
pub mod projection;
pub mod report;
pub mod rules;
pub mod simulate;
pub mod time;

pub use event::{Event, Reason, Rejection};
pub use projection::{Entry, LogPosition, Projection};

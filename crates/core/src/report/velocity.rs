//! `GET /v1/velocity`: how long leads take, inquiry to won and stage to stage.

use serde::Serialize;

use super::{days, window_fields, Log, Stats, Window};
use crate::lead::Milestone;
use crate::projection::{LogPosition, Projection};
use crate::time::{format_rfc3339, Micros};

/// Durations between two consecutive milestones.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageDurations {
    pub from: &'static str,
    pub to: &'static str,
    /// Days, over leads that reached `to` in the window and had reached `from` before.
    pub days: Stats,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VelocityReport {
    pub log: Log,
    pub as_of: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Sales cycle: days from inquiry to won, over leads won in the window.
    pub cycle_days: Stats,
    pub stages: Vec<StageDurations>,
}

/// The waterfall's consecutive pairs.
pub const PAIRS: [(Milestone, Milestone); 5] = [
    (Milestone::Inquiry, Milestone::Mql),
    (Milestone::Mql, Milestone::Sal),
    (Milestone::Sal, Milestone::Sql),
    (Milestone::Sql, Milestone::Opportunity),
    (Milestone::Opportunity, Milestone::Won),
];

pub fn velocity(projection: &Projection, window: Window, as_of: Micros) -> VelocityReport {
    let facts: Vec<_> = projection.leads().values().filter_map(|s| s.facts.as_ref()).collect();
    velocity_of(projection.head(), window, as_of, |a, b| {
        facts
            .iter()
            .filter_map(|f| {
                let end = f.milestone_at(b, as_of).filter(|t| window.contains(*t))?;
                Some(days(end - f.milestone_at(a, as_of)?))
            })
            .collect()
    })
}

/// The velocity report from `between(a, b)`: the sample of days from `a` to `b` over leads
/// that reached `b` in the window (the fold and the engine share it).
pub fn velocity_of(
    head: LogPosition,
    window: Window,
    as_of: Micros,
    between: impl Fn(Milestone, Milestone) -> Vec<f64>,
) -> VelocityReport {
    let between = |a, b| Stats::of(between(a, b));
    let (from, to) = window_fields(&window);
    VelocityReport {
        log: head.into(),
        as_of: format_rfc3339(as_of),
        from,
        to,
        cycle_days: between(Milestone::Inquiry, Milestone::Won),
        stages: PAIRS
            .iter()
            .map(|(a, b)| StageDurations {
                from: a.as_str(),
                to: b.as_str(),
                days: between(*a, *b),
            })
            .collect(),
    }
}

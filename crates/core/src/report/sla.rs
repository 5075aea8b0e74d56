//! `GET /v1/sla`: did sales answer handoffs within the SLA in force when they were made?

use serde::Serialize;

use super::{nearest_rank, window_fields, Log, Window};
use crate::lead::Handoff;
use crate::projection::{LogPosition, Projection};
use crate::time::{format_rfc3339, Micros, MICROS_PER_HOUR};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlaReport {
    pub log: Log,
    pub as_of: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Handoffs to sales made in the window (and by `as_of`).
    pub handoffs: u64,
    pub answered_in_sla: u64,
    pub answered_late: u64,
    /// Unanswered and past the deadline at `as_of`.
    pub open_overdue: u64,
    /// Unanswered, deadline not yet passed at `as_of`.
    pub open_in_sla: u64,
    /// answered_late + open_overdue.
    pub breached: u64,
    /// Hours from handoff to answer, over answered handoffs (nearest-rank percentiles).
    pub response_hours_p50: Option<f64>,
    pub response_hours_p90: Option<f64>,
}

pub fn sla(projection: &Projection, window: Window, as_of: Micros) -> SlaReport {
    let handoffs = projection
        .leads()
        .values()
        .filter_map(|s| s.facts.as_ref())
        .flat_map(|f| &f.handoffs);
    sla_of(projection.head(), handoffs, window, as_of)
}

/// The SLA report over these handoffs (in any order): the fold and the engine share it.
pub fn sla_of<'a>(
    head: LogPosition,
    handoffs: impl Iterator<Item = &'a Handoff>,
    window: Window,
    as_of: Micros,
) -> SlaReport {
    let (from, to) = window_fields(&window);
    let mut r = SlaReport {
        log: head.into(),
        as_of: format_rfc3339(as_of),
        from,
        to,
        handoffs: 0,
        answered_in_sla: 0,
        answered_late: 0,
        open_overdue: 0,
        open_in_sla: 0,
        breached: 0,
        response_hours_p50: None,
        response_hours_p90: None,
    };
    let mut response_hours = Vec::new();
    for h in handoffs.filter(|h| h.at <= as_of && window.contains(h.at)) {
        r.handoffs += 1;
        match h.answered_by(as_of) {
            Some(answer) => {
                response_hours.push((answer - h.at) as f64 / MICROS_PER_HOUR as f64);
                if answer <= h.deadline {
                    r.answered_in_sla += 1;
                } else {
                    r.answered_late += 1;
                }
            }
            None if as_of > h.deadline => r.open_overdue += 1,
            None => r.open_in_sla += 1,
        }
    }
    r.breached = r.answered_late + r.open_overdue;
    response_hours.sort_by(f64::total_cmp);
    if !response_hours.is_empty() {
        r.response_hours_p50 = Some(nearest_rank(&response_hours, 0.5));
        r.response_hours_p90 = Some(nearest_rank(&response_hours, 0.9));
    }
    r
}

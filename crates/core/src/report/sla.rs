//! `GET /v1/sla`: did sales answer handoffs within the SLA in force when they were made?

use serde::Serialize;

use super::{nearest_rank, window_fields, Log, Window};
use crate::lead::Handoff;
use crate::projection::{LogPosition, Projection};
use crate::time::{format_rfc3339, Micros, MICROS_PER_HOUR};

/// At most this many overdue handoffs are listed (the most overdue first); `open_overdue`
/// counts them all.
pub const OVERDUE_LISTED: usize = 100;

/// A handoff to sales still unanswered past its deadline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OverdueHandoff {
    pub lead_id: String,
    pub handed_off_at: String,
    pub deadline: String,
    pub overdue_hours: f64,
}

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
    /// The open overdue handoffs, most overdue first (by deadline, then lead id, then time),
    /// at most [`OVERDUE_LISTED`].
    pub overdue: Vec<OverdueHandoff>,
}

pub fn sla(projection: &Projection, window: Window, as_of: Micros) -> SlaReport {
    let handoffs = projection
        .leads()
        .iter()
        .filter_map(|(id, s)| Some((id.as_str(), s.facts.as_ref()?)))
        .flat_map(|(id, f)| f.handoffs.iter().map(move |h| (id, h)));
    sla_of(projection.head(), handoffs, window, as_of, str::to_owned)
}

/// The SLA report over these handoffs (in any order), each with a key naming its lead
/// (`lead_id` turns a key into the id, only for the overdue ones listed): the fold and the
/// engine share it.
pub fn sla_of<'a, K: Copy>(
    head: LogPosition,
    handoffs: impl Iterator<Item = (K, &'a Handoff)>,
    window: Window,
    as_of: Micros,
    lead_id: impl Fn(K) -> String,
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
        overdue: Vec::new(),
    };
    let mut response_hours = Vec::new();
    let mut overdue: Vec<(Micros, Micros, K)> = Vec::new();
    for (key, h) in handoffs.filter(|(_, h)| h.at <= as_of && window.contains(h.at)) {
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
            None if as_of > h.deadline => {
                r.open_overdue += 1;
                overdue.push((h.deadline, h.at, key));
            }
            None => r.open_in_sla += 1,
        }
    }
    r.breached = r.answered_late + r.open_overdue;
    // The most overdue first: keep those with the earliest deadlines (ties included), then
    // name and order them exactly, whatever order the handoffs came in.
    if overdue.len() > OVERDUE_LISTED {
        overdue.select_nth_unstable_by_key(OVERDUE_LISTED - 1, |o| o.0);
        let cut = overdue[OVERDUE_LISTED - 1].0;
        overdue.retain(|o| o.0 <= cut);
    }
    let mut named: Vec<(Micros, String, Micros)> = overdue.into_iter().map(|(d, at, k)| (d, lead_id(k), at)).collect();
    named.sort();
    named.truncate(OVERDUE_LISTED);
    r.overdue = named
        .into_iter()
        .map(|(deadline, lead_id, at)| OverdueHandoff {
            lead_id,
            handed_off_at: format_rfc3339(at),
            deadline: format_rfc3339(deadline),
            overdue_hours: (as_of - deadline) as f64 / MICROS_PER_HOUR as f64,
        })
        .collect();
    response_hours.sort_by(f64::total_cmp);
    if !response_hours.is_empty() {
        r.response_hours_p50 = Some(nearest_rank(&response_hours, 0.5));
        r.response_hours_p90 = Some(nearest_rank(&response_hours, 0.9));
    }
    r
}

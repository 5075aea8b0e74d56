//! The rules in force over business time, changed by `rules` events from their `occurred_at` on.

use serde::{Deserialize, Serialize};

use crate::event::RulesChange;
use crate::time::Micros;

/// The rules in force at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rules {
    pub mql_score_threshold: f64,
    pub handoff_sla_hours: f64,
    pub attribution_lookback_days: f64,
    pub time_decay_half_life_days: f64,
}

impl Default for Rules {
    /// DESIGN.md §4: threshold 50, SLA 24 h, lookback 365 days, half-life 7 days.
    fn default() -> Self {
        Rules {
            mql_score_threshold: 50.0,
            handoff_sla_hours: 24.0,
            attribution_lookback_days: 365.0,
            time_decay_half_life_days: 7.0,
        }
    }
}

impl Rules {
    fn with(mut self, change: &RulesChange) -> Rules {
        if let Some(v) = change.mql_score_threshold {
            self.mql_score_threshold = v;
        }
        if let Some(v) = change.handoff_sla_hours {
            self.handoff_sla_hours = v;
        }
        if let Some(v) = change.attribution_lookback_days {
            self.attribution_lookback_days = v;
        }
        if let Some(v) = change.time_decay_half_life_days {
            self.time_decay_half_life_days = v;
        }
        self
    }
}

/// One recorded change: when it takes effect, its log position, its event id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RulesEntry {
    pub occurred_at: Micros,
    pub seq: u64,
    pub id: String,
    pub change: RulesChange,
}

/// Every live (not retracted) rules change, ordered by `(occurred_at, seq)`, with the
/// cumulative rules after each so that a lookup is a binary search.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RulesTimeline {
    entries: Vec<RulesEntry>,
    in_force: Vec<Rules>,
}

impl RulesTimeline {
    pub fn insert(&mut self, entry: RulesEntry) {
        let at = self
            .entries
            .partition_point(|e| (e.occurred_at, e.seq) < (entry.occurred_at, entry.seq));
        self.entries.insert(at, entry);
        self.recompute();
    }

    /// Removes the change with this event id; true if there was one.
    pub fn remove(&mut self, id: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.id != id);
        self.recompute();
        before != self.entries.len()
    }

    fn recompute(&mut self) {
        let mut rules = Rules::default();
        self.in_force = self
            .entries
            .iter()
            .map(|e| {
                rules = rules.with(&e.change);
                rules
            })
            .collect();
    }

    /// The rules in force at `t`: every change with `occurred_at <= t` applied in order.
    pub fn at(&self, t: Micros) -> Rules {
        let n = self.entries.partition_point(|e| e.occurred_at <= t);
        n.checked_sub(1).map_or_else(Rules::default, |i| self.in_force[i])
    }

    pub fn entries(&self) -> &[RulesEntry] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(threshold: f64) -> RulesChange {
        RulesChange {
            mql_score_threshold: Some(threshold),
            ..RulesChange::default()
        }
    }

    #[test]
    fn rules_apply_from_their_occurred_at_on() {
        let mut timeline = RulesTimeline::default();
        timeline.insert(RulesEntry {
            occurred_at: 100,
            seq: 5,
            id: "r2".into(),
            change: change(70.0),
        });
        timeline.insert(RulesEntry {
            occurred_at: 50,
            seq: 9,
            id: "r1".into(),
            change: change(60.0),
        });
        assert_eq!(timeline.at(49).mql_score_threshold, 50.0);
        assert_eq!(timeline.at(50).mql_score_threshold, 60.0);
        assert_eq!(timeline.at(99).mql_score_threshold, 60.0);
        assert_eq!(timeline.at(100).mql_score_threshold, 70.0);
        assert_eq!(timeline.at(100).handoff_sla_hours, 24.0);
        assert!(timeline.remove("r1"));
        assert_eq!(timeline.at(60).mql_score_threshold, 50.0);
    }
}

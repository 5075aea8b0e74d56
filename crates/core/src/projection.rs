//! The projection: every lead's events and derived facts, the rules timeline and spend,
//! advanced one log entry at a time. The live service and offline replay run this same code.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::event::{Data, Event};
use crate::lead::{LeadEvent, LeadFacts};
use crate::rules::{RulesEntry, RulesTimeline};
use crate::time::Micros;

/// Bump when the projection's stored shape or semantics change: a stored snapshot with
/// another version is discarded and the projection is rebuilt from the log.
pub const PROJECTION_FORMAT_VERSION: u32 = 3;

/// A log position: the last applied seq and its chain hash (seq 0 = empty log).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPosition {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl LogPosition {
    pub fn hash_hex(&self) -> String {
        hex(&self.hash)
    }
}

/// Lowercase hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One ledger entry: an event and where and when it was recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    /// Recording time; never decreases along the log.
    pub recorded_at: Micros,
    /// The JetStream stream sequence it came from (0 when imported or appended directly).
    pub stream_seq: u64,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
    pub event: Event,
}

impl Entry {
    /// Events as log entries 1, 2, … with zero hashes and recording times: for folding events
    /// that never went through a ledger (tests, benchmarks, analyses).
    pub fn numbered(events: impl IntoIterator<Item = Event>) -> Vec<Entry> {
        events
            .into_iter()
            .enumerate()
            .map(|(i, event)| Entry {
                seq: i as u64 + 1,
                recorded_at: 0,
                stream_seq: 0,
                prev_hash: [0; 32],
                hash: [0; 32],
                event,
            })
            .collect()
    }
}

/// Where an event id lives in the projection, so a retraction can find its target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Location {
    Lead(String),
    Rules,
    Spend,
    Retract,
}

/// All events of one lead, sorted by `(occurred_at, seq)`, retracted ones removed, and their facts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeadState {
    pub events: Vec<LeadEvent>,
    pub facts: Option<LeadFacts>,
}

/// What a run of inserted entries changed: leads to re-derive, and the earliest rules change.
#[derive(Default)]
struct Changed {
    leads: std::collections::HashSet<String>,
    rules_from: Option<Micros>,
}

impl Changed {
    fn rules_from(&mut self, t: Micros) {
        self.rules_from = Some(self.rules_from.map_or(t, |f| f.min(t)));
    }
}

/// Why the projection refused an entry: the log it is fed is not contiguous.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectionError {
    /// Entries must arrive with seq = head + 1. A caller should stop and rebuild from the log.
    #[error("log gap: expected seq {expected}, got {got}")]
    Gap { expected: u64, got: u64 },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Projection {
    head: LogPosition,
    leads: BTreeMap<String, LeadState>,
    rules: RulesTimeline,
    spends: BTreeMap<u64, Event>,
    locations: HashMap<String, Location>,
    /// Retracted event id → seq of the retraction.
    retracted: HashMap<String, u64>,
}

impl Projection {
    /// Folds events as if they were log entries 1, 2, … (zero hashes): a projection for tests,
    /// benchmarks and analyses that start from events rather than a ledger.
    pub fn of_events(events: &[Event]) -> Projection {
        let mut projection = Projection::default();
        // Seqs are contiguous from 1, so the fold cannot refuse them.
        let _ = projection.apply_owned(Entry::numbered(events.iter().cloned()));
        projection
    }

    pub fn head(&self) -> LogPosition {
        self.head
    }

    pub fn leads(&self) -> &BTreeMap<String, LeadState> {
        &self.leads
    }

    pub fn lead(&self, lead_id: &str) -> Option<&LeadState> {
        self.leads.get(lead_id)
    }

    pub fn rules(&self) -> &RulesTimeline {
        &self.rules
    }

    /// Live spend events by seq.
    pub fn spends(&self) -> &BTreeMap<u64, Event> {
        &self.spends
    }

    /// The seq of the retraction of `event_id`, if it was retracted.
    pub fn retracted_by(&self, event_id: &str) -> Option<u64> {
        self.retracted.get(event_id).copied()
    }

    /// Applies the next log entry. Entries must come in seq order with no gaps.
    pub fn apply(&mut self, entry: &Entry) -> Result<(), ProjectionError> {
        self.apply_all(std::slice::from_ref(entry))
    }

    /// Applies consecutive log entries, re-deriving each lead they touch once at the end:
    /// the same state as applying them one by one, for a fraction of the work on long runs.
    pub fn apply_all(&mut self, entries: &[Entry]) -> Result<(), ProjectionError> {
        self.apply_owned(entries.to_vec())
    }

    /// [`Projection::apply_all`] taking the entries by value, so their events move in uncopied.
    pub fn apply_owned(&mut self, entries: Vec<Entry>) -> Result<(), ProjectionError> {
        let mut changed = Changed::default();
        for entry in entries {
            if let Err(e) = self.insert(entry, &mut changed) {
                self.settle(changed);
                return Err(e);
            }
        }
        self.settle(changed);
        Ok(())
    }

    /// Records one entry without deriving anything; notes what must be re-derived.
    fn insert(&mut self, entry: Entry, changed: &mut Changed) -> Result<(), ProjectionError> {
        let expected = self.head.seq + 1;
        if entry.seq != expected {
            return Err(ProjectionError::Gap {
                expected,
                got: entry.seq,
            });
        }
        self.head = LogPosition {
            seq: entry.seq,
            hash: entry.hash,
        };
        let Entry { seq, event, .. } = entry;
        match &event.data {
            Data::Rules(change) => {
                self.locations.insert(event.id.clone(), Location::Rules);
                let rules = RulesEntry {
                    occurred_at: event.occurred_at,
                    seq,
                    id: event.id.clone(),
                    change: change.clone(),
                };
                self.rules.insert(rules);
                changed.rules_from(event.occurred_at);
            }
            Data::Spend { .. } => {
                self.locations.insert(event.id.clone(), Location::Spend);
                self.spends.insert(seq, event);
            }
            Data::Retract { target_id, .. } => {
                self.locations.insert(event.id.clone(), Location::Retract);
                self.retract(target_id, seq, changed);
            }
            _ => {
                let Some(lead_id) = event.lead_id.clone() else {
                    return Ok(());
                };
                self.locations.insert(event.id.clone(), Location::Lead(lead_id.clone()));
                if !changed.leads.contains(&lead_id) {
                    changed.leads.insert(lead_id.clone());
                }
                let state = match self.leads.get_mut(&lead_id) {
                    Some(state) => state,
                    None => self.leads.entry(lead_id).or_default(),
                };
                let lead_event = LeadEvent { seq, event };
                let at = state.events.partition_point(|e| e.order_key() < lead_event.order_key());
                state.events.insert(at, lead_event);
            }
        }
        Ok(())
    }

    fn retract(&mut self, target_id: &str, seq: u64, changed: &mut Changed) {
        let Some(location) = self.locations.get(target_id).cloned() else {
            return;
        };
        if self.retracted.contains_key(target_id) || location == Location::Retract {
            return;
        }
        self.retracted.insert(target_id.to_owned(), seq);
        match location {
            Location::Lead(lead_id) => {
                if let Some(state) = self.leads.get_mut(&lead_id) {
                    state.events.retain(|e| e.event.id != target_id);
                    changed.leads.insert(lead_id);
                }
            }
            Location::Rules => {
                if let Some(from) = self
                    .rules
                    .entries()
                    .iter()
                    .find(|e| e.id == target_id)
                    .map(|e| e.occurred_at)
                {
                    self.rules.remove(target_id);
                    changed.rules_from(from);
                }
            }
            Location::Spend => self.spends.retain(|_, e| e.id != target_id),
            Location::Retract => {}
        }
    }

    /// Re-derives what the inserted entries changed.
    fn settle(&mut self, changed: Changed) {
        if let Some(from) = changed.rules_from {
            self.rederive_from(from);
        }
        for lead_id in changed.leads {
            if let Some(state) = self.leads.get_mut(&lead_id) {
                state.facts = LeadFacts::derive(&state.events, &self.rules);
            }
        }
    }

    /// Re-derives every lead with an event at or after `from` (a rules change took effect then).
    fn rederive_from(&mut self, from: Micros) {
        for state in self.leads.values_mut() {
            if state.events.last().is_some_and(|e| e.event.occurred_at >= from) {
                state.facts = LeadFacts::derive(&state.events, &self.rules);
            }
        }
    }
}

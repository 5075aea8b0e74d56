//! The engine's state at one log position, and the writer that advances it.
//!
//! [`Engine`] is an immutable value once published: every part is behind `Arc`s (leads in
//! pages of [`PAGE_LEADS`], index runs, rules, spends), so cloning it is cheap and the writer's
//! next batch copies only the pages and runs it changes. Readers hold an `Arc<Engine>` and
//! never wait for the writer.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use funnel_core::event::{Data, Event};
use funnel_core::lead::Milestone;
use funnel_core::projection::{Entry, LogPosition, ProjectionError};
use funnel_core::report::By;
use funnel_core::rules::{RulesEntry, RulesTimeline};
use funnel_core::time::{Micros, MICROS_PER_DAY};

use crate::dict::{Dict, Sym};
use crate::facts::{derive, Facts, LeadSlot, NEVER};
use crate::index::{Point, Points, Runs};
use crate::record::Rec;

/// Leads per copy-on-write page.
pub const PAGE_LEADS: usize = 256;

/// A dense lead id.
pub type LeadNo = u32;

/// A vector in copy-on-write pages: clone copies page pointers, a write copies one page.
#[derive(Debug, Clone)]
pub struct Pages<T> {
    pages: Vec<Arc<Vec<T>>>,
    len: usize,
}

impl<T> Default for Pages<T> {
    fn default() -> Self {
        Pages {
            pages: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Clone> Pages<T> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn get(&self, i: usize) -> Option<&T> {
        self.pages.get(i / PAGE_LEADS)?.get(i % PAGE_LEADS)
    }
    fn get_mut(&mut self, i: usize) -> &mut T {
        &mut Arc::make_mut(&mut self.pages[i / PAGE_LEADS])[i % PAGE_LEADS]
    }
    fn push(&mut self, value: T) {
        if self.len.is_multiple_of(PAGE_LEADS) {
            self.pages.push(Arc::new(Vec::with_capacity(PAGE_LEADS)));
        }
        let last = self.pages.len() - 1;
        Arc::make_mut(&mut self.pages[last]).push(value);
        self.len += 1;
    }
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.pages.iter().flat_map(|p| p.iter())
    }
    /// Pages themselves, for splitting work between threads.
    pub fn pages(&self) -> &[Arc<Vec<T>>] {
        &self.pages
    }
}

/// A live spend event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spend {
    pub seq: u64,
    pub at: Micros,
    pub channel: Sym,
    pub campaign: Sym,
    pub amount_minor: i64,
    pub currency: Sym,
}

/// The breakdowns the funnel index keeps: all leads, then each `by`.
pub const DIMS: [Option<By>; 4] = [None, Some(By::Channel), Some(By::Campaign), Some(By::Producer)];

/// The funnel index of one group of leads (final facts).
#[derive(Debug, Clone, Default)]
pub struct GroupIndex {
    /// Per milestone, the times it was reached.
    pub period: [Runs<Micros>; 7],
    /// Per milestone, `(inquiry time, whole days from inquiry to the milestone, rounded up)`.
    pub cohort: [Points; 7],
}

/// Maintained indexes over every lead's final facts.
#[derive(Debug, Clone, Default)]
pub struct FunnelIndex {
    /// Per dimension of [`DIMS`], per group key.
    pub groups: [HashMap<Sym, GroupIndex>; 4],
    /// `(settled_at, lead)`: the leads whose answer as of `T` differs from the final one are
    /// those settled after `T`.
    pub settled: Runs<(Micros, LeadNo)>,
    /// `(close_at, lead)` of every won deal.
    pub deals: Runs<(Micros, LeadNo)>,
}

/// Whole days from `a` to `b` (`b ≥ a`), rounded up: `b − a ≤ N days` iff this is `≤ N`.
pub fn days_up(a: Micros, b: Micros) -> u32 {
    let d = b - a;
    let up = d / MICROS_PER_DAY + i64::from(d % MICROS_PER_DAY > 0);
    u32::try_from(up).unwrap_or(u32::MAX - 1)
}

/// The group key of `facts` in dimension `d` as of `as_of`.
pub fn dim_key(d: usize, facts: &Facts, as_of: Micros) -> Sym {
    DIMS[d].map_or(0, |by| facts.key(by, as_of))
}

/// Items to add to and remove from one index set.
type Delta<T> = (Vec<T>, Vec<T>);
/// An index set of the funnel: (dimension, group, milestone).
type SetKey = (usize, Sym, usize);

/// The index entries a batch adds and removes.
#[derive(Default)]
struct Changes {
    period: HashMap<SetKey, Delta<Micros>>,
    cohort: HashMap<SetKey, Delta<Point>>,
    settled: Delta<(Micros, LeadNo)>,
    deals: Delta<(Micros, LeadNo)>,
}

impl Changes {
    /// Records the entries of `slot` as added (`add`) or removed.
    fn note(&mut self, lead: LeadNo, slot: &LeadSlot, add: bool) {
        let facts = &slot.facts;
        if !facts.exists() {
            return;
        }
        let inquiry = facts.milestones[0];
        for d in 0..DIMS.len() {
            let g = dim_key(d, facts, Micros::MAX);
            for m in Milestone::ALL {
                let Some(t) = facts.milestone_at(m, Micros::MAX) else {
                    continue;
                };
                let p = self.period.entry((d, g, m as usize)).or_default();
                if add { &mut p.0 } else { &mut p.1 }.push(t);
                let c = self.cohort.entry((d, g, m as usize)).or_default();
                if add { &mut c.0 } else { &mut c.1 }.push((inquiry, days_up(inquiry, t)));
            }
        }
        let settled = (facts.settled_at(), lead);
        if add { &mut self.settled.0 } else { &mut self.settled.1 }.push(settled);
        for deal in slot.extra.iter().flat_map(|e| e.deals.iter()) {
            if add { &mut self.deals.0 } else { &mut self.deals.1 }.push((deal.close_at, lead));
        }
    }
}

/// Sorts both and drops the items they share (an entry removed and added again is unchanged).
fn cancel<T: Ord + Copy>(add: &mut Vec<T>, remove: &mut Vec<T>) {
    add.sort_unstable();
    remove.sort_unstable();
    let (mut a, mut r) = (Vec::with_capacity(add.len()), Vec::with_capacity(remove.len()));
    let (mut i, mut j) = (0, 0);
    while i < add.len() && j < remove.len() {
        match add[i].cmp(&remove[j]) {
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Less => {
                a.push(add[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                r.push(remove[j]);
                j += 1;
            }
        }
    }
    a.extend_from_slice(&add[i..]);
    r.extend_from_slice(&remove[j..]);
    *add = a;
    *remove = r;
}

/// The engine at one log position: what every report reads.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    pub(crate) head: LogPosition,
    pub(crate) dict: Arc<Dict>,
    pub(crate) leads: Pages<LeadSlot>,
    pub(crate) rules: Arc<RulesTimeline>,
    pub(crate) spends: Arc<Vec<Spend>>,
    pub(crate) index: FunnelIndex,
    pub(crate) names: Arc<LeadNames>,
}

impl Engine {
    pub fn head(&self) -> LogPosition {
        self.head
    }
    pub fn dict(&self) -> &Dict {
        &self.dict
    }
    pub fn rules(&self) -> &RulesTimeline {
        &self.rules
    }
    pub fn leads(&self) -> &Pages<LeadSlot> {
        &self.leads
    }
    pub fn spends(&self) -> &[Spend] {
        &self.spends
    }
    pub fn index(&self) -> &FunnelIndex {
        &self.index
    }
    /// The dense id of `lead_id` if the lead exists at this log position.
    pub fn lead_no(&self, lead_id: &str) -> Option<LeadNo> {
        let no = self.names.get(lead_id)?;
        ((no as usize) < self.leads.len()).then_some(no)
    }
    pub fn lead(&self, no: LeadNo) -> Option<&LeadSlot> {
        self.leads.get(no as usize)
    }
}

/// Lead id → dense id, shared by the writer and every snapshot: it only grows, and a snapshot
/// ignores ids at or past its own lead count.
#[derive(Debug, Default)]
pub struct LeadNames {
    ids: RwLock<HashMap<Box<str>, LeadNo>>,
}

impl LeadNames {
    pub fn get(&self, lead_id: &str) -> Option<LeadNo> {
        self.ids.read().unwrap_or_else(|p| p.into_inner()).get(lead_id).copied()
    }
    fn insert_all(&self, new: Vec<(Box<str>, LeadNo)>) {
        if new.is_empty() {
            return;
        }
        let mut ids = self.ids.write().unwrap_or_else(|p| p.into_inner());
        ids.extend(new);
    }
    pub fn len(&self) -> usize {
        self.ids.read().unwrap_or_else(|p| p.into_inner()).len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where an earlier event lives, for retractions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Lead(String),
    Rules,
    Spend,
    Retract,
}

/// Finds an earlier event by id: the ledger's id index, or a map in tests.
pub trait Locate {
    fn locate(&self, event_id: &str) -> Option<(u64, Target)>;
}

/// The target of an event, for [`Locate`] implementations.
pub fn target_of(event: &Event) -> Target {
    match &event.data {
        Data::Rules(_) => Target::Rules,
        Data::Spend { .. } => Target::Spend,
        Data::Retract { .. } => Target::Retract,
        _ => Target::Lead(event.lead_id.clone().unwrap_or_default()),
    }
}

/// The single writer: owns the next state and the growing dictionary.
#[derive(Debug, Default)]
pub struct Writer {
    next: Engine,
    dict: Dict,
    /// Bulk load: leads are derived but the indexes are built once, at [`Writer::snapshot`].
    bulk: bool,
}

/// What a run of entries changed.
#[derive(Default)]
struct Pending {
    /// Leads to re-derive, with their working records.
    leads: HashMap<LeadNo, Vec<Rec>>,
    rules_from: Option<Micros>,
    new_names: Vec<(Box<str>, LeadNo)>,
    new_leads: HashMap<String, LeadNo>,
}

impl Writer {
    pub fn head(&self) -> LogPosition {
        self.next.head
    }

    /// A writer for loading a whole log: indexes are built once from every lead's facts when
    /// the first snapshot is taken, instead of by differences per batch.
    pub fn bulk() -> Writer {
        Writer {
            bulk: true,
            ..Writer::default()
        }
    }

    /// Ends a bulk load: builds the indexes from every lead's facts.
    fn finish_bulk(&mut self) {
        if !self.bulk {
            return;
        }
        self.bulk = false;
        let mut changes = Changes::default();
        for (no, slot) in self.next.leads.iter().enumerate() {
            changes.note(no as LeadNo, slot, true);
        }
        self.next.index = FunnelIndex::default();
        self.apply_changes(changes);
    }

    /// The state as of now, to publish to readers.
    pub fn snapshot(&mut self) -> Arc<Engine> {
        self.finish_bulk();
        if self.dict.len() != self.next.dict.len() {
            self.next.dict = Arc::new(self.dict.clone());
        }
        Arc::new(self.next.clone())
    }

    /// Applies consecutive log entries and re-derives each lead they change once.
    pub fn apply(&mut self, entries: &[Entry], log: &dyn Locate) -> Result<(), ProjectionError> {
        let mut pending = Pending::default();
        let mut result = Ok(());
        for entry in entries {
            let expected = self.next.head.seq + 1;
            if entry.seq != expected {
                result = Err(ProjectionError::Gap {
                    expected,
                    got: entry.seq,
                });
                break;
            }
            self.next.head = LogPosition {
                seq: entry.seq,
                hash: entry.hash,
            };
            self.insert(entry, log, &mut pending);
        }
        self.settle(pending);
        result
    }

    fn lead_no(&mut self, lead_id: &str, pending: &mut Pending) -> LeadNo {
        if let Some(no) = self
            .next
            .names
            .get(lead_id)
            .or_else(|| pending.new_leads.get(lead_id).copied())
        {
            return no;
        }
        let no = LeadNo::try_from(self.next.leads.len()).expect("more than 2^32 leads");
        self.next.leads.push(LeadSlot::default());
        pending.new_leads.insert(lead_id.to_owned(), no);
        pending.new_names.push((lead_id.into(), no));
        no
    }

    fn working<'a>(&self, pending: &'a mut Pending, no: LeadNo) -> &'a mut Vec<Rec> {
        pending.leads.entry(no).or_insert_with(|| {
            self.next
                .leads
                .get(no as usize)
                .map_or_else(Vec::new, |slot| slot.recs.to_vec())
        })
    }

    fn insert(&mut self, entry: &Entry, log: &dyn Locate, pending: &mut Pending) {
        let event = &entry.event;
        match &event.data {
            Data::Rules(change) => {
                Arc::make_mut(&mut self.next.rules).insert(RulesEntry {
                    occurred_at: event.occurred_at,
                    seq: entry.seq,
                    id: event.id.clone(),
                    change: change.clone(),
                });
                pending.rules_from = Some(
                    pending
                        .rules_from
                        .map_or(event.occurred_at, |f| f.min(event.occurred_at)),
                );
            }
            Data::Spend {
                channel,
                campaign,
                amount,
            } => {
                let spend = Spend {
                    seq: entry.seq,
                    at: event.occurred_at,
                    channel: self.dict.intern(channel),
                    campaign: self.dict.intern_opt(campaign.as_deref()),
                    amount_minor: amount.amount_minor,
                    currency: self.dict.intern(&amount.currency),
                };
                Arc::make_mut(&mut self.next.spends).push(spend);
            }
            Data::Retract { target_id, .. } => {
                let Some((seq, target)) = log.locate(target_id).filter(|(s, _)| *s < entry.seq) else {
                    return;
                };
                match target {
                    Target::Lead(lead_id) => {
                        let no = self.lead_no(&lead_id, pending);
                        self.working(pending, no).retain(|r| r.seq != seq);
                    }
                    Target::Rules => {
                        let rules = Arc::make_mut(&mut self.next.rules);
                        if let Some(at) = rules.entries().iter().find(|e| e.seq == seq).map(|e| e.occurred_at) {
                            rules.remove(target_id);
                            pending.rules_from = Some(pending.rules_from.map_or(at, |f| f.min(at)));
                        }
                    }
                    Target::Spend => {
                        if self.next.spends.iter().any(|s| s.seq == seq) {
                            Arc::make_mut(&mut self.next.spends).retain(|s| s.seq != seq);
                        }
                    }
                    Target::Retract => {}
                }
            }
            _ => {
                let Some(lead_id) = event.lead_id.as_deref() else {
                    return;
                };
                let Some(rec) = Rec::of(entry.seq, event, &mut self.dict) else {
                    return;
                };
                let no = self.lead_no(lead_id, pending);
                let recs = self.working(pending, no);
                let at = recs.partition_point(|r| r.order_key() < rec.order_key());
                recs.insert(at, rec);
            }
        }
    }

    /// Re-derives the changed leads and applies the difference of their facts to the indexes.
    fn settle(&mut self, mut pending: Pending) {
        self.next.names.insert_all(std::mem::take(&mut pending.new_names));
        if let Some(from) = pending.rules_from {
            let stale: Vec<LeadNo> = (0..self.next.leads.len() as LeadNo)
                .filter(|no| !pending.leads.contains_key(no))
                .filter(|no| {
                    self.next
                        .leads
                        .get(*no as usize)
                        .and_then(|s| s.recs.last())
                        .is_some_and(|r| r.at >= from)
                })
                .collect();
            for no in stale {
                self.working(&mut pending, no);
            }
        }
        let mut changes = Changes::default();
        let mut leads: Vec<(LeadNo, Vec<Rec>)> = pending.leads.into_iter().collect();
        leads.sort_unstable_by_key(|(no, _)| *no);
        for (no, recs) in leads {
            let slot = derive(recs, &mut self.dict, &self.next.rules);
            let old = self.next.leads.get_mut(no as usize);
            if !self.bulk {
                changes.note(no, old, false);
                changes.note(no, &slot, true);
            }
            *old = slot;
        }
        if !self.bulk {
            self.apply_changes(changes);
        }
    }

    fn apply_changes(&mut self, changes: Changes) {
        let index = &mut self.next.index;
        let mut touched: HashSet<(usize, Sym)> = HashSet::new();
        for ((d, g, m), (mut add, mut remove)) in changes.period {
            cancel(&mut add, &mut remove);
            if add.is_empty() && remove.is_empty() {
                continue;
            }
            touched.insert((d, g));
            index.groups[d].entry(g).or_default().period[m].update(&add, &remove);
        }
        for ((d, g, m), (mut add, mut remove)) in changes.cohort {
            cancel(&mut add, &mut remove);
            if add.is_empty() && remove.is_empty() {
                continue;
            }
            index.groups[d].entry(g).or_default().cohort[m].update(&add, &remove);
        }
        for (d, g) in touched {
            if index.groups[d].get(&g).is_some_and(|gi| gi.period[0].is_empty()) {
                index.groups[d].remove(&g);
            }
        }
        let (mut add, mut remove) = changes.settled;
        cancel(&mut add, &mut remove);
        index.settled.update(&add, &remove);
        let (mut add, mut remove) = changes.deals;
        cancel(&mut add, &mut remove);
        index.deals.update(&add, &remove);
    }
}

/// The final (as of forever) value of a lead's milestone, as the index holds it.
pub fn final_time(facts: &Facts, m: Milestone) -> Micros {
    facts.milestone_at(m, Micros::MAX).unwrap_or(NEVER)
}

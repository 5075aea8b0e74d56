//! The engine's state at one log position, and the writer that advances it.
//!
//! [`Engine`] is an immutable value once published: every part is behind `Arc`s (leads in
//! pages of [`crate::slots::PAGE_LEADS`], index runs, rules, spends), so cloning it is cheap and the writer's
//! next batch copies only the pages and runs it changes. Readers hold an `Arc<Engine>` and
//! never wait for the writer.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use funnel_core::event::{Data, DataRef, Event};
use funnel_core::lead::Milestone;
use funnel_core::projection::{Entry, LogPosition, ProjectionError};
use funnel_core::report::By;
use funnel_core::rules::{RulesEntry, RulesTimeline};
use funnel_core::time::{Micros, MICROS_PER_DAY};

use funnel_ledger::{EntryRef, Ledger};
use fxhash::FxHashMap;

use crate::checkpoint;
use crate::credits::Derived;
use crate::dict::{Dict, Sym};
use crate::facts::{derive, facts_of, filed, Extra, Facts, LeadSlot, Touch, NEVER};
use crate::gather::Gathered;
use crate::history::{self, History, RulesStep, RulesSteps, Stamp, View};
use crate::id_slots::IdSlots;
use crate::index::{Point, Points, Runs};
use crate::markov::{MarkovChanges, MarkovIndex};
use crate::record::Rec;
use crate::slots::{SlotView, Slots, PAGE_LEADS};
use crate::EngineError;

/// A dense lead id.
pub type LeadNo = u32;

/// A live spend event.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Spend {
    pub seq: u64,
    pub at: Micros,
    pub channel: Sym,
    pub campaign: Sym,
    pub amount_minor: i64,
    pub currency: Sym,
}

/// The breakdowns the funnel index keeps, one per `by`. Every lead is in exactly one group of
/// each, so a count over all leads is the sum over the groups of any one (the one with the
/// fewest groups, [`summed`]): an index of all leads would hold every point a
/// fourth time (67 B a lead at 1 M leads).
pub const DIMS: [By; 3] = [By::Channel, By::Campaign, By::Producer];

/// The funnel index of one group of leads (final facts).
#[derive(Debug, Clone, Default)]
pub struct GroupIndex {
    /// Per milestone, the times it was reached.
    pub period: [Runs<Micros>; 7],
    /// Per milestone, `(inquiry time, whole days from inquiry to the milestone, rounded up)`.
    /// Empty for the inquiry itself: its cohort count is its period count.
    pub cohort: [Points; 7],
}

/// Maintained indexes over every lead's final facts.
#[derive(Debug, Clone, Default)]
pub struct FunnelIndex {
    /// Per dimension of [`DIMS`], per group key.
    pub groups: [HashMap<Sym, GroupIndex>; 3],
    /// `(settled_at, lead)`: the leads whose answer as of `T` differs from the final one are
    /// those settled after `T`.
    pub settled: Runs<(Micros, LeadNo)>,
    /// `(close_at, lead)` of every won deal.
    pub deals: Runs<(Micros, LeadNo)>,
    /// The Markov chain's transition counts as a function of `as_of`.
    pub markov: MarkovIndex,
}

/// The dimension with the fewest groups: a count over all leads sums its groups.
pub fn summed<T>(groups: &[HashMap<Sym, T>; 3]) -> usize {
    (0..DIMS.len()).min_by_key(|d| groups[*d].len()).unwrap_or(0)
}

/// Whole days from `a` to `b` (`b ≥ a`), rounded up: `b − a ≤ N days` iff this is `≤ N`.
pub fn days_up(a: Micros, b: Micros) -> u32 {
    let d = b - a;
    let up = d / MICROS_PER_DAY + i64::from(d % MICROS_PER_DAY > 0);
    u32::try_from(up).unwrap_or(u32::MAX - 1)
}

/// The group key of `facts` in dimension `d` as of `as_of`.
pub fn dim_key(d: usize, facts: &Facts, as_of: Micros) -> Sym {
    facts.key(DIMS[d], as_of)
}

/// Items to add to and remove from one index set.
type Delta<T> = (Vec<T>, Vec<T>);
/// An index set of the funnel: (dimension, group, milestone).
/// The changes of one group's sets, per milestone.
#[derive(Default)]
struct GroupChanges {
    period: [Delta<Micros>; 7],
    cohort: [Delta<Point>; 7],
}

/// The index entries a batch adds and removes.
#[derive(Default)]
struct Changes {
    /// Per (dimension, group): one map lookup per lead and dimension.
    groups: FxHashMap<(usize, Sym), GroupChanges>,
    settled: Delta<(Micros, LeadNo)>,
    deals: Delta<(Micros, LeadNo)>,
    /// `None` when the whole Markov index is rebuilt instead (after a rules change).
    markov: Option<MarkovChanges>,
}

impl Changes {
    /// Changes by difference, the Markov index's too.
    fn new() -> Changes {
        Changes {
            markov: Some(MarkovChanges::default()),
            ..Changes::default()
        }
    }

    /// Records the entries of `slot` as added (`add`) or removed; its Markov entries under
    /// `rules`, which must be the rules they were added under.
    fn note(&mut self, lead: LeadNo, slot: &LeadSlot, rules: &RulesTimeline, add: bool) {
        self.note_parts(lead, &slot.facts, &slot.touches, slot.extra.as_deref(), rules, add);
    }

    /// [`Changes::note`] of a lead given by its parts.
    fn note_parts(
        &mut self,
        lead: LeadNo,
        facts: &Facts,
        touches: &[Touch],
        extra: Option<&Extra>,
        rules: &RulesTimeline,
        add: bool,
    ) {
        if let Some(markov) = &mut self.markov {
            markov.note(touches, extra, rules, add);
        }
        if !facts.exists() {
            return;
        }
        let inquiry = facts.milestones[0];
        let reached = Milestone::ALL.map(|m| facts.milestone_at(m, Micros::MAX));
        for d in 0..DIMS.len() {
            let group = self.groups.entry((d, dim_key(d, facts, Micros::MAX))).or_default();
            for (m, t) in reached.iter().enumerate() {
                let Some(t) = *t else { continue };
                let p = &mut group.period[m];
                if add { &mut p.0 } else { &mut p.1 }.push(t);
                if m == Milestone::Inquiry as usize {
                    continue; // the inquiry cohort is the inquiry period count
                }
                let c = &mut group.cohort[m];
                if add { &mut c.0 } else { &mut c.1 }.push(Point(inquiry, days_up(inquiry, t)));
            }
        }
        let settled = (facts.settled_at(), lead);
        if add { &mut self.settled.0 } else { &mut self.settled.1 }.push(settled);
        for deal in extra.iter().flat_map(|e| e.deals.iter()) {
            if add { &mut self.deals.0 } else { &mut self.deals.1 }.push((deal.close_at, lead));
        }
    }
}

impl Changes {
    /// The parts' entries together (parts noted on several cores).
    fn merged(parts: Vec<Changes>) -> Changes {
        let mut parts = parts.into_iter();
        let Some(mut all) = parts.next() else {
            return Changes::new();
        };
        for part in parts {
            all.absorb(part);
        }
        all
    }

    /// Adds `other`'s entries to these (every set is sorted when applied, so the order in
    /// which parts are absorbed does not change the result).
    fn absorb(&mut self, other: Changes) {
        for (key, group) in other.groups {
            let mine = self.groups.entry(key).or_default();
            for (m, (add, remove)) in group.period.into_iter().enumerate() {
                join(&mut mine.period[m].0, add);
                join(&mut mine.period[m].1, remove);
            }
            for (m, (add, remove)) in group.cohort.into_iter().enumerate() {
                join(&mut mine.cohort[m].0, add);
                join(&mut mine.cohort[m].1, remove);
            }
        }
        join(&mut self.settled.0, other.settled.0);
        join(&mut self.settled.1, other.settled.1);
        join(&mut self.deals.0, other.deals.0);
        join(&mut self.deals.1, other.deals.1);
        match (&mut self.markov, other.markov) {
            (Some(mine), Some(theirs)) => mine.absorb(theirs),
            _ => self.markov = None,
        }
    }
}

/// `theirs` appended to `mine`, in no particular order (every set is sorted when applied): the
/// smaller copied onto the larger, so parts noted on several cores are copied once at most.
pub(crate) fn join<T>(mine: &mut Vec<T>, mut theirs: Vec<T>) {
    if theirs.capacity() > mine.capacity() {
        std::mem::swap(mine, &mut theirs);
    }
    mine.extend(theirs);
}

/// The index entries of every lead in `slots` (numbered from 0), noted on every core.
fn note_slots(slots: &Slots, rules: &RulesTimeline) -> Changes {
    let parts = par_parts(slots.pages(), PAGE_LEADS, |first, pages| {
        let mut changes = Changes::new();
        let mut touches = Vec::new();
        for (p, page) in pages.iter().enumerate() {
            for (i, slot) in page.iter().enumerate() {
                let no = ((first + p) * PAGE_LEADS + i) as LeadNo;
                touches.clear();
                touches.extend(slot.touches());
                changes.note_parts(no, &slot.facts, &touches, slot.extra().as_ref(), rules, true);
            }
        }
        changes
    });
    Changes::merged(parts)
}

/// Sorts both and drops the items they share (an entry removed and added again is unchanged).
pub(crate) fn cancel<T: Ord + Copy>(add: &mut Vec<T>, remove: &mut Vec<T>) {
    add.sort_unstable();
    remove.sort_unstable();
    if add.is_empty() || remove.is_empty() {
        // Nothing shared (a restore or bulk load adds only): no copies.
        return;
    }
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
    pub(crate) leads: Slots,
    pub(crate) rules: Arc<RulesTimeline>,
    pub(crate) spends: Arc<Vec<Spend>>,
    pub(crate) index: FunnelIndex,
    pub(crate) history: History,
    /// Leads an earlier version of which reads a later time than their final facts do (a
    /// milestone since retracted or moved earlier), with the latest such time: with the
    /// `settled` index, every lead whose answer as of some `as_of` differs from its history
    /// view. Rare: kept whole.
    pub(crate) late: Arc<HashMap<LeadNo, Micros>>,
    /// The seq of the last rules change (a rules event or its retraction); 0 if none.
    pub(crate) rules_changed_at: u64,
    pub(crate) names: Arc<LeadNames>,
    /// Built on demand by questions asked of this snapshot; fresh in every snapshot.
    pub(crate) derived: Arc<Derived>,
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
    pub fn leads(&self) -> &Slots {
        &self.leads
    }
    pub fn spends(&self) -> &[Spend] {
        &self.spends
    }
    pub fn index(&self) -> &FunnelIndex {
        &self.index
    }
    pub fn history(&self) -> &History {
        &self.history
    }
    pub fn derived(&self) -> &Derived {
        &self.derived
    }
    pub fn late(&self) -> &HashMap<LeadNo, Micros> {
        &self.late
    }
    pub fn rules_changed_at(&self) -> u64 {
        self.rules_changed_at
    }
    /// The seqs of the ledger entries filed under `lead_id` at this log position (its
    /// timeline), ascending; empty for a lead it does not know.
    pub fn filed(&self, lead_id: &str) -> Vec<u64> {
        self.lead_no(lead_id)
            .and_then(|no| self.leads.get(no as usize))
            .map_or_else(Vec::new, |slot| filed::seqs(slot.filed))
    }

    /// Lead `no`'s facts at the earlier log position `seq`, derived from its entries up to
    /// there under the rules in force now (the caller checks they were in force then too:
    /// [`Engine::rules_changed_at`]). `None` if an entry names what the dictionary does not
    /// know, which would be a bug: the caller then replays.
    pub fn facts_at(&self, no: LeadNo, seq: u64, ledger: &Ledger) -> Result<Option<Facts>, EngineError> {
        let (Some(slot), Some(lead_id)) = (self.lead(no), self.names.name(no)) else {
            return Ok(None);
        };
        let mut seqs = filed::seqs(slot.filed);
        seqs.retain(|s| *s <= seq);
        let entries = ledger.entries_at(&seqs)?;
        // A retraction filed under a lead targets an earlier event of that lead.
        let gone: HashSet<&str> = (entries.iter())
            .filter_map(|e| match &e.event.data {
                Data::Retract { target_id, .. } => Some(target_id.as_str()),
                _ => None,
            })
            .collect();
        let mut recs = Vec::with_capacity(entries.len());
        for entry in &entries {
            if entry.event.lead_id.as_deref() != Some(lead_id.as_str()) || gone.contains(entry.event.id.as_str()) {
                continue;
            }
            match Rec::known(entry.seq, &entry.event, &self.dict) {
                Ok(rec) => recs.extend(rec),
                Err(_) => return Ok(None),
            }
        }
        recs.sort_unstable_by_key(Rec::order_key);
        Ok(Some(facts_of(&recs, &self.rules)))
    }

    /// The dense id of `lead_id` if the lead exists at this log position.
    pub fn lead_no(&self, lead_id: &str) -> Option<LeadNo> {
        let no = self.names.get(lead_id)?;
        ((no as usize) < self.leads.len()).then_some(no)
    }
    pub fn lead(&self, no: LeadNo) -> Option<SlotView<'_>> {
        self.leads.get(no as usize)
    }

    /// Approximate bytes held by each part (capacities, not what the allocator rounds them
    /// to): the memory breakdown per lead.
    pub fn footprint(&self) -> Vec<(&'static str, usize)> {
        let mut touches = 0;
        let mut filed = 0;
        for slot in self.leads.iter() {
            filed += slot.filed.len();
            touches += slot.touch_bytes();
        }
        let extra = self.leads.extra_bytes();
        let (mut period, mut cohort) = (0, 0);
        for groups in &self.index.groups {
            for g in groups.values() {
                period += g.period.iter().map(Runs::bytes).sum::<usize>();
                cohort += g.cohort.iter().map(Points::bytes).sum::<usize>();
            }
        }
        vec![
            (
                "lead slots (facts and last event, encoded; page offsets)",
                self.leads.bytes() - touches - filed - extra,
            ),
            ("touches (Markov paths, encoded in the slot)", touches),
            ("handoffs, rejections, deals and credits (encoded)", extra),
            ("lead ids", self.names.bytes()),
            ("lead index (seqs filed under each lead, in the slot)", filed),
            ("period index (time per milestone and group)", period),
            ("cohort index (inquiry time, days to milestone)", cohort),
            (
                "settled and deals indexes",
                self.index.settled.bytes() + self.index.deals.bytes(),
            ),
            ("history (born and died points per seq)", self.history.bytes()),
            (
                "Markov index (when transitions enter and leave)",
                self.index.markov.bytes(),
            ),
        ]
    }
}

/// Lead id ↔ dense id, shared by the writer and every snapshot: it only grows, and a snapshot
/// ignores ids at or past its own lead count.
#[derive(Debug, Default)]
pub struct LeadNames {
    table: RwLock<NameTable>,
}

/// Every lead id end to end in one buffer, and a table of lead numbers found by the hash of
/// their id and compared by the id itself: about 30 bytes per lead instead of a map of boxed
/// strings' 70, and the id of a dense number for free. The table holds a number and 32 bits
/// of its id's hash per slot ([`IdSlots`]): a map from a stored 64-bit hash took 17 bytes per
/// slot, 35 per lead at 1 M leads with its power-of-two capacity.
#[derive(Default)]
pub(crate) struct NameTable {
    bytes: String,
    ends: IdEnds,
    by_id: IdSlots,
}

impl std::fmt::Debug for NameTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameTable").field("leads", &self.ends.len()).finish()
    }
}

/// FxHash: a multiply and a rotate per 8 bytes (SipHash was 6% of a replay). Ids are compared
/// whole on every probe, so a bad spread costs speed, never correctness.
fn id_hash(lead_id: &str) -> u64 {
    let mut h = fxhash::FxHasher64::default();
    lead_id.hash(&mut h);
    h.finish()
}

/// Lead `no`'s id in the buffer.
fn name_in<'a>(bytes: &'a str, ends: &IdEnds, no: LeadNo) -> Option<&'a str> {
    bytes.get(ends.span(no as usize)?)
}

/// How many entries ahead a bulk load fetches the lead numbers' table line (a miss takes
/// about as long as applying a dozen entries).
const PREFETCH_AHEAD: usize = 16;

/// Leads whose id ends are kept relative to where their stripe's ids start.
const STRIPE_LEADS: usize = 256;
const _: () = assert!(STRIPE_LEADS * funnel_core::event::ID_CHARS_MAX <= u16::MAX as usize);

/// Where each lead's id ends in the buffer: per stripe of [`STRIPE_LEADS`] leads the offset
/// its ids start at, and per lead its id's end from there in a `u16` (ids are at most 128
/// bytes, `ID_CHARS_MAX`, so a stripe's ids take at most 32 KiB). 2 bytes a lead where a `u64`
/// end took 8.
#[derive(Debug, Default)]
struct IdEnds {
    stripes: Vec<u64>,
    ends: Vec<u16>,
}

impl IdEnds {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn reserve(&mut self, more: usize) {
        self.ends.reserve(more);
        self.stripes.reserve(more.div_ceil(STRIPE_LEADS));
    }

    /// Lead `len()`'s id ends at `end`; the previous lead's ended at `start`.
    fn push(&mut self, start: u64, end: u64) {
        if self.ends.len().is_multiple_of(STRIPE_LEADS) {
            self.stripes.push(start);
        }
        let stripe = self.stripes[self.stripes.len() - 1];
        self.ends
            .push(u16::try_from(end - stripe).expect("lead ids of at most 128 bytes (validated at ingest)"));
    }

    fn span(&self, no: usize) -> Option<std::ops::Range<usize>> {
        let stripe = *self.stripes.get(no / STRIPE_LEADS)? as usize;
        let end = stripe + usize::from(*self.ends.get(no)?);
        let start = match no % STRIPE_LEADS {
            0 => stripe,
            _ => stripe + usize::from(self.ends[no - 1]),
        };
        Some(start..end)
    }

    fn bytes(&self) -> usize {
        self.ends.capacity() * 2 + self.stripes.capacity() * 8
    }
}

/// Stores the next lead's id at the end of the buffer.
fn push_id(bytes: &mut String, ends: &mut IdEnds, lead_id: &str) {
    let start = bytes.len() as u64;
    bytes.push_str(lead_id);
    ends.push(start, bytes.len() as u64);
}

impl NameTable {
    fn name(&self, no: LeadNo) -> Option<&str> {
        name_in(&self.bytes, &self.ends, no)
    }
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }
    /// Lead `lead_id`'s number, numbering it next if it is new.
    pub(crate) fn number(&mut self, lead_id: &str) -> LeadNo {
        let hash = id_hash(lead_id);
        let NameTable { bytes, ends, by_id } = self;
        if let Some(no) = by_id.find(hash, |no| name_in(bytes, ends, no) == Some(lead_id)) {
            return no;
        }
        let no = LeadNo::try_from(ends.len()).expect("more than 2^32 leads");
        push_id(bytes, ends, lead_id);
        by_id.insert(hash, no);
        no
    }
    /// Fetches the table's line for `lead_id` into the cache, for a lookup a few entries on.
    pub(crate) fn prefetch(&self, lead_id: &str) {
        self.by_id.prefetch(id_hash(lead_id));
    }
    fn get(&self, lead_id: &str) -> Option<LeadNo> {
        self.by_id.find(id_hash(lead_id), |no| self.name(no) == Some(lead_id))
    }
}

impl From<NameTable> for LeadNames {
    fn from(table: NameTable) -> LeadNames {
        LeadNames {
            table: RwLock::new(table),
        }
    }
}

impl LeadNames {
    pub fn get(&self, lead_id: &str) -> Option<LeadNo> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).get(lead_id)
    }
    /// The id of lead `no`.
    pub fn name(&self, no: LeadNo) -> Option<String> {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        table.name(no).map(str::to_owned)
    }
    /// Makes room for `more` leads (a restore knows how many it loads), and an eighth more,
    /// as the lead numbers' table does, so that the first new lead after a restore does not copy
    /// the id ends to a table twice as large.
    fn reserve(&self, more: usize) {
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        table.ends.reserve(more + more / 8);
        table.by_id.reserve(more);
    }

    /// Adds new leads, numbered in order from the current count.
    fn insert_all<S: AsRef<str>>(&self, new: &[(S, LeadNo)]) {
        if new.is_empty() {
            return;
        }
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        let NameTable { bytes, ends, by_id } = &mut *table;
        by_id.reserve(new.len());
        for (lead_id, no) in new {
            let lead_id = lead_id.as_ref();
            debug_assert_eq!(*no as usize, ends.len());
            push_id(bytes, ends, lead_id);
            by_id.insert(id_hash(lead_id), *no);
        }
    }
    pub fn len(&self) -> usize {
        self.table.read().unwrap_or_else(|p| p.into_inner()).ends.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        let t = self.table.read().unwrap_or_else(|p| p.into_inner());
        t.bytes.capacity() + t.ends.bytes() + t.by_id.bytes()
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

/// The seq and kind of the earlier event `event_id`, through the ledger's id index.
fn locate(ledger: &Ledger, event_id: &str) -> Option<(u64, Target)> {
    let seq = ledger.seq_of(event_id).ok()??;
    let entry = ledger.get(seq).ok()??;
    Some((seq, target_of(&entry.event)))
}

/// What kind of event a retraction targets.
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
    /// Bulk load: every lead's records, gathered in log order and derived all at once (on
    /// every core) when the first snapshot is taken; the indexes are then built once instead
    /// of by differences.
    bulk: Option<Gathered>,
    /// Seqs of retracted lead events, per lead (rare): re-reading a lead from the ledger
    /// leaves them out.
    retracted: HashMap<LeadNo, Vec<u64>>,
    /// Leads re-derived since the last checkpoint (every lead after a bulk load: `all_dirty`).
    dirty: HashSet<LeadNo>,
    all_dirty: bool,
    /// Dictionary symbols already in the checkpoint.
    saved_syms: usize,
    /// The current run of entries (since the last settle; the whole log in a bulk load):
    /// the seq before it, its rules changes and its retracted records, for the history.
    run_from: u64,
    run_rules: RulesSteps,
    run_retracted: HashMap<LeadNo, Vec<(Rec, u64)>>,
    /// History stamps not yet in the checkpoint (all of them after a bulk load: `all_dirty`).
    unsaved: Vec<Stamp>,
    /// The next checkpoint key for history stamps.
    history_part: u64,
    /// Keep no history: an engine built for one log position, asked only about that
    /// position (offline replay, a log-prefix question), never needs one.
    without_history: bool,
}

/// What a run of entries changed.
#[derive(Default)]
struct Pending {
    /// Leads to re-derive, with their working records.
    leads: HashMap<LeadNo, Vec<Rec>>,
    rules_from: Option<Micros>,
    new_names: Vec<(Box<str>, LeadNo)>,
    new_leads: FxHashMap<String, LeadNo>,
    /// Seqs to file under each lead when the batch settles, ascending.
    filed: FxHashMap<LeadNo, Vec<u64>>,
}

/// A lead's history over a run.
struct LeadHistory {
    stamps: Vec<Stamp>,
    /// The latest time any of its versions in the run reads.
    latest: Micros,
    /// The latest time any of its versions ever read, if later than its new final facts do
    /// (see `Engine::late`).
    late: Option<Micros>,
}

/// Leads derived per thread before the work is split over every core.
const PARALLEL_DERIVE_MIN: usize = 4_096;
/// Leads derived and encoded at a time when a bulk load ends: an eighth of them, at most this
/// many (so that small loads, the property tests' among them, go in chunks too).
const BULK_CHUNK_LEADS: usize = 65_536;

/// `part` over contiguous parts of `items` (one per core; one part when they hold fewer than
/// [`PARALLEL_DERIVE_MIN`] leads, `leads_each` an item), with each part's offset in `items`,
/// results in part order: what is computed does not depend on the thread count, only how it
/// is split.
pub(crate) fn par_parts<T: Sync, U: Send>(
    items: &[T],
    leads_each: usize,
    part: impl Fn(usize, &[T]) -> U + Sync,
) -> Vec<U> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads == 1 || items.len().saturating_mul(leads_each) < PARALLEL_DERIVE_MIN {
        return vec![part(0, items)];
    }
    let size = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let part = &part;
        let handles: Vec<_> = items
            .chunks(size)
            .enumerate()
            .map(|(i, chunk)| scope.spawn(move || crate::heap::releasing(|| part(i * size, chunk))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

/// `f` over `items` on every core, in order. Each core's results stay in their own vector
/// (gathering them into one would copy them all into fresh memory).
fn par_map<T: Sync, U: Send>(
    items: &[T],
    f: impl Fn(&T) -> U + Sync,
) -> std::iter::Flatten<std::vec::IntoIter<Vec<U>>> {
    par_parts(items, 1, |_, part| part.iter().map(&f).collect::<Vec<U>>())
        .into_iter()
        .flatten()
}

impl Writer {
    pub fn head(&self) -> LogPosition {
        self.next.head
    }

    /// A writer for loading a whole log: leads are derived once each, on every core, when the
    /// first snapshot is taken, and the indexes are built once from their facts.
    pub fn bulk() -> Writer {
        Writer {
            bulk: Some(Gathered::default()),
            ..Writer::default()
        }
    }

    /// [`Writer::bulk`] for an engine that is asked only about its own head (offline replay, a
    /// log-prefix question): no funnel history is kept (it answers questions about earlier
    /// log positions, and is a third of a bulk load's work), so its `funnel_at` always
    /// declines.
    pub fn bulk_without_history() -> Writer {
        let mut writer = Writer {
            without_history: true,
            ..Writer::bulk()
        };
        writer.next.history.complete = false;
        writer
    }

    /// Ends a bulk load: derives every lead and builds the indexes from their facts. Leads are
    /// derived in chunks ([`BULK_CHUNK_LEADS`]), each encoded before the next is derived, so a
    /// slot in full (its facts, a vector of touches) never exists for every lead at once; the
    /// index entries are noted from the encoded slots once the records are freed. A replay of
    /// 10 M events peaked at 2.0 GB with every slot in full, 1.15 GB noting each chunk as it
    /// was derived, now 0.9 GB.
    fn finish_bulk(&mut self) {
        let Some(gathered) = self.bulk.take() else {
            return;
        };
        let started = std::time::Instant::now();
        let (names, by_lead) = gathered.lay_out();
        let laid_out_at = started.elapsed();
        let _span = tracing::info_span!("derive_all", leads = names.len()).entered();
        let nos: Vec<LeadNo> = (0..names.len() as LeadNo).collect();
        self.next.names = Arc::new(LeadNames::from(names));
        for (no, rec, seq, by) in by_lead.retractions() {
            if let Some(rec) = rec {
                self.run_retracted.entry(no).or_default().push((rec, by));
            }
            self.retracted.entry(no).or_default().push(seq);
        }
        // In chunks, so that a derived slot in full (its facts, a list of touches) never exists
        // for every lead at once; each chunk is encoded as soon as it is derived.
        let mut leads = Slots::default();
        let mut stamps = Vec::new();
        // Whole pages of leads to a chunk, and to each core's part of it: each core encodes its
        // own pages, which are then appended (a bulk load starts from no leads).
        let size = nos
            .len()
            .div_ceil(8)
            .next_multiple_of(PAGE_LEADS)
            .clamp(PAGE_LEADS, BULK_CHUNK_LEADS);
        for chunk in nos.chunks(size) {
            let pages: Vec<&[LeadNo]> = chunk.chunks(PAGE_LEADS).collect();
            let parts = par_parts(&pages, PAGE_LEADS, |_, pages| {
                let mut slots = Slots::default();
                let mut histories = Vec::new();
                for no in pages.iter().flat_map(|page| page.iter()) {
                    let (recs, seqs) = by_lead.lead(*no);
                    let (mut slot, history) = self.derive_with_history(*no, &recs);
                    slot.filed = filed::encode(&seqs);
                    slots.push(&slot);
                    histories.push(history);
                }
                (slots, histories)
            });
            let (parts, histories): (Vec<Slots>, Vec<_>) = parts.into_iter().unzip();
            for part in parts {
                leads.append(part);
            }
            self.take_histories(chunk, histories.into_iter().flatten(), &mut stamps);
        }
        // The records go before the index entries are noted (from the encoded slots, as a
        // restore notes them): the two never take memory at the same time.
        drop(by_lead);
        self.end_run();
        let derived_at = started.elapsed();
        // The whole history goes into the first checkpoint (`all_dirty`), not `unsaved`. The
        // history and the funnel indexes are built at the same time.
        let next = &mut self.next;
        let (history, index, rules) = (&mut next.history, &mut next.index, &next.rules);
        let (history_at, noted_at) = std::thread::scope(|scope| {
            let history = scope.spawn(move || {
                crate::heap::releasing(|| history.add(&mut stamps));
                started.elapsed()
            });
            let changes = note_slots(&leads, rules);
            let noted_at = started.elapsed();
            *index = FunnelIndex::default();
            apply_changes(index, changes);
            let history_at = history.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (history_at, noted_at)
        });
        next.leads = leads;
        self.all_dirty = true;
        tracing::info!(
            lay_out_secs = laid_out_at.as_secs_f64(),
            derive_secs = (derived_at - laid_out_at).as_secs_f64(),
            history_secs = (history_at - derived_at).as_secs_f64(),
            note_secs = (noted_at - derived_at).as_secs_f64(),
            index_secs = (started.elapsed() - noted_at).as_secs_f64(),
            "derived every lead"
        );
    }

    /// Makes room for a bulk load of about `entries()` more entries, and returns that count
    /// (`None`, and `entries` not asked, when this is no bulk load).
    pub(crate) fn reserve(&mut self, entries: impl FnOnce() -> usize) -> Option<usize> {
        let gathered = self.bulk.as_mut()?;
        let entries = entries();
        gathered.reserve(entries);
        Some(entries)
    }

    /// The state as of now, to publish to readers.
    pub fn snapshot(&mut self) -> Arc<Engine> {
        self.finish_bulk();
        if self.dict.len() != self.next.dict.len() {
            self.next.dict = Arc::new(self.dict.clone());
        }
        self.next.derived = Arc::default();
        Arc::new(self.next.clone())
    }

    /// Applies consecutive log entries and re-derives each lead they change once. A changed
    /// lead's earlier events are read back from the ledger by the seqs filed under it.
    pub fn apply(&mut self, entries: &[Entry], ledger: &Ledger) -> Result<(), EngineError> {
        let views: Vec<EntryRef<'_>> = entries
            .iter()
            .map(|e| EntryRef {
                seq: e.seq,
                recorded_at: e.recorded_at,
                stream_seq: e.stream_seq,
                hash: e.hash,
                event: e.event.as_ref(),
            })
            .collect();
        self.apply_read(&views, ledger)
    }

    /// [`Writer::apply`] for entries read in place from the ledger's blocks.
    pub fn apply_read(&mut self, entries: &[EntryRef<'_>], ledger: &Ledger) -> Result<(), EngineError> {
        let mut pending = Pending::default();
        let mut result = Ok(());
        for (i, entry) in entries.iter().enumerate() {
            if let Some(gathered) = &self.bulk {
                // The lead numbers' table is larger than the cache at a million leads: its line
                // for an entry a few on is fetched while this one is applied.
                if let Some(ahead) = entries.get(i + PREFETCH_AHEAD).and_then(|e| e.event.lead_id) {
                    gathered.prefetch(ahead);
                }
            }
            let expected = self.next.head.seq + 1;
            if entry.seq != expected {
                result = Err(ProjectionError::Gap {
                    expected,
                    got: entry.seq,
                }
                .into());
                break;
            }
            if let Err(e) = self.insert(entry, ledger, &mut pending) {
                result = Err(e);
                break;
            }
            self.next.head = LogPosition {
                seq: entry.seq,
                hash: entry.hash,
            };
        }
        self.settle(pending, ledger)?;
        result
    }

    fn lead_no(&mut self, lead_id: &str, pending: &mut Pending) -> LeadNo {
        if let Some(gathered) = &mut self.bulk {
            return gathered.lead_no(lead_id);
        }
        if let Some(no) = self
            .next
            .names
            .get(lead_id)
            .or_else(|| pending.new_leads.get(lead_id).copied())
        {
            return no;
        }
        self.next.leads.push(&LeadSlot::default());
        let no = LeadNo::try_from(self.next.leads.len() - 1).expect("more than 2^32 leads");
        pending.new_leads.insert(lead_id.to_owned(), no);
        pending.new_names.push((lead_id.into(), no));
        no
    }

    /// Lead `no`'s live records before `before`, read back from the ledger (once per batch)
    /// without the retracted ones.
    fn working<'a>(
        &mut self,
        pending: &'a mut Pending,
        no: LeadNo,
        lead_id: &str,
        before: u64,
        ledger: &Ledger,
    ) -> Result<&'a mut Vec<Rec>, EngineError> {
        match pending.leads.entry(no) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => Ok(e.insert(self.read_lead(no, lead_id, before, ledger)?)),
        }
    }

    fn read_lead(&mut self, no: LeadNo, lead_id: &str, before: u64, ledger: &Ledger) -> Result<Vec<Rec>, EngineError> {
        let gone = self.retracted.get(&no);
        let mut seqs = self
            .next
            .leads
            .get(no as usize)
            .map_or_else(Vec::new, |slot| filed::seqs(slot.filed));
        seqs.retain(|seq| *seq < before);
        let mut recs = Vec::new();
        for entry in ledger.entries_at(&seqs)? {
            if entry.event.lead_id.as_deref() != Some(lead_id) || gone.is_some_and(|g| g.contains(&entry.seq)) {
                continue;
            }
            if let Some(rec) = Rec::of(entry.seq, &entry.event.as_ref(), &mut self.dict) {
                recs.push(rec);
            }
        }
        recs.sort_unstable_by_key(Rec::order_key);
        Ok(recs)
    }

    fn insert(&mut self, entry: &EntryRef<'_>, ledger: &Ledger, pending: &mut Pending) -> Result<(), EngineError> {
        let event = &entry.event;
        match &event.data {
            DataRef::Rules(change) => {
                let rules = RulesEntry {
                    occurred_at: event.occurred_at,
                    seq: entry.seq,
                    id: event.id.to_owned(),
                    change: change.clone(),
                };
                self.rules_step(entry.seq, RulesStep::Insert(rules.clone()));
                Arc::make_mut(&mut self.next.rules).insert(rules);
                pending.rules_from = Some(
                    pending
                        .rules_from
                        .map_or(event.occurred_at, |f| f.min(event.occurred_at)),
                );
            }
            DataRef::Spend {
                channel,
                campaign,
                amount,
            } => {
                let spend = Spend {
                    seq: entry.seq,
                    at: event.occurred_at,
                    channel: self.dict.intern(channel),
                    campaign: self.dict.intern_opt(*campaign),
                    amount_minor: amount.amount_minor,
                    currency: self.dict.intern(amount.currency),
                };
                Arc::make_mut(&mut self.next.spends).push(spend);
            }
            DataRef::Retract { target_id, .. } => {
                let Some((seq, target)) = locate(ledger, target_id).filter(|(s, _)| *s < entry.seq) else {
                    return Ok(());
                };
                match target {
                    Target::Lead(lead_id) => {
                        let no = self.lead_no(&lead_id, pending);
                        if let Some(gathered) = &mut self.bulk {
                            gathered.retract(no, seq, entry.seq);
                            return Ok(());
                        }
                        let recs = self.working(pending, no, &lead_id, entry.seq, ledger)?;
                        let gone: Vec<Rec> = recs.iter().filter(|r| r.seq == seq).copied().collect();
                        recs.retain(|r| r.seq != seq);
                        self.file(pending, no, entry.seq);
                        self.retracted.entry(no).or_default().push(seq);
                        let run = self.run_retracted.entry(no).or_default();
                        run.extend(gone.into_iter().map(|r| (r, entry.seq)));
                    }
                    Target::Rules => {
                        if self.next.rules.entries().iter().any(|e| e.seq == seq) {
                            self.rules_step(entry.seq, RulesStep::Remove((*target_id).to_owned()));
                        }
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
                let Some(lead_id) = event.lead_id else {
                    return Ok(());
                };
                let Some(rec) = Rec::of(entry.seq, event, &mut self.dict) else {
                    return Ok(());
                };
                let no = self.lead_no(lead_id, pending);
                if let Some(gathered) = &mut self.bulk {
                    gathered.push(no, rec);
                    return Ok(());
                }
                let recs = self.working(pending, no, lead_id, entry.seq, ledger)?;
                let at = recs.partition_point(|r| r.order_key() < rec.order_key());
                recs.insert(at, rec);
                self.file(pending, no, entry.seq);
            }
        }
        Ok(())
    }

    /// Files entry `seq` under lead `no` in the lead index (when the batch settles: every
    /// lead filed under is re-derived then, and its slot rewritten once).
    fn file(&mut self, pending: &mut Pending, no: LeadNo, seq: u64) {
        pending.filed.entry(no).or_default().push(seq);
    }

    /// Records a rules change of the current run (remembering the timeline before the run).
    fn rules_step(&mut self, seq: u64, step: RulesStep) {
        self.next.rules_changed_at = seq;
        if self.run_rules.steps.is_empty() {
            self.run_rules.before = (*self.next.rules).clone();
        }
        self.run_rules.steps.push((seq, step));
    }

    /// Lead `no`'s derived slot and its history over the current run: the stamps and the latest
    /// time a version reads, or `None` if a seq did not fit a stamp.
    fn derive_with_history(&self, no: LeadNo, recs: &[Rec]) -> (LeadSlot, Option<LeadHistory>) {
        let slot = derive(recs, &self.dict, &self.next.rules);
        if self.without_history {
            return (slot, None);
        }
        let retracted = self.run_retracted.get(&no).map_or(&[][..], |v| &v[..]);
        let run = history::Run {
            from: self.run_from,
            recs,
            retracted,
            rules: &self.run_rules,
            rules_now: &self.next.rules,
            dict: &self.dict,
        };
        let (versions, latest) = history::versions(&run, &slot.facts);
        let old = self.next.leads.get(no as usize).map(|old| old.facts);
        let mut prev = old.map_or(View::NONE, |old| View::of(&old, Micros::MAX));
        let mut stamps = Vec::new();
        for (seq, view) in versions {
            let Some(seq) = history::stamp_seq(seq) else {
                return (slot, None);
            };
            history::diff(&prev, &view, seq, &mut stamps);
            prev = view;
        }
        // Every earlier version read at most the old final facts' time or the old late time.
        let settled = |f: &Facts| if f.exists() { f.settled_at() } else { Micros::MIN };
        let ever = (latest.max(old.as_ref().map_or(Micros::MIN, settled)))
            .max(self.next.late.get(&no).copied().unwrap_or(Micros::MIN));
        let late = (ever > settled(&slot.facts)).then_some(ever);
        (slot, Some(LeadHistory { stamps, latest, late }))
    }

    /// Adds the run's history to the engine's (and, with `keep`, to what the next checkpoint
    /// writes), ends the run, and hands back the derived slots.
    fn record_history(
        &mut self,
        nos: &[LeadNo],
        derived: impl IntoIterator<Item = (LeadSlot, Option<LeadHistory>)>,
        keep: bool,
    ) -> Vec<LeadSlot> {
        let (slots, mut stamps) = self.take_history(nos, derived);
        self.next.history.add(&mut stamps);
        if keep {
            self.unsaved.extend(stamps);
        }
        slots
    }

    /// Splits derived leads into their slots and the run's stamps (noting the history's
    /// latest time and completeness), and ends the run.
    fn take_history(
        &mut self,
        nos: &[LeadNo],
        derived: impl IntoIterator<Item = (LeadSlot, Option<LeadHistory>)>,
    ) -> (Vec<LeadSlot>, Vec<Stamp>) {
        let mut stamps = Vec::new();
        let (slots, histories): (Vec<LeadSlot>, Vec<_>) = derived.into_iter().unzip();
        self.take_histories(nos, histories, &mut stamps);
        self.end_run();
        (slots, stamps)
    }

    /// The histories of some of the run's leads (`nos`, in order): their stamps added to
    /// `stamps`, the history's latest time, completeness and late leads noted; the caller ends
    /// the run.
    fn take_histories(
        &mut self,
        nos: &[LeadNo],
        histories: impl IntoIterator<Item = Option<LeadHistory>>,
        stamps: &mut Vec<Stamp>,
    ) {
        let history = &mut self.next.history;
        let mut late: Vec<(LeadNo, Option<Micros>)> = Vec::new();
        for (no, lead_history) in nos.iter().zip(histories) {
            match lead_history {
                Some(h) => {
                    stamps.extend(h.stamps);
                    history.latest = history.latest.max(h.latest);
                    if h.late.is_some() || self.next.late.contains_key(no) {
                        late.push((*no, h.late));
                    }
                }
                None => history.complete = false,
            }
        }
        if !late.is_empty() {
            let map = Arc::make_mut(&mut self.next.late);
            for (no, t) in late {
                match t {
                    Some(t) => map.insert(no, t),
                    None => map.remove(&no),
                };
            }
        }
    }

    fn end_run(&mut self) {
        self.run_from = self.next.head.seq;
        self.run_rules = RulesSteps::default();
        self.run_retracted.clear();
    }

    /// Re-derives the changed leads and applies the difference of their facts to the indexes.
    fn settle(&mut self, mut pending: Pending, ledger: &Ledger) -> Result<(), EngineError> {
        self.next.names.insert_all(&std::mem::take(&mut pending.new_names));
        if self.bulk.is_some() {
            return Ok(());
        }
        if let Some(from) = pending.rules_from {
            let stale: Vec<LeadNo> = (0..self.next.leads.len() as LeadNo)
                .filter(|no| !pending.leads.contains_key(no))
                .filter(|no| self.next.leads.get(*no as usize).is_some_and(|s| s.last_at >= from))
                .collect();
            let before = self.next.head.seq + 1;
            for no in stale {
                let lead_id = self.next.names.name(no).unwrap_or_default();
                let recs = self.read_lead(no, &lead_id, before, ledger)?;
                pending.leads.insert(no, recs);
            }
        }
        let mut leads: Vec<(LeadNo, Vec<Rec>)> = pending.leads.into_iter().collect();
        leads.sort_unstable_by_key(|(no, _)| *no);
        let derived = par_map(&leads, |(no, recs)| self.derive_with_history(*no, recs));
        let nos: Vec<LeadNo> = leads.iter().map(|(no, _)| *no).collect();
        let slots = self.record_history(&nos, derived, true);
        // A rules change moves every lead's Markov lookback: that index is rebuilt instead.
        let rules_changed = pending.rules_from.is_some();
        let mut changes = if rules_changed {
            Changes::default()
        } else {
            Changes::new()
        };
        let rules = Arc::clone(&self.next.rules);
        let mut replaced = Vec::with_capacity(leads.len());
        for ((no, _), mut slot) in leads.iter().zip(slots) {
            self.dirty.insert(*no);
            let old = self
                .next
                .leads
                .get(*no as usize)
                .map(|v| v.to_slot())
                .unwrap_or_default();
            changes.note(*no, &old, &rules, false);
            changes.note(*no, &slot, &rules, true);
            slot.filed = match pending.filed.remove(no) {
                Some(new) => filed::extended(&old.filed, &new),
                None => old.filed,
            };
            replaced.push((*no as usize, slot));
        }
        self.next.leads.replace(&replaced);
        self.apply_changes(changes);
        if rules_changed {
            self.next.index.markov = MarkovIndex::build(&self.next.leads, &rules);
        }
        Ok(())
    }

    /// Writes what changed since the last checkpoint (the pages of the leads re-derived, new
    /// symbols, history stamps) and the position, in one atomic batch. When more pages changed
    /// than [`checkpoint::PAGES_PER_BATCH`] (after a bulk load every page did), the header is
    /// removed first and the pages go in batches of that many (a crash part-way leaves no
    /// header, so no checkpoint: the next start rebuilds from the log), then the header.
    /// Returns the number of leads written.
    pub fn checkpoint(&mut self, tree: &sled::Tree) -> Result<usize, EngineError> {
        let failed = |e: sled::Error| EngineError::Checkpoint(format!("write: {e}"));
        self.finish_bulk();
        let mut history_parts: Vec<Vec<u8>> = Vec::new();
        let leads: Vec<LeadNo> = if self.all_dirty {
            tree.remove(checkpoint::HEADER_KEY).map_err(failed)?;
            let mut stale = sled::Batch::default();
            for item in tree.scan_prefix([b'h']) {
                stale.remove(item.map_err(failed)?.0);
            }
            tree.apply_batch(stale).map_err(failed)?;
            self.history_part = 0;
            for part in checkpoint::encode_history(self.next.history.sets())? {
                let mut batch = sled::Batch::default();
                batch.insert(&checkpoint::history_key(self.history_part), part);
                tree.apply_batch(batch).map_err(failed)?;
                self.history_part += 1;
            }
            self.unsaved.clear();
            (0..self.next.leads.len() as LeadNo).collect()
        } else {
            history_parts = checkpoint::encode_history(History::group(&mut self.unsaved))?;
            self.dirty.iter().copied().collect()
        };
        let page_leads = checkpoint::PAGE_LEADS as LeadNo;
        let mut pages: Vec<u32> = leads.iter().map(|no| no / page_leads).collect();
        pages.sort_unstable();
        pages.dedup();
        let mut parts: Vec<&[u32]> = pages.chunks(checkpoint::PAGES_PER_BATCH.max(1)).collect();
        if parts.len() > 1 {
            // Too many pages for one batch (sled's batches take a process-wide write lock, and
            // one batch of every page a backlog touched stalls the ledger's appends as long):
            // no header until the last batch, so a crash part-way leaves no mixed checkpoint.
            tree.remove(checkpoint::HEADER_KEY).map_err(failed)?;
        }
        if parts.is_empty() {
            parts = vec![&pages[..]];
        }
        let last = parts.len().saturating_sub(1);
        let count = self.next.leads.len() as LeadNo;
        for (i, part) in parts.iter().enumerate() {
            let mut batch = sled::Batch::default();
            for page in *part {
                let nos = page * page_leads..((page + 1) * page_leads).min(count);
                let mut leads = Vec::with_capacity(nos.len());
                for no in nos {
                    match (self.next.names.name(no), self.next.leads.get(no as usize)) {
                        (Some(id), Some(slot)) => leads.push((id, slot)),
                        _ => return Err(EngineError::Checkpoint(format!("lead {no} has no id or slot"))),
                    }
                }
                let value = checkpoint::encode_page(leads.iter().map(|(id, slot)| (id.as_str(), *slot)))?;
                batch.insert(&checkpoint::page_key(*page), value);
            }
            if i == last {
                for part in history_parts.drain(..) {
                    batch.insert(&checkpoint::history_key(self.history_part), part);
                    self.history_part += 1;
                }
                for sym in self.saved_syms.max(1)..self.dict.len() {
                    batch.insert(&checkpoint::sym_key(sym as u32), self.dict.name(sym as Sym).as_bytes());
                }
                batch.insert(
                    checkpoint::HEADER_KEY,
                    checkpoint::encode_header(&self.checkpoint_header())?,
                );
            }
            tree.apply_batch(batch).map_err(failed)?;
        }
        self.dirty.clear();
        self.unsaved.clear();
        self.all_dirty = false;
        self.saved_syms = self.dict.len();
        Ok(leads.len())
    }

    fn checkpoint_header(&self) -> checkpoint::Header {
        let mut retracted: Vec<(LeadNo, Vec<u64>)> = self.retracted.iter().map(|(k, v)| (*k, v.clone())).collect();
        retracted.sort_unstable();
        checkpoint::Header {
            format: checkpoint::FORMAT,
            position: self.next.head,
            leads: self.next.leads.len() as u32,
            syms: self.dict.len().saturating_sub(1) as u32,
            rules: (*self.next.rules).clone(),
            spends: self.next.spends.to_vec(),
            retracted,
            history_parts: self.history_part,
            history_latest: self.next.history.latest,
            history_complete: self.next.history.complete,
            late: {
                let mut late: Vec<(LeadNo, Micros)> = self.next.late.iter().map(|(k, v)| (*k, *v)).collect();
                late.sort_unstable();
                late
            },
            rules_changed_at: self.next.rules_changed_at,
        }
    }

    /// A writer at the checkpoint's position, if `tree` holds one that matches `ledger`:
    /// slots loaded, indexes built from their facts.
    pub fn restore(tree: &sled::Tree, ledger: &Ledger) -> Result<Option<Writer>, EngineError> {
        let started = std::time::Instant::now();
        let Some(loaded) = checkpoint::load(tree, ledger)? else {
            return Ok(None);
        };
        let loaded_at = started.elapsed();
        let mut writer = Writer::default();
        for (i, name) in loaded.names.iter().enumerate() {
            if writer.dict.intern(name) as usize != i + 1 {
                return Err(EngineError::Checkpoint(format!("dictionary: `{name}` stored twice")));
            }
        }
        let header = loaded.header;
        let rules = Arc::new(header.rules);
        writer.next.names.reserve(header.leads as usize);
        for page in loaded.leads.iter() {
            let page = page?;
            let mut stored = checkpoint::PageReader::new(&page);
            let mut names = Vec::with_capacity(checkpoint::PAGE_LEADS);
            while let Some(lead) = stored.next_lead()? {
                let no = writer.next.leads.len() as LeadNo;
                names.push((lead.id, no));
                writer.next.leads.push_encoded(lead.slot, lead.extra);
            }
            writer.next.names.insert_all(&names);
        }
        if writer.next.leads.len() != header.leads as usize {
            return Err(EngineError::Checkpoint("fewer leads than its header says".into()));
        }
        let slots_at = started.elapsed();
        // Every lead's index entries (the Markov index's too), noted on every core.
        let changes = note_slots(&writer.next.leads, &rules);
        writer.next.head = header.position;
        writer.next.rules = rules;
        writer.next.spends = Arc::new(header.spends);
        writer.retracted = header.retracted.into_iter().collect();
        let noted_at = started.elapsed();
        writer.apply_changes(changes);
        let indexed_at = started.elapsed();
        writer.next.history = loaded
            .history
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        tracing::info!(
            load_secs = loaded_at.as_secs_f64(),
            slots_secs = (slots_at - loaded_at).as_secs_f64(),
            note_secs = (noted_at - slots_at).as_secs_f64(),
            index_secs = (indexed_at - noted_at).as_secs_f64(),
            history_wait_secs = (started.elapsed() - indexed_at).as_secs_f64(),
            "checkpoint restored"
        );
        writer.next.history.latest = header.history_latest;
        writer.next.late = Arc::new(header.late.into_iter().collect());
        writer.next.rules_changed_at = header.rules_changed_at;
        writer.next.history.complete = header.history_complete;
        writer.history_part = header.history_parts;
        writer.run_from = header.position.seq;
        writer.saved_syms = writer.dict.len();
        Ok(Some(writer))
    }

    fn apply_changes(&mut self, changes: Changes) {
        apply_changes(&mut self.next.index, changes);
    }
}

/// Applies the difference of facts to the funnel indexes.
fn apply_changes(index: &mut FunnelIndex, changes: Changes) {
    let Changes {
        groups,
        settled,
        deals,
        markov,
    } = changes;
    // A large Markov update (a bulk load) is sorted on a core of its own meanwhile.
    let (markov_index, many) = (
        &mut index.markov,
        markov.as_ref().is_some_and(|m| m.len() >= PARALLEL_DERIVE_MIN),
    );
    std::thread::scope(|scope| {
        if let Some(markov) = markov {
            if many {
                scope.spawn(move || crate::heap::releasing(|| markov_index.update(markov)));
            } else {
                markov_index.update(markov);
            }
        }
        apply_funnel_changes(
            &mut index.groups,
            &mut index.settled,
            &mut index.deals,
            groups,
            settled,
            deals,
        );
    });
}

fn apply_funnel_changes(
    index_groups: &mut [HashMap<Sym, GroupIndex>; 3],
    index_settled: &mut Runs<(Micros, LeadNo)>,
    index_deals: &mut Runs<(Micros, LeadNo)>,
    groups: FxHashMap<(usize, Sym), GroupChanges>,
    settled: Delta<(Micros, LeadNo)>,
    deals: Delta<(Micros, LeadNo)>,
) {
    let mut touched: HashSet<(usize, Sym)> = HashSet::new();
    for ((d, g), group) in groups {
        for (m, (mut add, mut remove)) in group.period.into_iter().enumerate() {
            cancel(&mut add, &mut remove);
            if add.is_empty() && remove.is_empty() {
                continue;
            }
            touched.insert((d, g));
            index_groups[d].entry(g).or_default().period[m].update(&add, &remove);
        }
        for (m, (mut add, mut remove)) in group.cohort.into_iter().enumerate() {
            cancel(&mut add, &mut remove);
            if add.is_empty() && remove.is_empty() {
                continue;
            }
            index_groups[d].entry(g).or_default().cohort[m].update(&add, &remove);
        }
    }
    for (d, g) in touched {
        if index_groups[d].get(&g).is_some_and(|gi| gi.period[0].is_empty()) {
            index_groups[d].remove(&g);
        }
    }
    let (mut add, mut remove) = settled;
    cancel(&mut add, &mut remove);
    index_settled.update(&add, &remove);
    let (mut add, mut remove) = deals;
    cancel(&mut add, &mut remove);
    index_deals.update(&add, &remove);
}

/// The final (as of forever) value of a lead's milestone, as the index holds it.
pub fn final_time(facts: &Facts, m: Milestone) -> Micros {
    facts.milestone_at(m, Micros::MAX).unwrap_or(NEVER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_map_keeps_order_whatever_the_split() {
        let items: Vec<u64> = (0..(3 * PARALLEL_DERIVE_MIN as u64 + 7)).collect();
        let f = |x: &u64| x.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (x >> 3);
        let sequential: Vec<u64> = items.iter().map(f).collect();
        assert_eq!(par_map(&items, f).collect::<Vec<_>>(), sequential);
    }

    /// `ids`, numbered in order from 0, as `insert_all` takes them.
    fn numbered(ids: &[String]) -> Vec<(&str, LeadNo)> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i as LeadNo))
            .collect()
    }

    /// A restore reserves room for the leads it loads and an eighth more: the first new leads
    /// after it do not move the id ends to a table twice as large.
    #[test]
    fn a_restored_name_table_takes_new_leads_without_growing() {
        let names = LeadNames::default();
        names.reserve(800);
        let capacity = |names: &LeadNames| names.table.read().unwrap().ends.ends.capacity();
        let reserved = capacity(&names);
        let ids: Vec<String> = (0..900).map(|i| format!("lead-{i}")).collect();
        let new = numbered(&ids);
        names.insert_all(&new[..800]);
        names.insert_all(&new[800..]);
        assert_eq!(capacity(&names), reserved, "a hundred new leads after 800 restored fit");
        assert_eq!(names.get("lead-899"), Some(899));
    }

    #[test]
    fn lead_names_find_every_id_and_name_every_number() {
        let names = LeadNames::default();
        // Lengths from 6 to the longest an id may have, so stripes of long ids come near
        // their u16 bound.
        let max = funnel_core::event::ID_CHARS_MAX;
        let ids: Vec<String> = (0..5_000)
            .map(|i| format!("L{i:05}{}", "x".repeat(if i < 1_000 { i % (max - 5) } else { max - 6 })))
            .collect();
        assert!(ids.iter().all(|id| id.len() <= max));
        let new = numbered(&ids);
        // In two inserts, the second growing the table.
        names.insert_all(&new[..1_000]);
        names.insert_all(&new[1_000..]);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(names.get(id), Some(i as LeadNo));
            assert_eq!(names.name(i as LeadNo).as_deref(), Some(id.as_str()));
        }
        assert_eq!(names.get("L99999"), None);
        assert_eq!(names.get(""), None);
        assert_eq!(names.len(), ids.len());
    }
}

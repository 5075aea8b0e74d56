//! The Markov chain's transition counts as a function of `as_of`, maintained by difference.
//!
//! A lead's path as of `T` ([`funnel_core::attribution::MarkovChain::build`]) is its touches
//! within lookback of its first won close by `T`, or of `T` itself. As `T` grows that path
//! changes only at a few times: a touch's time (it enters), a touch's time plus a lookback
//! plus one micro (it leaves), a rules change (the lookback changes) and a deal's close (the
//! path ends in `conversion` and stops moving). So each lead is evaluated at those breakpoints
//! only, and the difference of its transitions at each is recorded: per transition, the times
//! at which one such transition **enters** the counts and the times at which one **leaves**.
//!
//! The count of a transition as of `T` is then `enters ≤ T − leaves ≤ T`: two rank queries
//! on sorted runs per transition, about a hundred of them in all, instead of a walk over every
//! lead. A re-derived lead removes its old entries and adds its new ones, like every index.
//!
//! Invariant: the entries of every live lead were computed under the engine's current rules.
//! A rules change moves the lookback of every lead at once, so the writer rebuilds the whole
//! index then (rare: once per rules event) rather than by difference.

use funnel_core::attribution::lookback_micros;
use funnel_core::rules::RulesTimeline;
use funnel_core::time::Micros;
use fxhash::FxHashMap as HashMap;

use crate::dict::Sym;
use crate::facts::{Extra, Touch};
use crate::index::Runs;
use crate::slots::Slots;

/// A state of the chain: a channel's symbol, or one of the three below.
pub type State = Sym;
pub const START: State = u32::MAX - 2;
pub const CONVERSION: State = u32::MAX - 1;
pub const NULL: State = u32::MAX;

/// A transition between two states.
pub type Transition = (State, State);

/// Entries to add and remove, per `(transition, leaves)`.
#[derive(Debug, Default)]
pub struct MarkovChanges {
    entries: HashMap<(Transition, bool), (Vec<Micros>, Vec<Micros>)>,
    /// The lookbacks of the rules every lead is noted under (the first note's: one set of
    /// changes is noted under one timeline), and the buffers noting reuses.
    lookback: Option<Lookback>,
    scratch: Scratch,
}

/// When each transition enters and leaves the counts.
#[derive(Debug, Clone, Default)]
pub struct MarkovIndex {
    cells: HashMap<Transition, Cell>,
}

#[derive(Debug, Clone, Default)]
struct Cell {
    enters: Runs<Micros>,
    leaves: Runs<Micros>,
}

/// How many items are `≤ t`.
fn at_most(runs: &Runs<Micros>, t: Micros) -> usize {
    t.checked_add(1).map_or(runs.len(), |after| runs.rank(&after))
}

impl MarkovIndex {
    /// Every transition with a non-zero count as of `as_of`, with its count.
    pub fn counts(&self, as_of: Micros) -> Vec<(Transition, u64)> {
        let mut out: Vec<(Transition, u64)> = self
            .cells
            .iter()
            .map(|(t, cell)| (*t, at_most(&cell.enters, as_of) - at_most(&cell.leaves, as_of)))
            .filter(|(_, n)| *n > 0)
            .map(|(t, n)| (t, n as u64))
            .collect();
        out.sort_unstable();
        out
    }

    pub fn update(&mut self, changes: MarkovChanges) {
        for ((transition, leaves), (mut add, mut remove)) in changes.entries {
            crate::state::cancel(&mut add, &mut remove);
            if add.is_empty() && remove.is_empty() {
                continue;
            }
            let cell = self.cells.entry(transition).or_default();
            if leaves { &mut cell.leaves } else { &mut cell.enters }.update(&add, &remove);
        }
        self.cells.retain(|_, c| !c.enters.is_empty());
    }

    /// The index of every lead in `leads`, under `rules`.
    pub fn build(leads: &Slots, rules: &RulesTimeline) -> MarkovIndex {
        let _span = tracing::info_span!("markov_index", leads = leads.len()).entered();
        // Noted on every core (the parts are sorted when applied: the split changes nothing).
        let parts = crate::state::par_parts(leads.pages(), crate::slots::PAGE_LEADS, |_, pages| {
            let mut part = MarkovChanges::default();
            let mut touches = Vec::new();
            for slot in pages.iter().flat_map(|page| page.iter()) {
                touches.clear();
                touches.extend(slot.touches());
                part.note(&touches, slot.extra().as_ref(), rules, true);
            }
            part
        });
        let mut all = MarkovChanges::default();
        for part in parts {
            all.absorb(part);
        }
        let mut index = MarkovIndex::default();
        index.update(all);
        index
    }

    pub fn bytes(&self) -> usize {
        self.cells.values().map(|c| c.enters.bytes() + c.leaves.bytes()).sum()
    }
}

impl MarkovChanges {
    /// Adds `other`'s entries to these (they are sorted when applied).
    pub fn absorb(&mut self, other: MarkovChanges) {
        for (key, (add, remove)) in other.entries {
            let mine = self.entries.entry(key).or_default();
            crate::state::join(&mut mine.0, add);
            crate::state::join(&mut mine.1, remove);
        }
    }

    /// Entries noted (added and removed).
    pub fn len(&self) -> usize {
        self.entries.values().map(|(a, r)| a.len() + r.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records the entries of a lead with `touches` and `extra` as added (`add`) or removed,
    /// under `rules`.
    pub fn note(&mut self, touches: &[Touch], extra: Option<&Extra>, rules: &RulesTimeline, add: bool) {
        let MarkovChanges {
            entries,
            lookback,
            scratch,
        } = self;
        let lookback = lookback.get_or_insert_with(|| Lookback::of(rules));
        debug_assert_eq!(
            lookback.changes.len(),
            rules.entries().len(),
            "one timeline per set of changes"
        );
        steps(touches, extra, lookback, scratch, |transition, leaves, at| {
            let delta = entries.entry((transition, leaves)).or_default();
            if add { &mut delta.0 } else { &mut delta.1 }.push(at);
        });
    }
}

/// The attribution lookback in force at any time under a rules timeline: what
/// [`lookback_micros`] gives, looked up among the rules changes instead of computed again
/// (a lead's breakpoints asked it once each: a tenth of a replay's Markov work).
#[derive(Debug, Default)]
struct Lookback {
    /// When each rules change occurred, in the timeline's order.
    changes: Vec<Micros>,
    /// The lookback before the first change, then after each.
    in_force: Vec<Micros>,
    /// Every lookback in force at some time, sorted and distinct.
    distinct: Vec<Micros>,
}

impl Lookback {
    fn of(rules: &RulesTimeline) -> Lookback {
        let changes: Vec<Micros> = rules.entries().iter().map(|e| e.occurred_at).collect();
        let mut in_force = vec![lookback_micros(&RulesTimeline::default(), 0)];
        in_force.extend(changes.iter().map(|t| lookback_micros(rules, *t)));
        let mut distinct = in_force.clone();
        distinct.sort_unstable();
        distinct.dedup();
        Lookback {
            changes,
            in_force,
            distinct,
        }
    }

    /// As `RulesTimeline::at`: the rules of the last change at or before `t`.
    fn at(&self, t: Micros) -> Micros {
        self.in_force[self.changes.partition_point(|c| *c <= t)]
    }
}

/// A lead's breakpoints and paths, kept between leads so that noting one allocates nothing.
#[derive(Debug, Default)]
struct Scratch {
    breaks: Vec<Micros>,
    before: Vec<Transition>,
    after: Vec<Transition>,
}

/// The transitions of a lead's path as of `as_of`, sorted, into `out` (cleared first).
fn path_at(touches: &[Touch], extra: Option<&Extra>, lookback: &Lookback, as_of: Micros, out: &mut Vec<Transition>) {
    out.clear();
    let deal = extra.iter().flat_map(|e| e.deals.iter()).find(|d| d.close_at <= as_of);
    let end = deal.map_or(as_of, |d| d.close_at);
    let from = end.saturating_sub(lookback.at(end));
    let mut state = START;
    for touch in touches.iter().filter(|t| {
        let at = t.at;
        (from..=end).contains(&at)
    }) {
        out.push((state, touch.channel));
        state = touch.channel;
    }
    if out.is_empty() {
        return;
    }
    out.push((state, if deal.is_some() { CONVERSION } else { NULL }));
    out.sort_unstable();
}

/// Calls `emit(transition, leaves, at)` for each change of a lead's path over all `as_of`.
fn steps(
    touches: &[Touch],
    extra: Option<&Extra>,
    lookback: &Lookback,
    scratch: &mut Scratch,
    mut emit: impl FnMut(Transition, bool, Micros),
) {
    let (Some(first), Some(last)) = (touches.first(), touches.last()) else {
        return;
    };
    // Every lookback in force at some time, and when the rules change.
    let longest = lookback.distinct.last().copied().unwrap_or(0).max(0);
    let Scratch { breaks, before, after } = scratch;
    breaks.clear();
    for touch in touches.iter() {
        breaks.push(touch.at);
        breaks.extend(
            lookback
                .distinct
                .iter()
                .map(|l| touch.at.saturating_add(*l).saturating_add(1)),
        );
    }
    let horizon = last.at.saturating_add(longest).saturating_add(1);
    breaks.extend(lookback.changes.iter().filter(|t| (first.at..=horizon).contains(*t)));
    breaks.extend(extra.iter().flat_map(|e| e.deals.iter()).map(|d| d.close_at));
    breaks.sort_unstable();
    breaks.dedup();
    before.clear();
    for at in breaks.iter().copied() {
        path_at(touches, extra, lookback, at, after);
        // Both sorted: emit what left and what entered.
        let (mut i, mut j) = (0, 0);
        while i < before.len() || j < after.len() {
            match (before.get(i), after.get(j)) {
                (Some(b), Some(a)) if b == a => {
                    i += 1;
                    j += 1;
                }
                (Some(b), Some(a)) if b < a => {
                    emit(*b, true, at);
                    i += 1;
                }
                (Some(b), None) => {
                    emit(*b, true, at);
                    i += 1;
                }
                (_, Some(a)) => {
                    emit(*a, false, at);
                    j += 1;
                }
                (None, None) => break,
            }
        }
        std::mem::swap(before, after);
    }
}

//! The funnel's history: every version a lead's funnel facts ever had, stamped with the log
//! seq that set it and the seq that superseded it, so that a question about a log prefix
//! (`at_seq`, `known_at`) is a filter over indexes rather than a replay.
//!
//! A lead's funnel *view* is what `/v1/funnel` reads of it: its group key per dimension and
//! the time each milestone was reached. When the view changes at seq `s`, each point that
//! left it is stamped *died at `s`* and each point that entered it *born at `s`*, per
//! (dimension, group, milestone). The log is append-only, so history only grows: what was true
//! at seq `N` never changes afterwards. A count over a prefix is
//! `born(window, seq ≤ N) − died(window, seq ≤ N)`, two dominance counts on [`Points`].
//!
//! Where the view at each seq comes from (see [`versions`]): when a lead's new events arrive in
//! business-time order (the usual case), its view after the event at time `T` is its final
//! facts as of `T` (milestones are first times: prefix-stable); otherwise (a late event, a
//! retraction, a rules change) the lead is derived again at each seq.

use std::borrow::Cow;
use std::collections::HashMap;

use funnel_core::lead::Milestone;
use funnel_core::rules::RulesTimeline;
use funnel_core::time::Micros;
use serde::{Deserialize, Serialize};

use crate::dict::{Dict, Sym};
use crate::facts::{facts_of, Facts, NEVER};
use crate::index::{Point, Points};
use crate::record::Rec;
use crate::state::{dim_key, DIMS};

/// What the funnel reads of a lead at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    pub keys: [Sym; 3],
    /// When each milestone was reached ([`NEVER`]: not reached).
    pub at: [Micros; 7],
}

impl View {
    /// A lead that does not exist (yet, or any more).
    pub const NONE: View = View {
        keys: [0; 3],
        at: [NEVER; 7],
    };

    /// `facts` as of `as_of`.
    pub fn of(facts: &Facts, as_of: Micros) -> View {
        if !facts.exists() {
            return View::NONE;
        }
        View {
            keys: std::array::from_fn(|d| dim_key(d, facts, as_of)),
            at: Milestone::ALL.map(|m| facts.milestone_at(m, as_of).unwrap_or(NEVER)),
        }
    }

    /// The point of set `(kind, d, m)`: its group and `x`, if the view has one there.
    fn point(&self, kind: Kind, d: usize, m: usize) -> Option<(Sym, Micros)> {
        match kind {
            Kind::Period if self.at[m] != NEVER => Some((self.keys[d], self.at[m])),
            Kind::Cohort if m > 0 && self.at[m] != NEVER && self.at[0] != NEVER => Some((self.keys[d], self.at[0])),
            _ => None,
        }
    }
}

/// Which count a point belongs to: the period count (`x` the milestone's time) or the cohort
/// count (`x` the inquiry time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    Period,
    Cohort,
}

/// One stamped point: born or died at `seq`, in set `(kind, d, group, m)`, at `x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub kind: Kind,
    pub born: bool,
    pub d: u8,
    pub group: Sym,
    pub m: u8,
    pub x: Micros,
    pub seq: u32,
}

/// The points of one set of the history, sorted: `(x, seq)` of each stamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetPoints {
    pub kind: Kind,
    pub born: bool,
    pub d: u8,
    pub group: Sym,
    pub m: u8,
    pub points: Vec<Point>,
}

impl SetPoints {
    /// The same set with no points.
    pub fn clone_empty(&self) -> SetPoints {
        SetPoints {
            points: Vec::new(),
            ..*self
        }
    }
}

/// The stamps of a lead's view changing from `old` to `new` at `seq`.
pub fn diff(old: &View, new: &View, seq: u32, out: &mut Vec<Stamp>) {
    if old == new {
        return;
    }
    for kind in [Kind::Period, Kind::Cohort] {
        for d in 0..DIMS.len() {
            for m in 0..7 {
                let (a, b) = (old.point(kind, d, m), new.point(kind, d, m));
                if a == b {
                    continue;
                }
                let stamp = |born, (group, x): (Sym, Micros)| Stamp {
                    kind,
                    born,
                    d: d as u8,
                    group,
                    m: m as u8,
                    x,
                    seq,
                };
                out.extend(a.map(|p| stamp(false, p)));
                out.extend(b.map(|p| stamp(true, p)));
            }
        }
    }
}

/// The rules timeline at any seq of a run of entries: the timeline before the run and the
/// rules changes in it.
#[derive(Debug, Clone, Default)]
pub struct RulesSteps {
    pub before: RulesTimeline,
    pub steps: Vec<(u64, RulesStep)>,
}

#[derive(Debug, Clone)]
pub enum RulesStep {
    Insert(funnel_core::rules::RulesEntry),
    Remove(String),
}

impl RulesSteps {
    /// The timeline in force after the entry at `seq`.
    pub fn upto(&self, seq: u64) -> RulesTimeline {
        let mut rules = self.before.clone();
        for (_, step) in self.steps.iter().take_while(|(s, _)| *s <= seq) {
            match step {
                RulesStep::Insert(entry) => rules.insert(entry.clone()),
                RulesStep::Remove(id) => {
                    rules.remove(id);
                }
            }
        }
        rules
    }
}

/// What one lead went through in a run of entries after seq `from`.
pub struct Run<'a> {
    pub from: u64,
    /// The lead's live records at the end of the run, in `(at, seq)` order.
    pub recs: &'a [Rec],
    /// Records retracted in the run, with the seq of the retraction.
    pub retracted: &'a [(Rec, u64)],
    /// Rules changes in the run that may concern the lead.
    pub rules: &'a RulesSteps,
    pub rules_now: &'a RulesTimeline,
    pub dict: &'a Dict,
}

/// The lead's views at every seq of the run where it may have changed, ending with `last`
/// (its final facts), as `(seq, view)`; and the latest time any of those versions reads.
pub fn versions(run: &Run<'_>, last: &Facts) -> (Vec<(u64, View)>, Micros) {
    let mut latest = if last.exists() { last.settled_at() } else { Micros::MIN };
    // Rules changes before the lead's first record are already in force for all of it.
    let first = (run.recs.iter().map(|r| r.seq))
        .chain(run.retracted.iter().map(|(r, _)| r.seq))
        .min();
    let rules: Vec<u64> = (run.rules.steps.iter().map(|(s, _)| *s))
        .filter(|s| first.is_some_and(|f| *s > f))
        .collect();
    let mut seqs: Vec<u64> = run.recs.iter().map(|r| r.seq).filter(|s| *s > run.from).collect();
    for (r, gone) in run.retracted {
        seqs.push(*gone);
        if r.seq > run.from {
            seqs.push(r.seq);
        }
    }
    seqs.extend(&rules);
    seqs.sort_unstable();
    seqs.dedup();
    let Some((&end, earlier)) = seqs.split_last() else {
        return (Vec::new(), latest);
    };
    let mut out = Vec::with_capacity(seqs.len());
    let new = in_order(run.recs, run.from).filter(|_| run.retracted.is_empty() && rules.is_empty());
    if let Some(new) = new {
        // The new records are the last in business time, strictly later one after the other
        // (so `earlier` is their seqs but the last): the lead after each is its final facts as
        // of that record's time.
        for r in new.iter().take(new.len().saturating_sub(1)) {
            out.push((r.seq, View::of(last, r.at)));
        }
    } else {
        for s in earlier {
            let mut live: Vec<Rec> = run.recs.iter().filter(|r| r.seq <= *s).copied().collect();
            live.extend(
                run.retracted
                    .iter()
                    .filter(|(r, gone)| r.seq <= *s && *gone > *s)
                    .map(|(r, _)| *r),
            );
            live.sort_unstable_by_key(Rec::order_key);
            let rules = if run.rules.steps.iter().any(|(r, _)| r > s) {
                Cow::Owned(run.rules.upto(*s))
            } else {
                Cow::Borrowed(run.rules_now)
            };
            let facts = facts_of(&live, &rules);
            if facts.exists() {
                latest = latest.max(facts.settled_at());
            }
            out.push((*s, View::of(&facts, Micros::MAX)));
        }
    }
    out.push((end, View::of(last, Micros::MAX)));
    (out, latest)
}

/// The records after seq `from`, if they come last in `(at, seq)` order, in seq order, each
/// strictly later in business time than every record before it.
fn in_order(recs: &[Rec], from: u64) -> Option<&[Rec]> {
    let first_new = recs.iter().position(|r| r.seq > from).unwrap_or(recs.len());
    let new = &recs[first_new..];
    // The pair across the boundary is checked too: its seqs are ordered by construction.
    let ordered = recs[first_new.saturating_sub(1)..]
        .windows(2)
        .all(|w| w[0].at < w[1].at && w[0].seq < w[1].seq);
    (new.iter().all(|r| r.seq > from) && ordered).then_some(new)
}

/// Born and died points of one (kind, dimension, group, milestone).
#[derive(Debug, Clone, Default)]
pub struct Lives {
    pub born: Points,
    pub died: Points,
}

impl Lives {
    /// Points alive at seq `upto` with `x` in `[lo, hi)`.
    pub fn count(&self, lo: Micros, hi: Micros, upto: u32) -> i64 {
        self.born.count(lo, hi, upto) as i64 - self.died.count(lo, hi, upto) as i64
    }
}

/// The history of one group: per milestone, its period and cohort points.
#[derive(Debug, Clone, Default)]
pub struct GroupHistory {
    pub period: [Lives; 7],
    pub cohort: [Lives; 7],
}

/// Every lead's funnel views over the whole log.
#[derive(Debug, Clone)]
pub struct History {
    pub groups: [HashMap<Sym, GroupHistory>; 3],
    /// The latest time any version reads (a milestone, a first touch): a question as of a
    /// later time sees every version whole.
    pub latest: Micros,
    /// False if a seq did not fit the stamps (past 2^32 − 2): prefix questions then replay.
    pub complete: bool,
}

impl Default for History {
    fn default() -> History {
        History::new()
    }
}

impl History {
    pub fn new() -> History {
        History {
            groups: Default::default(),
            latest: Micros::MIN,
            complete: true,
        }
    }

    /// Adds stamps (in any order).
    pub fn add(&mut self, stamps: &mut [Stamp]) {
        for set in History::group(stamps) {
            let lives = self.lives(&set);
            let points = if set.born { &mut lives.born } else { &mut lives.died };
            points.update(&set.points, &[]);
        }
    }

    fn lives(&mut self, set: &SetPoints) -> &mut Lives {
        let group = self.groups[set.d as usize].entry(set.group).or_default();
        match set.kind {
            Kind::Period => &mut group.period[set.m as usize],
            Kind::Cohort => &mut group.cohort[set.m as usize],
        }
    }

    /// Stamps (in any order) as the sets they add points to, each with its points sorted.
    pub fn group(stamps: &mut [Stamp]) -> Vec<SetPoints> {
        stamps.sort_unstable_by_key(|s| (s.d, s.group, s.kind == Kind::Cohort, s.m, s.born, s.x, s.seq));
        stamps
            .chunk_by(|a, b| (a.d, a.group, a.kind, a.m, a.born) == (b.d, b.group, b.kind, b.m, b.born))
            .map(|run| SetPoints {
                kind: run[0].kind,
                born: run[0].born,
                d: run[0].d,
                group: run[0].group,
                m: run[0].m,
                points: run.iter().map(|s| Point(s.x, s.seq)).collect(),
            })
            .collect()
    }

    /// Every set with its points, for a checkpoint of the whole history.
    pub fn sets(&self) -> Vec<SetPoints> {
        let mut out = Vec::new();
        for (d, groups) in self.groups.iter().enumerate() {
            for (group, g) in groups {
                for (kind, sets) in [(Kind::Period, &g.period), (Kind::Cohort, &g.cohort)] {
                    for (m, lives) in sets.iter().enumerate() {
                        for (born, points) in [(true, &lives.born), (false, &lives.died)] {
                            let points = points.items();
                            if !points.is_empty() {
                                out.push(SetPoints {
                                    kind,
                                    born,
                                    d: d as u8,
                                    group: *group,
                                    m: m as u8,
                                    points,
                                });
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// The history made of sets as [`History::sets`] and [`History::group`] give them, the same
    /// set any number of times (a checkpoint's parts, written at different times): each set's
    /// points are put together and sorted once, with no sort of the whole history.
    pub fn from_sets(mut sets: Vec<SetPoints>) -> History {
        sets.sort_by_key(|s| (s.d, s.group, s.kind == Kind::Cohort, s.m, s.born));
        let mut history = History::new();
        for same in sets.chunk_by_mut(|a, b| (a.d, a.group, a.kind, a.m, a.born) == (b.d, b.group, b.kind, b.m, b.born))
        {
            // Sized exactly: the points stay in the history for as long as the process runs.
            let mut points = Vec::with_capacity(same.iter().map(|s| s.points.len()).sum());
            for set in same.iter_mut() {
                points.append(&mut set.points);
            }
            if same.len() > 1 {
                points.sort(); // sorted runs one after the other: merged, not sorted from scratch
            }
            let lives = history.lives(&same[0]);
            let at = if same[0].born { &mut lives.born } else { &mut lives.died };
            *at = Points::from_sorted(points);
        }
        history
    }

    pub fn bytes(&self) -> usize {
        self.groups
            .iter()
            .flat_map(|g| g.values())
            .flat_map(|g| g.period.iter().chain(g.cohort.iter()))
            .map(|l| l.born.bytes() + l.died.bytes())
            .sum()
    }
}

/// A seq as a stamp, if it fits.
pub fn stamp_seq(seq: u64) -> Option<u32> {
    u32::try_from(seq).ok().filter(|s| *s < u32::MAX - 1)
}

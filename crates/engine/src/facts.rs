//! One lead's derived facts in compact form, and how they are derived: [`fold`] applies the
//! oracle's per-event rules (`LeadFacts::apply`) to the records' symbols, with no strings; a
//! lead with a won deal is turned back into events and derived by the oracle's own
//! [`LeadFacts::derive`], so a deal's touches, roles and credits have one implementation.
//! A property test holds [`fold`] equal to the oracle on every kind of record.

use std::sync::Arc;

use funnel_core::attribution::{DealCredits, Model};
use funnel_core::event::{AcceptStage, Outcome, RejectionReason, Side};
use funnel_core::lead::{Handoff, LeadFacts, Milestone, Stage};
use funnel_core::report::By;
use funnel_core::rules::RulesTimeline;
use funnel_core::time::{Micros, MICROS_PER_HOUR};
use serde::{Deserialize, Serialize};

use crate::dict::{Dict, Sym, NONE};
use crate::record::{Kind, Rec};

/// "Never reached".
pub const NEVER: Micros = Micros::MAX;

/// The fixed-size facts of one lead.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// First time each milestone was reached ([`NEVER`] if not).
    pub milestones: [Micros; 7],
    /// Time of the first touch ([`NEVER`] with no touch).
    pub source_at: Micros,
    /// NaN: no score.
    pub score: f64,
    pub channel: Sym,
    pub campaign: Sym,
    pub producer: Sym,
    pub owner: Sym,
    pub stage: Stage,
}

/// A won deal: its touches' dimensions and their credits under the lead-local models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deal {
    pub close_at: Micros,
    pub amount_minor: i64,
    pub currency: Sym,
    /// `(channel, campaign)` of each touch, ordered by `(occurred_at, seq)`.
    pub touches: Box<[(Sym, Sym)]>,
    /// `credits[model * touches + touch]` for the first [`Model::LEAD_LOCAL`] models.
    pub credits: Box<[i64]>,
}

impl Deal {
    pub fn credit(&self, model: Model, touch: usize) -> i64 {
        self.credits[model as usize * self.touches.len() + touch]
    }
}

/// The variable-length facts, shared between snapshots until the lead changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Extra {
    pub handoffs: Box<[Handoff]>,
    pub rejections: Box<[(Micros, RejectionReason)]>,
    pub deals: Box<[Deal]>,
}

impl Extra {
    /// The form a slot page keeps it in, and the checkpoint too: bincode's standard
    /// configuration, integers as varints. 30 to 40 bytes for a lead with one handoff, where
    /// the boxed value took about 110 with its pointers.
    pub fn encode(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, bincode::config::standard())
            .expect("bincode writes any value of plain fields to a vector")
    }

    pub fn decode(bytes: &[u8]) -> Result<Extra, bincode::error::DecodeError> {
        bincode::serde::decode_from_slice(bytes, bincode::config::standard()).map(|(extra, _)| extra)
    }
}

/// A touch as the Markov chain reads it: when, and which channel. 12 bytes (packed: with
/// padding it took 16); serialised as the tuple `(at, channel)`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C, packed(4))]
pub struct Touch {
    pub at: Micros,
    pub channel: Sym,
}

impl Serialize for Touch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.at, self.channel).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Touch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Touch, D::Error> {
        <(Micros, Sym)>::deserialize(d).map(|(at, channel)| Touch { at, channel })
    }
}

/// One lead: what follows from its live events. The events themselves are not kept: when the
/// lead changes, the writer reads them back from the ledger by the seqs in `filed`.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadSlot {
    pub facts: Facts,
    /// Time of the lead's latest live event ([`Micros::MIN`] with none): a rules change from
    /// `T` can only change leads with an event at or after `T`.
    pub last_at: Micros,
    /// Live touches in `(at, seq)` order, for Markov paths.
    pub touches: Box<[Touch]>,
    pub extra: Option<Arc<Extra>>,
    /// The lead index: the seqs of every ledger entry filed under this lead (its own events,
    /// retracted or not, and the retractions that target them), ascending, as [`filed`]
    /// encodes them. Kept across re-derivations; `derive` leaves it empty.
    pub filed: Box<[u8]>,
}

/// The lead index's encoding: LEB128 varints, the first seq and then the gaps between
/// consecutive seqs (about 3 bytes per entry).
pub mod filed {
    /// The seqs of an encoded list, in order.
    fn decode(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
        let (mut last, mut value, mut shift) = (0u64, 0u64, 0u32);
        bytes.iter().filter_map(move |&b| {
            value |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 != 0 {
                return None;
            }
            last += value;
            (value, shift) = (0, 0);
            Some(last)
        })
    }

    /// The seqs of an encoded list.
    pub fn seqs(bytes: &[u8]) -> Vec<u64> {
        decode(bytes).collect()
    }

    /// The encoding of ascending `seqs`.
    pub fn encode(seqs: &[u64]) -> Box<[u8]> {
        let mut out = Vec::with_capacity(seqs.len() * 3);
        let mut last = 0;
        for &seq in seqs {
            push(&mut out, seq - last);
            last = seq;
        }
        out.into_boxed_slice()
    }

    fn push(out: &mut Vec<u8>, mut gap: u64) {
        loop {
            let b = (gap & 0x7f) as u8;
            gap >>= 7;
            if gap == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    /// `bytes` with ascending `seqs` added at the end (each above every seq in `bytes`).
    pub fn extended(bytes: &[u8], seqs: &[u64]) -> Box<[u8]> {
        let mut last = decode(bytes).last().unwrap_or(0);
        let mut out = Vec::with_capacity(bytes.len() + 3 * seqs.len());
        out.extend_from_slice(bytes);
        for &seq in seqs {
            push(&mut out, seq - last);
            last = seq;
        }
        out.into_boxed_slice()
    }
}

impl Default for LeadSlot {
    fn default() -> LeadSlot {
        LeadSlot {
            facts: Facts::EMPTY,
            last_at: Micros::MIN,
            touches: Box::default(),
            extra: None,
            filed: Box::default(),
        }
    }
}

impl Facts {
    /// The facts of a lead with no live events: no milestone at all.
    pub const EMPTY: Facts = Facts {
        milestones: [NEVER; 7],
        source_at: NEVER,
        score: f64::NAN,
        channel: NONE,
        campaign: NONE,
        producer: NONE,
        owner: NONE,
        stage: Stage::Inquiry,
    };

    /// Has live events (the fold's `facts.is_some()`).
    pub fn exists(&self) -> bool {
        self.milestones[0] != NEVER
    }

    /// [`LeadFacts::milestone_at`]: reached by `as_of`; `Lost` only while not won by then.
    pub fn milestone_at(&self, m: Milestone, as_of: Micros) -> Option<Micros> {
        let t = self.milestones[m as usize];
        if t == NEVER || t > as_of {
            return None;
        }
        let won = self.milestones[Milestone::Won as usize];
        if m == Milestone::Lost && won != NEVER && won <= as_of {
            return None;
        }
        Some(t)
    }

    /// The breakdown key as of `as_of` ([`By::key`]): channel and campaign need the first
    /// touch to have happened by then.
    pub fn key(&self, by: By, as_of: Micros) -> Sym {
        match by {
            By::Channel if self.source_at != NEVER && self.source_at <= as_of => self.channel,
            By::Campaign if self.source_at != NEVER && self.source_at <= as_of => self.campaign,
            By::Producer => self.producer,
            _ => NONE,
        }
    }

    /// The latest time at which anything the funnel reads of this lead changes: past it, the
    /// lead's answer as of any later time is its final one.
    pub fn settled_at(&self) -> Micros {
        let source = if self.source_at == NEVER {
            Micros::MIN
        } else {
            self.source_at
        };
        self.milestones
            .iter()
            .filter(|t| **t != NEVER)
            .fold(source, |a, t| a.max(*t))
    }
}

/// What [`fold`] derives: the fixed-size facts, the handoffs and the rejections.
pub struct Folded {
    pub facts: Facts,
    pub handoffs: Vec<Handoff>,
    pub rejections: Vec<(Micros, RejectionReason)>,
}

/// A lead's facts, handoffs and rejections from its live records in `(at, seq)` order, by the
/// rules of the oracle's `LeadFacts::apply` over symbols; `None` with no records. Deals are not
/// derived here ([`derive`] hands a lead with a won deal to the oracle).
pub fn fold(recs: &[Rec], rules: &RulesTimeline) -> Option<Folded> {
    let first = recs.first()?;
    let mut facts = Facts {
        producer: first.producer,
        ..Facts::EMPTY
    };
    let (mut handoffs, mut rejections) = (Vec::new(), Vec::new());
    let reach = |facts: &mut Facts, m: Milestone, t: Micros| {
        let at = &mut facts.milestones[m as usize];
        if *at == NEVER {
            *at = t;
        }
    };
    let answer = |handoffs: &mut Vec<Handoff>, t: Micros| {
        for handoff in handoffs.iter_mut().filter(|h| h.answered_at.is_none()) {
            handoff.answered_at = Some(t);
        }
    };
    reach(&mut facts, Milestone::Inquiry, first.at);
    for r in recs {
        let t = r.at;
        match r.kind {
            Kind::Touch => {
                if facts.source_at == NEVER {
                    (facts.source_at, facts.channel, facts.campaign) = (t, r.a, r.b);
                }
            }
            Kind::Score => {
                facts.score = r.score();
                if r.score() >= rules.at(t).mql_score_threshold {
                    reach(&mut facts, Milestone::Mql, t);
                    if matches!(facts.stage, Stage::Inquiry | Stage::Nurture) {
                        facts.stage = Stage::Mql;
                    }
                }
            }
            Kind::Handoff(to) => {
                if r.a != NONE {
                    facts.owner = r.a;
                }
                match to {
                    Side::Sales => {
                        let sla = (rules.at(t).handoff_sla_hours * MICROS_PER_HOUR as f64).round() as Micros;
                        handoffs.push(Handoff {
                            at: t,
                            deadline: t.saturating_add(sla),
                            answered_at: None,
                        });
                        reach(&mut facts, Milestone::Mql, t);
                        reach(&mut facts, Milestone::Sal, t);
                        facts.stage = Stage::Sal;
                    }
                    Side::Marketing => facts.stage = Stage::Nurture,
                }
            }
            Kind::Accept(stage) => {
                if r.a != NONE {
                    facts.owner = r.a;
                }
                answer(&mut handoffs, t);
                reach(&mut facts, Milestone::Sql, t);
                facts.stage = Stage::Sql;
                if stage == AcceptStage::Opportunity {
                    reach(&mut facts, Milestone::Opportunity, t);
                    facts.stage = Stage::Opportunity;
                }
            }
            Kind::Rejection(reason) => {
                answer(&mut handoffs, t);
                rejections.push((t, reason));
                facts.stage = Stage::Nurture;
            }
            Kind::Close(Outcome::Won) => {
                reach(&mut facts, Milestone::Won, t);
                facts.stage = Stage::Won;
            }
            Kind::Close(Outcome::Lost) => {
                reach(&mut facts, Milestone::Lost, t);
                facts.stage = Stage::Lost;
            }
        }
    }
    Some(Folded {
        facts,
        handoffs,
        rejections,
    })
}

/// [`fold`]'s facts alone ([`Facts::EMPTY`] with no records).
pub fn facts_of(recs: &[Rec], rules: &RulesTimeline) -> Facts {
    fold(recs, rules).map_or(Facts::EMPTY, |f| f.facts)
}

/// A won close with an amount: a deal, whose credits the oracle computes.
fn is_deal(r: &Rec) -> bool {
    r.kind == Kind::Close(Outcome::Won) && r.b != NONE
}

/// Derives a lead's slot from its live records, in `(at, seq)` order. Pure: every name the
/// records hold is already in `dict`, so leads can be derived on several threads at once.
pub fn derive(recs: &[Rec], dict: &Dict, rules: &RulesTimeline) -> LeadSlot {
    if recs.iter().any(is_deal) {
        return derive_by_the_oracle(recs, dict, rules);
    }
    let Some(folded) = fold(recs, rules) else {
        return LeadSlot::default();
    };
    let extra = (!folded.handoffs.is_empty() || !folded.rejections.is_empty()).then(|| {
        Arc::new(Extra {
            handoffs: folded.handoffs.into(),
            rejections: folded.rejections.into(),
            deals: Box::default(),
        })
    });
    slot(recs, folded.facts, extra)
}

/// The slot around a lead's facts: its latest event time and its touches.
fn slot(recs: &[Rec], facts: Facts, extra: Option<Arc<Extra>>) -> LeadSlot {
    LeadSlot {
        facts,
        last_at: recs.iter().map(|r| r.at).max().unwrap_or(Micros::MIN),
        touches: recs
            .iter()
            .filter(|r| r.kind == Kind::Touch)
            .map(|r| Touch { at: r.at, channel: r.a })
            .collect(),
        extra,
        filed: Box::default(),
    }
}

/// [`derive`] for a lead with a deal: its records as events, through [`LeadFacts::derive`].
fn derive_by_the_oracle(recs: &[Rec], dict: &Dict, rules: &RulesTimeline) -> LeadSlot {
    let sym = |name: &str| dict.get(name).unwrap_or(NONE);
    let sym_opt = |name: Option<&str>| name.map_or(NONE, sym);
    let events: Vec<_> = recs.iter().map(|r| r.to_lead_event(dict)).collect();
    let Some(full) = LeadFacts::derive(&events, rules) else {
        return LeadSlot::default();
    };
    let facts = Facts {
        milestones: full.milestones.map(|t| t.unwrap_or(NEVER)),
        source_at: full.source.as_ref().map_or(NEVER, |s| s.at),
        score: full.score.unwrap_or(f64::NAN),
        channel: full.source.as_ref().map_or(NONE, |s| sym(&s.channel)),
        campaign: full.source.as_ref().map_or(NONE, |s| sym_opt(s.campaign.as_deref())),
        producer: sym_opt(full.first_producer.as_deref()),
        owner: sym_opt(full.owner.as_deref()),
        stage: full.stage,
    };
    let extra = (!full.handoffs.is_empty() || !full.rejections.is_empty() || !full.deals.is_empty()).then(|| {
        Arc::new(Extra {
            handoffs: full.handoffs.into(),
            rejections: full.rejections.into(),
            deals: full.deals.iter().map(|d| deal(d, &sym)).collect(),
        })
    });
    slot(recs, facts, extra)
}

fn deal(d: &DealCredits, sym: &impl Fn(&str) -> Sym) -> Deal {
    let touches: Box<[(Sym, Sym)]> = d
        .touches
        .iter()
        .map(|t| (sym(&t.channel), t.campaign.as_deref().map_or(NONE, sym)))
        .collect();
    let credits = d
        .shares
        .iter()
        .flat_map(|per_touch| per_touch.iter().map(|s| s.credit_minor))
        .collect();
    Deal {
        close_at: d.close_at,
        amount_minor: d.amount.amount_minor,
        currency: sym(&d.amount.currency),
        touches,
        credits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use funnel_core::event::RulesChange;
    use funnel_core::rules::RulesEntry;
    use proptest::prelude::*;

    /// A record of any kind, at one of a few times (ties included), with names from `dict`.
    fn rec(dict: &Dict) -> impl Strategy<Value = Rec> {
        let names = dict.len() as Sym;
        (0i64..40, 0u8..12, 0..names + 1, 0..names + 1, 0u8..8, -5i64..120).prop_map(
            move |(at, kind, a, b, small, value)| {
                // `names` stands for "no name".
                let sym = |s: Sym| if s == names { NONE } else { s };
                let reason = RejectionReason::ALL[small as usize];
                let kind = match kind {
                    0 | 1 => Kind::Touch,
                    2 | 3 => Kind::Score,
                    4 => Kind::Handoff(Side::Sales),
                    5 => Kind::Handoff(Side::Marketing),
                    6 => Kind::Accept(AcceptStage::Sql),
                    7 => Kind::Accept(AcceptStage::Opportunity),
                    8 => Kind::Rejection(reason),
                    9 | 10 => Kind::Close(Outcome::Won),
                    _ => Kind::Close(Outcome::Lost),
                };
                let (a, b, value) = match kind {
                    Kind::Touch if sym(a) == NONE => (1, sym(b), 0),
                    Kind::Touch => (sym(a), sym(b), 0),
                    Kind::Score => (NONE, NONE, (value as f64 * 0.75).to_bits() as i64),
                    Kind::Handoff(_) | Kind::Accept(_) => (sym(a), NONE, 0),
                    Kind::Close(_) => (NONE, sym(b), value.abs() * 1000),
                    Kind::Rejection(_) => (NONE, NONE, 0),
                };
                Rec {
                    at: at * 3_600_000_000,
                    seq: 0,
                    value,
                    a,
                    b,
                    producer: sym(small as Sym % (names + 1)),
                    kind,
                }
            },
        )
    }

    proptest! {
        /// The native fold and the oracle's derivation agree on every fact, handoff and
        /// rejection, under rules that change over the lead's lifetime; `derive` equals the
        /// oracle's path whole, deals and their credits included.
        #[test]
        fn the_fold_over_symbols_equals_the_oracle(
            mut recs in proptest::collection::vec(rec(&names()), 0..14),
            threshold in 20.0f64..80.0,
            sla in 1.0f64..48.0,
            change_at in 0i64..40,
        ) {
            let dict = names();
            for (i, r) in recs.iter_mut().enumerate() {
                r.seq = i as u64 + 1;
            }
            recs.sort_unstable_by_key(Rec::order_key);
            let mut rules = RulesTimeline::default();
            rules.insert(RulesEntry {
                occurred_at: change_at * 3_600_000_000,
                seq: 100,
                id: "r".into(),
                change: RulesChange {
                    mql_score_threshold: Some(threshold),
                    handoff_sla_hours: Some(sla),
                    ..RulesChange::default()
                },
            });
            let oracle = derive_by_the_oracle(&recs, &dict, &rules);
            match fold(&recs, &rules) {
                None => prop_assert!(recs.is_empty()),
                Some(folded) => {
                    // NaN (no score) is not equal to itself: compare the bits.
                    prop_assert_eq!(folded.facts.score.to_bits(), oracle.facts.score.to_bits());
                    let same_score = Facts { score: 0.0, ..folded.facts };
                    prop_assert_eq!(same_score, Facts { score: 0.0, ..oracle.facts });
                    let extra = oracle.extra.clone().unwrap_or_default();
                    prop_assert_eq!(&folded.handoffs[..], &extra.handoffs[..]);
                    prop_assert_eq!(&folded.rejections[..], &extra.rejections[..]);
                }
            }
            let derived = derive(&recs, &dict, &rules);
            prop_assert_eq!(derived.facts.score.to_bits(), oracle.facts.score.to_bits());
            prop_assert_eq!(
                LeadSlot { facts: Facts { score: 0.0, ..derived.facts }, ..derived },
                LeadSlot { facts: Facts { score: 0.0, ..oracle.facts }, ..oracle }
            );
        }
    }

    fn names() -> Dict {
        let mut dict = Dict::default();
        for name in ["web", "ads", "spring", "EUR", "ann", "bob", "crm"] {
            dict.intern(name);
        }
        dict
    }

    #[test]
    fn the_lead_index_encoding_gives_back_every_seq() {
        use super::filed;
        let seqs = [
            1u64,
            2,
            129,
            130,
            16_514,
            2_100_000,
            u64::from(u32::MAX) + 7,
            u64::MAX / 2,
        ];
        for split in 0..=seqs.len() {
            let mut bytes = filed::encode(&seqs[..split]);
            for (i, &seq) in seqs.iter().enumerate().skip(split) {
                bytes = filed::extended(&bytes, &[seq]);
                assert_eq!(filed::seqs(&bytes), seqs[..=i]);
                assert_eq!(filed::encode(&seqs[..=i]), bytes);
            }
            assert_eq!(
                filed::extended(&filed::encode(&seqs[..split]), &seqs[split..]),
                filed::encode(&seqs)
            );
        }
        // Gaps below 128 take one byte.
        assert_eq!(filed::extended(&[], &[5, 100]).len(), 2);
    }
}

//! One lead's derived facts in compact form, and how they are derived: the lead's records are
//! turned back into events and folded by the oracle's own [`LeadFacts::derive`], so the engine
//! and the fold cannot disagree on what a fact is; the result is then interned.

use std::sync::Arc;

use funnel_core::attribution::{DealCredits, Model};
use funnel_core::event::RejectionReason;
use funnel_core::lead::{Handoff, LeadFacts, Milestone, Stage};
use funnel_core::report::By;
use funnel_core::rules::RulesTimeline;
use funnel_core::time::Micros;
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

/// A touch as the Markov chain reads it: when, and which channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Touch {
    pub at: Micros,
    pub channel: Sym,
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
    /// The seqs of an encoded list.
    pub fn seqs(bytes: &[u8]) -> Vec<u64> {
        let mut out = Vec::with_capacity(bytes.len() / 2);
        let (mut last, mut value, mut shift) = (0u64, 0u64, 0u32);
        for &b in bytes {
            value |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                last += value;
                out.push(last);
                (value, shift) = (0, 0);
            }
        }
        out
    }

    /// `bytes` with `seq` added at the end (`seq` is above every seq in it).
    pub fn with(bytes: &[u8], seq: u64) -> Box<[u8]> {
        let last = seqs(bytes).last().copied().unwrap_or(0);
        let mut out = Vec::with_capacity(bytes.len() + 3);
        out.extend_from_slice(bytes);
        let mut gap = seq - last;
        loop {
            let b = (gap & 0x7f) as u8;
            gap >>= 7;
            if gap == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
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

/// Derives a lead's slot from its live records, in `(at, seq)` order. Pure: every name the
/// records hold is already in `dict`, so leads can be derived on several threads at once.
pub fn derive(recs: &[Rec], dict: &Dict, rules: &RulesTimeline) -> LeadSlot {
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
    use super::filed;

    #[test]
    fn the_lead_index_encoding_gives_back_every_seq() {
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
        let mut bytes: Box<[u8]> = Box::default();
        for (i, &seq) in seqs.iter().enumerate() {
            bytes = filed::with(&bytes, seq);
            assert_eq!(filed::seqs(&bytes), seqs[..=i]);
        }
        // Gaps below 128 take one byte.
        assert_eq!(filed::with(&filed::with(&[], 5), 100).len(), 2);
    }
}

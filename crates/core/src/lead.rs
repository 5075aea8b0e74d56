//! One lead's facts, re-derived from its own events in `(occurred_at, seq)` order.
//!
//! Milestones are *first* times, so they are prefix-stable: the facts of a lead as of `T`
//! are its full facts with every milestone after `T` dropped (see [`LeadFacts::milestone_at`]).

use serde::{Deserialize, Serialize};

use crate::attribution::{deal_credits, DealCredits};
use crate::event::{AcceptStage, Data, Event, Outcome, RejectionReason, Side};
use crate::rules::RulesTimeline;
use crate::time::{Micros, MICROS_PER_HOUR};

/// Funnel milestones in waterfall order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Milestone {
    Inquiry,
    Mql,
    Sal,
    Sql,
    Opportunity,
    Won,
    Lost,
}

impl Milestone {
    pub const ALL: [Milestone; 7] = [
        Milestone::Inquiry,
        Milestone::Mql,
        Milestone::Sal,
        Milestone::Sql,
        Milestone::Opportunity,
        Milestone::Won,
        Milestone::Lost,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Milestone::Inquiry => "inquiry",
            Milestone::Mql => "mql",
            Milestone::Sal => "sal",
            Milestone::Sql => "sql",
            Milestone::Opportunity => "opportunity",
            Milestone::Won => "won",
            Milestone::Lost => "lost",
        }
    }
}

/// Where a lead is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    Inquiry,
    Mql,
    Sal,
    Sql,
    Opportunity,
    Won,
    Lost,
    /// Rejected by sales or handed back to marketing.
    Nurture,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Inquiry => "inquiry",
            Stage::Mql => "mql",
            Stage::Sal => "sal",
            Stage::Sql => "sql",
            Stage::Opportunity => "opportunity",
            Stage::Won => "won",
            Stage::Lost => "lost",
            Stage::Nurture => "nurture",
        }
    }
}

/// A lead's source: its first touch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub at: Micros,
    pub channel: String,
    pub campaign: Option<String>,
}

/// A lead event as the projection keeps it: the event and its log position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadEvent {
    pub seq: u64,
    pub event: Event,
}

impl LeadEvent {
    pub fn order_key(&self) -> (Micros, u64) {
        (self.event.occurred_at, self.seq)
    }
}

/// A handoff to sales and its answer: the lead's first `accept` or `rejection` after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    pub at: Micros,
    /// `at` + the SLA hours in force at `at`.
    pub deadline: Micros,
    pub answered_at: Option<Micros>,
}

impl Handoff {
    /// The answer time as of `as_of` (an answer after `as_of` has not happened yet).
    pub fn answered_by(&self, as_of: Micros) -> Option<Micros> {
        self.answered_at.filter(|t| *t <= as_of)
    }
}

/// Everything the reports need to know about one lead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadFacts {
    /// First time each milestone was reached. `Lost` is the first lost close even if the
    /// lead was also won: whether it counts depends on the as-of time ([`LeadFacts::milestone_at`]).
    pub milestones: [Option<Micros>; 7],
    pub stage: Stage,
    pub score: Option<f64>,
    pub owner: Option<String>,
    pub source: Option<Source>,
    /// Producer of the lead's first event.
    pub first_producer: Option<String>,
    /// Handoffs to sales, in order.
    pub handoffs: Vec<Handoff>,
    /// Rejections by sales, in order.
    pub rejections: Vec<(Micros, RejectionReason)>,
    /// Won closes, in order, with their touches and credits under every lead-local model.
    pub deals: Vec<DealCredits>,
}

impl LeadFacts {
    /// Derives a lead's facts from its live events, which must be sorted by `(occurred_at, seq)`.
    /// Returns `None` for a lead with no events.
    pub fn derive(events: &[LeadEvent], rules: &RulesTimeline) -> Option<LeadFacts> {
        let first = events.first()?;
        let mut facts = LeadFacts {
            milestones: [None; 7],
            stage: Stage::Inquiry,
            score: None,
            owner: None,
            source: None,
            first_producer: first.event.producer.clone(),
            handoffs: Vec::new(),
            rejections: Vec::new(),
            deals: Vec::new(),
        };
        facts.milestones[Milestone::Inquiry as usize] = Some(first.event.occurred_at);
        for lead_event in events {
            facts.apply(&lead_event.event, rules);
        }
        // Deals last: their touches run up to the close time (ties included) and their roles
        // refer to milestones as of the close, both known only once every event is applied.
        facts.deals = events
            .iter()
            .filter_map(|e| match &e.event.data {
                Data::Close {
                    outcome: Outcome::Won,
                    amount: Some(amount),
                    ..
                } => Some(deal_credits(e, amount, events, &facts, rules)),
                _ => None,
            })
            .collect();
        Some(facts)
    }

    fn reach(&mut self, milestone: Milestone, t: Micros) {
        self.milestones[milestone as usize].get_or_insert(t);
    }

    /// Answers every open handoff at `t`.
    fn answer(&mut self, t: Micros) {
        for handoff in self.handoffs.iter_mut().filter(|h| h.answered_at.is_none()) {
            handoff.answered_at = Some(t);
        }
    }

    fn apply(&mut self, event: &Event, rules: &RulesTimeline) {
        let t = event.occurred_at;
        match &event.data {
            Data::Touch { channel, campaign, .. } => {
                if self.source.is_none() {
                    self.source = Some(Source {
                        at: t,
                        channel: channel.clone(),
                        campaign: campaign.clone(),
                    });
                }
            }
            Data::Score { score, .. } => {
                self.score = Some(*score);
                if *score >= rules.at(t).mql_score_threshold {
                    self.reach(Milestone::Mql, t);
                    if matches!(self.stage, Stage::Inquiry | Stage::Nurture) {
                        self.stage = Stage::Mql;
                    }
                }
            }
            Data::Handoff { to, owner } => {
                if let Some(owner) = owner {
                    self.owner = Some(owner.clone());
                }
                match to {
                    Side::Sales => {
                        let sla = (rules.at(t).handoff_sla_hours * MICROS_PER_HOUR as f64).round() as Micros;
                        self.handoffs.push(Handoff {
                            at: t,
                            deadline: t.saturating_add(sla),
                            answered_at: None,
                        });
                        self.reach(Milestone::Mql, t);
                        self.reach(Milestone::Sal, t);
                        self.stage = Stage::Sal;
                    }
                    Side::Marketing => self.stage = Stage::Nurture,
                }
            }
            Data::Accept { stage, owner, .. } => {
                if let Some(owner) = owner {
                    self.owner = Some(owner.clone());
                }
                self.answer(t);
                self.reach(Milestone::Sql, t);
                self.stage = Stage::Sql;
                if *stage == AcceptStage::Opportunity {
                    self.reach(Milestone::Opportunity, t);
                    self.stage = Stage::Opportunity;
                }
            }
            Data::Rejection { reason, .. } => {
                self.answer(t);
                self.rejections.push((t, *reason));
                self.stage = Stage::Nurture;
            }
            Data::Close {
                outcome: Outcome::Won, ..
            } => {
                self.reach(Milestone::Won, t);
                self.stage = Stage::Won;
            }
            Data::Close {
                outcome: Outcome::Lost, ..
            } => {
                self.reach(Milestone::Lost, t);
                self.stage = Stage::Lost;
            }
            Data::Spend { .. } | Data::Rules(_) | Data::Retract { .. } => {}
        }
    }

    /// When the lead reached `milestone`, counting only what happened at or before `as_of`.
    /// `Lost` counts only while the lead is not won as of the same time.
    pub fn milestone_at(&self, milestone: Milestone, as_of: Micros) -> Option<Micros> {
        let reached = self.milestones[milestone as usize].filter(|t| *t <= as_of)?;
        if milestone == Milestone::Lost && self.milestone_at(Milestone::Won, as_of).is_some() {
            return None;
        }
        Some(reached)
    }

    /// The lead's source as of `as_of`: its first touch, if that happened by then.
    pub fn source_at(&self, as_of: Micros) -> Option<&Source> {
        self.source.as_ref().filter(|s| s.at <= as_of)
    }
}

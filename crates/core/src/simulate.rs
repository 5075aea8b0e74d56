//! A seeded, realistic synthetic funnel: most leads never convert.
//!
//! Same plan, same events (ids included), so simulating twice is idempotent in the ledger.

use crate::event::{AcceptStage, Data, Money, Outcome, RejectionReason, RulesChange, Side, Team};
use crate::time::{Micros, MICROS_PER_DAY, MICROS_PER_HOUR};
use crate::Event;

pub struct Plan {
    pub leads: u64,
    pub seed: u64,
    pub start: Micros,
    pub days: u32,
}

/// Channels with their share of new leads (per mille), campaigns, and lead quality.
const CHANNELS: [(&str, u32, &[&str], f64); 8] = [
    ("organic_search", 240, &["seo-guides", "seo-blog"], 0.9),
    ("paid_search", 200, &["brand-search", "generic-search"], 1.0),
    ("webinar", 120, &["q2-launch", "q3-deep-dive"], 1.4),
    ("events", 60, &["saas-summit"], 1.6),
    ("referral", 80, &["partner-program"], 1.8),
    ("social", 150, &["linkedin-abm", "retargeting"], 0.7),
    ("email", 90, &["newsletter"], 1.1),
    ("direct", 60, &[], 1.2),
];
const OWNERS: [&str; 4] = ["ana", "ben", "chen", "dara"];

/// splitmix64: small, seedable, the same on every machine (also drives `tests/simulation.rs`).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [0, n) (0 for n = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

struct Lead<'a> {
    id: String,
    at: Micros,
    n: u32,
    events: &'a mut Vec<Event>,
}

impl Lead<'_> {
    fn push(&mut self, producer: &str, data: Data) {
        self.n += 1;
        self.events.push(Event {
            id: format!("{}-{}", self.id, self.n),
            lead_id: Some(self.id.clone()),
            account_id: None,
            occurred_at: self.at,
            producer: Some(producer.to_owned()),
            data,
        });
    }
    fn wait_hours(&mut self, rng: &mut Rng, max: u64) {
        self.at += (1 + rng.below(max)) as i64 * MICROS_PER_HOUR + rng.below(3_600_000_000) as i64;
    }
}

fn pick_channel(rng: &mut Rng) -> usize {
    let mut roll = rng.below(1000) as u32;
    for (i, (_, share, _, _)) in CHANNELS.iter().enumerate() {
        if roll < *share {
            return i;
        }
        roll -= share;
    }
    CHANNELS.len() - 1
}

fn touch(rng: &mut Rng, channel: usize) -> Data {
    let (name, _, campaigns, _) = CHANNELS[channel];
    let campaign = (!campaigns.is_empty()).then(|| campaigns[rng.below(campaigns.len() as u64) as usize].to_owned());
    Data::Touch {
        channel: name.to_owned(),
        campaign,
        content: None,
        team: Team::Marketing,
    }
}

pub fn funnel(plan: Plan) -> Vec<Event> {
    let mut rng = Rng::new(plan.seed);
    let mut events = Vec::new();
    let span = i64::from(plan.days.max(1)) * MICROS_PER_DAY;
    events.push(Event {
        id: format!("sim{}-rules-0", plan.seed),
        lead_id: None,
        account_id: None,
        occurred_at: plan.start,
        producer: Some("revops".into()),
        data: Data::Rules(RulesChange {
            mql_score_threshold: Some(50.0),
            handoff_sla_hours: Some(24.0),
            ..Default::default()
        }),
    });
    for week in 0..(i64::from(plan.days) / 7).max(1) {
        for (c, (name, share, campaigns, _)) in CHANNELS.iter().enumerate() {
            if *name == "direct" || *name == "organic_search" {
                continue;
            }
            let amount = i64::from(*share) * 40 * (80 + rng.below(40) as i64);
            events.push(Event {
                id: format!("sim{}-spend-{week}-{c}", plan.seed),
                lead_id: None,
                account_id: None,
                occurred_at: plan.start + week * 7 * MICROS_PER_DAY,
                producer: Some("finance".into()),
                data: Data::Spend {
                    channel: (*name).to_owned(),
                    campaign: campaigns.first().map(|c| (*c).to_owned()),
                    amount: Money {
                        amount_minor: amount,
                        currency: "USD".into(),
                    },
                },
            });
        }
    }
    for i in 0..plan.leads {
        let channel = pick_channel(&mut rng);
        let quality = CHANNELS[channel].3;
        let mut lead = Lead {
            id: format!("sim{}-L{i:06}", plan.seed),
            at: plan.start + (rng.unit() * span as f64) as i64,
            n: 0,
            events: &mut events,
        };
        lead.push("hubspot-sync", touch(&mut rng, channel));
        let mut score = 5.0 + (rng.below(30) as f64);
        for _ in 0..rng.below(4) {
            lead.wait_hours(&mut rng, 96);
            let other = if rng.chance(0.5) {
                channel
            } else {
                pick_channel(&mut rng)
            };
            lead.push("hubspot-sync", touch(&mut rng, other));
            score += (rng.below(25) as f64) * quality;
            lead.push(
                "scoring-model",
                Data::Score {
                    score: score.round(),
                    model: Some("fit-v3".into()),
                    reason: None,
                },
            );
        }
        if score < 50.0 || !rng.chance(0.75) {
            continue;
        }
        lead.wait_hours(&mut rng, 48);
        let owner = OWNERS[rng.below(OWNERS.len() as u64) as usize].to_owned();
        lead.push(
            "salesforce",
            Data::Handoff {
                to: Side::Sales,
                owner: Some(owner.clone()),
            },
        );
        let roll = rng.unit();
        if roll > 0.92 {
            continue; // never answered: an SLA breach
        }
        let response_hours = if rng.chance(0.8) { 20 } else { 72 };
        lead.wait_hours(&mut rng, response_hours);
        if roll > 0.55 / quality.min(1.5) + 0.05 {
            let reason = RejectionReason::ALL[rng.below(8) as usize];
            lead.push("salesforce", Data::Rejection { reason, note: None });
            continue;
        }
        lead.push(
            "salesforce",
            Data::Accept {
                stage: AcceptStage::Sql,
                owner: Some(owner.clone()),
                opportunity_id: None,
                pipeline: None,
            },
        );
        if !rng.chance(0.6) {
            continue;
        }
        lead.wait_hours(&mut rng, 240);
        let amount = (50 + rng.below(1150) as i64) * 10_000;
        let opportunity = format!("O-{}", lead.id);
        lead.push(
            "salesforce",
            Data::Accept {
                stage: AcceptStage::Opportunity,
                owner: Some(owner),
                opportunity_id: Some(opportunity.clone()),
                pipeline: Some(Money {
                    amount_minor: amount,
                    currency: "USD".into(),
                }),
            },
        );
        lead.wait_hours(&mut rng, 24 * 45);
        if rng.chance(0.05) {
            lead.push("hubspot-sync", touch(&mut rng, 7));
        }
        let won = rng.chance(0.3 * quality.min(1.6));
        if won || rng.chance(0.7) {
            lead.push(
                "salesforce",
                Data::Close {
                    outcome: if won { Outcome::Won } else { Outcome::Lost },
                    amount: won.then(|| Money {
                        amount_minor: amount,
                        currency: "USD".into(),
                    }),
                    reason: None,
                    opportunity_id: Some(opportunity),
                },
            );
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_plans_repeat_and_every_event_is_valid() {
        let plan = || Plan {
            leads: 300,
            seed: 7,
            start: 1_780_000_000_000_000,
            days: 60,
        };
        let a = funnel(plan());
        assert_eq!(a, funnel(plan()));
        assert!(a.iter().all(|e| e.validate().is_ok()));
        let ids: std::collections::HashSet<_> = a.iter().map(|e| &e.id).collect();
        assert_eq!(ids.len(), a.len());
        let won = a
            .iter()
            .filter(|e| {
                matches!(
                    e.data,
                    Data::Close {
                        outcome: Outcome::Won,
                        ..
                    }
                )
            })
            .count();
        let rejected = a.iter().filter(|e| matches!(e.data, Data::Rejection { .. })).count();
        assert!(won > 0 && won < 60, "won {won} of 300: most leads never convert");
        assert!(rejected > 0);
    }
}

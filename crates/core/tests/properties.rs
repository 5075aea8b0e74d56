//! Properties over generated event histories: arrival order does not matter, a retraction
//! equals never recording the event, `as_of` equals deriving from the prefix, and JSON round-trips.

use funnel_core::attribution::{shares_under, MarkovChain, Model};
use funnel_core::event::{
    AcceptStage, Data, Money, Outcome, RejectionReason, RulesChange, Side, Team, AMOUNT_MINOR_MAX,
};
use funnel_core::lead::{LeadEvent, LeadFacts, Milestone};
use funnel_core::report::{self, By, Window};
use funnel_core::rules::{RulesEntry, RulesTimeline};
use funnel_core::{Entry, Event, Projection};
use proptest::prelude::*;

const HOUR: i64 = 3_600_000_000;
const BASE: i64 = 1_772_323_200_000_000; // 2026-03-01T00:00:00Z

/// One generated fact: which lead, what kind, and a distinct time.
fn event_strategy() -> impl Strategy<Value = (u8, u8, u8, u16)> {
    (0u8..12, 0u8..10, 0u8..8, 0u16..2000)
}

fn make_event(i: usize, (lead, kind, pick, hour): (u8, u8, u8, u16)) -> Event {
    // Distinct times across the whole history: ties would make seq (arrival) decide order, by design.
    let occurred_at = BASE + i64::from(hour) * HOUR + i as i64;
    let channels = ["webinar", "paid_search", "direct", "referral"];
    let money = Money {
        amount_minor: 1_000 + i64::from(pick) * 37 + i as i64 * 7_919,
        currency: if pick % 3 == 0 { "EUR" } else { "USD" }.into(),
    };
    let data = match kind {
        0 | 1 => Data::Touch {
            channel: channels[usize::from(pick) % 4].into(),
            campaign: (pick % 2 == 0).then(|| format!("c{}", pick % 3)),
            content: None,
            team: Team::Marketing,
        },
        2 | 3 => Data::Score {
            score: f64::from(pick) * 12.5,
            model: None,
            reason: None,
        },
        4 => Data::Handoff {
            to: if pick < 6 { Side::Sales } else { Side::Marketing },
            owner: Some(format!("o{pick}")),
        },
        5 => Data::Accept {
            stage: if pick % 2 == 0 {
                AcceptStage::Sql
            } else {
                AcceptStage::Opportunity
            },
            owner: None,
            opportunity_id: None,
            pipeline: None,
        },
        6 => Data::Rejection {
            reason: RejectionReason::ALL[usize::from(pick)],
            note: None,
        },
        7 => Data::Close {
            outcome: if pick % 2 == 0 { Outcome::Won } else { Outcome::Lost },
            amount: Some(money),
            reason: None,
            opportunity_id: None,
        },
        8 => Data::Rules(RulesChange {
            mql_score_threshold: Some(f64::from(pick) * 10.0 + 20.0),
            ..RulesChange::default()
        }),
        _ => Data::Spend {
            channel: channels[usize::from(pick) % 4].into(),
            campaign: None,
            amount: money,
        },
    };
    let lead_id = (!matches!(data, Data::Rules(_) | Data::Spend { .. })).then(|| format!("L{lead}"));
    Event {
        id: format!("e{i}"),
        lead_id,
        account_id: None,
        occurred_at,
        producer: Some(format!("p{}", lead % 3)),
        data,
    }
}

fn history() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(event_strategy(), 1..120)
        .prop_map(|raw| raw.into_iter().enumerate().map(|(i, r)| make_event(i, r)).collect())
}

/// [`history`] with every amount moved to the top of the range: `AMOUNT_MINOR_MAX` less
/// under a thousand.
fn history_at_the_limit() -> impl Strategy<Value = Vec<Event>> {
    history().prop_map(|mut events| {
        for event in &mut events {
            if let Data::Close {
                amount: Some(money), ..
            }
            | Data::Spend { amount: money, .. } = &mut event.data
            {
                money.amount_minor = AMOUNT_MINOR_MAX - money.amount_minor % 1_000;
            }
        }
        events
    })
}

/// Every deal with touches, under every model: one share per touch, none negative, summing
/// to the deal's amount (a deal without touches is credited whole to `(none)`).
fn every_deal_credited_exactly(projection: &Projection) -> Result<(), TestCaseError> {
    let leads = projection
        .leads()
        .values()
        .filter_map(|s| Some((s.events.as_slice(), s.facts.as_ref()?)));
    let chain = MarkovChain::build(leads, projection.rules(), END);
    for deal in projection
        .leads()
        .values()
        .filter_map(|s| s.facts.as_ref())
        .flat_map(|f| &f.deals)
    {
        if deal.touches.is_empty() {
            continue;
        }
        for model in Model::ALL {
            let shares = shares_under(deal, model, &chain);
            prop_assert_eq!(shares.len(), deal.touches.len());
            prop_assert!(shares.iter().all(|s| s.credit_minor >= 0));
            prop_assert_eq!(
                shares.iter().map(|s| i128::from(s.credit_minor)).sum::<i128>(),
                i128::from(deal.amount.amount_minor),
                "{}",
                model.as_str()
            );
        }
    }
    Ok(())
}

fn project(events: &[Event]) -> Projection {
    Projection::of_events(events)
}

/// Every report this issue has, without its log position (which names the log, not the facts).
fn reports(projection: &Projection, as_of: i64) -> String {
    let window = Window::new(Some(BASE + 100 * HOUR), Some(BASE + 1500 * HOUR)).unwrap();
    let mut out = String::new();
    for by in [None, Some(By::Channel), Some(By::Campaign), Some(By::Producer)] {
        for w in [Window::default(), window] {
            let mut r = serde_json::to_value(report::funnel(
                projection,
                &report::FunnelQuery {
                    window: w,
                    by,
                    ..Default::default()
                },
                as_of,
            ))
            .unwrap();
            r.as_object_mut().unwrap().remove("log");
            out.push_str(&r.to_string());
        }
    }
    let mut others = vec![
        serde_json::to_value(report::velocity(projection, window, as_of)).unwrap(),
        serde_json::to_value(report::sla(projection, Window::default(), as_of)).unwrap(),
        serde_json::to_value(report::rejections(projection, window, Some(By::Campaign), as_of)).unwrap(),
        serde_json::to_value(report::cost(projection, Window::default(), By::Channel, as_of)).unwrap(),
        serde_json::to_value(report::plan(projection, 1_000_000, "USD", Window::default(), as_of)).unwrap(),
        serde_json::to_value(report::attribution(
            projection,
            &Model::ALL,
            Window::default(),
            By::Campaign,
            as_of,
        ))
        .unwrap(),
    ];
    for r in &mut others {
        r.as_object_mut().unwrap().remove("log");
        out.push_str(&r.to_string());
    }
    // A lead whose every event was retracted keeps its (empty) place for the auditors' timeline.
    for (lead, facts) in projection
        .leads()
        .iter()
        .filter_map(|(l, s)| Some((l, s.facts.as_ref()?)))
    {
        // Deals carry their log position; compare what they are, not where they sit in the log.
        let deals: Vec<_> = facts.deals.iter().map(|d| (d.close_at, &d.amount)).collect();
        let mut facts = facts.clone();
        facts.deals.clear();
        out.push_str(&format!("{lead}:{facts:?}{deals:?}"));
    }
    out
}

const END: i64 = BASE + 3000 * HOUR;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn arrival_order_does_not_change_any_report(events in history(), seed in any::<u64>()) {
        let mut shuffled = events.clone();
        // A seeded Fisher–Yates shuffle: the same events arriving in another order.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(reports(&project(&events), END), reports(&project(&shuffled), END));
    }

    #[test]
    fn retracting_an_event_equals_never_recording_it(events in history(), pick in any::<prop::sample::Index>()) {
        let target = pick.index(events.len());
        let mut with_retraction = events.clone();
        with_retraction.push(Event {
            id: "retraction".into(),
            lead_id: events[target].lead_id.clone(),
            account_id: None,
            occurred_at: BASE,
            producer: None,
            data: Data::Retract { target_id: events[target].id.clone(), reason: None },
        });
        let mut never = events.clone();
        never.remove(target);
        prop_assert_eq!(reports(&project(&with_retraction), END), reports(&project(&never), END));
    }

    #[test]
    fn as_of_equals_deriving_from_the_prefix(events in history(), cut in 0i64..2100) {
        let as_of = BASE + cut * HOUR;
        let projection = project(&events);
        for (lead, state) in projection.leads() {
            let Some(full) = &state.facts else { continue };
            let prefix: Vec<LeadEvent> = state.events.iter().filter(|e| e.event.occurred_at <= as_of).cloned().collect();
            let from_prefix = LeadFacts::derive(&prefix, projection.rules());
            for m in Milestone::ALL {
                let expected = from_prefix.as_ref().and_then(|f| f.milestone_at(m, as_of));
                prop_assert_eq!(full.milestone_at(m, as_of), expected, "lead {} milestone {:?}", lead, m);
            }
            let expected_source = from_prefix.as_ref().and_then(|f| f.source.clone());
            prop_assert_eq!(full.source_at(as_of).cloned(), expected_source);
        }
    }

    #[test]
    fn rules_changes_only_affect_milestones_after_their_occurred_at(events in history(), at in 0i64..2000, threshold in 0u8..10) {
        let when = BASE + at * HOUR;
        let before = project(&events);
        let mut changed = events.clone();
        changed.push(Event {
            id: "rule-change".into(), lead_id: None, account_id: None, occurred_at: when, producer: None,
            data: Data::Rules(RulesChange { mql_score_threshold: Some(f64::from(threshold) * 11.0), ..RulesChange::default() }),
        });
        let after = project(&changed);
        for (lead, state) in before.leads() {
            let (Some(a), Some(b)) = (&state.facts, &after.lead(lead).unwrap().facts) else { continue };
            for m in Milestone::ALL {
                let early = |t: Option<i64>| t.filter(|t| *t < when);
                prop_assert_eq!(early(a.milestones[m as usize]), early(b.milestones[m as usize]), "lead {} {:?}", lead, m);
            }
        }
    }

    /// Amounts at the per-event limit, many deals: every credit is non-negative, each deal's
    /// credits sum to its amount under every model, each model's column sums to the currency's
    /// total, and the cost report's revenue agrees with it.
    #[test]
    fn credits_at_the_amount_limit_are_exact_and_never_negative(events in history_at_the_limit()) {
        let projection = project(&events);
        for deal in projection.leads().values().filter_map(|s| s.facts.as_ref()).flat_map(|f| &f.deals) {
            prop_assert!(deal.amount.amount_minor > AMOUNT_MINOR_MAX - 1_000);
        }
        every_deal_credited_exactly(&projection)?;
        let attribution = report::attribution(&projection, &Model::ALL, Window::default(), By::Channel, END);
        let cost = report::cost(&projection, Window::default(), By::Channel, END);
        for total in &attribution.totals {
            for model in Model::ALL {
                let column: i128 = attribution.rows.iter().filter(|r| r.currency == total.currency).map(|r| r.credits_minor[model.as_str()]).sum();
                prop_assert_eq!(column, total.amount_minor, "{} in {}", model.as_str(), &total.currency);
            }
            let revenue: i128 = cost.rows.iter().filter(|r| r.currency == total.currency).map(|r| r.revenue_minor).sum();
            prop_assert_eq!(revenue, total.amount_minor);
        }
        prop_assert!(attribution.rows.iter().all(|r| r.credits_minor.values().all(|c| *c >= 0)));
    }

    #[test]
    fn credits_sum_to_each_deal_and_are_never_negative(events in history()) {
        every_deal_credited_exactly(&project(&events))?;
    }

    #[test]
    fn applying_in_chunks_equals_applying_one_by_one(events in history(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)) {
        let entries = Entry::numbered(events.iter().cloned());
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c.index(entries.len() + 1)).collect();
        bounds.extend([0, entries.len()]);
        bounds.sort_unstable();
        let mut chunked = Projection::default();
        for pair in bounds.windows(2) {
            chunked.apply_all(&entries[pair[0]..pair[1]]).expect("contiguous");
        }
        prop_assert_eq!(chunked, project(&events));
    }

    #[test]
    fn events_round_trip_through_contract_json(events in history()) {
        for event in events {
            let text = event.to_json().to_string();
            prop_assert_eq!(Event::from_json(text.as_bytes()).expect("own JSON is valid"), event);
        }
    }
}

#[test]
fn rules_timeline_lookup_matches_a_linear_scan() {
    let mut timeline = RulesTimeline::default();
    for (i, t) in [50, 10, 30, 30, 90].into_iter().enumerate() {
        timeline.insert(RulesEntry {
            occurred_at: t,
            seq: i as u64,
            id: format!("r{i}"),
            change: RulesChange {
                mql_score_threshold: Some(i as f64),
                ..RulesChange::default()
            },
        });
    }
    // Hand-worked: changes sorted by (t, seq) are r1@10, r2@30, r3@30, r0@50, r4@90.
    for (t, expected) in [
        (9, 50.0),
        (10, 1.0),
        (29, 1.0),
        (30, 3.0),
        (50, 0.0),
        (89, 0.0),
        (90, 4.0),
    ] {
        assert_eq!(timeline.at(t).mql_score_threshold, expected, "at {t}");
    }
}

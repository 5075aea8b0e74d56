//! Hand-worked attribution examples: every number below is derived in the comment beside it,
//! from ATTRIBUTION.md, not from the code.

use funnel_core::attribution::{allocate, Model};
use funnel_core::event::{AcceptStage, Data, Money, Outcome, RulesChange, Side, Team};
use funnel_core::report::{self, By, ExplainReport, Window};
use funnel_core::time::MICROS_PER_DAY;
use funnel_core::{Event, Projection};

const DAY0: i64 = 1_780_272_000_000_000; // 2026-06-01T00:00:00Z
const AS_OF: i64 = DAY0 + 500 * MICROS_PER_DAY;

fn at(day: i64) -> i64 {
    DAY0 + day * MICROS_PER_DAY
}

fn ev(id: &str, lead: &str, day: i64, data: Data) -> Event {
    let lead_id = (!matches!(data, Data::Rules(_))).then(|| lead.to_owned());
    Event {
        id: id.into(),
        lead_id,
        account_id: None,
        occurred_at: at(day),
        producer: None,
        data,
    }
}

fn touch(id: &str, lead: &str, day: i64, channel: &str) -> Event {
    let data = Data::Touch {
        channel: channel.into(),
        campaign: Some(format!("{channel}-c")),
        content: None,
        team: Team::Marketing,
    };
    ev(id, lead, day, data)
}

fn won(id: &str, lead: &str, day: i64, amount: i64) -> Event {
    let amount = Some(Money {
        amount_minor: amount,
        currency: "USD".into(),
    });
    ev(
        id,
        lead,
        day,
        Data::Close {
            outcome: Outcome::Won,
            amount,
            reason: None,
            opportunity_id: None,
        },
    )
}

fn lost(id: &str, lead: &str, day: i64) -> Event {
    ev(
        id,
        lead,
        day,
        Data::Close {
            outcome: Outcome::Lost,
            amount: None,
            reason: None,
            opportunity_id: None,
        },
    )
}

fn project(events: &[Event]) -> Projection {
    Projection::of_events(events)
}

fn explain(events: &[Event], lead: &str) -> ExplainReport {
    report::explain(&project(events), lead, &Model::ALL, AS_OF).expect("lead exists")
}

/// Credits of the first deal's touches under `model`.
fn credits(r: &ExplainReport, model: &str) -> Vec<i64> {
    r.deals[0]
        .touches
        .iter()
        .map(|t| t.models[model].credit_minor)
        .collect()
}

#[test]
fn one_touch_gets_everything_under_every_model() {
    let r = explain(&[touch("t1", "L", 1, "webinar"), won("w", "L", 5, 1000)], "L");
    for model in Model::ALL {
        assert_eq!(credits(&r, model.as_str()), [1000], "{}", model.as_str());
    }
    assert_eq!(r.deals[0].touches[0].roles, ["first", "last", "close"]);
}

#[test]
fn two_touches() {
    // t1 webinar (day 1): first. t2 paid (day 2): last, close. No MQL, no opportunity: those roles drop.
    let r = explain(
        &[
            touch("t1", "L", 1, "webinar"),
            touch("t2", "L", 2, "paid"),
            won("w", "L", 10, 1000),
        ],
        "L",
    );
    let expect = [
        ("first_touch", [1000, 0]),
        ("last_touch", [0, 1000]),
        ("last_non_direct", [0, 1000]),
        ("linear", [500, 500]),
        ("position_based", [500, 500]), // .4 / .4, rest has no touch
        ("j_shaped", [250, 750]),       // .2 / .6 → 1/4, 3/4
        ("inverse_j", [750, 250]),
        // u_shaped: first .4; lead has no touch; t2 is rest .2 → 2/3, 1/3 of 1000 = 666.67, 333.33:
        // floors 666 + 333 = 999, the unit goes to the larger remainder (t1).
        ("u_shaped", [667, 333]),
        ("w_shaped", [750, 250]),  // first .3, rest .1 (lead, opportunity drop)
        ("full_path", [500, 500]), // first .225, close .225 (t2); no rest touch
        // time_decay, half-life 7 d: ages 9 and 8 days; t1/t2 = 2^(-1/7) = 0.905724;
        // t1 = 1000 · 0.905724 / 1.905724 = 475.27 → 475, t2 = 524.73 → 525.
        ("time_decay", [475, 525]),
    ];
    for (model, want) in expect {
        assert_eq!(credits(&r, model), want, "{model}");
    }
    assert_eq!(r.deals[0].touches[1].models["u_shaped"].weight, "1/3");
}

#[test]
fn a_touch_holding_several_roles_and_an_amount_that_does_not_divide() {
    // t1 webinar d1 (first; lead: last touch by the MQL on d2), t2 email d3 (opportunity: last
    // touch by the opportunity on d5), t3 direct d6 (last, close). Won d10 for 100.
    let events = [
        touch("t1", "L", 1, "webinar"),
        ev(
            "s",
            "L",
            2,
            Data::Score {
                score: 60.0,
                model: None,
                reason: None,
            },
        ),
        touch("t2", "L", 3, "email"),
        ev(
            "h",
            "L",
            4,
            Data::Handoff {
                to: Side::Sales,
                owner: None,
            },
        ),
        ev(
            "a",
            "L",
            5,
            Data::Accept {
                stage: AcceptStage::Opportunity,
                owner: None,
                opportunity_id: None,
                pipeline: None,
            },
        ),
        touch("t3", "L", 6, "direct"),
        won("w", "L", 10, 100),
    ];
    let r = explain(&events, "L");
    let roles: Vec<Vec<&str>> = r.deals[0].touches.iter().map(|t| t.roles.clone()).collect();
    assert_eq!(
        roles,
        vec![vec!["first", "lead"], vec!["opportunity"], vec!["last", "close"]]
    );
    let expect = [
        ("first_touch", [100, 0, 0]),
        ("last_touch", [0, 0, 100]),
        ("last_non_direct", [0, 100, 0]), // t3 is direct
        ("linear", [34, 33, 33]),         // 33.33 each; equal remainders, the unit to the earliest
        ("position_based", [40, 20, 40]), // first .4, rest .2, last .4
        ("j_shaped", [20, 20, 60]),
        ("inverse_j", [60, 20, 20]),
        ("u_shaped", [80, 10, 10]),  // t1 first+lead .8; t2 and t3 share rest .2
        ("w_shaped", [60, 30, 10]),  // t1 .6, t2 opportunity .3, t3 rest .1
        ("full_path", [50, 25, 25]), // t1 .45, t2 .225, t3 .225 over .9
        // time_decay: ages 9, 7, 4 days → 2^(-9/7) = 0.410168, 0.5, 2^(-4/7) = 0.673286; sum 1.583454;
        // 25.90, 31.58, 42.52 → floors 98, the two units to t1 (.90) and t2 (.58).
        ("time_decay", [26, 32, 42]),
    ];
    for (model, want) in expect {
        assert_eq!(credits(&r, model), want, "{model}");
    }
    for model in Model::ALL {
        assert_eq!(
            credits(&r, model.as_str()).iter().sum::<i64>(),
            100,
            "{}",
            model.as_str()
        );
    }
}

#[test]
fn no_touches_credits_none_and_no_mql_or_opportunity_drops_those_roles() {
    let events = [
        ev(
            "s",
            "N",
            1,
            Data::Score {
                score: 10.0,
                model: None,
                reason: None,
            },
        ),
        won("w", "N", 3, 700),
    ];
    let projection = project(&events);
    let r = report::explain(&projection, "N", &Model::ALL, AS_OF).unwrap();
    assert!(r.deals[0].touches.is_empty());
    assert_eq!(r.deals[0].unattributed_minor.as_ref().unwrap()["markov"], 700);
    let a = report::attribution(&projection, &Model::ALL, Window::default(), By::Channel, AS_OF);
    assert_eq!(a.rows.len(), 1);
    assert_eq!(
        (a.rows[0].key.as_str(), a.rows[0].credits_minor["linear"]),
        ("(none)", 700)
    );
    assert_eq!(r.deals[0].milestones["mql"], None);
}

#[test]
fn touches_outside_the_lookback_and_retracted_touches_do_not_count() {
    // Lookback 365 d: a touch 400 days before the close is out; t-gone is retracted.
    let events = [
        touch("t-old", "L", 0, "events"),
        touch("t-gone", "L", 395, "social"),
        touch("t-in", "L", 390, "webinar"),
        won("w", "L", 400, 900),
        ev(
            "r",
            "L",
            401,
            Data::Retract {
                target_id: "t-gone".into(),
                reason: None,
            },
        ),
    ];
    let r = explain(&events, "L");
    let ids: Vec<&str> = r.deals[0].touches.iter().map(|t| t.event_id.as_str()).collect();
    assert_eq!(ids, ["t-in"]);
    assert_eq!(r.deals[0].touches_from, funnel_core::time::format_rfc3339(at(35)));
    for model in Model::ALL {
        assert_eq!(credits(&r, model.as_str()), [900]);
    }
}

#[test]
fn rules_in_force_at_the_close_set_lookback_and_half_life() {
    // From day 0: lookback 30 d, half-life 14 d. From day 61 (after the close): lookback 1 d — no effect.
    let rules = |id: &str, day, lookback, half_life| {
        let change = RulesChange {
            attribution_lookback_days: Some(lookback),
            time_decay_half_life_days: half_life,
            ..RulesChange::default()
        };
        ev(id, "", day, Data::Rules(change))
    };
    let events = [
        rules("r1", 0, 30.0, Some(14.0)),
        touch("t-40", "L", 20, "events"),
        touch("t-14", "L", 46, "webinar"),
        touch("t-0", "L", 60, "paid"),
        won("w", "L", 60, 300),
        rules("r2", 61, 1.0, None),
    ];
    let r = explain(&events, "L");
    assert_eq!(
        (
            r.deals[0].rules_in_force.attribution_lookback_days,
            r.deals[0].rules_in_force.time_decay_half_life_days
        ),
        (30.0, 14.0)
    );
    // t-40 is outside 30 days. Ages 14 and 0 days at half-life 14: weights 1/2 and 1 → 100, 200.
    assert_eq!(credits(&r, "time_decay"), [100, 200]);
    assert_eq!(credits(&r, "linear"), [150, 150]);
}

#[test]
fn markov_three_channels_solved_by_hand() {
    // Paths: A→B conv (1300), A→C null, B conv (500), C→B conv (400), C null.
    // Transitions: start→A 2/5, start→B 1/5, start→C 2/5; A→B 1/2, A→C 1/2; B→conv 1; C→B 1/3, C→null 2/3.
    // P(conv): p_B = 1, p_C = 1/3, p_A = 1/2 + 1/6 = 2/3, p_start = 4/15 + 3/15 + 2/15 = 3/5 (3 of 5 converted).
    // Remove A: p_start = 1/5 + 2/15 = 1/3 → effect 1 − (1/3)/(3/5) = 4/9.
    // Remove B: nothing converts → effect 1. Remove C: p_A = 1/2, p_start = 1/5 + 1/5 = 2/5 → effect 1/3.
    let events = [
        touch("p1a", "P1", 1, "A"),
        touch("p1b", "P1", 2, "B"),
        won("p1w", "P1", 3, 1300),
        touch("p2a", "P2", 1, "A"),
        touch("p2c", "P2", 2, "C"),
        lost("p2l", "P2", 3),
        touch("p3b", "P3", 1, "B"),
        won("p3w", "P3", 3, 500),
        touch("p4c", "P4", 1, "C"),
        touch("p4b", "P4", 2, "B"),
        won("p4w", "P4", 3, 400),
        touch("p5c", "P5", 1, "C"),
    ];
    // Paths of leads not won run back from the as-of time: it must be within the lookback of P2 and P5.
    let as_of = at(10);
    let projection = project(&events);
    let r = report::explain(&projection, "P1", &Model::ALL, as_of).unwrap();
    let chain = r.markov.as_ref().unwrap();
    assert_eq!((chain.paths, chain.conversions), (5, 3));
    assert!((chain.conversion_probability - 0.6).abs() < 1e-12);
    for (channel, effect) in [("A", 4.0 / 9.0), ("B", 1.0), ("C", 1.0 / 3.0)] {
        assert!(
            (chain.removal_effects[channel] - effect).abs() < 1e-12,
            "{channel}: {}",
            chain.removal_effects[channel]
        );
    }
    // P1 (A, B): 4/9 : 1 = 4/13 : 9/13 of 1300 → 400, 900.
    assert_eq!(credits(&r, "markov"), [400, 900]);
    // P4 (C, B): 1/3 : 1 = 1/4 : 3/4 of 400 → 100, 300.
    let p4 = report::explain(&projection, "P4", &[Model::Markov], as_of).unwrap();
    assert_eq!(credits(&p4, "markov"), [100, 300]);
    // Report totals: A 400, B 900 + 500 + 300 = 1700, C 100.
    let a = report::attribution(&projection, &[Model::Markov], Window::default(), By::Channel, as_of);
    let rows: Vec<(&str, i128)> = a
        .rows
        .iter()
        .map(|r| (r.key.as_str(), r.credits_minor["markov"]))
        .collect();
    assert_eq!(rows, [("A", 400), ("B", 1700), ("C", 100)]);
    // Exact and repeatable: the same bytes every run.
    let again = report::attribution(&project(&events), &Model::ALL, Window::default(), By::Channel, as_of);
    let first = report::attribution(&projection, &Model::ALL, Window::default(), By::Channel, as_of);
    assert_eq!(
        serde_json::to_string(&first).unwrap(),
        serde_json::to_string(&again).unwrap()
    );
    // 500 days on, P2's and P5's touches are outside the lookback of the as-of time: 3 paths, all converted.
    let late = report::explain(&projection, "P1", &[Model::Markov], AS_OF).unwrap();
    assert_eq!(late.markov.map(|m| (m.paths, m.conversions)), Some((3, 3)));
}

#[test]
fn allocation_is_largest_remainder_with_ties_to_the_earlier_touch() {
    let cents = |amount, nums: &[u128]| {
        allocate(amount, nums)
            .iter()
            .map(|s| s.credit_minor)
            .collect::<Vec<_>>()
    };
    assert_eq!(cents(100, &[1, 1, 1]), [34, 33, 33]);
    assert_eq!(cents(2, &[1, 1, 1]), [1, 1, 0]);
    assert_eq!(cents(10, &[1, 2]), [3, 7]); // 3.33, 6.67 → the unit to the .67
    assert_eq!(cents(0, &[5, 7]), [0, 0]);
    assert_eq!(cents(i64::MAX, &[1, 1]), [i64::MAX / 2 + 1, i64::MAX / 2]);
}

//! The engine against the oracle: over generated histories (late events, retractions, rules
//! changes, duplicates, several currencies) stored in a real sled ledger, every report of the
//! engine equals, byte for byte, the fold in `funnel_core::report` on the same log prefix,
//! for random windows, breakdowns, conversion windows, trend intervals and as-of times.

use std::sync::atomic::{AtomicU64, Ordering};

use funnel_core::attribution::Model;
use funnel_core::event::{AcceptStage, Data, Money, Outcome, RejectionReason, RulesChange, Side, Team};
use funnel_core::report::{self, By, FunnelQuery, Interval, Window};
use funnel_core::{Entry, Event, Projection};
use funnel_engine::reports::{self as engine_reports, Timeline};
use funnel_engine::{checkpoint, funnel, replay, Live, Writer};
use funnel_ledger::{Candidate, Ledger};
use proptest::prelude::*;

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;
const BASE: i64 = 1_772_323_200_000_000; // 2026-03-01T00:00:00Z
const SPAN_HOURS: i64 = 2_000;

/// A scratch ledger directory, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "funnel-engine-oracle-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One generated event: lead, kind, a pick for the payload, an hour (times may repeat, so
/// arrival order decides ties, and later events may carry earlier times: late events).
type Raw = (u8, u8, u8, u16);

fn make_event(i: usize, (lead, kind, pick, hour): Raw, earlier: &[Event]) -> Event {
    let occurred_at = BASE + i64::from(hour) * HOUR + i64::from(pick % 2) * 1_000;
    let channels = ["webinar", "paid_search", "direct", "referral"];
    let money = Money {
        amount_minor: 1_000 + i64::from(pick) * 37 + i as i64 * 7_919,
        currency: ["USD", "EUR", "JPY"][usize::from(pick) % 3].into(),
    };
    let data = match kind {
        0..=2 => Data::Touch {
            channel: channels[usize::from(pick) % 4].into(),
            campaign: (pick % 2 == 0).then(|| format!("c{}", pick % 3)),
            content: None,
            team: Team::Marketing,
        },
        3 | 4 => Data::Score {
            score: f64::from(pick) * 12.5,
            model: None,
            reason: None,
        },
        5 => Data::Handoff {
            to: if pick < 6 { Side::Sales } else { Side::Marketing },
            owner: Some(format!("o{}", pick % 3)),
        },
        6 => Data::Accept {
            stage: if pick % 2 == 0 {
                AcceptStage::Sql
            } else {
                AcceptStage::Opportunity
            },
            owner: None,
            opportunity_id: None,
            pipeline: None,
        },
        7 => Data::Rejection {
            reason: RejectionReason::ALL[usize::from(pick) % 8],
            note: None,
        },
        8 => Data::Close {
            outcome: if pick % 3 == 0 { Outcome::Lost } else { Outcome::Won },
            amount: Some(money),
            reason: None,
            opportunity_id: None,
        },
        9 => Data::Rules(RulesChange {
            mql_score_threshold: Some(f64::from(pick) * 10.0 + 20.0),
            handoff_sla_hours: (pick % 2 == 0).then_some(f64::from(pick) + 4.0),
            attribution_lookback_days: (pick % 3 == 0).then_some(30.0),
            time_decay_half_life_days: None,
        }),
        10 => Data::Spend {
            channel: channels[usize::from(pick) % 4].into(),
            campaign: (pick % 2 == 1).then(|| "c1".to_owned()),
            amount: money,
        },
        _ if !earlier.is_empty() => Data::Retract {
            target_id: earlier[(usize::from(pick) * 7 + usize::from(hour)) % earlier.len()]
                .id
                .clone(),
            reason: None,
        },
        _ => Data::Score {
            score: 60.0,
            model: None,
            reason: None,
        },
    };
    let lead_id =
        (!matches!(data, Data::Rules(_) | Data::Spend { .. } | Data::Retract { .. })).then(|| format!("L{}", lead % 9));
    Event {
        id: format!("e{i}"),
        lead_id,
        account_id: None,
        occurred_at,
        producer: (lead % 4 != 3).then(|| format!("p{}", lead % 3)),
        data,
    }
}

fn history() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec((0u8..12, 0u8..13, 0u8..12, 0u16..SPAN_HOURS as u16), 1..90).prop_map(|raw| {
        let mut events: Vec<Event> = Vec::new();
        for (i, r) in raw.into_iter().enumerate() {
            let e = make_event(i, r, &events);
            events.push(e);
        }
        events
    })
}

/// Appends events one by one (so retractions are filed under their target's lead), with a
/// recording time that grows by an hour per event.
fn ledger_of(dir: &std::path::Path, events: &[Event]) -> Ledger {
    let ledger = Ledger::open(&dir.join("ledger")).expect("open scratch ledger");
    append(&ledger, events, 0);
    ledger
}

/// Appends `events` as [`ledger_of`] does, the first being the `first`-th of the history.
fn append(ledger: &Ledger, events: &[Event], first: usize) {
    for (i, event) in events.iter().enumerate().map(|(i, e)| (i + first, e)) {
        let candidate = Candidate::direct(event);
        ledger
            .append_batch(&[candidate], BASE + i as i64 * HOUR)
            .expect("append");
    }
}

fn oracle(ledger: &Ledger, upto: u64) -> Projection {
    let entries: Vec<Entry> = ledger
        .entries(1)
        .map(|e| e.expect("entry"))
        .take_while(|e| e.seq <= upto)
        .collect();
    let mut p = Projection::default();
    p.apply_owned(entries).expect("contiguous");
    p
}

/// A random question: window, breakdown, conversion window, interval, as-of.
#[derive(Debug, Clone)]
struct Question {
    window: Window,
    by: Option<By>,
    within_days: Option<u32>,
    interval: Option<Interval>,
    as_of: i64,
}

fn question() -> impl Strategy<Value = Question> {
    (
        prop::option::of(0i64..SPAN_HOURS + 200),
        prop::option::of(0i64..SPAN_HOURS + 200),
        0usize..4,
        prop::option::of(0u32..60),
        0usize..4,
        0i64..SPAN_HOURS + 400,
    )
        .prop_map(|(a, b, by, within_days, interval, as_of)| {
            let (from, to) = match (a, b) {
                (Some(a), Some(b)) => (Some(a.min(b)), Some(a.max(b))),
                other => other,
            };
            Question {
                window: Window::new(from.map(|h| BASE + h * HOUR - 7), to.map(|h| BASE + h * HOUR)).expect("ordered"),
                by: [None, Some(By::Channel), Some(By::Campaign), Some(By::Producer)][by],
                within_days,
                interval: [None, Some(Interval::Day), Some(Interval::Week), Some(Interval::Month)][interval],
                as_of: BASE + as_of * HOUR - 3,
            }
        })
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("reports serialise")
}

/// Every report of the engine and the oracle on the same prefix, compared as JSON bytes.
fn assert_same(ledger: &Ledger, engine: &funnel_engine::Engine, projection: &Projection, q: &Question) {
    let as_of = q.as_of;
    let mut funnel_query = FunnelQuery {
        window: q.window,
        by: q.by,
        within_days: q.within_days,
        interval: q.interval,
    };
    if funnel_query.bounds().is_err() {
        funnel_query.interval = None;
    }
    assert_eq!(
        json(&funnel::funnel(engine, &funnel_query, as_of)),
        json(&report::funnel(projection, &funnel_query, as_of)),
        "funnel {funnel_query:?} as of {as_of}"
    );
    let w = q.window;
    assert_eq!(
        json(&engine_reports::velocity(engine, w, as_of)),
        json(&report::velocity(projection, w, as_of))
    );
    assert_eq!(
        json(&engine_reports::sla(engine, w, as_of)),
        json(&report::sla(projection, w, as_of))
    );
    let rejections_by = q.by.filter(|b| *b != By::Producer);
    assert_eq!(
        json(&engine_reports::rejections(engine, w, rejections_by, as_of)),
        json(&report::rejections(projection, w, rejections_by, as_of))
    );
    let by = rejections_by.unwrap_or(By::Channel);
    assert_eq!(
        json(&engine_reports::cost(engine, w, by, as_of)),
        json(&report::cost(projection, w, by, as_of))
    );
    for currency in ["USD", "EUR", "GBP"] {
        assert_eq!(
            json(&engine_reports::plan(engine, 1_000_000, currency, w, as_of)),
            json(&report::plan(projection, 1_000_000, currency, w, as_of))
        );
    }
    for models in [&Model::ALL[..], &[Model::Linear, Model::TimeDecay][..]] {
        assert_eq!(
            json(&engine_reports::attribution(engine, models, w, by, as_of)),
            json(&report::attribution(projection, models, w, by, as_of)),
            "attribution {models:?}"
        );
    }
    let upto = engine.head().seq;
    let log: Vec<Entry> = ledger
        .entries(1)
        .map(|e| e.expect("entry"))
        .take_while(|e| e.seq <= upto)
        .collect();
    for lead in 0..9 {
        let lead_id = format!("L{lead}");
        // A lead's timeline, worked out from the whole log: its own events, and the retractions
        // whose target is one of them.
        let lead_of = |e: &Entry| match &e.event.data {
            Data::Retract { target_id, .. } => log
                .iter()
                .find(|t| t.event.id == *target_id && t.seq < e.seq)
                .and_then(|t| t.event.lead_id.clone()),
            _ => e.event.lead_id.clone(),
        };
        let oracle_timeline: Vec<Entry> = log
            .iter()
            .filter(|e| lead_of(e).as_deref() == Some(lead_id.as_str()))
            .cloned()
            .collect();
        let filed = engine.filed(&lead_id);
        assert_eq!(
            filed,
            oracle_timeline.iter().map(|e| e.seq).collect::<Vec<_>>(),
            "lead index of {lead_id}"
        );
        let timeline = Timeline::of(ledger.entries_at(&filed).expect("lead entries"), upto);
        assert_eq!(
            engine_reports::lead(engine, &lead_id, &timeline, as_of).map(|v| json(&v)),
            report::lead(projection, &lead_id, &oracle_timeline, as_of).map(|v| json(&v)),
            "lead {lead_id}"
        );
        assert_eq!(
            engine_reports::explain(engine, &lead_id, &timeline, &Model::ALL, as_of).map(|v| json(&v)),
            report::explain(projection, &lead_id, &Model::ALL, as_of).map(|v| json(&v)),
            "explain {lead_id}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Engine equals oracle on the whole log and on a random prefix (at_seq), for random questions.
    #[test]
    fn engine_equals_the_fold(events in history(), questions in prop::collection::vec(question(), 4), cut in 0.0f64..1.0) {
        let dir = Scratch::new();
        let ledger = ledger_of(&dir.0, &events);
        let head = ledger.head().seq;
        let prefix = ((head as f64) * cut) as u64;
        for upto in [head, prefix] {
            let engine = replay(&ledger, Some(upto), |_| {}).expect("replay");
            prop_assert_eq!(engine.head(), ledger.get(upto).expect("get").map_or_else(Default::default, |e| funnel_core::LogPosition { seq: e.seq, hash: e.hash }));
            let projection = oracle(&ledger, upto);
            for q in &questions {
                assert_same(&ledger, &engine, &projection, q);
            }
            // A replay keeps no history: asked about an earlier position, it declines (the
            // caller replays that prefix) rather than answer from what it does not hold.
            if let Some(earlier) = ledger.get(upto.saturating_sub(1)).expect("get").filter(|_| upto > 1) {
                let at = funnel_core::LogPosition { seq: earlier.seq, hash: earlier.hash };
                let answer = funnel::funnel_at(&engine, &FunnelQuery::default(), i64::MAX, at, &ledger).expect("read");
                prop_assert!(answer.is_none());
            }
        }
    }

    /// Applying the log one entry at a time gives the same engine answers as one batch.
    #[test]
    fn one_by_one_equals_batch(events in history(), q in question()) {
        let dir = Scratch::new();
        let ledger = ledger_of(&dir.0, &events);
        let batch = replay(&ledger, None, |_| {}).expect("replay");
        let mut writer = Writer::default();
        for entry in ledger.entries(1) {
            let entry = entry.expect("entry");
            writer.apply(std::slice::from_ref(&entry), &ledger).expect("contiguous");
            // Publishing between entries must not disturb the writer's copy-on-write state.
            let _ = writer.snapshot();
        }
        let single = writer.snapshot();
        let fq = FunnelQuery { window: q.window, by: q.by, within_days: q.within_days, interval: None };
        prop_assert_eq!(json(&funnel::funnel(&single, &fq, q.as_of)), json(&funnel::funnel(&batch, &fq, q.as_of)));
        let w = q.window;
        prop_assert_eq!(
            json(&engine_reports::attribution(&single, &Model::ALL, w, By::Channel, q.as_of)),
            json(&engine_reports::attribution(&batch, &Model::ALL, w, By::Channel, q.as_of))
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A service that checkpoints, keeps up, checkpoints again and restarts on a longer log
    /// answers exactly as the fold over the whole log (and so as a fresh replay).
    #[test]
    fn restart_from_checkpoint_equals_the_fold(
        events in history(),
        cuts in (0.0f64..1.0, 0.0f64..1.0),
        questions in prop::collection::vec(question(), 3),
    ) {
        let dir = Scratch::new();
        let (a, b) = (cuts.0.min(cuts.1), cuts.0.max(cuts.1));
        let (a, b) = ((events.len() as f64 * a) as usize, (events.len() as f64 * b) as usize);
        let ledger = ledger_of(&dir.0, &events[..a]);
        {
            let live = Live::open(ledger.clone(), &dir.0.join("engine")).expect("first start: bulk load, full checkpoint");
            append(&ledger, &events[a..b], a);
            live.catch_up().expect("keep up");
            live.checkpoint().expect("checkpoint what changed");
        }
        append(&ledger, &events[b..], b);
        let restarted = Live::open(ledger.clone(), &dir.0.join("engine"))
            .expect("restart from the checkpoint")
            .snapshot();
        prop_assert_eq!(restarted.head(), ledger.head());
        let projection = oracle(&ledger, ledger.head().seq);
        for q in &questions {
            assert_same(&ledger, &restarted, &projection, q);
        }
    }
}

/// Events mostly in business-time order per lead (as a live feed sends them): the history's
/// fast path, where a lead's views come from its final facts.
fn history_in_order() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec((0u8..12, 0u8..13, 0u8..12, 0u16..SPAN_HOURS as u16), 1..90).prop_map(|mut raw| {
        raw.sort_by_key(|r| r.3);
        let mut events: Vec<Event> = Vec::new();
        for (i, r) in raw.into_iter().enumerate() {
            let e = make_event(i, r, &events);
            events.push(e);
        }
        events
    })
}

/// The funnel at every log prefix from the live engine's history equals the fold over that
/// prefix, for an engine built by bulk load, one applied in random runs, and one restarted
/// from a checkpoint: `at_seq` without replay.
fn history_equals_the_fold_at_every_prefix(events: &[Event], runs: &[usize], cut: f64, questions: &[Question]) {
    let dir = Scratch::new();
    let ledger = ledger_of(&dir.0, events);
    let head = ledger.head().seq;
    let all: Vec<Entry> = ledger.entries(1).map(|e| e.expect("entry")).collect();
    // A bulk load as a first start does it (with the history; a replay keeps none).
    let bulk = {
        let mut writer = Writer::bulk();
        writer.apply(&all, &ledger).expect("contiguous");
        writer.snapshot()
    };
    let mut writer = Writer::default();
    let mut rest = &all[..];
    for n in runs.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (run, later) = rest.split_at((*n).min(rest.len()));
        writer.apply(run, &ledger).expect("contiguous");
        let _ = writer.snapshot();
        rest = later;
    }
    let incremental = writer.snapshot();
    let restarted = {
        let other = Scratch::new();
        let a = (events.len() as f64 * cut) as usize;
        let ledger = ledger_of(&other.0, &events[..a]);
        {
            let live = Live::open(ledger.clone(), &other.0.join("engine")).expect("first start");
            append(&ledger, &events[a..], a);
            live.catch_up().expect("keep up");
            live.checkpoint().expect("checkpoint");
        }
        Live::open(ledger, &other.0.join("engine")).expect("restart").snapshot()
    };
    let far = BASE + 100_000 * HOUR;
    for upto in 0..=head {
        let at = ledger
            .get(upto)
            .expect("get")
            .map_or_else(Default::default, |e| funnel_core::LogPosition {
                seq: e.seq,
                hash: e.hash,
            });
        let projection = oracle(&ledger, upto);
        for q in questions {
            let mut fq = FunnelQuery {
                window: q.window,
                by: q.by,
                within_days: None,
                interval: q.interval,
            };
            if fq.bounds().is_err() {
                fq.interval = None;
            }
            for as_of in [far, q.as_of] {
                let expected = json(&report::funnel(&projection, &fq, as_of));
                for (name, engine) in [("bulk", &bulk), ("runs", &incremental), ("restarted", &restarted)] {
                    let answer = funnel::funnel_at(engine, &fq, as_of, at, &ledger).expect("read the ledger");
                    // Only a rules change after the prefix stops the history from answering.
                    assert!(
                        answer.is_some() || engine.rules_changed_at() > upto,
                        "{name}: no history answer at seq {upto} as of {as_of}"
                    );
                    if let Some(answer) = answer {
                        assert_eq!(json(&answer), expected, "{name} at seq {upto}: {fq:?} as of {as_of}");
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn at_seq_from_history_equals_the_fold(
        events in history(),
        runs in prop::collection::vec(1usize..9, 1..5),
        cut in 0.0f64..1.0,
        questions in prop::collection::vec(question(), 2),
    ) {
        history_equals_the_fold_at_every_prefix(&events, &runs, cut, &questions);
    }

    #[test]
    fn at_seq_from_history_equals_the_fold_for_a_feed_in_order(
        events in history_in_order(),
        runs in prop::collection::vec(1usize..9, 1..5),
        cut in 0.0f64..1.0,
        questions in prop::collection::vec(question(), 2),
    ) {
        history_equals_the_fold_at_every_prefix(&events, &runs, cut, &questions);
    }
}

/// A checkpoint that does not match the ledger is reported and rebuilt, never trusted.
#[test]
fn a_checkpoint_of_another_log_is_rebuilt() {
    let events: Vec<Event> = (0..40)
        .map(|i| make_event(i, ((i % 5) as u8, (i % 8) as u8, i as u8, i as u16), &[]))
        .collect();
    let (one, other) = (Scratch::new(), Scratch::new());
    let ledger = ledger_of(&one.0, &events[..30]);
    drop(Live::open(ledger.clone(), &one.0.join("engine")).expect("start"));
    // The same directory's checkpoint, copied beside a different log of the same length.
    let foreign = ledger_of(&other.0, &events[10..40]);
    {
        let store = checkpoint::open_store(&one.0.join("engine")).expect("checkpoint store");
        let copy = checkpoint::open_store(&other.0.join("engine")).expect("another checkpoint store");
        for item in store.iter() {
            let (k, v) = item.expect("read");
            copy.insert(k, v).expect("copy");
        }
        assert!(!copy.is_empty(), "a checkpoint was copied");
    }
    let engine = Live::open(foreign.clone(), &other.0.join("engine"))
        .expect("rebuilt from the log")
        .snapshot();
    let projection = oracle(&foreign, foreign.head().seq);
    let q = Question {
        window: Window::default(),
        by: Some(By::Channel),
        within_days: None,
        interval: None,
        as_of: BASE + 3_000 * HOUR,
    };
    assert_same(&foreign, &engine, &projection, &q);
}

/// A hand-worked funnel with a conversion window and a weekly trend, independent of both codes.
#[test]
fn within_days_and_weekly_series_by_hand() {
    let at = |day: i64| BASE + day * DAY; // 2026-03-01 is a Sunday
    let ev = |id: &str, lead: &str, t: i64, data: Data| Event {
        id: id.into(),
        lead_id: Some(lead.into()),
        account_id: None,
        occurred_at: t,
        producer: None,
        data,
    };
    let touch = || Data::Touch {
        channel: "webinar".into(),
        campaign: None,
        content: None,
        team: Team::Marketing,
    };
    let handoff = || Data::Handoff {
        to: Side::Sales,
        owner: None,
    };
    // A: inquiry day 0, SAL day 2. B: inquiry day 1, SAL day 10. C: inquiry day 8, no SAL.
    let events = vec![
        ev("a1", "A", at(0), touch()),
        ev("a2", "A", at(2), handoff()),
        ev("b1", "B", at(1), touch()),
        ev("b2", "B", at(10), handoff()),
        ev("c1", "C", at(8), touch()),
    ];
    let dir = Scratch::new();
    let ledger = ledger_of(&dir.0, &events);
    let engine = replay(&ledger, None, |_| {}).expect("replay");
    let q = FunnelQuery {
        window: Window::new(Some(at(0)), Some(at(15))).expect("window"),
        by: None,
        within_days: Some(7),
        interval: Some(Interval::Week),
    };
    let r = funnel::funnel(&engine, &q, at(30));
    // Cohort: 3 inquiries; SAL within 7 days only for A (B took 9 days).
    assert_eq!((r.total.cohort.inquiry, r.total.cohort.sal), (3, 1));
    // Period counts are unaffected by the conversion window: both handoffs are in the window.
    assert_eq!(r.total.period.sal, 2);
    let series = r.series.expect("series");
    // Weeks start on Monday: Sun 03-01 (cut), Mon 03-02..03-08, 03-09..03-15 (cut at 03-16).
    let starts: Vec<&str> = series.iter().map(|b| b.from.as_str()).collect();
    assert_eq!(
        starts,
        ["2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z", "2026-03-09T00:00:00Z"]
    );
    let inquiries: Vec<u64> = series.iter().map(|b| b.period.inquiry).collect();
    assert_eq!(inquiries, [1, 1, 1]);
    let sals: Vec<u64> = series.iter().map(|b| b.period.sal).collect();
    assert_eq!(sals, [0, 1, 1]);
}

/// The bug: two won deals of 2^62 minor units saturated `/v1/cost` revenue and credited a
/// channel −2^63 under `linear`. Amounts are now at most 10^15 per event and sums are 128-bit:
/// 9,300 won deals at the limit total 9.3 × 10^18, past `i64::MAX` (≈ 9.22 × 10^18), and
/// every figure stays exact and non-negative, in the engine and in the fold.
#[test]
fn revenue_and_credits_past_i64_stay_exact_and_never_negative() {
    use funnel_core::event::AMOUNT_MINOR_MAX;
    const DEALS: i64 = 9_300;
    let mut events = Vec::new();
    for i in 0..DEALS {
        let lead = format!("L{i}");
        let at = BASE + i * 1_000_000;
        let ev = |kind: &str, t: i64, data: Data| Event {
            id: format!("{kind}{i}"),
            lead_id: Some(lead.clone()),
            account_id: None,
            occurred_at: t,
            producer: None,
            data,
        };
        for (k, channel) in ["email", "webinar"].iter().enumerate() {
            events.push(ev(
                &format!("t{k}-"),
                at + k as i64,
                Data::Touch {
                    channel: (*channel).into(),
                    campaign: None,
                    content: None,
                    team: Team::Marketing,
                },
            ));
        }
        events.push(ev(
            "w",
            at + 10,
            Data::Close {
                outcome: Outcome::Won,
                amount: Some(Money {
                    amount_minor: AMOUNT_MINOR_MAX,
                    currency: "USD".into(),
                }),
                reason: None,
                opportunity_id: None,
            },
        ));
    }
    let dir = Scratch::new();
    let ledger = ledger_of(&dir.0, &events);
    let engine = replay(&ledger, None, |_| {}).expect("replay");
    let projection = oracle(&ledger, ledger.head().seq);
    let as_of = BASE + 100_000 * HOUR;
    // By hand: 9,300 × 10^15 in all; linear gives each of the two touches half of each deal.
    let total: i128 = 9_300 * 1_000_000_000_000_000;
    assert!(total > i128::from(i64::MAX));
    let cost = engine_reports::cost(&engine, Window::default(), By::Channel, as_of);
    assert_eq!(
        json(&cost),
        json(&report::cost(&projection, Window::default(), By::Channel, as_of))
    );
    let email = cost.rows.iter().find(|r| r.key == "email").expect("email row");
    assert_eq!(
        email.revenue_minor, total,
        "revenue is booked to the first touch's channel"
    );
    assert_eq!(email.customers, DEALS as u64);
    let attribution = engine_reports::attribution(&engine, &Model::ALL, Window::default(), By::Channel, as_of);
    assert_eq!(
        json(&attribution),
        json(&report::attribution(
            &projection,
            &Model::ALL,
            Window::default(),
            By::Channel,
            as_of
        ))
    );
    assert_eq!(attribution.totals[0].amount_minor, total);
    for row in &attribution.rows {
        assert!(row.credits_minor.values().all(|c| *c >= 0), "{row:?}");
    }
    let linear = |key: &str| {
        attribution
            .rows
            .iter()
            .find(|r| r.key == key)
            .expect("row")
            .credits_minor["linear"]
    };
    assert_eq!((linear("email"), linear("webinar")), (total / 2, total / 2));
    for model in Model::ALL {
        let column: i128 = attribution.rows.iter().map(|r| r.credits_minor[model.as_str()]).sum();
        assert_eq!(column, total, "{} credits sum to the deals", model.as_str());
    }
}

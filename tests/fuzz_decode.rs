//! Fuzzing what ingest does to every message before it touches the ledger: decode (JSON or
//! bincode by Content-Type), validate, check the subject, write the hashed canonical bytes.
//! On stable Rust, so with proptest rather than cargo-fuzz: inputs are arbitrary bytes,
//! mutations of valid events of every type (byte flips, cuts, splices of hostile tokens),
//! and mutated bincode. Whatever the input:
//! - nothing panics;
//! - a refusal has a reason and a message (what the DLQ files);
//! - an accepted event validates, and survives every form it is stored or sent in: its JSON,
//!   its bincode and its canonical (hashed) bytes each decode to the same event.
//!
//! `FUNNEL_FUZZ_CASES` sets the number of inputs (default 100,000 per CI run, a few seconds); the figures are
//! printed at the end: `FUNNEL_FUZZ_CASES=1000000 cargo test --release --test fuzz_decode -- --nocapture`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use funnel_core::Event;
use funnel_producer::{decode, encode, Encoding, BINCODE, JSON};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Valid events of every type: the seeds the mutations start from.
const SEEDS: &[&str] = &[
    r#"{"id":"e1","type":"touch","lead_id":"L1","occurred_at":"2026-03-01T09:00:00Z","producer":"web","data":{"channel":"webinar","campaign":"q1","content":"deck","team":"marketing"}}"#,
    r#"{"id":"e2","type":"score","lead_id":"L1","occurred_at":"2026-03-01T09:00:00.5+02:00","data":{"score":87.5,"model":"v2","reason":"fit"}}"#,
    r#"{"id":"e3","type":"handoff","lead_id":"L1","occurred_at":"2026-03-02T10:00:00Z","data":{"to":"sales","owner":"ana"}}"#,
    r#"{"id":"e4","type":"accept","lead_id":"L1","occurred_at":"2026-03-02T11:00:00Z","data":{"stage":"sql","owner":"ana","opportunity_id":"o1","amount_minor":900000,"currency":"USD"}}"#,
    r#"{"id":"e5","type":"rejection","lead_id":"L1","occurred_at":"2026-03-02T12:00:00Z","data":{"reason":"no_budget","note":"too small"}}"#,
    r#"{"id":"e6","type":"close","lead_id":"L1","account_id":"A1","occurred_at":"2026-04-01T00:00:00Z","data":{"outcome":"won","amount_minor":1234567,"currency":"USD","reason":"price","opportunity_id":"o1"}}"#,
    r#"{"id":"e7","type":"spend","occurred_at":"2026-03-01T00:00:00Z","data":{"channel":"webinar","campaign":"q1","amount_minor":50000,"currency":"EUR"}}"#,
    r#"{"id":"e8","type":"retract","lead_id":"L1","occurred_at":"2026-03-03T00:00:00Z","data":{"target_id":"e2","reason":"duplicate"}}"#,
    r#"{"id":"e9","type":"rules","occurred_at":"2026-01-01T00:00:00Z","data":{"mql_score_threshold":60,"handoff_sla_hours":48,"attribution_lookback_days":90,"time_decay_half_life_days":7}}"#,
];

/// Tokens that have broken parsers before: huge and non-finite numbers, escapes, nesting.
const HOSTILE: &[&str] = &[
    "1e999",
    "-1e999",
    "-0",
    "9223372036854775808",
    "18446744073709551616",
    "1000000000000001",
    "0.1e-400",
    "null",
    "true",
    "[]",
    "{}",
    "\"\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"\\\"\"",
    "\u{feff}",
    "\u{202e}",
    "[[[[[[[[",
    "{\"data\":",
    "\"id\":\"e1\",",
    "\"type\":\"touch\",",
    ",,",
    "\"2026-02-30T00:00:00Z\"",
    "\"9999-12-31T23:59:59Z\"",
    "\"-262144-01-01T00:00:00Z\"",
    "\"amount_minor\":-1",
    "\"currency\":\"usd\"",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, &'static str),
    Cut(usize, usize),
    Repeat(usize, usize),
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Flip(at, bits) => {
                if let Some(b) = bytes.get_mut(at % len) {
                    *b ^= bits;
                }
            }
            Mutation::Insert(at, token) => {
                let at = (at % len).min(bytes.len());
                bytes.splice(at..at, token.bytes());
            }
            Mutation::Cut(at, n) => {
                let at = (at % len).min(bytes.len());
                let end = (at + n % 16).min(bytes.len());
                bytes.drain(at..end);
            }
            Mutation::Repeat(at, n) => {
                let at = (at % len).min(bytes.len());
                let end = (at + n % 64).min(bytes.len());
                let part = bytes[at..end].to_vec();
                bytes.splice(at..at, part);
            }
        }
    }
    bytes
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(a, b)| Mutation::Flip(a, b)),
        (any::<usize>(), prop::sample::select(HOSTILE)).prop_map(|(a, t)| Mutation::Insert(a, t)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, n)| Mutation::Cut(a, n)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, n)| Mutation::Repeat(a, n)),
    ]
}

/// (Content-Type, payload, subject)
fn input() -> impl Strategy<Value = (Option<String>, Vec<u8>, String)> {
    let json_type = prop_oneof![Just(None), Just(Some(JSON.to_owned()))];
    let any_type = prop_oneof![
        Just(None),
        Just(Some(JSON.to_owned())),
        Just(Some(BINCODE.to_owned())),
        "[ -~]{0,12}".prop_map(Some),
    ];
    let seed = prop::sample::select(SEEDS);
    let subject = prop_oneof![
        3 => Just(None),
        1 => "funnel\\.events\\.[a-z]{0,8}\\.[A-Za-z0-9]{0,4}".prop_map(Some),
    ];
    let payload = prop_oneof![
        // Arbitrary bytes, under any Content-Type.
        (any_type, prop::collection::vec(any::<u8>(), 0..300)),
        // Valid JSON events, mutated.
        (
            json_type,
            (seed.clone(), prop::collection::vec(mutation(), 0..6))
                .prop_map(|(s, ms)| mutate(s.as_bytes().to_vec(), &ms))
        ),
        // Valid bincode events, mutated.
        (
            Just(Some(BINCODE.to_owned())),
            (seed, prop::collection::vec(mutation(), 0..4)).prop_map(|(s, ms)| {
                let event = Event::from_json(s.as_bytes()).expect("seed events are valid");
                mutate(encode(&event, Encoding::Bincode), &ms)
            })
        ),
    ];
    (payload, subject).prop_map(|((content_type, bytes), subject)| {
        let subject = subject.unwrap_or_default();
        (content_type, bytes, subject)
    })
}

#[test]
fn every_seed_is_a_valid_event() {
    for seed in SEEDS {
        if let Err(e) = Event::from_json(seed.as_bytes()) {
            panic!("{seed}: {e:?}");
        }
    }
}

#[derive(Default)]
struct Tally {
    executions: u64,
    accepted: u64,
    refused: BTreeMap<&'static str, u64>,
}

#[test]
fn decode_and_validate_hold_on_arbitrary_bytes() {
    let cases = std::env::var("FUNNEL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let tally = Mutex::new(Tally::default());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&input(), |(content_type, payload, subject)| {
        let decoded = decode(content_type.as_deref(), &payload);
        // What ingest does next: the subject check (when a subject came with it).
        let decoded = decoded.and_then(|event| {
            if subject.is_empty() {
                Ok(event)
            } else {
                event.check_subject(&subject).map(|()| event)
            }
        });
        let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
        tally.executions += 1;
        match decoded {
            Err(rejection) => {
                prop_assert!(!rejection.message.is_empty(), "a refusal without a message");
                *tally.refused.entry(rejection.reason.as_str()).or_default() += 1;
            }
            Ok(event) => {
                tally.accepted += 1;
                prop_assert!(event.validate().is_ok());
                let json = serde_json::to_vec(&event.to_json()).expect("to_json serialises");
                let bincode = encode(&event, Encoding::Bincode);
                let canonical = funnel_ledger::canonical_bytes(&event);
                for (form, back) in [
                    ("its JSON", decode(Some(JSON), &json)),
                    ("its bincode", decode(Some(BINCODE), &bincode)),
                    ("its hashed canonical bytes", Event::from_json(&canonical)),
                ] {
                    match back {
                        Ok(back) => prop_assert_eq!(&back, &event, "{} gives another event", form),
                        Err(e) => prop_assert!(false, "{} is refused: {:?}", form, e),
                    }
                }
            }
        }
        Ok(())
    });
    let tally = tally.into_inner().unwrap_or_else(|e| e.into_inner());
    eprintln!(
        "fuzz: {} executions, 0 crashes; accepted {}; refused {:?}",
        tally.executions, tally.accepted, tally.refused
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_eq!(tally.executions, u64::from(cases), "every case ran");
    // The inputs reach both sides: enough are accepted to exercise the round trips, and
    // refusals of each kind the decoder gives.
    assert!(
        tally.accepted * 50 > tally.executions,
        "too few accepted: {}",
        tally.accepted
    );
    for reason in ["malformed", "invalid"] {
        assert!(
            tally.refused.get(reason).copied().unwrap_or(0) > 0,
            "no `{reason}` refusal"
        );
    }
}

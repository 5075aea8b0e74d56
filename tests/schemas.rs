//! schemas/ and the Rust validator give the same verdict on every example: simulated and
//! hand-written valid events, and every single-fault mutation of them.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Map, Value};

fn valid_examples() -> Vec<Value> {
    let t = "2026-03-01T09:00:00Z";
    let mut out = vec![
        json!({"id": "a1", "type": "touch", "lead_id": "L-1", "account_id": "A_7", "occurred_at": "2026-03-01T09:00:00.123+05:30",
               "producer": "hubspot-sync", "data": {"channel": "webinar", "campaign": "Q1 launch ✨", "content": "deck", "team": "sales"}}),
        json!({"id": "é".repeat(128), "type": "score", "lead_id": "L1", "occurred_at": t, "data": {"score": 1e2, "model": "fit", "reason": "visited pricing"}}),
        json!({"id": "a3", "type": "handoff", "lead_id": "L1", "occurred_at": t, "data": {"to": "marketing", "owner": "ana"}}),
        json!({"id": "a4", "type": "accept", "lead_id": "L1", "occurred_at": t,
               "data": {"stage": "opportunity", "owner": "ana", "opportunity_id": "O-1", "amount_minor": 1250000, "currency": "EUR"}}),
        json!({"id": "a5", "type": "rejection", "lead_id": "L1", "occurred_at": t, "data": {"reason": "no_budget", "note": "next year"}}),
        json!({"id": "a6", "type": "close", "lead_id": "L1", "occurred_at": t, "data": {"outcome": "lost", "reason": "price", "opportunity_id": "O-1"}}),
        json!({"id": "a7", "type": "close", "lead_id": "L1", "occurred_at": t, "data": {"outcome": "won", "amount_minor": 0, "currency": "USD"}}),
        json!({"id": "a8", "type": "spend", "occurred_at": t, "data": {"channel": "paid_search", "campaign": "brand", "amount_minor": 99, "currency": "USD"}}),
        json!({"id": "a9", "type": "rules", "occurred_at": t, "data": {"mql_score_threshold": -5, "handoff_sla_hours": 0.5,
               "attribution_lookback_days": 90, "time_decay_half_life_days": 7}}),
        json!({"id": "a10", "type": "retract", "lead_id": "L1", "occurred_at": t, "data": {"target_id": "a1", "reason": "test data"}}),
        json!({"id": "a11", "type": "retract", "occurred_at": t, "data": {"target_id": "a8"}}),
    ];
    let dir = support::TempDir::new("schema-corpus");
    let file = dir.path().join("sim.ndjson");
    let run = support::funnel(&[
        "simulate",
        "--leads",
        "150",
        "--seed",
        "5",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(run.status.success());
    out.extend(
        std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()),
    );
    out
}

/// Every single-fault mutation of one valid event.
fn mutations(event: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let top = event.as_object().unwrap();
    let with = |key: &str, value: Value| {
        let mut e = top.clone();
        e.insert(key.into(), value);
        Value::Object(e)
    };
    for key in top.keys() {
        let mut e = top.clone();
        e.remove(key);
        out.push(Value::Object(e));
    }
    for (key, value) in [
        ("id", json!("")),
        ("id", json!("x".repeat(129))),
        ("id", json!("bad\u{1}id")),
        ("id", json!(7)),
        ("type", json!("meeting")),
        ("extra", json!(1)),
        ("occurred_at", json!("2026-13-01T09:00:00Z")),
        ("occurred_at", json!("2026-03-01T09:00:00")),
        ("occurred_at", json!("2026-03-01")),
        ("occurred_at", json!(1_772_355_600)),
        ("occurred_at", json!("1969-12-31T23:59:59Z")),
        ("lead_id", json!("has space")),
        ("lead_id", json!("a.b")),
        ("lead_id", json!("L1")),
        ("lead_id", Value::Null),
        ("account_id", json!("x".repeat(129))),
        ("producer", json!("")),
        ("data", Value::Null),
        ("data", json!([])),
    ] {
        out.push(with(key, value));
    }
    let data: &Map<String, Value> = top["data"].as_object().unwrap();
    let with_data = |key: &str, value: Option<Value>| {
        let mut d = data.clone();
        match value {
            Some(v) => d.insert(key.into(), v),
            None => d.remove(key),
        };
        with("data", Value::Object(d))
    };
    for (key, value) in data {
        out.push(with_data(key, None));
        out.push(with_data(key, Some(Value::Null)));
        out.push(with_data(
            key,
            Some(if value.is_string() { json!(42) } else { json!("42") }),
        ));
        if value.is_string() {
            out.push(with_data(key, Some(json!(""))));
            out.push(with_data(key, Some(json!("nope"))));
            out.push(with_data(key, Some(json!("bad value.with dot"))));
        }
        if value.is_number() {
            out.push(with_data(key, Some(json!(-1))));
            out.push(with_data(key, Some(json!(0))));
            out.push(with_data(key, Some(json!(12.5))));
        }
    }
    for (key, value) in [
        ("unknown", json!(1)),
        ("currency", json!("usd")),
        ("amount_minor", json!(-1)),
        ("amount_minor", json!(5)),
        ("amount_minor", json!(1_000_000_000_000_000i64)),
        ("amount_minor", json!(1_000_000_000_000_001i64)),
        ("amount_minor", json!(4_611_686_018_427_387_904i64)),
    ] {
        out.push(with_data(key, Some(value)));
    }
    out
}

fn schema_verdicts(examples: &[Value]) -> Vec<Value> {
    let python = std::env::var("FUNNEL_PYTHON")
        .unwrap_or_else(|_| format!("{}/.tools/venv/bin/python", env!("CARGO_MANIFEST_DIR")));
    let script = format!("{}/scripts/check_schemas.py", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(&python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {python} (scripts/setup.sh installs it): {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input: String = examples.iter().map(|e| format!("{e}\n")).collect();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "check_schemas.py failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn schemas_and_the_rust_validator_agree_on_every_example() {
    let valid = valid_examples();
    let mut examples = valid.clone();
    let bases: Vec<&Value> = valid.iter().take(11).collect();
    for base in bases {
        examples.extend(mutations(base));
    }
    let verdicts = schema_verdicts(&examples);
    assert_eq!(verdicts.len(), examples.len());
    let mut rejected = 0;
    let mut disagreements = Vec::new();
    for (example, verdict) in examples.iter().zip(&verdicts) {
        let rust = funnel_core::Event::from_json(example.to_string().as_bytes());
        rejected += usize::from(rust.is_err());
        if rust.is_ok() != verdict["valid"].as_bool().unwrap() {
            disagreements.push(format!("{example}\n  rust: {rust:?}\n  schema: {}", verdict["errors"]));
        }
    }
    for v in &valid {
        assert!(
            funnel_core::Event::from_json(v.to_string().as_bytes()).is_ok(),
            "valid example refused: {v}"
        );
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    assert!(
        rejected > 300,
        "the corpus should hold many invalid examples, has {rejected}"
    );
}

//! `funnel import` of a crafted export: every entry is held to what live ingest would accept,
//! against the whole file (this batch's entries included), and a refused file leaves the data
//! dir as it was. The files are well chained (hashes computed here per `schemas/chain.md`),
//! so what refuses them is the check under test, not a broken link.

mod support;

use funnel_core::Event;
use funnel_ledger::canonical::{genesis, hex};
use funnel_ledger::entry_hash;
use serde_json::{json, Value};
use support::{funnel, TempDir};

const RECORDED_AT: i64 = 1_772_380_800_000_000; // 2026-03-01T16:00:00Z

fn touch(id: &str, lead: &str) -> Value {
    json!({"id": id, "type": "touch", "lead_id": lead, "occurred_at": "2026-03-01T09:00:00Z",
           "data": {"channel": "webinar"}})
}

fn retract(id: &str, lead: Option<&str>, target: &str) -> Value {
    let mut v = json!({"id": id, "type": "retract", "occurred_at": "2026-03-01T10:00:00Z",
                       "data": {"target_id": target}});
    if let Some(lead) = lead {
        v["lead_id"] = json!(lead);
    }
    v
}

fn won(id: &str, lead: &str, amount_minor: i64) -> Value {
    json!({"id": id, "type": "close", "lead_id": lead, "occurred_at": "2026-03-01T11:00:00Z",
           "data": {"outcome": "won", "amount_minor": amount_minor, "currency": "USD"}})
}

/// An export of `events`, chained from the genesis; `edit` may rewrite a line's text after
/// its hash is computed (to craft what no serialiser writes, such as a repeated key).
fn export(events: &[Value], edit: impl Fn(usize, String) -> String) -> String {
    let mut prev = genesis(None);
    let mut out = json!({"format": "funnel-ledger-export", "version": 2, "genesis": hex(&prev), "migrated_from": null})
        .to_string();
    out.push('\n');
    for (i, raw) in events.iter().enumerate() {
        let seq = i as u64 + 1;
        let recorded_at = RECORDED_AT + i as i64;
        let event = event_for_hash(raw);
        let hash = entry_hash(&prev, seq, recorded_at, &event);
        let line = json!({
            "seq": seq,
            "recorded_at": funnel_core::time::format_rfc3339(recorded_at),
            "stream_seq": seq,
            "prev_hash": hex(&prev),
            "hash": hex(&hash),
            "event": raw,
        });
        out.push_str(&edit(i, line.to_string()));
        out.push('\n');
        prev = hash;
    }
    out
}

/// The event whose hash links the line: the event itself, or, for one that validation refuses
/// (an amount above the limit), a stand-in; the import must refuse that line before it looks
/// at the link.
fn event_for_hash(raw: &Value) -> Event {
    Event::from_value(raw).unwrap_or_else(|_| Event::from_value(&touch("stand-in", "L0")).expect("stand-in"))
}

fn import(dir: &TempDir, name: &str, text: &str) -> (bool, String, String) {
    let file = dir.path().join(format!("{name}.ndjson"));
    std::fs::write(&file, text).expect("write export");
    let data = dir.path().join(name);
    let out = funnel(&[
        "import",
        "--json",
        "--data-dir",
        data.to_str().expect("utf-8 path"),
        "--file",
        file.to_str().expect("utf-8 path"),
    ]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Rewrites one line of an export after its hash is computed.
type Craft = fn(usize, String) -> String;
/// A refused file: name, events, line edit, the line refused, words the reason must contain.
type Case = (&'static str, Vec<Value>, Craft, u64, &'static [&'static str]);

#[test]
fn a_crafted_import_is_refused_as_live_ingest_would_refuse_it_and_leaves_nothing_behind() {
    let work = TempDir::new("crafted");
    let same = |_: usize, line: String| line;

    // Accepted: a retraction without lead_id whose target is earlier in the same batch is
    // filed under the target's lead, as live ingest files it.
    let good = [touch("t1", "L1"), touch("t2", "L2"), retract("r1", None, "t2")];
    let (ok, stdout, stderr) = import(&work, "good", &export(&good, same));
    assert!(ok, "{stderr}");
    let imported: Value = serde_json::from_str(&stdout).expect("import --json");
    assert_eq!(imported["imported"], json!(3));
    let data = work.path().join("good");
    let lead = funnel(&[
        "replay",
        "lead",
        "--lead",
        "L2",
        "--json",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(lead.status.success(), "{}", String::from_utf8_lossy(&lead.stderr));
    let lead: Value = serde_json::from_slice(&lead.stdout).expect("lead JSON");
    assert_eq!(lead["timeline"][0]["event"]["id"], json!("t2"), "{lead}");
    assert_eq!(lead["timeline"][0]["retracted_by"], json!(3), "{lead}");

    let keep: Craft = |_, line| line;
    let cases: Vec<Case> = vec![
        (
            "duplicate-id-in-one-batch",
            vec![touch("t1", "L1"), touch("t2", "L2"), touch("t1", "L3")],
            keep,
            4,
            &["t1", "twice"],
        ),
        (
            "retraction-of-nothing",
            vec![touch("t1", "L1"), retract("r1", None, "ghost")],
            keep,
            3,
            &["unknown_target", "ghost"],
        ),
        (
            "retraction-of-a-retraction",
            vec![touch("t1", "L1"), retract("r1", None, "t1"), retract("r2", None, "r1")],
            keep,
            4,
            &["unknown_target", "retractions cannot be retracted"],
        ),
        (
            "retraction-naming-another-lead",
            vec![touch("t1", "L1"), retract("r1", Some("L9"), "t1")],
            keep,
            3,
            &["invalid", "L9"],
        ),
        (
            "repeated-key",
            vec![touch("t1", "L1"), touch("t2", "L2")],
            |i, line| {
                if i == 1 {
                    line.replace(r#""channel":"webinar""#, r#""channel":"email","channel":"webinar""#)
                } else {
                    line
                }
            },
            3,
            &["duplicate key", "channel"],
        ),
        (
            "amount-above-the-limit",
            vec![touch("t1", "L1"), won("w1", "L1", 1 << 62)],
            keep,
            3,
            &["amount_minor", "limit"],
        ),
    ];
    for (name, events, craft, line, words) in cases {
        let (ok, _, stderr) = import(&work, name, &export(&events, craft));
        assert!(!ok, "{name}: a crafted file was imported");
        assert!(
            stderr.contains(&format!("line {line}")),
            "{name}: `{stderr}` names line {line}"
        );
        for word in words {
            assert!(stderr.contains(word), "{name}: `{stderr}` should say `{word}`");
        }
        assert!(stderr.contains("nothing was imported"), "{name}: {stderr}");
        // The data dir is as it was: the good file imports into it.
        let (ok, stdout, stderr) = import(&work, name, &export(&good, same));
        assert!(ok, "{name}: import after a refusal: {stderr}");
        let imported: Value = serde_json::from_str(&stdout).expect("import --json");
        assert_eq!(imported["imported"], json!(3), "{name}");
    }
}

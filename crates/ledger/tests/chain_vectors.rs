//! The pinned chain vectors (`schemas/chain-vectors.json`, computed by the independent Python
//! verifier's canonicaliser): any change to the bytes the chain hashes fails here.

use funnel_core::time::parse_rfc3339;
use funnel_core::Event;
use funnel_ledger::canonical::{entry_hash, hashed_bytes, hex, write_value};
use funnel_ledger::{import, Ledger};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/chain-vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read vectors")).expect("vectors parse")
}

fn canonical(value: &Value) -> String {
    let mut out = Vec::new();
    write_value(&mut out, value);
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn every_vector_hashes_to_its_pinned_bytes_and_hash() {
    let vectors = vectors();
    let entries = vectors["entries"].as_array().expect("entries");
    assert!(entries.len() >= 9, "one vector per event type at least");
    let mut prev = [0u8; 32];
    for v in entries {
        let seq = v["seq"].as_u64().expect("seq");
        let event = Event::from_value(&v["event"]).expect("vector event is valid");
        assert_eq!(
            canonical(&event.to_json()),
            canonical(&v["event"]),
            "seq {seq}: the vector's event is in contract form"
        );
        let recorded_at = parse_rfc3339(v["recorded_at"].as_str().expect("recorded_at")).expect("time");
        assert_eq!(hex(&prev), v["prev_hash"], "seq {seq}: prev_hash");
        let bytes = hashed_bytes(&prev, seq, recorded_at, &event);
        assert_eq!(
            String::from_utf8(bytes).expect("utf-8"),
            v["hashed"],
            "seq {seq}: hashed bytes"
        );
        let hash = entry_hash(&prev, seq, recorded_at, &event);
        assert_eq!(hex(&hash), v["hash"], "seq {seq}: hash");
        prev = hash;
    }
}

#[test]
fn the_vectors_as_an_export_import_to_the_same_head() {
    let vectors = vectors();
    let mut export = String::from("{\"format\":\"funnel-ledger-export\",\"version\":2,\"genesis\":\"");
    export.push_str(&"0".repeat(64));
    export.push_str("\",\"migrated_from\":null}\n");
    for v in vectors["entries"].as_array().expect("entries") {
        let line = serde_json::json!({
            "seq": v["seq"], "recorded_at": v["recorded_at"], "stream_seq": 0,
            "prev_hash": v["prev_hash"], "hash": v["hash"], "event": v["event"],
        });
        export.push_str(&line.to_string());
        export.push('\n');
    }
    let dir = std::env::temp_dir().join(format!("chain-vectors-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ledger = Ledger::open(&dir).expect("open");
    let head = import(&ledger, export.as_bytes(), |_| {}).expect("import");
    let last = vectors["entries"].as_array().and_then(|e| e.last()).expect("last");
    assert_eq!(hex(&head.hash), last["hash"]);
    let verification = ledger.verify(|_| {});
    assert_eq!(verification.first_bad, None);
    assert_eq!(verification.head, head);
    drop(ledger);
    let _ = std::fs::remove_dir_all(&dir);
}

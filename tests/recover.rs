//! A damaged ledger has a way back: `funnel recover` keeps it aside, salvages its verified
//! prefix, ingests again what JetStream still holds, and says exactly what was lost.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use support::{funnel, NatsServer, RawNats, Service, TempDir};

fn touch(n: u64) -> Value {
    json!({"id": format!("r{n}"), "type": "touch", "lead_id": format!("L{}", n % 7),
        "occurred_at": format!("2026-03-01T09:{:02}:00Z", n % 60), "data": {"channel": "webinar"}})
}

/// Flips one byte of the stored id `r{n}` in place in the ledger's blocks file, as a bad disk would.
fn damage(ledger: &std::path::Path, n: u64) {
    let path = ledger.join(funnel_ledger::BLOCKS_FILE);
    let mut bytes = std::fs::read(&path).expect("read the blocks file");
    let id = format!("r{n}");
    let needle: Vec<u8> = [&[id.len() as u8][..], id.as_bytes()].concat();
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("the id");
    bytes[at + needle.len() - 1] ^= 0x04;
    std::fs::write(&path, bytes).expect("write the blocks file");
}

#[test]
fn recover_salvages_the_verified_prefix_reingests_what_jetstream_holds_and_names_what_is_lost() {
    const EVENTS: u64 = 60;
    const BAD: u64 = 30; // ledger seq of the damaged entry (event r29, stream seq 30)
    const GONE: std::ops::RangeInclusive<u64> = 41..=45; // stream seqs JetStream no longer holds

    let nats = NatsServer::start();
    let data = TempDir::new("recover");
    let dir = data.path().to_str().expect("utf-8 path").to_owned();
    let mut service = Service::start(&nats, data.path());
    let mut raw = RawNats::connect(nats.port);
    for n in 0..EVENTS {
        raw.publish_event(&touch(n));
    }
    raw.flush();
    service.wait_for_seq(EVENTS, Duration::from_secs(30));
    service.stop();

    // The disk goes bad under seq 30, and the stream's retention has dropped stream seqs 41..=45.
    damage(&data.path().join("ledger"), BAD - 1);
    for seq in GONE {
        let reply = raw.request(
            "$JS.API.STREAM.MSG.DELETE.FUNNEL",
            json!({"seq": seq}).to_string().as_bytes(),
            1,
        );
        let reply: Value = serde_json::from_slice(&reply[0].1).expect("JetStream answer");
        assert_eq!(reply["success"], true, "{reply}");
    }
    assert_eq!(funnel(&["verify", "--data-dir", &dir]).status.code(), Some(3));

    let out = funnel(&["recover", "--data-dir", &dir, "--nats-url", &nats.url, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("recover --json");

    // Worked out by hand from the scenario: entries 1..=29 checked out; stream seqs 30..=60
    // are ingested again except the 5 retention dropped: 26 events, seqs 30..=55; the damaged
    // store's entries 41..=45 (events r40..r44) are lost for good; everything else is back.
    let lost_ids: Vec<String> = GONE.map(|s| format!("r{}", s - 1)).collect();
    assert_eq!(report["damaged"]["first_bad_seq"], BAD, "{report}");
    assert_eq!(report["damaged"]["head_seq"], EVENTS);
    assert_eq!(report["salvaged"]["to_seq"], BAD - 1);
    assert_eq!(report["reingested"]["entries"], EVENTS - (BAD - 1) - 5);
    assert_eq!(report["reingested"]["from_seq"], BAD);
    assert_eq!(report["reingested"]["to_seq"], EVENTS - 5);
    assert_eq!(report["lost"]["entries"], 5);
    assert_eq!(report["lost"]["ranges"], json!([[41, 45]]));
    assert_eq!(report["lost"]["ids"], json!(lost_ids));
    let kept = std::path::PathBuf::from(report["damaged"]["kept_at"].as_str().expect("kept_at"));
    assert!(
        kept.join(funnel_ledger::BLOCKS_FILE).exists() && kept.join(funnel_ledger::PLACES_DIR).is_dir(),
        "damaged store kept aside at {kept:?}"
    );

    // The new ledger checks out, holds every event the world still knows once, and is served.
    let verify = funnel(&["verify", "--data-dir", &dir, "--json"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    let export = data.path().join("export.ndjson");
    assert!(
        funnel(&["export", "--data-dir", &dir, "--out", export.to_str().expect("path")])
            .status
            .success()
    );
    let mut ids: BTreeMap<String, u32> = BTreeMap::new();
    for line in std::fs::read_to_string(&export).expect("export").lines().skip(1) {
        let entry: Value = serde_json::from_str(line).expect("line");
        *ids.entry(entry["event"]["id"].as_str().expect("id").to_owned())
            .or_default() += 1;
    }
    let expected: BTreeMap<String, u32> = (0..EVENTS)
        .map(|n| format!("r{n}"))
        .filter(|id| !lost_ids.contains(id))
        .map(|id| (id, 1))
        .collect();
    assert_eq!(ids, expected);

    // Serving resumes where recovery left off: a new event is seq 56, nothing comes twice.
    service.spawn();
    raw.publish_event(&touch(EVENTS));
    raw.flush();
    service.wait_for_seq(EVENTS - 5 + 1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(service.head_seq(), EVENTS - 5 + 1);

    // Recovering an intact ledger changes nothing.
    service.stop();
    let again = funnel(&["recover", "--data-dir", &dir, "--nats-url", &nats.url, "--json"]);
    assert!(again.status.success());
    let again: Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(again, json!({"intact": true, "head_seq": EVENTS - 5 + 1}));
}

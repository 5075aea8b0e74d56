//! An auditor's upgrade: a data dir written by format 1 of the ledger (tests/fixtures) is
//! refused with the command that migrates it; `funnel migrate` re-chains it under format 2 with
//! the old head recorded in the new chain; the answers do not change; and an export of it checks
//! out with the independent verifier (scripts/verify_export.py), while a tampered one does not.
//! And a JetStream consumer left by a version that acked message by message is replaced by one
//! that acks whole batches, resuming after its ack floor.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::{funnel, independent_verify, NatsServer, RawNats, Service, TempDir};

/// The format-1 head of the fixture, as `funnel verify` of that version printed it.
const V1_HEAD: &str = "9f68b05addb238a923eea652f52274d42d8f1201555fecdee3f2e8022f4e85cd";

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn without_log(mut answer: Value) -> Value {
    answer.as_object_mut().unwrap().remove("log");
    answer
}

fn json_of(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_format_1_data_dir_is_refused_then_migrated_with_its_history_provable() {
    let data = TempDir::new("v1");
    let dir = data.path().to_str().unwrap();
    let untar = Command::new("tar")
        .args([
            "-xzf",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1-ledger.tar.gz"),
            "-C",
            dir,
        ])
        .status()
        .unwrap();
    assert!(untar.success());

    // serve refuses, naming the command.
    let nats = NatsServer::start();
    let serve = funnel(&[
        "serve",
        "--nats-url",
        &nats.url,
        "--http",
        "127.0.0.1:0",
        "--data-dir",
        dir,
    ]);
    assert!(!serve.status.success());
    let said = String::from_utf8_lossy(&serve.stderr);
    assert!(said.contains(&format!("funnel migrate --data-dir {dir}")), "{said}");

    let migrated = json_of(&funnel(&["migrate", "--data-dir", dir, "--json"]));
    assert_eq!(migrated["migrated"], 226);
    assert_eq!(migrated["v1_log"]["hash"], V1_HEAD);
    assert!(data.path().join("ledger.v1").is_dir(), "the old store is kept");
    let again = funnel(&["migrate", "--data-dir", dir]);
    assert!(!again.status.success(), "a second migration is refused");

    let verified = json_of(&funnel(&["verify", "--data-dir", dir, "--json"]));
    assert_eq!(
        (verified["ok"].as_bool(), verified["checked"].as_u64()),
        (Some(true), Some(226))
    );
    assert_eq!(verified["log"], migrated["log"]);

    // Same answers as format 1 gave (only the log hash differs).
    let as_of = ["--as-of", "2026-09-01", "--data-dir", dir, "--json"];
    let mut args = vec![
        "replay",
        "funnel",
        "--from",
        "2026-06-01",
        "--to",
        "2026-08-01",
        "--by",
        "channel",
    ];
    args.extend(as_of);
    let funnel_now = json_of(&funnel(&args));
    assert_eq!(without_log(funnel_now.clone()), without_log(fixture("v1-funnel.json")));
    assert_eq!(funnel_now["log"], migrated["log"]);
    let mut args = vec!["replay", "attribution", "--model", "all"];
    args.extend(as_of);
    assert_eq!(
        without_log(json_of(&funnel(&args))),
        without_log(fixture("v1-attribution.json"))
    );

    // The export records the old head and verifies with code that is not ours.
    let export = data.path().join("export.ndjson");
    assert!(
        funnel(&["export", "--data-dir", dir, "--out", export.to_str().unwrap()])
            .status
            .success()
    );
    let text = std::fs::read_to_string(&export).unwrap();
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["migrated_from"]["hash"], V1_HEAD);
    assert_eq!(header["migrated_from"]["seq"], 226);
    let head = migrated["log"]["hash"].as_str().unwrap();
    assert_eq!(
        independent_verify(&export),
        (true, format!("OK head seq 226 hash {head}"))
    );

    // Tamper with one amount in line 101 (seq 100): both verifiers name seq 100.
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut entry: Value = serde_json::from_str(&lines[100]).unwrap();
    entry["event"]["occurred_at"] = Value::from("2026-06-02T00:00:00Z");
    lines[100] = entry.to_string();
    let tampered = data.path().join("tampered.ndjson");
    std::fs::write(&tampered, lines.join("\n") + "\n").unwrap();
    let (ok, said) = independent_verify(&tampered);
    assert!(!ok);
    assert_eq!(said, "BAD seq 100: hash does not match the entry's content");
    let replay = funnel(&["replay", "funnel", "--export", tampered.to_str().unwrap()]);
    assert!(!replay.status.success());
    assert!(
        String::from_utf8_lossy(&replay.stderr).contains("line 101"),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
}

/// The pinned vectors, written out as an export, check out with the independent verifier, and
/// one changed character in any entry is named by its seq.
#[test]
fn the_independent_verifier_agrees_with_the_pinned_vectors() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/chain-vectors.json");
    let vectors: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let entries = vectors["entries"].as_array().unwrap();
    let header = serde_json::json!({"format": "funnel-ledger-export", "version": 2, "genesis": "0".repeat(64), "migrated_from": null});
    let lines: Vec<String> = std::iter::once(header.to_string())
        .chain(entries.iter().map(|v| {
            serde_json::json!({"seq": v["seq"], "recorded_at": v["recorded_at"], "stream_seq": 0,
                               "prev_hash": v["prev_hash"], "hash": v["hash"], "event": v["event"]})
            .to_string()
        }))
        .collect();
    let dir = TempDir::new("vectors");
    let export = dir.path().join("vectors.ndjson");
    std::fs::write(&export, lines.join("\n") + "\n").unwrap();
    let last = entries.last().unwrap();
    assert_eq!(
        independent_verify(&export),
        (
            true,
            format!("OK head seq {} hash {}", last["seq"], last["hash"].as_str().unwrap())
        )
    );
    for seq in 1..=entries.len() {
        let mut tampered = lines.clone();
        // One letter of the event id: content the hash covers.
        tampered[seq] = tampered[seq].replacen("\"id\":\"evt-", "\"id\":\"evu-", 1);
        std::fs::write(&export, tampered.join("\n") + "\n").unwrap();
        assert_eq!(
            independent_verify(&export),
            (false, format!("BAD seq {seq}: hash does not match the entry's content"))
        );
    }
}

/// What JetStream's API answered, as JSON.
fn js_api(nats: &mut RawNats, subject: &str, request: Value) -> Value {
    let replies = nats.request(subject, request.to_string().as_bytes(), 1);
    let answer: Value = serde_json::from_slice(&replies[0].1).unwrap();
    assert!(answer.get("error").is_none(), "{subject}: {answer}");
    answer
}

#[test]
fn a_consumer_acking_each_message_is_replaced_and_resumes_after_its_ack_floor() {
    // The stream and durable consumer as an older version created them: acks per message.
    let nats_server = NatsServer::start();
    let mut nats = RawNats::connect(nats_server.port);
    js_api(
        &mut nats,
        "$JS.API.STREAM.CREATE.FUNNEL",
        serde_json::json!({"name": "FUNNEL", "subjects": ["funnel.events.>"], "storage": "file"}),
    );
    js_api(
        &mut nats,
        "$JS.API.CONSUMER.CREATE.FUNNEL.funnel-ingest",
        serde_json::json!({"stream_name": "FUNNEL", "config": {
            "durable_name": "funnel-ingest", "ack_policy": "explicit", "deliver_policy": "all"}}),
    );
    let touches: Vec<Value> = (1..=6)
        .map(|i| {
            serde_json::json!({"id": format!("t{i}"), "type": "touch", "lead_id": format!("L{i}"),
                "occurred_at": format!("2026-03-0{i}T10:00:00Z"), "producer": "hubspot-sync",
                "data": {"channel": "email"}})
        })
        .collect();
    for touch in &touches {
        nats.publish_event(touch);
    }
    nats.flush();
    // That version ingested and acked the first three, one by one, then stopped.
    let first = nats.request("$JS.API.CONSUMER.MSG.NEXT.FUNNEL.funnel-ingest", br#"{"batch": 3}"#, 3);
    for (ack_subject, payload) in &first {
        let event: Value = serde_json::from_slice(payload).unwrap();
        assert!(["t1", "t2", "t3"].contains(&event["id"].as_str().unwrap()), "{event}");
        nats.publish(ack_subject, &[], b"+ACK");
    }
    nats.flush();

    // This version takes over: the rest arrive, the acked three do not come again.
    let data = TempDir::new("ack-all");
    let service = Service::start(&nats_server, data.path());
    service.wait_for_seq(3, std::time::Duration::from_secs(20));
    let info = js_api(
        &mut nats,
        "$JS.API.CONSUMER.INFO.FUNNEL.funnel-ingest",
        serde_json::json!({}),
    );
    assert_eq!(info["config"]["ack_policy"], "all", "{info}");
    support::wait_for(
        std::time::Duration::from_secs(20),
        "the consumer's ack floor at 6",
        || {
            let info = js_api(
                &mut nats,
                "$JS.API.CONSUMER.INFO.FUNNEL.funnel-ingest",
                serde_json::json!({}),
            );
            info["ack_floor"]["stream_seq"] == 6 && info["num_ack_pending"] == 0
        },
    );
    assert_eq!(service.head_seq(), 3, "only the three never acked are in the ledger");
    for (i, touch) in touches.iter().enumerate() {
        let lead = touch["lead_id"].as_str().unwrap();
        let (status, _) = service.get(&format!("/v1/leads/{lead}"));
        assert_eq!(status, if i < 3 { 404 } else { 200 }, "lead {lead}");
    }
}

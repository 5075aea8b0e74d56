//! An auditor's upgrade: a data dir written by format 1 of the ledger (tests/fixtures) is
//! refused with the command that migrates it; `funnel migrate` re-chains it under format 2 with
//! the old head recorded in the new chain; the answers do not change; and an export of it checks
//! out with the independent verifier (scripts/verify_export.py), while a tampered one does not.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::{funnel, independent_verify, NatsServer, TempDir};

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

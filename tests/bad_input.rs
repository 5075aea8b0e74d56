//! Bad input lands in the DLQ with its reason and original bytes; the service stays up and
//! nothing valid is lost.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{NatsServer, RawNats, Service, TempDir};

/// (subject, headers, payload, expected reason, a word the error must contain)
type Case<'a> = (String, Vec<(&'a str, &'a str)>, Vec<u8>, &'a str, &'a str);

fn valid(id: &str, lead: &str) -> serde_json::Value {
    json!({"id": id, "type": "touch", "lead_id": lead, "occurred_at": "2026-03-01T09:00:00Z", "data": {"channel": "webinar"}})
}

#[test]
fn every_kind_of_bad_input_goes_to_the_dlq_with_its_reason() {
    let nats = NatsServer::start();
    let data = TempDir::new("dlq");
    let service = Service::start(&nats, data.path());
    let mut raw = RawNats::connect(nats.port);

    let nan_score = funnel_core::Event {
        id: "b-nan".into(),
        lead_id: Some("L1".into()),
        account_id: None,
        occurred_at: 1_772_355_600_000_000,
        producer: None,
        data: funnel_core::event::Data::Score {
            score: f64::NAN,
            model: None,
            reason: None,
        },
    };
    let long_note = "x".repeat(70 * 1024);
    let bad: Vec<Case> = vec![
        ("funnel.events.touch.L1".into(), vec![], b"{not json".to_vec(), "malformed", "JSON"),
        ("funnel.events.touch.L1".into(), vec![], b"[1,2]".to_vec(), "malformed", "object"),
        (
            "funnel.events.score.L1".into(),
            vec![],
            br#"{"id":"b-type","type":"score","lead_id":"L1","occurred_at":"2026-03-01T09:00:00Z","data":{"score":"high"}}"#.to_vec(),
            "invalid",
            "data.score",
        ),
        (
            "funnel.events.meeting.L1".into(),
            vec![],
            br#"{"id":"b-kind","type":"meeting","lead_id":"L1","occurred_at":"2026-03-01T09:00:00Z","data":{}}"#.to_vec(),
            "invalid",
            "meeting",
        ),
        (
            "funnel.events.score.L1".into(),
            vec![],
            br#"{"id":"b-inf","type":"score","lead_id":"L1","occurred_at":"2026-03-01T09:00:00Z","data":{"score":1e999}}"#.to_vec(),
            "invalid",
            "finite",
        ),
        (
            "funnel.events.score.L1".into(),
            vec![("Content-Type", funnel_producer::BINCODE)],
            funnel_producer::encode(&nan_score, funnel_producer::Encoding::Bincode),
            "invalid",
            "finite",
        ),
        (
            "funnel.events.touch.L1".into(),
            vec![],
            br#"{"id":"b-date","type":"touch","lead_id":"L1","occurred_at":"2026-13-01T09:00:00Z","data":{"channel":"web"}}"#.to_vec(),
            "invalid",
            "occurred_at",
        ),
        (
            "funnel.events.touch.L1".into(),
            vec![],
            br#"{"id":"b-tz","type":"touch","lead_id":"L1","occurred_at":"2026-03-01T09:00:00","data":{"channel":"web"}}"#.to_vec(),
            "invalid",
            "occurred_at",
        ),
        (
            "funnel.events.rejection.L1".into(),
            vec![],
            json!({"id": "b-big", "type": "rejection", "lead_id": "L1", "occurred_at": "2026-03-01T09:00:00Z",
                   "data": {"reason": "other", "note": long_note}})
            .to_string()
            .into_bytes(),
            "oversize",
            "limit",
        ),
        (
            // A repeated key is refused, not read as one of its values.
            "funnel.events.touch.L1".into(),
            vec![],
            br#"{"id":"b-dupkey","type":"touch","lead_id":"L1","occurred_at":"2026-03-01T09:00:00Z","data":{"channel":"email","channel":"webinar"}}"#.to_vec(),
            "malformed",
            "duplicate key `channel`",
        ),
        (
            // 2^62: two of them overflowed revenue and turned a linear credit negative.
            "funnel.events.close.L1".into(),
            vec![],
            br#"{"id":"b-huge","type":"close","lead_id":"L1","occurred_at":"2026-03-01T09:00:00Z","data":{"outcome":"won","amount_minor":4611686018427387904,"currency":"USD"}}"#.to_vec(),
            "invalid",
            "limit of 1000000000000000",
        ),
        (
            "funnel.events.spend.paid_search".into(),
            vec![],
            br#"{"id":"b-hugespend","type":"spend","occurred_at":"2026-03-01T09:00:00Z","data":{"channel":"paid_search","amount_minor":1000000000000001,"currency":"USD"}}"#.to_vec(),
            "invalid",
            "amount_minor",
        ),
        ("funnel.events.touch.L2".into(), vec![], valid("b-subj", "L1").to_string().into_bytes(), "subject_mismatch", "funnel.events.touch.L1"),
        (
            "funnel.events.touch.L1".into(),
            vec![],
            json!({"id": "v1", "type": "touch", "lead_id": "L1", "occurred_at": "2026-03-02T09:00:00Z", "data": {"channel": "webinar"}})
                .to_string()
                .into_bytes(),
            "id_conflict",
            "v1",
        ),
        (
            "funnel.events.retract.L1".into(),
            vec![],
            json!({"id": "b-ghost", "type": "retract", "lead_id": "L1", "occurred_at": "2026-03-03T09:00:00Z", "data": {"target_id": "nope"}})
                .to_string()
                .into_bytes(),
            "unknown_target",
            "nope",
        ),
        (
            "funnel.events.retract.L1".into(),
            vec![],
            json!({"id": "b-rr", "type": "retract", "lead_id": "L1", "occurred_at": "2026-03-03T09:00:00Z", "data": {"target_id": "r1"}})
                .to_string()
                .into_bytes(),
            "unknown_target",
            "r1",
        ),
    ];
    let good = [
        valid("v1", "L1"),
        valid("v2", "L2"),
        json!({"id": "r1", "type": "retract", "lead_id": "L2", "occurred_at": "2026-03-02T09:00:00Z", "data": {"target_id": "v2"}}),
        valid("v3", "L3"),
    ];
    // Valid events before and after, bad ones (each without Nats-Msg-Id, so JetStream keeps them) in between.
    raw.publish_event(&good[0]);
    raw.publish_event(&good[1]);
    raw.publish_event(&good[2]);
    raw.flush();
    service.wait_for_seq(3, Duration::from_secs(20));
    for (subject, headers, payload, _, _) in &bad {
        raw.publish(subject, headers, payload);
    }
    raw.publish_event(&good[3]);
    raw.flush();
    service.wait_for_seq(good.len() as u64, Duration::from_secs(20));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dlq = runtime.block_on(async {
        let client = async_nats::connect(&nats.url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream("FUNNEL_DLQ").await.unwrap();
        let mut records = Vec::new();
        for _ in 0..200 {
            let count = stream.get_info().await.unwrap().state.messages;
            if count >= bad.len() as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for seq in 1..=bad.len() as u64 {
            records.push(stream.get_raw_message(seq).await.unwrap());
        }
        records
    });
    assert_eq!(dlq.len(), bad.len());
    for (record, (subject, _, payload, reason, word)) in dlq.iter().zip(&bad) {
        assert_eq!(
            record.subject.as_str(),
            format!("funnel.dlq.{reason}"),
            "record for {subject}"
        );
        assert_eq!(
            record.payload.as_ref(),
            payload.as_slice(),
            "original bytes kept for {reason}"
        );
        let error = record
            .headers
            .get("Funnel-Error")
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        assert!(
            error.contains(word),
            "{reason}: error `{error}` should mention `{word}`"
        );
        assert_eq!(
            record.headers.get("Funnel-Subject").map(|v| v.as_str()),
            Some(subject.as_str())
        );
    }

    // Still up, every valid event stored once, the retraction applied, the chain intact.
    assert_eq!(service.head_seq(), good.len() as u64);
    let (_, l2) = service.get("/v1/leads/L2");
    assert_eq!(l2["timeline"][0]["retracted_by"], json!(3));
    let (_, verify) = service.get("/v1/audit/verify");
    assert_eq!(verify["ok"], json!(true));
    let (_, metrics) = service.get("/metrics");
    assert!(
        metrics
            .as_str()
            .unwrap_or("")
            .contains("funnel_dlq_total{reason=\"unknown_target\"} 2"),
        "{metrics}"
    );
}

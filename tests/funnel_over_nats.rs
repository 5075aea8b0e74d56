//! A known event set, published by a client that is not ours (raw NATS protocol), read back
//! over HTTP as exact, hand-worked funnel numbers and lead timelines.

mod support;

use serde_json::{json, Value};
use support::{NatsServer, RawNats, Service, TempDir};

fn ev(id: &str, kind: &str, lead: Option<&str>, at: &str, producer: &str, data: Value) -> Value {
    let mut e = json!({"id": id, "type": kind, "occurred_at": at, "producer": producer, "data": data});
    if let Some(lead) = lead {
        e["lead_id"] = json!(lead);
    }
    e
}

fn touch(id: &str, lead: &str, at: &str, channel: &str, campaign: Option<&str>) -> Value {
    let mut data = json!({"channel": channel});
    if let Some(c) = campaign {
        data["campaign"] = json!(c);
    }
    ev(id, "touch", Some(lead), at, "hubspot-sync", data)
}

fn score(id: &str, lead: &str, at: &str, score: f64) -> Value {
    ev(id, "score", Some(lead), at, "scoring-model", json!({"score": score}))
}

fn crm(id: &str, kind: &str, lead: &str, at: &str, data: Value) -> Value {
    ev(id, kind, Some(lead), at, "salesforce", data)
}

/// The fixture, in publishing order. Times are March 2026, UTC. Hand-worked facts per lead
/// (rules: threshold 50 by default, 70 from 03-10 on):
///
/// | lead | source (first touch)      | inquiry | mql            | sal  | sql  | opp  | won  | lost | stage       |
/// |------|---------------------------|---------|----------------|------|------|------|------|------|-------------|
/// | L1   | webinar / q1-launch       | 03-01   | 03-02 (60≥50)  | 03-03| 03-04| 03-06| 03-20| –    | won         |
/// | L2   | paid_search / brand       | 03-02   | 03-05 (handoff)| 03-05| –    | –    | –    | –    | nurture     |
/// | L3   | webinar / q1-launch       | 03-05   | – (55<70 on 03-11) | – | –  | –    | –    | –    | inquiry     |
/// | L4   | referral / partner        | 03-03   | 03-04 (80)     | 03-05| 03-06| –    | –    | 03-15| lost        |
/// | L5   | (none): a score only      | 03-04   | – (30)         | –    | –    | –    | –    | –    | inquiry     |
/// | L6   | paid_search / generic     | 03-09   | 03-12 (75≥70)  | 03-13| 03-14| 03-14| 03-25| –    | won         |
/// | L7   | direct                    | 02-25   | 03-02 (90)     | 03-03| –    | –    | –    | –    | sal         |
/// | L8   | webinar / q1-launch (late)| 03-06   | 03-07 (50≥50)  | –    | –    | –    | –    | –    | mql         |
/// | L9   | social / abm              | 03-04   | – (score retracted) | – | – | –    | –    | –    | inquiry     |
fn fixture() -> Vec<Value> {
    vec![
        touch("e01", "L1", "2026-03-01T09:00:00Z", "webinar", Some("q1-launch")),
        score("e02", "L1", "2026-03-02T09:00:00Z", 60.0),
        crm(
            "e03",
            "handoff",
            "L1",
            "2026-03-03T09:00:00Z",
            json!({"to": "sales", "owner": "ana"}),
        ),
        crm("e04", "accept", "L1", "2026-03-04T09:00:00Z", json!({"stage": "sql"})),
        crm(
            "e05",
            "accept",
            "L1",
            "2026-03-06T09:00:00Z",
            json!({"stage": "opportunity", "amount_minor": 100000, "currency": "USD"}),
        ),
        crm(
            "e06",
            "close",
            "L1",
            "2026-03-20T09:00:00Z",
            json!({"outcome": "won", "amount_minor": 100000, "currency": "USD"}),
        ),
        touch("e07", "L2", "2026-03-02T10:00:00Z", "paid_search", Some("brand")),
        score("e08", "L2", "2026-03-03T10:00:00Z", 40.0),
        crm(
            "e09",
            "handoff",
            "L2",
            "2026-03-05T10:00:00Z",
            json!({"to": "sales", "owner": "ben"}),
        ),
        crm(
            "e10",
            "rejection",
            "L2",
            "2026-03-06T10:00:00Z",
            json!({"reason": "icp_mismatch"}),
        ),
        touch("e11", "L3", "2026-03-05T11:00:00Z", "webinar", Some("q1-launch")),
        score("e12", "L3", "2026-03-11T11:00:00Z", 55.0),
        touch("e13", "L4", "2026-03-03T12:00:00Z", "referral", Some("partner")),
        score("e14", "L4", "2026-03-04T12:00:00Z", 80.0),
        crm("e15", "handoff", "L4", "2026-03-05T12:00:00Z", json!({"to": "sales"})),
        crm("e16", "accept", "L4", "2026-03-06T12:00:00Z", json!({"stage": "sql"})),
        crm(
            "e17",
            "close",
            "L4",
            "2026-03-15T12:00:00Z",
            json!({"outcome": "lost", "reason": "price"}),
        ),
        score("e18", "L5", "2026-03-04T13:00:00Z", 30.0),
        touch("e19", "L6", "2026-03-09T14:00:00Z", "paid_search", Some("generic")),
        score("e20", "L6", "2026-03-12T14:00:00Z", 75.0),
        crm("e21", "handoff", "L6", "2026-03-13T14:00:00Z", json!({"to": "sales"})),
        crm(
            "e22",
            "accept",
            "L6",
            "2026-03-14T14:00:00Z",
            json!({"stage": "opportunity"}),
        ),
        crm(
            "e23",
            "close",
            "L6",
            "2026-03-25T14:00:00Z",
            json!({"outcome": "won", "amount_minor": 50000, "currency": "USD"}),
        ),
        touch("e24", "L7", "2026-02-25T15:00:00Z", "direct", None),
        score("e25", "L7", "2026-03-02T15:00:00Z", 90.0),
        crm("e26", "handoff", "L7", "2026-03-03T15:00:00Z", json!({"to": "sales"})),
        touch("e27", "L8", "2026-03-07T16:00:00Z", "email", Some("newsletter")),
        score("e28", "L8", "2026-03-07T17:00:00Z", 50.0),
        touch("e29", "L9", "2026-03-04T18:00:00Z", "social", Some("abm")),
        score("e30", "L9", "2026-03-05T18:00:00Z", 65.0),
        ev(
            "e31",
            "retract",
            Some("L9"),
            "2026-03-06T18:00:00Z",
            "revops",
            json!({"target_id": "e30", "reason": "test account"}),
        ),
        // Arrives late: the threshold change, and L8's true first touch.
        ev(
            "e32",
            "rules",
            None,
            "2026-03-10T00:00:00+00:00",
            "revops",
            json!({"mql_score_threshold": 70}),
        ),
        touch("e33", "L8", "2026-03-06T16:00:00Z", "webinar", Some("q1-launch")),
    ]
}

fn counts(c: &Value) -> [u64; 7] {
    ["inquiry", "mql", "sal", "sql", "opportunity", "won", "lost"].map(|m| c[m].as_u64().unwrap_or(u64::MAX))
}

#[test]
fn hand_worked_funnel_over_raw_nats_and_http() {
    let nats = NatsServer::start();
    let data = TempDir::new("fixture");
    let service = Service::start(&nats, data.path());
    let mut raw = RawNats::connect(nats.port);
    let events = fixture();
    for e in &events {
        raw.publish_event(e);
    }
    raw.flush();
    service.wait_for_seq(events.len() as u64, std::time::Duration::from_secs(30));

    // All time, as of April: the cohort is every lead.
    let (status, all) = service.get("/v1/funnel?as_of=2026-04-01T00:00:00Z");
    assert_eq!(status, 200, "{all}");
    assert_eq!(counts(&all["total"]["period"]), [9, 6, 5, 3, 2, 2, 1]);
    assert_eq!(counts(&all["total"]["cohort"]), [9, 6, 5, 3, 2, 2, 1]);
    let rates = &all["total"]["rates"];
    assert_eq!(rates["mql_per_inquiry"], json!(6.0 / 9.0));
    assert_eq!(rates["sal_per_mql"], json!(5.0 / 6.0));
    assert_eq!(rates["sql_per_sal"], json!(3.0 / 5.0));
    assert_eq!(rates["opportunity_per_sql"], json!(2.0 / 3.0));
    assert_eq!(rates["win_rate"], json!(2.0 / 3.0));
    assert_eq!(rates["lead_to_customer"], json!(2.0 / 9.0));
    assert_eq!(all["log"]["seq"], json!(events.len()));

    // The first week of March: L7's inquiry (02-25) and L6's (03-09) fall outside;
    // L7's mql and sal fall inside. Cohort = L1 L2 L3 L4 L5 L8 L9.
    let (_, week) = service.get("/v1/funnel?from=2026-03-01&to=2026-03-08&as_of=2026-04-01T00:00:00Z");
    assert_eq!(counts(&week["total"]["period"]), [7, 5, 4, 2, 1, 0, 0]);
    assert_eq!(counts(&week["total"]["cohort"]), [7, 4, 3, 2, 1, 1, 1]);

    // By source channel (first touch by occurred_at, so L8 is webinar, not email).
    let (_, by) = service.get("/v1/funnel?by=channel&as_of=2026-04-01T00:00:00Z");
    let groups: Vec<(String, [u64; 7])> = by["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["key"].as_str().unwrap().to_owned(), counts(&g["cohort"])))
        .collect();
    assert_eq!(
        groups,
        vec![
            ("(none)".to_owned(), [1, 0, 0, 0, 0, 0, 0]),
            ("direct".to_owned(), [1, 1, 1, 0, 0, 0, 0]),
            ("paid_search".to_owned(), [2, 2, 2, 1, 1, 1, 0]),
            ("referral".to_owned(), [1, 1, 1, 1, 0, 0, 1]),
            ("social".to_owned(), [1, 0, 0, 0, 0, 0, 0]),
            ("webinar".to_owned(), [3, 2, 1, 1, 1, 1, 0]),
        ]
    );

    // Business time travel: as of 03-10, L1 is not won yet, L4 not lost, L6 only an inquiry.
    let (_, early) = service.get("/v1/funnel?as_of=2026-03-10T00:00:00Z");
    assert_eq!(counts(&early["total"]["period"]), [9, 5, 4, 2, 1, 0, 0]);

    // One lead: L8's late first touch sorts first; L9's retracted score is shown, marked.
    let (status, l8) = service.get("/v1/leads/L8?as_of=2026-04-01T00:00:00Z");
    assert_eq!(status, 200);
    assert_eq!(l8["stage"], "mql");
    assert_eq!(l8["source"]["channel"], "webinar");
    assert_eq!(l8["milestones"]["inquiry"], "2026-03-06T16:00:00Z");
    assert_eq!(l8["milestones"]["mql"], "2026-03-07T17:00:00Z");
    let ids: Vec<&str> = l8["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["event"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e33", "e27", "e28"]);
    assert_eq!(l8["timeline"][0]["seq"], json!(33));

    let (_, l1) = service.get("/v1/leads/L1?as_of=2026-04-01T00:00:00Z");
    assert_eq!(
        (l1["stage"].as_str(), l1["owner"].as_str(), l1["score"].as_f64()),
        (Some("won"), Some("ana"), Some(60.0))
    );
    assert_eq!(l1["milestones"]["won"], "2026-03-20T09:00:00Z");

    let (_, l9) = service.get("/v1/leads/L9?as_of=2026-04-01T00:00:00Z");
    assert_eq!(l9["stage"], "inquiry");
    assert_eq!(l9["milestones"]["mql"], Value::Null);
    let retracted: Vec<(&str, &Value)> = l9["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["event"]["id"].as_str().unwrap(), &i["retracted_by"]))
        .collect();
    assert_eq!(
        retracted,
        vec![("e29", &Value::Null), ("e30", &json!(31)), ("e31", &Value::Null)]
    );

    // The chain head over HTTP is the one every report carries.
    let (_, head) = service.get("/v1/audit/head");
    assert_eq!(head["log"], all["log"]);
    let (_, verify) = service.get("/v1/audit/verify");
    assert_eq!(
        (verify["ok"].as_bool(), verify["checked"].as_u64()),
        (Some(true), Some(events.len() as u64))
    );
}

#[test]
fn bad_query_parameters_are_json_4xx() {
    let nats = NatsServer::start();
    let data = TempDir::new("params");
    let service = Service::start(&nats, data.path());
    for (path, status, fragment) in [
        ("/v1/funnel?by=region", 400, "by"),
        ("/v1/funnel?from=2026-03-09&to=2026-03-01", 400, "from"),
        ("/v1/funnel?from=yesterday", 400, "from"),
        ("/v1/funnel?as_of=2026-03-01T00:00:00", 400, "as_of"),
        ("/v1/funnel?at_seq=-1", 400, "at_seq"),
        ("/v1/funnel?at_seq=99", 400, "past the log head"),
        ("/v1/funnel?form=2026-03-01", 400, "form"),
        ("/v1/funnel?by=channel&by=campaign", 400, "more than once"),
        ("/v1/funnel?within_days=-3", 400, "within_days"),
        ("/v1/funnel?within_days=99999", 400, "within_days"),
        (
            "/v1/funnel?interval=fortnight&from=2026-03-01&to=2026-04-01",
            400,
            "interval",
        ),
        ("/v1/funnel?interval=week", 400, "needs both from and to"),
        ("/v1/funnel?interval=day&from=2000-01-01&to=2026-04-01", 400, "buckets"),
        ("/v1/leads/nobody", 404, "nobody"),
        ("/v1/leads/bad%20id", 400, "lead_id"),
        ("/v1/nothing", 404, "no report"),
        ("/v1/audit/nothing", 404, "endpoint"),
        ("/v1/velocity?by=channel", 400, "by"),
        ("/v1/sla?to=2026-13-01", 400, "to"),
        ("/v1/rejections?by=producer", 400, "by"),
        ("/v1/rejections?known_at=nope", 400, "known_at"),
        ("/v1/cost?by=producer", 400, "by"),
        ("/v1/plan", 400, "revenue_target_minor"),
        (
            "/v1/plan?revenue_target_minor=-5&currency=USD",
            400,
            "revenue_target_minor",
        ),
        (
            "/v1/plan?revenue_target_minor=12.5&currency=USD",
            400,
            "revenue_target_minor",
        ),
        ("/v1/plan?revenue_target_minor=100&currency=usd", 400, "currency"),
        ("/v1/plan?revenue_target_minor=100", 400, "currency"),
    ] {
        let (got, body) = service.get(path);
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(
            body["error"]["code"].as_str().map(|c| !c.is_empty()),
            Some(true),
            "{path}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains(fragment),
            "{path}: message `{message}` should mention `{fragment}`"
        );
    }
}

#[test]
fn emit_publishes_bincode_and_json_alike_and_refuses_bad_lines_locally() {
    let nats = NatsServer::start();
    let data = TempDir::new("emit");
    let service = Service::start(&nats, data.path());
    let events: Vec<Value> = fixture().into_iter().take(6).collect();
    let file = data.path().join("in.ndjson");
    let mut text: String = events.iter().map(|e| format!("{e}\n")).collect();
    text.push_str("{\"id\": \"oops\", \"type\": \"touch\"}\n");
    std::fs::write(&file, text).unwrap();

    let out = support::funnel(&[
        "emit",
        "--bincode",
        "--nats-url",
        &nats.url,
        "--file",
        file.to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "a refused line makes emit fail after publishing the rest"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 7") && stderr.contains("occurred_at"), "{stderr}");

    service.wait_for_seq(6, std::time::Duration::from_secs(20));
    let (_, lead) = service.get("/v1/leads/L1?as_of=2026-04-01T00:00:00Z");
    let stored: Vec<&Value> = lead["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["event"])
        .collect();
    // What bincode carried is exactly what was written as JSON (team defaults to marketing).
    let mut expected = events.clone();
    expected[0]["data"]["team"] = json!("marketing");
    assert_eq!(stored, expected.iter().collect::<Vec<_>>());
}

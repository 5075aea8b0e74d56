//! The auditor's workflow: attribution and explain over HTTP, then offline from two exports of
//! the same log: byte-identical answers that name the chain head they were computed from.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{funnel, NatsServer, RawNats, Service, TempDir};

const AS_OF: &str = "2026-08-01T00:00:00Z";

fn event(id: &str, kind: &str, lead: &str, when: &str, data: Value) -> Value {
    json!({"id": id, "type": kind, "lead_id": lead, "occurred_at": when, "data": data})
}

/// D1: webinar (first, lead) → email (opportunity) → direct (last, close), won 100 USD.
/// D2: paid only, won 1000 EUR. D3: no touches, won 50 USD. D4: webinar, lost.
fn fixture() -> Vec<Value> {
    vec![
        event(
            "d1-t1",
            "touch",
            "D1",
            "2026-07-01T00:00:00Z",
            json!({"channel": "webinar", "campaign": "w1"}),
        ),
        event("d1-s", "score", "D1", "2026-07-02T00:00:00Z", json!({"score": 60})),
        event(
            "d1-t2",
            "touch",
            "D1",
            "2026-07-03T00:00:00Z",
            json!({"channel": "email", "campaign": "news"}),
        ),
        event("d1-h", "handoff", "D1", "2026-07-04T00:00:00Z", json!({"to": "sales"})),
        event(
            "d1-a",
            "accept",
            "D1",
            "2026-07-05T00:00:00Z",
            json!({"stage": "opportunity"}),
        ),
        event(
            "d1-t3",
            "touch",
            "D1",
            "2026-07-06T00:00:00Z",
            json!({"channel": "direct"}),
        ),
        event(
            "d1-w",
            "close",
            "D1",
            "2026-07-10T00:00:00Z",
            json!({"outcome": "won", "amount_minor": 100, "currency": "USD"}),
        ),
        event(
            "d2-t1",
            "touch",
            "D2",
            "2026-07-01T00:00:00Z",
            json!({"channel": "paid_search", "campaign": "p1"}),
        ),
        event(
            "d2-w",
            "close",
            "D2",
            "2026-07-08T00:00:00Z",
            json!({"outcome": "won", "amount_minor": 1000, "currency": "EUR"}),
        ),
        event("d3-s", "score", "D3", "2026-07-01T00:00:00Z", json!({"score": 10})),
        event(
            "d3-w",
            "close",
            "D3",
            "2026-07-09T00:00:00Z",
            json!({"outcome": "won", "amount_minor": 50, "currency": "USD"}),
        ),
        event(
            "d4-t1",
            "touch",
            "D4",
            "2026-07-01T00:00:00Z",
            json!({"channel": "webinar", "campaign": "w1"}),
        ),
        event(
            "d4-l",
            "close",
            "D4",
            "2026-07-09T00:00:00Z",
            json!({"outcome": "lost"}),
        ),
    ]
}

#[test]
fn attribution_and_explain_agree_live_offline_and_across_exports() {
    let nats = NatsServer::start();
    let data = TempDir::new("attr");
    let mut service = Service::start(&nats, data.path());
    let events = fixture();
    let mut raw = RawNats::connect(nats.port);
    for e in &events {
        raw.publish_event(e);
    }
    raw.flush();
    service.wait_for_seq(events.len() as u64, Duration::from_secs(30));

    let (status, all) = service.get(&format!("/v1/attribution?model=all&as_of={AS_OF}"));
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["models"].as_array().unwrap().len(), 12);
    assert_eq!(
        all["totals"],
        json!([{"currency": "EUR", "deals": 1, "amount_minor": 1000}, {"currency": "USD", "deals": 2, "amount_minor": 150}])
    );
    // Every model's column sums to the deal totals of its currency.
    for model in all["models"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()) {
        for (currency, total) in [("EUR", 1000), ("USD", 150)] {
            let sum: i64 = all["rows"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["currency"] == currency)
                .map(|r| r["credits_minor"][model].as_i64().unwrap())
                .sum();
            assert_eq!(sum, total, "{model} {currency}");
        }
    }
    // u_shaped by channel (D1: webinar .8, email .1, direct .1 of 100; D3's 50 to (none)).
    let (_, u) = service.get(&format!("/v1/attribution?model=u_shaped&as_of={AS_OF}"));
    let rows: Vec<(&str, &str, i64)> = u["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap(),
                r["currency"].as_str().unwrap(),
                r["credits_minor"]["u_shaped"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("(none)", "USD", 50),
            ("direct", "USD", 10),
            ("email", "USD", 10),
            ("paid_search", "EUR", 1000),
            ("webinar", "USD", 80)
        ]
    );
    // The window picks deals by close time: only D2 closed before 07-09.
    let (_, early) = service.get(&format!("/v1/attribution?model=linear&to=2026-07-09&as_of={AS_OF}"));
    assert_eq!(
        early["totals"],
        json!([{"currency": "EUR", "deals": 1, "amount_minor": 1000}])
    );

    let (_, explained) = service.get(&format!("/v1/attribution/explain/D1?as_of={AS_OF}"));
    let deal = &explained["deals"][0];
    assert_eq!(
        (
            deal["event_id"].as_str(),
            deal["seq"].as_u64(),
            deal["amount_minor"].as_i64()
        ),
        (Some("d1-w"), Some(7), Some(100))
    );
    assert_eq!(
        deal["rules_in_force"],
        json!({"attribution_lookback_days": 365.0, "time_decay_half_life_days": 7.0})
    );
    let touches: Vec<(&str, u64, Value)> = deal["touches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["event_id"].as_str().unwrap(),
                t["seq"].as_u64().unwrap(),
                t["roles"].clone(),
            )
        })
        .collect();
    assert_eq!(
        touches,
        vec![
            ("d1-t1", 1, json!(["first", "lead"])),
            ("d1-t2", 3, json!(["opportunity"])),
            ("d1-t3", 6, json!(["last", "close"])),
        ]
    );
    assert_eq!(
        deal["touches"][1]["models"]["w_shaped"],
        json!({"weight": "3/10", "weight_decimal": 0.3, "credit_minor": 30})
    );
    assert_eq!(explained["log"], all["log"]);
    let (status, bad) = service.get("/v1/attribution?model=shapely");
    assert_eq!((status, bad["error"]["code"].as_str()), (400, Some("bad_parameter")));
    let (status, _) = service.get("/v1/attribution/explain/nobody");
    assert_eq!(status, 404);

    let live_attribution = service.get_text(&format!("/v1/attribution?as_of={AS_OF}")).1;
    let live_explain = service.get_text(&format!("/v1/attribution/explain/D1?as_of={AS_OF}")).1;
    let url = format!("http://{}", service.http);
    let via_cli = funnel(&["explain", "D1", "--url", &url, "--as-of", AS_OF, "--json"]);
    assert_eq!(String::from_utf8(via_cli.stdout).unwrap().trim_end(), live_explain);
    let at_9 = service.get_text(&format!("/v1/attribution?as_of={AS_OF}&at_seq=9")).1;
    service.stop();

    // Two parties export the same log and replay it: same bytes, same head.
    let work = TempDir::new("attr-work");
    let dir = data.path().to_str().unwrap();
    let (a, b, prefix) = (
        work.path().join("a.ndjson"),
        work.path().join("b.ndjson"),
        work.path().join("p.ndjson"),
    );
    for (file, extra) in [(&a, None), (&b, None), (&prefix, Some("9"))] {
        let mut args = vec!["export", "--data-dir", dir, "--out", file.to_str().unwrap()];
        if let Some(seq) = extra {
            args.extend(["--at-seq", seq]);
        }
        assert!(funnel(&args).status.success());
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let offline = |args: &[&str]| {
        let out = funnel(args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
    };
    for source in [
        ["--export", a.to_str().unwrap()],
        ["--export", b.to_str().unwrap()],
        ["--data-dir", dir],
    ] {
        let attribution = offline(&["attribution", "--json", "--as-of", AS_OF, source[0], source[1]]);
        assert_eq!(attribution, live_attribution);
        let explain = offline(&["explain", "D1", "--json", "--as-of", AS_OF, source[0], source[1]]);
        assert_eq!(explain, live_explain);
    }
    assert_eq!(
        offline(&[
            "attribution",
            "--json",
            "--as-of",
            AS_OF,
            "--export",
            prefix.to_str().unwrap()
        ]),
        at_9
    );
    let report: Value = serde_json::from_str(&live_attribution).unwrap();
    let head = funnel(&["verify", "--json", "--data-dir", dir]);
    let head: Value = serde_json::from_slice(&head.stdout).unwrap();
    assert_eq!(report["log"], head["log"]);
    // People get a table.
    let table = offline(&[
        "attribution",
        "--as-of",
        AS_OF,
        "--model",
        "linear,markov",
        "--data-dir",
        dir,
    ]);
    assert!(
        table.contains("linear") && table.contains("markov") && table.contains("webinar"),
        "{table}"
    );
}

//! Every report of DESIGN.md §5 on one hand-worked fixture, published over raw NATS and read
//! back over HTTP; time travel by log position and recording time; offline replay and the
//! `funnel report` CLI give the service's bytes.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{funnel, NatsServer, RawNats, Service, TempDir};

const AS_OF: &str = "2026-05-01T00:00:00Z";

/// (key, spend, customers, cost per customer, roi) of one cost row.
type CostLine<'a> = (&'a str, i64, u64, Option<i64>, Option<f64>);

fn at(day: u32, hour: u32) -> String {
    format!("2026-04-{day:02}T{hour:02}:00:00Z")
}

fn lead_event(id: &str, kind: &str, lead: &str, when: String, data: Value) -> Value {
    json!({"id": id, "type": kind, "lead_id": lead, "occurred_at": when, "data": data})
}

fn touch(id: &str, lead: &str, when: String, channel: &str, campaign: Option<&str>) -> Value {
    let mut data = json!({"channel": channel});
    if let Some(c) = campaign {
        data["campaign"] = json!(c);
    }
    lead_event(id, "touch", lead, when, data)
}

fn spend(id: &str, when: String, channel: &str, campaign: Option<&str>, minor: i64, currency: &str) -> Value {
    let mut data = json!({"channel": channel, "amount_minor": minor, "currency": currency});
    if let Some(c) = campaign {
        data["campaign"] = json!(c);
    }
    json!({"id": id, "type": "spend", "occurred_at": when, "data": data})
}

/// Twelve leads in April 2026 (UTC, threshold 50; SLA 24 h until 04-20, 48 h from then on).
///
/// | lead | source        | inq   | mql        | sal (handoff) | answer            | sql   | opp   | close            |
/// |------|---------------|-------|------------|---------------|-------------------|-------|-------|------------------|
/// | A1   | webinar/w1    | 01 00 | 02 00 (60) | 03 00         | accept 03 12 (12h)| 03 12 | 05 00 | won 11 00, 30000 USD |
/// | A2   | webinar/w1    | 02 00 | 02 12 (70) | 04 00         | accept opp 05 06 (30h, late) | 05 06 | 05 06 | won 22 06, 50000 USD |
/// | A3   | paid/p1       | 03 00 | 04 00 (handoff) | 04 00    | icp_mismatch 04 06 (6h) | – | –   | –                |
/// | A4   | paid/p1       | 03 00 | 05 00 (55) | 06 00; again 09 00 | icp_mismatch 08 00 (48h, late); 2nd never (overdue) | – | – | – |
/// | A5   | paid/p2       | 04 00 | 04 06 (90) | 04 12         | accept 05 12 (24h, in SLA) | 05 12 | – | lost 15 00  |
/// | A6   | referral      | 05 00 | 06 00 (80) | 06 12         | accept 06 18 (6h) | 06 18 | 08 18 | won 16 18, 20000 EUR |
/// | A7   | referral      | 06 00 | –          | –             | no_budget 07 00 (no handoff) | – | – | –          |
/// | A8   | (none)        | 07 00 (score 40) | – | –           | –                 | –     | –     | –                |
/// | A9   | webinar/w2    | 08 00 | 09 00 (65) | 29 00         | none; deadline 05-01 00 (48h): open in SLA | – | – | – |
/// | A10  | webinar/w2    | 10 00 | 30 12 (handoff) | 30 12    | none; deadline 05-02 12: open in SLA | – | – | –  |
/// | A11  | paid/p1       | 10 00 | 11 00 (75) | 12 00         | accept opp 12 06 (6h) | 12 06 | 12 06 | won 20 06, 40000 USD |
/// | A12  | paid/p2       | 12 00 | – (30)     | –             | bad_timing 14 00 (no handoff) | – | – | –          |
///
/// Spend: webinar/w1 10000 USD, webinar/w2 6001 USD, paid/p1 8000 USD, paid/p2 4000 USD,
/// referral 3000 EUR, and paid/p1 99999 USD that is retracted.
fn fixture() -> Vec<Value> {
    let sales = json!({"to": "sales"});
    vec![
        spend("s1", at(1, 0), "webinar", Some("w1"), 10_000, "USD"),
        spend("s2", at(8, 0), "webinar", Some("w2"), 6_001, "USD"),
        spend("s3", at(1, 0), "paid_search", Some("p1"), 8_000, "USD"),
        spend("s4", at(1, 0), "paid_search", Some("p2"), 4_000, "USD"),
        spend("s5", at(1, 0), "referral", None, 3_000, "EUR"),
        spend("s6", at(2, 0), "paid_search", Some("p1"), 99_999, "USD"),
        json!({"id": "s6-void", "type": "retract", "occurred_at": at(3, 0), "data": {"target_id": "s6", "reason": "double booked"}}),
        json!({"id": "sla48", "type": "rules", "occurred_at": at(20, 0), "data": {"handoff_sla_hours": 48}}),
        touch("a1-1", "A1", at(1, 0), "webinar", Some("w1")),
        lead_event("a1-2", "score", "A1", at(2, 0), json!({"score": 60})),
        lead_event("a1-3", "handoff", "A1", at(3, 0), sales.clone()),
        lead_event("a1-4", "accept", "A1", at(3, 12), json!({"stage": "sql"})),
        lead_event("a1-5", "accept", "A1", at(5, 0), json!({"stage": "opportunity"})),
        lead_event(
            "a1-6",
            "close",
            "A1",
            at(11, 0),
            json!({"outcome": "won", "amount_minor": 30_000, "currency": "USD"}),
        ),
        touch("a2-1", "A2", at(2, 0), "webinar", Some("w1")),
        lead_event("a2-2", "score", "A2", at(2, 12), json!({"score": 70})),
        lead_event("a2-3", "handoff", "A2", at(4, 0), sales.clone()),
        lead_event("a2-4", "accept", "A2", at(5, 6), json!({"stage": "opportunity"})),
        lead_event(
            "a2-5",
            "close",
            "A2",
            at(22, 6),
            json!({"outcome": "won", "amount_minor": 50_000, "currency": "USD"}),
        ),
        touch("a3-1", "A3", at(3, 0), "paid_search", Some("p1")),
        lead_event("a3-2", "handoff", "A3", at(4, 0), sales.clone()),
        lead_event("a3-3", "rejection", "A3", at(4, 6), json!({"reason": "icp_mismatch"})),
        touch("a4-1", "A4", at(3, 0), "paid_search", Some("p1")),
        lead_event("a4-2", "score", "A4", at(5, 0), json!({"score": 55})),
        lead_event("a4-3", "handoff", "A4", at(6, 0), sales.clone()),
        lead_event("a4-4", "rejection", "A4", at(8, 0), json!({"reason": "icp_mismatch"})),
        lead_event("a4-5", "handoff", "A4", at(9, 0), sales.clone()),
        touch("a5-1", "A5", at(4, 0), "paid_search", Some("p2")),
        lead_event("a5-2", "score", "A5", at(4, 6), json!({"score": 90})),
        lead_event("a5-3", "handoff", "A5", at(4, 12), sales.clone()),
        lead_event("a5-4", "accept", "A5", at(5, 12), json!({"stage": "sql"})),
        lead_event("a5-5", "close", "A5", at(15, 0), json!({"outcome": "lost"})),
        touch("a6-1", "A6", at(5, 0), "referral", None),
        lead_event("a6-2", "score", "A6", at(6, 0), json!({"score": 80})),
        lead_event("a6-3", "handoff", "A6", at(6, 12), sales.clone()),
        lead_event("a6-4", "accept", "A6", at(6, 18), json!({"stage": "sql"})),
        lead_event("a6-5", "accept", "A6", at(8, 18), json!({"stage": "opportunity"})),
        lead_event(
            "a6-6",
            "close",
            "A6",
            at(16, 18),
            json!({"outcome": "won", "amount_minor": 20_000, "currency": "EUR"}),
        ),
        touch("a7-1", "A7", at(6, 0), "referral", None),
        lead_event("a7-2", "rejection", "A7", at(7, 0), json!({"reason": "no_budget"})),
        lead_event("a8-1", "score", "A8", at(7, 0), json!({"score": 40})),
        touch("a9-1", "A9", at(8, 0), "webinar", Some("w2")),
        lead_event("a9-2", "score", "A9", at(9, 0), json!({"score": 65})),
        lead_event("a9-3", "handoff", "A9", at(29, 0), sales.clone()),
        touch("a10-1", "A10", at(10, 0), "webinar", Some("w2")),
        lead_event("a10-2", "handoff", "A10", at(30, 12), sales.clone()),
        touch("a11-1", "A11", at(10, 0), "paid_search", Some("p1")),
        lead_event("a11-2", "score", "A11", at(11, 0), json!({"score": 75})),
        lead_event("a11-3", "handoff", "A11", at(12, 0), sales),
        lead_event("a11-4", "accept", "A11", at(12, 6), json!({"stage": "opportunity"})),
        lead_event(
            "a11-5",
            "close",
            "A11",
            at(20, 6),
            json!({"outcome": "won", "amount_minor": 40_000, "currency": "USD"}),
        ),
        touch("a12-1", "A12", at(12, 0), "paid_search", Some("p2")),
        lead_event("a12-2", "score", "A12", at(13, 0), json!({"score": 30})),
        lead_event("a12-3", "rejection", "A12", at(14, 0), json!({"reason": "bad_timing"})),
    ]
}

/// (count, mean, median, p90) of a stats object.
fn stats(v: &Value) -> (u64, f64, f64, f64) {
    (
        v["count"].as_u64().unwrap(),
        v["mean"].as_f64().unwrap(),
        v["median"].as_f64().unwrap(),
        v["p90"].as_f64().unwrap(),
    )
}

fn published(nats: &NatsServer, events: &[Value]) {
    let mut raw = RawNats::connect(nats.port);
    for e in events {
        raw.publish_event(e);
    }
    raw.flush();
}

#[test]
fn every_report_matches_the_hand_worked_fixture() {
    let nats = NatsServer::start();
    let data = TempDir::new("reports");
    let service = Service::start(&nats, data.path());
    let events = fixture();
    published(&nats, &events);
    service.wait_for_seq(events.len() as u64, Duration::from_secs(30));

    // Velocity. Cycle (inquiry→won): A1 10, A2 20.25, A6 11.75, A11 10.25 days.
    let (status, v) = service.get(&format!("/v1/velocity?as_of={AS_OF}"));
    assert_eq!(status, 200, "{v}");
    assert_eq!(stats(&v["cycle_days"]), (4, 52.25 / 4.0, (10.25 + 11.75) / 2.0, 20.25));
    let stage = |i: usize| stats(&v["stages"][i]["days"]);
    // inquiry→mql: 1, .5, 1, 2, .25, 1, 1, 20.5, 1 (A1 A2 A3 A4 A5 A6 A9 A10 A11).
    assert_eq!(stage(0), (9, 28.25 / 9.0, 1.0, 20.5));
    // mql→sal: 1, 1.5, 0, 1, .25, .5, 20, 0, 1.
    assert_eq!(stage(1), (9, 25.25 / 9.0, 1.0, 20.0));
    // sal→sql: A1 .5, A2 1.25, A5 1, A6 .25, A11 .25.
    assert_eq!(stage(2), (5, 3.25 / 5.0, 0.5, 1.25));
    // sql→opportunity: A1 1.5, A2 0, A6 2, A11 0.
    assert_eq!(stage(3), (4, 3.5 / 4.0, 0.75, 2.0));
    // opportunity→won: A1 6, A2 17, A6 8, A11 8.
    assert_eq!(stage(4), (4, 39.0 / 4.0, 8.0, 17.0));
    assert_eq!(
        (v["stages"][4]["from"].as_str(), v["stages"][4]["to"].as_str()),
        (Some("opportunity"), Some("won"))
    );
    // Won from 04-15 on: A2, A6, A11.
    let (_, late) = service.get(&format!("/v1/velocity?from=2026-04-15&as_of={AS_OF}"));
    assert_eq!(stats(&late["cycle_days"]), (3, 42.25 / 3.0, 11.75, 20.25));

    // SLA: 10 handoffs. In SLA: A1 12h, A3 6h, A5 24h (on the deadline), A6 6h, A11 6h.
    // Late: A2 30h, A4 48h. Overdue: A4's second (04-09, 24 h). Open in SLA: A9 and A10,
    // whose deadlines use the 48 h in force from 04-20.
    let (_, sla) = service.get(&format!("/v1/sla?as_of={AS_OF}"));
    let counts = |s: &Value| {
        [
            "handoffs",
            "answered_in_sla",
            "answered_late",
            "open_overdue",
            "open_in_sla",
            "breached",
        ]
        .map(|k| s[k].as_u64().unwrap())
    };
    assert_eq!(counts(&sla), [10, 5, 2, 1, 2, 3]);
    // Response hours sorted: 6 6 6 12 24 30 48 → p50 rank 4, p90 rank 7.
    assert_eq!(
        (sla["response_hours_p50"].as_f64(), sla["response_hours_p90"].as_f64()),
        (Some(12.0), Some(48.0))
    );
    // As of 04-30: A10's handoff has not happened yet.
    let (_, sla_early) = service.get("/v1/sla?as_of=2026-04-30T00:00:00Z");
    assert_eq!(counts(&sla_early), [9, 5, 2, 1, 1, 3]);

    // Rejections: A3 and A4 icp_mismatch (paid_search/p1), A7 no_budget (referral), A12 bad_timing (paid_search/p2).
    let (_, r) = service.get(&format!("/v1/rejections?by=channel&as_of={AS_OF}"));
    assert_eq!(r["total"]["count"], json!(4));
    assert_eq!(
        (
            &r["total"]["by_reason"]["icp_mismatch"],
            &r["total"]["by_reason"]["no_budget"],
            &r["total"]["by_reason"]["bad_timing"],
            &r["total"]["by_reason"]["other"]
        ),
        (&json!(2), &json!(1), &json!(1), &json!(0))
    );
    let groups: Vec<(&str, u64)> = r["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["key"].as_str().unwrap(), g["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(groups, [("paid_search", 3), ("referral", 1)]);
    assert_eq!(
        r["lead_guarantee"],
        json!([{"channel": "paid_search", "campaign": "p1", "credits": 2}])
    );

    // Cost by channel (the retracted 99999 spend is gone). Webinar: 16001 spend, 2 customers,
    // 8000.5 → 8001 per customer, 80000 revenue.
    let (_, cost) = service.get(&format!("/v1/cost?as_of={AS_OF}"));
    assert_eq!(cost["by"], "channel");
    assert_eq!(
        cost["rows"],
        json!([
            {"key": "paid_search", "currency": "USD", "spend_minor": 12000, "customers": 1, "cost_per_customer_minor": 12000,
             "revenue_minor": 40000, "roi": 28000.0 / 12000.0},
            {"key": "referral", "currency": "EUR", "spend_minor": 3000, "customers": 1, "cost_per_customer_minor": 3000,
             "revenue_minor": 20000, "roi": 17000.0 / 3000.0},
            {"key": "webinar", "currency": "USD", "spend_minor": 16001, "customers": 2, "cost_per_customer_minor": 8001,
             "revenue_minor": 80000, "roi": 63999.0 / 16001.0},
        ])
    );
    let (_, by_campaign) = service.get(&format!("/v1/cost?by=campaign&as_of={AS_OF}"));
    let rows: Vec<CostLine> = by_campaign["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap(),
                r["spend_minor"].as_i64().unwrap(),
                r["customers"].as_u64().unwrap(),
                r["cost_per_customer_minor"].as_i64(),
                r["roi"].as_f64(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("(none)", 3000, 1, Some(3000), Some(17000.0 / 3000.0)),
            ("p1", 8000, 1, Some(8000), Some(32000.0 / 8000.0)),
            ("p2", 4000, 0, None, Some(-1.0)),
            ("w1", 10000, 2, Some(5000), Some(7.0)),
            ("w2", 6001, 0, None, Some(-1.0)),
        ]
    );

    // Plan for 100000 USD over the trailing 90 days: 3 USD deals, 120000 → 3 wins needed;
    // period counts inquiry 12, mql 9, sal 9, sql 5, won 4 → sql ⌈3·5/4⌉ = 4, sal ⌈4·9/5⌉ = 8,
    // mql ⌈8·9/9⌉ = 8, inquiries ⌈8·12/9⌉ = 11.
    let (_, plan) = service.get(&format!(
        "/v1/plan?revenue_target_minor=100000&currency=USD&as_of={AS_OF}"
    ));
    assert_eq!(
        (plan["won_deals"].as_u64(), plan["average_deal_minor"].as_i64()),
        (Some(3), Some(40000))
    );
    assert_eq!(
        plan["needed"],
        json!({"won": 3, "sql": 4, "sal": 8, "mql": 8, "inquiry": 11})
    );
    assert_eq!(plan["insufficient"], json!([]));
    // One EUR deal is too little history to plan from, and the answer says so.
    let (status, eur) = service.get(&format!(
        "/v1/plan?revenue_target_minor=100000&currency=EUR&as_of={AS_OF}"
    ));
    assert_eq!(status, 200);
    assert_eq!(eur["needed"], Value::Null);
    assert!(
        eur["insufficient"][0]
            .as_str()
            .unwrap()
            .contains("1 won deal(s) in EUR"),
        "{eur}"
    );
}

#[test]
fn time_travel_replay_and_cli_agree_with_the_live_service() {
    let nats = NatsServer::start();
    let data = TempDir::new("travel");
    let mut service = Service::start(&nats, data.path());
    let events = fixture();
    let (first, rest) = events.split_at(30);
    published(&nats, first);
    service.wait_for_seq(30, Duration::from_secs(30));
    let paths = [
        format!("/v1/funnel?by=channel&as_of={AS_OF}"),
        format!("/v1/velocity?as_of={AS_OF}"),
        format!("/v1/sla?as_of={AS_OF}"),
        format!("/v1/rejections?by=campaign&as_of={AS_OF}"),
        format!("/v1/cost?as_of={AS_OF}"),
        format!("/v1/plan?revenue_target_minor=100000&currency=USD&as_of={AS_OF}"),
        format!("/v1/leads/A2?as_of={AS_OF}"),
    ];
    let at_30: Vec<String> = paths.iter().map(|p| service.get_text(p).1).collect();
    std::thread::sleep(Duration::from_millis(20));
    let known_at = funnel_core::time::format_rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64,
    );
    std::thread::sleep(Duration::from_millis(20));
    published(&nats, rest);
    service.wait_for_seq(events.len() as u64, Duration::from_secs(30));

    // The past is still answerable, byte for byte: by log position and by recording time.
    for (path, then) in paths.iter().zip(&at_30) {
        assert_eq!(
            &service.get_text(&format!("{path}&at_seq=30")).1,
            then,
            "{path} at_seq=30"
        );
        assert_eq!(
            &service.get_text(&format!("{path}&known_at={known_at}")).1,
            then,
            "{path} known_at"
        );
    }
    let now: Vec<String> = paths.iter().map(|p| service.get_text(p).1).collect();
    assert_ne!(now, at_30);

    // `funnel report` prints the service's bytes.
    let url = format!("http://{}", service.http);
    let out = funnel(&["report", "sla", "--url", &url, "--as-of", AS_OF, "--json"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim_end(), now[2]);
    let table = funnel(&["report", "funnel", "--url", &url, "--as-of", AS_OF, "--by", "channel"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("paid_search"));
    let bad = funnel(&["report", "plan", "--url", &url]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("revenue_target_minor"));
    service.stop();

    // Offline replay of the same log gives the same bytes, at the head and at seq 30.
    let dir = data.path().to_str().unwrap();
    let cli_args = |report: &str| -> Vec<String> {
        let mut args = vec![
            "replay".to_owned(),
            report.to_owned(),
            "--json".into(),
            "--data-dir".into(),
            dir.into(),
            "--as-of".into(),
            AS_OF.into(),
        ];
        match report {
            "funnel" => args.extend(["--by".into(), "channel".into()]),
            "rejections" => args.extend(["--by".into(), "campaign".into()]),
            "plan" => args.extend([
                "--revenue-target-minor".into(),
                "100000".into(),
                "--currency".into(),
                "USD".into(),
            ]),
            "lead" => args.extend(["--lead".into(), "A2".into()]),
            _ => {}
        }
        args
    };
    for (i, report) in ["funnel", "velocity", "sla", "rejections", "cost", "plan", "lead"]
        .into_iter()
        .enumerate()
    {
        let args = cli_args(report);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = funnel(&refs);
        assert!(
            out.status.success(),
            "{report}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8(out.stdout).unwrap().trim_end(),
            now[i],
            "replay {report}"
        );
        let mut at_seq = refs.clone();
        at_seq.extend(["--at-seq", "30"]);
        let out = funnel(&at_seq);
        assert_eq!(
            String::from_utf8(out.stdout).unwrap().trim_end(),
            at_30[i],
            "replay {report} --at-seq 30"
        );
    }
}

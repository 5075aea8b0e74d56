//! The dashboard at `/`, in a real browser (Debian's chromium driven by playwright-core): for a
//! fixture fed through NATS, every number the page shows equals the API's, the view lives in
//! the URL (time travel and breakdown restored from it alone), the chain head is on the page
//! and verify works, the live view follows a new event without a reload, an overdue handoff
//! links to its lead, and a lead search shows its timeline and deal. Screenshots are kept in
//! `target/dashboard-screenshots/`.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::{NatsServer, RawNats, Service, TempDir};

fn event(id: &str, kind: &str, lead: &str, when: &str, data: Value) -> Value {
    json!({"id": id, "type": kind, "lead_id": lead, "occurred_at": when, "data": data})
}

/// The digits of a formatted number: `USD 75,952.68` → 7595268 (minor units, since the page
/// prints each currency with its own exponent).
fn digits(text: &str) -> i64 {
    text.chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(-1)
}

#[test]
fn the_dashboard_shows_the_apis_numbers_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let nats = NatsServer::start();
    let data = TempDir::new("dashboard");
    let service = Service::start(&nats, data.path());
    let mut raw = RawNats::connect(nats.port);
    // Five leads: A and B convert (USD and JPY deals), C reaches MQL and is handed off and
    // never answered, D is rejected, E only inquires.
    let mut n = 0;
    let mut publish = |kind: &str, lead: &str, when: &str, data: Value| {
        n += 1;
        raw.publish_event(&event(&format!("d{n}"), kind, lead, when, data));
    };
    for (lead, channel, day) in [
        ("A", "webinar", "02"),
        ("B", "email", "03"),
        ("C", "email", "04"),
        ("D", "ads", "05"),
        ("E", "seo", "06"),
    ] {
        publish(
            "touch",
            lead,
            &format!("2026-03-{day}T09:00:00Z"),
            json!({"channel": channel, "campaign": "spring"}),
        );
    }
    for lead in ["A", "B", "C"] {
        publish("score", lead, "2026-03-07T09:00:00Z", json!({"score": 90}));
        publish(
            "handoff",
            lead,
            "2026-03-08T09:00:00Z",
            json!({"to": "sales", "owner": "ana"}),
        );
    }
    for lead in ["A", "B"] {
        publish(
            "accept",
            lead,
            "2026-03-08T12:00:00Z",
            json!({"stage": "sql", "owner": "ana"}),
        );
        publish(
            "touch",
            lead,
            "2026-03-09T09:00:00Z",
            json!({"channel": "email", "campaign": "nurture"}),
        );
    }
    publish(
        "close",
        "A",
        "2026-03-20T09:00:00Z",
        json!({"outcome": "won", "amount_minor": 15_190_536, "currency": "USD"}),
    );
    publish(
        "close",
        "B",
        "2026-03-21T09:00:00Z",
        json!({"outcome": "won", "amount_minor": 123_457, "currency": "JPY"}),
    );
    publish("rejection", "D", "2026-03-10T09:00:00Z", json!({"reason": "no_budget"}));
    raw.flush();
    let total = n;
    service.wait_for_seq(total, Duration::from_secs(30));
    let at_seq = 8;

    let out = root.join("target/dashboard-screenshots");
    std::fs::create_dir_all(&out).expect("screenshot dir");
    let mut browser = Command::new("node")
        .arg(root.join("tests/browser/dashboard.mjs"))
        .arg(format!("http://{}", service.http))
        .arg(&out)
        .arg("A")
        .arg(at_seq.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (scripts/setup.sh installs chromium and playwright-core)");
    // Once the page shows the live view, an event arrives: the page must show the new head.
    let mut lines = BufReader::new(browser.stdout.take().expect("stdout")).lines();
    let ready = lines.next().and_then(Result::ok).unwrap_or_default();
    if ready == "ready" {
        raw.publish_event(&event(
            "late",
            "touch",
            "F",
            "2026-03-11T09:00:00Z",
            json!({"channel": "seo"}),
        ));
        raw.flush();
    }
    let figures = lines.next().and_then(Result::ok).unwrap_or_default();
    let run = browser.wait_with_output().expect("browser");
    assert!(
        run.status.success() && ready == "ready",
        "browser: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let page: Value = serde_json::from_str(&figures).expect("page figures");
    assert_eq!(
        page["views"]["live_update"],
        json!({"before": total.to_string(), "after": (total + 1).to_string()}),
        "the live view followed the new event without a reload"
    );
    let total = total + 1;
    assert_eq!(page["errors"], json!([]), "no script errors on the page");
    let live = &page["views"]["live"];
    let shown = |view: &Value, id: &str| {
        view[id]
            .as_str()
            .unwrap_or_else(|| panic!("{id} not on the page: {view}"))
            .to_owned()
    };

    // The chain head on the page is the service's.
    let (_, head) = service.get("/v1/audit/head");
    assert_eq!(shown(live, "head-seq"), head["log"]["seq"].to_string());
    assert_eq!(shown(live, "head-hash"), head["log"]["hash"].as_str().expect("hash"));
    assert!(shown(&page["views"]["verified"], "verify-result").starts_with(&format!("chain ok: {total} entries")));

    // Waterfall and breakdown: the API's numbers, and the hand-worked ones.
    let (_, funnel) = service.get("/v1/funnel");
    for stage in ["inquiry", "mql", "sal", "sql", "won"] {
        assert_eq!(
            shown(live, &format!("wf-{stage}")),
            funnel["total"]["period"][stage].to_string(),
            "{stage}"
        );
    }
    assert_eq!(
        ["inquiry", "mql", "sql", "won"].map(|s| shown(live, &format!("wf-{s}"))),
        ["6", "3", "2", "2"].map(String::from),
        "worked by hand from the fixture (and the late lead F)"
    );
    let (_, by_channel) = service.get("/v1/funnel?by=channel");
    let mut cells = 0;
    for group in by_channel["groups"].as_array().expect("groups") {
        let key = group["key"].as_str().expect("key");
        for stage in ["inquiry", "mql", "sal", "sql", "opportunity", "won", "lost"] {
            assert_eq!(
                shown(live, &format!("bd-{key}-{stage}")),
                group["cohort"][stage].to_string(),
                "{key} {stage}"
            );
            cells += 1;
        }
    }
    assert_eq!(cells, 4 * 7, "four channels");

    // SLA, rejections, attribution and cost.
    let (_, sla) = service.get("/v1/sla");
    for field in [
        "handoffs",
        "answered_in_sla",
        "answered_late",
        "open_overdue",
        "open_in_sla",
    ] {
        assert_eq!(shown(live, &format!("sla-{field}")), sla[field].to_string(), "{field}");
    }
    assert_eq!(
        shown(live, "sla-open_overdue"),
        "1",
        "C was handed off and never answered"
    );
    assert_eq!(sla["overdue"][0]["lead_id"], "C");
    assert_eq!(shown(live, "overdue-lead"), "C");
    let (_, c) = service.get("/v1/leads/C");
    assert_eq!(
        shown(&page["views"]["overdue_click"], "lead-stage"),
        c["stage"].as_str().expect("stage")
    );
    assert!(page["views"]["overdue_url"].as_str().expect("url").contains("lead=C"));
    let (_, rejections) = service.get("/v1/rejections");
    assert_eq!(
        shown(live, "rej-no_budget"),
        rejections["total"]["by_reason"]["no_budget"].to_string()
    );
    assert_eq!(shown(live, "rej-total"), "1");
    let (_, attribution) = service.get("/v1/attribution?model=all&by=channel");
    let mut credited = 0;
    for row in attribution["rows"].as_array().expect("rows") {
        let (key, currency) = (
            row["key"].as_str().expect("key"),
            row["currency"].as_str().expect("currency"),
        );
        for (model, minor) in row["credits_minor"].as_object().expect("credits") {
            let id = format!("attr-{key}-{currency}-{model}");
            assert_eq!(digits(&shown(live, &id)), minor.as_i64().expect("minor"), "{id}");
            credited += 1;
        }
    }
    assert!(credited >= 2 * 12, "both currencies under all twelve models");
    let (_, cost) = service.get("/v1/cost?by=channel");
    for row in cost["rows"].as_array().expect("rows") {
        let key = row["key"].as_str().expect("key");
        assert_eq!(
            shown(live, &format!("cost-{key}-customers")),
            row["customers"].to_string()
        );
        assert_eq!(
            digits(&shown(live, &format!("cost-{key}-revenue"))),
            row["revenue_minor"].as_i64().expect("revenue")
        );
    }

    // Time travel from the URL alone: the controls show it, the numbers are the prefix's.
    assert_eq!(
        page["views"]["at_seq_controls"],
        json!({"at_seq": at_seq.to_string(), "by": "campaign", "model": "linear"})
    );
    let at = &page["views"]["at_seq"];
    let (_, prefix) = service.get(&format!("/v1/funnel?at_seq={at_seq}"));
    assert_eq!(shown(at, "head-seq"), at_seq.to_string());
    for stage in ["inquiry", "mql", "won"] {
        assert_eq!(
            shown(at, &format!("wf-{stage}")),
            prefix["total"]["period"][stage].to_string(),
            "at_seq {stage}"
        );
    }
    assert_eq!(
        shown(at, "wf-inquiry"),
        "5",
        "the first 8 entries hold the five inquiries"
    );

    // The lead search: its stage and its deal, and the URL names the lead.
    let lead = &page["views"]["lead"];
    let (_, a) = service.get("/v1/leads/A");
    assert_eq!(shown(lead, "lead-stage"), a["stage"].as_str().expect("stage"));
    assert_eq!(digits(&shown(lead, "deal-amount")), 15_190_536);
    assert!(page["views"]["lead_url"].as_str().expect("url").contains("lead=A"));

    for shot in ["dashboard-live.png", "dashboard-at-seq.png", "dashboard-lead.png"] {
        let size = std::fs::metadata(out.join(shot)).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{shot} is a real screenshot ({size} bytes)");
    }
}

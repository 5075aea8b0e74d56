//! `/openapi.json` is the contract integrators generate clients from: every path it lists is
//! served, and every report accepts exactly the query parameters it documents (the service's
//! own refusal of an unknown parameter lists what it accepts).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use support::{NatsServer, RawNats, Service, TempDir};

#[test]
fn the_openapi_document_matches_the_running_service() {
    let nats = NatsServer::start();
    let data = TempDir::new("openapi");
    let service = Service::start(&nats, data.path());
    let mut raw = RawNats::connect(nats.port);
    raw.publish_event(&json!({"id": "o1", "type": "touch", "lead_id": "L1",
        "occurred_at": "2026-03-01T09:00:00Z", "data": {"channel": "email"}}));
    raw.flush();
    service.wait_for_seq(1, Duration::from_secs(30));

    let (status, doc) = service.get("/openapi.json");
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    let reports: BTreeSet<&str> = paths
        .keys()
        .filter_map(|p| p.strip_prefix("/v1/"))
        .filter(|p| !p.contains('/'))
        .collect();
    assert_eq!(
        reports,
        ["attribution", "cost", "funnel", "plan", "rejections", "sla", "velocity"]
            .into_iter()
            .collect(),
        "every report of DESIGN §5"
    );
    for (path, item) in paths {
        let concrete = path.replace("{lead_id}", "L1");
        let (status, body) = service.get_text(&concrete);
        assert!(
            !body.contains("no such endpoint"),
            "{path} is documented but not served ({status})"
        );
        let documented: BTreeSet<String> = item["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().expect("name").to_owned())
            .collect();
        if documented.is_empty() {
            continue;
        }
        // What the handler itself says it accepts.
        let (status, body) = service.get_text(&format!("{concrete}?zzz=1"));
        assert_eq!(status, 400, "{path}?zzz=1: {body}");
        let message = serde_json::from_str::<serde_json::Value>(&body).expect("JSON error")["error"]["message"]
            .as_str()
            .expect("message")
            .to_owned();
        let accepted: BTreeSet<String> = message
            .split("expected one of ")
            .nth(1)
            .unwrap_or_else(|| panic!("{path}: {message}"))
            .split(", ")
            .map(|p| p.trim().to_owned())
            .collect();
        assert_eq!(
            accepted, documented,
            "{path}: the handler accepts what the document lists"
        );
    }
    let (status, _) = service.get_text("/v1/no/such/route");
    assert_eq!(status, 404);
}

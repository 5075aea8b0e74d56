//! `deploy/grafana-dashboard.json` charts what an operator watches (ingest rate, consumer lag,
//! projection lag, DLQ by reason, query latency), and every query in it names a metric the
//! running service exports.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use support::{NatsServer, RawNats, Service, TempDir};

/// The `funnel_…` metric names a PromQL expression reads.
fn metrics_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("funnel_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.push(name);
    }
    out
}

#[test]
fn every_dashboard_query_reads_a_metric_the_service_exports() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metrics_in(e)).collect();
    for needed in [
        "funnel_ingest_events_total",
        "funnel_consumer_pending_messages",
        "funnel_projector_lag_entries",
        "funnel_dlq_total",
        "funnel_query_duration_seconds_bucket",
    ] {
        assert!(used.contains(needed), "the dashboard charts {needed}");
    }

    // A service that has ingested, refused and answered something, so every series exists.
    let nats = NatsServer::start();
    let data = TempDir::new("grafana");
    let service = Service::start(&nats, data.path());
    let mut raw = RawNats::connect(nats.port);
    raw.publish_event(&json!({"id": "g1", "type": "touch", "lead_id": "L1",
        "occurred_at": "2026-03-01T09:00:00Z", "data": {"channel": "email"}}));
    raw.publish("funnel.events.touch.L1", &[], b"{not json");
    raw.flush();
    service.wait_for_seq(1, Duration::from_secs(30));
    assert_eq!(service.get("/v1/funnel").0, 200);
    let (status, exposition) = service.get_text("/metrics");
    assert_eq!(status, 200);
    let exported: BTreeSet<String> = exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    for metric in &used {
        assert!(
            exported.contains(metric),
            "{metric} is charted but not exported:\n{exposition}"
        );
    }
    // The latency histogram counted the funnel question just asked.
    assert!(
        exposition.contains("funnel_query_duration_seconds_count{endpoint=\"funnel\"} 1"),
        "{exposition}"
    );
}

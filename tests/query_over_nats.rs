//! DESIGN §5's "the same handlers over NATS request/reply": a dashboard asks
//! `funnel.query.<report>` with the HTTP parameters as JSON and gets the HTTP answer's bytes;
//! an error comes with the micro protocol's headers; the service answers `$SRV.PING`, `$SRV.INFO`
//! and `$SRV.STATS`. Asked with nats-py (a client that is not ours) and with `funnel report --via nats`.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::{funnel, NatsServer, Service, TempDir};

/// Asks each (subject, payload) with nats-py: (payload bytes, headers) per request.
fn ask_with_nats_py(url: &str, requests: &[(&str, String)]) -> Vec<(Vec<u8>, Value)> {
    let python = std::env::var("FUNNEL_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/nats_query.py");
    let mut child = Command::new(python)
        .arg(script)
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python (scripts/setup.sh installs nats-py into .tools/venv)");
    let input: Vec<Value> = requests
        .iter()
        .map(|(subject, payload)| json!({"subject": subject, "payload": payload}))
        .collect();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(Value::from(input).to_string().as_bytes())
        .expect("write requests");
    let out = child.wait_with_output().expect("nats_query.py");
    assert!(
        out.status.success(),
        "nats_query.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replies: Vec<Value> = serde_json::from_slice(&out.stdout).expect("replies");
    replies
        .into_iter()
        .map(|r| {
            let payload = base64_decode(r["payload"].as_str().expect("payload"));
            (payload, r["headers"].clone())
        })
        .collect()
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        let value = ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        buffer = buffer << 6 | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

#[test]
fn every_report_over_nats_is_the_http_answer_byte_for_byte() {
    let nats = NatsServer::start();
    let data = TempDir::new("nats-query");
    let service = Service::start(&nats, data.path());
    let out = funnel(&["simulate", "--leads", "300", "--seed", "11", "--nats-url", &nats.url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    service.wait_settled(1_000, Duration::from_secs(60));
    let lead = "sim11-L000007";
    assert_eq!(
        service.get(&format!("/v1/leads/{lead}")).0,
        200,
        "the simulation names its leads simSEED-LNNNNNN"
    );

    // (endpoint, JSON request, the HTTP path asking the same)
    let cases: Vec<(&str, Value, String)> = vec![
        ("funnel", json!({}), "/v1/funnel".into()),
        (
            "funnel",
            json!({"by": "channel", "from": "2026-06-15", "to": "2026-08-01", "as_of": "2026-09-01"}),
            "/v1/funnel?by=channel&from=2026-06-15&to=2026-08-01&as_of=2026-09-01".into(),
        ),
        (
            "funnel",
            json!({"at_seq": 600, "by": "campaign"}),
            "/v1/funnel?at_seq=600&by=campaign".into(),
        ),
        (
            "velocity",
            json!({"from": "2026-06-01"}),
            "/v1/velocity?from=2026-06-01".into(),
        ),
        ("sla", json!({}), "/v1/sla".into()),
        (
            "rejections",
            json!({"by": "channel"}),
            "/v1/rejections?by=channel".into(),
        ),
        ("cost", json!({"by": "campaign"}), "/v1/cost?by=campaign".into()),
        (
            "plan",
            json!({"revenue_target_minor": 5_000_000, "currency": "USD"}),
            "/v1/plan?revenue_target_minor=5000000&currency=USD".into(),
        ),
        (
            "attribution",
            json!({"model": "all", "by": "channel"}),
            "/v1/attribution?model=all&by=channel".into(),
        ),
        ("lead", json!({"lead_id": lead}), format!("/v1/leads/{lead}")),
        (
            "explain",
            json!({"lead_id": lead, "model": "all"}),
            format!("/v1/attribution/explain/{lead}?model=all"),
        ),
        // Errors: the same JSON, with the micro error headers.
        ("funnel", json!({"by": "planet"}), "/v1/funnel?by=planet".into()),
        ("lead", json!({"lead_id": "nobody"}), "/v1/leads/nobody".into()),
        ("plan", json!({"currency": "USD"}), "/v1/plan?currency=USD".into()),
    ];
    // A fixed `as_of` everywhere: the default is the time of asking, which differs between asks.
    let as_of = "2026-12-01";
    let cases: Vec<(&str, Value, String)> = cases
        .into_iter()
        .map(|(endpoint, mut request, path)| {
            if request.get("as_of").is_none() {
                request["as_of"] = as_of.into();
            }
            let path = if path.contains("as_of") {
                path
            } else {
                format!("{path}{}as_of={as_of}", if path.contains('?') { '&' } else { '?' })
            };
            (endpoint, request, path)
        })
        .collect();
    let requests: Vec<(String, String)> = cases
        .iter()
        .map(|(endpoint, request, _)| (format!("funnel.query.{endpoint}"), request.to_string()))
        .collect();
    let borrowed: Vec<(&str, String)> = requests.iter().map(|(s, p)| (s.as_str(), p.clone())).collect();
    let replies = ask_with_nats_py(&nats.url, &borrowed);
    let mut errors = 0;
    for ((endpoint, request, path), (payload, headers)) in cases.iter().zip(&replies) {
        let (status, _, body) = support::try_get_with(&service.http, path, &[]).expect("HTTP answer");
        assert_eq!(
            String::from_utf8_lossy(payload),
            body,
            "funnel.query.{endpoint} {request} against GET {path}"
        );
        if status == 200 {
            assert!(headers.get("Nats-Service-Error-Code").is_none(), "{headers}");
        } else {
            errors += 1;
            assert_eq!(headers["Nats-Service-Error-Code"], status.to_string(), "{path}");
            let error: Value = serde_json::from_str(&body).expect("error JSON");
            assert_eq!(headers["Nats-Service-Error"], error["error"]["message"], "{path}");
        }
    }
    assert_eq!(errors, 3, "the three error cases are errors over HTTP too");

    // The micro protocol's discovery, as the standard tooling asks it.
    let discovery = ask_with_nats_py(
        &nats.url,
        &[
            ("$SRV.PING.funnel-query", String::new()),
            ("$SRV.INFO.funnel-query", String::new()),
            ("$SRV.STATS.funnel-query", String::new()),
        ],
    );
    let ping: Value = serde_json::from_slice(&discovery[0].0).expect("ping");
    assert_eq!(ping["type"], "io.nats.micro.v1.ping_response", "{ping}");
    assert_eq!(ping["name"], "funnel-query");
    let info: Value = serde_json::from_slice(&discovery[1].0).expect("info");
    let mut subjects: Vec<&str> = info["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["subject"].as_str())
        .collect();
    subjects.sort_unstable();
    let mut expected: Vec<String> = funnel_query::REPORTS
        .iter()
        .chain(["head"].iter())
        .map(|r| format!("funnel.query.{r}"))
        .collect();
    expected.sort_unstable();
    assert_eq!(subjects, expected);
    let stats: Value = serde_json::from_slice(&discovery[2].0).expect("stats");
    let requests_seen: u64 = stats["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["num_requests"].as_u64())
        .sum();
    assert_eq!(requests_seen, cases.len() as u64, "{stats}");

    // `funnel report --via nats` prints the same bytes as over HTTP.
    let via_nats = funnel(&[
        "report",
        "attribution",
        "--via",
        "nats",
        "--nats-url",
        &nats.url,
        "--by",
        "campaign",
        "--model",
        "all",
        "--as-of",
        as_of,
        "--json",
    ]);
    assert!(
        via_nats.status.success(),
        "{}",
        String::from_utf8_lossy(&via_nats.stderr)
    );
    let (_, _, body) = support::try_get_with(
        &service.http,
        &format!("/v1/attribution?by=campaign&model=all&as_of={as_of}"),
        &[],
    )
    .expect("HTTP");
    assert_eq!(String::from_utf8_lossy(&via_nats.stdout).trim_end(), body);
    let refused = funnel(&[
        "report",
        "funnel",
        "--via",
        "nats",
        "--nats-url",
        &nats.url,
        "--by",
        "planet",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("400"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

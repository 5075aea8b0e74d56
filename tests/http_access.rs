//! Who may ask what over HTTP: bearer tokens with roles from a file of hashes, JSON 401 and
//! 403, and `serve` refusing a non-loopback address without tokens.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{funnel, try_get_with, NatsServer, RawNats, Service, TempDir};

fn token(file: &std::path::Path, role: &str, name: &str) -> String {
    let out = funnel(&[
        "token",
        "--tokens",
        file.to_str().expect("utf-8"),
        "--role",
        role,
        "--name",
        name,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("token").trim().to_owned()
}

/// GET with an optional bearer token: (status, response head, JSON body).
fn get(service: &Service, path: &str, bearer: Option<&str>) -> (u16, String, Value) {
    let header = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = header.iter().map(|h| ("Authorization", h.as_str())).collect();
    let (status, head, body) = try_get_with(&service.http, path, &headers).expect("an answer");
    (status, head, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

#[test]
fn each_role_reads_what_it_may_and_every_other_request_is_refused_in_json() {
    let nats = NatsServer::start();
    let data = TempDir::new("access");
    let file = data.path().join("tokens");
    let viewer = token(&file, "viewer", "grafana");
    let auditor = token(&file, "auditor", "audit firm");
    let admin = token(&file, "admin", "ops");
    let stored = std::fs::read_to_string(&file).expect("token file");
    for t in [&viewer, &auditor, &admin] {
        assert!(t.len() >= 64, "a long random token: {t}");
        assert!(!stored.contains(t.as_str()), "the file holds hashes only");
    }
    let service = Service::start_with(
        &nats,
        &data.path().join("d"),
        &[("FUNNEL_TOKENS", file.to_str().expect("utf-8"))],
    );
    let mut raw = RawNats::connect(nats.port);
    raw.publish_event(
        &json!({"id": "t1", "type": "touch", "lead_id": "L1", "occurred_at": "2026-03-01T09:00:00Z",
                              "data": {"channel": "webinar"}}),
    );
    raw.flush();
    service.wait_for_seq(1, Duration::from_secs(20));

    let lead = "/v1/leads/L1";
    let explain = "/v1/attribution/explain/L1";
    // (path, least role that may read it); `None`: open to anyone.
    let routes: [(&str, Option<usize>); 9] = [
        ("/health", None),
        ("/", None),
        ("/v1/funnel?by=channel", Some(0)),
        ("/v1/attribution?model=all", Some(0)),
        ("/v1/audit/head", Some(0)),
        (lead, Some(1)),
        (explain, Some(1)),
        ("/v1/audit/verify", Some(1)),
        ("/metrics", Some(2)),
    ];
    let holders = [&viewer, &auditor, &admin];
    let mut refused = 0;
    for (path, least) in routes {
        // No token, a wrong one, and each role.
        for bearer in [None, Some("fl_not-a-token")] {
            let (status, head, body) = get(&service, path, bearer);
            if least.is_none() {
                assert_eq!(status, 200, "{path} is open");
                continue;
            }
            assert_eq!(status, 401, "{path} with {bearer:?}: {body}");
            assert_eq!(body["error"]["code"], json!("unauthorized"), "{path}");
            assert!(head.contains("www-authenticate: bearer"), "{path}: {head}");
            refused += 1;
        }
        for (rank, bearer) in holders.iter().enumerate() {
            let (status, _, body) = get(&service, path, Some(bearer));
            match least {
                Some(least) if rank < least => {
                    assert_eq!(status, 403, "{path} as rank {rank}: {body}");
                    assert_eq!(body["error"]["code"], json!("forbidden"), "{path}");
                    refused += 1;
                }
                _ => assert_eq!(status, 200, "{path} as rank {rank}: {body}"),
            }
        }
    }
    // What each role got is the real answer.
    assert_eq!(get(&service, lead, Some(&auditor)).2["lead_id"], json!("L1"));
    let (_, _, metrics) = get(&service, "/metrics", Some(&admin));
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains(&format!("funnel_http_refused_total {refused}")),
        "{refused} refused: {metrics}"
    );
}

#[test]
fn serve_refuses_a_network_address_without_tokens() {
    let data = TempDir::new("noauth");
    // Refused before it binds or connects to anything.
    let out = funnel(&[
        "serve",
        "--nats-url",
        "nats://127.0.0.1:1",
        "--http",
        "0.0.0.0:0",
        "--data-dir",
        data.path().to_str().expect("utf-8"),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to serve 0.0.0.0:0 without a token file"),
        "{stderr}"
    );
    assert!(stderr.contains("--insecure-no-auth"), "{stderr}");
    // A token file that does not parse is refused too, naming the line.
    let file = data.path().join("tokens");
    std::fs::write(&file, "viewer 0123\n").expect("write");
    let out = funnel(&[
        "serve",
        "--nats-url",
        "nats://127.0.0.1:1",
        "--http",
        "127.0.0.1:0",
        "--tokens",
        file.to_str().expect("utf-8"),
        "--data-dir",
        data.path().to_str().expect("utf-8"),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 1"), "{stderr}");
}

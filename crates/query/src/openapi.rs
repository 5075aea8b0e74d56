//! `GET /openapi.json`: the HTTP contract as OpenAPI 3.1, generated from what the handlers
//! use: the router's route table ([`crate::ROUTES`]), each report's parameter list
//! ([`crate::request::parameters`], which the parser enforces), the time-travel parameters and
//! the role each route needs ([`Role::needed_for`]). A unit test holds every route to a path
//! here; `tests/openapi.rs` holds the running service to every documented path and parameter.

use serde_json::{json, Map, Value};

use crate::access::Role;
use crate::params::TIME_TRAVEL;
use crate::request::{parameters, REPORTS};
use crate::ROUTES;

/// What each query parameter means, and its JSON Schema type.
fn parameter(name: &str) -> Value {
    let (description, schema) = match name {
        "from" => (
            "Window start, inclusive (RFC 3339 or YYYY-MM-DD).",
            json!({"type": "string"}),
        ),
        "to" => (
            "Window end, exclusive (RFC 3339 or YYYY-MM-DD).",
            json!({"type": "string"}),
        ),
        "by" => (
            "Breakdown: channel, campaign (funnel: also producer).",
            json!({"type": "string", "enum": ["channel", "campaign", "producer"]}),
        ),
        "within_days" => (
            "Conversion window: a cohort lead counts as converted only within N days of its inquiry.",
            json!({"type": "integer", "minimum": 1}),
        ),
        "interval" => (
            "Adds a trend series of period counts (needs from and to).",
            json!({"type": "string", "enum": ["day", "week", "month"]}),
        ),
        "revenue_target_minor" => (
            "Revenue target in integer minor units.",
            json!({"type": "integer", "minimum": 1}),
        ),
        "currency" => (
            "ISO 4217 code of the target.",
            json!({"type": "string", "pattern": "^[A-Z]{3}$"}),
        ),
        "model" => (
            "`all`, one attribution model, or a comma-separated list.",
            json!({"type": "string"}),
        ),
        "as_of" => (
            "Business time: only events that occurred by then (default now).",
            json!({"type": "string"}),
        ),
        "known_at" => (
            "Recording time: only entries recorded by then.",
            json!({"type": "string"}),
        ),
        "at_seq" => (
            "Log position: only entries up to this seq.",
            json!({"type": "integer", "minimum": 0}),
        ),
        _ => ("", json!({"type": "string"})),
    };
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn lead_id() -> Value {
    json!({"name": "lead_id", "in": "path", "required": true, "schema": {"type": "string"}})
}

fn operation(summary: &str, route: &str, parameters: Vec<Value>, content: &str) -> Value {
    let schema = if content == "application/json" {
        json!({"type": "object"})
    } else {
        json!({"type": "string"})
    };
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({"description": "The answer.", "content": {content: {"schema": schema}}}),
    );
    let role = Role::needed_for(route);
    let mut errors = vec![
        ("400", "A bad parameter, named in the message."),
        ("404", "No such report or lead."),
        ("503", "Busy (Retry-After: 1), timed out, or the store is unavailable."),
    ];
    if role.is_some() {
        errors.extend([
            ("401", "No bearer token, or one not known."),
            ("403", "The token's role is not enough."),
        ]);
    }
    for (code, what) in errors {
        let error = json!({"schema": {"$ref": "#/components/schemas/Error"}});
        responses.insert(
            code.into(),
            json!({"description": what, "content": {"application/json": error}}),
        );
    }
    let mut op = json!({"summary": summary, "parameters": parameters, "responses": responses});
    match role {
        None => op["security"] = json!([]),
        Some(role) => op["x-funnel-role"] = role.as_str().into(),
    }
    json!({"get": op})
}

/// The document, path by path in the router's order.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        match route {
            "/v1/{report}" => {
                for report in REPORTS.iter().filter(|r| !matches!(**r, "lead" | "explain")) {
                    let params = parameters(report).unwrap_or_default().iter().chain(TIME_TRAVEL.iter());
                    paths.insert(
                        format!("/v1/{report}"),
                        operation(
                            &format!("The {report} report."),
                            route,
                            params.map(|p| parameter(p)).collect(),
                            "application/json",
                        ),
                    );
                }
            }
            "/v1/leads/{lead_id}" | "/v1/attribution/explain/{lead_id}" => {
                let report = if route.starts_with("/v1/leads") {
                    "lead"
                } else {
                    "explain"
                };
                let params = std::iter::once(lead_id())
                    .chain(
                        parameters(report)
                            .unwrap_or_default()
                            .iter()
                            .chain(TIME_TRAVEL.iter())
                            .map(|p| parameter(p)),
                    )
                    .collect();
                let summary = if report == "lead" {
                    "One lead: facts and timeline."
                } else {
                    "How each won deal of a lead is credited, model by model."
                };
                paths.insert(route.to_owned(), operation(summary, route, params, "application/json"));
            }
            "/" => {
                paths.insert(
                    route.to_owned(),
                    operation("The dashboard.", route, vec![], "text/html"),
                );
            }
            "/metrics" => {
                paths.insert(
                    route.to_owned(),
                    operation("Prometheus metrics.", route, vec![], "text/plain"),
                );
            }
            other => {
                let summary = match other {
                    "/health" | "/v1/audit/head" => "The chain head and how far the engine has projected it.",
                    "/v1/audit/verify" => "Walks the whole hash chain.",
                    "/openapi.json" => "This document.",
                    _ => "",
                };
                paths.insert(other.to_owned(), operation(summary, other, vec![], "application/json"));
            }
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "funnel-ledger",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Lead-funnel reports from an append-only, hash-chained ledger. The same answers, byte for byte, over NATS request/reply on funnel.query.<report>."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "A token from `funnel token`; roles viewer < auditor < admin (x-funnel-role)."}},
            "schemas": {"Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"}}}}
            }}
        },
        "security": [{"bearer": []}]
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_and_report_is_documented() {
        let doc = super::document();
        let paths = doc["paths"].as_object().expect("paths");
        for route in crate::ROUTES {
            if route == "/v1/{report}" {
                for report in crate::REPORTS.iter().filter(|r| !matches!(**r, "lead" | "explain")) {
                    assert!(paths.contains_key(&format!("/v1/{report}")), "{report}");
                }
            } else {
                assert!(paths.contains_key(route), "{route}");
            }
        }
    }
}

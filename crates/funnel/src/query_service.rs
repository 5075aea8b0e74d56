//! The query contract over NATS request/reply (DESIGN §5): a NATS micro service (`$SRV.PING`,
//! `$SRV.INFO` and `$SRV.STATS` answer the standard tooling) with one endpoint per report,
//! `funnel.query.<report>`, and `funnel.query.head` for the chain head. A request carries the
//! HTTP parameters as a JSON object (`{"by": "channel", "from": "2026-01-01"}`; `lead_id` for
//! `lead` and `explain`); the answer is the HTTP answer's bytes, computed by the same
//! [`funnel_query::ask`]. An error is the HTTP error's JSON, with the micro protocol's
//! `Nats-Service-Error` (the message) and `Nats-Service-Error-Code` (the HTTP status).

use async_nats::service::{ServiceExt, NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use async_nats::HeaderMap;
use funnel_query::{ApiError, AppState, REPORTS, REQUEST_TIMEOUT};
use futures::StreamExt;
use serde_json::Value;
use tracing::warn;

use crate::CliError;

/// The subject prefix of every endpoint.
pub const PREFIX: &str = "funnel.query";
/// The micro service's name, as `$SRV.*.funnel-query` addresses it.
pub const NAME: &str = "funnel-query";

/// Starts the service and answers until the connection closes or `shutdown` turns true.
pub async fn run(
    client: async_nats::Client,
    state: AppState,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), CliError> {
    let fail = |e: async_nats::Error| CliError::Failed(format!("NATS query service: {e}"));
    let service = client
        .service_builder()
        .description("funnel-ledger reports: the HTTP API's answers, byte for byte, over request/reply")
        .start(NAME, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(fail)?;
    let group = service.group(PREFIX);
    let mut endpoints = Vec::new();
    for name in REPORTS.iter().copied().chain(["head"]) {
        let mut endpoint = group.endpoint(name).await.map_err(fail)?;
        let state = state.clone();
        endpoints.push(tokio::spawn(async move {
            while let Some(request) = endpoint.next().await {
                let state = state.clone();
                // Each request on its own task: the pools bound the work, not this loop.
                tokio::spawn(async move {
                    let (body, headers) = match answer(&state, name, &request.message.payload).await {
                        Ok(body) => (body, HeaderMap::new()),
                        Err(e) => {
                            let mut headers = HeaderMap::new();
                            headers.insert(NATS_SERVICE_ERROR, e.message.replace(['\r', '\n'], " ").as_str());
                            headers.insert(NATS_SERVICE_ERROR_CODE, e.status.as_u16().to_string().as_str());
                            (e.body(), headers)
                        }
                    };
                    if let Err(e) = request.respond_with_headers(Ok(body.into()), headers).await {
                        warn!(error = %e, endpoint = name, "NATS query reply not sent");
                    }
                });
            }
        }));
    }
    let _ = shutdown.wait_for(|stop| *stop).await;
    for endpoint in endpoints {
        endpoint.abort();
    }
    let _ = service.stop().await;
    Ok(())
}

/// One request's answer: its JSON parameters turned into the HTTP query string.
async fn answer(state: &AppState, report: &'static str, payload: &[u8]) -> Result<Vec<u8>, ApiError> {
    if report == "head" {
        return serde_json::to_vec(&funnel_query::health_json(state)).map_err(ApiError::store);
    }
    let (lead_id, query) = parameters(payload)?;
    match tokio::time::timeout(REQUEST_TIMEOUT, funnel_query::ask(state, report, lead_id, query)).await {
        Ok(answer) => answer,
        Err(_) => Err(ApiError::timeout()),
    }
}

/// `lead_id` and the query string of a request: an empty payload or a JSON object of strings,
/// numbers and booleans.
fn parameters(payload: &[u8]) -> Result<(Option<String>, Option<String>), ApiError> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok((None, None));
    }
    let value: Value = funnel_core::event::strict_json(payload)
        .map_err(|e| ApiError::bad_parameter(format!("the request is not a JSON object of parameters: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(ApiError::bad_parameter(
            "the request is not a JSON object of parameters",
        ));
    };
    let mut lead_id = None;
    let mut pairs = Vec::with_capacity(fields.len());
    for (key, value) in fields {
        let text = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(ApiError::bad_parameter(format!(
                    "{key}: {other} is not a string, number or boolean"
                )))
            }
        };
        if key == "lead_id" {
            lead_id = Some(text);
        } else {
            pairs.push((key, text));
        }
    }
    let query = serde_urlencoded::to_string(&pairs).map_err(|e| ApiError::bad_parameter(e.to_string()))?;
    Ok((lead_id, (!query.is_empty()).then_some(query)))
}

#[cfg(test)]
mod tests {
    use super::parameters;

    #[test]
    fn parameters_become_the_http_query_string() {
        let (lead, query) = parameters(br#"{"lead_id":"L 1","by":"channel","at_seq":12,"x":true}"#).expect("ok");
        assert_eq!(lead.as_deref(), Some("L 1"));
        assert_eq!(query.as_deref(), Some("at_seq=12&by=channel&x=true"));
        assert_eq!(parameters(b"").expect("empty"), (None, None));
        for bad in [
            &b"[1]"[..],
            b"{\"by\":[1]}",
            b"{not json",
            b"{\"by\":\"a\",\"by\":\"b\"}",
        ] {
            let e = parameters(bad).expect_err("refused");
            assert_eq!(e.code, "bad_parameter");
        }
    }
}

//! The query service: HTTP JSON reports over the live projection, the ledger and offline
//! replays of a log prefix. Handlers never panic on input: bad parameters are 4xx JSON errors
//! of the shape `{"error": {"code", "message"}}`.

mod params;
mod request;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use funnel_core::report;
use funnel_core::Projection;
use funnel_projector::{Live, Metrics};
use serde_json::{json, Value};
use tracing::info_span;

pub use params::{Params, TimeTravel};
pub use request::{Query, Request, PLAN_WINDOW_DAYS, REPORTS};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
}

/// An error answer: a status, a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_parameter(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_parameter",
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
        }
    }
    pub fn store(e: impl std::fmt::Display) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "store_unavailable",
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

type Answer = Result<Response, ApiError>;

fn json_response(value: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/leads/{lead_id}", get(lead))
        .route("/v1/attribution/explain/{lead_id}", get(explain))
        .route("/v1/{report}", get(report_route))
        .route("/v1/audit/head", get(audit_head))
        .route("/v1/audit/verify", get(audit_verify))
        .fallback(|| async { ApiError::not_found("no such endpoint; see DESIGN.md §5") })
        .with_state(state)
}

/// Runs a handler body inside a span, counting it and its time.
fn answered(state: &AppState, name: &'static str, body: impl FnOnce() -> Answer) -> Response {
    let started = Instant::now();
    let span = info_span!("request", endpoint = name);
    let answer = span.in_scope(body);
    let m = &state.metrics;
    m.queries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    m.query_micros.fetch_add(
        started.elapsed().as_micros() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    answer.unwrap_or_else(|e| {
        m.query_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        e.into_response()
    })
}

/// The log position the time-travel parameters ask for: `None` means "the live head".
pub fn resolve_seq(ledger: &funnel_ledger::Ledger, travel: &TimeTravel) -> Result<Option<u64>, ApiError> {
    let head = ledger.head().seq;
    let mut seq = travel.at_seq;
    if let Some(at) = seq {
        if at > head {
            return Err(ApiError::bad_parameter(format!(
                "at_seq: {at} is past the log head {head}"
            )));
        }
    }
    if let Some(known_at) = travel.known_at {
        let known = last_seq_recorded_by(ledger, head, known_at).map_err(ApiError::store)?;
        seq = Some(seq.map_or(known, |s| s.min(known)));
    }
    Ok(seq)
}

/// Runs `f` on the projection the time-travel parameters ask for: the live one, or a replay
/// of the log prefix `1..=seq`.
fn with_projection<T>(state: &AppState, travel: &TimeTravel, f: impl FnOnce(&Projection) -> T) -> Result<T, ApiError> {
    let ledger = state.live.ledger();
    let seq = resolve_seq(ledger, travel)?;
    let live = state.live.read();
    match seq {
        Some(s) if s != live.head().seq => {
            drop(live);
            let replayed = funnel_projector::replay(ledger, Some(s), |_| {}).map_err(ApiError::store)?;
            Ok(f(&replayed))
        }
        _ => Ok(f(&live)),
    }
}

/// The last seq whose `recorded_at <= t` (recorded_at never decreases along the log).
fn last_seq_recorded_by(ledger: &funnel_ledger::Ledger, head: u64, t: i64) -> Result<u64, funnel_ledger::LedgerError> {
    let (mut lo, mut hi) = (0u64, head);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        let recorded = ledger.get(mid)?.map_or(i64::MAX, |e| e.recorded_at);
        if recorded <= t {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(lo)
}

async fn health(State(state): State<AppState>) -> Response {
    answered(&state, "health", || {
        let head = state.live.ledger().head();
        let projected = state.live.read().head().seq;
        Ok(json_response(
            &json!({"status": "ok", "log": report::Log::from(head), "projected_seq": projected}),
        ))
    })
}

async fn audit_head(State(state): State<AppState>) -> Response {
    health(State(state)).await
}

async fn audit_verify(State(state): State<AppState>) -> Response {
    let ledger = state.live.ledger().clone();
    let started = Instant::now();
    let verification = tokio::task::spawn_blocking(move || ledger.verify(|_| {})).await;
    state.metrics.queries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    state.metrics.query_micros.fetch_add(
        started.elapsed().as_micros() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    match verification {
        Ok(v) => json_response(&verification_json(&v)),
        Err(e) => ApiError::store(e).into_response(),
    }
}

/// The JSON of a chain verification, shared by the HTTP answer and `funnel verify --json`.
pub fn verification_json(v: &funnel_ledger::Verification) -> Value {
    json!({
        "ok": v.first_bad.is_none(),
        "checked": v.checked,
        "log": report::Log::from(v.head),
        "first_bad": v.first_bad.as_ref().map(|(seq, reason)| json!({"seq": seq, "reason": reason})),
    })
}

async fn report_route(
    State(state): State<AppState>,
    Path(report): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    answer(&state, &report, None, query.as_deref())
}

async fn lead(State(state): State<AppState>, Path(lead_id): Path<String>, RawQuery(query): RawQuery) -> Response {
    answer(&state, "lead", Some(&lead_id), query.as_deref())
}

async fn explain(State(state): State<AppState>, Path(lead_id): Path<String>, RawQuery(query): RawQuery) -> Response {
    answer(&state, "explain", Some(&lead_id), query.as_deref())
}

/// Parses, picks the projection for the requested log position, computes.
fn answer(state: &AppState, report: &str, lead_id: Option<&str>, query: Option<&str>) -> Response {
    let name: &'static str = REPORTS.iter().find(|r| **r == report).copied().unwrap_or("unknown");
    answered(state, name, || {
        let request = Request::parse(report, lead_id, query)?;
        let body = with_projection(state, &request.travel, |p| request.answer(p, state.live.ledger()))??;
        Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
    })
}

async fn metrics(State(state): State<AppState>) -> Response {
    let head = state.live.ledger().head().seq;
    let projected = state.live.read().head().seq;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(head, projected),
    )
        .into_response()
}

async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

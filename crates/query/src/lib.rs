//! The query service: a typed [`Request`] answered over an engine snapshot, served over HTTP.
//! Reports run off the async workers in a bounded pool ([`REPORT_WORKERS_MAX`] at a time), so
//! an expensive question never delays a lead lookup or a health check. Handlers never panic
//! on input: bad parameters are 4xx JSON errors of the shape `{"error": {"code", "message"}}`.
//!
//! Every cost is bounded, so a flood degrades latency and never takes the process down: each
//! pool lets a bounded number of requests wait and answers the next `503 busy` at once; at most
//! [`REPLAYS_MAX`] log-prefix replay runs at a time (each as large as the live engine); every
//! request is answered within [`REQUEST_TIMEOUT`] (`503 timeout`, and a replay stops); trend
//! series are capped in buckets.

pub mod access;
pub mod openapi;
mod params;
mod request;
pub mod share;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use funnel_core::report;
use funnel_engine::{Engine, Live, Metrics};
use serde_json::{json, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::info_span;

pub use access::{Role, Tokens};
pub use params::{Params, TimeTravel};
pub use request::{Query, Request, PLAN_WINDOW_DAYS, REPORTS};

/// Reports computed at once; more wait their turn (the machine has this many cores to give).
pub const REPORT_WORKERS_MAX: usize = 2;

/// Lead lookups computed at once. They mostly wait on reads, so a few more than the cores;
/// unbounded, 32 lookups at once contend for the store's locks and the tail latency doubles.
pub const LOOKUP_WORKERS_MAX: usize = 4;

/// Requests that may wait for a report permit; one more is answered 503 `busy` at once, so a
/// flood of questions queues a bounded amount of work and memory.
pub const REPORTS_WAITING_MAX: usize = 64;
/// Lead lookups that may wait for a permit.
pub const LOOKUPS_WAITING_MAX: usize = 256;
/// Chain verifications at once (each reads the whole log), and how many may wait.
pub const VERIFY_WORKERS_MAX: usize = 1;
pub const VERIFY_WAITING_MAX: usize = 4;
/// Log-prefix replays at once: a time-travel question the history cannot answer builds an
/// engine of the prefix, as large as the live one. One more is answered 503 `busy`.
pub const REPLAYS_MAX: usize = 1;
/// Longest a request may take: then it is answered 503 `timeout`, and a replay computing for it
/// stops at its next chunk.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How many requests wait for something, bounded: one more is answered `busy` at once, so a
/// flood of questions queues a bounded amount of work and memory.
pub struct WaitingLine {
    waiting: AtomicUsize,
    max: usize,
    /// What waits, for the `busy` message ("report requests").
    what: &'static str,
}

/// A place in a [`WaitingLine`], given up when dropped, however the wait ends (the asker's
/// hang-up included).
pub struct Place<'a>(&'a AtomicUsize);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl WaitingLine {
    pub fn new(what: &'static str, max: usize) -> WaitingLine {
        WaitingLine {
            waiting: AtomicUsize::new(0),
            max,
            what,
        }
    }

    /// A place in the line; `busy` if `max` wait already.
    pub fn join(&self) -> Result<Place<'_>, ApiError> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::busy(format!(
                "{} {} are waiting already; retry shortly",
                self.max, self.what
            )));
        }
        Ok(Place(&self.waiting))
    }

    /// How many wait now.
    pub fn len(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Workers of one kind, and a bound on how many requests may wait for them.
pub struct Pool {
    permits: Arc<Semaphore>,
    waiting: WaitingLine,
}

impl Pool {
    pub fn new(what: &'static str, workers: usize, waiting_max: usize) -> Pool {
        Pool {
            permits: Arc::new(Semaphore::new(workers)),
            waiting: WaitingLine::new(what, waiting_max),
        }
    }

    /// A permit, waiting if need be; `busy` at once if too many wait already.
    async fn enter(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let _place = self.waiting.join()?;
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::store("worker pool closed"))
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
    pub reports: Arc<Pool>,
    /// Lead lookups at once: their own pool, so that reports never delay them.
    pub lookups: Arc<Pool>,
    pub verifications: Arc<Pool>,
    pub replays: Arc<Semaphore>,
    /// Questions' share of the cores while ingest has a backlog.
    pub share: Arc<share::Share>,
    /// The bearer tokens accepted; `None` answers everyone (loopback, or `--insecure-no-auth`).
    pub tokens: Option<Arc<Tokens>>,
}

impl AppState {
    pub fn new(live: Arc<Live>, metrics: Arc<Metrics>) -> AppState {
        AppState {
            live,
            metrics,
            reports: Arc::new(Pool::new("report requests", REPORT_WORKERS_MAX, REPORTS_WAITING_MAX)),
            lookups: Arc::new(Pool::new(
                "lead lookup requests",
                LOOKUP_WORKERS_MAX,
                LOOKUPS_WAITING_MAX,
            )),
            verifications: Arc::new(Pool::new("verify requests", VERIFY_WORKERS_MAX, VERIFY_WAITING_MAX)),
            replays: Arc::new(Semaphore::new(REPLAYS_MAX)),
            share: Arc::new(share::Share::of_this_machine()),
            tokens: None,
        }
    }

    /// Requires a token of the right role on every route but `/` and `/health`.
    pub fn with_tokens(mut self, tokens: Tokens) -> AppState {
        self.tokens = Some(Arc::new(tokens));
        self
    }
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
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: message.into(),
        }
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: message.into(),
        }
    }
    /// Too much asked at once: retry shortly (`Retry-After: 1`).
    pub fn busy(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "busy",
            message: message.into(),
        }
    }
    pub fn timeout() -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "timeout",
            message: format!("not answered within {} s", REQUEST_TIMEOUT.as_secs()),
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

impl ApiError {
    /// The error's JSON, the same over every transport: `{"error": {"code", "message"}}`.
    pub fn body(&self) -> Vec<u8> {
        json!({"error": {"code": self.code, "message": self.message}})
            .to_string()
            .into_bytes()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, [(header::CONTENT_TYPE, "application/json")], self.body()).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        if self.code == "busy" {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

fn json_response(value: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Every route the router serves, in the order [`router`] adds them: the OpenAPI document is
/// generated from this list.
pub const ROUTES: [&str; 9] = [
    "/",
    "/health",
    "/openapi.json",
    "/metrics",
    "/v1/leads/{lead_id}",
    "/v1/attribution/explain/{lead_id}",
    "/v1/{report}",
    "/v1/audit/head",
    "/v1/audit/verify",
];

pub fn router(state: AppState) -> Router {
    let handlers: [axum::routing::MethodRouter<AppState>; 9] = [
        get(dashboard),
        get(health),
        get(openapi_json),
        get(metrics),
        get(lead),
        get(explain),
        get(report_route),
        get(audit_head),
        get(audit_verify),
    ];
    ROUTES
        .into_iter()
        .zip(handlers)
        .fold(Router::new(), |router, (path, handler)| router.route(path, handler))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorise))
        .route_layer(middleware::from_fn(within_time))
        .fallback(|| async { ApiError::not_found("no such endpoint; see DESIGN.md §5 or /openapi.json") })
        .with_state(state)
}

async fn openapi_json() -> Response {
    json_response(&openapi::document())
}

/// Lets a request through if its route is open or its bearer token's role is enough
/// ([`access`]); otherwise a JSON 401 (no token, or one not known) or 403 (too little role).
async fn authorise(
    State(state): State<AppState>,
    route: Option<MatchedPath>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let Some(tokens) = &state.tokens else {
        return next.run(request).await;
    };
    let route = route.as_ref().map_or("", |r| r.as_str());
    let Some(needed) = Role::needed_for(route) else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let refused = match presented.map(|token| tokens.holder(token)) {
        None => ApiError::unauthorized("this endpoint needs a bearer token: `Authorization: Bearer <token>`"),
        Some(None) => ApiError::unauthorized("the bearer token is not one this service knows"),
        Some(Some(holder)) if holder.role < needed => ApiError::forbidden(format!(
            "{route} needs the {} role; this token ({}) is {}",
            needed.as_str(),
            holder.name,
            holder.role.as_str()
        )),
        Some(Some(_)) => return next.run(request).await,
    };
    state.metrics.refused_requests.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(route, code = refused.code, "request refused");
    refused.into_response()
}

/// Runs a handler body inside a span, counting it, its time and its errors.
fn answered<T>(
    state: &AppState,
    name: &'static str,
    body: impl FnOnce() -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let (started, cpu) = (Instant::now(), share::thread_cpu());
    let span = info_span!("request", endpoint = name);
    let answer = span.in_scope(body);
    state.share.spend(share::thread_cpu().saturating_sub(cpu));
    let m = &state.metrics;
    let micros = started.elapsed().as_micros() as u64;
    m.queries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    m.query_micros.fetch_add(micros, std::sync::atomic::Ordering::Relaxed);
    m.observe_query(name, micros);
    if answer.is_err() {
        m.query_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    answer
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

/// The engine the time-travel parameters ask for: the live snapshot, or one built from the
/// log prefix `1..=seq`.
fn engine_for(state: &AppState, seq: Option<u64>, hung_up: &AtomicBool) -> Result<Arc<Engine>, ApiError> {
    let ledger = state.live.ledger();
    let live = state.live.snapshot();
    match seq {
        Some(s) if s != live.head().seq => {
            let _replay = state.replays.clone().try_acquire_owned().map_err(|_| {
                ApiError::busy(format!(
                    "{REPLAYS_MAX} log-prefix replay(s) running already (at_seq/known_at that the history cannot answer); retry shortly"
                ))
            })?;
            funnel_engine::replay_unless(ledger, Some(s), hung_up, |_| {}).map_err(ApiError::store)
        }
        _ => Ok(live),
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
    let health = answered(&state, "health", || Ok(health_json(&state)));
    health.map_or_else(IntoResponse::into_response, |h| json_response(&h))
}

/// `/health` and `/v1/audit/head`: the chain head and how far the engine has projected it.
pub fn health_json(state: &AppState) -> Value {
    let head = state.live.ledger().head();
    let projected = state.live.snapshot().head().seq;
    json!({"status": "ok", "log": report::Log::from(head), "projected_seq": projected})
}

async fn audit_head(State(state): State<AppState>) -> Response {
    health(State(state)).await
}

async fn audit_verify(State(state): State<AppState>) -> Response {
    let permit = match state.verifications.enter().await {
        Ok(permit) => permit,
        Err(e) => return e.into_response(),
    };
    let ledger = state.live.ledger().clone();
    let started = Instant::now();
    let verification = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        ledger.verify(|_| {})
    })
    .await;
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
    answer(state, report, None, query).await
}

/// Every route's answer, or 503 `timeout` after [`REQUEST_TIMEOUT`] (dropping the handler's
/// future sets its hang-up flag, which stops a replay).
async fn within_time(request: axum::extract::Request, next: Next) -> Response {
    tokio::time::timeout(REQUEST_TIMEOUT, next.run(request))
        .await
        .unwrap_or_else(|_| ApiError::timeout().into_response())
}

async fn lead(State(state): State<AppState>, Path(lead_id): Path<String>, RawQuery(query): RawQuery) -> Response {
    answer(state, "lead".into(), Some(lead_id), query).await
}

async fn explain(State(state): State<AppState>, Path(lead_id): Path<String>, RawQuery(query): RawQuery) -> Response {
    answer(state, "explain".into(), Some(lead_id), query).await
}

async fn answer(state: AppState, report: String, lead_id: Option<String>, query: Option<String>) -> Response {
    match ask(&state, &report, lead_id, query).await {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// One report's answer as the JSON bytes every transport sends (HTTP here, NATS request/reply
/// in `funnel serve`): parses, then answers a quick question in place; anything else is
/// computed on a blocking thread after taking a permit: expensive reports of the report pool,
/// lead lookups of their own pool. Dropping the future before it is ready (the asker hung up,
/// or the request timed out) stops a replay computing for it. The request timeout is the
/// caller's (see [`REQUEST_TIMEOUT`]).
pub async fn ask(
    state: &AppState,
    report: &str,
    lead_id: Option<String>,
    query: Option<String>,
) -> Result<Vec<u8>, ApiError> {
    let name: &'static str = REPORTS.iter().find(|r| **r == report).copied().unwrap_or("unknown");
    let request = match Request::parse(report, lead_id.as_deref(), query.as_deref()) {
        Ok(request) => request,
        Err(e) => return answered(state, name, || Err(e)),
    };
    if request.is_expensive() {
        if let Err(e) = state.share.admit(&state.metrics).await {
            return answered(state, name, || Err(e));
        }
    }
    let engine = state.live.snapshot();
    if request.is_quick(&engine) {
        return answered(state, name, || request.answer(&engine, state.live.ledger()));
    }
    drop(engine);
    let pool = if request.is_expensive() {
        &state.reports
    } else {
        &state.lookups
    };
    let permit = match pool.enter().await {
        Ok(permit) => permit,
        Err(e) => return answered(state, name, || Err(e)),
    };
    let worker = state.clone();
    let hung_up = Arc::new(AtomicBool::new(false));
    let _hang_up = HangUp(hung_up.clone());
    let computed = tokio::task::spawn_blocking(move || {
        // The permit is held for as long as the work runs, even if the asker is gone.
        let _permit = permit;
        let answer = answered(&worker, name, || {
            let ledger = worker.live.ledger();
            let seq = resolve_seq(ledger, &request.travel)?;
            if let Some(body) = seq
                .map(|s| request.answer_from_history(&worker.live.snapshot(), s, ledger))
                .transpose()?
                .flatten()
            {
                return Ok(body);
            }
            let engine = engine_for(&worker, seq, &hung_up)?;
            request.answer(&engine, ledger)
        });
        funnel_engine::heap::release_now_and_then();
        answer
    })
    .await;
    computed.unwrap_or_else(|e| Err(ApiError::store(format!("report task: {e}"))))
}

/// Sets its flag when dropped before the answer is ready: the client hung up, so a replay
/// computing for it stops at its next chunk.
struct HangUp(Arc<AtomicBool>);

impl Drop for HangUp {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let head = state.live.ledger().head().seq;
    let projected = state.live.snapshot().head().seq;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(head, projected),
    )
        .into_response()
}

async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of one worker lets one request wait and answers the next `busy` at once; a
    /// waiter that gives up frees its place.
    #[test]
    fn a_full_pool_answers_busy_instead_of_queueing_without_bound() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let pool = Arc::new(Pool::new("report requests", 1, 1));
            let working = pool.enter().await.expect("a free worker");
            let waiter = {
                let pool = pool.clone();
                tokio::spawn(async move { pool.enter().await.map(|_| ()) })
            };
            tokio::time::sleep(Duration::from_millis(20)).await;
            let refused = pool.enter().await.expect_err("one waits already");
            assert_eq!(
                (refused.status, refused.code),
                (StatusCode::SERVICE_UNAVAILABLE, "busy")
            );
            waiter.abort();
            let _ = waiter.await;
            assert_eq!(pool.waiting.len(), 0, "the waiter that gave up is counted out");
            let again = {
                let pool = pool.clone();
                tokio::spawn(async move { pool.enter().await.map(|_| ()) })
            };
            drop(working);
            again.await.expect("join").expect("the next waiter gets the worker");
        });
    }
}

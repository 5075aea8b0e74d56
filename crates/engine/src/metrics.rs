//! Counters for `/metrics`, shared by ingest, the projector and the query service.

use std::sync::atomic::{AtomicU64, Ordering};

use funnel_core::Reason;

const REASONS: [Reason; 6] = [
    Reason::Malformed,
    Reason::Invalid,
    Reason::Oversize,
    Reason::SubjectMismatch,
    Reason::IdConflict,
    Reason::UnknownTarget,
];

#[derive(Debug, Default)]
pub struct Metrics {
    pub ingest_batches: AtomicU64,
    pub ingest_stored: AtomicU64,
    pub ingest_duplicates: AtomicU64,
    dlq: [AtomicU64; 6],
    pub queries: AtomicU64,
    pub query_micros: AtomicU64,
    pub query_errors: AtomicU64,
    /// HTTP requests refused for want of a token or of role (401, 403).
    pub refused_requests: AtomicU64,
}

impl Metrics {
    pub fn count_dlq(&self, reason: Reason) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.dlq[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self, ledger_head: u64, projected: u64) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, u64)>| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, value) in lines {
                out.push_str(&format!("{name}{labels} {value}\n"));
            }
        };
        metric(
            "funnel_ingest_batches_total",
            "counter",
            "Ingest batches appended.",
            vec![(String::new(), get(&self.ingest_batches))],
        );
        metric(
            "funnel_ingest_events_total",
            "counter",
            "Events stored in the ledger.",
            vec![(String::new(), get(&self.ingest_stored))],
        );
        metric(
            "funnel_ingest_duplicates_total",
            "counter",
            "Exact duplicates counted, not stored.",
            vec![(String::new(), get(&self.ingest_duplicates))],
        );
        metric(
            "funnel_dlq_total",
            "counter",
            "Events refused, by reason.",
            REASONS
                .iter()
                .zip(&self.dlq)
                .map(|(r, c)| (format!("{{reason=\"{}\"}}", r.as_str()), get(c)))
                .collect(),
        );
        metric(
            "funnel_ledger_head_seq",
            "gauge",
            "Last seq in the ledger.",
            vec![(String::new(), ledger_head)],
        );
        metric(
            "funnel_projector_lag_entries",
            "gauge",
            "Ledger entries not yet projected.",
            vec![(String::new(), ledger_head.saturating_sub(projected))],
        );
        metric(
            "funnel_queries_total",
            "counter",
            "HTTP queries answered.",
            vec![(String::new(), get(&self.queries))],
        );
        metric(
            "funnel_query_errors_total",
            "counter",
            "HTTP queries answered with an error.",
            vec![(String::new(), get(&self.query_errors))],
        );
        metric(
            "funnel_http_refused_total",
            "counter",
            "HTTP requests refused: no bearer token, an unknown one, or too little role.",
            vec![(String::new(), get(&self.refused_requests))],
        );
        metric(
            "funnel_query_micros_total",
            "counter",
            "Time spent answering queries, microseconds.",
            vec![(String::new(), get(&self.query_micros))],
        );
        out
    }
}

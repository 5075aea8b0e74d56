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

/// Endpoints the query latency histogram is kept for (anything else counts as `unknown`).
const ENDPOINTS: [&str; 11] = [
    "funnel",
    "velocity",
    "sla",
    "rejections",
    "cost",
    "plan",
    "lead",
    "attribution",
    "explain",
    "health",
    "unknown",
];

/// Upper bounds of the latency buckets, microseconds (1 ms … 30 s).
const BUCKETS_MICROS: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 10_000_000,
    30_000_000,
];

/// Per endpoint: a count per bucket (cumulative when rendered), the count and the sum.
#[derive(Debug, Default)]
struct Latency {
    buckets: [AtomicU64; 13],
    count: AtomicU64,
    micros: AtomicU64,
}

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
    /// Messages JetStream holds for the ingest consumer and has not delivered yet, as of the
    /// last message delivered (its `num_pending`).
    pub consumer_pending: AtomicU64,
    /// Reports that waited for their share of the cores while ingest had a backlog, and the
    /// microseconds they waited in all.
    pub share_waits: AtomicU64,
    pub share_wait_micros: AtomicU64,
    latency: [Latency; 11],
}

impl Metrics {
    pub fn count_dlq(&self, reason: Reason) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.dlq[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one answered query of `endpoint` that took `micros`.
    pub fn observe_query(&self, endpoint: &str, micros: u64) {
        let i = ENDPOINTS
            .iter()
            .position(|e| *e == endpoint)
            .unwrap_or(ENDPOINTS.len() - 1);
        let l = &self.latency[i];
        if let Some(b) = BUCKETS_MICROS.iter().position(|bound| micros <= *bound) {
            l.buckets[b].fetch_add(1, Ordering::Relaxed);
        }
        l.count.fetch_add(1, Ordering::Relaxed);
        l.micros.fetch_add(micros, Ordering::Relaxed);
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
        metric(
            "funnel_consumer_pending_messages",
            "gauge",
            "Messages JetStream holds for the ingest consumer, not delivered yet (consumer lag).",
            vec![(String::new(), get(&self.consumer_pending))],
        );
        metric(
            "funnel_share_waits_total",
            "counter",
            "Reports that waited for their share of the cores while ingest had a backlog.",
            vec![(String::new(), get(&self.share_waits))],
        );
        metric(
            "funnel_share_wait_micros_total",
            "counter",
            "Time reports waited for their share of the cores, microseconds.",
            vec![(String::new(), get(&self.share_wait_micros))],
        );
        let name = "funnel_query_duration_seconds";
        out.push_str(&format!(
            "# HELP {name} Time to answer a query (HTTP or NATS), by endpoint.\n# TYPE {name} histogram\n"
        ));
        for (endpoint, l) in ENDPOINTS.iter().zip(&self.latency) {
            let mut cumulative = 0;
            for (bound, count) in BUCKETS_MICROS.iter().zip(&l.buckets) {
                cumulative += get(count);
                let le = *bound as f64 / 1e6;
                out.push_str(&format!(
                    "{name}_bucket{{endpoint=\"{endpoint}\",le=\"{le}\"}} {cumulative}\n"
                ));
            }
            let count = get(&l.count);
            out.push_str(&format!(
                "{name}_bucket{{endpoint=\"{endpoint}\",le=\"+Inf\"}} {count}\n"
            ));
            out.push_str(&format!(
                "{name}_sum{{endpoint=\"{endpoint}\"}} {}\n",
                get(&l.micros) as f64 / 1e6
            ));
            out.push_str(&format!("{name}_count{{endpoint=\"{endpoint}\"}} {count}\n"));
        }
        out
    }
}

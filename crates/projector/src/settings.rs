//! Every name and limit of ingest and the projector, in one place.

use std::time::Duration;

/// Stream, consumer and limits. `Settings::default()` is what `funnel serve` uses.
#[derive(Debug, Clone)]
pub struct Settings {
    /// JetStream stream holding published events.
    pub stream: String,
    pub stream_subjects: String,
    /// Stream holding refused events, one subject per reason.
    pub dlq_stream: String,
    pub dlq_subjects: String,
    /// Durable pull consumer that ingest reads with.
    pub consumer: String,
    /// JetStream's `Nats-Msg-Id` dedup window (a first filter only; the ledger dedups for good).
    pub duplicate_window: Duration,
    /// Largest message the stream accepts; larger than the event limit, so oversize events
    /// reach ingest and land in the DLQ with a reason instead of bouncing at publish.
    pub stream_message_bytes_max: i32,
    /// Messages taken per ingest batch (one ledger append + one flush + acks).
    pub batch_events_max: usize,
    /// How long a batch waits to fill after its first message: one flush then covers more events.
    pub batch_linger: Duration,
    /// How long JetStream waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Unacknowledged messages the consumer hands out at once.
    pub ack_pending_max: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            stream: "FUNNEL".into(),
            stream_subjects: "funnel.events.>".into(),
            dlq_stream: "FUNNEL_DLQ".into(),
            dlq_subjects: "funnel.dlq.>".into(),
            consumer: "funnel-ingest".into(),
            duplicate_window: Duration::from_secs(120),
            stream_message_bytes_max: 1024 * 1024,
            batch_events_max: 4_000,
            batch_linger: Duration::from_millis(5),
            ack_wait: Duration::from_secs(30),
            ack_pending_max: 20_000,
        }
    }
}

impl Settings {
    /// The defaults, with the operational overrides an operator (or a test) may set:
    /// `FUNNEL_ACK_WAIT_MS`, `FUNNEL_BATCH_EVENTS_MAX`.
    /// Consumer settings apply when the durable consumer is created.
    pub fn from_env() -> Result<Settings, String> {
        let mut settings = Settings::default();
        let read = |name: &str| -> Result<Option<u64>, String> {
            match std::env::var(name) {
                Err(_) => Ok(None),
                Ok(v) => v
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| format!("{name}: `{v}` is not a whole number")),
            }
        };
        if let Some(ms) = read("FUNNEL_ACK_WAIT_MS")? {
            settings.ack_wait = Duration::from_millis(ms.max(100));
        }
        if let Some(n) = read("FUNNEL_BATCH_EVENTS_MAX")? {
            settings.batch_events_max = usize::try_from(n.clamp(1, 100_000)).unwrap_or(4_000);
        }
        Ok(settings)
    }
}

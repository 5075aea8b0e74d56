//! Ingest: JetStream pull consumer → validate → ledger append → flush → DLQ → ack.
//!
//! Order matters and is the durability argument: nothing is acked before the ledger flush
//! (a crash before ack means redelivery, and the ledger's id index makes redelivery a no-op),
//! and a refused event is acked only after its DLQ record is stored by JetStream.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::{self, consumer::pull, stream};
use async_nats::HeaderMap;
use funnel_core::event::Data;
use funnel_core::{Event, Reason, Rejection};
use funnel_ledger::{Appended, Candidate, Ledger};
use futures::StreamExt;
use tokio::sync::watch;
use tracing::{info, info_span, warn, Instrument};

use crate::{now_micros, Metrics, ProjectorError, Settings};

/// Headers on a DLQ record.
pub const DLQ_ERROR_HEADER: &str = "Funnel-Error";
pub const DLQ_SUBJECT_HEADER: &str = "Funnel-Subject";
pub const DLQ_STREAM_SEQ_HEADER: &str = "Funnel-Stream-Seq";

/// Test-only fault: abort the process after this many batches are flushed, before acking.
pub const CRASH_AFTER_APPEND_ENV: &str = "FUNNEL_CRASH_AFTER_APPEND";

/// Creates the event stream and the DLQ stream if they are absent.
pub async fn ensure_streams(js: &jetstream::Context, settings: &Settings) -> Result<stream::Stream, ProjectorError> {
    let events = js
        .get_or_create_stream(stream::Config {
            name: settings.stream.clone(),
            subjects: vec![settings.stream_subjects.clone()],
            storage: stream::StorageType::File,
            duplicate_window: settings.duplicate_window,
            max_message_size: settings.stream_message_bytes_max,
            ..Default::default()
        })
        .await
        .map_err(|e| ProjectorError::Nats(format!("create stream {}: {e}", settings.stream)))?;
    js.get_or_create_stream(stream::Config {
        name: settings.dlq_stream.clone(),
        subjects: vec![settings.dlq_subjects.clone()],
        storage: stream::StorageType::File,
        duplicate_window: settings.duplicate_window,
        max_message_size: settings.stream_message_bytes_max,
        ..Default::default()
    })
    .await
    .map_err(|e| ProjectorError::Nats(format!("create stream {}: {e}", settings.dlq_stream)))?;
    Ok(events)
}

/// One message's verdict before the ledger sees it.
struct Verdict {
    message: jetstream::Message,
    stream_seq: u64,
    outcome: Result<(Event, Option<String>), Rejection>,
}

/// Runs ingest until `shutdown` turns true. Sends the ledger head on `head` after every batch.
pub async fn run(
    js: jetstream::Context,
    ledger: Ledger,
    settings: Settings,
    metrics: Arc<Metrics>,
    head: watch::Sender<u64>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ProjectorError> {
    let stream = ensure_streams(&js, &settings).await?;
    let consumer = stream
        .get_or_create_consumer(
            &settings.consumer,
            pull::Config {
                durable_name: Some(settings.consumer.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: settings.ack_wait,
                max_ack_pending: settings.ack_pending_max,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| ProjectorError::Nats(format!("create consumer: {e}")))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(settings.batch_events_max)
        .messages()
        .await
        .map_err(|e| ProjectorError::Nats(format!("pull: {e}")))?;
    let crash_after: Option<u64> = std::env::var(CRASH_AFTER_APPEND_ENV).ok().and_then(|v| v.parse().ok());
    let mut batch_no = 0u64;
    // The previous batch's DLQ records and acks, sent while this batch is judged, appended and
    // flushed: at most one batch behind, and never before its own flush.
    let mut settling: Option<tokio::task::JoinHandle<()>> = None;
    info!(stream = %settings.stream, consumer = %settings.consumer, "ingest started");
    loop {
        let first = tokio::select! {
            _ = shutdown.changed() => {
                if let Some(previous) = settling.take() {
                    let _ = previous.await;
                }
                return Ok(());
            }
            first = messages.next() => first,
        };
        let Some(first) = first else {
            return Err(ProjectorError::Nats("message stream ended".into()));
        };
        // Fill the batch for up to `batch_linger` after its first message.
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + settings.batch_linger;
        while batch.len() < settings.batch_events_max {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(item)) => batch.push(item),
                _ => break,
            }
        }
        let mut received = Vec::with_capacity(batch.len());
        for item in batch {
            match item {
                Ok(message) => received.push(message),
                Err(e) => warn!(error = %e, "pull error; continuing"),
            }
        }
        if received.is_empty() {
            continue;
        }
        batch_no += 1;
        let span = info_span!("ingest_batch", batch = batch_no, messages = received.len());
        let settle = ingest_batch(
            &js,
            &ledger,
            &metrics,
            received,
            crash_after.is_some_and(|n| batch_no >= n),
        )
        .instrument(span.clone())
        .await?;
        head.send_replace(ledger.head().seq);
        if let Some(previous) = settling.take() {
            let _ = previous.await;
        }
        settling = Some(tokio::spawn(settle.instrument(span)));
    }
}

/// Judges, appends and flushes one batch; returns what is left to do once it is durable:
/// publish its refusals to the DLQ and ack its messages.
async fn ingest_batch(
    js: &jetstream::Context,
    ledger: &Ledger,
    metrics: &Arc<Metrics>,
    messages: Vec<jetstream::Message>,
    crash_before_ack: bool,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, ProjectorError> {
    let verdicts = judge(ledger, messages)?;
    let candidates: Vec<Candidate> = verdicts
        .iter()
        .filter_map(|v| {
            let (event, lead) = v.outcome.as_ref().ok()?;
            Some(Candidate {
                event,
                stream_seq: v.stream_seq,
                lead_id: lead.as_deref(),
            })
        })
        .collect();
    let appended = tokio::task::block_in_place(|| -> Result<_, ProjectorError> {
        let appended = ledger.append_batch(&candidates, now_micros())?;
        ledger.flush()?;
        Ok(appended)
    })?;
    if crash_before_ack {
        warn!("{CRASH_AFTER_APPEND_ENV}: aborting after flush, before ack");
        std::process::abort();
    }
    let mut appended = appended.into_iter();
    let mut refused = Vec::new();
    let mut to_ack = Vec::with_capacity(verdicts.len());
    for verdict in verdicts {
        let refusal = match &verdict.outcome {
            Err(rejection) => Some(rejection.clone()),
            Ok((event, _)) => match appended.next() {
                Some(Appended::Stored(_)) => {
                    metrics.ingest_stored.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    None
                }
                Some(Appended::Duplicate(_)) => {
                    metrics
                        .ingest_duplicates
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    None
                }
                Some(Appended::Conflict(seq)) => Some(Rejection::new(
                    Reason::IdConflict,
                    format!(
                        "id `{}` is already stored at seq {seq} with different content",
                        event.id
                    ),
                )),
                None => unreachable!("the ledger answers once per candidate"),
            },
        };
        match refusal {
            None => to_ack.push(verdict.message),
            Some(rejection) => refused.push((verdict, rejection)),
        }
    }
    let (js, metrics) = (js.clone(), Arc::clone(metrics));
    Ok(settle(js, metrics, refused, to_ack))
}

/// Publishes a durable batch's refusals to the DLQ, then acks every message whose outcome is
/// stored: the stored events, and the refusals JetStream confirmed.
async fn settle(
    js: jetstream::Context,
    metrics: Arc<Metrics>,
    refused: Vec<(Verdict, Rejection)>,
    mut to_ack: Vec<jetstream::Message>,
) {
    let mut dlq_acks = Vec::new();
    for (verdict, rejection) in refused {
        metrics.count_dlq(rejection.reason);
        warn!(stream_seq = verdict.stream_seq, reason = rejection.reason.as_str(), error = %rejection.message, "refused");
        let mut headers = HeaderMap::new();
        headers.insert(DLQ_ERROR_HEADER, rejection.message.replace(['\r', '\n'], " ").as_str());
        headers.insert(DLQ_SUBJECT_HEADER, verdict.message.subject.as_str());
        headers.insert(DLQ_STREAM_SEQ_HEADER, verdict.stream_seq.to_string().as_str());
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("dlq-{}", verdict.stream_seq).as_str(),
        );
        let subject = format!("funnel.dlq.{}", rejection.reason.as_str());
        let ack = js
            .publish_with_headers(subject, headers, verdict.message.payload.clone())
            .await;
        dlq_acks.push((ack, verdict.message));
    }
    for (ack, message) in dlq_acks {
        let stored = match ack {
            Ok(future) => future.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match stored {
            Ok(_) => to_ack.push(message),
            // Not acked: JetStream redelivers it and we try the DLQ again. Nothing is lost.
            Err(e) => warn!(error = %e, "DLQ publish failed; leaving the message unacked"),
        }
    }
    let last = to_ack.pop();
    for message in to_ack {
        if let Err(e) = message.ack().await {
            warn!(error = %e, "ack failed; expect a redelivery");
        }
    }
    if let Some(message) = last {
        if let Err(e) = message.double_ack().await {
            warn!(error = %e, "double ack failed; expect a redelivery");
        }
    }
    metrics
        .ingest_batches
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Decodes and validates every message, and resolves retraction targets against the ledger
/// and the events earlier in the same batch.
fn judge(ledger: &Ledger, messages: Vec<jetstream::Message>) -> Result<Vec<Verdict>, ProjectorError> {
    let mut earlier: HashMap<String, Event> = HashMap::new();
    let mut verdicts = Vec::with_capacity(messages.len());
    for message in messages {
        let stream_seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let content_type = message
            .headers
            .as_ref()
            .and_then(|h| h.get(funnel_producer::CONTENT_TYPE))
            .map(|v| v.as_str());
        let decoded = funnel_producer::decode(content_type, &message.payload)
            .and_then(|event| event.check_subject(message.subject.as_str()).map(|()| event));
        let outcome = match decoded {
            Err(rejection) => Err(rejection),
            Ok(event) => {
                let lead = match &event.data {
                    Data::Retract { target_id, .. } => {
                        let target = match earlier.get(target_id) {
                            Some(e) => Some(e.clone()),
                            None => ledger.find(target_id)?.map(|entry| entry.event),
                        };
                        retraction_lead(&event, target.as_ref())
                    }
                    _ => Ok(event.lead_id.clone()),
                };
                lead.map(|lead| (event, lead))
            }
        };
        if let Ok((event, _)) = &outcome {
            earlier.entry(event.id.clone()).or_insert_with(|| event.clone());
        }
        verdicts.push(Verdict {
            message,
            stream_seq,
            outcome,
        });
    }
    Ok(verdicts)
}

/// The lead a retraction is filed under, or why it is refused.
fn retraction_lead(retract: &Event, target: Option<&Event>) -> Result<Option<String>, Rejection> {
    let Data::Retract { target_id, .. } = &retract.data else {
        return Ok(retract.lead_id.clone());
    };
    let target =
        target.ok_or_else(|| Rejection::new(Reason::UnknownTarget, format!("no event with id `{target_id}`")))?;
    if matches!(target.data, Data::Retract { .. }) {
        return Err(Rejection::new(
            Reason::UnknownTarget,
            format!("`{target_id}` is a retraction; retractions cannot be retracted"),
        ));
    }
    match (&retract.lead_id, &target.lead_id) {
        (Some(mine), theirs) if Some(mine) != theirs.as_ref() => Err(Rejection::new(
            Reason::Invalid,
            format!("lead_id `{mine}` does not match the target's lead {theirs:?}"),
        )),
        _ => Ok(target.lead_id.clone()),
    }
}

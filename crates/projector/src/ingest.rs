//! Ingest: JetStream pull consumer → validate → ledger append → flush → DLQ → ack, as a
//! pipeline of three stages that overlap:
//!
//! 1. the async loop receives a batch and decodes and validates it (no ledger access);
//! 2. the appender, a thread of its own, resolves retraction targets against the ledger (which
//!    by then holds every earlier batch), appends and flushes;
//! 3. a task per durable batch publishes its refusals to the DLQ and acks the batch (one ack on
//!    its last message: the consumer acks all, see ARCHITECTURE.md).
//!
//! While batch N is appended, batch N+1 is received and decoded and batch N−1 is acked.
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

/// One message's verdict before the ledger sees it: the decoded event, or why it is refused.
/// `M` is the message itself (a JetStream message; the simulation's own in its tests).
pub struct Decoded<M> {
    pub message: M,
    pub stream_seq: u64,
    pub outcome: Result<Event, Rejection>,
}

/// One message's verdict once retraction targets are resolved: the event, or why it is refused.
struct Verdict<M> {
    message: M,
    stream_seq: u64,
    outcome: Result<Event, Rejection>,
}

/// What ingest made of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Filed {
    /// Stored at this seq.
    Stored(u64),
    /// The same event is already stored at this seq: nothing written.
    Duplicate(u64),
    /// Refused: for the DLQ.
    Refused(Rejection),
}

/// Decodes and validates one message and checks its subject.
pub fn decode(subject: &str, content_type: Option<&str>, payload: &[u8]) -> Result<Event, Rejection> {
    funnel_producer::decode(content_type, payload).and_then(|event| event.check_subject(subject).map(|()| event))
}

/// Everything ingest decides about a batch: resolves retraction targets, appends what is valid
/// (recorded at `now`; not yet flushed) and says what became of each message, in order.
/// Where the messages come from is the caller's: JetStream in [`run`], a simulated stream in
/// `tests/simulation.rs`.
pub fn file_batch<M>(
    ledger: &Ledger,
    decoded: Vec<Decoded<M>>,
    now: i64,
) -> Result<Vec<(M, u64, Filed)>, ProjectorError> {
    let verdicts = resolve(ledger, decoded)?;
    let candidates: Vec<Candidate> = verdicts
        .iter()
        .filter_map(|v| {
            let event = v.outcome.as_ref().ok()?;
            Some(Candidate {
                event,
                stream_seq: v.stream_seq,
            })
        })
        .collect();
    let appended = ledger.append_batch(&candidates, now)?;
    let mut appended = appended.into_iter();
    let mut filed = Vec::with_capacity(verdicts.len());
    for verdict in verdicts {
        let outcome = match verdict.outcome {
            Err(rejection) => Filed::Refused(rejection),
            Ok(event) => match appended.next() {
                Some(Appended::Stored(seq)) => Filed::Stored(seq),
                Some(Appended::Duplicate(seq)) => Filed::Duplicate(seq),
                Some(Appended::Conflict(seq)) => Filed::Refused(Rejection::new(
                    Reason::IdConflict,
                    format!(
                        "id `{}` is already stored at seq {seq} with different content",
                        event.id
                    ),
                )),
                None => unreachable!("the ledger answers once per candidate"),
            },
        };
        filed.push((verdict.message, verdict.stream_seq, outcome));
    }
    Ok(filed)
}

/// A decoded batch on its way to the appender.
struct Batch {
    no: u64,
    decoded: Vec<Decoded<jetstream::Message>>,
    span: tracing::Span,
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
    let consumer = open_consumer(&stream, &settings).await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(settings.batch_events_max)
        .messages()
        .await
        .map_err(|e| ProjectorError::Nats(format!("pull: {e}")))?;
    let crash_after: Option<u64> = std::env::var(CRASH_AFTER_APPEND_ENV).ok().and_then(|v| v.parse().ok());
    // One batch waits for the appender while it appends another.
    let (to_appender, batches) = tokio::sync::mpsc::channel::<Batch>(1);
    let appender = {
        let runtime = tokio::runtime::Handle::current();
        let (ledger, metrics) = (ledger.clone(), Arc::clone(&metrics));
        std::thread::Builder::new()
            .name("appender".into())
            .spawn(move || append_batches(runtime, js, ledger, metrics, head, batches, crash_after))
            .map_err(|e| ProjectorError::Nats(format!("start the appender thread: {e}")))?
    };
    let received = receive_batches(&mut messages, &settings, &metrics, to_appender, &mut shutdown).await;
    // The appender ends once the channel is closed and the batches in it are durable and acked.
    let appended = tokio::task::spawn_blocking(move || appender.join())
        .await
        .map_err(|e| ProjectorError::Nats(format!("appender thread: {e}")))?
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    appended.and(received)
}

/// Opens the durable consumer with `AckPolicy::All`: one ack per batch, on its last message,
/// acknowledges the whole batch (and every earlier message, which is acked already: batches
/// settle in order).
///
/// An ack-all acknowledges every message delivered before it, including any a previous process
/// received and died with, which would be acked without ever being stored. So a consumer with
/// deliveries past its ack floor is replaced by one that starts right after the floor: every
/// message not acked comes again, in order, to this process. The same holds for a consumer
/// created by an older version with per-message acks (JetStream refuses to change an ack
/// policy in place); messages above its floor that were acked one by one come again and are
/// duplicates, a no-op. One service per consumer, as ack-all requires.
async fn open_consumer(
    stream: &stream::Stream,
    settings: &Settings,
) -> Result<jetstream::consumer::PullConsumer, ProjectorError> {
    use jetstream::consumer::{AckPolicy, DeliverPolicy};
    let mut deliver_policy = DeliverPolicy::All;
    if let Ok(old) = stream.consumer_info(&settings.consumer).await {
        let floor = old.ack_floor.stream_sequence;
        let policy = old.config.ack_policy;
        if policy != AckPolicy::All || old.delivered.stream_sequence > floor {
            stream
                .delete_consumer(&settings.consumer)
                .await
                .map_err(|e| ProjectorError::Nats(format!("replace consumer {}: {e}", settings.consumer)))?;
            info!(consumer = %settings.consumer, ack_floor = floor, delivered = old.delivered.stream_sequence, ?policy,
                "consumer replaced to resume right after its ack floor");
            deliver_policy = DeliverPolicy::ByStartSequence {
                start_sequence: floor + 1,
            };
        }
    }
    stream
        .get_or_create_consumer(&settings.consumer, consumer_config(settings, deliver_policy))
        .await
        .map_err(|e| ProjectorError::Nats(format!("create consumer: {e}")))
}

fn consumer_config(settings: &Settings, deliver_policy: jetstream::consumer::DeliverPolicy) -> pull::Config {
    pull::Config {
        durable_name: Some(settings.consumer.clone()),
        ack_policy: jetstream::consumer::AckPolicy::All,
        deliver_policy,
        ack_wait: settings.ack_wait,
        max_ack_pending: settings.ack_pending_max,
        ..Default::default()
    }
}

/// Points the durable consumer at stream seq `start`: the next [`run`] receives every message
/// the stream still holds from there on (`funnel recover`, after salvaging a ledger prefix).
pub async fn rewind(js: &jetstream::Context, settings: &Settings, start: u64) -> Result<(), ProjectorError> {
    let stream = ensure_streams(js, settings).await?;
    if stream.consumer_info(&settings.consumer).await.is_ok() {
        stream
            .delete_consumer(&settings.consumer)
            .await
            .map_err(|e| ProjectorError::Nats(format!("rewind consumer {}: {e}", settings.consumer)))?;
    }
    let deliver_policy = jetstream::consumer::DeliverPolicy::ByStartSequence {
        start_sequence: start.max(1),
    };
    stream
        .create_consumer(consumer_config(settings, deliver_policy))
        .await
        .map_err(|e| ProjectorError::Nats(format!("rewind consumer {}: {e}", settings.consumer)))?;
    Ok(())
}

/// Whether the durable consumer has handed out and seen acked everything the stream holds:
/// every message stored in the ledger or filed in the DLQ.
pub async fn caught_up(js: &jetstream::Context, settings: &Settings) -> Result<bool, ProjectorError> {
    let stream = js
        .get_stream(&settings.stream)
        .await
        .map_err(|e| ProjectorError::Nats(format!("stream {}: {e}", settings.stream)))?;
    let info = stream
        .consumer_info(&settings.consumer)
        .await
        .map_err(|e| ProjectorError::Nats(format!("consumer {}: {e}", settings.consumer)))?;
    Ok(info.num_pending == 0 && info.num_ack_pending == 0)
}

/// Stage 1: receives batches and decodes them, until shutdown or until the appender stops.
async fn receive_batches(
    messages: &mut pull::Stream,
    settings: &Settings,
    metrics: &Metrics,
    to_appender: tokio::sync::mpsc::Sender<Batch>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), ProjectorError> {
    let mut batch_no = 0u64;
    let mut delivered: Option<u64> = None;
    info!(stream = %settings.stream, consumer = %settings.consumer, "ingest started");
    loop {
        let first = tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            // The appender stopped on an error; `run` reports it.
            _ = to_appender.closed() => return Ok(()),
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
                Ok(message) => {
                    // Deliveries are numbered without gaps; a gap is a message this process
                    // never saw, and the next ack-all would acknowledge it.
                    let delivery = message.info().map(|i| i.consumer_sequence).unwrap_or(0);
                    if let Some(last) = delivered.filter(|last| delivery != last + 1) {
                        return Err(ProjectorError::Nats(format!(
                            "delivery {delivery} follows delivery {last} (a message was lost on the way); stopping before an ack could acknowledge it: restart to resume after the ack floor"
                        )));
                    }
                    delivered = Some(delivery);
                    if let Ok(info) = message.info() {
                        metrics
                            .consumer_pending
                            .store(info.pending, std::sync::atomic::Ordering::Relaxed);
                    }
                    received.push(message);
                }
                Err(e) => warn!(error = %e, "pull error; continuing"),
            }
        }
        if received.is_empty() {
            continue;
        }
        batch_no += 1;
        let span = info_span!("ingest_batch", batch = batch_no, messages = received.len());
        let decoded = span.in_scope(|| decode_batch(received));
        let batch = Batch {
            no: batch_no,
            decoded,
            span,
        };
        if to_appender.send(batch).await.is_err() {
            // The appender stopped on an error; `run` reports it.
            return Ok(());
        }
    }
}

/// Stages 2 and 3: appends and flushes each batch on this thread, then hands its DLQ records
/// and its ack to a task, at most one batch behind. Batches settle in order, so the ack of
/// batch N (which acknowledges everything up to its last message) follows batch N−1's.
fn append_batches(
    runtime: tokio::runtime::Handle,
    js: jetstream::Context,
    ledger: Ledger,
    metrics: Arc<Metrics>,
    head: watch::Sender<u64>,
    mut batches: tokio::sync::mpsc::Receiver<Batch>,
    crash_after: Option<u64>,
) -> Result<(), ProjectorError> {
    let mut settling: Option<tokio::task::JoinHandle<Result<(), ProjectorError>>> = None;
    let settled = |handle: tokio::task::JoinHandle<Result<(), ProjectorError>>| {
        runtime
            .block_on(handle)
            .map_err(|e| ProjectorError::Nats(format!("settle task: {e}")))?
    };
    let result = (|| {
        while let Some(batch) = batches.blocking_recv() {
            let span = batch.span.clone();
            let crash = crash_after.is_some_and(|n| batch.no >= n);
            let settle = span.in_scope(|| ingest_batch(&js, &ledger, &metrics, batch.decoded, crash))?;
            head.send_replace(ledger.head().seq);
            if let Some(previous) = settling.take() {
                settled(previous)?;
            }
            settling = Some(runtime.spawn(settle.instrument(span)));
        }
        Ok(())
    })();
    let last = settling.take().map_or(Ok(()), settled);
    result.and(last)
}

/// Resolves, appends and flushes one batch; returns what is left to do once it is durable:
/// publish its refusals to the DLQ and ack the batch.
fn ingest_batch(
    js: &jetstream::Context,
    ledger: &Ledger,
    metrics: &Arc<Metrics>,
    decoded: Vec<Decoded<jetstream::Message>>,
    crash_before_ack: bool,
) -> Result<impl std::future::Future<Output = Result<(), ProjectorError>> + Send + 'static, ProjectorError> {
    let filed = file_batch(ledger, decoded, now_micros())?;
    ledger.flush()?;
    if crash_before_ack {
        warn!("{CRASH_AFTER_APPEND_ENV}: aborting after flush, before ack");
        std::process::abort();
    }
    let last = filed.last().map(|(message, _, _)| message.clone());
    let mut refused = Vec::new();
    for (message, stream_seq, outcome) in filed {
        match outcome {
            Filed::Stored(_) => {
                metrics.ingest_stored.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Filed::Duplicate(_) => {
                metrics
                    .ingest_duplicates
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Filed::Refused(rejection) => refused.push((message, stream_seq, rejection)),
        }
    }
    let (js, metrics) = (js.clone(), Arc::clone(metrics));
    Ok(settle(js, metrics, refused, last))
}

/// How often a DLQ record is offered to JetStream before ingest gives up (and stops, acking
/// nothing past it), and the first pause between tries (doubled each time).
const DLQ_TRIES: u32 = 6;
const DLQ_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// Publishes a durable batch's refusals to the DLQ, waits until JetStream has stored every one,
/// then acks the batch with one ack on its last message (the consumer acks all). A refusal the
/// DLQ will not take stops ingest with an error instead: acking past it would lose it, and left
/// unacked it comes again after a restart.
async fn settle(
    js: jetstream::Context,
    metrics: Arc<Metrics>,
    refused: Vec<(jetstream::Message, u64, Rejection)>,
    last: Option<jetstream::Message>,
) -> Result<(), ProjectorError> {
    let mut pending = Vec::with_capacity(refused.len());
    for (message, stream_seq, rejection) in &refused {
        metrics.count_dlq(rejection.reason);
        warn!(stream_seq, reason = rejection.reason.as_str(), error = %rejection.message, "refused");
        pending.push(publish_dlq(&js, message, *stream_seq, rejection).await);
    }
    for ((message, stream_seq, rejection), first_try) in refused.iter().zip(pending) {
        let mut stored = confirmed(first_try).await;
        let mut pause = DLQ_RETRY_PAUSE;
        for _ in 1..DLQ_TRIES {
            let Err(e) = &stored else { break };
            warn!(stream_seq, error = %e, "DLQ publish failed; trying again");
            tokio::time::sleep(pause).await;
            pause *= 2;
            stored = confirmed(publish_dlq(&js, message, *stream_seq, rejection).await).await;
        }
        if let Err(e) = stored {
            return Err(ProjectorError::Nats(format!(
                "the DLQ did not store the refusal of stream seq {stream_seq} after {DLQ_TRIES} tries ({e}); stopping before acking past it"
            )));
        }
    }
    if let Some(message) = last {
        if let Err(e) = message.double_ack().await {
            warn!(error = %e, "batch ack failed; expect a redelivery");
        }
    }
    metrics
        .ingest_batches
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Sends one refusal to `funnel.dlq.<reason>`; the returned future resolves once JetStream
/// has stored it. The message id makes a retry (or a redelivery's second refusal) a duplicate.
async fn publish_dlq(
    js: &jetstream::Context,
    message: &jetstream::Message,
    stream_seq: u64,
    rejection: &Rejection,
) -> Result<jetstream::context::PublishAckFuture, String> {
    let mut headers = HeaderMap::new();
    headers.insert(DLQ_ERROR_HEADER, rejection.message.replace(['\r', '\n'], " ").as_str());
    headers.insert(DLQ_SUBJECT_HEADER, message.subject.as_str());
    headers.insert(DLQ_STREAM_SEQ_HEADER, stream_seq.to_string().as_str());
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("dlq-{stream_seq}").as_str(),
    );
    let subject = format!("funnel.dlq.{}", rejection.reason.as_str());
    js.publish_with_headers(subject, headers, message.payload.clone())
        .await
        .map_err(|e| e.to_string())
}

/// Waits until JetStream confirms it stored a published DLQ record.
async fn confirmed(published: Result<jetstream::context::PublishAckFuture, String>) -> Result<(), String> {
    published?.await.map(drop).map_err(|e| e.to_string())
}

/// Decodes and validates every message and checks its subject: no ledger access, so it runs
/// while the previous batch is appended.
fn decode_batch(messages: Vec<jetstream::Message>) -> Vec<Decoded<jetstream::Message>> {
    messages
        .into_iter()
        .map(|message| {
            let stream_seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
            let content_type = message
                .headers
                .as_ref()
                .and_then(|h| h.get(funnel_producer::CONTENT_TYPE))
                .map(|v| v.as_str());
            let outcome = decode(message.subject.as_str(), content_type, &message.payload);
            Decoded {
                message,
                stream_seq,
                outcome,
            }
        })
        .collect()
}

/// Resolves retraction targets against the ledger (which holds every earlier batch) and the
/// events earlier in the same batch.
fn resolve<M>(ledger: &Ledger, decoded: Vec<Decoded<M>>) -> Result<Vec<Verdict<M>>, ProjectorError> {
    let is_retract = |d: &Decoded<M>| matches!(&d.outcome, Ok(e) if matches!(e.data, Data::Retract { .. }));
    // Where each id first occurs in this batch: needed only when the batch holds a retraction.
    let mut earlier: Option<HashMap<String, usize>> = decoded.iter().any(is_retract).then(HashMap::new);
    let mut verdicts: Vec<Verdict<M>> = Vec::with_capacity(decoded.len());
    for Decoded {
        message,
        stream_seq,
        outcome,
    } in decoded
    {
        let outcome = match outcome {
            Err(rejection) => Err(rejection),
            Ok(event) => {
                let checked = match &event.data {
                    Data::Retract { target_id, .. } => {
                        // A stored event first: an event earlier in this batch with the same
                        // id is a duplicate or a conflict, and never what the id stands for
                        // (found by tests/simulation.rs).
                        let target = match ledger.find(target_id)? {
                            Some(entry) => Some(entry.event),
                            None => earlier
                                .as_ref()
                                .and_then(|ids| ids.get(target_id))
                                .and_then(|&i| verdicts[i].outcome.as_ref().ok())
                                .cloned(),
                        };
                        event.check_retraction(target.as_ref())
                    }
                    _ => Ok(()),
                };
                checked.map(|()| event)
            }
        };
        if let (Some(ids), Ok(event)) = (earlier.as_mut(), &outcome) {
            ids.entry(event.id.clone()).or_insert(verdicts.len());
        }
        verdicts.push(Verdict {
            message,
            stream_seq,
            outcome,
        });
    }
    Ok(verdicts)
}

//! The Rust producer: how a service publishes lead events onto JetStream.
//!
//! [`Producer::publish`] validates locally, publishes on the event's own subject with
//! `Nats-Msg-Id` = event id (JetStream's dedup window is a first filter; the ledger's id index
//! is the guarantee) and a `Content-Type` naming the encoding: JSON (the contract every
//! language uses) or bincode (compact, Rust only).

use async_nats::jetstream;
use async_nats::HeaderMap;
use funnel_core::{Event, Rejection};

/// Header carrying the payload encoding.
pub const CONTENT_TYPE: &str = "Content-Type";
/// `Content-Type` of contract JSON (also assumed when the header is absent).
pub const JSON: &str = "application/json";
/// `Content-Type` of bincode (2.x, standard config, serde) of [`funnel_core::Event`].
pub const BINCODE: &str = "application/x-funnel-bincode";
/// Publishes in flight at once in [`Producer::publish_all`].
pub const PUBLISHES_IN_FLIGHT_MAX: usize = 4_096;

/// How a producer encodes events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Bincode,
}

#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// The event breaks the contract; it was not sent. Fix the event.
    #[error("event `{id}` refused before publishing: {rejection}")]
    Invalid { id: String, rejection: Rejection },
    /// NATS did not take or did not acknowledge the publish; safe to retry (the id dedups).
    #[error("publish of `{id}` failed: {message}")]
    Publish { id: String, message: String },
}

/// Encodes an event for the wire.
pub fn encode(event: &Event, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Json => event.to_json().to_string().into_bytes(),
        Encoding::Bincode => bincode::serde::encode_to_vec(event, bincode::config::standard()).unwrap_or_default(),
    }
}

/// Decodes a payload by its `Content-Type` (JSON when absent) and validates it.
pub fn decode(content_type: Option<&str>, payload: &[u8]) -> Result<Event, Rejection> {
    match content_type {
        None | Some(JSON) => Event::from_json(payload),
        Some(BINCODE) => {
            if payload.len() > funnel_core::event::PAYLOAD_BYTES_MAX {
                return Err(Rejection::new(funnel_core::Reason::Oversize, "payload over the limit"));
            }
            // The limit bounds what a length prefix can make the decoder allocate: without it,
            // eight crafted bytes ask for exabytes and abort the process (found by
            // tests/fuzz_decode.rs).
            let config = bincode::config::standard().with_limit::<{ funnel_core::event::PAYLOAD_BYTES_MAX }>();
            let (event, used): (Event, usize) = bincode::serde::decode_from_slice(payload, config)
                .map_err(|e| Rejection::new(funnel_core::Reason::Malformed, format!("not bincode: {e}")))?;
            if used != payload.len() {
                return Err(Rejection::new(
                    funnel_core::Reason::Malformed,
                    "trailing bytes after bincode event",
                ));
            }
            event.validate()?;
            Ok(event)
        }
        Some(other) => Err(Rejection::new(
            funnel_core::Reason::Malformed,
            format!("Content-Type `{other}` is not {JSON} or {BINCODE}"),
        )),
    }
}

/// How long a publish waits for JetStream's acknowledgement. The server acknowledges once it
/// has stored the message, and async-nats' 5 s default was too short on a busy disk: run right
/// after a build had written gigabytes, the demo's `funnel simulate` stopped twice at "didn't
/// receive ack in time".
pub const PUBLISH_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Publishes events to JetStream.
#[derive(Clone)]
pub struct Producer {
    jetstream: jetstream::Context,
    encoding: Encoding,
}

impl Producer {
    pub fn new(client: async_nats::Client, encoding: Encoding) -> Producer {
        let mut jetstream = jetstream::new(client);
        jetstream.set_timeout(PUBLISH_ACK_WAIT);
        Producer { jetstream, encoding }
    }

    fn headers(&self, event: &Event) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, event.id.as_str());
        headers.insert(
            CONTENT_TYPE,
            if self.encoding == Encoding::Json { JSON } else { BINCODE },
        );
        headers
    }

    /// Sends one event; the returned future resolves when JetStream has stored it.
    pub async fn send(&self, event: &Event) -> Result<jetstream::context::PublishAckFuture, ProducerError> {
        event.validate().map_err(|rejection| ProducerError::Invalid {
            id: event.id.clone(),
            rejection,
        })?;
        self.jetstream
            .publish_with_headers(
                event.subject(),
                self.headers(event),
                encode(event, self.encoding).into(),
            )
            .await
            .map_err(|e| ProducerError::Publish {
                id: event.id.clone(),
                message: e.to_string(),
            })
    }

    /// Publishes one event and waits for JetStream's acknowledgement.
    pub async fn publish(&self, event: &Event) -> Result<(), ProducerError> {
        let ack = self.send(event).await?;
        ack.await.map_err(|e| ProducerError::Publish {
            id: event.id.clone(),
            message: e.to_string(),
        })?;
        Ok(())
    }

    /// Publishes many events with up to [`PUBLISHES_IN_FLIGHT_MAX`] acknowledgements in flight,
    /// calling `progress(sent)` as acknowledgements arrive. Stops at the first failure.
    pub async fn publish_all<'a>(
        &self,
        events: impl IntoIterator<Item = &'a Event>,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, ProducerError> {
        let mut in_flight = std::collections::VecDeque::new();
        let mut acked = 0u64;
        for event in events {
            if in_flight.len() == PUBLISHES_IN_FLIGHT_MAX {
                acked += wait_one(&mut in_flight).await?;
                if acked.is_multiple_of(10_000) {
                    progress(acked);
                }
            }
            in_flight.push_back((event.id.clone(), self.send(event).await?));
        }
        while !in_flight.is_empty() {
            acked += wait_one(&mut in_flight).await?;
        }
        progress(acked);
        Ok(acked)
    }
}

async fn wait_one(
    in_flight: &mut std::collections::VecDeque<(String, jetstream::context::PublishAckFuture)>,
) -> Result<u64, ProducerError> {
    let Some((id, ack)) = in_flight.pop_front() else {
        return Ok(0);
    };
    ack.await.map_err(|e| ProducerError::Publish {
        id,
        message: e.to_string(),
    })?;
    Ok(1)
}

#[cfg(test)]
mod tests {
    use funnel_core::event::Data;
    use funnel_core::{Event, Reason};

    use super::{decode, encode, Encoding, BINCODE, JSON};

    fn score(score: f64) -> Event {
        Event {
            id: "s1".into(),
            lead_id: Some("L1".into()),
            account_id: None,
            occurred_at: 1_772_355_600_000_000,
            producer: None,
            data: Data::Score {
                score,
                model: None,
                reason: None,
            },
        }
    }

    #[test]
    fn a_bincode_length_prefix_cannot_ask_for_exabytes() {
        // The event's first field is its id; a u64 varint length (marker 253) of 2^61 used to
        // make the decoder allocate that much and abort the whole process.
        let mut payload = vec![253];
        payload.extend_from_slice(&(1u64 << 61).to_le_bytes());
        payload.extend_from_slice(b"abc");
        let refused = decode(Some(BINCODE), &payload).expect_err("refused");
        assert_eq!(refused.reason, Reason::Malformed, "{}", refused.message);
    }

    #[test]
    fn the_same_event_is_the_same_value_whether_sent_as_json_or_bincode() {
        // Shortest-form floats that a fast, not correctly rounded, parser reads 1 ULP off.
        for x in [48.00001692771912, 1952.0000000033176, 8.98949006612271e207] {
            let event = score(x);
            let json = decode(Some(JSON), &encode(&event, Encoding::Json));
            let bincode = decode(Some(BINCODE), &encode(&event, Encoding::Bincode));
            assert_eq!(json.as_ref().ok(), Some(&event), "{x} as JSON");
            assert_eq!(bincode.as_ref().ok(), Some(&event), "{x} as bincode");
        }
    }
}

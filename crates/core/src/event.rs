//! The event contract of DESIGN.md §3: types, strict JSON reading with precise errors,
//! validation shared by every wire format, JSON writing that round-trips, and subjects.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::{format_rfc3339, parse_rfc3339, Micros};

/// Largest accepted event payload on the wire, in bytes.
pub const PAYLOAD_BYTES_MAX: usize = 64 * 1024;
/// Longest event id, lead id, account id or channel, in characters.
pub const ID_CHARS_MAX: usize = 128;
/// Longest free-text field (campaign, owner, reason, ...), in characters.
pub const TEXT_CHARS_MAX: usize = 256;
/// Longest `note`, in characters.
pub const NOTE_CHARS_MAX: usize = 2048;

/// Why an event was refused; each reason is a DLQ subject `funnel.dlq.<reason>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// Not JSON (or not bincode), or not an object.
    Malformed,
    /// Parsed, but breaks the contract (missing field, wrong type, bad value).
    Invalid,
    /// Larger than [`PAYLOAD_BYTES_MAX`].
    Oversize,
    /// The subject does not agree with the payload.
    SubjectMismatch,
    /// Same id as a stored event, different content.
    IdConflict,
    /// A `retract` whose target is unknown or is itself a retraction.
    UnknownTarget,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::Invalid => "invalid",
            Reason::Oversize => "oversize",
            Reason::SubjectMismatch => "subject_mismatch",
            Reason::IdConflict => "id_conflict",
            Reason::UnknownTarget => "unknown_target",
        }
    }
}

/// A business rejection of one event: a reason code and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", reason.as_str())]
pub struct Rejection {
    pub reason: Reason,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            message: message.into(),
        }
    }
    fn invalid(message: impl Into<String>) -> Self {
        Rejection::new(Reason::Invalid, message)
    }
}

/// How [`strict_json`] names a repeated key.
const DUPLICATE_KEY: &str = "duplicate key";

/// Parses JSON as `serde_json` does, except that an object naming a key twice is an error
/// (`duplicate key `name``), where `serde_json::Value` would keep the last value silently.
pub fn strict_json(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<Strict>(bytes).map(|s| s.0)
}

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!("{DUPLICATE_KEY} `{key}`")));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Most minor units one event may carry (DESIGN §2): 10^15, a quadrillion cents. Sums of any
/// number of amounts are [`MinorSum`]s, which 2^64 events of this much cannot overflow.
pub const AMOUNT_MINOR_MAX: i64 = 1_000_000_000_000_000;

/// A sum of money amounts (revenue, spend, credits over a window), in minor units.
pub type MinorSum = i128;

/// Money in integer minor units of an ISO-4217 currency, `0..=AMOUNT_MINOR_MAX`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Team {
    Marketing,
    Sales,
}

/// Who a handoff goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Side {
    Sales,
    Marketing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AcceptStage {
    Sql,
    Opportunity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    Won,
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RejectionReason {
    IcpMismatch,
    NoBudget,
    NoNeed,
    BadTiming,
    BadContact,
    Duplicate,
    Competitor,
    Other,
}

impl RejectionReason {
    pub const ALL: [RejectionReason; 8] = [
        RejectionReason::IcpMismatch,
        RejectionReason::NoBudget,
        RejectionReason::NoNeed,
        RejectionReason::BadTiming,
        RejectionReason::BadContact,
        RejectionReason::Duplicate,
        RejectionReason::Competitor,
        RejectionReason::Other,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionReason::IcpMismatch => "icp_mismatch",
            RejectionReason::NoBudget => "no_budget",
            RejectionReason::NoNeed => "no_need",
            RejectionReason::BadTiming => "bad_timing",
            RejectionReason::BadContact => "bad_contact",
            RejectionReason::Duplicate => "duplicate",
            RejectionReason::Competitor => "competitor",
            RejectionReason::Other => "other",
        }
    }
}

/// A change of the rules in force, from the event's `occurred_at` on. Absent fields keep their value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RulesChange {
    pub mql_score_threshold: Option<f64>,
    pub handoff_sla_hours: Option<f64>,
    pub attribution_lookback_days: Option<f64>,
    pub time_decay_half_life_days: Option<f64>,
}

/// The per-type payload of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Data {
    Touch {
        channel: String,
        campaign: Option<String>,
        content: Option<String>,
        team: Team,
    },
    Score {
        score: f64,
        model: Option<String>,
        reason: Option<String>,
    },
    Handoff {
        to: Side,
        owner: Option<String>,
    },
    Accept {
        stage: AcceptStage,
        owner: Option<String>,
        opportunity_id: Option<String>,
        pipeline: Option<Money>,
    },
    Rejection {
        reason: RejectionReason,
        note: Option<String>,
    },
    Close {
        outcome: Outcome,
        amount: Option<Money>,
        reason: Option<String>,
        opportunity_id: Option<String>,
    },
    Spend {
        channel: String,
        campaign: Option<String>,
        amount: Money,
    },
    Rules(RulesChange),
    Retract {
        target_id: String,
        reason: Option<String>,
    },
}

/// One lead event, normalised: the form stored in the ledger and hashed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub lead_id: Option<String>,
    pub account_id: Option<String>,
    pub occurred_at: Micros,
    pub producer: Option<String>,
    pub data: Data,
}

/// An [`Event`] whose strings borrow from the bytes it was decoded from (the ledger's stored
/// bincode): the same serde shape, field for field and variant for variant, so those bytes
/// decode as either, without an allocation per string for this one. A test holds the two equal.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EventRef<'a> {
    pub id: &'a str,
    #[serde(borrow)]
    pub lead_id: Option<&'a str>,
    #[serde(borrow)]
    pub account_id: Option<&'a str>,
    pub occurred_at: Micros,
    #[serde(borrow)]
    pub producer: Option<&'a str>,
    #[serde(borrow)]
    pub data: DataRef<'a>,
}

/// [`Data`] with borrowed strings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub enum DataRef<'a> {
    Touch {
        channel: &'a str,
        #[serde(borrow)]
        campaign: Option<&'a str>,
        #[serde(borrow)]
        content: Option<&'a str>,
        team: Team,
    },
    Score {
        score: f64,
        #[serde(borrow)]
        model: Option<&'a str>,
        #[serde(borrow)]
        reason: Option<&'a str>,
    },
    Handoff {
        to: Side,
        #[serde(borrow)]
        owner: Option<&'a str>,
    },
    Accept {
        stage: AcceptStage,
        #[serde(borrow)]
        owner: Option<&'a str>,
        #[serde(borrow)]
        opportunity_id: Option<&'a str>,
        #[serde(borrow)]
        pipeline: Option<MoneyRef<'a>>,
    },
    Rejection {
        reason: RejectionReason,
        #[serde(borrow)]
        note: Option<&'a str>,
    },
    Close {
        outcome: Outcome,
        #[serde(borrow)]
        amount: Option<MoneyRef<'a>>,
        #[serde(borrow)]
        reason: Option<&'a str>,
        #[serde(borrow)]
        opportunity_id: Option<&'a str>,
    },
    Spend {
        channel: &'a str,
        #[serde(borrow)]
        campaign: Option<&'a str>,
        #[serde(borrow)]
        amount: MoneyRef<'a>,
    },
    Rules(RulesChange),
    Retract {
        target_id: &'a str,
        #[serde(borrow)]
        reason: Option<&'a str>,
    },
}

/// [`Money`] with a borrowed currency.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MoneyRef<'a> {
    pub amount_minor: i64,
    pub currency: &'a str,
}

impl MoneyRef<'_> {
    pub fn to_money(&self) -> Money {
        Money {
            amount_minor: self.amount_minor,
            currency: self.currency.to_owned(),
        }
    }
}

impl Money {
    pub fn as_ref(&self) -> MoneyRef<'_> {
        MoneyRef {
            amount_minor: self.amount_minor,
            currency: &self.currency,
        }
    }
}

impl Event {
    /// This event with borrowed strings.
    pub fn as_ref(&self) -> EventRef<'_> {
        fn s(o: &Option<String>) -> Option<&str> {
            o.as_deref()
        }
        let data = match &self.data {
            Data::Touch {
                channel,
                campaign,
                content,
                team,
            } => DataRef::Touch {
                channel,
                campaign: s(campaign),
                content: s(content),
                team: *team,
            },
            Data::Score { score, model, reason } => DataRef::Score {
                score: *score,
                model: s(model),
                reason: s(reason),
            },
            Data::Handoff { to, owner } => DataRef::Handoff {
                to: *to,
                owner: s(owner),
            },
            Data::Accept {
                stage,
                owner,
                opportunity_id,
                pipeline,
            } => DataRef::Accept {
                stage: *stage,
                owner: s(owner),
                opportunity_id: s(opportunity_id),
                pipeline: pipeline.as_ref().map(Money::as_ref),
            },
            Data::Rejection { reason, note } => DataRef::Rejection {
                reason: *reason,
                note: s(note),
            },
            Data::Close {
                outcome,
                amount,
                reason,
                opportunity_id,
            } => DataRef::Close {
                outcome: *outcome,
                amount: amount.as_ref().map(Money::as_ref),
                reason: s(reason),
                opportunity_id: s(opportunity_id),
            },
            Data::Spend {
                channel,
                campaign,
                amount,
            } => DataRef::Spend {
                channel,
                campaign: s(campaign),
                amount: amount.as_ref(),
            },
            Data::Rules(change) => DataRef::Rules(change.clone()),
            Data::Retract { target_id, reason } => DataRef::Retract {
                target_id,
                reason: s(reason),
            },
        };
        EventRef {
            id: &self.id,
            lead_id: s(&self.lead_id),
            account_id: s(&self.account_id),
            occurred_at: self.occurred_at,
            producer: s(&self.producer),
            data,
        }
    }
}

impl EventRef<'_> {
    /// The owned event.
    pub fn to_event(&self) -> Event {
        let s = |o: Option<&str>| o.map(str::to_owned);
        let data = match &self.data {
            DataRef::Touch {
                channel,
                campaign,
                content,
                team,
            } => Data::Touch {
                channel: (*channel).to_owned(),
                campaign: s(*campaign),
                content: s(*content),
                team: *team,
            },
            DataRef::Score { score, model, reason } => Data::Score {
                score: *score,
                model: s(*model),
                reason: s(*reason),
            },
            DataRef::Handoff { to, owner } => Data::Handoff {
                to: *to,
                owner: s(*owner),
            },
            DataRef::Accept {
                stage,
                owner,
                opportunity_id,
                pipeline,
            } => Data::Accept {
                stage: *stage,
                owner: s(*owner),
                opportunity_id: s(*opportunity_id),
                pipeline: pipeline.as_ref().map(MoneyRef::to_money),
            },
            DataRef::Rejection { reason, note } => Data::Rejection {
                reason: *reason,
                note: s(*note),
            },
            DataRef::Close {
                outcome,
                amount,
                reason,
                opportunity_id,
            } => Data::Close {
                outcome: *outcome,
                amount: amount.as_ref().map(MoneyRef::to_money),
                reason: s(*reason),
                opportunity_id: s(*opportunity_id),
            },
            DataRef::Spend {
                channel,
                campaign,
                amount,
            } => Data::Spend {
                channel: (*channel).to_owned(),
                campaign: s(*campaign),
                amount: amount.to_money(),
            },
            DataRef::Rules(change) => Data::Rules(change.clone()),
            DataRef::Retract { target_id, reason } => Data::Retract {
                target_id: (*target_id).to_owned(),
                reason: s(*reason),
            },
        };
        Event {
            id: self.id.to_owned(),
            lead_id: s(self.lead_id),
            account_id: s(self.account_id),
            occurred_at: self.occurred_at,
            producer: s(self.producer),
            data,
        }
    }
}

/// One member value of an event's contract JSON, borrowed from the event ([`Event::members`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Member<'a> {
    Str(&'a str),
    /// Money in minor units.
    Int(i64),
    /// A finite number (scores, rule values).
    Float(f64),
    /// A time, written as RFC 3339 UTC ([`format_rfc3339`]).
    Time(Micros),
    /// The `data` object.
    Object(Vec<(&'static str, Member<'a>)>),
}

/// Every event type name, in contract order.
pub const EVENT_TYPES: [&str; 9] = [
    "touch",
    "score",
    "handoff",
    "accept",
    "rejection",
    "close",
    "spend",
    "rules",
    "retract",
];

impl Event {
    /// The contract's `type` name.
    pub fn kind(&self) -> &'static str {
        match self.data {
            Data::Touch { .. } => "touch",
            Data::Score { .. } => "score",
            Data::Handoff { .. } => "handoff",
            Data::Accept { .. } => "accept",
            Data::Rejection { .. } => "rejection",
            Data::Close { .. } => "close",
            Data::Spend { .. } => "spend",
            Data::Rules(_) => "rules",
            Data::Retract { .. } => "retract",
        }
    }

    /// The subject this event must be published on.
    pub fn subject(&self) -> String {
        let last = match (&self.data, &self.lead_id) {
            (Data::Spend { channel, .. }, _) => channel.as_str(),
            (_, Some(lead)) => lead.as_str(),
            (_, None) => "global",
        };
        format!("funnel.events.{}.{last}", self.kind())
    }

    /// Checks every rule of the contract that a typed value can still break.
    /// Both wire formats (JSON and the Rust producer's bincode) pass through here.
    pub fn validate(&self) -> Result<(), Rejection> {
        check_text("id", &self.id, ID_CHARS_MAX)?;
        let lead_required = !matches!(self.data, Data::Spend { .. } | Data::Rules(_) | Data::Retract { .. });
        match (&self.lead_id, lead_required) {
            (Some(lead), _) if matches!(self.data, Data::Spend { .. } | Data::Rules(_)) => {
                return Err(Rejection::invalid(format!(
                    "lead_id: a {} event has no lead_id (got `{lead}`)",
                    self.kind()
                )))
            }
            (Some(lead), _) => check_token("lead_id", lead)?,
            (None, true) => {
                return Err(Rejection::invalid(format!(
                    "lead_id: required for a {} event",
                    self.kind()
                )))
            }
            (None, false) => {}
        }
        if let Some(account) = &self.account_id {
            check_token("account_id", account)?;
        }
        if !(crate::time::TIME_MIN..=crate::time::TIME_MAX).contains(&self.occurred_at) {
            return Err(Rejection::invalid("occurred_at: outside 1970-01-01..9999-12-31"));
        }
        check_opt_text("producer", &self.producer, TEXT_CHARS_MAX)?;
        match &self.data {
            Data::Touch {
                channel,
                campaign,
                content,
                ..
            } => {
                check_token("data.channel", channel)?;
                check_opt_text("data.campaign", campaign, TEXT_CHARS_MAX)?;
                check_opt_text("data.content", content, TEXT_CHARS_MAX)?;
            }
            Data::Score { score, model, reason } => {
                if !score.is_finite() {
                    return Err(Rejection::invalid(format!(
                        "data.score: must be a finite number, got {score}"
                    )));
                }
                check_opt_text("data.model", model, TEXT_CHARS_MAX)?;
                check_opt_text("data.reason", reason, TEXT_CHARS_MAX)?;
            }
            Data::Handoff { owner, .. } => check_opt_text("data.owner", owner, TEXT_CHARS_MAX)?,
            Data::Accept {
                owner,
                opportunity_id,
                pipeline,
                ..
            } => {
                check_opt_text("data.owner", owner, TEXT_CHARS_MAX)?;
                check_opt_text("data.opportunity_id", opportunity_id, TEXT_CHARS_MAX)?;
                if let Some(money) = pipeline {
                    check_money(money)?;
                }
            }
            Data::Rejection { note, .. } => check_opt_text("data.note", note, NOTE_CHARS_MAX)?,
            Data::Close {
                outcome,
                amount,
                reason,
                opportunity_id,
            } => {
                match (outcome, amount) {
                    (Outcome::Won, None) => {
                        return Err(Rejection::invalid("data.amount_minor: required when outcome is won"))
                    }
                    (_, Some(money)) => check_money(money)?,
                    (Outcome::Lost, None) => {}
                }
                check_opt_text("data.reason", reason, TEXT_CHARS_MAX)?;
                check_opt_text("data.opportunity_id", opportunity_id, TEXT_CHARS_MAX)?;
            }
            Data::Spend {
                channel,
                campaign,
                amount,
            } => {
                check_token("data.channel", channel)?;
                check_opt_text("data.campaign", campaign, TEXT_CHARS_MAX)?;
                check_money(amount)?;
            }
            Data::Rules(rules) => {
                let fields = [
                    ("data.mql_score_threshold", rules.mql_score_threshold, false),
                    ("data.handoff_sla_hours", rules.handoff_sla_hours, true),
                    ("data.attribution_lookback_days", rules.attribution_lookback_days, true),
                    ("data.time_decay_half_life_days", rules.time_decay_half_life_days, true),
                ];
                if fields.iter().all(|(_, value, _)| value.is_none()) {
                    return Err(Rejection::invalid(
                        "data: a rules event must set at least one of mql_score_threshold, handoff_sla_hours, \
                         attribution_lookback_days, time_decay_half_life_days",
                    ));
                }
                for (name, value, positive) in fields {
                    match value {
                        Some(v) if !v.is_finite() => {
                            return Err(Rejection::invalid(format!("{name}: must be a finite number")))
                        }
                        Some(v) if positive && v <= 0.0 => {
                            return Err(Rejection::invalid(format!("{name}: must be greater than 0, got {v}")))
                        }
                        _ => {}
                    }
                }
            }
            Data::Retract { target_id, reason } => {
                check_text("data.target_id", target_id, ID_CHARS_MAX)?;
                if target_id == &self.id {
                    return Err(Rejection::new(
                        Reason::UnknownTarget,
                        "data.target_id: an event cannot retract itself",
                    ));
                }
                check_opt_text("data.reason", reason, TEXT_CHARS_MAX)?;
            }
        }
        Ok(())
    }

    /// Why a retraction is refused, if it is (live ingest and import alike): its target must
    /// be stored or earlier in the batch (the caller looks it up), must not be a retraction, and must belong to the retraction's `lead_id` if it names one.
    pub fn check_retraction(&self, target: Option<&Event>) -> Result<(), Rejection> {
        let Data::Retract { target_id, .. } = &self.data else {
            return Ok(());
        };
        let target =
            target.ok_or_else(|| Rejection::new(Reason::UnknownTarget, format!("no event with id `{target_id}`")))?;
        if matches!(target.data, Data::Retract { .. }) {
            return Err(Rejection::new(
                Reason::UnknownTarget,
                format!("`{target_id}` is a retraction; retractions cannot be retracted"),
            ));
        }
        match (&self.lead_id, &target.lead_id) {
            (Some(mine), theirs) if Some(mine) != theirs.as_ref() => Err(Rejection::new(
                Reason::Invalid,
                format!("lead_id `{mine}` does not match the target's lead {theirs:?}"),
            )),
            _ => Ok(()),
        }
    }

    /// Reads one event from JSON bytes: structure first (`malformed`), then every field
    /// (`invalid`, naming the field), then [`Event::validate`].
    pub fn from_json(bytes: &[u8]) -> Result<Event, Rejection> {
        if bytes.len() > PAYLOAD_BYTES_MAX {
            return Err(Rejection::new(
                Reason::Oversize,
                format!("payload is {} bytes; the limit is {PAYLOAD_BYTES_MAX}", bytes.len()),
            ));
        }
        let value = strict_json(bytes).map_err(|e| {
            // Valid JSON syntax whose number does not fit a finite f64 (e.g. `1e999`): a bad value, not bad JSON.
            if e.to_string().starts_with("number out of range") {
                Rejection::invalid(format!("a number is not finite as a 64-bit float ({e})"))
            } else if e.to_string().starts_with(DUPLICATE_KEY) {
                Rejection::new(Reason::Malformed, e.to_string())
            } else {
                Rejection::new(Reason::Malformed, format!("not JSON: {e}"))
            }
        })?;
        Event::from_value(&value)
    }

    /// Reads one event from an already parsed JSON value.
    pub fn from_value(value: &Value) -> Result<Event, Rejection> {
        let Value::Object(map) = value else {
            return Err(Rejection::new(Reason::Malformed, "an event must be a JSON object"));
        };
        let top = Fields::new(map, "")?;
        top.only(&["id", "type", "lead_id", "account_id", "occurred_at", "producer", "data"])?;
        let id = top.req_str("id")?;
        let kind = top.req_str("type")?;
        let occurred_at =
            parse_rfc3339(&top.req_str("occurred_at")?).map_err(|e| Rejection::invalid(format!("occurred_at: {e}")))?;
        let empty = Map::new();
        let data_map = match map.get("data") {
            None => &empty,
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(Rejection::invalid(format!(
                    "data: expected an object, got {}",
                    type_name(other)
                )))
            }
        };
        let d = Fields::new(data_map, "data.")?;
        let data = match kind.as_str() {
            "touch" => {
                d.only(&["channel", "campaign", "content", "team"])?;
                let team = match d.opt_str("team")?.as_deref() {
                    None | Some("marketing") => Team::Marketing,
                    Some("sales") => Team::Sales,
                    Some(other) => return Err(d.bad_enum("team", other, "marketing, sales")),
                };
                Data::Touch {
                    channel: d.req_str("channel")?,
                    campaign: d.opt_str("campaign")?,
                    content: d.opt_str("content")?,
                    team,
                }
            }
            "score" => {
                d.only(&["score", "model", "reason"])?;
                Data::Score {
                    score: d.req_f64("score")?,
                    model: d.opt_str("model")?,
                    reason: d.opt_str("reason")?,
                }
            }
            "handoff" => {
                d.only(&["to", "owner"])?;
                let to = match d.req_str("to")?.as_str() {
                    "sales" => Side::Sales,
                    "marketing" => Side::Marketing,
                    other => return Err(d.bad_enum("to", other, "sales, marketing")),
                };
                Data::Handoff {
                    to,
                    owner: d.opt_str("owner")?,
                }
            }
            "accept" => {
                d.only(&["stage", "owner", "opportunity_id", "amount_minor", "currency"])?;
                let stage = match d.req_str("stage")?.as_str() {
                    "sql" => AcceptStage::Sql,
                    "opportunity" => AcceptStage::Opportunity,
                    other => return Err(d.bad_enum("stage", other, "sql, opportunity")),
                };
                Data::Accept {
                    stage,
                    owner: d.opt_str("owner")?,
                    opportunity_id: d.opt_str("opportunity_id")?,
                    pipeline: d.opt_money()?,
                }
            }
            "rejection" => {
                d.only(&["reason", "note"])?;
                let text = d.req_str("reason")?;
                let reason = RejectionReason::ALL
                    .into_iter()
                    .find(|r| r.as_str() == text)
                    .ok_or_else(|| d.bad_enum("reason", &text, &RejectionReason::ALL.map(|r| r.as_str()).join(", ")))?;
                Data::Rejection {
                    reason,
                    note: d.opt_str("note")?,
                }
            }
            "close" => {
                d.only(&["outcome", "amount_minor", "currency", "reason", "opportunity_id"])?;
                let outcome = match d.req_str("outcome")?.as_str() {
                    "won" => Outcome::Won,
                    "lost" => Outcome::Lost,
                    other => return Err(d.bad_enum("outcome", other, "won, lost")),
                };
                Data::Close {
                    outcome,
                    amount: d.opt_money()?,
                    reason: d.opt_str("reason")?,
                    opportunity_id: d.opt_str("opportunity_id")?,
                }
            }
            "spend" => {
                d.only(&["channel", "campaign", "amount_minor", "currency"])?;
                let amount = d
                    .opt_money()?
                    .ok_or_else(|| Rejection::invalid("data.amount_minor: required"))?;
                Data::Spend {
                    channel: d.req_str("channel")?,
                    campaign: d.opt_str("campaign")?,
                    amount,
                }
            }
            "rules" => {
                d.only(&[
                    "mql_score_threshold",
                    "handoff_sla_hours",
                    "attribution_lookback_days",
                    "time_decay_half_life_days",
                ])?;
                Data::Rules(RulesChange {
                    mql_score_threshold: d.opt_f64("mql_score_threshold")?,
                    handoff_sla_hours: d.opt_f64("handoff_sla_hours")?,
                    attribution_lookback_days: d.opt_f64("attribution_lookback_days")?,
                    time_decay_half_life_days: d.opt_f64("time_decay_half_life_days")?,
                })
            }
            "retract" => {
                d.only(&["target_id", "reason"])?;
                Data::Retract {
                    target_id: d.req_str("target_id")?,
                    reason: d.opt_str("reason")?,
                }
            }
            other => {
                return Err(Rejection::invalid(format!(
                    "type: unknown event type `{other}`; expected one of {}",
                    EVENT_TYPES.join(", ")
                )))
            }
        };
        let event = Event {
            id,
            lead_id: top.opt_str("lead_id")?,
            account_id: top.opt_str("account_id")?,
            occurred_at,
            producer: top.opt_str("producer")?,
            data,
        };
        event.validate()?;
        Ok(event)
    }

    /// The contract JSON of this event; [`Event::from_value`] reads it back to an equal event.
    pub fn to_json(&self) -> Value {
        fn object(members: Vec<(&'static str, Member<'_>)>) -> Value {
            let map = members
                .into_iter()
                .map(|(name, member)| {
                    let value = match member {
                        Member::Str(s) => Value::from(s),
                        Member::Int(n) => Value::from(n),
                        Member::Float(x) => Value::from(x),
                        Member::Time(t) => Value::from(format_rfc3339(t)),
                        Member::Object(inner) => object(inner),
                    };
                    (name.to_owned(), value)
                })
                .collect::<Map<String, Value>>();
            Value::Object(map)
        }
        object(self.members())
    }

    /// The members of [`Event::to_json`], borrowed and unordered: the one place that says which
    /// field of an event has which JSON name. The ledger writes its canonical bytes from it.
    pub fn members(&self) -> Vec<(&'static str, Member<'_>)> {
        use Member::{Float, Int, Str};
        fn put<'a>(members: &mut Vec<(&'static str, Member<'a>)>, name: &'static str, value: &'a Option<String>) {
            if let Some(v) = value {
                members.push((name, Str(v)));
            }
        }
        fn money<'a>(members: &mut Vec<(&'static str, Member<'a>)>, money: Option<&'a Money>) {
            if let Some(m) = money {
                members.push(("amount_minor", Int(m.amount_minor)));
                members.push(("currency", Str(&m.currency)));
            }
        }
        let mut d = Vec::with_capacity(6);
        match &self.data {
            Data::Touch {
                channel,
                campaign,
                content,
                team,
            } => {
                d.push(("channel", Str(channel)));
                put(&mut d, "campaign", campaign);
                put(&mut d, "content", content);
                d.push(("team", Str(if *team == Team::Sales { "sales" } else { "marketing" })));
            }
            Data::Score { score, model, reason } => {
                d.push(("score", Float(*score)));
                put(&mut d, "model", model);
                put(&mut d, "reason", reason);
            }
            Data::Handoff { to, owner } => {
                d.push(("to", Str(if *to == Side::Sales { "sales" } else { "marketing" })));
                put(&mut d, "owner", owner);
            }
            Data::Accept {
                stage,
                owner,
                opportunity_id,
                pipeline,
            } => {
                d.push((
                    "stage",
                    Str(if *stage == AcceptStage::Sql {
                        "sql"
                    } else {
                        "opportunity"
                    }),
                ));
                put(&mut d, "owner", owner);
                put(&mut d, "opportunity_id", opportunity_id);
                money(&mut d, pipeline.as_ref());
            }
            Data::Rejection { reason, note } => {
                d.push(("reason", Str(reason.as_str())));
                put(&mut d, "note", note);
            }
            Data::Close {
                outcome,
                amount,
                reason,
                opportunity_id,
            } => {
                d.push(("outcome", Str(if *outcome == Outcome::Won { "won" } else { "lost" })));
                money(&mut d, amount.as_ref());
                put(&mut d, "reason", reason);
                put(&mut d, "opportunity_id", opportunity_id);
            }
            Data::Spend {
                channel,
                campaign,
                amount,
            } => {
                d.push(("channel", Str(channel)));
                put(&mut d, "campaign", campaign);
                money(&mut d, Some(amount));
            }
            Data::Rules(r) => {
                let fields = [
                    ("mql_score_threshold", r.mql_score_threshold),
                    ("handoff_sla_hours", r.handoff_sla_hours),
                    ("attribution_lookback_days", r.attribution_lookback_days),
                    ("time_decay_half_life_days", r.time_decay_half_life_days),
                ];
                for (name, value) in fields {
                    if let Some(v) = value {
                        d.push((name, Float(v)));
                    }
                }
            }
            Data::Retract { target_id, reason } => {
                d.push(("target_id", Str(target_id)));
                put(&mut d, "reason", reason);
            }
        }
        let mut top = Vec::with_capacity(7);
        top.push(("id", Str(&self.id)));
        top.push(("type", Str(self.kind())));
        put(&mut top, "lead_id", &self.lead_id);
        put(&mut top, "account_id", &self.account_id);
        top.push(("occurred_at", Member::Time(self.occurred_at)));
        put(&mut top, "producer", &self.producer);
        top.push(("data", Member::Object(d)));
        top
    }

    /// Checks that `subject` is the one this event belongs on.
    pub fn check_subject(&self, subject: &str) -> Result<(), Rejection> {
        let expected = self.subject();
        if subject == expected {
            Ok(())
        } else {
            Err(Rejection::new(
                Reason::SubjectMismatch,
                format!(
                    "published on `{subject}` but a {} event with this payload belongs on `{expected}`",
                    self.kind()
                ),
            ))
        }
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

fn check_text(name: &str, text: &str, max: usize) -> Result<(), Rejection> {
    let chars = text.chars().count();
    if chars == 0 || chars > max {
        return Err(Rejection::invalid(format!(
            "{name}: must be 1–{max} characters, got {chars}"
        )));
    }
    if has_control(text) {
        return Err(Rejection::invalid(format!(
            "{name}: must not contain control characters"
        )));
    }
    Ok(())
}

fn check_opt_text(name: &str, text: &Option<String>, max: usize) -> Result<(), Rejection> {
    text.as_deref().map_or(Ok(()), |t| check_text(name, t, max))
}

/// `^[A-Za-z0-9_-]{1,128}$`: safe as a NATS subject token.
pub fn is_token(text: &str) -> bool {
    (1..=ID_CHARS_MAX).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_token(name: &str, text: &str) -> Result<(), Rejection> {
    if is_token(text) {
        Ok(())
    } else {
        Err(Rejection::invalid(format!(
            "{name}: `{text}` must match ^[A-Za-z0-9_-]{{1,128}}$"
        )))
    }
}

fn check_money(money: &Money) -> Result<(), Rejection> {
    if money.amount_minor < 0 {
        return Err(Rejection::invalid(format!(
            "data.amount_minor: must not be negative, got {}",
            money.amount_minor
        )));
    }
    if money.amount_minor > AMOUNT_MINOR_MAX {
        return Err(Rejection::invalid(format!(
            "data.amount_minor: {} is above the limit of {AMOUNT_MINOR_MAX} minor units per event",
            money.amount_minor
        )));
    }
    if money.currency.len() != 3 || !money.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Rejection::invalid(format!(
            "data.currency: `{}` is not an ISO-4217 code (three capital letters)",
            money.currency
        )));
    }
    Ok(())
}

/// Typed access to the fields of one JSON object, with errors that name the field.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    prefix: &'static str,
}

impl<'a> Fields<'a> {
    fn new(map: &'a Map<String, Value>, prefix: &'static str) -> Result<Self, Rejection> {
        Ok(Fields { map, prefix })
    }

    fn only(&self, allowed: &[&str]) -> Result<(), Rejection> {
        match self.map.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(Rejection::invalid(format!(
                "{}{k}: unknown field; expected one of {}",
                self.prefix,
                allowed.join(", ")
            ))),
            None => Ok(()),
        }
    }

    /// The field's value; `null` is not a value (omit the field instead), so it stays and fails its type check.
    fn present(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    fn wrong(&self, key: &str, expected: &str, got: &Value) -> Rejection {
        Rejection::invalid(format!(
            "{}{key}: expected {expected}, got {}",
            self.prefix,
            type_name(got)
        ))
    }

    fn opt_str(&self, key: &str) -> Result<Option<String>, Rejection> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.wrong(key, "a string", other)),
        }
    }

    fn req_str(&self, key: &str) -> Result<String, Rejection> {
        self.opt_str(key)?
            .ok_or_else(|| Rejection::invalid(format!("{}{key}: required", self.prefix)))
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>, Rejection> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(v) if v.is_finite() => Ok(Some(v)),
                _ => Err(Rejection::invalid(format!(
                    "{}{key}: must be a finite number",
                    self.prefix
                ))),
            },
            Some(other) => Err(self.wrong(key, "a number", other)),
        }
    }

    fn req_f64(&self, key: &str) -> Result<f64, Rejection> {
        self.opt_f64(key)?
            .ok_or_else(|| Rejection::invalid(format!("{}{key}: required", self.prefix)))
    }

    /// `amount_minor` + `currency`, both or neither.
    fn opt_money(&self) -> Result<Option<Money>, Rejection> {
        let amount = match self.present("amount_minor") {
            None => None,
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) => Some(v),
                None => {
                    return Err(Rejection::invalid(format!(
                        "{}amount_minor: must be a whole number of minor units, got {n}",
                        self.prefix
                    )))
                }
            },
            Some(other) => return Err(self.wrong("amount_minor", "an integer", other)),
        };
        let currency = self.opt_str("currency")?;
        match (amount, currency) {
            (None, None) => Ok(None),
            (Some(amount_minor), Some(currency)) => Ok(Some(Money { amount_minor, currency })),
            (Some(_), None) => Err(Rejection::invalid(format!(
                "{}currency: required with amount_minor",
                self.prefix
            ))),
            (None, Some(_)) => Err(Rejection::invalid(format!(
                "{}amount_minor: required with currency",
                self.prefix
            ))),
        }
    }

    fn bad_enum(&self, key: &str, got: &str, expected: &str) -> Rejection {
        Rejection::invalid(format!("{}{key}: `{got}` is not one of {expected}", self.prefix))
    }
}

//! A lead event as the engine keeps it: 40 bytes, strings interned, nothing the facts do not use.

use funnel_core::event::{AcceptStage, Data, DataRef, Event, EventRef, Money, Outcome, RejectionReason, Side, Team};
use funnel_core::lead::LeadEvent;
use funnel_core::time::Micros;

use crate::dict::{Dict, Sym, NONE};

/// What kind of lead event a [`Rec`] is, with its small enum payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Touch,
    Score,
    Handoff(Side),
    Accept(AcceptStage),
    Rejection(RejectionReason),
    Close(Outcome),
}

/// One live lead event: `(at, seq)` orders a lead's events. `a`, `b` and `value` hold the
/// payload: touch (channel, campaign), score (f64 bits in `value`), handoff and accept
/// (owner in `a`), close (currency in `b`, amount in `value`; `b` = NONE: no amount).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rec {
    pub at: Micros,
    pub seq: u64,
    pub value: i64,
    pub a: Sym,
    pub b: Sym,
    pub producer: Sym,
    pub kind: Kind,
}

impl Rec {
    /// The compact form of a lead event; `None` for spend, rules and retract.
    pub fn of(seq: u64, event: &EventRef<'_>, dict: &mut Dict) -> Option<Rec> {
        Rec::build(seq, event, &mut |name| dict.intern(name))
    }

    /// The compact form of a lead event whose names `dict` already holds (every event the
    /// engine has applied): `Err` with the first name it does not know.
    pub fn known(seq: u64, event: &Event, dict: &Dict) -> Result<Option<Rec>, String> {
        let mut unknown = None;
        let rec = Rec::build(seq, &event.as_ref(), &mut |name| {
            dict.get(name).unwrap_or_else(|| {
                unknown.get_or_insert_with(|| name.to_owned());
                NONE
            })
        });
        unknown.map_or(Ok(rec), Err)
    }

    fn build(seq: u64, event: &EventRef<'_>, sym: &mut dyn FnMut(&str) -> Sym) -> Option<Rec> {
        let opt = |sym: &mut dyn FnMut(&str) -> Sym, name: Option<&str>| name.map_or(NONE, sym);
        let mut rec = Rec {
            at: event.occurred_at,
            seq,
            value: 0,
            a: NONE,
            b: NONE,
            producer: opt(sym, event.producer),
            kind: Kind::Touch,
        };
        match &event.data {
            DataRef::Touch { channel, campaign, .. } => {
                rec.a = sym(channel);
                rec.b = opt(sym, *campaign);
            }
            DataRef::Score { score, .. } => {
                rec.kind = Kind::Score;
                rec.value = score.to_bits() as i64;
            }
            DataRef::Handoff { to, owner } => {
                rec.kind = Kind::Handoff(*to);
                rec.a = opt(sym, *owner);
            }
            DataRef::Accept { stage, owner, .. } => {
                rec.kind = Kind::Accept(*stage);
                rec.a = opt(sym, *owner);
            }
            DataRef::Rejection { reason, .. } => rec.kind = Kind::Rejection(*reason),
            DataRef::Close { outcome, amount, .. } => {
                rec.kind = Kind::Close(*outcome);
                if let Some(money) = amount {
                    rec.b = sym(money.currency);
                    rec.value = money.amount_minor;
                }
            }
            DataRef::Spend { .. } | DataRef::Rules(_) | DataRef::Retract { .. } => return None,
        }
        Some(rec)
    }

    pub fn order_key(&self) -> (Micros, u64) {
        (self.at, self.seq)
    }

    pub fn score(&self) -> f64 {
        f64::from_bits(self.value as u64)
    }

    /// The event again, with what the facts read (ids and free text are not kept: empty).
    /// Lets the engine derive facts with the same code as the oracle fold.
    pub fn to_lead_event(&self, dict: &Dict) -> LeadEvent {
        let owned = |sym: Sym| dict.name_opt(sym).map(str::to_owned);
        let data = match self.kind {
            Kind::Touch => Data::Touch {
                channel: dict.name(self.a).to_owned(),
                campaign: owned(self.b),
                content: None,
                team: Team::Marketing,
            },
            Kind::Score => Data::Score {
                score: self.score(),
                model: None,
                reason: None,
            },
            Kind::Handoff(to) => Data::Handoff {
                to,
                owner: owned(self.a),
            },
            Kind::Accept(stage) => Data::Accept {
                stage,
                owner: owned(self.a),
                opportunity_id: None,
                pipeline: None,
            },
            Kind::Rejection(reason) => Data::Rejection { reason, note: None },
            Kind::Close(outcome) => Data::Close {
                outcome,
                amount: owned(self.b).map(|currency| Money {
                    amount_minor: self.value,
                    currency,
                }),
                reason: None,
                opportunity_id: None,
            },
        };
        LeadEvent {
            seq: self.seq,
            event: Event {
                id: String::new(),
                lead_id: None,
                account_id: None,
                occurred_at: self.at,
                producer: owned(self.producer),
                data,
            },
        }
    }
}

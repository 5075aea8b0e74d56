//! One report request, parsed and checked up front, answered the same way live and offline.

use funnel_core::attribution::Model;
use funnel_core::report::{By, FunnelQuery, Window};
use funnel_core::time::{Micros, MICROS_PER_DAY};
use funnel_engine::reports::{self, Timeline};
use funnel_engine::{funnel, Engine};
use funnel_ledger::Ledger;

use crate::{ApiError, Params, TimeTravel};

/// The most index operations a question answered in place may cost (about 0.1 ms).
pub const QUICK_COST: u64 = 2_000;

/// Trailing window `plan` uses when no `from`/`to` is given, in days.
pub const PLAN_WINDOW_DAYS: i64 = 90;

/// Every report, by the name the HTTP path and the CLI use.
pub const REPORTS: [&str; 9] = [
    "funnel",
    "velocity",
    "sla",
    "rejections",
    "cost",
    "plan",
    "lead",
    "attribution",
    "explain",
];

/// The query parameters `report` takes besides the time-travel ones ([`crate::params::TIME_TRAVEL`]);
/// `None` for no such report. The parser and the OpenAPI document both read this list.
pub fn parameters(report: &str) -> Option<&'static [&'static str]> {
    Some(match report {
        "funnel" => &["from", "to", "by", "within_days", "interval"],
        "rejections" | "cost" => &["from", "to", "by"],
        "velocity" | "sla" => &["from", "to"],
        "plan" => &["revenue_target_minor", "currency", "from", "to"],
        "lead" => &[],
        "attribution" => &["model", "from", "to", "by"],
        "explain" => &["model"],
        _ => return None,
    })
}

/// A report with its typed parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    Funnel(FunnelQuery),
    Velocity {
        window: Window,
    },
    Sla {
        window: Window,
    },
    Rejections {
        window: Window,
        by: Option<By>,
    },
    Cost {
        window: Window,
        by: By,
    },
    Plan {
        target_minor: i64,
        currency: String,
        window: Window,
    },
    Lead {
        lead_id: String,
    },
    Attribution {
        models: Vec<Model>,
        window: Window,
        by: By,
    },
    Explain {
        lead_id: String,
        models: Vec<Model>,
    },
}

/// A parsed request: what to compute, and at which log position and business time.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub query: Query,
    pub travel: TimeTravel,
}

impl Request {
    /// Parses `report` (one of [`REPORTS`]) with its query string; `lead_id` for `lead`.
    pub fn parse(report: &str, lead_id: Option<&str>, query: Option<&str>) -> Result<Request, ApiError> {
        let allowed = parameters(report)
            .ok_or_else(|| ApiError::not_found(format!("no report `{report}`; reports: {}", REPORTS.join(", "))))?;
        let params = Params::parse(query, allowed)?;
        let travel = params.time_travel()?;
        let query = match report {
            "funnel" => {
                let query = FunnelQuery {
                    window: params.window()?,
                    by: params.by(&["channel", "campaign", "producer"])?,
                    within_days: params.within_days()?,
                    interval: params.interval()?,
                };
                query.bounds().map_err(ApiError::bad_parameter)?;
                Query::Funnel(query)
            }
            "velocity" => Query::Velocity {
                window: params.window()?,
            },
            "sla" => Query::Sla {
                window: params.window()?,
            },
            "rejections" => Query::Rejections {
                window: params.window()?,
                by: params.by(&["channel", "campaign"])?,
            },
            "cost" => Query::Cost {
                window: params.window()?,
                by: params.by(&["channel", "campaign"])?.unwrap_or(By::Channel),
            },
            "plan" => plan_query(&params, travel.as_of)?,
            "attribution" => Query::Attribution {
                models: models(&params)?,
                window: params.window()?,
                by: params.by(&["channel", "campaign"])?.unwrap_or(By::Channel),
            },
            "explain" => Query::Explain {
                lead_id: checked_lead(lead_id)?,
                models: models(&params)?,
            },
            _ => Query::Lead {
                lead_id: checked_lead(lead_id)?,
            },
        };
        Ok(Request { query, travel })
    }

    /// The report's JSON at the earlier log position `seq`, from the history of the live
    /// `engine` when it can answer exactly (the funnel: see `funnel_engine::funnel::funnel_at`);
    /// `None` when the prefix must be replayed instead.
    pub fn answer_from_history(&self, engine: &Engine, seq: u64, ledger: &Ledger) -> Result<Option<Vec<u8>>, ApiError> {
        let Query::Funnel(query) = &self.query else {
            return Ok(None);
        };
        if seq >= engine.head().seq {
            return Ok(None);
        }
        let at = match ledger.get(seq).map_err(ApiError::store)? {
            Some(entry) => funnel_core::LogPosition { seq, hash: entry.hash },
            None if seq == 0 => funnel_core::LogPosition::default(),
            None => return Ok(None),
        };
        funnel::funnel_at(engine, query, self.travel.as_of, at, ledger)
            .map_err(ApiError::store)?
            .map(|report| serde_json::to_vec(&report).map_err(ApiError::store))
            .transpose()
    }

    /// The report's JSON, computed on `engine` (whose head is the log position used); lead
    /// timelines and explanations read the lead's entries from `ledger`.
    pub fn answer(&self, engine: &Engine, ledger: &Ledger) -> Result<Vec<u8>, ApiError> {
        let as_of = self.travel.as_of;
        let upto = engine.head().seq;
        let timeline = |lead_id: &str| -> Result<Timeline, ApiError> {
            Ok(Timeline::of(
                ledger.entries_at(&engine.filed(lead_id)).map_err(ApiError::store)?,
                upto,
            ))
        };
        let missing = |lead_id: &str| ApiError::not_found(format!("no lead `{lead_id}` at log seq {upto}"));
        let json = match &self.query {
            Query::Funnel(query) => serde_json::to_vec(&funnel::funnel(engine, query, as_of)),
            Query::Velocity { window } => serde_json::to_vec(&reports::velocity(engine, *window, as_of)),
            Query::Sla { window } => serde_json::to_vec(&reports::sla(engine, *window, as_of)),
            Query::Rejections { window, by } => serde_json::to_vec(&reports::rejections(engine, *window, *by, as_of)),
            Query::Cost { window, by } => serde_json::to_vec(&reports::cost(engine, *window, *by, as_of)),
            Query::Plan {
                target_minor,
                currency,
                window,
            } => serde_json::to_vec(&reports::plan(engine, *target_minor, currency, *window, as_of)),
            Query::Attribution { models, window, by } => {
                serde_json::to_vec(&reports::attribution(engine, models, *window, *by, as_of))
            }
            Query::Explain { lead_id, models } => {
                engine.lead_no(lead_id).ok_or_else(|| missing(lead_id))?;
                let explained = reports::explain(engine, lead_id, &timeline(lead_id)?, models, as_of)
                    .ok_or_else(|| missing(lead_id))?;
                serde_json::to_vec(&explained)
            }
            Query::Lead { lead_id } => {
                engine.lead_no(lead_id).ok_or_else(|| missing(lead_id))?;
                let view =
                    reports::lead(engine, lead_id, &timeline(lead_id)?, as_of).ok_or_else(|| missing(lead_id))?;
                serde_json::to_vec(&view)
            }
        };
        json.map_err(ApiError::store)
    }

    /// Whether answering takes at most [`QUICK_COST`] index operations on `engine`: a funnel
    /// of the live state with a bounded number of groups, trend buckets and late leads. Such
    /// a question costs less than parsing its HTTP request and is answered in place.
    pub fn is_quick(&self, engine: &Engine) -> bool {
        match &self.query {
            Query::Funnel(query) if self.travel.at_seq.is_none() && self.travel.known_at.is_none() => {
                funnel::cost(engine, query, self.travel.as_of).is_some_and(|c| c <= QUICK_COST)
            }
            _ => false,
        }
    }

    /// Whether answering may take long (a scan, a replay): such requests queue for the
    /// bounded report pool; lead lookups and health checks do not.
    pub fn is_expensive(&self) -> bool {
        !matches!(self.query, Query::Lead { .. }) || self.travel.at_seq.is_some() || self.travel.known_at.is_some()
    }
}

fn checked_lead(lead_id: Option<&str>) -> Result<String, ApiError> {
    let lead_id = lead_id.unwrap_or_default();
    if funnel_core::event::is_token(lead_id) {
        Ok(lead_id.to_owned())
    } else {
        Err(ApiError::bad_parameter(format!(
            "lead_id: `{lead_id}` must match ^[A-Za-z0-9_-]{{1,128}}$"
        )))
    }
}

/// `model`: `all` (the default), one model, or a comma-separated list, in ATTRIBUTION.md's order.
fn models(params: &Params) -> Result<Vec<Model>, ApiError> {
    let text = params.get("model").unwrap_or("all");
    if text == "all" {
        return Ok(Model::ALL.to_vec());
    }
    let mut chosen = Vec::new();
    for name in text.split(',') {
        let model = Model::parse(name).ok_or_else(|| {
            let names: Vec<&str> = Model::ALL.iter().map(|m| m.as_str()).collect();
            ApiError::bad_parameter(format!("model: `{name}` is not all or one of {}", names.join(", ")))
        })?;
        if !chosen.contains(&model) {
            chosen.push(model);
        }
    }
    chosen.sort();
    Ok(chosen)
}

fn plan_query(params: &Params, as_of: Micros) -> Result<Query, ApiError> {
    let target = params.get("revenue_target_minor").ok_or_else(|| {
        ApiError::bad_parameter("revenue_target_minor: required (the revenue target in integer minor units)")
    })?;
    let target_minor = target.parse::<i64>().ok().filter(|t| *t > 0).ok_or_else(|| {
        ApiError::bad_parameter(format!(
            "revenue_target_minor: `{target}` is not a positive whole number"
        ))
    })?;
    let currency = params
        .get("currency")
        .ok_or_else(|| ApiError::bad_parameter("currency: required (ISO-4217)"))?;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ApiError::bad_parameter(format!(
            "currency: `{currency}` is not an ISO-4217 code"
        )));
    }
    let given = params.window()?;
    let window = Window::new(
        Some(given.from.unwrap_or(as_of - PLAN_WINDOW_DAYS * MICROS_PER_DAY)),
        Some(given.to.unwrap_or(as_of + 1)),
    )
    .map_err(ApiError::bad_parameter)?;
    Ok(Query::Plan {
        target_minor,
        currency: currency.to_owned(),
        window,
    })
}

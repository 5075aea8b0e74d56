//! Query-string parsing: every parameter checked, unknown ones refused, errors that name the parameter.

use std::collections::BTreeMap;

use funnel_core::report::{By, Interval, Window, WITHIN_DAYS_MAX};
use funnel_core::time::{parse_bound, Micros};

use crate::ApiError;

/// The time-travel parameters every report accepts.
pub const TIME_TRAVEL: [&str; 3] = ["as_of", "known_at", "at_seq"];

/// Which projection and business time a report is computed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeTravel {
    /// Business time: events with `occurred_at <= as_of` count (default: now).
    pub as_of: Micros,
    /// Recording time: only entries recorded by then.
    pub known_at: Option<Micros>,
    /// Log position: only entries `<= at_seq`.
    pub at_seq: Option<u64>,
}

/// A parsed query string.
#[derive(Debug, Default)]
pub struct Params {
    values: BTreeMap<String, String>,
}

impl Params {
    /// Parses `query`, allowing `allowed` plus the time-travel parameters.
    pub fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Params, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|e| ApiError::bad_parameter(format!("query string: {e}")))?;
        let mut values = BTreeMap::new();
        for (key, value) in pairs {
            if !allowed.contains(&key.as_str()) && !TIME_TRAVEL.contains(&key.as_str()) {
                let mut known: Vec<&str> = allowed.to_vec();
                known.extend(TIME_TRAVEL);
                return Err(ApiError::bad_parameter(format!(
                    "{key}: unknown parameter; expected one of {}",
                    known.join(", ")
                )));
            }
            if values.insert(key.clone(), value).is_some() {
                return Err(ApiError::bad_parameter(format!("{key}: given more than once")));
            }
        }
        Ok(Params { values })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    fn time(&self, key: &str) -> Result<Option<Micros>, ApiError> {
        self.get(key)
            .map(|v| parse_bound(v).map_err(|e| ApiError::bad_parameter(format!("{key}: {e}"))))
            .transpose()
    }

    pub fn window(&self) -> Result<Window, ApiError> {
        Window::new(self.time("from")?, self.time("to")?).map_err(ApiError::bad_parameter)
    }

    pub fn by(&self, allowed: &[&str]) -> Result<Option<By>, ApiError> {
        match self.get("by") {
            None => Ok(None),
            Some(text) if allowed.contains(&text) => By::parse(text).map(Some).map_err(ApiError::bad_parameter),
            Some(text) => Err(ApiError::bad_parameter(format!(
                "by: `{text}` is not one of {}",
                allowed.join(", ")
            ))),
        }
    }

    /// `within_days`: a whole number of days, 0 to [`WITHIN_DAYS_MAX`].
    pub fn within_days(&self) -> Result<Option<u32>, ApiError> {
        self.get("within_days")
            .map(|v| {
                v.parse::<u32>().ok().filter(|d| *d <= WITHIN_DAYS_MAX).ok_or_else(|| {
                    ApiError::bad_parameter(format!(
                        "within_days: `{v}` is not a whole number of days from 0 to {WITHIN_DAYS_MAX}"
                    ))
                })
            })
            .transpose()
    }

    /// `interval`: `day`, `week` or `month`.
    pub fn interval(&self) -> Result<Option<Interval>, ApiError> {
        self.get("interval")
            .map(|v| Interval::parse(v).map_err(ApiError::bad_parameter))
            .transpose()
    }

    pub fn time_travel(&self) -> Result<TimeTravel, ApiError> {
        let at_seq = self
            .get("at_seq")
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::bad_parameter(format!("at_seq: `{v}` is not a log position (a whole number ≥ 0)"))
                })
            })
            .transpose()?;
        Ok(TimeTravel {
            as_of: self.time("as_of")?.unwrap_or_else(funnel_engine::now_micros),
            known_at: self.time("known_at")?,
            at_seq,
        })
    }
}

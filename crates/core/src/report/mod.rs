//! Reports computed from a [`Projection`]: pure functions from state + query to a serialisable
//! answer. Output field order is fixed, so equal inputs give byte-identical JSON.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::lead::{LeadFacts, Milestone};
use crate::projection::{Entry, LogPosition, Projection};
use crate::time::{format_rfc3339, Micros};

/// The label of leads with no value in a breakdown (no touch, no producer, no campaign).
pub const NONE_KEY: &str = "(none)";

/// How a report breaks leads down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// The channel of the lead's first touch.
    Channel,
    /// The campaign of the lead's first touch.
    Campaign,
    /// The producer of the lead's first event.
    Producer,
}

impl By {
    pub fn parse(text: &str) -> Result<By, String> {
        match text {
            "channel" => Ok(By::Channel),
            "campaign" => Ok(By::Campaign),
            "producer" => Ok(By::Producer),
            other => Err(format!("by: `{other}` is not one of channel, campaign, producer")),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            By::Channel => "channel",
            By::Campaign => "campaign",
            By::Producer => "producer",
        }
    }
    pub(crate) fn key(self, facts: &LeadFacts, as_of: Micros) -> String {
        let value = match self {
            By::Channel => facts.source_at(as_of).map(|s| s.channel.clone()),
            By::Campaign => facts.source_at(as_of).and_then(|s| s.campaign.clone()),
            By::Producer => facts.first_producer.clone(),
        };
        value.unwrap_or_else(|| NONE_KEY.to_owned())
    }
}

/// A business-time window `[from, to)`; either end may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub from: Option<Micros>,
    pub to: Option<Micros>,
}

impl Window {
    pub fn new(from: Option<Micros>, to: Option<Micros>) -> Result<Window, String> {
        match (from, to) {
            (Some(f), Some(t)) if f > t => Err("from: must not be after to".to_owned()),
            _ => Ok(Window { from, to }),
        }
    }
    pub fn contains(&self, t: Micros) -> bool {
        self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|to| t < to)
    }
}

/// The log position a report was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Log {
    pub seq: u64,
    pub hash: String,
}

impl From<LogPosition> for Log {
    fn from(p: LogPosition) -> Log {
        Log {
            seq: p.seq,
            hash: p.hash_hex(),
        }
    }
}

/// A count per milestone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub inquiry: u64,
    pub mql: u64,
    pub sal: u64,
    pub sql: u64,
    pub opportunity: u64,
    pub won: u64,
    pub lost: u64,
}

impl Counts {
    fn bump(&mut self, milestone: Milestone) {
        let slot = match milestone {
            Milestone::Inquiry => &mut self.inquiry,
            Milestone::Mql => &mut self.mql,
            Milestone::Sal => &mut self.sal,
            Milestone::Sql => &mut self.sql,
            Milestone::Opportunity => &mut self.opportunity,
            Milestone::Won => &mut self.won,
            Milestone::Lost => &mut self.lost,
        };
        *slot += 1;
    }
}

/// Conversion rates of a cohort; `null` where the denominator is zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rates {
    pub mql_per_inquiry: Option<f64>,
    pub sal_per_mql: Option<f64>,
    pub sql_per_sal: Option<f64>,
    pub opportunity_per_sql: Option<f64>,
    pub win_rate: Option<f64>,
    pub lead_to_customer: Option<f64>,
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

impl Rates {
    fn of(c: &Counts) -> Rates {
        Rates {
            mql_per_inquiry: ratio(c.mql, c.inquiry),
            sal_per_mql: ratio(c.sal, c.mql),
            sql_per_sal: ratio(c.sql, c.sal),
            opportunity_per_sql: ratio(c.opportunity, c.sql),
            win_rate: ratio(c.won, c.sql),
            lead_to_customer: ratio(c.won, c.inquiry),
        }
    }
}

/// Funnel numbers of one group of leads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunnelGroup {
    pub key: String,
    /// Leads whose milestone falls in the window.
    pub period: Counts,
    /// Of leads whose inquiry falls in the window, how many reached each milestone (as of the query).
    pub cohort: Counts,
    pub rates: Rates,
}

impl FunnelGroup {
    pub(crate) fn new(key: String) -> FunnelGroup {
        FunnelGroup {
            key,
            period: Counts::default(),
            cohort: Counts::default(),
            rates: Rates::default(),
        }
    }

    pub(crate) fn add(&mut self, facts: &LeadFacts, window: &Window, as_of: Micros) {
        let reached: Vec<(Milestone, Micros)> = Milestone::ALL
            .into_iter()
            .filter_map(|m| facts.milestone_at(m, as_of).map(|t| (m, t)))
            .collect();
        for (m, t) in &reached {
            if window.contains(*t) {
                self.period.bump(*m);
            }
        }
        let in_cohort = reached
            .first()
            .is_some_and(|(m, t)| *m == Milestone::Inquiry && window.contains(*t));
        if in_cohort {
            for (m, _) in &reached {
                self.cohort.bump(*m);
            }
        }
    }
}

/// `GET /v1/funnel`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunnelReport {
    pub log: Log,
    pub as_of: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub by: Option<&'static str>,
    pub total: FunnelGroup,
    pub groups: Vec<FunnelGroup>,
}

pub fn funnel(projection: &Projection, window: Window, by: Option<By>, as_of: Micros) -> FunnelReport {
    let mut total = FunnelGroup::new("(all)".to_owned());
    let mut groups: BTreeMap<String, FunnelGroup> = BTreeMap::new();
    for facts in projection.leads().values().filter_map(|s| s.facts.as_ref()) {
        total.add(facts, &window, as_of);
        if let Some(by) = by {
            let key = by.key(facts, as_of);
            groups
                .entry(key.clone())
                .or_insert_with(|| FunnelGroup::new(key))
                .add(facts, &window, as_of);
        }
    }
    let mut groups: Vec<FunnelGroup> = groups.into_values().collect();
    for group in groups.iter_mut().chain(std::iter::once(&mut total)) {
        group.rates = Rates::of(&group.cohort);
    }
    FunnelReport {
        log: projection.head().into(),
        as_of: format_rfc3339(as_of),
        from: window.from.map(format_rfc3339),
        to: window.to.map(format_rfc3339),
        by: by.map(By::as_str),
        total,
        groups,
    }
}

/// One line of a lead's timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineItem {
    pub seq: u64,
    pub recorded_at: String,
    /// Seq of the retraction that removed this event from every report, if any.
    pub retracted_by: Option<u64>,
    pub event: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceView {
    pub channel: String,
    pub campaign: Option<String>,
    pub at: String,
}

/// `GET /v1/leads/{lead_id}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeadView {
    pub log: Log,
    pub as_of: String,
    pub lead_id: String,
    pub stage: &'static str,
    pub score: Option<f64>,
    pub owner: Option<String>,
    pub source: Option<SourceView>,
    pub milestones: BTreeMap<&'static str, Option<String>>,
    pub timeline: Vec<TimelineItem>,
}

/// The view of one lead as of `as_of`; `timeline` is every ledger entry filed under the lead
/// (its events and retractions of them). `None` if the projection has no such lead.
pub fn lead(projection: &Projection, lead_id: &str, timeline: &[Entry], as_of: Micros) -> Option<LeadView> {
    let state = projection.lead(lead_id)?;
    let known: Vec<_> = state
        .events
        .iter()
        .filter(|e| e.event.occurred_at <= as_of)
        .cloned()
        .collect();
    let facts = LeadFacts::derive(&known, projection.rules());
    let mut items: Vec<&Entry> = timeline.iter().filter(|e| e.event.occurred_at <= as_of).collect();
    items.sort_by_key(|e| (e.event.occurred_at, e.seq));
    let milestones = Milestone::ALL
        .into_iter()
        .map(|m| {
            (
                m.as_str(),
                facts
                    .as_ref()
                    .and_then(|f| f.milestone_at(m, as_of))
                    .map(format_rfc3339),
            )
        })
        .collect();
    Some(LeadView {
        log: projection.head().into(),
        as_of: format_rfc3339(as_of),
        lead_id: lead_id.to_owned(),
        stage: facts.as_ref().map_or("none", |f| f.stage.as_str()),
        score: facts.as_ref().and_then(|f| f.score),
        owner: facts.as_ref().and_then(|f| f.owner.clone()),
        source: facts.as_ref().and_then(|f| f.source.as_ref()).map(|s| SourceView {
            channel: s.channel.clone(),
            campaign: s.campaign.clone(),
            at: format_rfc3339(s.at),
        }),
        milestones,
        timeline: items
            .into_iter()
            .map(|e| TimelineItem {
                seq: e.seq,
                recorded_at: format_rfc3339(e.recorded_at),
                retracted_by: projection.retracted_by(&e.event.id),
                event: e.event.to_json(),
            })
            .collect(),
    })
}

mod attribution;
mod cost;
mod plan;
mod rejections;
mod sla;
mod velocity;

pub use attribution::{attribution, explain, AttributionReport, AttributionRow, ExplainReport, ExplainedDeal};
pub use cost::{cost, CostReport, CostRow};
pub use plan::{plan, Plan, PlanReport, PLAN_WON_DEALS_MIN};
pub use rejections::{rejections, GuaranteeCredit, RejectionGroup, RejectionsReport};
pub use sla::{sla, SlaReport};
pub use velocity::{velocity, StageDurations, VelocityReport};

/// Summary statistics of a sample: count, mean, median and p90.
///
/// Median: the middle value, or the mean of the two middle values. p90: nearest rank,
/// the value at rank ⌈0.9·n⌉ of the sorted sample. All `null` for an empty sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Stats {
    pub count: u64,
    pub mean: Option<f64>,
    pub median: Option<f64>,
    pub p90: Option<f64>,
}

impl Stats {
    pub fn of(mut sample: Vec<f64>) -> Stats {
        let n = sample.len();
        if n == 0 {
            return Stats::default();
        }
        sample.sort_by(f64::total_cmp);
        let mean = sample.iter().sum::<f64>() / n as f64;
        let median = if n % 2 == 1 {
            sample[n / 2]
        } else {
            (sample[n / 2 - 1] + sample[n / 2]) / 2.0
        };
        Stats {
            count: n as u64,
            mean: Some(mean),
            median: Some(median),
            p90: Some(nearest_rank(&sample, 0.9)),
        }
    }
}

/// The value at rank ⌈q·n⌉ (1-based) of a sorted, non-empty sample.
pub fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A duration in days.
pub fn days(micros: Micros) -> f64 {
    micros as f64 / crate::time::MICROS_PER_DAY as f64
}

/// The common head of every windowed report.
fn window_fields(window: &Window) -> (Option<String>, Option<String>) {
    (window.from.map(format_rfc3339), window.to.map(format_rfc3339))
}

//! Reports computed from a [`Projection`]: pure functions from state + query to a serialisable
//! answer. Output field order is fixed, so equal inputs give byte-identical JSON.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::lead::{LeadEvent, LeadFacts, Milestone};
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
    pub fn key(self, facts: &LeadFacts, as_of: Micros) -> String {
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
    pub fn bump(&mut self, milestone: Milestone) {
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
    pub fn of(c: &Counts) -> Rates {
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
    /// Of leads whose inquiry falls in the window, how many reached each milestone (as of the
    /// query, and within the conversion window if one is given).
    pub cohort: Counts,
    pub rates: Rates,
}

impl FunnelGroup {
    pub fn new(key: String) -> FunnelGroup {
        FunnelGroup {
            key,
            period: Counts::default(),
            cohort: Counts::default(),
            rates: Rates::default(),
        }
    }

    /// Adds one lead's facts. `within` is the conversion window in micros, if any.
    pub fn add(&mut self, facts: &LeadFacts, window: &Window, within: Option<Micros>, as_of: Micros) {
        let reached: Vec<(Milestone, Micros)> = Milestone::ALL
            .into_iter()
            .filter_map(|m| facts.milestone_at(m, as_of).map(|t| (m, t)))
            .collect();
        for (m, t) in &reached {
            if window.contains(*t) {
                self.period.bump(*m);
            }
        }
        let Some(&(Milestone::Inquiry, inquiry)) = reached.first() else {
            return;
        };
        if window.contains(inquiry) {
            for (m, t) in &reached {
                if within.is_none_or(|w| t - inquiry <= w) {
                    self.cohort.bump(*m);
                }
            }
        }
    }
}

/// Trend buckets of a funnel report: UTC days, weeks starting on Monday, or calendar months.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Day,
    Week,
    Month,
}

/// Most buckets one trend series may have (ten years of days is refused; four are not).
pub const SERIES_BUCKETS_MAX: usize = 1_500;
/// Longest conversion window `within_days` accepts.
pub const WITHIN_DAYS_MAX: u32 = 3_660;

impl Interval {
    pub fn parse(text: &str) -> Result<Interval, String> {
        match text {
            "day" => Ok(Interval::Day),
            "week" => Ok(Interval::Week),
            "month" => Ok(Interval::Month),
            other => Err(format!("interval: `{other}` is not one of day, week, month")),
        }
    }

    /// The start of the bucket after the one holding `t`.
    fn next_start(self, t: Micros) -> Micros {
        use crate::time::MICROS_PER_DAY;
        let day = t.div_euclid(MICROS_PER_DAY);
        match self {
            Interval::Day => (day + 1) * MICROS_PER_DAY,
            // 1970-01-01 was a Thursday: day 4 (1970-01-05) is the first Monday.
            Interval::Week => (day - (day - 4).rem_euclid(7) + 7) * MICROS_PER_DAY,
            Interval::Month => {
                let (y, m) = crate::time::year_month(t);
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                crate::time::month_start(y, m)
            }
        }
    }

    /// Bucket bounds over `[from, to)`: `from`, every bucket start inside, `to`. The first and
    /// last buckets are cut to the window. Refuses more than [`SERIES_BUCKETS_MAX`] buckets.
    pub fn bounds(self, from: Micros, to: Micros) -> Result<Vec<Micros>, String> {
        let mut bounds = vec![from];
        let mut t = from;
        while t < to {
            t = self.next_start(t).min(to);
            bounds.push(t);
            if bounds.len() > SERIES_BUCKETS_MAX + 1 {
                return Err(format!(
                    "interval: more than {SERIES_BUCKETS_MAX} buckets between from and to; use a longer interval"
                ));
            }
        }
        Ok(bounds)
    }
}

/// The period counts of one trend bucket `[from, to)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesBucket {
    pub from: String,
    pub to: String,
    pub period: Counts,
}

/// What a funnel report asks, besides the log position and business time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FunnelQuery {
    pub window: Window,
    pub by: Option<By>,
    /// Conversion window in days: cohort milestones count only within this of the inquiry.
    pub within_days: Option<u32>,
    /// Trend buckets; requires both ends of the window.
    pub interval: Option<Interval>,
}

impl FunnelQuery {
    /// The conversion window in micros.
    pub fn within(&self) -> Option<Micros> {
        self.within_days.map(|d| i64::from(d) * crate::time::MICROS_PER_DAY)
    }

    /// The trend buckets' bounds, if an interval is asked for.
    pub fn bounds(&self) -> Result<Option<Vec<Micros>>, String> {
        let Some(interval) = self.interval else {
            return Ok(None);
        };
        match (self.window.from, self.window.to) {
            (Some(from), Some(to)) => interval.bounds(from, to).map(Some),
            _ => Err("interval: needs both from and to".to_owned()),
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within_days: Option<u32>,
    pub total: FunnelGroup,
    pub groups: Vec<FunnelGroup>,
    /// Period counts of all leads per trend bucket, when `interval` is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series: Option<Vec<SeriesBucket>>,
}

impl FunnelReport {
    /// Assembles a report: rates from the cohort counts, series buckets from their bounds.
    pub fn assemble(
        head: LogPosition,
        query: &FunnelQuery,
        as_of: Micros,
        mut total: FunnelGroup,
        mut groups: Vec<FunnelGroup>,
        series: Option<(&[Micros], Vec<Counts>)>,
    ) -> FunnelReport {
        for group in groups.iter_mut().chain(std::iter::once(&mut total)) {
            group.rates = Rates::of(&group.cohort);
        }
        FunnelReport {
            log: head.into(),
            as_of: format_rfc3339(as_of),
            from: query.window.from.map(format_rfc3339),
            to: query.window.to.map(format_rfc3339),
            by: query.by.map(By::as_str),
            within_days: query.within_days,
            total,
            groups,
            series: series.map(|(bounds, counts)| {
                bounds
                    .windows(2)
                    .zip(counts)
                    .map(|(b, period)| SeriesBucket {
                        from: format_rfc3339(b[0]),
                        to: format_rfc3339(b[1]),
                        period,
                    })
                    .collect()
            }),
        }
    }
}

/// The funnel report by folding every lead (the oracle the engine is held to).
/// `query.bounds()` must have been checked by the caller; bad bounds give no series.
pub fn funnel(projection: &Projection, query: &FunnelQuery, as_of: Micros) -> FunnelReport {
    let within = query.within();
    let bounds = query.bounds().ok().flatten();
    let mut series = bounds.as_ref().map(|b| vec![Counts::default(); b.len() - 1]);
    let mut total = FunnelGroup::new("(all)".to_owned());
    let mut groups: BTreeMap<String, FunnelGroup> = BTreeMap::new();
    for facts in projection.leads().values().filter_map(|s| s.facts.as_ref()) {
        total.add(facts, &query.window, within, as_of);
        if let Some(by) = query.by {
            let key = by.key(facts, as_of);
            groups
                .entry(key.clone())
                .or_insert_with(|| FunnelGroup::new(key))
                .add(facts, &query.window, within, as_of);
        }
        if let (Some(bounds), Some(series)) = (&bounds, &mut series) {
            for m in Milestone::ALL {
                if let Some(t) = facts.milestone_at(m, as_of) {
                    let i = bounds.partition_point(|b| *b <= t);
                    if i >= 1 && i < bounds.len() {
                        series[i - 1].bump(m);
                    }
                }
            }
        }
    }
    let groups = groups.into_values().collect();
    FunnelReport::assemble(
        projection.head(),
        query,
        as_of,
        total,
        groups,
        bounds.as_deref().zip(series),
    )
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
    Some(lead_with(
        projection.head(),
        lead_id,
        &state.events,
        projection.rules(),
        timeline,
        |id| projection.retracted_by(id),
        as_of,
    ))
}

/// The view of one lead from its live events (sorted), the rules, its ledger timeline and
/// who retracted what.
pub fn lead_with(
    head: LogPosition,
    lead_id: &str,
    events: &[LeadEvent],
    rules: &crate::rules::RulesTimeline,
    timeline: &[Entry],
    retracted_by: impl Fn(&str) -> Option<u64>,
    as_of: Micros,
) -> LeadView {
    let known: Vec<_> = events
        .iter()
        .filter(|e| e.event.occurred_at <= as_of)
        .cloned()
        .collect();
    let facts = LeadFacts::derive(&known, rules);
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
    LeadView {
        log: head.into(),
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
                retracted_by: retracted_by(&e.event.id),
                event: e.event.to_json(),
            })
            .collect(),
    }
}

mod attribution;
mod cost;
mod plan;
mod rejections;
mod sla;
mod velocity;

pub use attribution::{
    attribution, explain, explain_with, AttributionReport, AttributionRow, CurrencyTotal, ExplainReport, ExplainedDeal,
};
pub use cost::{cost, CostReport, CostRow};
pub use plan::{plan, plan_from, Plan, PlanReport, PLAN_WON_DEALS_MIN};
pub use rejections::{rejections, GuaranteeCredit, RejectionGroup, RejectionsReport};
pub use sla::{sla, sla_of, OverdueHandoff, SlaReport, OVERDUE_LISTED};
pub use velocity::{velocity, velocity_of, StageDurations, VelocityReport, PAIRS};

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
pub fn window_fields(window: &Window) -> (Option<String>, Option<String>) {
    (window.from.map(format_rfc3339), window.to.map(format_rfc3339))
}

//! `GET /v1/rejections`: why sales rejects leads, and the lead-guarantee credits owed.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{window_fields, By, Log, Window, NONE_KEY};
use crate::event::RejectionReason;
use crate::projection::{LogPosition, Projection};
use crate::time::{format_rfc3339, Micros};

/// Rejections of one group of leads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectionGroup {
    pub key: String,
    pub count: u64,
    /// Every reason, zeros included.
    pub by_reason: BTreeMap<&'static str, u64>,
}

impl RejectionGroup {
    pub fn new(key: String) -> RejectionGroup {
        RejectionGroup {
            key,
            count: 0,
            by_reason: RejectionReason::ALL.iter().map(|r| (r.as_str(), 0)).collect(),
        }
    }
    pub fn add(&mut self, reason: RejectionReason) {
        self.count += 1;
        *self.by_reason.entry(reason.as_str()).or_default() += 1;
    }
}

/// Lead-guarantee credits: leads rejected as `icp_mismatch` in the window, per sourcing
/// channel and campaign (the lead's first touch). A lead counts once however often it is rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuaranteeCredit {
    pub channel: String,
    pub campaign: String,
    pub credits: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectionsReport {
    pub log: Log,
    pub as_of: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub by: Option<&'static str>,
    pub total: RejectionGroup,
    pub groups: Vec<RejectionGroup>,
    pub lead_guarantee: Vec<GuaranteeCredit>,
}

pub fn rejections(projection: &Projection, window: Window, by: Option<By>, as_of: Micros) -> RejectionsReport {
    let mut total = RejectionGroup::new("(all)".into());
    let mut groups: BTreeMap<String, RejectionGroup> = BTreeMap::new();
    let mut guaranteed: BTreeMap<(String, String), BTreeSet<&str>> = BTreeMap::new();
    for (lead_id, facts) in projection
        .leads()
        .iter()
        .filter_map(|(id, s)| Some((id, s.facts.as_ref()?)))
    {
        for (_, reason) in facts
            .rejections
            .iter()
            .filter(|(t, _)| *t <= as_of && window.contains(*t))
        {
            total.add(*reason);
            if let Some(by) = by {
                let key = by.key(facts, as_of);
                groups
                    .entry(key.clone())
                    .or_insert_with(|| RejectionGroup::new(key))
                    .add(*reason);
            }
            if *reason == RejectionReason::IcpMismatch {
                let source = facts.source_at(as_of);
                let channel = source.map_or(NONE_KEY.to_owned(), |s| s.channel.clone());
                let campaign = source
                    .and_then(|s| s.campaign.clone())
                    .unwrap_or_else(|| NONE_KEY.to_owned());
                guaranteed.entry((channel, campaign)).or_default().insert(lead_id);
            }
        }
    }
    let credits = guaranteed.into_iter().map(|(key, leads)| (key, leads.len() as u64));
    RejectionsReport::assemble(
        projection.head(),
        &window,
        by,
        as_of,
        total,
        groups.into_values().collect(),
        credits,
    )
}

impl RejectionsReport {
    /// The report from its tallies; `credits`: lead-guarantee credits per `(channel, campaign)`,
    /// in that order. Shared by the fold and the projection engine.
    pub fn assemble(
        head: LogPosition,
        window: &Window,
        by: Option<By>,
        as_of: Micros,
        total: RejectionGroup,
        groups: Vec<RejectionGroup>,
        credits: impl IntoIterator<Item = ((String, String), u64)>,
    ) -> RejectionsReport {
        let (from, to) = window_fields(window);
        RejectionsReport {
            log: head.into(),
            as_of: format_rfc3339(as_of),
            from,
            to,
            by: by.map(By::as_str),
            total,
            groups,
            lead_guarantee: credits
                .into_iter()
                .map(|((channel, campaign), credits)| GuaranteeCredit {
                    channel,
                    campaign,
                    credits,
                })
                .collect(),
        }
    }
}

//! A bulk load's lead records: gathered in log order as the entries are read (one append per
//! event, no per-lead list to grow), then laid out lead by lead once, when every lead is
//! derived.
//!
//! Gathering into a list per lead cost a lookup, an ordered insert and now and then a copy
//! of that lead's list for every event, on the one thread that applies entries; here an event
//! costs its lead's number and two appends, and the layout is one counting pass and one
//! scattering pass over the records.

use std::borrow::Cow;

use fxhash::FxHashMap;

use crate::dict::NONE;
use crate::record::{Kind, Rec};
use crate::state::{LeadNo, NameTable};

/// Records per block: blocks are never moved once filled, so gathering never copies them.
const BLOCK_RECS: usize = 1 << 16;

/// The records gathered so far, and the lead ids numbered in order of first appearance.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    names: NameTable,
    /// Every lead's id hash by number: the name table rehashes by them as it grows instead of
    /// reading every id again.
    hashes: Vec<u64>,
    /// Per record in log order its lead, and the record.
    leads: Vec<Vec<LeadNo>>,
    recs: Vec<Vec<Rec>>,
    /// Retractions of lead events, in log order: (lead, retracted seq, retraction's seq).
    retractions: Vec<(LeadNo, u64, u64)>,
}

impl Gathered {
    /// Lead `lead_id`'s number, the next one if it is new.
    pub(crate) fn lead_no(&mut self, lead_id: &str) -> LeadNo {
        self.names.number(lead_id, &mut self.hashes)
    }

    /// Lead `no`'s record, in log order.
    pub(crate) fn push(&mut self, no: LeadNo, rec: Rec) {
        if self.recs.last().is_none_or(|block| block.len() == BLOCK_RECS) {
            self.leads.push(Vec::with_capacity(BLOCK_RECS));
            self.recs.push(Vec::with_capacity(BLOCK_RECS));
        }
        if let (Some(leads), Some(recs)) = (self.leads.last_mut(), self.recs.last_mut()) {
            leads.push(no);
            recs.push(rec);
        }
    }

    /// Entry `by` retracts lead `no`'s event `seq`.
    pub(crate) fn retract(&mut self, no: LeadNo, seq: u64, by: u64) {
        self.retractions.push((no, seq, by));
    }

    /// The lead ids, and the records lead by lead.
    pub(crate) fn lay_out(self) -> (NameTable, ByLead) {
        let _span = tracing::info_span!("lay_out").entered();
        let Gathered {
            names,
            leads,
            recs,
            retractions,
            ..
        } = self;
        let count = names.len();
        let mut starts = vec![0usize; count + 1];
        for no in leads.iter().flatten() {
            starts[*no as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let total = starts[count];
        let mut next = starts.clone();
        // Every place is written below: one per record counted for its lead.
        let blank = Rec {
            at: 0,
            seq: 0,
            value: 0,
            a: NONE,
            b: NONE,
            producer: NONE,
            kind: Kind::Touch,
        };
        let mut by_lead = vec![blank; total];
        for (leads, recs) in leads.into_iter().zip(recs) {
            for (no, rec) in leads.iter().zip(&recs) {
                let at = &mut next[*no as usize];
                by_lead[*at] = *rec;
                *at += 1;
            }
        }
        let mut retracted: FxHashMap<LeadNo, Vec<(u64, u64)>> = FxHashMap::default();
        for (no, seq, by) in retractions {
            retracted.entry(no).or_default().push((seq, by));
        }
        (
            names,
            ByLead {
                recs: by_lead,
                starts,
                retracted,
            },
        )
    }
}

/// A bulk load's records lead by lead, each lead's in log order.
#[derive(Debug)]
pub(crate) struct ByLead {
    recs: Vec<Rec>,
    /// Lead `no`'s records are `recs[starts[no]..starts[no + 1]]`.
    starts: Vec<usize>,
    /// Per lead with any, its retractions in log order: (retracted seq, retraction's seq).
    retracted: FxHashMap<LeadNo, Vec<(u64, u64)>>,
}

impl ByLead {
    /// Lead `no`'s records in log order, retracted ones too.
    fn gathered(&self, no: LeadNo) -> &[Rec] {
        let no = no as usize;
        &self.recs[self.starts[no]..self.starts[no + 1]]
    }

    /// Lead `no`'s live records in order ([`Rec::order_key`]), and the seqs filed under it
    /// (its records', retracted ones too, and its retractions'), ascending.
    pub(crate) fn lead(&self, no: LeadNo) -> (Cow<'_, [Rec]>, Vec<u64>) {
        let gathered = self.gathered(no);
        let mut filed: Vec<u64> = gathered.iter().map(|r| r.seq).collect();
        let mut recs = Cow::Borrowed(gathered);
        if let Some(retractions) = self.retracted.get(&no) {
            recs.to_mut()
                .retain(|r| !retractions.iter().any(|(seq, _)| *seq == r.seq));
            filed.extend(retractions.iter().map(|(_, by)| *by));
            filed.sort_unstable();
        }
        if !recs.is_sorted_by_key(Rec::order_key) {
            recs.to_mut().sort_unstable_by_key(Rec::order_key);
        }
        (recs, filed)
    }

    /// Every retraction of a lead event, in log order per lead: (lead, the retracted record
    /// if it was still live then, retracted seq, retraction's seq).
    pub(crate) fn retractions(&self) -> impl Iterator<Item = (LeadNo, Option<Rec>, u64, u64)> + '_ {
        self.retracted.iter().flat_map(move |(no, retractions)| {
            retractions.iter().enumerate().map(move |(i, (seq, by))| {
                let earlier = retractions[..i].iter().any(|(s, _)| s == seq);
                let rec = self.gathered(*no).iter().find(|r| r.seq == *seq).copied();
                (*no, rec.filter(|_| !earlier), *seq, *by)
            })
        })
    }
}

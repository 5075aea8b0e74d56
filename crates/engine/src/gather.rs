//! A bulk load's lead records: gathered in log order as the entries are read (one append per
//! event, no per-lead list to grow), then laid out lead by lead once, when every lead is
//! derived.
//!
//! Gathering into a list per lead cost a lookup, an ordered insert and now and then a copy
//! of that lead's list for every event, on the one thread that applies entries; here an event
//! costs its lead's number and two appends, and the layout is one counting pass and one pass
//! over the records' leads.

use fxhash::FxHashMap;

use crate::record::Rec;
use crate::state::{LeadNo, NameTable};

/// The records gathered so far, and the lead ids numbered in order of first appearance.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    names: NameTable,
    /// Per record in log order its lead, and the record (room for the whole load is reserved
    /// up front: [`Gathered::reserve`]).
    leads: Vec<LeadNo>,
    recs: Vec<Rec>,
    /// Retractions of lead events, in log order: (lead, retracted seq, retraction's seq).
    retractions: Vec<(LeadNo, u64, u64)>,
}

impl Gathered {
    /// Makes room for `entries` more records: growing by copying would touch the memory of
    /// every record three times instead of once.
    pub(crate) fn reserve(&mut self, entries: usize) {
        self.leads.reserve_exact(entries);
        self.recs.reserve_exact(entries);
    }

    /// Lead `lead_id`'s number, the next one if it is new.
    pub(crate) fn lead_no(&mut self, lead_id: &str) -> LeadNo {
        self.names.number(lead_id)
    }

    /// Fetches what numbering `lead_id` reads first into the cache.
    pub(crate) fn prefetch(&self, lead_id: &str) {
        self.names.prefetch(lead_id);
    }

    /// Lead `no`'s record, in log order.
    pub(crate) fn push(&mut self, no: LeadNo, rec: Rec) {
        self.leads.push(no);
        self.recs.push(rec);
    }

    /// Entry `by` retracts lead `no`'s event `seq`.
    pub(crate) fn retract(&mut self, no: LeadNo, seq: u64, by: u64) {
        self.retractions.push((no, seq, by));
    }

    /// The lead ids, and the records found lead by lead: one counting pass and one pass
    /// writing each record's place into a list sorted by lead (4 bytes a record; the records
    /// themselves stay where they are, so the layout never holds them twice).
    pub(crate) fn lay_out(self) -> (NameTable, ByLead) {
        let _span = tracing::info_span!("lay_out").entered();
        let Gathered {
            names,
            leads,
            recs,
            retractions,
        } = self;
        let count = names.len();
        let mut starts = vec![0usize; count + 1];
        for no in &leads {
            starts[*no as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut next = starts.clone();
        let mut order = vec![0u32; recs.len()];
        for (i, no) in leads.iter().enumerate() {
            let at = &mut next[*no as usize];
            order[*at] = u32::try_from(i).expect("a bulk load of at most 2^32 records");
            *at += 1;
        }
        let mut retracted: FxHashMap<LeadNo, Vec<(u64, u64)>> = FxHashMap::default();
        for (no, seq, by) in retractions {
            retracted.entry(no).or_default().push((seq, by));
        }
        (
            names,
            ByLead {
                recs,
                order,
                starts,
                retracted,
            },
        )
    }
}

/// A bulk load's records, found lead by lead.
#[derive(Debug)]
pub(crate) struct ByLead {
    /// In log order.
    recs: Vec<Rec>,
    /// Where each record is in `recs`, lead by lead, each lead's in log order: lead `no`'s are
    /// `order[starts[no]..starts[no + 1]]`.
    order: Vec<u32>,
    starts: Vec<usize>,
    /// Per lead with any, its retractions in log order: (retracted seq, retraction's seq).
    retracted: FxHashMap<LeadNo, Vec<(u64, u64)>>,
}

impl ByLead {
    /// Lead `no`'s records in log order, retracted ones too.
    fn gathered(&self, no: LeadNo) -> impl Iterator<Item = &Rec> + '_ {
        let no = no as usize;
        self.order[self.starts[no]..self.starts[no + 1]]
            .iter()
            .map(|i| &self.recs[*i as usize])
    }

    /// Lead `no`'s live records in order ([`Rec::order_key`]), and the seqs filed under it
    /// (its records', retracted ones too, and its retractions'), ascending.
    pub(crate) fn lead(&self, no: LeadNo) -> (Vec<Rec>, Vec<u64>) {
        let mut recs: Vec<Rec> = self.gathered(no).copied().collect();
        let mut filed: Vec<u64> = recs.iter().map(|r| r.seq).collect();
        if let Some(retractions) = self.retracted.get(&no) {
            recs.retain(|r| !retractions.iter().any(|(seq, _)| *seq == r.seq));
            filed.extend(retractions.iter().map(|(_, by)| *by));
            filed.sort_unstable();
        }
        if !recs.is_sorted_by_key(Rec::order_key) {
            recs.sort_unstable_by_key(Rec::order_key);
        }
        (recs, filed)
    }

    /// Every retraction of a lead event, in log order per lead: (lead, the retracted record
    /// if it was still live then, retracted seq, retraction's seq).
    pub(crate) fn retractions(&self) -> impl Iterator<Item = (LeadNo, Option<Rec>, u64, u64)> + '_ {
        self.retracted.iter().flat_map(move |(no, retractions)| {
            retractions.iter().enumerate().map(move |(i, (seq, by))| {
                let earlier = retractions[..i].iter().any(|(s, _)| s == seq);
                let rec = self.gathered(*no).find(|r| r.seq == *seq).copied();
                (*no, rec.filter(|_| !earlier), *seq, *by)
            })
        })
    }
}

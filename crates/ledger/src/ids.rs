//! The permanent id index: which seqs hold an event whose id has a given 64-bit hash.
//!
//! Kept in memory ([`IdTable`]: every seq's fingerprint, and a table of seqs found by it) and
//! persisted as **runs**: one sled value per append batch, `j` ‖ first seq (u64 BE) → the
//! 8-byte id hashes of the consecutive seqs from there, written in the same atomic batch as the
//! entries' block. A run is one sequential key per batch where the old layout wrote one random
//! key per event (sled's slowest write: every batch touched ~1,000 leaves). The runs are read
//! back (8 bytes per event) the first time an id is looked up, not at open: `verify`, `export`
//! and lead timelines never need them. A fingerprint is only a candidate: whoever asks compares
//! the stored entry's id.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, RwLock};

use sha2::{Digest, Sha256};

use crate::{seq_from, Ledger, Result};

/// The id's hash: the first 8 bytes of SHA-256(id), as in the old `i` keys.
pub(crate) fn id_hash(id: &str) -> u64 {
    // Tests make ids share a hash this way: SHA-256 offers no collisions to test with.
    #[cfg(test)]
    if id.starts_with("same-hash-") {
        return 42;
    }
    let digest = Sha256::digest(id.as_bytes());
    u64::from_be_bytes([
        digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
    ])
}

pub(crate) fn run_key(first_seq: u64) -> [u8; 9] {
    crate::seq_key(b'j', first_seq)
}

/// Every seq's id fingerprint, and the seqs found by it: 9 bytes an entry where a map from
/// hash to seq took 38 (171 MB at 4.5 M entries, in every service that had taken in one
/// event). A fingerprint is the hash's top 32 bits: a lookup's candidates then include
/// another id's seq once in 2^32 / entries lookups (a thousand at 4.5 M entries), which the
/// caller's comparison of ids sets aside, as it does for ids sharing a whole hash.
#[derive(Default)]
pub(crate) struct IdTable {
    /// `prints[i]`: the fingerprint of seq `i + 1`'s id (0 where none was filed).
    prints: Vec<u32>,
    /// Seqs, found by the fingerprint `prints` holds for them.
    by_print: hashbrown::HashTable<u32>,
    /// Seqs past `u32::MAX` (never, short of four billion entries), by whole hash.
    beyond: HashMap<u64, Vec<u64>>,
}

fn print_of(hash: u64) -> u32 {
    (hash >> 32) as u32
}

/// The table's hash of a fingerprint: spread over 64 bits (the table picks buckets with the
/// low bits and tags them with the top 7).
fn spread(print: u32) -> u64 {
    u64::from(print).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(print)
}

/// The spread fingerprint of `seq`, a seq the table holds.
fn spread_of(prints: &[u32], seq: u32) -> u64 {
    spread(prints.get(seq as usize - 1).copied().unwrap_or(0))
}

impl IdTable {
    /// Room for seqs up to `head` without growing.
    fn reserve(&mut self, head: u64) {
        let IdTable { prints, by_print, .. } = self;
        let more = usize::try_from(head).unwrap_or(usize::MAX).saturating_sub(prints.len());
        prints.reserve_exact(more);
        by_print.reserve(more, |seq| spread_of(prints, *seq));
    }

    /// Files `seq` under `hash`; each seq once.
    pub(crate) fn insert(&mut self, hash: u64, seq: u64) {
        let Some(small) = u32::try_from(seq).ok().filter(|s| *s > 0) else {
            self.beyond.entry(hash).or_default().push(seq);
            return;
        };
        let IdTable { prints, by_print, .. } = self;
        let at = small as usize - 1;
        if prints.len() <= at {
            prints.resize(at + 1, 0);
        }
        prints[at] = print_of(hash);
        by_print.insert_unique(spread(print_of(hash)), small, |seq| spread_of(prints, *seq));
    }

    /// The seqs filed under `hash`, in seq order (the order filed), and now and then a seq of
    /// another id with the same fingerprint.
    pub(crate) fn seqs(&self, hash: u64) -> Vec<u64> {
        let print = print_of(hash);
        let mut out: Vec<u64> = (self.by_print.iter_hash(spread(print)))
            .filter(|seq| self.prints.get(**seq as usize - 1) == Some(&print))
            .map(|seq| u64::from(*seq))
            .collect();
        out.sort_unstable();
        out.extend(self.beyond.get(&hash).into_iter().flatten());
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.by_print.len() + self.beyond.values().map(Vec::len).sum::<usize>()
    }
}

/// The index as the ledger holds it, shared by every clone of the handle: loaded on first use.
#[derive(Default)]
pub(crate) struct Ids {
    table: OnceLock<RwLock<IdTable>>,
    loading: Mutex<()>,
}

impl Ids {
    pub(crate) fn table(&self, ledger: &Ledger) -> Result<&RwLock<IdTable>> {
        if let Some(table) = self.table.get() {
            return Ok(table);
        }
        let _one_loader = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(table) = self.table.get() {
            return Ok(table);
        }
        let loaded = load(ledger)?;
        Ok(self.table.get_or_init(|| RwLock::new(loaded)))
    }
}

/// Reads every run back. A store of the old layout (one `i` key per id hash) is converted
/// first: its keys become runs in one atomic batch; then the old keys are removed in batches
/// (a crash part-way leaves runs and some old keys, and the next load finishes the removal).
fn load(ledger: &Ledger) -> Result<IdTable> {
    let has_runs = ledger.log.scan_prefix(b"j").next().is_some();
    if ledger.log.scan_prefix(b"i").next().is_some() {
        if !has_runs {
            convert_old_layout(ledger)?;
        }
        remove_old_keys(ledger)?;
    }
    let mut table = IdTable::default();
    // Sized for the last run's seqs (not the ledger's head: a load may run inside an append,
    // which holds the head).
    if let Some((key, value)) = ledger.log.scan_prefix(b"j").next_back().transpose()? {
        table.reserve(seq_from(&key[1..]).unwrap_or(0) + (value.len() / 8) as u64);
    }
    // Read as `Ledger::runs` reads them, so that sled's cache lets them go again.
    for item in ledger.runs(b'j', 0, |_, value| (value.len() / 8) as u64) {
        let (first, value) = item?;
        for (i, hash) in value.chunks_exact(8).filter_map(seq_from).enumerate() {
            table.insert(hash, first + i as u64);
        }
    }
    Ok(table)
}

/// Most seqs per run (64 KiB values, well below where sled moves a value to a blob file).
const RUN_SEQS_MAX: usize = 8_192;

/// `(seq, hash)` pairs in seq order as runs of consecutive seqs.
fn stage_runs(by_seq: &[(u64, u64)], batch: &mut sled::Batch) {
    for run in by_seq.chunk_by(|a, b| b.0 == a.0 + 1) {
        for part in run.chunks(RUN_SEQS_MAX) {
            let value: Vec<u8> = part.iter().flat_map(|(_, hash)| hash.to_be_bytes()).collect();
            batch.insert(&run_key(part[0].0), value);
        }
    }
}

fn convert_old_layout(ledger: &Ledger) -> Result<()> {
    let _span = tracing::info_span!("convert_id_index").entered();
    let mut by_seq: Vec<(u64, u64)> = Vec::new();
    for item in ledger.log.scan_prefix(b"i") {
        let (key, value) = item?;
        let hash = seq_from(&key[1..]).unwrap_or(0);
        by_seq.extend(value.chunks_exact(8).filter_map(seq_from).map(|seq| (seq, hash)));
    }
    by_seq.sort_unstable();
    let mut batch = sled::Batch::default();
    stage_runs(&by_seq, &mut batch);
    ledger.log.apply_batch(batch)?;
    ledger.flush()?;
    tracing::info!(ids = by_seq.len(), "id index converted from one key per id to runs");
    Ok(())
}

/// Old keys removed per sled batch (one batch of millions of removals takes gigabytes).
const REMOVALS_PER_BATCH: usize = 16_384;

fn remove_old_keys(ledger: &Ledger) -> Result<()> {
    loop {
        let keys: Vec<_> = ledger
            .log
            .scan_prefix(b"i")
            .keys()
            .take(REMOVALS_PER_BATCH)
            .collect::<std::result::Result<_, _>>()?;
        if keys.is_empty() {
            return ledger.flush();
        }
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key);
        }
        ledger.log.apply_batch(batch)?;
    }
}

/// One batch's additions: staged with the batch's entries, added to the table once the batch
/// is written.
#[derive(Default)]
pub(crate) struct IdIndexBatch {
    added: Vec<(u64, u64)>,
}

impl IdIndexBatch {
    /// The stored entry with this id (entries up to `stored_upto` are stored; this batch's own
    /// are the caller's to check).
    pub(crate) fn find(&mut self, ledger: &Ledger, id: &str, stored_upto: u64) -> Result<Option<crate::Entry>> {
        let seqs = ledger.read_ids()?.seqs(id_hash(id));
        ledger.entry_with_id(&seqs, id, stored_upto)
    }

    /// Files `seq` (the next seq after the last one added, if any) under `id`.
    pub(crate) fn add(&mut self, id: &str, seq: u64) {
        self.added.push((seq, id_hash(id)));
    }

    /// Puts this batch's runs into `batch`.
    pub(crate) fn stage(&self, batch: &mut sled::Batch) {
        stage_runs(&self.added, batch);
    }

    /// Adds what this batch filed to the table: call once the batch is written.
    pub(crate) fn commit(&mut self, ledger: &Ledger) -> Result<()> {
        let mut table = ledger.write_ids()?;
        for (seq, hash) in self.added.drain(..) {
            table.insert(hash, seq);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the hashes (few, so that ids share them, and some sharing only their top
        /// 32 bits), a hash's seqs are every seq filed under it in order, plus only seqs
        /// whose hash has the same top 32 bits: seqs from 1 (the table sized for some of them
        /// first), and seqs past `u32::MAX` (found by their whole hash).
        #[test]
        fn a_hash_finds_every_seq_filed_under_it(
            hashes in proptest::collection::vec((0u64..4, 0u64..2).prop_map(|(h, l)| h << 32 | l), 0..300),
            start in prop_oneof![Just(1u64), Just(u64::from(u32::MAX) + 1)],
        ) {
            let mut table = IdTable::default();
            if start == 1 {
                table.reserve(hashes.len() as u64 / 2);
            }
            let filed: Vec<(u64, u64)> = hashes.iter().enumerate().map(|(i, h)| (*h, start + i as u64)).collect();
            for (hash, seq) in &filed {
                table.insert(*hash, *seq);
            }
            prop_assert_eq!(table.len(), filed.len());
            for hash in (0..5).flat_map(|h: u64| [h << 32, h << 32 | 1]) {
                let same = |h: &u64| if start == 1 { h >> 32 == hash >> 32 } else { *h == hash };
                let expected: Vec<u64> = filed.iter().filter(|(h, _)| same(h)).map(|(_, s)| *s).collect();
                prop_assert_eq!(table.seqs(hash), expected);
            }
        }
    }
}

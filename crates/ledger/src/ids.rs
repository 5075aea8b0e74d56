//! The permanent id index: which seqs hold an event whose id has a given 64-bit hash.
//!
//! Kept in memory (a hash map from the id's hash to its seq) and persisted as **runs**: one sled
//! value per append batch, `j` ‖ first seq (u64 BE) → the 8-byte id hashes of the consecutive
//! seqs from there, written in the same atomic batch as the entries' block. A run is one
//! sequential key per batch where the old layout wrote one random key per event (sled's
//! slowest write: every batch touched ~1,000 leaves). The runs are read back (8 bytes per
//! event) the first time an id is looked up, not at open: `verify`, `export` and lead
//! timelines never need them. A hash is only a candidate: whoever asks compares the stored
//! entry's id.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, OnceLock, RwLock};

use sha2::{Digest, Sha256};

use crate::{seq_from, Ledger, Result};

/// The id's hash: the first 8 bytes of SHA-256(id), as in the old `i` keys.
pub(crate) fn id_hash(id: &str) -> u64 {
    let digest = Sha256::digest(id.as_bytes());
    u64::from_be_bytes([
        digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
    ])
}

pub(crate) fn run_key(first_seq: u64) -> [u8; 9] {
    let mut key = [b'j'; 9];
    key[1..].copy_from_slice(&first_seq.to_be_bytes());
    key
}

/// Keys are already uniformly random (SHA-256 bits): hashing them again is wasted work.
#[derive(Default)]
pub(crate) struct AsIs(u64);

impl Hasher for AsIs {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Hash → seq, and the rare extra seqs of a hash two ids share.
#[derive(Default)]
pub(crate) struct IdTable {
    first: HashMap<u64, u64, BuildHasherDefault<AsIs>>,
    more: HashMap<u64, Vec<u64>>,
}

impl IdTable {
    pub(crate) fn insert(&mut self, hash: u64, seq: u64) {
        match self.first.entry(hash) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(seq);
            }
            std::collections::hash_map::Entry::Occupied(_) => self.more.entry(hash).or_default().push(seq),
        }
    }

    /// Every seq filed under `hash`, in the order filed.
    pub(crate) fn seqs(&self, hash: u64) -> Vec<u64> {
        let Some(&first) = self.first.get(&hash) else {
            return Vec::new();
        };
        let mut out = vec![first];
        if let Some(more) = self.more.get(&hash) {
            out.extend_from_slice(more);
        }
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.first.len() + self.more.values().map(Vec::len).sum::<usize>()
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

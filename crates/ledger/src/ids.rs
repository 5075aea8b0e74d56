//! The permanent id index: which seqs hold an event whose id has a given 64-bit hash.
//!
//! Kept in memory ([`IdTable`]: `(fingerprint, seq)` pairs sorted, 8 bytes an entry) and
//! persisted in the **ids file** ([`crate::IDS_FILE`]): the 8-byte hash of seq `s`'s id at
//! offset `(s - 1) * 8`, written with the batch's blocks before the sled batch that commits
//! them. It is derived from the blocks, so whatever the file lacks (a store from before it, a
//! last write that did not reach the disk) is computed from them again; bytes past the last
//! stored seq are an append that did not commit and are never read. The file is read back
//! the first time an id is looked up, not at open: `verify`, `export` and lead timelines never
//! need it. A fingerprint is only a candidate: whoever asks compares the stored entry's id.
//! (The index lived in sled before: one key per id, then one run per batch; sled kept the runs
//! it read in its cache, 41 MB at 4.5 M events whatever its capacity.)

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, RwLock};

use sha2::{Digest, Sha256};

use crate::blockfile::DataFile;
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

/// Every seq's id fingerprint and the seqs found by it, in 8 bytes an entry: `(fingerprint,
/// seq)` pairs sorted, with a directory by the fingerprint's top 16 bits, and the entries filed
/// since in a small hash table merged in now and then. A map from hash to seq took 38 bytes an
/// entry (171 MB at 4.5 M entries, in every service that had taken in one event); a hash table
/// of seqs beside a vector of fingerprints took 13 at its load factor. A fingerprint is the
/// hash's top 32 bits: a lookup's candidates then include another id's seq once in 2^32 /
/// entries lookups (a thousand at 4.5 M entries), which the caller's comparison of ids sets
/// aside, as it does for ids sharing a whole hash.
#[derive(Default)]
pub(crate) struct IdTable {
    /// `fingerprint << 32 | seq`, sorted.
    sorted: Vec<u64>,
    /// `starts[b]`: where in `sorted` the fingerprints whose top 16 bits are `b` begin
    /// (`DIRECTORY + 1` entries once anything is sorted).
    starts: Vec<u32>,
    /// Entries filed since the last merge (`fingerprint << 32 | seq`), found by fingerprint.
    recent: hashbrown::HashTable<u64>,
    /// Seqs past `u32::MAX` (never, short of four billion entries), by whole hash.
    beyond: HashMap<u64, Vec<u64>>,
}

const DIRECTORY: usize = 1 << 16;

/// `recent` is merged into `sorted` when it outgrows a sixteenth of it, and at least this many
/// entries: a merge copies `sorted` (tens of milliseconds at millions of entries).
const MERGE_AT_LEAST: usize = if cfg!(test) { 4 } else { 1 << 16 };

fn print_of(hash: u64) -> u32 {
    (hash >> 32) as u32
}

/// The table's hash of a fingerprint: spread over 64 bits (the table picks buckets with the
/// low bits and tags them with the top 7).
fn spread(print: u32) -> u64 {
    u64::from(print).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(print)
}

/// `fingerprint << 32 | seq`, or `None` for a seq past `u32::MAX` (or 0).
fn pair_of(hash: u64, seq: u64) -> Option<u64> {
    let small = u32::try_from(seq).ok().filter(|s| *s > 0)?;
    Some(u64::from(print_of(hash)) << 32 | u64::from(small))
}

fn pair_print(pair: u64) -> u32 {
    (pair >> 32) as u32
}

fn pair_seq(pair: &u64) -> u64 {
    pair & u64::from(u32::MAX)
}

/// Writes `(seq, id hash)` pairs, runs of consecutive seqs, at their seqs' places in the ids
/// file.
pub(crate) fn write_hashes(file: &DataFile, pairs: &[(u64, u64)]) -> Result<()> {
    for run in pairs.chunk_by(|a, b| b.0 == a.0 + 1) {
        let bytes: Vec<u8> = run.iter().flat_map(|(_, hash)| hash.to_be_bytes()).collect();
        file.write_at((run[0].0 - 1) * 8, &bytes)?;
    }
    Ok(())
}

impl IdTable {
    /// An empty table with room for `expected` entries filed with [`IdTable::push`].
    fn building(expected: u64) -> IdTable {
        let mut table = IdTable::default();
        table.sorted.reserve_exact(usize::try_from(expected).unwrap_or(0));
        table
    }

    /// Files `seq` under `hash` while building.
    fn push(&mut self, hash: u64, seq: u64) {
        match pair_of(hash, seq) {
            Some(pair) => self.sorted.push(pair),
            None => self.beyond.entry(hash).or_default().push(seq),
        }
    }

    /// Sorts what was pushed, once: inserting it entry by entry would grow the small table
    /// over and over.
    fn built(mut self) -> IdTable {
        self.sorted.sort_unstable();
        self.sorted.shrink_to_fit();
        self.index();
        self
    }

    /// Rebuilds the directory of `sorted`.
    fn index(&mut self) {
        self.starts.clear();
        let mut at = 0;
        for bucket in 0..=DIRECTORY as u64 {
            while self.sorted.get(at).is_some_and(|pair| pair >> 48 < bucket) {
                at += 1;
            }
            self.starts.push(at as u32);
        }
    }

    /// Files `seq` under `hash`; each seq once.
    pub(crate) fn insert(&mut self, hash: u64, seq: u64) {
        let Some(pair) = pair_of(hash, seq) else {
            self.beyond.entry(hash).or_default().push(seq);
            return;
        };
        (self.recent).insert_unique(spread(pair_print(pair)), pair, |pair| spread(pair_print(*pair)));
        if self.recent.len() >= (self.sorted.len() / 16).max(MERGE_AT_LEAST) {
            self.merge();
        }
    }

    /// Moves `recent` into `sorted`.
    fn merge(&mut self) {
        let sorted_len = self.sorted.len();
        self.sorted.reserve_exact(self.recent.len());
        self.sorted.extend(std::mem::take(&mut self.recent));
        self.sorted[sorted_len..].sort_unstable();
        // Two sorted runs: the stable sort finds them and merges them in one pass.
        self.sorted.sort();
        self.index();
    }

    /// The seqs filed under `hash`, in seq order (the order filed), and now and then a seq of
    /// another id with the same fingerprint.
    pub(crate) fn seqs(&self, hash: u64) -> Vec<u64> {
        let print = print_of(hash);
        let bucket = (print >> 16) as usize;
        let mut out: Vec<u64> = Vec::new();
        if let (Some(&from), Some(&to)) = (self.starts.get(bucket), self.starts.get(bucket + 1)) {
            let part = &self.sorted[from as usize..to as usize];
            let first = part.partition_point(|pair| pair_print(*pair) < print);
            out.extend(
                part[first..]
                    .iter()
                    .take_while(|pair| pair_print(**pair) == print)
                    .map(pair_seq),
            );
        }
        out.extend(
            (self.recent.iter_hash(spread(print)))
                .filter(|pair| pair_print(**pair) == print)
                .map(pair_seq),
        );
        out.sort_unstable();
        out.extend(self.beyond.get(&hash).into_iter().flatten());
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.sorted.len() + self.recent.len() + self.beyond.values().map(Vec::len).sum::<usize>()
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

/// Bytes of the ids file read at a time.
const READ_BYTES: usize = 1 << 20;

/// Reads the ids file back up to the last stored seq, computing what it lacks from the blocks
/// (and writing that to it).
fn load(ledger: &Ledger) -> Result<IdTable> {
    let _span = tracing::info_span!("load_id_index").entered();
    let upto = ledger.stored.load(std::sync::atomic::Ordering::Acquire);
    let file = &ledger.id_hashes;
    let mut table = IdTable::building(upto);
    let mut chunk = vec![0u8; READ_BYTES];
    let mut seq = 1;
    while seq <= upto {
        let want = usize::try_from((upto - seq + 1) * 8).map_or(READ_BYTES, |w| w.min(READ_BYTES));
        let got = file.read_at((seq - 1) * 8, &mut chunk[..want])?;
        for hash in chunk[..got].chunks_exact(8).filter_map(seq_from) {
            table.push(hash, seq);
            seq += 1;
        }
        if got < want {
            break;
        }
    }
    if seq <= upto {
        tracing::info!(
            from = seq,
            upto,
            "the ids file ends early: hashing the rest of the ids from the blocks"
        );
        for block in ledger.blocks(seq) {
            let block = block?;
            let mut entries = Vec::new();
            block.read_into(seq, upto, &mut entries)?;
            let hashes: Vec<(u64, u64)> = entries.iter().map(|e| (e.seq, id_hash(e.event.id))).collect();
            for &(seq, hash) in &hashes {
                table.push(hash, seq);
            }
            write_hashes(file, &hashes)?;
            seq += entries.len() as u64;
            if seq > upto {
                break;
            }
        }
        file.sync()?;
    }
    Ok(table.built())
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

    /// This batch's `(seq, id hash)` pairs, in seq order, for the ids file.
    pub(crate) fn hashes(&self) -> &[(u64, u64)] {
        &self.added
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

    /// A hash whose fingerprint is one of a few far apart (in different parts of the directory).
    fn spread_wide(h: u64) -> u64 {
        h.wrapping_mul(0x5555_5555) << 32
    }

    proptest! {
        /// Whatever the hashes (few, so that ids share them, and some sharing only their top
        /// 32 bits), a hash's seqs are every seq filed under it in order, plus only seqs
        /// whose hash has the same top 32 bits: seqs from 1 (half of them loaded at once, the
        /// rest filed one by one and merged in every few), and seqs past `u32::MAX` (found by
        /// their whole hash).
        #[test]
        fn a_hash_finds_every_seq_filed_under_it(
            hashes in proptest::collection::vec((0u64..4, 0u64..2).prop_map(|(h, l)| spread_wide(h) | l), 0..300),
            start in prop_oneof![Just(1u64), Just(u64::from(u32::MAX) + 1)],
        ) {
            let filed: Vec<(u64, u64)> = hashes.iter().enumerate().map(|(i, h)| (*h, start + i as u64)).collect();
            // Some loaded at once, the rest filed one by one (merged in now and then).
            let loaded = filed.len() / 2;
            let mut table = IdTable::building(loaded as u64);
            for (hash, seq) in &filed[..loaded] {
                table.push(*hash, *seq);
            }
            let mut table = table.built();
            for (hash, seq) in &filed[loaded..] {
                table.insert(*hash, *seq);
            }
            prop_assert_eq!(table.len(), filed.len());
            for hash in (0..5).flat_map(|h: u64| [spread_wide(h), spread_wide(h) | 1]) {
                let same = |h: &u64| if start == 1 { h >> 32 == hash >> 32 } else { *h == hash };
                let expected: Vec<u64> = filed.iter().filter(|(h, _)| same(h)).map(|(_, s)| *s).collect();
                prop_assert_eq!(table.seqs(hash), expected);
            }
        }
    }
}

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
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
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

/// Every seq's id fingerprint and the seqs found by it, in a scratch file, with a directory of
/// 256 KiB in memory. The fingerprint is the hash's top 32 bits: the directory is by its top
/// 16 bits, and the file holds each entry's low 16 bits and its seq ([`Entries`]), sorted by
/// fingerprint within their part of the directory. A lookup reads its part of the file, about
/// 70 entries of 6 bytes at 4.5 M entries, from the page cache. Entries filed since the last
/// merge sit in a small hash table, merged in now and then.
///
/// A lookup's candidates include another id's seq once in 2^32 / entries lookups (a thousand at
/// 4.5 M entries), which the caller's comparison of ids sets aside, as it does for ids sharing a
/// whole hash. (A map from hash to seq took 38 bytes an entry, 171 MB at 4.5 M entries in every
/// service that had taken in one event; sorted `(fingerprint, seq)` pairs in memory took 8, 36
/// MB; the fingerprints' low 16 bits in memory with the seqs in the file 2, 9.3 MB.)
pub(crate) struct IdTable {
    merged: Sorted,
    /// Entries filed since the last merge (`fingerprint << 32 | seq`), found by fingerprint.
    recent: hashbrown::HashTable<u64>,
    /// Seqs past `u32::MAX` (never, short of four billion entries), by whole hash.
    beyond: HashMap<u64, Vec<u64>>,
    /// A merge failed part way: the scratch file no longer matches the directory.
    damaged: bool,
}

/// The merged entries.
struct Sorted {
    /// `starts[b]`: where in `entries` the fingerprints whose top 16 bits are `b` begin
    /// (`DIRECTORY + 1` entries).
    starts: Vec<u32>,
    /// Their fingerprints' low 16 bits and their seqs, sorted by fingerprint, then seq.
    entries: Entries,
}

const DIRECTORY: usize = 1 << 16;

/// `recent` is merged in when it outgrows a thirty-second of the merged entries, and at least
/// this many: a merge reads and rewrites the scratch file, and `recent` takes about 10 bytes
/// an entry.
const MERGE_AT_LEAST: usize = if cfg!(test) { 4 } else { 1 << 16 };

/// Entries written or read at a time by a merge.
const CHUNK: usize = if cfg!(test) { 8 } else { 1 << 16 };

/// Bytes of an entry in the scratch file: the fingerprint's low 16 bits, then the seq, both
/// little-endian.
const ENTRY_BYTES: usize = 6;

fn entry_low(entry: &[u8; ENTRY_BYTES]) -> u16 {
    u16::from_le_bytes([entry[0], entry[1]])
}

fn entry_seq(entry: &[u8; ENTRY_BYTES]) -> u32 {
    u32::from_le_bytes([entry[2], entry[3], entry[4], entry[5]])
}

/// The merged entries (a file in the ledger's directory, removed as soon as it is opened, so
/// that nothing outlives the process that wrote it: every process builds the table afresh from
/// the ids file). A merge rewrites it in place.
struct Entries {
    file: std::fs::File,
    len: usize,
}

impl Entries {
    fn create(dir: &Path) -> Result<Entries> {
        let path = dir.join(SCRATCH_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        std::fs::remove_file(&path)?;
        Ok(Entries { file, len: 0 })
    }

    /// Appends `(low 16 bits of the fingerprint, seq)` entries.
    fn append(&mut self, entries: &[(u16, u32)]) -> Result<()> {
        self.write_at(self.len, entries)?;
        self.len += entries.len();
        Ok(())
    }

    /// Writes entries at entry `at` (over what is there, or past the end).
    fn write_at(&self, at: usize, entries: &[(u16, u32)]) -> Result<()> {
        let mut bytes = Vec::with_capacity(entries.len() * ENTRY_BYTES);
        for (low, seq) in entries {
            bytes.extend_from_slice(&low.to_le_bytes());
            bytes.extend_from_slice(&seq.to_le_bytes());
        }
        self.file.write_all_at(&bytes, (at * ENTRY_BYTES) as u64)?;
        Ok(())
    }

    /// The entries at `from..to`, appended to `out`.
    fn read(&self, from: usize, to: usize, bytes: &mut Vec<u8>, out: &mut Vec<(u16, u32)>) -> Result<()> {
        bytes.resize((to - from) * ENTRY_BYTES, 0);
        self.file.read_exact_at(bytes, (from * ENTRY_BYTES) as u64)?;
        let (entries, _) = bytes.as_chunks::<ENTRY_BYTES>();
        out.extend(entries.iter().map(|entry| (entry_low(entry), entry_seq(entry))));
        Ok(())
    }
}

/// The scratch file's name while it is being opened.
const SCRATCH_FILE: &str = "ids-by-hash.tmp";

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

/// A table being built from a whole ids file: pairs gathered, sorted once.
#[derive(Default)]
struct Building {
    pairs: Vec<u64>,
    beyond: HashMap<u64, Vec<u64>>,
}

impl Building {
    /// Room for `expected` entries.
    fn new(expected: u64) -> Building {
        let mut building = Building::default();
        building.pairs.reserve_exact(usize::try_from(expected).unwrap_or(0));
        building
    }

    /// Files `seq` under `hash`.
    fn push(&mut self, hash: u64, seq: u64) {
        match pair_of(hash, seq) {
            Some(pair) => self.pairs.push(pair),
            None => self.beyond.entry(hash).or_default().push(seq),
        }
    }

    /// Sorts what was pushed, once (inserting it entry by entry would grow the small table
    /// over and over), and writes the seqs to a scratch file in `dir`.
    fn built(mut self, dir: &Path) -> Result<IdTable> {
        self.pairs.sort_unstable();
        let mut merged = Merged::new(dir)?;
        for pair in std::mem::take(&mut self.pairs) {
            merged.push(pair)?;
        }
        Ok(IdTable {
            merged: merged.finish()?,
            recent: hashbrown::HashTable::new(),
            beyond: self.beyond,
            damaged: false,
        })
    }
}

impl IdTable {
    /// Files `seq` under `hash`; each seq once, in seq order.
    pub(crate) fn insert(&mut self, hash: u64, seq: u64) -> Result<()> {
        let Some(pair) = pair_of(hash, seq) else {
            self.beyond.entry(hash).or_default().push(seq);
            return Ok(());
        };
        (self.recent).insert_unique(spread(pair_print(pair)), pair, |pair| spread(pair_print(*pair)));
        if self.recent.len() >= (self.merged.entries.len / 32).max(MERGE_AT_LEAST) {
            self.merge()?;
        }
        Ok(())
    }

    /// Moves `recent` into the merged entries, in place: from the last entry back, the larger
    /// of the last old entry and the last recent one goes to the end of what is left, so the
    /// file is written over where it was read. (A new file for every merge put each entry on a
    /// page the kernel had to find and clear first: 6% of a backlogged service's samples,
    /// `perf record` while it drained 4 M events.) A merge that fails part way leaves the
    /// table unusable, and says so on every lookup.
    fn merge(&mut self) -> Result<()> {
        let _span = tracing::debug_span!("merge_id_index", recent = self.recent.len()).entered();
        let mut recent: Vec<u64> = std::mem::take(&mut self.recent).into_iter().collect();
        recent.sort_unstable();
        let merged = &mut self.merged;
        // Each part of the directory moves up by the recent entries of the parts before it.
        let mut starts = Vec::with_capacity(DIRECTORY + 1);
        let mut before = 0;
        for (part, start) in merged.starts.iter().enumerate() {
            while recent
                .get(before)
                .is_some_and(|p| ((pair_print(*p) >> 16) as usize) < part)
            {
                before += 1;
            }
            starts.push(start + before as u32);
        }
        self.damaged = true;
        let (mut old, mut left) = (merged.entries.len, recent.len());
        let (mut bytes, mut read, mut written) = (Vec::new(), Vec::with_capacity(CHUNK), Vec::with_capacity(CHUNK));
        // `read` holds old entries up to `old` (the last one at its end); `written` the
        // entries placed last, largest first, bound for the end of what is left.
        let mut part = DIRECTORY - 1;
        while left > 0 {
            if old > 0 && read.is_empty() {
                merged
                    .entries
                    .read(old.saturating_sub(CHUNK), old, &mut bytes, &mut read)?;
            }
            let last_old = read.last().map(|(low, seq)| {
                while merged.starts[part] as usize > old - 1 {
                    part -= 1;
                }
                ((part as u32) << 16 | u32::from(*low), *seq)
            });
            let newest = recent[left - 1];
            match last_old {
                Some((print, seq)) if print > pair_print(newest) => {
                    written.push((print as u16, seq));
                    read.pop();
                    old -= 1;
                }
                _ => {
                    written.push((pair_print(newest) as u16, newest as u32));
                    left -= 1;
                }
            }
            if written.len() == CHUNK || left == 0 {
                written.reverse();
                merged.entries.write_at(old + left, &written)?;
                written.clear();
            }
        }
        merged.entries.len += recent.len();
        merged.starts = starts;
        self.damaged = false;
        Ok(())
    }

    /// The seqs filed under `hash`, in seq order (the order filed), and now and then a seq of
    /// another id with the same fingerprint.
    pub(crate) fn seqs(&self, hash: u64) -> Result<Vec<u64>> {
        if self.damaged {
            return Err(std::io::Error::other("the id index's scratch file failed during a merge").into());
        }
        let print = print_of(hash);
        let bucket = (print >> 16) as usize;
        let merged = &self.merged;
        let (from, to) = (merged.starts[bucket] as usize, merged.starts[bucket + 1] as usize);
        // The part's bytes, on the stack while they fit (parts hold ~70 entries at 4.5 M).
        let mut stack = [0u8; 4096];
        let mut heap = Vec::new();
        let bytes = match stack.get_mut(..(to - from) * ENTRY_BYTES) {
            Some(bytes) => bytes,
            None => {
                heap.resize((to - from) * ENTRY_BYTES, 0);
                &mut heap[..]
            }
        };
        merged.entries.file.read_exact_at(bytes, (from * ENTRY_BYTES) as u64)?;
        let (part, _) = bytes.as_chunks::<ENTRY_BYTES>();
        let low = print as u16;
        let first = part.partition_point(|entry| entry_low(entry) < low);
        let mut out: Vec<u64> = part[first..]
            .iter()
            .take_while(|entry| entry_low(entry) == low)
            .map(|entry| u64::from(entry_seq(entry)))
            .collect();
        out.extend(
            (self.recent.iter_hash(spread(print)))
                .filter(|pair| pair_print(**pair) == print)
                .map(pair_seq),
        );
        out.sort_unstable();
        out.extend(self.beyond.get(&hash).into_iter().flatten());
        Ok(out)
    }

    pub(crate) fn len(&self) -> usize {
        self.merged.entries.len + self.recent.len() + self.beyond.values().map(Vec::len).sum::<usize>()
    }
}

/// Merged entries being written in order: the directory in memory, the entries to a new
/// scratch file a chunk at a time.
struct Merged {
    starts: Vec<u32>,
    entries: Entries,
    /// Entries pushed but not yet written.
    chunk: Vec<(u16, u32)>,
}

impl Merged {
    fn new(dir: &Path) -> Result<Merged> {
        Ok(Merged {
            starts: Vec::with_capacity(DIRECTORY + 1),
            entries: Entries::create(dir)?,
            chunk: Vec::with_capacity(CHUNK),
        })
    }

    fn pushed(&self) -> usize {
        self.entries.len + self.chunk.len()
    }

    /// The next pair in order.
    fn push(&mut self, pair: u64) -> Result<()> {
        let print = pair_print(pair);
        while self.starts.len() <= (print >> 16) as usize {
            self.starts.push(self.pushed() as u32);
        }
        self.chunk.push((print as u16, pair as u32));
        if self.chunk.len() == CHUNK {
            self.entries.append(&self.chunk)?;
            self.chunk.clear();
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Sorted> {
        self.entries.append(&self.chunk)?;
        while self.starts.len() <= DIRECTORY {
            self.starts.push(self.entries.len as u32);
        }
        Ok(Sorted {
            starts: self.starts,
            entries: self.entries,
        })
    }
}

/// The index as the ledger holds it, shared by every clone of the handle: loaded on first use.
pub(crate) struct Ids {
    table: OnceLock<RwLock<IdTable>>,
    loading: Mutex<()>,
    /// The ledger's directory.
    dir: PathBuf,
}

impl Ids {
    pub(crate) fn new(dir: &Path) -> Ids {
        Ids {
            table: OnceLock::new(),
            loading: Mutex::new(()),
            dir: dir.to_owned(),
        }
    }

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
    let mut table = Building::new(upto);
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
    table.built(&ledger.ids.dir)
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
        let seqs = ledger.read_ids()?.seqs(id_hash(id))?;
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
            table.insert(hash, seq)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scratch_dir() -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("funnel-ids-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A hash whose fingerprint is one of a few: `top` picks its part of the directory, `low`
    /// the rest (so that parts hold several fingerprints, and fingerprints in different parts
    /// share their low bits), `rest` the bits below the fingerprint.
    fn hash_of(top: u64, low: u64, rest: u64) -> u64 {
        (top * 0x5555) << 48 | (low * 0x5555) << 32 | rest
    }

    proptest! {
        /// Whatever the hashes (few, so that ids share them, and some sharing only their top
        /// 32 bits), a hash's seqs are every seq filed under it in order, plus only seqs
        /// whose hash has the same top 32 bits: seqs from 1 (half of them loaded at once, the
        /// rest filed one by one and merged in every few), and seqs past `u32::MAX` (found by
        /// their whole hash). Asked after every entry filed.
        #[test]
        fn a_hash_finds_every_seq_filed_under_it(
            hashes in proptest::collection::vec((0u64..3, 0u64..3, 0u64..2).prop_map(|(t, l, r)| hash_of(t, l, r)), 0..300),
            start in prop_oneof![Just(1u64), Just(u64::from(u32::MAX) + 1)],
        ) {
            let filed: Vec<(u64, u64)> = hashes.iter().enumerate().map(|(i, h)| (*h, start + i as u64)).collect();
            // Some loaded at once, the rest filed one by one (merged in now and then).
            let dir = scratch_dir();
            let loaded = filed.len() / 2;
            let mut building = Building::new(loaded as u64);
            for (hash, seq) in &filed[..loaded] {
                building.push(*hash, *seq);
            }
            let mut table = building.built(&dir).unwrap();
            for upto in loaded..=filed.len() {
                if upto > loaded {
                    let (hash, seq) = filed[upto - 1];
                    table.insert(hash, seq).unwrap();
                }
                prop_assert_eq!(table.len(), upto);
                let asked = (0..4).flat_map(|t| (0..4).flat_map(move |l| [hash_of(t, l, 0), hash_of(t, l, 1)]));
                for hash in asked {
                    let same = |h: &u64| if start == 1 { h >> 32 == hash >> 32 } else { *h == hash };
                    let expected: Vec<u64> =
                        filed[..upto].iter().filter(|(h, _)| same(h)).map(|(_, s)| *s).collect();
                    prop_assert_eq!(table.seqs(hash).unwrap(), expected);
                }
            }
            // The scratch files are gone from the directory as soon as they are opened.
            prop_assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
            std::fs::remove_dir(&dir).unwrap();
        }
    }
}

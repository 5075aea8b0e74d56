//! The ledger: the append-only, hash-chained log of every accepted event.
//!
//! Ground truth of the whole system; everything else is derived from it. The entries live in
//! [`block`]s of consecutive entries (one per append batch, ≤ 16 KiB), end to end in the
//! [`blockfile`], and the id hash of each seq in the ids file ([`ids`]); one sled tree
//! (`ledger`, in the store in `places/`) says where each block lies, and the batch that
//! places an append's blocks is its commit point:
//!
//! | key | value |
//! |---|---|
//! | `m` | the chain's metadata (JSON): format, genesis, what it was migrated from |
//! | `p` ‖ first seq (u64 BE) | where the block starting at that seq lies in the blocks file: offset (u64 BE), length (u32 BE) |
//!
//! Stores written by earlier versions (sled's files in the ledger's directory itself, blocks
//! perhaps still sled values) are brought to this layout when they open ([`legacy`]).
//!
//! Which entries belong to which lead is derived state: the engine files each entry's seq
//! under its lead and reads a timeline back with [`Ledger::entries_at`].
//!
//! What each entry's hash covers is the chain specification, `schemas/chain.md` (format 2):
//! SHA-256 of the RFC 8785 canonical JSON of `{event, prev_hash, recorded_at, seq}`.
//! Writes become durable only at [`Ledger::flush`]; callers ack after it, never before.

mod block;
mod blockfile;
pub mod canonical;
mod exchange;
mod ids;
mod legacy;
mod migrate;
mod v1;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use funnel_core::time::Micros;
use funnel_core::{Entry, Event, LogPosition};
use serde_json::Value;

use block::{Block, BlockWriter};
pub use block::{DecodedBlocks, EntryRef, RawBlock};
use blockfile::{DataFile, Place};
pub use blockfile::{BLOCKS_FILE, IDS_FILE};
pub use canonical::{canonical_bytes, entry_hash, CHAIN_FORMAT};
pub use exchange::{export, import, salvage, ExportHeader, ExportLine};
pub use migrate::{migrate, Migration};

/// Name of the sled tree holding the chain's metadata and the places of its blocks.
pub const LOG_TREE: &str = "ledger";
/// How many tail entries are re-hashed when the ledger opens.
pub const OPEN_CHECK_ENTRIES: u64 = 64;
/// sled's page cache. Its default (1 GiB) filled up on every full scan of the log and stayed
/// resident; the projection engine keeps what it needs itself, so the ledger's cache only
/// serves lead lookups and recent entries.
pub const CACHE_BYTES: u64 = 64 << 20;
/// Opens a sled store, waiting up to `wait` for its file lock: a store this process just
/// dropped holds it a moment longer (sled's flusher thread lets go last). A store another
/// process has open stays locked, and that error comes back. The engine's checkpoint store
/// opens the same way.
pub fn open_sled(config: &sled::Config, wait: std::time::Duration) -> std::result::Result<sled::Db, sled::Error> {
    let started = std::time::Instant::now();
    loop {
        match config.open() {
            // sled reports a held lock as an `Other` error that only its text names.
            Err(sled::Error::Io(e))
                if e.to_string().starts_with("could not acquire lock") && started.elapsed() < wait =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            opened => return opened,
        }
    }
}

/// The directory of the ledger's sled store, inside the ledger's: the chain's metadata and
/// the place of every block. (Earlier versions kept sled's files in the ledger's directory
/// itself; see [`legacy`].)
pub const PLACES_DIR: &str = "places";

/// The sled configuration of the places store at `path`.
fn store_config(path: &Path) -> sled::Config {
    sled_config(path, CACHE_BYTES)
}

/// The sled configuration of a store at `path` (the places store, the engine's checkpoint
/// store): the segment size it was created with (sled refuses another),
/// [`STORE_SEGMENT_BYTES`] for a new one.
pub fn sled_config(path: &Path, cache_bytes: u64) -> sled::Config {
    sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        .segment_size(persisted_segment_size(path).unwrap_or(STORE_SEGMENT_BYTES))
}

/// The segment size in the `conf` file of the sled store at `path`, if there is one.
fn persisted_segment_size(path: &Path) -> Option<usize> {
    // sled's `conf` is text lines followed by a binary checksum.
    let conf = std::fs::read(path.join("conf")).ok()?;
    String::from_utf8_lossy(&conf)
        .lines()
        .find_map(|line| line.strip_prefix("segment_size:")?.trim().parse().ok())
}

/// How long opening the ledger waits for a lock this process may still hold.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// sled's segment size in the ledger's directory itself (the layouts before [`PLACES_DIR`]).
/// 8 MiB was chosen when blocks were sled values (a leaf of blocks stayed inline); stores of
/// that layout still open with it, and format 1 used sled's default, 512 KiB, which is how a
/// format-1 store is recognised.
pub const SEGMENT_BYTES: usize = 8 << 20;

/// sled's segment size for a new store (places, the engine's checkpoint). sled writes through a
/// buffer of a segment's size (heaptrack showed the 8 MiB one allocated in every service),
/// whose pages stay resident once written: 8.4 MB of a restarted 1 M-lead service for the
/// checkpoint store's (its pages read back resident, `/proc/PID/pagemap`). Stores made with
/// 8 MiB keep it.
pub const STORE_SEGMENT_BYTES: usize = 1 << 20;

/// Everything that can go wrong in the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The store itself failed (I/O, corruption sled detected). Stop; do not ack anything.
    #[error("store error: {0}")]
    Store(#[from] sled::Error),
    /// An entry's bytes or chain do not check out. Report loudly; never serve from this store.
    #[error("ledger damaged at seq {seq}: {reason}")]
    Damaged { seq: u64, reason: String },
    /// An import line was refused; nothing from it on was imported (`funnel import` then
    /// removes what was, so a refused file leaves the data dir as it was).
    #[error("import line {line}: {reason}")]
    Import { line: u64, reason: String },
    /// Import needs an empty ledger.
    #[error("import needs an empty ledger; this one has {0} entries")]
    NotEmpty(u64),
    /// The directory holds a format-1 ledger, which this version reads only to migrate it.
    #[error(
        "{0} holds a format-1 ledger; upgrade it with `funnel migrate --data-dir <data dir>` \
         (it re-chains every entry under format 2, records the old head in the new chain and keeps \
         the old store beside it)"
    )]
    NeedsMigration(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, LedgerError>;

/// What happened to one event offered to [`Ledger::append_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Newly stored at this seq.
    Stored(u64),
    /// Already stored, identical, at this seq: nothing written.
    Duplicate(u64),
    /// Already stored at this seq with different content: nothing written (DLQ `id_conflict`).
    Conflict(u64),
}

/// One event offered for appending.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub event: &'a Event,
    pub stream_seq: u64,
}

impl<'a> Candidate<'a> {
    /// An event appended without JetStream (`stream_seq` 0).
    pub fn direct(event: &'a Event) -> Candidate<'a> {
        Candidate { event, stream_seq: 0 }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Head {
    position: LogPosition,
    recorded_at: Micros,
    /// The prev_hash of seq 1.
    genesis: [u8; 32],
    /// Where the next block goes in the blocks file: just past the last placed one.
    end: u64,
}

/// The chain's metadata, stored under `m` as JSON.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub format: u32,
    /// The prev_hash of seq 1, hex.
    pub genesis: String,
    /// `{"format": 1, "seq": N, "hash": "…"}` when this chain was migrated from format 1.
    pub migrated_from: Option<Value>,
}

impl Meta {
    fn new(migrated_from: Option<Value>) -> Meta {
        Meta {
            format: CHAIN_FORMAT,
            genesis: canonical::hex(&canonical::genesis(migrated_from.as_ref())),
            migrated_from,
        }
    }
}

/// A handle on the ledger; cheap to clone, safe to share. Appends are serialised internally,
/// so seqs are assigned by one writer and visibility order equals seq order.
#[derive(Clone)]
pub struct Ledger {
    db: sled::Db,
    log: sled::Tree,
    blocks: Arc<DataFile>,
    /// The id hash of every seq ([`ids`]).
    id_hashes: Arc<DataFile>,
    /// The last seq stored (what the id index loads up to; readable without the head's lock,
    /// which an append holds while it loads the index).
    stored: Arc<std::sync::atomic::AtomicU64>,
    head: Arc<Mutex<Head>>,
    ids: Arc<ids::Ids>,
}

pub(crate) const BINCODE: bincode::config::Configuration = bincode::config::standard();

const META_KEY: &[u8] = b"m";

/// The key `prefix` ‖ seq (u64 BE): sled's order is seq order within a key space.
pub(crate) fn seq_key(prefix: u8, seq: u64) -> [u8; 9] {
    let mut key = [prefix; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The key of a block's [`Place`].
fn place_key(first_seq: u64) -> [u8; 9] {
    seq_key(b'p', first_seq)
}

fn seq_from(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// Checks one entry against its predecessor's position; the reason if it does not hold.
pub fn check_link(prev: &LogPosition, entry: &Entry) -> std::result::Result<(), String> {
    if entry.seq != prev.seq + 1 {
        return Err(format!("expected seq {}, found {}", prev.seq + 1, entry.seq));
    }
    if entry.prev_hash != prev.hash {
        return Err("prev_hash does not match the previous entry's hash".to_owned());
    }
    if entry.hash != entry_hash(&entry.prev_hash, entry.seq, entry.recorded_at, &entry.event) {
        return Err("hash does not match the entry's content".to_owned());
    }
    Ok(())
}

/// The outcome of walking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Entries that checked out before the first bad one (or all of them).
    pub checked: u64,
    pub head: LogPosition,
    /// The first bad seq and why.
    pub first_bad: Option<(u64, String)>,
}

impl Ledger {
    /// Opens (or creates) the ledger under `dir` and re-checks its last [`OPEN_CHECK_ENTRIES`]
    /// entries. A damaged tail is [`LedgerError::Damaged`]: the caller must not serve from it.
    pub fn open(dir: &Path) -> Result<Ledger> {
        let ledger = Ledger::open_unchecked(dir)?;
        let from = ledger.head().seq.saturating_sub(OPEN_CHECK_ENTRIES).max(1);
        let mut prev = ledger.position_of(from - 1)?;
        // Through every placed block, each read once: a place past the end of the blocks file
        // (the head is the last block the file holds) is found here too.
        for entry in ledger.entries(from) {
            let entry = entry?;
            check_link(&prev, &entry).map_err(|reason| LedgerError::Damaged { seq: entry.seq, reason })?;
            prev = LogPosition {
                seq: entry.seq,
                hash: entry.hash,
            };
        }
        Ok(ledger)
    }

    /// Opens without checking anything beyond what sled checks: for auditing a ledger that
    /// may be damaged ([`Ledger::verify`] then walks the whole chain). Never serve from it unchecked.
    /// A format-1 store is refused with [`LedgerError::NeedsMigration`].
    pub fn open_unchecked(dir: &Path) -> Result<Ledger> {
        if v1::is_v1(dir) {
            return Err(LedgerError::NeedsMigration(dir.display().to_string()));
        }
        Ledger::open_store(dir)
    }

    fn open_store(dir: &Path) -> Result<Ledger> {
        std::fs::create_dir_all(dir)?;
        legacy::upgrade(dir)?;
        let ledger = Ledger::on_store(dir, &dir.join(PLACES_DIR))?;
        let meta = match ledger.meta()? {
            Some(meta) => meta,
            None => {
                let meta = Meta::new(None);
                ledger.write_meta(&meta)?;
                meta
            }
        };
        let genesis = unhex(&meta.genesis).ok_or_else(|| LedgerError::Damaged {
            seq: 0,
            reason: "the chain metadata's genesis is not 64 hex digits".into(),
        })?;
        let mut head = Head {
            position: LogPosition { seq: 0, hash: genesis },
            recorded_at: 0,
            genesis,
            end: 0,
        };
        // The last block the file holds: a place past its end is damage, which `open` refuses
        // and `verify` locates (and the bytes after the last block held are left as they are).
        let len = ledger.blocks.len()?;
        let mut lost = false;
        for item in ledger.log.scan_prefix(b"p").rev() {
            let (key, value) = item?;
            let (first, place) = placed(&key, &value)?;
            if place.end() > len {
                lost = true;
                continue;
            }
            head.end = place.end();
            let bytes = ledger.blocks.read(first, place)?;
            let block = Block::parse(first, &bytes)?;
            let last = block.entry(block.len().saturating_sub(1))?;
            head.position = LogPosition {
                seq: last.seq,
                hash: last.hash,
            };
            head.recorded_at = last.recorded_at;
            break;
        }
        if !lost {
            ledger.cut_unplaced(head.end)?;
        }
        ledger
            .stored
            .store(head.position.seq, std::sync::atomic::Ordering::Release);
        *ledger.lock_head() = head;
        Ok(ledger)
    }

    /// The ledger's files in `dir`, with its sled store in `store`.
    fn on_store(dir: &Path, store: &Path) -> Result<Ledger> {
        let db = open_sled(&store_config(store), LOCK_WAIT)?;
        let log = db.open_tree(LOG_TREE)?;
        Ok(Ledger {
            db,
            log,
            blocks: Arc::new(DataFile::open(dir, BLOCKS_FILE)?),
            id_hashes: Arc::new(DataFile::open(dir, IDS_FILE)?),
            stored: Arc::default(),
            head: Arc::default(),
            ids: Arc::new(ids::Ids::new(dir)),
        })
    }

    /// The last block's first seq and place.
    fn last_place(&self) -> Result<Option<(u64, Place)>> {
        let last = self.log.scan_prefix(b"p").next_back().transpose()?;
        last.map(|(key, value)| placed(&key, &value)).transpose()
    }

    /// Cuts off bytes past `end`, the last placed block's end: an append that stopped before
    /// its places landed in sled. Nothing there was ever visible, let alone acknowledged.
    fn cut_unplaced(&self, end: u64) -> Result<()> {
        let len = self.blocks.len()?;
        if len > end {
            tracing::warn!(
                bytes = len - end,
                "cutting off the end of the blocks file: an append that stopped before it was indexed"
            );
            self.blocks.truncate(end)?;
        }
        Ok(())
    }

    fn read_ids(&self) -> Result<std::sync::RwLockReadGuard<'_, ids::IdTable>> {
        Ok(self.ids.table(self)?.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn write_ids(&self) -> Result<std::sync::RwLockWriteGuard<'_, ids::IdTable>> {
        Ok(self.ids.table(self)?.write().unwrap_or_else(|p| p.into_inner()))
    }

    /// How many ids the index holds (one per stored entry); loads it if not loaded yet.
    pub fn indexed_ids(&self) -> Result<usize> {
        Ok(self.read_ids()?.len())
    }

    /// The chain's metadata, if written.
    pub fn meta(&self) -> Result<Option<Meta>> {
        match self.log.get(META_KEY)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| LedgerError::Damaged {
                    seq: 0,
                    reason: format!("the chain metadata does not parse: {e}"),
                }),
        }
    }

    fn write_meta(&self, meta: &Meta) -> Result<()> {
        let bytes = serde_json::to_vec(meta).map_err(std::io::Error::from)?;
        self.log.insert(META_KEY, bytes)?;
        Ok(())
    }

    fn lock_head(&self) -> MutexGuard<'_, Head> {
        // A panic while holding the lock cannot leave Head half-written (it is Copy), so poison is harmless.
        self.head.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn position_of(&self, seq: u64) -> Result<LogPosition> {
        if seq == 0 {
            let genesis = self.lock_head().genesis;
            return Ok(LogPosition { seq: 0, hash: genesis });
        }
        let entry = self.get(seq)?.ok_or_else(|| LedgerError::Damaged {
            seq,
            reason: "missing".into(),
        })?;
        Ok(LogPosition { seq, hash: entry.hash })
    }

    /// The last entry's seq and hash (seq 0 and the genesis hash when empty).
    pub fn head(&self) -> LogPosition {
        self.lock_head().position
    }

    /// The block holding `seq`, as (first seq, bytes).
    fn block_of(&self, seq: u64) -> Result<Option<(u64, Vec<u8>)>> {
        match self.log.range(place_key(0)..=place_key(seq)).next_back().transpose()? {
            None => Ok(None),
            Some((key, value)) => {
                let (first, place) = placed(&key, &value)?;
                Ok(Some((first, self.blocks.read(first, place)?)))
            }
        }
    }

    /// The entry at `seq`, if the log is that long.
    pub fn get(&self, seq: u64) -> Result<Option<Entry>> {
        if seq == 0 {
            return Ok(None);
        }
        let Some((first, bytes)) = self.block_of(seq)? else {
            return Ok(None);
        };
        let block = Block::parse(first, &bytes)?;
        if seq > block.last_seq() {
            return Ok(None);
        }
        block.entry((seq - first) as usize).map(Some)
    }

    /// The seq of the event with this id.
    pub fn seq_of(&self, id: &str) -> Result<Option<u64>> {
        Ok(self.find(id)?.map(|entry| entry.seq))
    }

    /// The entry of the event with this id.
    pub fn find(&self, id: &str) -> Result<Option<Entry>> {
        let seqs = self.read_ids()?.seqs(ids::id_hash(id))?;
        self.entry_with_id(&seqs, id, u64::MAX)
    }

    /// The entry among `seqs` (an id index value) whose id is `id`. Seqs past `stored_upto`
    /// are this batch's own, not stored yet, and skipped; any other missing entry is damage.
    fn entry_with_id(&self, seqs: &[u64], id: &str, stored_upto: u64) -> Result<Option<Entry>> {
        for &seq in seqs.iter().filter(|seq| **seq <= stored_upto) {
            let entry = self.get(seq)?.ok_or_else(|| LedgerError::Damaged {
                seq,
                reason: "indexed but missing".into(),
            })?;
            if entry.event.id == id {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    /// Entries from `from` (inclusive) to the head, in seq order.
    pub fn entries(&self, from: u64) -> impl Iterator<Item = Result<Entry>> + '_ {
        let from = from.max(1);
        self.blocks(from).flat_map(move |block| match block {
            Ok(block) => block.entries(from),
            Err(e) => vec![Err(e)],
        })
    }

    /// The stored blocks from the one holding seq `from` on, not yet decoded: a full read of
    /// the log decodes them where it uses them ([`RawBlock::read_into`], events borrowed from
    /// the block's bytes), so the reading thread only iterates.
    pub fn blocks(&self, from: u64) -> impl Iterator<Item = Result<RawBlock>> + '_ {
        let from = from.max(1);
        let start = match self.log.range(place_key(0)..=place_key(from)).next_back() {
            Some(Ok((key, _))) => seq_from(&key[1..]).unwrap_or(from),
            _ => from,
        };
        self.log.range(place_key(start)..=place_key(u64::MAX)).map(|item| {
            let (key, value) = item?;
            let (first, place) = placed(&key, &value)?;
            Ok(RawBlock::new(first, self.blocks.read(first, place)?))
        })
    }

    /// The entries at `seqs` (ascending), reading each block once: a lead's timeline, from
    /// the seqs the engine files under it.
    pub fn entries_at(&self, seqs: &[u64]) -> Result<Vec<Entry>> {
        let mut out = Vec::with_capacity(seqs.len());
        let mut cached: Option<(u64, Vec<u8>)> = None;
        for &seq in seqs {
            let missing = || LedgerError::Damaged {
                seq,
                reason: "filed under a lead but missing".into(),
            };
            let mut block = match &cached {
                Some((first, bytes)) if seq >= *first => Some(Block::parse(*first, bytes)?),
                _ => None,
            };
            if block.as_ref().is_none_or(|b| seq > b.last_seq()) {
                cached = self.block_of(seq)?;
                let (first, bytes) = cached.as_ref().ok_or_else(missing)?;
                block = Some(Block::parse(*first, bytes)?);
            }
            let block = block.ok_or_else(missing)?;
            if seq > block.last_seq() {
                return Err(missing());
            }
            out.push(block.entry((seq - block.first_seq) as usize)?);
        }
        Ok(out)
    }

    /// Appends a batch: every new event gets the next seq; exact duplicates (stored earlier or
    /// earlier in this batch) and id conflicts are reported, not written. The new entries go
    /// into one block (more if it outgrows `block::BLOCK_BYTES`) with their index keys, in one
    /// atomic sled batch. Not durable until [`Ledger::flush`].
    pub fn append_batch(&self, candidates: &[Candidate<'_>], now: Micros) -> Result<Vec<Appended>> {
        let mut head = self.lock_head();
        let mut next = *head;
        next.recorded_at = next.recorded_at.max(now);
        let mut blocks = BlockWriter::default();
        let mut pending: HashMap<&str, (u64, &Event)> = HashMap::new();
        let mut ids = ids::IdIndexBatch::default();
        let mut outcomes = Vec::with_capacity(candidates.len());
        for c in candidates {
            let id = c.event.id.as_str();
            let earlier = match pending.get(id) {
                Some(&(seq, event)) => Some((seq, event == c.event)),
                None => ids
                    .find(self, id, head.position.seq)?
                    .map(|stored| (stored.seq, stored.event == *c.event)),
            };
            match earlier {
                Some((seq, true)) => outcomes.push(Appended::Duplicate(seq)),
                Some((seq, false)) => outcomes.push(Appended::Conflict(seq)),
                None => {
                    let seq = next.position.seq + 1;
                    let hash = entry_hash(&next.position.hash, seq, next.recorded_at, c.event);
                    blocks.push_parts(seq, next.position.hash, hash, next.recorded_at, c.stream_seq, c.event);
                    ids.add(id, seq);
                    pending.insert(id, (seq, c.event));
                    next.position = LogPosition { seq, hash };
                    outcomes.push(Appended::Stored(seq));
                }
            }
        }
        if next.position.seq != head.position.seq {
            self.store(&mut next, blocks.finish(), ids.hashes())?;
            ids.commit(self)?;
            *head = next;
        }
        Ok(outcomes)
    }

    /// Writes `blocks` to the blocks file at `head.end` and the `(seq, id hash)` pairs of their
    /// entries to the ids file, then the blocks' places in one sled batch: the commit point.
    /// `head.end` moves past them. The caller holds the head (or, importing, has the ledger to
    /// itself).
    fn store(&self, head: &mut Head, blocks: Vec<(u64, Vec<u8>)>, id_hashes: &[(u64, u64)]) -> Result<()> {
        let mut batch = sled::Batch::default();
        let mut bytes = Vec::with_capacity(blocks.iter().map(|(_, b)| b.len()).sum());
        for (first, block) in blocks {
            let place = Place {
                offset: head.end + bytes.len() as u64,
                len: block.len() as u32,
            };
            batch.insert(&place_key(first), &place.encode());
            bytes.extend_from_slice(&block);
        }
        self.blocks.write_at(head.end, &bytes)?;
        ids::write_hashes(&self.id_hashes, id_hashes)?;
        self.log.apply_batch(batch)?;
        head.end += bytes.len() as u64;
        self.stored
            .store(head.position.seq, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Makes everything appended so far durable: the blocks file first, so that no durable
    /// place points past what is on disk.
    pub fn flush(&self) -> Result<()> {
        self.blocks.sync()?;
        self.id_hashes.sync()?;
        self.db.flush()?;
        Ok(())
    }

    /// Walks the whole chain on every core, calling `progress(checked)` now and then; stops at
    /// the first bad entry. Blocks are checked in parallel (each entry's hash against its
    /// content and its predecessor's stored hash), and the links between blocks in order.
    pub fn verify(&self, mut progress: impl FnMut(u64)) -> Verification {
        let genesis = self.lock_head().genesis;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
        let chunk_blocks = 16 * threads;
        // One thread reads chunks of blocks from sled; `threads` workers check whole chunks as
        // they come (no barrier between chunks); this thread puts the results back in order and
        // checks the links between blocks.
        type Chunk = (usize, std::result::Result<Vec<(u64, Vec<u8>)>, String>);
        type Checked = (
            usize,
            std::result::Result<(Vec<(u64, Vec<u8>)>, Vec<BlockCheck>), String>,
        );
        let (work_tx, work_rx) = std::sync::mpsc::sync_channel::<Chunk>(2 * threads);
        let work_rx = std::sync::Mutex::new(work_rx);
        let (done_tx, done_rx) = std::sync::mpsc::channel::<Checked>();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut chunk = Vec::with_capacity(chunk_blocks);
                let mut n = 0;
                for item in self.blocks(1) {
                    match item {
                        Ok(block) => chunk.push(block.into_parts()),
                        Err(e) => {
                            let _ = work_tx.send((n, Ok(std::mem::take(&mut chunk))));
                            let _ = work_tx.send((n + 1, Err(e.to_string())));
                            return;
                        }
                    }
                    if chunk.len() == chunk_blocks {
                        if work_tx.send((n, Ok(std::mem::take(&mut chunk)))).is_err() {
                            return;
                        }
                        n += 1;
                    }
                }
                let _ = work_tx.send((n, Ok(chunk)));
            });
            for _ in 0..threads {
                let (work_rx, done_tx) = (&work_rx, done_tx.clone());
                scope.spawn(move || loop {
                    let next = work_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok((n, chunk))) = next else { return };
                    let checked = chunk.map(|blocks| {
                        let results = blocks.iter().map(check_block).collect();
                        (blocks, results)
                    });
                    if done_tx.send((n, checked)).is_err() {
                        return;
                    }
                });
            }
            drop(done_tx);
            // Results arrive out of order; hand them on in chunk order.
            let mut waiting = std::collections::BTreeMap::new();
            let mut next_chunk = 0;
            let rx = std::iter::from_fn(|| loop {
                if let Some(ready) = waiting.remove(&next_chunk) {
                    next_chunk += 1;
                    return Some(ready);
                }
                let (n, checked) = done_rx.recv().ok()?;
                waiting.insert(n, checked);
            });
            let mut prev = LogPosition { seq: 0, hash: genesis };
            let mut last_progress = 0;
            for message in rx {
                let (chunk, results) = match message {
                    Ok(checked) => checked,
                    Err(reason) => {
                        return Verification {
                            checked: prev.seq,
                            head: prev,
                            first_bad: Some((prev.seq + 1, reason)),
                        }
                    }
                };
                for ((first, bytes), result) in chunk.iter().zip(results) {
                    let bad = |seq: u64, reason: String| Verification {
                        checked: prev.seq,
                        head: prev,
                        first_bad: Some((seq, reason)),
                    };
                    if *first != prev.seq + 1 {
                        return bad(
                            prev.seq + 1,
                            format!("block starts at seq {first}, expected {}", prev.seq + 1),
                        );
                    }
                    match result {
                        Err((seq, reason)) => {
                            let block_prev = Block::parse(*first, bytes).map(|b| b.prev_hash);
                            if block_prev.is_ok_and(|h| h != prev.hash) {
                                return bad(*first, "prev_hash does not match the previous entry's hash".into());
                            }
                            // The entries before the bad one in this block checked out.
                            let hash = if seq - 1 == prev.seq {
                                prev.hash
                            } else {
                                Block::parse(*first, bytes)
                                    .and_then(|b| b.hash((seq - 1 - first) as usize))
                                    .unwrap_or([0; 32])
                            };
                            let checked = LogPosition { seq: seq - 1, hash };
                            return Verification {
                                checked: checked.seq,
                                head: checked,
                                first_bad: Some((seq, reason)),
                            };
                        }
                        Ok((block_prev, last)) => {
                            if block_prev != prev.hash {
                                return bad(*first, "prev_hash does not match the previous entry's hash".into());
                            }
                            prev = last;
                        }
                    }
                }
                if prev.seq - last_progress >= 100_000 {
                    last_progress = prev.seq;
                    progress(prev.seq);
                }
            }
            Verification {
                checked: prev.seq,
                head: prev,
                first_bad: None,
            }
        })
    }
}

/// Checks one block on its own: every entry's hash against its content and the stored hash
/// before it.
/// A block's `(prev_hash of its first entry, position of its last)`, or its first bad seq and why.
type BlockCheck = std::result::Result<([u8; 32], LogPosition), (u64, String)>;

fn check_block((first, bytes): &(u64, Vec<u8>)) -> BlockCheck {
    let block = Block::parse(*first, bytes).map_err(|e| (*first, e.to_string()))?;
    let mut prev = block.prev_hash;
    for i in 0..block.len() {
        let seq = first + i as u64;
        let entry = block.entry(i).map_err(|e| (seq, e.to_string()))?;
        if entry.hash != entry_hash(&prev, seq, entry.recorded_at, &entry.event) {
            return Err((seq, "hash does not match the entry's content".to_owned()));
        }
        prev = entry.hash;
    }
    Ok((
        block.prev_hash,
        LogPosition {
            seq: block.last_seq(),
            hash: prev,
        },
    ))
}

/// A `p` key and its value as (first seq, place).
fn placed(key: &[u8], value: &[u8]) -> Result<(u64, Place)> {
    let first = seq_from(&key[1..]).unwrap_or(0);
    let place = Place::decode(value).ok_or_else(|| LedgerError::Damaged {
        seq: first,
        reason: format!("the place of its block is {} bytes, not 12", value.len()),
    })?;
    Ok((first, place))
}

pub(crate) fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests;

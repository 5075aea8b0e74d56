//! The engine's checkpoint: every lead's derived slot, the dictionary and the log position, in
//! a sled store of its own beside the ledger's (derived data: it can always be rebuilt from the
//! log). A store of its own, so that what a restart reads can be let go: sled 0.34 evicts a
//! page from its cache only once 64 accesses to that page's LRU shard (of 256) have queued up,
//! so a one-shot read of the whole checkpoint (a few thousand pages) stayed cached for good,
//! whatever the cache capacity: about 250 bytes per lead. [`open_store`] is called again after a
//! restore, on a store nobody holds any more.
//!
//! A checkpoint writes only what changed since the last one (the leads re-derived, the new
//! symbols) plus a small header with the position, all in one atomic sled batch: it costs what
//! changed, not the whole state. A restart loads the slots and builds the indexes from them,
//! then applies the log past the checkpoint's position, instead of re-reading the whole log.
//!
//! Layout (keys are big-endian so sled's order is number order):
//! - `m`: [`Header`]: format, position, lead and symbol counts, rules, spends, retractions;
//! - `d` + sym (u32): a dictionary name;
//! - `p` + page number (u32): the leads numbered `page × PAGE_LEADS ..` up to `PAGE_LEADS` of
//!   them, each a [`StoredLead`]: its id, its slot as [`crate::slots`] encodes it (with its
//!   lead index) and its `Extra`, so a restart copies each slot's bytes as they are. Pages rather than one
//!   key per lead: a restart reads 1 M leads as 15,625 values (sled's iterator costs about
//!   2 µs per key, which made one key per lead 2 s of a 1 M-lead restart), and leads numbered
//!   close together were created close together, so the leads a batch changes share pages;
//! - `h` + part number (u64): a part of the funnel history: sets of points, each sorted
//!   (history only grows, so a checkpoint adds the points since the last one as a new part; a
//!   restart merges each set's runs instead of sorting the whole history).

use funnel_core::projection::LogPosition;
use funnel_core::rules::RulesTimeline;
use funnel_core::time::Micros;
use funnel_ledger::Ledger;
use serde::{Deserialize, Serialize};

use crate::facts::Extra;
use crate::history::{History, SetPoints};
use crate::slots::SlotView;
use crate::state::{LeadNo, Spend};
use crate::EngineError;

/// The checkpoint store's cache: it is written, and read once at start.
const STORE_CACHE_BYTES: u64 = 8 << 20;
/// How long a reopen waits for sled to let go of the store's file lock.
const STORE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Bumped whenever what is stored changes shape: a checkpoint of another format is rebuilt.
pub const FORMAT: u32 = 7;

pub(crate) const HEADER_KEY: &[u8] = b"m";
/// Leads per page (see the layout above).
pub const PAGE_LEADS: usize = 64;
/// Pages per sled batch; a checkpoint of more pages is written in several (see
/// `Writer::checkpoint`).
pub const PAGES_PER_BATCH: usize = 32;
const BINCODE: bincode::config::Configuration = bincode::config::standard();

/// Opens (or creates) the checkpoint store in `dir`. Dropping a sled store releases its file
/// lock a moment later, on a thread of sled's, so a reopen right after waits for it, up to
/// [`STORE_LOCK_WAIT`].
pub fn open_store(dir: &std::path::Path) -> Result<sled::Db, EngineError> {
    let config = funnel_ledger::sled_config(dir, STORE_CACHE_BYTES);
    funnel_ledger::open_sled(&config, STORE_LOCK_WAIT).map_err(|e| damaged(&format!("open {}", dir.display()), e))
}

fn key(tag: u8, n: u32) -> [u8; 5] {
    let b = n.to_be_bytes();
    [tag, b[0], b[1], b[2], b[3]]
}

pub(crate) fn page_key(page: u32) -> [u8; 5] {
    key(b'p', page)
}

pub(crate) fn sym_key(sym: u32) -> [u8; 5] {
    key(b'd', sym)
}

pub(crate) fn history_key(part: u64) -> [u8; 9] {
    let mut k = [b'h'; 9];
    k[1..].copy_from_slice(&part.to_be_bytes());
    k
}

/// History points per sled value (about 60 KB). A checkpoint appends its new part beside the
/// last ones, and sled reads that leaf (up to 16 values) to write it and keeps it: parts of
/// 65,536 points (up to 1 MB) left a service at work at 1 M leads 3–4 MB larger after its
/// first checkpoint (`funnel serve` on a data dir checkpointed with each size, RSS after one
/// event: 307.7–317.0 MB against 303.3–313.8).
pub(crate) const POINTS_PER_PART: usize = 4_096;

/// Sets of history points as sled values of at most [`POINTS_PER_PART`] points (a larger set
/// is split; the loader puts it together again).
pub(crate) fn encode_history(sets: Vec<SetPoints>) -> Result<Vec<Vec<u8>>, EngineError> {
    let mut parts = Vec::new();
    let mut part: Vec<SetPoints> = Vec::new();
    let mut size = 0;
    let mut flush = |part: &mut Vec<SetPoints>, size: &mut usize| -> Result<(), EngineError> {
        if !part.is_empty() {
            parts.push(bincode::serde::encode_to_vec(&*part, BINCODE).map_err(|e| damaged("encode history", e))?);
        }
        part.clear();
        *size = 0;
        Ok(())
    };
    for set in sets {
        for chunk in set.points.chunks(POINTS_PER_PART) {
            if size + chunk.len() > POINTS_PER_PART {
                flush(&mut part, &mut size)?;
            }
            size += chunk.len();
            part.push(SetPoints {
                points: chunk.to_vec(),
                ..set.clone_empty()
            });
        }
    }
    flush(&mut part, &mut size)?;
    Ok(parts)
}

/// Everything but the leads and the dictionary: small, rewritten whole by every checkpoint.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Header {
    pub format: u32,
    pub position: LogPosition,
    pub leads: u32,
    pub syms: u32,
    pub rules: RulesTimeline,
    pub spends: Vec<Spend>,
    pub retracted: Vec<(LeadNo, Vec<u64>)>,
    /// History parts `0..history_parts`, and the history's `latest` and `complete`.
    pub history_parts: u64,
    pub history_latest: Micros,
    pub history_complete: bool,
    /// `Engine::late`, by lead.
    pub late: Vec<(LeadNo, Micros)>,
    pub rules_changed_at: u64,
}

/// One lead as a page holds it: its id, its slot's encoding ([`crate::slots`]) and its
/// handoffs, rejections and deals, borrowed from the page's bytes.
pub(crate) struct StoredLead<'a> {
    pub id: &'a str,
    pub slot: &'a [u8],
    /// Its handoffs, rejections and deals as [`Extra::encode`] writes them.
    pub extra: Option<&'a [u8]>,
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

/// A page of leads read in place; every length is checked against the value's size.
pub(crate) struct PageReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> PageReader<'a> {
    pub fn new(bytes: &'a [u8]) -> PageReader<'a> {
        PageReader { bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], EngineError> {
        let part = self
            .bytes
            .get(self.at..self.at.saturating_add(n))
            .ok_or_else(|| damaged("leads", "a page ends inside a lead"))?;
        self.at += n;
        Ok(part)
    }

    fn len(&mut self) -> Result<usize, EngineError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    /// The next lead, if any is left.
    pub fn next_lead(&mut self) -> Result<Option<StoredLead<'a>>, EngineError> {
        if self.at == self.bytes.len() {
            return Ok(None);
        }
        let n = self.len()?;
        let id = std::str::from_utf8(self.take(n)?).map_err(|e| damaged("lead id", e))?;
        let n = self.len()?;
        let slot = self.take(n)?;
        let n = self.len()?;
        let extra = match n {
            0 => None,
            n => {
                // Checked here, so that a page never holds an extra it cannot read back.
                let bytes = self.take(n)?;
                Extra::decode(bytes).map_err(|e| damaged("lead extra", e))?;
                Some(bytes)
            }
        };
        Ok(Some(StoredLead { id, slot, extra }))
    }
}

fn damaged(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Checkpoint(format!("{what}: {e}"))
}

/// One page: its leads as `(id, slot)`, in lead-number order. Per lead: the id, the slot's
/// encoding and the bincode of its `Extra` (empty without one), each after its length (u32).
pub(crate) fn encode_page<'a>(leads: impl Iterator<Item = (&'a str, SlotView<'a>)>) -> Result<Vec<u8>, EngineError> {
    let mut out = Vec::new();
    for (id, slot) in leads {
        put_len(&mut out, id.len());
        out.extend_from_slice(id.as_bytes());
        let encoded = slot.encoded();
        put_len(&mut out, encoded.len());
        out.extend_from_slice(encoded);
        // The page's encoding of the extra is the checkpoint's (`Extra::encode`).
        let extra = slot.extra_encoded().unwrap_or_default();
        put_len(&mut out, extra.len());
        out.extend_from_slice(extra);
    }
    Ok(out)
}

pub(crate) fn encode_header(header: &Header) -> Result<Vec<u8>, EngineError> {
    bincode::serde::encode_to_vec(header, BINCODE).map_err(|e| damaged("encode header", e))
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, EngineError> {
    bincode::serde::decode_from_slice(bytes, BINCODE)
        .map(|(v, _)| v)
        .map_err(|e| damaged(what, e))
}

/// What a usable checkpoint holds, in order.
pub(crate) struct Loaded {
    pub header: Header,
    pub names: Vec<String>,
    /// The leads, page by page in lead-number order, decoded on their own thread while the
    /// caller indexes the pages before; it checks their count against the header's.
    pub leads: std::sync::mpsc::Receiver<Result<sled::IVec, EngineError>>,
    /// The history, decoded and indexed on its own thread while the leads load.
    pub history: std::thread::JoinHandle<Result<History, EngineError>>,
}

/// Reads the checkpoint if there is one that matches this ledger: `Ok(None)` when there is
/// none or it is of another format; an error when it is damaged or names a position the
/// ledger does not hold (the caller rebuilds from the log).
pub(crate) fn load(tree: &sled::Tree, ledger: &Ledger) -> Result<Option<Loaded>, EngineError> {
    let Some(bytes) = tree.get(HEADER_KEY).map_err(|e| damaged("read header", e))? else {
        return Ok(None);
    };
    let header: Header = decode("header", &bytes)?;
    if header.format != FORMAT {
        // Cleared and rebuilt by the caller, so no key of the old layout stays behind.
        return Err(damaged("format", format!("{} is not {FORMAT}", header.format)));
    }
    let position = header.position;
    if position.seq > 0 {
        let entry = ledger.get(position.seq)?;
        if entry.map(|e| e.hash) != Some(position.hash) {
            return Err(damaged(
                "position",
                format!("seq {} is not in this ledger with the checkpoint's hash", position.seq),
            ));
        }
    }
    let mut parts = Vec::with_capacity(header.history_parts as usize);
    for part in 0..header.history_parts {
        let bytes = tree
            .get(history_key(part))
            .map_err(|e| damaged("read history", e))?
            .ok_or_else(|| damaged("history", format!("part {part} missing")))?;
        parts.push(bytes);
    }
    let history = std::thread::spawn(move || {
        crate::heap::releasing(|| {
            let mut sets = Vec::new();
            for bytes in &parts {
                sets.extend(decode::<Vec<SetPoints>>("history", bytes)?);
            }
            Ok(History::from_sets(sets))
        })
    });
    let mut names = Vec::with_capacity(header.syms as usize);
    for (i, item) in tree.scan_prefix([b'd']).enumerate() {
        let (k, v) = item.map_err(|e| damaged("read dictionary", e))?;
        if k.as_ref() != sym_key(i as u32 + 1) {
            return Err(damaged("dictionary", format!("symbol {} missing", i + 1)));
        }
        names.push(String::from_utf8(v.to_vec()).map_err(|e| damaged("dictionary", e))?);
    }
    names.truncate(header.syms as usize);
    if names.len() != header.syms as usize {
        return Err(damaged("checkpoint", "fewer symbols than its header says"));
    }
    let (send, leads) = std::sync::mpsc::sync_channel(64);
    let (tree, count) = (tree.clone(), header.leads as usize);
    std::thread::spawn(move || {
        let pages = count.div_ceil(PAGE_LEADS);
        let mut scan = tree.scan_prefix([b'p']);
        for i in 0..pages {
            let page = match scan.next() {
                Some(Ok((k, v))) if k.as_ref() == page_key(i as u32) => Ok(v),
                Some(Ok(_)) => Err(damaged("leads", format!("page {i} missing"))),
                Some(Err(e)) => Err(damaged("read leads", e)),
                None => Err(damaged("leads", format!("page {i} missing"))),
            };
            let failed = page.is_err();
            // The receiver gone means the restore stopped on an error of its own.
            if send.send(page).is_err() || failed {
                return;
            }
        }
    });
    Ok(Some(Loaded {
        header,
        names,
        leads,
        history,
    }))
}

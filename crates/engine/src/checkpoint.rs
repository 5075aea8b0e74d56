//! The engine's checkpoint: every lead's derived slot, the dictionary and the log position, in
//! a sled tree beside the ledger (derived data: it can always be rebuilt from the log).
//!
//! A checkpoint writes only what changed since the last one (the leads re-derived, the new
//! symbols) plus a small header with the position, all in one atomic sled batch: it costs what
//! changed, not the whole state. A restart loads the slots and builds the indexes from them,
//! then applies the log past the checkpoint's position, instead of re-reading the whole log.
//!
//! Layout (keys are big-endian so sled's order is number order):
//! - `m`: [`Header`]: format, position, lead and symbol counts, rules, spends, retractions;
//! - `d` + sym (u32): a dictionary name;
//! - `l` + lead number (u32): [`StoredLead`]: the lead's id and slot (with its lead index);
//! - `h` + part number (u64): a part of the funnel history, stamps in the order written
//!   (history only grows, so a checkpoint adds the stamps since the last one as a new part).

use std::sync::Arc;

use funnel_core::projection::LogPosition;
use funnel_core::rules::RulesTimeline;
use funnel_core::time::Micros;
use funnel_ledger::Ledger;
use serde::{Deserialize, Serialize};

use crate::facts::{Extra, Facts, LeadSlot, Touch};
use crate::history::{History, Stamp};
use crate::state::{LeadNo, Spend};
use crate::EngineError;

/// The sled tree that holds the checkpoint.
pub const TREE: &str = "engine-checkpoint";
/// Bumped whenever what is stored changes shape: a checkpoint of another format is rebuilt.
pub const FORMAT: u32 = 4;

pub(crate) const HEADER_KEY: &[u8] = b"m";
/// Leads per sled batch; a checkpoint of more leads is written in several (see
/// `Writer::checkpoint`).
pub const LEADS_PER_BATCH: usize = 2_048;
const BINCODE: bincode::config::Configuration = bincode::config::standard();

fn key(tag: u8, n: u32) -> [u8; 5] {
    let b = n.to_be_bytes();
    [tag, b[0], b[1], b[2], b[3]]
}

pub(crate) fn lead_key(no: LeadNo) -> [u8; 5] {
    key(b'l', no)
}

pub(crate) fn sym_key(sym: u32) -> [u8; 5] {
    key(b'd', sym)
}

pub(crate) fn history_key(part: u64) -> [u8; 9] {
    let mut k = [b'h'; 9];
    k[1..].copy_from_slice(&part.to_be_bytes());
    k
}

/// History stamps per sled value (about 1.3 MB: well below sled's blob threshold).
pub(crate) const STAMPS_PER_PART: usize = 65_536;

pub(crate) fn encode_stamps(stamps: &[Stamp]) -> Result<Vec<u8>, EngineError> {
    bincode::serde::encode_to_vec(stamps, BINCODE).map_err(|e| damaged("encode history", e))
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

/// One lead as stored.
#[derive(Debug, Serialize)]
struct StoredLeadRef<'a> {
    id: &'a str,
    facts: &'a Facts,
    last_at: Micros,
    touches: &'a [Touch],
    extra: Option<&'a Extra>,
    filed: &'a [u8],
}

/// One lead as loaded.
#[derive(Debug, Deserialize)]
pub(crate) struct StoredLead {
    pub id: String,
    facts: Facts,
    last_at: Micros,
    touches: Box<[Touch]>,
    extra: Option<Extra>,
    filed: Box<[u8]>,
}

impl StoredLead {
    pub fn into_slot(self) -> LeadSlot {
        LeadSlot {
            facts: self.facts,
            last_at: self.last_at,
            touches: self.touches,
            extra: self.extra.map(Arc::new),
            filed: self.filed,
        }
    }
}

fn damaged(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Checkpoint(format!("{what}: {e}"))
}

pub(crate) fn encode_lead(id: &str, slot: &LeadSlot) -> Result<Vec<u8>, EngineError> {
    let stored = StoredLeadRef {
        id,
        facts: &slot.facts,
        last_at: slot.last_at,
        touches: &slot.touches,
        extra: slot.extra.as_deref(),
        filed: &slot.filed,
    };
    bincode::serde::encode_to_vec(&stored, BINCODE).map_err(|e| damaged("encode lead", e))
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
    pub leads: Vec<StoredLead>,
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
        return Ok(None);
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
        let mut stamps = Vec::new();
        for bytes in &parts {
            stamps.extend(decode::<Vec<Stamp>>("history", bytes)?);
        }
        let mut history = History::new();
        history.add(&mut stamps);
        Ok(history)
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
    let mut leads = Vec::with_capacity(header.leads as usize);
    for (i, item) in tree.scan_prefix([b'l']).enumerate().take(header.leads as usize) {
        let (k, v) = item.map_err(|e| damaged("read lead", e))?;
        if k.as_ref() != lead_key(i as LeadNo) {
            return Err(damaged("leads", format!("lead {i} missing")));
        }
        leads.push(decode::<StoredLead>("lead", &v)?);
    }
    if leads.len() != header.leads as usize || names.len() != header.syms as usize {
        return Err(damaged("checkpoint", "fewer leads or symbols than its header says"));
    }
    Ok(Some(Loaded {
        header,
        names,
        leads,
        history,
    }))
}

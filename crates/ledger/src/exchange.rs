//! NDJSON export and import (`schemas/chain.md` §Export): a header line, then one line per
//! entry with ids, seqs, recorded_at and hashes preserved, so an import into an empty ledger
//! reproduces the same chain head, and anyone can verify an export from the specification alone.

use std::collections::HashSet;
use std::io::{BufRead, Write};

use funnel_core::time::{format_rfc3339, parse_rfc3339};
use funnel_core::{Entry, Event, LogPosition};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::block::BlockWriter;
use crate::canonical::{genesis, hex};
use crate::ids::IdIndexBatch;
use crate::{unhex, Ledger, LedgerError, Meta, Result, CHAIN_FORMAT};

/// Entries imported per sled batch.
const IMPORT_BATCH_ENTRIES: usize = 1_000;

/// What the first line of an export names.
pub const EXPORT_FORMAT: &str = "funnel-ledger-export";

/// The first line of an export.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportHeader {
    pub format: String,
    pub version: u32,
    /// The prev_hash of seq 1.
    pub genesis: String,
    /// Set when the chain was migrated from format 1: `{"format": 1, "seq", "hash"}`.
    pub migrated_from: Option<Value>,
}

/// One exported entry.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportLine {
    pub seq: u64,
    pub recorded_at: String,
    pub stream_seq: u64,
    pub prev_hash: String,
    pub hash: String,
    pub event: serde_json::Value,
}

impl ExportLine {
    pub fn of(entry: &Entry) -> ExportLine {
        ExportLine {
            seq: entry.seq,
            recorded_at: format_rfc3339(entry.recorded_at),
            stream_seq: entry.stream_seq,
            prev_hash: hex(&entry.prev_hash),
            hash: hex(&entry.hash),
            event: entry.event.to_json(),
        }
    }

    pub fn into_entry(self) -> std::result::Result<Entry, String> {
        Ok(Entry {
            seq: self.seq,
            recorded_at: parse_rfc3339(&self.recorded_at).map_err(|e| format!("recorded_at: {e}"))?,
            stream_seq: self.stream_seq,
            prev_hash: unhex(&self.prev_hash).ok_or("prev_hash: not 64 hex digits")?,
            hash: unhex(&self.hash).ok_or("hash: not 64 hex digits")?,
            event: Event::from_value(&self.event).map_err(|e| format!("event: {e}"))?,
        })
    }
}

/// Writes the header and entries `1..=upto` (the whole log when `None`) as NDJSON; returns the
/// last position written.
pub fn export(
    ledger: &Ledger,
    out: &mut impl Write,
    upto: Option<u64>,
    mut progress: impl FnMut(u64),
) -> Result<LogPosition> {
    let meta = ledger.meta()?.unwrap_or_else(|| Meta::new(None));
    let header = ExportHeader {
        format: EXPORT_FORMAT.into(),
        version: CHAIN_FORMAT,
        genesis: meta.genesis,
        migrated_from: meta.migrated_from,
    };
    serde_json::to_writer(&mut *out, &header).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    let mut last = LogPosition::default();
    for entry in ledger.entries(1) {
        let entry = entry?;
        if upto.is_some_and(|n| entry.seq > n) {
            break;
        }
        serde_json::to_writer(&mut *out, &ExportLine::of(&entry)).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        last = LogPosition {
            seq: entry.seq,
            hash: entry.hash,
        };
        if entry.seq.is_multiple_of(100_000) {
            progress(entry.seq);
        }
    }
    out.flush()?;
    Ok(last)
}

/// Reads an export into an empty ledger, checking the header, every link of the chain, that
/// no event id appears twice and that `recorded_at` never goes back; durable on return.
/// A retraction without a lead is filed under its target's lead, looked up in the entries
/// imported so far, this batch's included.
pub fn import(ledger: &Ledger, input: impl BufRead, mut progress: impl FnMut(u64)) -> Result<LogPosition> {
    let head = ledger.head();
    if head.seq != 0 {
        return Err(LedgerError::NotEmpty(head.seq));
    }
    let mut lines = input
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.as_ref().is_ok_and(|l| l.trim().is_empty()));
    let Some((n, first)) = lines.next() else {
        return Ok(head);
    };
    let header_line = n as u64 + 1;
    let first = first?;
    let refuse_header = |reason: String| LedgerError::Import {
        line: header_line,
        reason,
    };
    let header: ExportHeader = serde_json::from_str(&first).map_err(|e| {
        refuse_header(if first.contains("\"seq\"") {
            "this export has no header line: it was written by format 1 of the ledger, whose hashes \
             cannot be checked any more; import it into a format-1 data dir and run `funnel migrate`"
                .into()
        } else {
            format!("not an export header: {e}")
        })
    })?;
    if header.format != EXPORT_FORMAT || header.version != CHAIN_FORMAT {
        return Err(refuse_header(format!(
            "export format `{}` version {} is not `{EXPORT_FORMAT}` version {CHAIN_FORMAT}",
            header.format, header.version
        )));
    }
    let expected = genesis(header.migrated_from.as_ref());
    if unhex(&header.genesis) != Some(expected) {
        return Err(refuse_header("genesis does not match migrated_from".into()));
    }
    let mut loader = Loader::start(ledger, header.migrated_from)?;
    for (n, line) in lines {
        let line_no = n as u64 + 1;
        let line = line?;
        let refuse = |reason: String| LedgerError::Import { line: line_no, reason };
        // Strict, as live ingest is: a repeated key anywhere in the line refuses it.
        let parsed: ExportLine = funnel_core::event::strict_json(line.as_bytes())
            .and_then(serde_json::from_value)
            .map_err(|e| refuse(e.to_string()))?;
        let entry = parsed.into_entry().map_err(refuse)?;
        loader.add(&entry)?.map_err(refuse)?;
        if loader.staged() == IMPORT_BATCH_ENTRIES {
            loader.apply()?;
            progress(entry.seq);
        }
    }
    loader.finish()
}

/// Copies entries `1..=last` of `damaged` (opened unchecked) into the empty ledger `into`,
/// checking every link as import does: the verified prefix of a damaged store, same seqs,
/// same hashes, same head. Stops with [`LedgerError::Damaged`] if an entry of that prefix
/// does not check out after all.
pub fn salvage(damaged: &Ledger, into: &Ledger, last: u64) -> Result<LogPosition> {
    let head = into.head();
    if head.seq != 0 {
        return Err(LedgerError::NotEmpty(head.seq));
    }
    let migrated_from = damaged.meta()?.and_then(|m| m.migrated_from);
    let mut loader = Loader::start(into, migrated_from)?;
    for entry in damaged.entries(1) {
        let entry = entry?;
        if entry.seq > last {
            break;
        }
        loader
            .add(&entry)?
            .map_err(|reason| LedgerError::Damaged { seq: entry.seq, reason })?;
        if loader.staged() == IMPORT_BATCH_ENTRIES {
            loader.apply()?;
        }
    }
    loader.finish()
}

/// Loads whole entries into an empty ledger in batches: what import and migration share.
pub(crate) struct Loader<'a> {
    ledger: &'a Ledger,
    head: crate::Head,
    blocks: BlockWriter,
    /// This batch's ids: not in the tree yet, so checked here.
    pending: HashSet<String>,
    ids: IdIndexBatch,
    /// The last seq stored.
    stored: u64,
}

impl<'a> Loader<'a> {
    /// Writes the chain's metadata; the ledger must be empty.
    pub(crate) fn start(ledger: &'a Ledger, migrated_from: Option<Value>) -> Result<Loader<'a>> {
        let mut head = *ledger.lock_head();
        if head.position.seq != 0 {
            return Err(LedgerError::NotEmpty(head.position.seq));
        }
        let meta = Meta::new(migrated_from);
        ledger.write_meta(&meta)?;
        head.genesis = genesis(meta.migrated_from.as_ref());
        head.position.hash = head.genesis;
        Ok(Loader {
            ledger,
            head,
            blocks: BlockWriter::default(),
            pending: HashSet::new(),
            ids: IdIndexBatch::default(),
            stored: 0,
        })
    }

    /// The chain position so far.
    pub(crate) fn head(&self) -> LogPosition {
        self.head.position
    }

    pub(crate) fn staged(&self) -> usize {
        self.pending.len()
    }

    /// Stages one entry, or says why it cannot follow the ones before it: the checks of live
    /// ingest (an id seen before, a retraction's target) against every entry before it, this
    /// batch's included, and the chain's own.
    pub(crate) fn add(&mut self, entry: &Entry) -> Result<std::result::Result<(), String>> {
        let id = &entry.event.id;
        if self.pending.contains(id) || self.ids.find(self.ledger, id, self.stored)?.is_some() {
            return Ok(Err(format!("event id `{id}` appears twice")));
        }
        if let funnel_core::event::Data::Retract { target_id, .. } = &entry.event.data {
            if self.pending.contains(target_id) {
                // Staged, not stored yet: store the batch, so the target is looked up where
                // every other one is (rare: a retraction within a thousand entries of its target).
                self.apply()?;
            }
            let target = self.ids.find(self.ledger, target_id, self.stored)?.map(|e| e.event);
            if let Err(rejection) = entry.event.check_retraction(target.as_ref()) {
                return Ok(Err(format!("{}: {}", rejection.reason.as_str(), rejection.message)));
            }
        }
        if let Err(reason) = crate::check_link(&self.head.position, entry) {
            return Ok(Err(reason));
        }
        if entry.recorded_at < self.head.recorded_at {
            return Ok(Err("recorded_at goes backwards".to_owned()));
        }
        self.ids.add(id, entry.seq);
        self.blocks.push(entry);
        self.pending.insert(id.clone());
        self.head.position = LogPosition {
            seq: entry.seq,
            hash: entry.hash,
        };
        self.head.recorded_at = entry.recorded_at;
        Ok(Ok(()))
    }

    /// Writes what is staged (not flushed).
    pub(crate) fn apply(&mut self) -> Result<()> {
        let blocks = std::mem::take(&mut self.blocks).finish();
        self.ledger.store(&mut self.head, blocks, self.ids.hashes())?;
        self.ids.commit(self.ledger)?;
        self.stored = self.head.position.seq;
        self.pending.clear();
        *self.ledger.lock_head() = self.head;
        Ok(())
    }

    /// Writes the rest and flushes; the head.
    pub(crate) fn finish(mut self) -> Result<LogPosition> {
        self.apply()?;
        self.ledger.flush()?;
        Ok(self.head.position)
    }
}

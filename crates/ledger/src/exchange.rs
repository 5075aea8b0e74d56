//! NDJSON export and import: one line per entry, ids, seqs, recorded_at and hashes preserved,
//! so an import into an empty ledger reproduces the same chain head.

use std::io::{BufRead, Write};

use funnel_core::projection::hex;
use funnel_core::time::{format_rfc3339, parse_rfc3339};
use funnel_core::{Entry, Event, LogPosition};
use serde::{Deserialize, Serialize};

use crate::{Ledger, LedgerError, Result};

/// Entries imported per sled batch.
const IMPORT_BATCH_ENTRIES: usize = 1_000;

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

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Writes entries `1..=upto` (the whole log when `None`) as NDJSON; returns the last position written.
pub fn export(
    ledger: &Ledger,
    out: &mut impl Write,
    upto: Option<u64>,
    mut progress: impl FnMut(u64),
) -> Result<LogPosition> {
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

/// Reads an export into an empty ledger, checking every link of the chain; durable on return.
pub fn import(ledger: &Ledger, input: impl BufRead, mut progress: impl FnMut(u64)) -> Result<LogPosition> {
    let mut head = *ledger.lock_head();
    if head.position.seq != 0 {
        return Err(LedgerError::NotEmpty(head.position.seq));
    }
    let mut batch = sled::Batch::default();
    let mut staged = 0;
    for (n, line) in input.lines().enumerate() {
        let line_no = n as u64 + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let refuse = |reason: String| LedgerError::Import { line: line_no, reason };
        let parsed: ExportLine = serde_json::from_str(&line).map_err(|e| refuse(e.to_string()))?;
        let entry = parsed.into_entry().map_err(refuse)?;
        if ledger.seq_of(&entry.event.id)?.is_some() {
            return Err(refuse(format!("event id `{}` appears twice", entry.event.id)));
        }
        ledger.append_entry(&mut batch, &entry, &mut head).map_err(refuse)?;
        staged += 1;
        if staged == IMPORT_BATCH_ENTRIES {
            ledger.log.apply_batch(std::mem::take(&mut batch))?;
            staged = 0;
            progress(head.position.seq);
        }
    }
    ledger.log.apply_batch(batch)?;
    ledger.flush()?;
    *ledger.lock_head() = head;
    Ok(head.position)
}

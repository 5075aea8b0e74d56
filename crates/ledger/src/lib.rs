//! The ledger: the append-only, hash-chained log of every accepted event, in sled.
//!
//! Ground truth of the whole system; everything else is derived from it. One tree (`log`)
//! holds three key spaces so that a batch of entries and their indexes land atomically:
//!
//! | key | value |
//! |---|---|
//! | `e` ‖ seq (u64 BE) | bincode [`Entry`] |
//! | `i` ‖ event id | seq (u64 BE) — permanent dedup index |
//! | `l` ‖ lead id ‖ `0x00` ‖ seq | empty — a lead's entries, retractions included |
//!
//! `hash = SHA-256(prev_hash ‖ seq BE ‖ recorded_at BE ‖ bincode(event))`, starting from 32 zero
//! bytes. Writes become durable only at [`Ledger::flush`]; callers ack after it, never before.

mod exchange;

use std::sync::{Arc, Mutex, MutexGuard};

use funnel_core::time::Micros;
use funnel_core::{Entry, Event, LogPosition};
use sha2::{Digest, Sha256};

pub use exchange::{export, import, ExportLine};

/// Name of the sled tree holding the log and its indexes.
pub const LOG_TREE: &str = "log";
/// How many tail entries are re-hashed when the ledger opens.
pub const OPEN_CHECK_ENTRIES: u64 = 64;
/// sled's page cache. Its default (1 GiB) filled up on every full scan of the log and stayed
/// resident; the projection engine keeps what it needs itself, so the ledger's cache only
/// serves lead lookups and recent entries.
pub const CACHE_BYTES: u64 = 64 << 20;

/// Everything that can go wrong in the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The store itself failed (I/O, corruption sled detected). Stop; do not ack anything.
    #[error("store error: {0}")]
    Store(#[from] sled::Error),
    /// An entry's bytes or chain do not check out. Report loudly; never serve from this store.
    #[error("ledger damaged at seq {seq}: {reason}")]
    Damaged { seq: u64, reason: String },
    /// An import line was refused; nothing after it was imported.
    #[error("import line {line}: {reason}")]
    Import { line: u64, reason: String },
    /// Import needs an empty ledger.
    #[error("import needs an empty ledger; this one has {0} entries")]
    NotEmpty(u64),
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
    /// The lead whose timeline lists this entry: the event's own lead, or a retraction's target's.
    pub lead_id: Option<&'a str>,
}

impl<'a> Candidate<'a> {
    /// An event appended without JetStream (`stream_seq` 0), filed under its own lead.
    pub fn direct(event: &'a Event) -> Candidate<'a> {
        Candidate {
            event,
            stream_seq: 0,
            lead_id: event.lead_id.as_deref(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Head {
    position: LogPosition,
    recorded_at: Micros,
}

/// A handle on the ledger; cheap to clone, safe to share. Appends are serialised internally,
/// so seqs are assigned by one writer and visibility order equals seq order.
#[derive(Clone)]
pub struct Ledger {
    db: sled::Db,
    log: sled::Tree,
    head: Arc<Mutex<Head>>,
}

pub(crate) const BINCODE: bincode::config::Configuration = bincode::config::standard();

fn entry_key(seq: u64) -> [u8; 9] {
    let mut key = [b'e'; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn id_key(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(b'i');
    key.extend_from_slice(id.as_bytes());
    key
}

fn lead_prefix(lead_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(10 + lead_id.len());
    key.push(b'l');
    key.extend_from_slice(lead_id.as_bytes());
    key.push(0);
    key
}

fn seq_from(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// The canonical bytes of an event: what its hash covers and what equality of content means.
pub fn canonical_bytes(event: &Event) -> Vec<u8> {
    // Encoding a plain data struct into a Vec cannot fail.
    bincode::serde::encode_to_vec(event, BINCODE).unwrap_or_default()
}

/// The chain hash of an entry.
pub fn entry_hash(prev_hash: &[u8; 32], seq: u64, recorded_at: Micros, event: &Event) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev_hash);
    h.update(seq.to_be_bytes());
    h.update(recorded_at.to_be_bytes());
    h.update(canonical_bytes(event));
    h.finalize().into()
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
    pub fn open(dir: &std::path::Path) -> Result<Ledger> {
        let ledger = Ledger::open_unchecked(dir)?;
        let last_seq = ledger.head().seq;
        if last_seq > 0 {
            let from = last_seq.saturating_sub(OPEN_CHECK_ENTRIES).max(1);
            let mut prev = if from == 1 {
                LogPosition::default()
            } else {
                ledger.position_of(from - 1)?
            };
            for seq in from..=last_seq {
                let entry = ledger.get(seq)?.ok_or_else(|| LedgerError::Damaged {
                    seq,
                    reason: "missing".into(),
                })?;
                check_link(&prev, &entry).map_err(|reason| LedgerError::Damaged { seq, reason })?;
                prev = LogPosition { seq, hash: entry.hash };
            }
        }
        Ok(ledger)
    }

    /// Opens without checking anything beyond what sled checks: for auditing a ledger that
    /// may be damaged ([`Ledger::verify`] then walks the whole chain). Never serve from it unchecked.
    pub fn open_unchecked(dir: &std::path::Path) -> Result<Ledger> {
        let db = sled::Config::new().path(dir).cache_capacity(CACHE_BYTES).open()?;
        let log = db.open_tree(LOG_TREE)?;
        let ledger = Ledger {
            db,
            log,
            head: Arc::default(),
        };
        if let Some((key, bytes)) = ledger.log.scan_prefix(b"e").next_back().transpose()? {
            let seq = seq_from(&key[1..]).ok_or_else(|| LedgerError::Damaged {
                seq: 0,
                reason: "bad entry key".into(),
            })?;
            let head = match decode(seq, &bytes) {
                Ok(entry) => Head {
                    position: LogPosition { seq, hash: entry.hash },
                    recorded_at: entry.recorded_at,
                },
                Err(_) => Head {
                    position: LogPosition { seq, hash: [0; 32] },
                    recorded_at: 0,
                },
            };
            *ledger.lock_head() = head;
        }
        Ok(ledger)
    }

    fn lock_head(&self) -> MutexGuard<'_, Head> {
        // A panic while holding the lock cannot leave Head half-written (it is Copy), so poison is harmless.
        self.head.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn position_of(&self, seq: u64) -> Result<LogPosition> {
        let entry = self.get(seq)?.ok_or_else(|| LedgerError::Damaged {
            seq,
            reason: "missing".into(),
        })?;
        Ok(LogPosition { seq, hash: entry.hash })
    }

    /// The last entry's seq and hash.
    pub fn head(&self) -> LogPosition {
        self.lock_head().position
    }

    /// The entry at `seq`, if the log is that long.
    pub fn get(&self, seq: u64) -> Result<Option<Entry>> {
        match self.log.get(entry_key(seq))? {
            None => Ok(None),
            Some(bytes) => decode(seq, &bytes).map(Some),
        }
    }

    /// The seq of the event with this id.
    pub fn seq_of(&self, id: &str) -> Result<Option<u64>> {
        Ok(self.log.get(id_key(id))?.and_then(|v| seq_from(&v)))
    }

    /// The entry of the event with this id.
    pub fn find(&self, id: &str) -> Result<Option<Entry>> {
        match self.seq_of(id)? {
            Some(seq) => self.get(seq),
            None => Ok(None),
        }
    }

    /// Entries from `from` (inclusive) to the head, in seq order.
    pub fn entries(&self, from: u64) -> impl Iterator<Item = Result<Entry>> + '_ {
        self.log.range(entry_key(from.max(1))..entry_key(u64::MAX)).map(|item| {
            let (key, bytes) = item?;
            let seq = seq_from(&key[1..]).unwrap_or(0);
            decode(seq, &bytes)
        })
    }

    /// Every entry filed under a lead, in seq order.
    pub fn lead_entries(&self, lead_id: &str) -> Result<Vec<Entry>> {
        let prefix = lead_prefix(lead_id);
        let mut out = Vec::new();
        for item in self.log.scan_prefix(&prefix) {
            let (key, _) = item?;
            let seq = seq_from(&key[prefix.len()..]).unwrap_or(0);
            out.push(self.get(seq)?.ok_or_else(|| LedgerError::Damaged {
                seq,
                reason: "indexed but missing".into(),
            })?);
        }
        Ok(out)
    }

    /// Appends a batch: every new event gets the next seq; exact duplicates (stored earlier or
    /// earlier in this batch) and id conflicts are reported, not written. Not durable until [`Ledger::flush`].
    pub fn append_batch(&self, candidates: &[Candidate<'_>], now: Micros) -> Result<Vec<Appended>> {
        let mut head = self.lock_head();
        let mut next = *head;
        next.recorded_at = next.recorded_at.max(now);
        let mut batch = sled::Batch::default();
        let mut pending: std::collections::HashMap<&str, (u64, &Event)> = std::collections::HashMap::new();
        let mut outcomes = Vec::with_capacity(candidates.len());
        for c in candidates {
            let id = c.event.id.as_str();
            let earlier = match pending.get(id) {
                Some(&(seq, event)) => Some((seq, event == c.event)),
                None => match self.find(id)? {
                    Some(stored) => Some((stored.seq, stored.event == *c.event)),
                    None => None,
                },
            };
            match earlier {
                Some((seq, true)) => outcomes.push(Appended::Duplicate(seq)),
                Some((seq, false)) => outcomes.push(Appended::Conflict(seq)),
                None => {
                    let seq = next.position.seq + 1;
                    let hash = entry_hash(&next.position.hash, seq, next.recorded_at, c.event);
                    let entry = Entry {
                        seq,
                        recorded_at: next.recorded_at,
                        stream_seq: c.stream_seq,
                        prev_hash: next.position.hash,
                        hash,
                        event: c.event.clone(),
                    };
                    stage(&mut batch, &entry, c.lead_id);
                    pending.insert(id, (seq, c.event));
                    next.position = LogPosition { seq, hash };
                    outcomes.push(Appended::Stored(seq));
                }
            }
        }
        if next.position.seq != head.position.seq {
            self.log.apply_batch(batch)?;
            *head = next;
        }
        Ok(outcomes)
    }

    /// Makes everything appended so far durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Walks the whole chain, calling `progress(checked)` now and then; stops at the first bad entry.
    pub fn verify(&self, mut progress: impl FnMut(u64)) -> Verification {
        let mut prev = LogPosition::default();
        for item in self.log.scan_prefix(b"e") {
            let seq = prev.seq + 1;
            let bad = |reason: String| Verification {
                checked: prev.seq,
                head: prev,
                first_bad: Some((seq, reason)),
            };
            let (key, bytes) = match item {
                Ok(kv) => kv,
                Err(e) => return bad(format!("store error: {e}")),
            };
            if seq_from(&key[1..]) != Some(seq) {
                return bad(format!("entry key is {:?}, expected seq {seq}", seq_from(&key[1..])));
            }
            let entry = match decode(seq, &bytes) {
                Ok(entry) => entry,
                Err(e) => return bad(e.to_string()),
            };
            if let Err(reason) = check_link(&prev, &entry) {
                return bad(reason);
            }
            prev = LogPosition { seq, hash: entry.hash };
            if seq.is_multiple_of(100_000) {
                progress(seq);
            }
        }
        Verification {
            checked: prev.seq,
            head: prev,
            first_bad: None,
        }
    }

    /// Stores a fully formed entry that must link onto the head (import).
    fn append_entry(&self, batch: &mut sled::Batch, entry: &Entry, head: &mut Head) -> std::result::Result<(), String> {
        check_link(&head.position, entry)?;
        if entry.recorded_at < head.recorded_at {
            return Err("recorded_at goes backwards".to_owned());
        }
        let lead = entry
            .event
            .lead_id
            .clone()
            .or_else(|| self.retraction_lead(&entry.event));
        stage(batch, entry, lead.as_deref());
        *head = Head {
            position: LogPosition {
                seq: entry.seq,
                hash: entry.hash,
            },
            recorded_at: entry.recorded_at,
        };
        Ok(())
    }

    /// The lead a retraction without a lead_id is filed under: its target's lead, if stored.
    pub fn retraction_lead(&self, event: &Event) -> Option<String> {
        match &event.data {
            funnel_core::event::Data::Retract { target_id, .. } => {
                self.find(target_id).ok().flatten().and_then(|t| t.event.lead_id)
            }
            _ => None,
        }
    }
}

fn stage(batch: &mut sled::Batch, entry: &Entry, lead_id: Option<&str>) {
    batch.insert(
        &entry_key(entry.seq),
        bincode::serde::encode_to_vec(entry, BINCODE).unwrap_or_default(),
    );
    batch.insert(id_key(&entry.event.id), &entry.seq.to_be_bytes());
    if let Some(lead) = lead_id {
        let mut key = lead_prefix(lead);
        key.extend_from_slice(&entry.seq.to_be_bytes());
        batch.insert(key, &[]);
    }
}

fn decode(seq: u64, bytes: &[u8]) -> Result<Entry> {
    bincode::serde::decode_from_slice(bytes, BINCODE)
        .map(|(entry, _)| entry)
        .map_err(|e| LedgerError::Damaged {
            seq,
            reason: format!("entry does not decode: {e}"),
        })
}

#[cfg(test)]
mod tests;

impl Ledger {
    /// Another tree in the same store, for state derived from the log (the projection checkpoint).
    pub fn derived_tree(&self, name: &str) -> Result<sled::Tree> {
        Ok(self.db.open_tree(name)?)
    }
}

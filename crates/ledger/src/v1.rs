//! Format 1 of the ledger, read only to migrate it: sled with its default segment size, tree
//! `log`, `e` ‖ seq → bincode `Entry`, and `hash = SHA-256(prev ‖ seq BE ‖ recorded_at BE ‖
//! bincode(event))`. Nothing writes this format any more.

use std::path::Path;

use funnel_core::{Entry, LogPosition};
use sha2::{Digest, Sha256};

use crate::{LedgerError, Result, BINCODE};

const TREE: &str = "log";

/// True when `dir` holds a sled store whose persisted segment size is not ours: a format-1 ledger.
pub fn is_v1(dir: &Path) -> bool {
    crate::persisted_segment_size(dir).is_some_and(|size| size != crate::SEGMENT_BYTES)
}

fn hash(entry: &Entry) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(entry.prev_hash);
    h.update(entry.seq.to_be_bytes());
    h.update(entry.recorded_at.to_be_bytes());
    h.update(bincode::serde::encode_to_vec(&entry.event, BINCODE).unwrap_or_default());
    h.finalize().into()
}

/// A format-1 store opened for reading.
pub struct V1 {
    _db: sled::Db,
    log: sled::Tree,
}

impl V1 {
    pub fn open(dir: &Path) -> Result<V1> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(crate::CACHE_BYTES)
            .open()?;
        let log = db.open_tree(TREE)?;
        Ok(V1 { _db: db, log })
    }

    /// The last entry's position as stored (not yet verified: [`V1::entries`] does that).
    pub fn head(&self) -> Result<LogPosition> {
        match self.log.scan_prefix(b"e").next_back().transpose()? {
            None => Ok(LogPosition::default()),
            Some((_, bytes)) => {
                let (entry, _): (Entry, usize) =
                    bincode::serde::decode_from_slice(&bytes, BINCODE).map_err(|e| LedgerError::Damaged {
                        seq: 0,
                        reason: format!("format-1 head does not decode: {e}"),
                    })?;
                Ok(LogPosition {
                    seq: entry.seq,
                    hash: entry.hash,
                })
            }
        }
    }

    /// Every entry in seq order, each checked against its predecessor under the format-1 rules.
    pub fn entries(&self) -> impl Iterator<Item = Result<Entry>> + '_ {
        let mut prev = LogPosition::default();
        self.log.scan_prefix(b"e").map(move |item| {
            let (_, bytes) = item?;
            let seq = prev.seq + 1;
            let (entry, _): (Entry, usize) =
                bincode::serde::decode_from_slice(&bytes, BINCODE).map_err(|e| LedgerError::Damaged {
                    seq,
                    reason: format!("format-1 entry does not decode: {e}"),
                })?;
            if entry.seq != seq || entry.prev_hash != prev.hash || entry.hash != hash(&entry) {
                return Err(LedgerError::Damaged {
                    seq,
                    reason: "format-1 chain does not verify here".into(),
                });
            }
            prev = LogPosition { seq, hash: entry.hash };
            Ok(entry)
        })
    }
}

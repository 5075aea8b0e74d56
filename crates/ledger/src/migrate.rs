//! Upgrading a format-1 ledger to format 2.
//!
//! The old store's head is read; then, in one pass, its format-1 chain is verified up to that
//! head and every entry is re-chained under format 2 into a new store beside it, whose genesis
//! commits to the old head (`migrated_from`). The directories are swapped by rename: `ledger`
//! becomes `ledger.v1` (kept, never deleted by us) and the new store becomes `ledger`. A crash before
//! the swap leaves the old store untouched and a partial new one that the next run discards.

use std::path::{Path, PathBuf};

use funnel_core::{Entry, LogPosition};
use serde_json::json;

use crate::canonical::{entry_hash, hex};
use crate::exchange::Loader;
use crate::v1::{is_v1, V1};
use crate::{Ledger, LedgerError, Result};

/// Entries per sled batch while migrating.
const MIGRATE_BATCH_ENTRIES: usize = 4_096;

/// What a migration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub entries: u64,
    /// The format-1 head, recorded in the new chain's genesis.
    pub v1_head: LogPosition,
    /// The format-2 head.
    pub head: LogPosition,
    /// Where the format-1 store was kept.
    pub kept: PathBuf,
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    dir.with_file_name(name)
}

/// Migrates the format-1 ledger in `dir` (see the module docs), calling `progress(seq)` now and then.
pub fn migrate(dir: &Path, mut progress: impl FnMut(u64)) -> Result<Migration> {
    if !is_v1(dir) {
        return Err(LedgerError::Import {
            line: 0,
            reason: format!("{} is not a format-1 ledger; nothing to migrate", dir.display()),
        });
    }
    let kept = sibling(dir, ".v1");
    if kept.exists() {
        return Err(LedgerError::Import {
            line: 0,
            reason: format!("{} exists already; move it away first", kept.display()),
        });
    }
    // Opening the old store takes sled's lock on it first, so a second migration started at the
    // same time fails here instead of deleting the first one's partial store below.
    let old = V1::open(dir)?;
    let partial = sibling(dir, ".v2-partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial)?;
    }
    // The genesis must name the old head before the first entry is re-chained, so the head is
    // read first and the one pass below verifies the old chain up to it.
    let v1_head = old.head()?;
    let from = json!({"format": 1, "seq": v1_head.seq, "hash": hex(&v1_head.hash)});
    let head = {
        let ledger = Ledger::open_store(&partial)?;
        let mut loader = Loader::start(&ledger, Some(from))?;
        let mut verified = LogPosition::default();
        for entry in old.entries() {
            let entry = entry?;
            verified = LogPosition {
                seq: entry.seq,
                hash: entry.hash,
            };
            let prev = loader.head();
            let rechained = Entry {
                prev_hash: prev.hash,
                hash: entry_hash(&prev.hash, entry.seq, entry.recorded_at, &entry.event),
                ..entry
            };
            loader.add(&rechained)?.map_err(|reason| LedgerError::Damaged {
                seq: rechained.seq,
                reason,
            })?;
            if loader.staged() == MIGRATE_BATCH_ENTRIES {
                loader.apply()?;
                if rechained.seq % (25 * MIGRATE_BATCH_ENTRIES as u64) < MIGRATE_BATCH_ENTRIES as u64 {
                    progress(rechained.seq);
                }
            }
        }
        if verified != v1_head {
            return Err(LedgerError::Damaged {
                seq: verified.seq + 1,
                reason: format!(
                    "the format-1 chain verifies up to seq {} but its last entry is seq {}",
                    verified.seq, v1_head.seq
                ),
            });
        }
        loader.finish()?
    };
    drop(old);
    std::fs::rename(dir, &kept)?;
    std::fs::rename(&partial, dir)?;
    Ok(Migration {
        entries: head.seq,
        v1_head,
        head,
        kept,
    })
}

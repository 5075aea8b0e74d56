//! The live projection: caught up from the ledger after every ingest batch, checkpointed
//! atomically (one sled value holding the format version, the state and its log position).

use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Instant;

use funnel_core::projection::PROJECTION_FORMAT_VERSION;
use funnel_core::Projection;
use funnel_ledger::Ledger;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, info_span};

use crate::{ProjectorError, Settings};

const CHECKPOINT_TREE: &str = "projection";
const CHECKPOINT_KEY: &[u8] = b"checkpoint";
const BINCODE: bincode::config::Configuration = bincode::config::standard();

#[derive(Deserialize)]
struct Checkpoint {
    version: u32,
    projection: Projection,
}

/// What is written: the same shape as [`Checkpoint`], borrowing the projection instead of copying it.
#[derive(Serialize)]
struct CheckpointRef<'a> {
    version: u32,
    projection: &'a Projection,
}

/// Folds ledger entries `1..=at_seq` (the whole log when `None`) into a fresh projection:
/// the offline replay, and the rebuild of the live one.
pub fn replay(
    ledger: &Ledger,
    at_seq: Option<u64>,
    mut progress: impl FnMut(u64),
) -> Result<Projection, ProjectorError> {
    let mut projection = Projection::default();
    advance(ledger, &mut projection, at_seq.unwrap_or(u64::MAX), &mut progress)?;
    Ok(projection)
}

/// Entries replayed per `apply_all` call.
const REPLAY_CHUNK_ENTRIES: usize = 10_000;

fn advance(
    ledger: &Ledger,
    projection: &mut Projection,
    upto: u64,
    progress: &mut impl FnMut(u64),
) -> Result<(), ProjectorError> {
    let mut chunk = Vec::with_capacity(REPLAY_CHUNK_ENTRIES);
    for entry in ledger.entries(projection.head().seq + 1) {
        let entry = entry?;
        if entry.seq > upto {
            break;
        }
        chunk.push(entry);
        if chunk.len() == REPLAY_CHUNK_ENTRIES {
            projection.apply_owned(std::mem::take(&mut chunk))?;
            progress(projection.head().seq);
        }
    }
    projection.apply_owned(chunk)?;
    Ok(())
}

/// How the live projection started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Resumed from a checkpoint at this seq.
    Checkpoint(u64),
    /// Rebuilt from the log, for this reason.
    Rebuilt(String),
}

/// The projection the query service reads, kept up with the ledger.
pub struct Live {
    projection: RwLock<Projection>,
    ledger: Ledger,
    checkpoints: sled::Tree,
    origin: Origin,
}

impl Live {
    /// Loads the checkpoint if it is current and agrees with the ledger; otherwise rebuilds
    /// from the log. Then catches up to the ledger head.
    pub fn open(ledger: Ledger) -> Result<Live, ProjectorError> {
        let checkpoints = ledger.derived_tree(CHECKPOINT_TREE)?;
        let (projection, origin) = match load(&ledger, &checkpoints)? {
            Ok(projection) => {
                info!(seq = projection.head().seq, "projection resumed from checkpoint");
                let seq = projection.head().seq;
                (projection, Origin::Checkpoint(seq))
            }
            Err(why) => {
                info!(%why, "rebuilding projection from the log");
                (Projection::default(), Origin::Rebuilt(why))
            }
        };
        let live = Live {
            projection: RwLock::new(projection),
            ledger,
            checkpoints,
            origin,
        };
        live.catch_up(10_000)?;
        Ok(live)
    }

    /// A read guard on the current projection.
    pub fn read(&self) -> RwLockReadGuard<'_, Projection> {
        // Poison means a panic mid-apply; the projection may be half-applied, but readers
        // still get consistent-enough data and the process is about to be restarted by its supervisor.
        self.projection.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Applies every ledger entry past the projection's head, `chunk` entries per write-lock hold.
    pub fn catch_up(&self, chunk: usize) -> Result<u64, ProjectorError> {
        let _span = info_span!("project").entered();
        let mut applied = 0;
        loop {
            let from = self.read().head().seq + 1;
            let entries: Vec<_> = self.ledger.entries(from).take(chunk).collect::<Result<_, _>>()?;
            if entries.is_empty() {
                return Ok(applied);
            }
            let mut projection = self.projection.write().unwrap_or_else(|p| p.into_inner());
            applied += entries.len() as u64;
            projection.apply_owned(entries)?;
        }
    }

    /// Writes the checkpoint: one atomic value with version, state and log position.
    pub fn checkpoint(&self) -> Result<u64, ProjectorError> {
        let (bytes, seq) = {
            let projection = self.read();
            let checkpoint = CheckpointRef {
                version: PROJECTION_FORMAT_VERSION,
                projection: &projection,
            };
            (
                bincode::serde::encode_to_vec(&checkpoint, BINCODE).unwrap_or_default(),
                projection.head().seq,
            )
        };
        self.checkpoints.insert(CHECKPOINT_KEY, bytes)?;
        self.checkpoints.flush()?;
        Ok(seq)
    }
}

fn load(ledger: &Ledger, tree: &sled::Tree) -> Result<Result<Projection, String>, ProjectorError> {
    let Some(bytes) = tree.get(CHECKPOINT_KEY)? else {
        return Ok(Err("no checkpoint".into()));
    };
    let checkpoint: Checkpoint = match bincode::serde::decode_from_slice(&bytes, BINCODE) {
        Ok((c, _)) => c,
        Err(e) => return Ok(Err(format!("checkpoint does not decode ({e}); format changed?"))),
    };
    if checkpoint.version != PROJECTION_FORMAT_VERSION {
        return Ok(Err(format!(
            "checkpoint format {} ≠ {PROJECTION_FORMAT_VERSION}",
            checkpoint.version
        )));
    }
    let at = checkpoint.projection.head();
    if at.seq > 0 {
        match ledger.get(at.seq)? {
            Some(entry) if entry.hash == at.hash => {}
            _ => return Ok(Err(format!("checkpoint at seq {} does not match the ledger", at.seq))),
        }
    }
    Ok(Ok(checkpoint.projection))
}

/// Keeps `live` caught up whenever ingest reports a new head; checkpoints every
/// `settings.checkpoint_interval` and on shutdown.
pub async fn run(
    live: Arc<Live>,
    settings: Settings,
    mut head: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ProjectorError> {
    let mut last_checkpoint = Instant::now();
    let mut checkpointed = live.read().head().seq;
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                tokio::task::block_in_place(|| live.checkpoint())?;
                return Ok(());
            }
            changed = head.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
        }
        tokio::task::block_in_place(|| live.catch_up(settings.apply_chunk_entries))?;
        let seq = live.read().head().seq;
        if seq != checkpointed && last_checkpoint.elapsed() >= settings.checkpoint_interval {
            checkpointed = tokio::task::block_in_place(|| live.checkpoint())?;
            last_checkpoint = Instant::now();
        }
    }
}

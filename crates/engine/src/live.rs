//! The engine kept up with the ledger: one writer applies new entries and publishes an
//! immutable snapshot after every chunk; readers load the latest snapshot without locking.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use funnel_ledger::{DecodedBlocks, Ledger};
use tracing::{info, info_span, warn};

use crate::checkpoint;
use crate::state::{Engine, Writer};
use crate::EngineError;

/// Entries applied per chunk: a snapshot is published after each.
pub const APPLY_CHUNK_ENTRIES: usize = 10_000;

/// Applies ledger entries past the writer's head, up to `upto`, publishing after each chunk
/// of about `chunk` entries.
fn advance(
    ledger: &Ledger,
    writer: &mut Writer,
    upto: u64,
    chunk: usize,
    mut publish: impl FnMut(&mut Writer) -> bool,
) -> Result<u64, EngineError> {
    let from = writer.head().seq + 1;
    writer.reserve(|| usize::try_from(upto.min(ledger.head().seq).saturating_sub(from - 1)).unwrap_or(0));
    // Reading the blocks and decoding their entries in place (strings borrowed from the
    // blocks: no allocation per string) run on a thread of its own, a chunk ahead of applying.
    std::thread::scope(|scope| {
        let (chunks, arriving) = std::sync::mpsc::sync_channel::<Result<DecodedBlocks, EngineError>>(2);
        scope.spawn(move || {
            let decoded = |blocks| DecodedBlocks::decode(blocks, from, upto).map_err(EngineError::from);
            let (mut blocks, mut entries) = (Vec::new(), 0);
            for block in ledger.blocks(from) {
                let block = match block {
                    Ok(block) if block.first_seq() > upto => break,
                    Ok(block) => block,
                    Err(e) => {
                        let _ = chunks.send(Err(e.into()));
                        return;
                    }
                };
                entries += block.len();
                blocks.push(block);
                if entries >= chunk {
                    entries = 0;
                    if chunks.send(decoded(std::mem::take(&mut blocks))).is_err() {
                        // The applier stopped early.
                        return;
                    }
                }
            }
            if !blocks.is_empty() {
                let _ = chunks.send(decoded(blocks));
            }
        });
        let mut applied = 0u64;
        for decoded in arriving {
            let decoded = decoded?;
            writer.apply_read(decoded.entries(), ledger)?;
            applied += decoded.entries().len() as u64;
            if !publish(writer) {
                break;
            }
        }
        Ok(applied)
    })
}

/// The engine at ledger entries `1..=at_seq` (the whole log when `None`): offline replay,
/// and answers for a log position other than the head.
pub fn replay(ledger: &Ledger, at_seq: Option<u64>, progress: impl FnMut(u64)) -> Result<Arc<Engine>, EngineError> {
    replay_unless(ledger, at_seq, &AtomicBool::new(false), progress)
}

/// [`replay`] that stops with [`EngineError::Cancelled`] at the next chunk once `cancelled`
/// is set: the asker has gone, and the cores are worth more to the ones still waiting.
pub fn replay_unless(
    ledger: &Ledger,
    at_seq: Option<u64>,
    cancelled: &AtomicBool,
    mut progress: impl FnMut(u64),
) -> Result<Arc<Engine>, EngineError> {
    let _span = info_span!("replay", at_seq).entered();
    let mut writer = Writer::bulk_without_history();
    let started = Instant::now();
    let mut gone = false;
    advance(
        ledger,
        &mut writer,
        at_seq.unwrap_or(u64::MAX),
        APPLY_CHUNK_ENTRIES,
        |w| {
            gone = gone || cancelled.load(Ordering::Relaxed);
            progress(w.head().seq);
            !gone
        },
    )?;
    if gone {
        return Err(EngineError::Cancelled);
    }
    let read = started.elapsed();
    let engine = writer.snapshot();
    info!(
        read_secs = read.as_secs_f64(),
        derive_secs = (started.elapsed() - read).as_secs_f64(),
        "replayed"
    );
    Ok(engine)
}

/// Least time between two checkpoints while events arrive.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);
/// And at least this many times as long as the last checkpoint took: while a backlog drains,
/// every lead it touches is dirty, writing them costs about what re-applying their events
/// would at the next start, and checkpointing stays under a tenth of the writer's time.
pub const CHECKPOINT_COST_SHARE: u32 = 10;

/// The engine the query service reads, kept up with the ledger.
pub struct Live {
    ledger: Ledger,
    current: ArcSwap<Engine>,
    writer: Mutex<Keeper>,
}

/// The writer and its checkpoint.
struct Keeper {
    writer: Writer,
    /// The checkpoint's own store (see [`checkpoint`]).
    store: sled::Db,
    checkpointed: Instant,
    /// How long the last checkpoint took.
    cost: Duration,
}

impl Keeper {
    fn checkpoint(&mut self, ledger: &Ledger) -> Result<(), EngineError> {
        let _span = info_span!("checkpoint").entered();
        let started = Instant::now();
        let failed = |e: sled::Error| EngineError::Checkpoint(format!("flush: {e}"));
        // The ledger first: a checkpoint never covers entries a crash could still take away
        // (the two stores are flushed apart; one that did would be rebuilt, at a cost).
        ledger.flush()?;
        let leads = self.writer.checkpoint(&self.store)?;
        self.store.flush().map_err(failed)?;
        self.checkpointed = Instant::now();
        self.cost = started.elapsed();
        info!(leads, seq = self.writer.head().seq, "checkpoint written");
        Ok(())
    }
}

impl Live {
    /// Loads the engine from its checkpoint and applies the log past it; with no usable
    /// checkpoint, builds it from the whole log (a bulk load), writes one and loads the engine
    /// from it ([`Live::open_once`] says why). A damaged or
    /// mismatched checkpoint is reported and rebuilt: it is derived data, the ledger is the truth.
    ///
    /// The checkpoint lives in a sled store of its own in `checkpoint_dir`.
    pub fn open(ledger: Ledger, checkpoint_dir: &Path) -> Result<Live, EngineError> {
        Live::open_once(ledger, checkpoint_dir, true)
    }

    /// [`Live::open`]; an engine built from the log is checkpointed and, with `restore_built`,
    /// restored from that checkpoint. A bulk load frees its records, entries and derived slots
    /// among the blocks it keeps, on pages that then stay resident (374 MB at 1 M leads against
    /// 301 MB restored, measured with `scripts/bench.sh`'s first start); restored, the engine
    /// is laid out as after a restart, for the cost of a restore (2.2 s at 1 M leads).
    fn open_once(ledger: Ledger, checkpoint_dir: &Path, restore_built: bool) -> Result<Live, EngineError> {
        let started = Instant::now();
        let store = checkpoint::open_store(checkpoint_dir)?;
        let restored = match Writer::restore(&store, &ledger) {
            Ok(restored) => restored,
            Err(e) => {
                warn!(error = %e, "engine checkpoint unusable: rebuilding the engine from the log");
                store
                    .clear()
                    .map_err(|e| EngineError::Checkpoint(format!("clear: {e}")))?;
                None
            }
        };
        // Everything restore read sits in sled's cache (see `checkpoint`): let go of the store
        // and open it afresh.
        let store = if restored.is_some() {
            drop(store);
            checkpoint::open_store(checkpoint_dir)?
        } else {
            store
        };
        let from_checkpoint = restored.is_some();
        let mut writer = restored.unwrap_or_else(Writer::bulk);
        let checkpoint_seq = writer.head().seq;
        let applied = advance(&ledger, &mut writer, u64::MAX, APPLY_CHUNK_ENTRIES, |_| true)?;
        let engine = writer.snapshot();
        let mut keeper = Keeper {
            writer,
            store,
            checkpointed: Instant::now(),
            cost: Duration::ZERO,
        };
        if !from_checkpoint && restore_built {
            keeper.checkpoint(&ledger)?;
            drop((keeper, engine));
            info!(
                secs = started.elapsed().as_secs_f64(),
                "engine built from the log and checkpointed: restoring it from the checkpoint"
            );
            return Live::open_once(ledger, checkpoint_dir, false);
        }
        let released = crate::heap::release_free_blocks();
        // What each part takes, logged from a thread of its own: it walks every lead (0.15–0.2 s
        // at 2.2 M leads), which the first answer need not wait for.
        let measured = Arc::clone(&engine);
        std::thread::spawn(move || {
            let leads = measured.leads().len().max(1);
            for (part, bytes) in measured.footprint() {
                info!(part, bytes, per_lead = bytes / leads, "engine memory");
            }
        });
        info!(
            from_checkpoint,
            checkpoint_seq,
            applied,
            released,
            secs = started.elapsed().as_secs_f64(),
            "engine ready"
        );
        if applied > 0 || !from_checkpoint {
            // Durable (flushed) now, so a crash soon after start does not cost the next start
            // a rebuild.
            keeper.checkpoint(&ledger)?;
        }
        Ok(Live {
            ledger,
            current: ArcSwap::new(engine),
            writer: Mutex::new(keeper),
        })
    }

    /// The latest published state: never waits for the writer.
    pub fn snapshot(&self) -> Arc<Engine> {
        self.current.load_full()
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Applies every ledger entry past the engine's head, publishing a snapshot per chunk, and
    /// checkpoints what changed at most every [`CHECKPOINT_EVERY`] (or
    /// [`CHECKPOINT_COST_SHARE`] times the last checkpoint's cost, if longer).
    pub fn catch_up(&self) -> Result<u64, EngineError> {
        let _span = info_span!("project").entered();
        let mut keeper = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let applied = advance(&self.ledger, &mut keeper.writer, u64::MAX, APPLY_CHUNK_ENTRIES, |w| {
            self.current.store(w.snapshot());
            true
        })?;
        if keeper.checkpointed.elapsed() >= CHECKPOINT_EVERY.max(keeper.cost * CHECKPOINT_COST_SHARE) {
            keeper.checkpoint(&self.ledger)?;
        }
        drop(keeper);
        // The batch's temporaries (records, entries, a checkpoint's pages) are freed by now.
        crate::heap::release_now_and_then();
        Ok(applied)
    }

    /// Checkpoints what changed since the last checkpoint (on shutdown).
    pub fn checkpoint(&self) -> Result<(), EngineError> {
        self.writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .checkpoint(&self.ledger)
    }
}

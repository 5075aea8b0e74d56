//! The engine kept up with the ledger: one writer applies new entries and publishes an
//! immutable snapshot after every chunk; readers load the latest snapshot without locking.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use funnel_ledger::{DecodedBlocks, Ledger, RawBlock};
use tracing::{info, info_span, warn};

use crate::checkpoint;
use crate::state::{Engine, Writer};
use crate::EngineError;

/// Entries applied per chunk: a snapshot is published after each.
pub const APPLY_CHUNK_ENTRIES: usize = 10_000;

/// Threads decoding a long read's chunks in turn. With one, decoding (bincode, UTF-8 checks)
/// kept its thread busy while the applier waited for it a third of the time.
const DECODERS: usize = 2;

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
    let bulk = writer.reserve(|| usize::try_from(upto.min(ledger.head().seq).saturating_sub(from - 1)).unwrap_or(0));
    // Reading the blocks runs on a thread of its own, and decoding their entries in place
    // (strings borrowed from the blocks: no allocation per string) on threads of their own, a
    // chunk each in turn, ahead of applying; one decoder unless this is a bulk load of more
    // than a chunk (not a live batch).
    let decoders = if bulk.is_some_and(|entries| entries > chunk) {
        DECODERS
    } else {
        1
    };
    std::thread::scope(|scope| {
        let (mut to_decode, mut decoded) = (Vec::new(), Vec::new());
        for _ in 0..decoders {
            let (raw, raw_arriving) = std::sync::mpsc::sync_channel::<Result<Vec<RawBlock>, EngineError>>(1);
            let (chunks, arriving) = std::sync::mpsc::sync_channel::<Result<DecodedBlocks, EngineError>>(1);
            scope.spawn(move || {
                for blocks in raw_arriving {
                    let entries = blocks.and_then(|b| DecodedBlocks::decode(b, from, upto).map_err(EngineError::from));
                    if chunks.send(entries).is_err() {
                        // The applier stopped early.
                        return;
                    }
                }
            });
            to_decode.push(raw);
            decoded.push(arriving);
        }
        scope.spawn(move || {
            let mut turn = 0;
            let mut send = |blocks| {
                turn += 1;
                to_decode[(turn - 1) % to_decode.len()].send(blocks).is_ok()
            };
            let (mut blocks, mut entries) = (Vec::new(), 0);
            for block in ledger.blocks(from) {
                let block = match block {
                    Ok(block) if block.first_seq() > upto => break,
                    Ok(block) => block,
                    Err(e) => {
                        send(Err(e.into()));
                        return;
                    }
                };
                entries += block.len();
                blocks.push(block);
                if entries >= chunk {
                    entries = 0;
                    if !send(Ok(std::mem::take(&mut blocks))) {
                        return;
                    }
                }
            }
            if !blocks.is_empty() {
                send(Ok(blocks));
            }
        });
        let mut applied = 0u64;
        // Chunks come back in the order they were read: from each decoder in turn.
        for turn in 0.. {
            let Ok(chunk) = decoded[turn % decoded.len()].recv() else {
                break;
            };
            let chunk = chunk?;
            writer.apply_read(chunk.entries(), ledger)?;
            applied += chunk.entries().len() as u64;
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

    /// Brings the checkpoint in `checkpoint_dir` up to the log, building the engine from the
    /// whole log if there is none, for a process that exits next: `funnel serve` runs this in
    /// a child process on a first start, so that what a bulk load leaves behind goes with the
    /// child, and the service itself restores from the checkpoint.
    pub fn checkpoint_the_log(ledger: Ledger, checkpoint_dir: &Path) -> Result<(), EngineError> {
        Live::open_once(ledger, checkpoint_dir, false).map(drop)
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

#[cfg(test)]
mod tests {
    use super::*;
    use funnel_core::event::{Data, Event, Team};
    use funnel_core::report::{By, FunnelQuery};
    use funnel_ledger::Candidate;

    const HOUR: i64 = 3_600_000_000;

    /// Read in chunks of a few entries, decoded by several threads in turn, a log reads as in
    /// one chunk: every entry up to the end asked for, applied once and in log order (a chunk
    /// out of order would be a gap), the same leads and the same funnel.
    #[test]
    fn chunks_decoded_in_turn_are_applied_in_log_order() {
        let dir = std::env::temp_dir().join(format!("funnel-engine-advance-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ledger = Ledger::open(&dir).expect("ledger");
        let channels = ["webinar", "paid_search", "direct"];
        let events: Vec<Event> = (0..40)
            .map(|i| Event {
                id: format!("e{i}"),
                lead_id: Some(format!("L{}", i % 7)),
                account_id: None,
                occurred_at: 1_772_323_200_000_000 + i64::from(i) * HOUR,
                producer: None,
                data: Data::Touch {
                    channel: channels[i as usize % 3].into(),
                    campaign: None,
                    content: None,
                    team: Team::Marketing,
                },
            })
            .collect();
        // Blocks of one entry and of ten.
        for e in &events[..20] {
            ledger.append_batch(&[Candidate::direct(e)], 0).expect("append");
        }
        for batch in events[20..].chunks(10) {
            let candidates: Vec<Candidate> = batch.iter().map(Candidate::direct).collect();
            ledger.append_batch(&candidates, 0).expect("append");
        }
        let read = |chunk: usize, upto: u64| {
            let mut writer = Writer::bulk_without_history();
            let applied = advance(&ledger, &mut writer, upto, chunk, |_| true).expect("advance");
            let engine = writer.snapshot();
            let by_channel = FunnelQuery {
                by: Some(By::Channel),
                ..Default::default()
            };
            let funnel = serde_json::to_string(&crate::funnel::funnel(&engine, &by_channel, i64::MAX)).expect("json");
            (applied, engine.head().seq, engine.leads.len(), funnel)
        };
        for upto in [u64::MAX, 29, 5] {
            let whole = read(APPLY_CHUNK_ENTRIES, upto);
            assert_eq!(whole.1, upto.min(40));
            assert_eq!(whole.0, whole.1);
            assert_eq!(whole.2, 7.min(whole.1 as usize));
            for chunk in [1, 3, 12] {
                assert_eq!(read(chunk, upto), whole, "chunks of {chunk} up to {upto}");
            }
        }
        drop(ledger);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

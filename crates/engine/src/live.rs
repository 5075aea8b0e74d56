//! The engine kept up with the ledger: one writer applies new entries and publishes an
//! immutable snapshot after every chunk; readers load the latest snapshot without locking.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use funnel_ledger::Ledger;
use tracing::{info, info_span};

use crate::state::{Engine, Writer};
use crate::EngineError;

/// Entries applied per chunk: a snapshot is published after each.
pub const APPLY_CHUNK_ENTRIES: usize = 10_000;

/// Applies ledger entries past the writer's head, up to `upto`, publishing after each chunk.
fn advance(
    ledger: &Ledger,
    writer: &mut Writer,
    upto: u64,
    chunk: usize,
    mut publish: impl FnMut(&mut Writer),
) -> Result<u64, EngineError> {
    let mut applied = 0u64;
    let mut entries = Vec::with_capacity(chunk);
    for entry in ledger.entries(writer.head().seq + 1) {
        let entry = entry?;
        if entry.seq > upto {
            break;
        }
        entries.push(entry);
        if entries.len() == chunk {
            writer.apply(&entries, ledger)?;
            applied += entries.len() as u64;
            entries.clear();
            publish(writer);
        }
    }
    if !entries.is_empty() {
        writer.apply(&entries, ledger)?;
        applied += entries.len() as u64;
        publish(writer);
    }
    Ok(applied)
}

/// The engine at ledger entries `1..=at_seq` (the whole log when `None`): offline replay,
/// and answers for a log position other than the head.
pub fn replay(ledger: &Ledger, at_seq: Option<u64>, mut progress: impl FnMut(u64)) -> Result<Arc<Engine>, EngineError> {
    let _span = info_span!("replay", at_seq).entered();
    let mut writer = Writer::bulk();
    let started = std::time::Instant::now();
    advance(
        ledger,
        &mut writer,
        at_seq.unwrap_or(u64::MAX),
        APPLY_CHUNK_ENTRIES,
        |w| progress(w.head().seq),
    )?;
    let read = started.elapsed();
    let engine = writer.snapshot();
    info!(read_secs = read.as_secs_f64(), derive_secs = (started.elapsed() - read).as_secs_f64(), "replayed");
    Ok(engine)
}

/// The engine the query service reads, kept up with the ledger.
pub struct Live {
    ledger: Ledger,
    current: ArcSwap<Engine>,
    writer: Mutex<Writer>,
}

impl Live {
    /// Builds the engine from the whole log (a bulk load), then keeps it by differences.
    pub fn open(ledger: Ledger) -> Result<Live, EngineError> {
        let mut writer = Writer::bulk();
        let applied = advance(&ledger, &mut writer, u64::MAX, APPLY_CHUNK_ENTRIES, |_| {})?;
        let engine = writer.snapshot();
        let leads = engine.leads().len().max(1);
        for (part, bytes) in engine.footprint() {
            info!(part, bytes, per_lead = bytes / leads, "engine memory");
        }
        let current = ArcSwap::new(engine);
        info!(applied, "engine built from the log");
        Ok(Live {
            ledger,
            current,
            writer: Mutex::new(writer),
        })
    }

    /// The latest published state: never waits for the writer.
    pub fn snapshot(&self) -> Arc<Engine> {
        self.current.load_full()
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Applies every ledger entry past the engine's head, publishing a snapshot per chunk.
    pub fn catch_up(&self) -> Result<u64, EngineError> {
        let _span = info_span!("project").entered();
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        advance(&self.ledger, &mut writer, u64::MAX, APPLY_CHUNK_ENTRIES, |w| {
            self.current.store(w.snapshot())
        })
    }
}

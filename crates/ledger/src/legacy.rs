//! Stores written by earlier versions, brought to the current layout when the ledger opens.
//!
//! Until this layout, sled's files lay at the top of the ledger's directory, and the store
//! could still hold what earlier layouts kept there: blocks as sled values (`b` ‖ first seq),
//! the id index of two layouts before the ids file (`i`, `j` keys), a lead index nothing
//! reads (`l` keys), the engine checkpoint's old tree. sled 0.34 never gives back the space
//! of what is removed from it, and every time it opens it writes over each free segment of
//! its file: 2.2 GB at 10 M events moved out of sled, 0.8 s of every start. So an old store
//! is upgraded once, in steps each of which a crash may interrupt:
//!
//! 1. its blocks move into the blocks file ([`Ledger::move_old_blocks`]; resumable);
//! 2. the chain's metadata and the places are copied into a fresh sled store in
//!    `places.partial/` (removed first if a crash left one), flushed, and the directory is
//!    renamed `places/`: from then on the old files are dead;
//! 3. the old files are removed, sled's `conf` last: it is how an old store is recognised,
//!    so a crash part way leaves it and the next open finishes the removal.

use std::path::Path;

use crate::block::Block;
use crate::blockfile::Place;
use crate::{open_sled, place_key, seq_from, seq_key, Ledger, Result, LOCK_WAIT, LOG_TREE, META_KEY, PLACES_DIR};

/// The key a block had when stores held blocks in sled.
const OLD_BLOCK_PREFIX: u8 = b'b';

/// Blocks moved from sled into the blocks file per synced step of [`Ledger::move_old_blocks`].
const MOVED_PER_STEP: usize = 1_024;

/// Keys copied into the new store per sled batch.
const COPIED_PER_BATCH: usize = 65_536;

/// Where the new store is built before it is renamed [`PLACES_DIR`].
const PARTIAL_DIR: &str = "places.partial";

/// sled's files at the top of an old store's directory; `conf` last (see the module docs).
const OLD_FILES: [&str; 2] = ["db", "conf"];

/// How many entries a stored block holds (0 if its header cannot be read).
fn block_seqs(first_seq: u64, bytes: &[u8]) -> u64 {
    Block::parse(first_seq, bytes).map_or(0, |b| b.len() as u64)
}

/// Brings the store in `dir` to the current layout if an earlier version wrote it.
pub(crate) fn upgrade(dir: &Path) -> Result<()> {
    if !dir.join("conf").exists() {
        return Ok(());
    }
    let places = dir.join(PLACES_DIR);
    if !places.exists() {
        let _span = tracing::info_span!("upgrade_ledger_store").entered();
        let old = Ledger::on_store(dir, dir)?;
        old.move_old_blocks()?;
        let partial = dir.join(PARTIAL_DIR);
        if partial.exists() {
            std::fs::remove_dir_all(&partial)?;
        }
        let copied = old.copy_places(&partial)?;
        drop(old);
        std::fs::rename(&partial, &places)?;
        sync_dir(dir)?;
        tracing::info!(keys = copied, "moved the ledger's places into a fresh store");
    }
    remove_old_files(dir)
}

fn remove_old_files(dir: &Path) -> Result<()> {
    let blobs = dir.join("blobs");
    if blobs.exists() {
        std::fs::remove_dir_all(&blobs)?;
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("snap."))
        {
            std::fs::remove_file(&path)?;
        }
    }
    for name in OLD_FILES {
        match std::fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

impl Ledger {
    /// Copies the chain's metadata and every place into a new sled store at `to`, flushed.
    /// Nothing else is copied: what earlier layouts kept beside them is derived or unread.
    fn copy_places(&self, to: &Path) -> Result<usize> {
        let db = open_sled(&crate::store_config(to), LOCK_WAIT)?;
        let log = db.open_tree(LOG_TREE)?;
        let mut copied = 0;
        if let Some(meta) = self.log.get(META_KEY)? {
            log.insert(META_KEY, meta)?;
            copied += 1;
        }
        let mut places = self.log.scan_prefix(b"p").peekable();
        while places.peek().is_some() {
            let mut batch = sled::Batch::default();
            for item in places.by_ref().take(COPIED_PER_BATCH) {
                let (key, value) = item?;
                batch.insert(key, value);
                copied += 1;
            }
            log.apply_batch(batch)?;
        }
        db.flush()?;
        Ok(copied)
    }

    /// Moves the blocks of a store written before the blocks file (sled values under `b` keys)
    /// into the file, in steps of [`MOVED_PER_STEP`] blocks: each step's bytes are written
    /// and synced, then one sled batch places them and removes their old keys. A crash part
    /// way leaves the moved blocks placed and the rest under `b`; the next open goes on from
    /// there. The bytes are moved as they are, damage included: `verify` judges them.
    fn move_old_blocks(&self) -> Result<()> {
        let Some((key, _)) = self.log.scan_prefix([OLD_BLOCK_PREFIX]).next().transpose()? else {
            return Ok(());
        };
        let _span = tracing::info_span!("move_blocks_to_file").entered();
        let start = seq_from(&key[1..]).unwrap_or(0);
        let mut end = self.last_place()?.map_or(0, |(_, place)| place.end());
        self.cut_unplaced(end)?;
        let mut moved = 0;
        let mut blocks = self.old_blocks(start).peekable();
        while blocks.peek().is_some() {
            let mut bytes = Vec::new();
            let mut batch = sled::Batch::default();
            for item in blocks.by_ref().take(MOVED_PER_STEP) {
                let (first, value) = item?;
                let place = Place {
                    offset: end + bytes.len() as u64,
                    len: value.len() as u32,
                };
                batch.insert(&place_key(first), &place.encode());
                batch.remove(&seq_key(OLD_BLOCK_PREFIX, first));
                bytes.extend_from_slice(&value);
                moved += 1;
            }
            self.blocks.write_at(end, &bytes)?;
            self.blocks.sync()?;
            self.log.apply_batch(batch)?;
            end += bytes.len() as u64;
        }
        self.db.flush()?;
        tracing::info!(
            blocks = moved,
            bytes = end,
            "moved the ledger's blocks from sled to the blocks file"
        );
        Ok(())
    }

    /// The blocks of a store from before the blocks file (sled values under `b` ‖ first seq)
    /// from `start` on, as (first seq, bytes).
    ///
    /// Each value is read with a `get` of the key that follows from the block before, not
    /// with sled's range iterator: read through the iterator, a whole read of the log stayed
    /// in sled's cache whatever its capacity (430 MB of 4.5 M events), read this way it does
    /// not. sled evicts only while it works through one of its 256 shards' queues of 64 page
    /// accesses, and the iterator touches each leaf once for its dozen values. Where the next
    /// key is not stored (the end, or a block whose header was unreadable) one range lookup
    /// finds the next key that is.
    fn old_blocks(&self, start: u64) -> impl Iterator<Item = Result<(u64, sled::IVec)>> + '_ {
        let key = move |seq: u64| seq_key(OLD_BLOCK_PREFIX, seq);
        let mut next = Some(start);
        std::iter::from_fn(move || {
            let seq = next.take()?;
            let found = match self.log.get(key(seq)) {
                Ok(Some(bytes)) => Ok(Some((seq, bytes))),
                Ok(None) => match self.log.range(key(seq)..=key(u64::MAX)).next() {
                    None => Ok(None),
                    Some(Ok((k, bytes))) => Ok(seq_from(&k[1..]).map(|first| (first, bytes))),
                    Some(Err(e)) => Err(e.into()),
                },
                Err(e) => Err(e.into()),
            };
            if let Ok(Some((first, bytes))) = &found {
                next = first.checked_add(block_seqs(*first, bytes).max(1));
            }
            found.transpose()
        })
    }
}

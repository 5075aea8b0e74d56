//! A block: consecutive entries stored together in the blocks file, written once per append
//! batch.
//!
//! ```text
//! u8      BLOCK_VERSION
//! u32 LE  count
//! [u8;32] prev_hash of the first entry
//! u32 LE  × count: end offset of each entry in the body
//! body:   per entry [u8;32] hash, then bincode { recorded_at, stream_seq, event }
//! ```
//!
//! The offsets let one entry be decoded without the others (a lead lookup reads one entry per
//! block), and the hash comes first so an entry's prev_hash is read without decoding anything. The seq of entry `i` is the block key's first seq plus `i`; its prev_hash is the
//! previous entry's hash (the block's `prev_hash` for the first). The storage layout is ours to
//! change (`BLOCK_VERSION`); what the chain hashes is fixed by `schemas/chain.md`.

use funnel_core::event::EventRef;
use funnel_core::time::Micros;
use funnel_core::{Entry, Event};
use serde::{Deserialize, Serialize};

use crate::{LedgerError, Result, BINCODE};

const BLOCK_VERSION: u8 = 1;
const HEADER: usize = 1 + 4 + 32;

/// Largest body a block gets before the batch opens another one. A lead lookup reads one whole
/// block per entry of the lead's (from the blocks file, one `pread` each); 16 KiB keeps that
/// read small while a busy batch still fills few blocks.
pub const BLOCK_BYTES: usize = 16 << 10;

#[derive(Serialize)]
struct StoredRef<'a> {
    recorded_at: Micros,
    stream_seq: u64,
    event: &'a Event,
}

#[derive(Deserialize)]
struct Stored {
    recorded_at: Micros,
    stream_seq: u64,
    event: Event,
}

/// [`Stored`] with the event's strings borrowed from the block.
#[derive(Deserialize)]
struct StoredBorrowed<'a> {
    recorded_at: Micros,
    stream_seq: u64,
    #[serde(borrow)]
    event: EventRef<'a>,
}

/// A ledger entry whose event borrows its strings from the block it was read from: what a
/// full read of the log decodes, without an allocation per string.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryRef<'a> {
    pub seq: u64,
    pub recorded_at: Micros,
    pub stream_seq: u64,
    pub hash: [u8; 32],
    pub event: EventRef<'a>,
}

/// A stored block as read, not yet decoded ([`crate::Ledger::blocks`]).
pub struct RawBlock {
    first_seq: u64,
    bytes: Vec<u8>,
}

impl RawBlock {
    pub(crate) fn new(first_seq: u64, bytes: Vec<u8>) -> RawBlock {
        RawBlock { first_seq, bytes }
    }

    pub(crate) fn into_parts(self) -> (u64, Vec<u8>) {
        (self.first_seq, self.bytes)
    }

    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// How many entries it holds (0 if its header is damaged: [`RawBlock::entries`] says how).
    pub fn len(&self) -> usize {
        Block::parse(self.first_seq, &self.bytes).map_or(0, |b| b.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its entries from seq `from` on, owned, each decoded on its own (a damaged entry is an
    /// `Err` in its place).
    pub fn entries(&self, from: u64) -> Vec<Result<Entry>> {
        let block = match Block::parse(self.first_seq, &self.bytes) {
            Ok(block) => block,
            Err(e) => return vec![Err(e)],
        };
        let skip = from.saturating_sub(self.first_seq) as usize;
        (skip..block.len()).map(|i| block.entry(i)).collect()
    }

    /// Appends its entries with seqs in `from..=upto` to `out`.
    pub fn read_into<'a>(&'a self, from: u64, upto: u64, out: &mut Vec<EntryRef<'a>>) -> Result<()> {
        let block = Block::parse(self.first_seq, &self.bytes)?;
        if upto < self.first_seq {
            return Ok(());
        }
        let skip = from.saturating_sub(self.first_seq) as usize;
        let end = (upto - self.first_seq).saturating_add(1).min(block.len() as u64) as usize;
        for i in skip..end {
            out.push(block.entry_ref(i)?);
        }
        Ok(())
    }
}

/// Blocks read and their entries decoded in place, kept together so that the decoding can
/// happen on one thread and the entries be used on another (a replay's reading thread decodes
/// a chunk ahead of the thread that applies it).
pub struct DecodedBlocks {
    /// Borrow from `_blocks`' bytes: declared first, so dropped first.
    entries: Vec<EntryRef<'static>>,
    _blocks: Vec<RawBlock>,
}

impl DecodedBlocks {
    /// The entries `from..=upto` of `blocks`, decoded.
    pub fn decode(blocks: Vec<RawBlock>, from: u64, upto: u64) -> Result<DecodedBlocks> {
        let mut entries: Vec<EntryRef<'_>> = Vec::with_capacity(blocks.iter().map(RawBlock::len).sum());
        for block in &blocks {
            block.read_into(from, upto, &mut entries)?;
        }
        // SAFETY: the entries borrow only from the blocks' byte buffers, which live on the heap:
        // moving `blocks` (into the struct, or the struct anywhere) does not move them, and
        // nothing mutates or frees them while the struct exists (`blocks` is private and never
        // touched again; it is dropped after `entries`). `entries()` lends them out for no
        // longer than `&self`, so no entry outlives its bytes. Only the lifetime changes.
        let entries = unsafe { std::mem::transmute::<Vec<EntryRef<'_>>, Vec<EntryRef<'static>>>(entries) };
        Ok(DecodedBlocks {
            entries,
            _blocks: blocks,
        })
    }

    pub fn entries(&self) -> &[EntryRef<'_>] {
        &self.entries
    }
}

/// Builds blocks from entries in seq order.
#[derive(Default)]
pub struct BlockWriter {
    blocks: Vec<(u64, Vec<u8>)>,
    first_seq: u64,
    prev_hash: [u8; 32],
    ends: Vec<u32>,
    body: Vec<u8>,
}

impl BlockWriter {
    pub fn push(&mut self, entry: &Entry) {
        self.push_parts(
            entry.seq,
            entry.prev_hash,
            entry.hash,
            entry.recorded_at,
            entry.stream_seq,
            &entry.event,
        );
    }

    /// [`BlockWriter::push`] without an `Entry` to hand.
    pub fn push_parts(
        &mut self,
        seq: u64,
        prev_hash: [u8; 32],
        hash: [u8; 32],
        recorded_at: Micros,
        stream_seq: u64,
        event: &Event,
    ) {
        if self.ends.is_empty() {
            self.first_seq = seq;
            self.prev_hash = prev_hash;
        }
        let stored = StoredRef {
            recorded_at,
            stream_seq,
            event,
        };
        self.body.extend_from_slice(&hash);
        // Encoding plain data into a Vec cannot fail.
        let _ = bincode::serde::encode_into_std_write(&stored, &mut self.body, BINCODE);
        self.ends.push(self.body.len() as u32);
        if self.body.len() >= BLOCK_BYTES {
            self.seal();
        }
    }

    fn seal(&mut self) {
        if self.ends.is_empty() {
            return;
        }
        let mut value = Vec::with_capacity(HEADER + 4 * self.ends.len() + self.body.len());
        value.push(BLOCK_VERSION);
        value.extend_from_slice(&(self.ends.len() as u32).to_le_bytes());
        value.extend_from_slice(&self.prev_hash);
        for end in &self.ends {
            value.extend_from_slice(&end.to_le_bytes());
        }
        value.extend_from_slice(&self.body);
        self.blocks.push((self.first_seq, value));
        self.ends.clear();
        self.body.clear();
    }

    /// Every block as `(first seq, value)`.
    pub fn finish(mut self) -> Vec<(u64, Vec<u8>)> {
        self.seal();
        self.blocks
    }
}

/// A stored block, read in place.
pub struct Block<'a> {
    pub first_seq: u64,
    pub prev_hash: [u8; 32],
    count: usize,
    bytes: &'a [u8],
}

impl<'a> Block<'a> {
    pub fn parse(first_seq: u64, bytes: &'a [u8]) -> Result<Block<'a>> {
        let damaged = |reason: &str| LedgerError::Damaged {
            seq: first_seq,
            reason: format!("block: {reason}"),
        };
        if bytes.len() < HEADER || bytes[0] != BLOCK_VERSION {
            return Err(damaged("unknown version or truncated header"));
        }
        let count = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        let mut prev_hash = [0; 32];
        prev_hash.copy_from_slice(&bytes[5..HEADER]);
        let block = Block {
            first_seq,
            prev_hash,
            count,
            bytes,
        };
        if count == 0 || bytes.len() < HEADER + 4 * count || block.end(count - 1) != bytes.len() - block.body_start() {
            return Err(damaged("offsets do not match its length"));
        }
        Ok(block)
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.count as u64 - 1
    }

    fn body_start(&self) -> usize {
        HEADER + 4 * self.count
    }

    fn end(&self, i: usize) -> usize {
        let at = HEADER + 4 * i;
        u32::from_le_bytes([
            self.bytes[at],
            self.bytes[at + 1],
            self.bytes[at + 2],
            self.bytes[at + 3],
        ]) as usize
    }

    fn slice(&self, i: usize) -> Result<&'a [u8]> {
        let start = if i == 0 { 0 } else { self.end(i - 1) };
        let end = self.end(i);
        let body = &self.bytes[self.body_start()..];
        body.get(start..end)
            .filter(|s| s.len() > 32)
            .ok_or_else(|| LedgerError::Damaged {
                seq: self.first_seq + i as u64,
                reason: "entry offsets out of order".into(),
            })
    }

    /// The stored hash of entry `i`.
    pub fn hash(&self, i: usize) -> Result<[u8; 32]> {
        Ok(hash_and_rest(self.slice(i)?).0)
    }

    /// The prev_hash of entry `i`.
    pub fn prev_hash(&self, i: usize) -> Result<[u8; 32]> {
        if i == 0 {
            Ok(self.prev_hash)
        } else {
            self.hash(i - 1)
        }
    }

    /// Entry `i` of the block, its event borrowing from the block's bytes.
    pub fn entry_ref(&self, i: usize) -> Result<EntryRef<'a>> {
        let seq = self.first_seq + i as u64;
        let (hash, rest) = hash_and_rest(self.slice(i)?);
        let (stored, _): (StoredBorrowed<'a>, usize) =
            bincode::serde::borrow_decode_from_slice(rest, BINCODE).map_err(|e| undecodable(seq, e))?;
        Ok(EntryRef {
            seq,
            recorded_at: stored.recorded_at,
            stream_seq: stored.stream_seq,
            hash,
            event: stored.event,
        })
    }

    /// Entry `i` of the block.
    pub fn entry(&self, i: usize) -> Result<Entry> {
        let seq = self.first_seq + i as u64;
        let (hash, rest) = hash_and_rest(self.slice(i)?);
        let (stored, _): (Stored, usize) =
            bincode::serde::decode_from_slice(rest, BINCODE).map_err(|e| undecodable(seq, e))?;
        Ok(Entry {
            seq,
            recorded_at: stored.recorded_at,
            stream_seq: stored.stream_seq,
            prev_hash: self.prev_hash(i)?,
            hash,
            event: stored.event,
        })
    }
}

/// An entry's stored bytes: its hash, then the rest.
fn hash_and_rest(slice: &[u8]) -> ([u8; 32], &[u8]) {
    let mut hash = [0; 32];
    hash.copy_from_slice(&slice[..32]);
    (hash, &slice[32..])
}

fn undecodable(seq: u64, e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Damaged {
        seq,
        reason: format!("entry does not decode: {e}"),
    }
}

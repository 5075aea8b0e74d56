//! The ledger's files beside sled's, written and read with positioned writes and reads: the
//! blocks file, every [`crate::block`] of the log end to end, and the ids file, the 8-byte id
//! hash of every seq at `(seq - 1) * 8` ([`crate::ids`]).
//!
//! sled keeps only where each block lies (`p` ‖ first seq → [`Place`]), in the same atomic
//! batch as the id index, and that batch is the commit point: a block is written to the file
//! first, then its place lands in sled. Bytes past the last placed block are an append that
//! stopped before its batch landed; opening the ledger cuts them off. [`crate::Ledger::flush`]
//! syncs the file before sled, so a flushed (acknowledged) place never points past what is on
//! disk.
//!
//! Why not blocks as sled values: sled 0.34 keeps the leaves that point reads touch whatever
//! its cache capacity, so a service answering lead lookups grew by hundreds of megabytes.
//! Read from the file, a block costs the process nothing once the read returns: the kernel's
//! page cache holds it, outside the process's RSS, and reclaims it under pressure.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::{LedgerError, Result};

/// The blocks file's name inside the ledger's directory.
pub const BLOCKS_FILE: &str = "blocks";
/// The ids file's name inside the ledger's directory.
pub const IDS_FILE: &str = "ids";

/// Where a block lies in the blocks file: the value of its `p` key (12 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    pub offset: u64,
    pub len: u32,
}

impl Place {
    pub fn encode(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&self.offset.to_be_bytes());
        out[8..].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Place> {
        let bytes: &[u8; 12] = bytes.try_into().ok()?;
        let (offset, len) = bytes.split_at(8);
        Some(Place {
            offset: u64::from_be_bytes(offset.try_into().ok()?),
            len: u32::from_be_bytes(len.try_into().ok()?),
        })
    }

    /// The offset just past the block.
    pub fn end(self) -> u64 {
        self.offset + u64::from(self.len)
    }
}

/// One of the ledger's files.
pub(crate) struct DataFile {
    file: File,
}

impl DataFile {
    pub fn open(dir: &Path, name: &str) -> Result<DataFile> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(name))?;
        Ok(DataFile { file })
    }

    pub fn len(&self) -> Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Cuts the file to `len` bytes and makes that durable.
    pub fn truncate(&self, len: u64) -> Result<()> {
        self.file.set_len(len)?;
        self.sync()
    }

    /// Writes `bytes` at `offset` (past what is stored: appends are serialised by the ledger's
    /// head lock).
    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        self.file.write_all_at(bytes, offset)?;
        Ok(())
    }

    /// The block of seq `first` at `place`; a place past the end of the file is damage.
    pub fn read(&self, first: u64, place: Place) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; place.len as usize];
        match self.file.read_exact_at(&mut bytes, place.offset) {
            Ok(()) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(LedgerError::Damaged {
                seq: first,
                reason: format!(
                    "its block lies at bytes {}..{} of the blocks file, which holds {}",
                    place.offset,
                    place.end(),
                    self.len()?
                ),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads `out.len()` bytes at `offset`; fewer at the end of the file (how many comes back).
    pub fn read_at(&self, offset: u64, out: &mut [u8]) -> Result<usize> {
        let mut done = 0;
        while done < out.len() {
            match self.file.read_at(&mut out[done..], offset + done as u64)? {
                0 => break,
                n => done += n,
            }
        }
        Ok(done)
    }

    pub fn sync(&self) -> Result<()> {
        self.file.sync_data()?;
        Ok(())
    }
}

//! Lead numbers found by the hash of their id: the name table's index.
//!
//! Open addressing with linear probing over one array of `u64` slots. A slot holds the top
//! 32 bits of its id's hash (the tag) above the lead number plus one (0: an empty slot), and
//! an id's probe starts at `tag × capacity / 2^32`. So
//! - a probe reads one cache line in most cases, tag and number side by side (hashbrown kept
//!   its control bytes apart from its numbers: two misses a lookup in a table larger than the
//!   cache, the largest item of a 10 M-event replay), and a bulk load fetches that line a few
//!   entries ahead ([`IdSlots::prefetch`]);
//! - growing places every number again from its tag alone, without reading or hashing an id.
//!
//! The caller compares ids on a tag match, so a poor spread of hashes costs speed, never
//! correctness. Numbers are never removed (lead ids only accumulate).

use crate::state::LeadNo;

/// The table grows past this share of its slots in use (7/8): probes stay a few slots long.
const LOAD_NUM: usize = 7;
const LOAD_DEN: usize = 8;

#[derive(Debug, Default)]
pub(crate) struct IdSlots {
    slots: Vec<u64>,
    len: usize,
}

/// Slots for `numbers` at 7/8 load, and room for an eighth more.
fn roomy(numbers: usize) -> usize {
    numbers * LOAD_DEN / LOAD_NUM * 9 / 8 + 1
}

fn tag_of(hash: u64) -> u32 {
    (hash >> 32) as u32
}

/// Where the probe for `tag` starts among `capacity` slots (in `u128`: a table of more than
/// 2^32 slots would overflow a `u64` product; one multiply either way).
fn home(tag: u32, capacity: usize) -> usize {
    ((u128::from(tag) * capacity as u128) >> 32) as usize
}

/// Puts `no` under `tag` in the first free slot from its home.
fn place(slots: &mut [u64], tag: u32, no: LeadNo) {
    let mut at = home(tag, slots.len());
    while slots[at] != 0 {
        at += 1;
        if at == slots.len() {
            at = 0;
        }
    }
    slots[at] = u64::from(tag) << 32 | (u64::from(no) + 1);
}

impl IdSlots {
    /// The number filed under `hash` for which `same` holds.
    pub(crate) fn find(&self, hash: u64, mut same: impl FnMut(LeadNo) -> bool) -> Option<LeadNo> {
        if self.slots.is_empty() {
            return None;
        }
        let tag = tag_of(hash);
        let mut at = home(tag, self.slots.len());
        loop {
            let slot = self.slots[at];
            if slot == 0 {
                return None;
            }
            if (slot >> 32) as u32 == tag {
                let no = (slot as u32) - 1;
                if same(no) {
                    return Some(no);
                }
            }
            at += 1;
            if at == self.slots.len() {
                at = 0;
            }
        }
    }

    /// Files `no` (a number not filed yet) under `hash`.
    pub(crate) fn insert(&mut self, hash: u64, no: LeadNo) {
        assert!(no < LeadNo::MAX, "more than 2^32 - 1 leads");
        self.reserve(1);
        place(&mut self.slots, tag_of(hash), no);
        self.len += 1;
    }

    /// Makes room for `more` numbers: an empty table (a restore knows how many it loads) for
    /// them and an eighth more (so that the first new leads do not grow it), a table in use
    /// for half again as many as it holds (growth amortised over live batches).
    pub(crate) fn reserve(&mut self, more: usize) {
        let need = self.len + more;
        if need * LOAD_DEN <= self.slots.len() * LOAD_NUM {
            return;
        }
        let capacity = match self.len {
            0 => roomy(need),
            _ => (need * LOAD_DEN / LOAD_NUM + 1).max(self.slots.len() * 3 / 2),
        };
        self.resize(capacity);
    }

    fn resize(&mut self, capacity: usize) {
        let mut slots = vec![0u64; capacity];
        for slot in self.slots.iter().filter(|s| **s != 0) {
            place(&mut slots, (slot >> 32) as u32, (*slot as u32) - 1);
        }
        self.slots = slots;
    }

    /// Asks the processor for the line `hash`'s probe starts at, so that a lookup a few
    /// entries later finds it in the cache.
    pub(crate) fn prefetch(&self, hash: u64) {
        if let Some(slot) = self.slots.get(home(tag_of(hash), self.slots.len())) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: SSE is part of x86_64; a prefetch is a hint that never faults, and the
            // address is a slot of the table.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((slot as *const u64).cast());
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = slot;
        }
    }

    /// Heap bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spread(no: LeadNo) -> u64 {
        u64::from(no).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    /// A restored table takes its first new leads without growing, and live batches grow it
    /// by half a few times, not once a batch.
    #[test]
    fn batches_grow_the_table_a_few_times_not_once_each() {
        let mut table = IdSlots::default();
        table.reserve(1_000);
        for no in 0..1_000 {
            table.insert(spread(no), no);
        }
        let restored = table.slots.len();
        let mut sizes = vec![restored];
        for no in 1_000..2_000 {
            if no % 10 == 0 {
                table.reserve(10);
            }
            table.insert(spread(no), no);
            if sizes.last() != Some(&table.slots.len()) {
                sizes.push(table.slots.len());
            }
            if no < 1_100 {
                assert_eq!(table.slots.len(), restored, "the first new leads fit");
            }
        }
        // From room for 1,125 numbers to 2,000: two or three growths by half.
        assert!(sizes.len() <= 4, "{sizes:?}");
        assert!((0..2_000).all(|no| table.find(spread(no), |n| n == no) == Some(no)));
    }

    proptest! {
        /// Whatever the hashes (few tags, so that numbers share them and probes run long and
        /// wrap past the end), every number filed is found under its hash by its own key and
        /// nowhere else, after one-by-one growth and an exact reserve alike.
        #[test]
        fn every_number_is_found_under_its_hash(
            hashes in proptest::collection::vec(prop_oneof![
                (0u64..4).prop_map(|t| t << 32 | 7),
                (0u64..3).prop_map(|t| (u64::from(u32::MAX) - t) << 32),
                any::<u64>(),
            ], 0..400),
            reserve_first in any::<bool>(),
        ) {
            let mut table = IdSlots::default();
            if reserve_first {
                table.reserve(hashes.len());
            }
            for (no, hash) in hashes.iter().enumerate() {
                prop_assert_eq!(table.find(*hash, |n| n as usize == no), None);
                table.insert(*hash, no as LeadNo);
                prop_assert!(table.len * LOAD_DEN <= table.slots.len() * LOAD_NUM);
            }
            for (no, hash) in hashes.iter().enumerate() {
                prop_assert_eq!(table.find(*hash, |n| n as usize == no), Some(no as LeadNo));
                // Another number is found under this hash only if it was filed under the same
                // tag.
                let other = (no + 1) % hashes.len();
                let found = table.find(*hash, |n| n as usize == other).is_some();
                prop_assert_eq!(found, hashes[other] >> 32 == hash >> 32);
            }
            prop_assert_eq!(table.find(u64::MAX, |_| true).is_some(), hashes.iter().any(|h| h >> 32 == u64::MAX >> 32));
        }
    }
}

//! Sorted times in about `2 + log2(span / n)` bits each instead of 64 (Elias–Fano).
//!
//! Every index of the engine is a sorted multiset keyed by a time in micros, and the times of
//! one set are dense: a million inquiries over a year are 32 seconds apart on average, so
//! each differs from the one before it in its low 25 bits or so. Elias–Fano keeps the low
//! `l ≈ log2(span / n)` bits of each time as they are, packed, and the rest (the *bucket*,
//! `time >> l`) as a unary code: one `1` per item in its bucket, a `0` closing each bucket.
//! At a million items over a year that is 30 bits an item instead of 64.
//!
//! An item's rank is found without decoding the others: the bucket's start is the position
//! of a zero (found from a sample kept every [`SAMPLE`] zeros and a scan of a few words),
//! then a binary search of the bucket's items (about one item per bucket, by construction).

/// Every this many zeros (ones) of the buckets' bits, where the next one is kept.
const SAMPLE: usize = 256;

/// Non-decreasing times, packed.
#[derive(Debug, Clone, Default)]
pub struct PackedTimes {
    len: usize,
    /// The first (smallest) time: values are stored as `time − min`.
    min: i64,
    /// The largest `time − min`.
    span: u64,
    /// Low bits kept per item.
    l: u32,
    low: Vec<u64>,
    /// The buckets in unary: item `i` of bucket `b` is bit `b + i`, set.
    high: Vec<u64>,
    /// `zeros[k]`: the position of zero number `k · SAMPLE`.
    zeros: Vec<usize>,
    /// `ones[k]`: the position of one number `k · SAMPLE`.
    ones: Vec<usize>,
}

/// The position of the `n`-th (0-based) set bit of `words`, searching from bit `from`
/// (inclusive), with `invert` searching for clear bits instead.
fn select(words: &[u64], from: usize, mut n: usize, invert: bool) -> usize {
    let mut w = from / 64;
    let mut word = if invert { !words[w] } else { words[w] } & (!0u64 << (from % 64));
    loop {
        let here = word.count_ones() as usize;
        if n < here {
            for _ in 0..n {
                word &= word - 1;
            }
            return w * 64 + word.trailing_zeros() as usize;
        }
        n -= here;
        w += 1;
        // Past the last word every bit reads as a clear bit: the buckets end with zeros.
        word = match words.get(w) {
            Some(v) if invert => !v,
            Some(v) => *v,
            None if invert => !0,
            None => panic!("select past the end of the packed times"),
        };
    }
}

/// The first `i` in `[from, to)` for which `before(i)` is false (`before` true then false).
pub fn partition(mut from: usize, mut to: usize, before: impl Fn(usize) -> bool) -> usize {
    while from < to {
        let mid = from + (to - from) / 2;
        if before(mid) {
            from = mid + 1;
        } else {
            to = mid;
        }
    }
    from
}

impl PackedTimes {
    /// Packs `times`, which must be sorted (non-decreasing).
    pub fn new(times: impl ExactSizeIterator<Item = i64> + DoubleEndedIterator + Clone) -> PackedTimes {
        let len = times.len();
        let (Some(min), Some(max)) = (times.clone().next(), times.clone().next_back()) else {
            return PackedTimes::default();
        };
        let span = (i128::from(max) - i128::from(min)) as u64;
        let ratio = (u128::from(span) + 1) / len as u128;
        let l = if ratio <= 1 {
            0
        } else {
            (127 - ratio.leading_zeros()).min(63)
        };
        let buckets = (span >> l) as usize + 1;
        let bits = len + buckets;
        let mut low = zeroed_words((len * l as usize).div_ceil(64));
        let mut high = zeroed_words(bits.div_ceil(64));
        let mask = if l == 0 { 0 } else { (1u64 << l) - 1 };
        let (mut ones, mut zeros) = (
            Vec::with_capacity(len / SAMPLE + 1),
            Vec::with_capacity(buckets / SAMPLE + 1),
        );
        // The zero closing bucket `k` lies at `k + (items in buckets ≤ k)`: every sampled one
        // from `bucket` up to (not including) the bucket of the item about to be placed.
        let mut bucket = 0usize; // the next sampled bucket whose closing zero is not placed
        for (i, t) in times.enumerate() {
            let v = (i128::from(t) - i128::from(min)) as u64;
            let b = (v >> l) as usize;
            while bucket < b {
                zeros.push(bucket + i);
                bucket += SAMPLE;
            }
            let at = b + i;
            high[at / 64] |= 1 << (at % 64);
            if i.is_multiple_of(SAMPLE) {
                ones.push(at);
            }
            if l > 0 {
                let (bit, lv) = (i * l as usize, v & mask);
                low[bit / 64] |= lv << (bit % 64);
                if bit % 64 + l as usize > 64 {
                    low[bit / 64 + 1] |= lv >> (64 - bit % 64);
                }
            }
        }
        while bucket < buckets {
            zeros.push(bucket + len);
            bucket += SAMPLE;
        }
        PackedTimes {
            len,
            min,
            span,
            l,
            low,
            high,
            zeros,
            ones,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn low(&self, i: usize) -> u64 {
        if self.l == 0 {
            return 0;
        }
        let l = self.l as usize;
        let bit = i * l;
        let mut v = self.low[bit / 64] >> (bit % 64);
        if bit % 64 + l > 64 {
            v |= self.low[bit / 64 + 1] << (64 - bit % 64);
        }
        v & ((1u64 << l) - 1)
    }

    /// The position of zero number `k` (the one closing bucket `k`).
    fn zero(&self, k: usize) -> usize {
        let from = self.zeros[k / SAMPLE];
        select(&self.high, from, k % SAMPLE, true)
    }

    /// The position of one number `i` (item `i`).
    fn one(&self, i: usize) -> usize {
        let from = self.ones[i / SAMPLE];
        select(&self.high, from, i % SAMPLE, false)
    }

    fn time_of(&self, bucket: u64, low: u64) -> i64 {
        let v = if self.l == 0 { bucket } else { (bucket << self.l) | low };
        (i128::from(self.min) + i128::from(v)) as i64
    }

    /// The items `[from, to)` whose time may equal `t`, all items before `from` being
    /// earlier than `t` and all from `to` on later; within, items are compared by their low
    /// bits with `low` (what [`PackedTimes::low_of`] returns).
    pub fn bucket_of(&self, t: i64) -> (usize, usize, u64) {
        if self.len == 0 || t < self.min {
            return (0, 0, 0);
        }
        let v = i128::from(t) - i128::from(self.min);
        if v > i128::from(self.span) {
            return (self.len, self.len, 0);
        }
        let v = v as u64;
        let b = (v >> self.l) as usize;
        // The zero closing bucket `b` is the first after the one closing bucket `b − 1`
        // (usually in the same word): one sampled select, then the next zero from there.
        let (from, to) = if b == 0 {
            (0, self.zero(0))
        } else {
            let closing = self.zero(b - 1);
            (closing + 1 - b, select(&self.high, closing + 1, 0, true) - b)
        };
        let low = if self.l == 0 { 0 } else { v & ((1u64 << self.l) - 1) };
        (from, to, low)
    }

    /// Item `i`'s low bits (compared with what [`PackedTimes::bucket_of`] returns).
    pub fn low_of(&self, i: usize) -> u64 {
        self.low(i)
    }

    /// How many items are earlier than `t`.
    pub fn lower(&self, t: i64) -> usize {
        let (from, to, low) = self.bucket_of(t);
        partition(from, to, |i| self.low(i) < low)
    }

    /// The times of items `[from, to)`, in order.
    pub fn iter(&self, from: usize, to: usize) -> impl Iterator<Item = i64> + '_ {
        let to = to.min(self.len);
        let mut at = if from < to { self.one(from) } else { 0 };
        (from..to).map(move |i| {
            // The next set bit at or after `at` is item i's.
            let mut w = at / 64;
            let mut word = self.high[w] & (!0u64 << (at % 64));
            while word == 0 {
                w += 1;
                word = self.high[w];
            }
            at = w * 64 + word.trailing_zeros() as usize;
            let t = self.time_of((at - i) as u64, self.low(i));
            at += 1;
            t
        })
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        (self.low.capacity() + self.high.capacity()) * 8 + (self.zeros.capacity() + self.ones.capacity()) * 8
    }
}

/// `n` zero words, from memory the allocator may reuse: the writer packs a merged run of an
/// index anew with every merge, and a zeroed block of 1 MiB or more would otherwise be a fresh
/// mapping whose every page the kernel clears on its first write ([`crate::heap::Allocator`]):
/// page faults on the ingest runtime, a merge's new run among them, were 7% of a backlogged
/// service's samples (`perf record`, 32 clients asking).
// Deliberately not `vec![0; n]`, which asks for a zeroed block (see above).
#[allow(clippy::slow_vector_initialization)]
fn zeroed_words(n: usize) -> Vec<u64> {
    let mut words = Vec::with_capacity(n);
    words.resize(n, 0);
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(mut times: Vec<i64>, probes: &[i64]) -> Result<(), TestCaseError> {
        times.sort_unstable();
        let packed = PackedTimes::new(times.iter().copied());
        prop_assert_eq!(packed.len(), times.len());
        for (i, t) in times.iter().enumerate() {
            prop_assert_eq!(packed.iter(i, i + 1).next(), Some(*t));
        }
        prop_assert_eq!(packed.iter(0, times.len()).collect::<Vec<_>>(), times.clone());
        if times.len() > 3 {
            let (a, b) = (times.len() / 3, 2 * times.len() / 3);
            prop_assert_eq!(packed.iter(a, b).collect::<Vec<_>>(), times[a..b].to_vec());
        }
        for p in probes.iter().chain(times.iter()) {
            for t in [p.saturating_sub(1), *p, p.saturating_add(1)] {
                prop_assert_eq!(packed.lower(t), times.partition_point(|x| *x < t), "lower({})", t);
            }
        }
        Ok(())
    }

    proptest! {
        /// Every item reads back, and a rank equals a binary search of the plain times:
        /// dense and sparse sets, duplicates, and the extremes of `i64`.
        #[test]
        fn packed_times_read_back_and_rank_like_the_plain_times(
            dense in proptest::collection::vec(0i64..5_000, 0..2_000),
            sparse in proptest::collection::vec(any::<i64>(), 0..600),
            base in any::<i32>(),
            probes in proptest::collection::vec(any::<i64>(), 10),
        ) {
            let shifted: Vec<i64> = dense.iter().map(|t| i64::from(base) * 1_000_000 + t * 997).collect();
            check(dense.clone(), &probes)?;
            check(shifted.clone(), &shifted)?;
            check(sparse, &probes)?;
            check(vec![i64::MIN, i64::MIN, 0, i64::MAX, i64::MAX], &[i64::MIN, i64::MAX, 0])?;
        }
    }
}

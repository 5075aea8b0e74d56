//! Sorted multisets that answer range counts in O(log n) and are cheap to snapshot.
//!
//! Each set is a large immutable sorted `base` plus small sorted `added` and `removed` runs,
//! all behind `Arc`s: a snapshot clones pointers, a batch of updates copies only the small
//! runs of the sets it touches, and the runs are merged into a new base once they outgrow
//! [`RUN_LEN_MIN`] or √(2·base·batch) (see `runs_len_max`; bulk loads bypass this). A rank
//! reads the base's packed times and, in each run, one entry of its index of time spans and
//! the few items of that span.

use std::sync::Arc;

use crate::packed::{partition, PackedTimes};

/// Runs shorter than this are never merged into the base.
pub const RUN_LEN_MIN: usize = 512;
/// Points per block of a [`Points`] base whose `y` values are kept sorted.
const BLOCK_POINTS: usize = 256;

/// How long the runs of a base of `base_len` items may grow, taking updates of about `batch`
/// items, before they are merged into a new base. Each update copies the runs (half this
/// bound on average) and each merge copies the base, once per bound/`batch` updates: per item,
/// bound/(2·batch) + base/bound copies, least at bound = √(2·base·batch). Updates of at least
/// 32 items are assumed (8·√base), so that a stream of single-lead batches does not rebuild
/// the base every few updates.
fn runs_len_max(base_len: usize, batch: usize) -> usize {
    RUN_LEN_MIN.max((base_len.saturating_mul(2 * batch.max(32))).isqrt())
}

/// Merges sorted `add` into sorted `into`.
fn merge<T: Ord + Copy>(into: &[T], add: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(into.len() + add.len());
    let (mut i, mut j) = (0, 0);
    while i < into.len() && j < add.len() {
        if into[i] <= add[j] {
            out.push(into[i]);
            i += 1;
        } else {
            out.push(add[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&into[i..]);
    out.extend_from_slice(&add[j..]);
    out
}

/// Sorted `from` minus the sorted multiset `remove` (each removed item must be present).
fn subtract<T: Ord + Copy>(from: &[T], remove: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(from.len().saturating_sub(remove.len()));
    let mut j = 0;
    for x in from {
        if j < remove.len() && remove[j] == *x {
            j += 1;
        } else {
            out.push(*x);
        }
    }
    debug_assert_eq!(j, remove.len(), "removed an item that was never added");
    out
}

/// The small sorted runs of items added to and removed from an immutable base, shared by
/// [`Runs`] and [`Points`]: when to merge them into a new base is decided here.
#[derive(Debug, Clone)]
struct Delta<T> {
    added: Arc<Run<T>>,
    removed: Arc<Run<T>>,
}

impl<T> Default for Delta<T> {
    fn default() -> Self {
        Delta {
            added: Arc::default(),
            removed: Arc::default(),
        }
    }
}

impl<T: Timed> Delta<T> {
    /// Takes sorted additions and removals (every removal of a present item) to a base of
    /// `base_len` items. Returns the items of the new base when the runs are to be merged into
    /// it (the runs are then empty): a set built whole (a bulk load, a restore) goes straight
    /// in; otherwise runs past `runs_len_max` are merged with `base()`'s items.
    fn update<'a>(
        &mut self,
        base_len: usize,
        base: impl FnOnce() -> Vec<T>,
        add: &'a [T],
        remove: &[T],
    ) -> Option<std::borrow::Cow<'a, [T]>> {
        if add.is_empty() && remove.is_empty() {
            return None;
        }
        let empty = base_len == 0 && self.added.is_empty() && self.removed.is_empty();
        if empty && remove.is_empty() && add.len() > RUN_LEN_MIN {
            return Some(std::borrow::Cow::Borrowed(add));
        }
        let (added, removed) = (merge(&self.added.items, add), merge(&self.removed.items, remove));
        if added.len() + removed.len() <= runs_len_max(base_len, add.len() + remove.len()) {
            self.added = Arc::new(Run::of(added));
            self.removed = Arc::new(Run::of(removed));
            return None;
        }
        let items = subtract(&merge(&base(), &added), &removed);
        *self = Delta::default();
        Some(std::borrow::Cow::Owned(items))
    }

    /// The base's items with the runs applied.
    fn apply(&self, base: &[T]) -> Vec<T> {
        subtract(&merge(base, &self.added.items), &self.removed.items)
    }

    fn bytes(&self) -> usize {
        self.added.bytes() + self.removed.bytes()
    }
}

/// Items of a run per bucket of its time index, on average: a bucket's items span one or
/// two cache lines.
const RUN_BUCKET_ITEMS: usize = 8;

/// A sorted run of items and where each of its equal time spans starts, so that a rank reads
/// one entry of that index and the few items of one span: a binary search over a run of 40 k
/// items read 15 cache lines a rank, each a miss while ingest replaces the runs every batch.
#[derive(Debug, Clone)]
struct Run<T> {
    items: Vec<T>,
    /// `starts[b]`: the first item whose time is at least `first + (b << shift)`; one entry
    /// past the last span holds `items.len()`.
    starts: Vec<u32>,
    first: i64,
    shift: u32,
}

impl<T> Default for Run<T> {
    fn default() -> Self {
        Run {
            items: Vec::new(),
            starts: Vec::new(),
            first: 0,
            shift: 0,
        }
    }
}

/// Which span of width `1 << shift` a time `after` the run's first falls in.
fn span_of(after: u64, shift: u32) -> u64 {
    after.checked_shr(shift).unwrap_or(0)
}

impl<T: Timed> Run<T> {
    /// `items` must be sorted.
    fn of(items: Vec<T>) -> Run<T> {
        let (Some(first), Some(last)) = (items.first(), items.last()) else {
            return Run::default();
        };
        let (first, span) = (first.time(), last.time().wrapping_sub(first.time()) as u64);
        let spans = (items.len() / RUN_BUCKET_ITEMS).max(1) as u64;
        // The least power-of-two width that cuts the times into at most `spans` + 1 spans.
        let mut shift = 0;
        while span_of(span, shift) >= spans {
            shift += 1;
        }
        let mut starts = Vec::with_capacity(span_of(span, shift) as usize + 2);
        for (i, item) in items.iter().enumerate() {
            let b = span_of(item.time().wrapping_sub(first) as u64, shift) as usize;
            while starts.len() <= b {
                starts.push(i as u32);
            }
        }
        starts.push(items.len() as u32);
        Run {
            items,
            starts,
            first,
            shift,
        }
    }

    /// How many items are `< x`.
    fn lower(&self, x: &T) -> usize {
        let t = x.time();
        if self.items.is_empty() || t < self.first {
            return 0;
        }
        let b = span_of(t.wrapping_sub(self.first) as u64, self.shift) as usize;
        // `starts` holds at least the first span's start and the end.
        if b >= self.starts.len() - 1 {
            return self.items.len();
        }
        // Items before span `b` have earlier times than `x`, items after it later ones.
        let (from, to) = (self.starts[b] as usize, self.starts[b + 1] as usize);
        from + self.items[from..to].partition_point(|e| e < x)
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn bytes(&self) -> usize {
        self.items.capacity() * std::mem::size_of::<T>() + self.starts.capacity() * 4
    }
}

/// Items ordered by a time first, then by the rest: what a [`Base`] packs apart.
pub trait Timed: Ord + Copy {
    type Rest: Ord + Copy + std::fmt::Debug;
    fn time(&self) -> i64;
    fn rest(&self) -> Self::Rest;
    fn join(time: i64, rest: Self::Rest) -> Self;
}

impl Timed for i64 {
    type Rest = ();
    fn time(&self) -> i64 {
        *self
    }
    fn rest(&self) {}
    fn join(time: i64, _: ()) -> i64 {
        time
    }
}

impl Timed for (i64, u32) {
    type Rest = u32;
    fn time(&self) -> i64 {
        self.0
    }
    fn rest(&self) -> u32 {
        self.1
    }
    fn join(time: i64, rest: u32) -> (i64, u32) {
        (time, rest)
    }
}

/// A sorted, immutable run of items: their times packed ([`PackedTimes`], about 30 bits an
/// item instead of 64), the rest of each item (a lead number, a seq, whole days) beside them.
#[derive(Debug, Clone)]
pub struct Base<T: Timed> {
    times: PackedTimes,
    rest: Vec<T::Rest>,
}

impl<T: Timed> Default for Base<T> {
    fn default() -> Self {
        Base {
            times: PackedTimes::default(),
            rest: Vec::new(),
        }
    }
}

impl<T: Timed> Base<T> {
    /// `items` must be sorted.
    pub fn of(items: &[T]) -> Base<T> {
        Base {
            times: PackedTimes::new(items.iter().map(Timed::time)),
            rest: items.iter().map(Timed::rest).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// How many items are `< x`.
    pub fn lower(&self, x: &T) -> usize {
        let (from, to, low) = self.times.bucket_of(x.time());
        let rest = x.rest();
        partition(from, to, |i| {
            let l = self.times.low_of(i);
            l < low || (l == low && self.rest[i] < rest)
        })
    }

    /// The rest of every item, in order.
    pub fn rest(&self) -> &[T::Rest] {
        &self.rest
    }

    /// Items `[from, to)`, in order.
    pub fn iter(&self, from: usize, to: usize) -> impl Iterator<Item = T> + '_ {
        self.times
            .iter(from, to)
            .zip(&self.rest[from..to.min(self.rest.len())])
            .map(|(t, r)| T::join(t, *r))
    }

    pub fn items(&self) -> Vec<T> {
        self.iter(0, self.len()).collect()
    }

    pub fn bytes(&self) -> usize {
        self.times.bytes() + self.rest.capacity() * std::mem::size_of::<T::Rest>()
    }
}

/// A sorted multiset of `T` with a delta of added and removed items.
#[derive(Debug, Clone)]
pub struct Runs<T: Timed> {
    base: Arc<Base<T>>,
    delta: Delta<T>,
}

impl<T: Timed> Default for Runs<T> {
    fn default() -> Self {
        Runs {
            base: Arc::default(),
            delta: Delta::default(),
        }
    }
}

impl<T: Timed> Runs<T> {
    /// Applies sorted additions and removals (every removal must be of a present item).
    pub fn update(&mut self, add: &[T], remove: &[T]) {
        let base = &self.base;
        if let Some(items) = self.delta.update(base.len(), || base.items(), add, remove) {
            self.base = Arc::new(Base::of(&items));
        }
    }

    /// How many items are `< x`.
    pub fn rank(&self, x: &T) -> usize {
        self.base.lower(x) + self.delta.added.lower(x) - self.delta.removed.lower(x)
    }

    /// How many items are in `[lo, hi)`.
    pub fn count(&self, lo: &T, hi: &T) -> usize {
        if lo >= hi {
            return 0;
        }
        self.rank(hi) - self.rank(lo)
    }

    pub fn len(&self) -> usize {
        self.base.len() + self.delta.added.len() - self.delta.removed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every item in `[lo, hi)`, in no particular order.
    pub fn range(&self, lo: &T, hi: &T) -> Vec<T> {
        if lo >= hi {
            return Vec::new();
        }
        let slice = |r: &Run<T>| -> Vec<T> { r.items[r.lower(lo)..r.lower(hi)].to_vec() };
        let base: Vec<T> = self.base.iter(self.base.lower(lo), self.base.lower(hi)).collect();
        let items = merge(&base, &slice(&self.delta.added));
        subtract(&items, &slice(&self.delta.removed))
    }

    /// Every item, sorted.
    pub fn items(&self) -> Vec<T> {
        self.delta.apply(&self.base.items())
    }

    /// Bytes held (for the memory breakdown).
    pub fn bytes(&self) -> usize {
        self.base.bytes() + self.delta.bytes()
    }
}

/// A point of a two-dimensional count: `x` a time, `y` a small value (whole days, or a seq
/// stamp). 12 bytes: a tuple `(i64, u32)` takes 16 with its padding, and the history and the
/// cohort indexes hold tens of millions of points. Ordered by `x`, then `y`; serialised as the
/// tuple `(x, y)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(C, packed(4))]
pub struct Point(pub i64, pub u32);

impl serde::Serialize for Point {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.0, self.1).serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Point {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Point, D::Error> {
        <(i64, u32)>::deserialize(d).map(|(x, y)| Point(x, y))
    }
}

impl Timed for Point {
    type Rest = u32;
    fn time(&self) -> i64 {
        self.0
    }
    fn rest(&self) -> u32 {
        self.1
    }
    fn join(time: i64, rest: u32) -> Point {
        Point(time, rest)
    }
}

/// Points sorted by `x`, answering "how many with `x` in `[lo, hi)` and `y ≤ c`".
/// The base keeps its `x` packed ([`PackedTimes`]) and, per block of [`BLOCK_POINTS`], its
/// `y` values sorted ([`BlockYs`]) with each one's place in the block (a byte): a count is two
/// ranks on `x`, one search per whole block on `y` ([`BlockYs::at_most`]), and a walk of the
/// two partial blocks' sorted `y` picking the places inside the range. About 7 bytes a point (at 1 M
/// leads) where `(x, y)` and a sorted copy of `y` took 16.
#[derive(Debug, Clone, Default)]
pub struct Points {
    base: Arc<PointsBase>,
    delta: Delta<Point>,
}

/// The immutable base of [`Points`].
#[derive(Debug, Clone, Default)]
struct PointsBase {
    xs: PackedTimes,
    /// Per block, its points' `y` sorted.
    ys: BlockYs,
    /// `places[k]`: where the point of `ys[k]` is in its block, in `x` order.
    places: Vec<u8>,
}

/// Sorted runs of `y` values, one per block of [`BLOCK_POINTS`], each kept as differences
/// from its least value in as many bits as its largest difference needs: a block of whole
/// days needs 9 bits or fewer, a block of seq stamps 16 to 23 (in the simulated 4.5 M-event
/// log, whose events come lead by lead), where a `u32` took 32. Every [`Y_SAMPLE`]th value
/// is kept whole beside them too: a count searches those (a slice of `u32`) and then scans at
/// most 15 packed values, reads that do not wait on each other, where a binary search over
/// the packed values took twice the time of the plain `u32`s' (`funnel?at_seq`).
#[derive(Debug, Clone, Default)]
struct BlockYs {
    blocks: Vec<YBlock>,
    /// The differences, little-endian bit order, with 8 spare bytes at the end.
    bits: Vec<u8>,
    /// Per block, its values at `Y_SAMPLE`, `2 * Y_SAMPLE`, …
    samples: Vec<u32>,
    len: usize,
    end_bit: u64,
}

/// How many blocks ahead a count's walk asks for memory ([`BlockYs::prefetch`]).
const PREFETCH_BLOCKS: usize = 8;

/// Every how many values of a block one is kept whole.
const Y_SAMPLE: usize = 16;

#[derive(Debug, Clone, Copy)]
struct YBlock {
    /// Bit position of the block's first difference in `bits`.
    first_bit: u64,
    least: u32,
    most: u32,
    width: u32,
    /// Where the block's samples start in `samples`.
    first_sample: u32,
}

impl BlockYs {
    /// Appends the next block (sorted, at most [`BLOCK_POINTS`] values).
    fn push_block(&mut self, ys: &[u32]) {
        let least = ys.first().copied().unwrap_or(0);
        let most = ys.last().copied().unwrap_or(0);
        let width = u32::BITS - (most - least).leading_zeros();
        let first_bit = self.end_bit;
        self.blocks.push(YBlock {
            first_bit,
            least,
            most,
            width,
            first_sample: self.samples.len() as u32,
        });
        self.samples.extend(ys.iter().skip(Y_SAMPLE).step_by(Y_SAMPLE));
        self.end_bit += u64::from(width) * ys.len() as u64;
        // 8 spare bytes past the last one written (see `offset`).
        self.bits.resize(self.end_bit.div_ceil(8) as usize + 8, 0);
        for (i, y) in ys.iter().enumerate() {
            let at = first_bit + i as u64 * u64::from(width);
            let (byte, off) = ((at / 8) as usize, at % 8);
            let value = u64::from(y - least) << off;
            for (k, b) in self.bits[byte..byte + 8].iter_mut().enumerate() {
                *b |= (value >> (8 * k)) as u8;
            }
        }
        self.len += ys.len();
    }

    fn block_len(&self, b: usize) -> usize {
        if b + 1 < self.blocks.len() {
            BLOCK_POINTS
        } else {
            self.len - b * BLOCK_POINTS
        }
    }

    /// The `i`-th value of block `b`.
    fn get(&self, b: usize, i: usize) -> u32 {
        let block = &self.blocks[b];
        block.least + self.offset(block, i)
    }

    /// The `i`-th difference of `block`: one unaligned 8-byte read whatever the width and
    /// place (`bits` ends with 8 spare bytes; a width of 32 at bit 7 takes 39).
    fn offset(&self, block: &YBlock, i: usize) -> u32 {
        let at = block.first_bit + i as u64 * u64::from(block.width);
        let (byte, off) = ((at / 8) as usize, at % 8);
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.bits[byte..byte + 8]);
        ((u64::from_le_bytes(word) >> off) & ((1u64 << block.width) - 1)) as u32
    }

    /// How many values of block `b` are `≤ c` (none past the last block).
    fn at_most(&self, b: usize, c: u32) -> usize {
        let Some(block) = self.blocks.get(b) else {
            return 0;
        };
        if c < block.least {
            return 0;
        }
        let n = self.block_len(b);
        if c >= block.most {
            return n;
        }
        // The last sample at most `c` (the block's first value, `least`, when none is), then
        // the packed values up to the next sample.
        let first = block.first_sample as usize;
        let samples = &self.samples[first..first + (n - 1) / Y_SAMPLE];
        let k = samples.partition_point(|y| *y <= c);
        let c = c - block.least;
        let below = (Y_SAMPLE * k + 1..(Y_SAMPLE * (k + 1)).min(n))
            .map(|i| usize::from(self.offset(block, i) <= c))
            .sum::<usize>();
        Y_SAMPLE * k + 1 + below
    }

    /// Asks the processor to fetch block `b`'s samples and the middle of its values, so that
    /// a walk over blocks does not wait for each one's memory in turn (the values' places in
    /// `bits` vary with each block's width, which the processor's own prefetching cannot
    /// follow: without this a count took 1.8 times as long as over plain `u32`s).
    fn prefetch(&self, b: usize) {
        #[cfg(target_arch = "x86_64")]
        if let Some(block) = self.blocks.get(b) {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let sample = self.samples.as_ptr().wrapping_add(block.first_sample as usize);
            // SAFETY: a prefetch is a hint: it reads nothing the program sees and never
            // faults, whatever the address.
            unsafe { _mm_prefetch(sample as *const i8, _MM_HINT_T0) };
            for quarter in 1..4 {
                let at = (block.first_bit + u64::from(block.width) * (quarter * BLOCK_POINTS as u64 / 4)) / 8;
                let bits = self.bits.as_ptr().wrapping_add(at as usize);
                // SAFETY: as above.
                unsafe { _mm_prefetch(bits as *const i8, _MM_HINT_T0) };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = b;
    }

    fn bytes(&self) -> usize {
        self.blocks.capacity() * std::mem::size_of::<YBlock>() + self.bits.capacity() + self.samples.capacity() * 4
    }
}

impl PointsBase {
    /// `points` must be sorted.
    fn of(points: &[Point]) -> PointsBase {
        let mut ys = BlockYs::default();
        // Room for exactly what the blocks take, so nothing grows by doubling.
        let (mut bits, mut samples) = (0u64, 0);
        for chunk in points.chunks(BLOCK_POINTS) {
            let (least, most) = chunk.iter().fold((u32::MAX, 0), |(l, m), p| (l.min(p.1), m.max(p.1)));
            bits += u64::from(u32::BITS - (most - least).leading_zeros()) * chunk.len() as u64;
            samples += (chunk.len() - 1) / Y_SAMPLE;
        }
        ys.bits.reserve_exact(bits.div_ceil(8) as usize + 8);
        ys.samples.reserve_exact(samples);
        ys.blocks.reserve_exact(points.len().div_ceil(BLOCK_POINTS));
        let mut places = Vec::with_capacity(points.len());
        let mut block: Vec<(u32, u8)> = Vec::with_capacity(BLOCK_POINTS);
        let mut sorted: Vec<u32> = Vec::with_capacity(BLOCK_POINTS);
        for chunk in points.chunks(BLOCK_POINTS) {
            block.clear();
            block.extend(chunk.iter().enumerate().map(|(i, p)| (p.1, i as u8)));
            block.sort_unstable();
            sorted.clear();
            sorted.extend(block.iter().map(|(y, _)| *y));
            ys.push_block(&sorted);
            places.extend(block.iter().map(|(_, i)| *i));
        }
        PointsBase {
            xs: PackedTimes::new(points.iter().map(|p| p.0)),
            ys,
            places,
        }
    }

    fn len(&self) -> usize {
        self.xs.len()
    }

    /// The points, sorted.
    fn items(&self) -> Vec<Point> {
        let mut out: Vec<Point> = self.xs.iter(0, self.len()).map(|x| Point(x, 0)).collect();
        for (b, block) in out.chunks_mut(BLOCK_POINTS).enumerate() {
            let from = b * BLOCK_POINTS;
            for i in 0..block.len() {
                block[usize::from(self.places[from + i])].1 = self.ys.get(b, i);
            }
        }
        out
    }

    fn bytes(&self) -> usize {
        self.xs.bytes() + self.ys.bytes() + self.places.capacity()
    }
}

impl Points {
    /// Points already sorted.
    pub fn from_sorted(points: Vec<Point>) -> Points {
        Points {
            base: Arc::new(PointsBase::of(&points)),
            delta: Delta::default(),
        }
    }

    pub fn update(&mut self, add: &[Point], remove: &[Point]) {
        let base = &self.base;
        if let Some(points) = self.delta.update(base.len(), || base.items(), add, remove) {
            self.base = Arc::new(PointsBase::of(&points));
        }
    }

    /// How many points have `lo ≤ x < hi` and `y ≤ c`.
    pub fn count(&self, lo: i64, hi: i64, c: u32) -> usize {
        if lo >= hi {
            return 0;
        }
        let in_run = |r: &Run<Point>| {
            let run = &r.items[r.lower(&Point(lo, 0))..r.lower(&Point(hi, 0))];
            // Every `y` is at most `u32::MAX`: no need to read the points (a run holds a
            // batch's worth of points, a wide window most of them).
            if c == u32::MAX {
                run.len()
            } else {
                run.iter().filter(|p| p.1 <= c).count()
            }
        };
        let base = &self.base;
        let (i, j) = (base.xs.lower(lo), base.xs.lower(hi));
        let mut n = 0;
        if c == u32::MAX {
            n = j - i;
        } else {
            // The points of block `b` at places `[from, to)` with `y ≤ c`.
            let partial = |b: usize, from: usize, to: usize| {
                let start = b * BLOCK_POINTS;
                (0..base.ys.at_most(b, c))
                    .filter(|i| (from..to).contains(&usize::from(base.places[start + i])))
                    .count()
            };
            let (bi, bj) = (i / BLOCK_POINTS, j / BLOCK_POINTS);
            if bi == bj {
                n += partial(bi, i % BLOCK_POINTS, j % BLOCK_POINTS);
            } else {
                n += partial(bi, i % BLOCK_POINTS, BLOCK_POINTS);
                if j % BLOCK_POINTS > 0 {
                    n += partial(bj, 0, j % BLOCK_POINTS);
                }
                for b in bi + 1..bj {
                    base.ys.prefetch(b + PREFETCH_BLOCKS);
                    n += base.ys.at_most(b, c);
                }
            }
        }
        n + in_run(&self.delta.added) - in_run(&self.delta.removed)
    }

    /// Every point, sorted.
    pub fn items(&self) -> Vec<Point> {
        self.delta.apply(&self.base.items())
    }

    pub fn bytes(&self) -> usize {
        self.base.bytes() + self.delta.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Blocks of any widths (0 to 32 bits, across word boundaries) read back as written,
        /// and `at_most` counts like a scan.
        #[test]
        fn block_ys_read_back_what_was_written(
            blocks in proptest::collection::vec(
                (any::<u32>(), 0u32..=32, proptest::collection::vec(any::<u32>(), 1..=BLOCK_POINTS)),
                1..12,
            ),
            cs in proptest::collection::vec(any::<u32>(), 8),
        ) {
            let mut ys = BlockYs::default();
            let mut written = Vec::new();
            for (i, (least, width, raw)) in blocks.iter().enumerate() {
                let mask = if *width == 32 { u32::MAX } else { (1u32 << width) - 1 };
                let mut block: Vec<u32> = raw.iter().map(|r| least.saturating_add(r & mask)).collect();
                // Every block but the last is full.
                if i + 1 < blocks.len() {
                    block.resize(BLOCK_POINTS, *least);
                }
                block.sort_unstable();
                ys.push_block(&block);
                written.push(block);
            }
            for (b, block) in written.iter().enumerate() {
                for (i, y) in block.iter().enumerate() {
                    prop_assert_eq!(ys.get(b, i), *y);
                }
                for c in cs.iter().chain(block.iter()) {
                    prop_assert_eq!(ys.at_most(b, *c), block.partition_point(|y| y <= c));
                }
            }
            prop_assert_eq!(ys.at_most(written.len(), u32::MAX), 0);
        }

        /// A run's rank equals a binary search's, whatever the spread of its times: clustered,
        /// equal, or across the whole range of `i64`.
        #[test]
        fn run_rank_like_a_binary_search(
            times in proptest::collection::vec(
                prop_oneof![0i64..50, any::<i64>(), (0i64..1000).prop_map(|t| t * 1_000_000_007)],
                0..600,
            ),
            rests in proptest::collection::vec(0u32..4, 600),
            probes in proptest::collection::vec((any::<i64>(), 0u32..5), 40),
        ) {
            let mut items: Vec<(i64, u32)> = times.iter().zip(&rests).map(|(t, r)| (*t, *r)).collect();
            items.sort_unstable();
            let run = Run::of(items.clone());
            let near = items.iter().flat_map(|&(t, r)| [(t, r), (t.saturating_add(1), 0), (t.saturating_sub(1), 9)]);
            for x in probes.into_iter().chain([(i64::MIN, 0), (i64::MAX, u32::MAX)]).chain(near) {
                prop_assert_eq!(run.lower(&x), items.partition_point(|e| *e < x), "at {:?}", x);
            }
        }

        /// Runs at the ends of time: every item at `i64::MIN` (a width of one micro) and a probe
        /// at `i64::MAX`, the widest distance there is.
        #[test]
        fn run_rank_at_the_ends_of_time(n in 1usize..40, rest in 0u32..3) {
            let items: Vec<(i64, u32)> = vec![(i64::MIN, rest); n];
            let run = Run::of(items.clone());
            for x in [(i64::MIN, 0), (i64::MIN, rest), (i64::MIN, u32::MAX), (i64::MAX, 0), (0, 0)] {
                prop_assert_eq!(run.lower(&x), items.partition_point(|e| *e < x), "at {:?}", x);
            }
        }

        /// Counts equal a brute-force count over the same multiset, whatever the update order.
        #[test]
        fn points_count_like_a_scan(
            ops in proptest::collection::vec((0i64..2000, 0u32..50, any::<bool>()), 1..3000),
            queries in proptest::collection::vec((0i64..2100, 0i64..2100, 0u32..60), 20),
        ) {
            let mut points = Points::default();
            let mut model: Vec<Point> = Vec::new();
            for chunk in ops.chunks(37) {
                let mut add = Vec::new();
                let mut remove = Vec::new();
                for &(x, y, is_add) in chunk {
                    if !is_add {
                        if let Some(i) = model.iter().position(|p| *p == Point(x / 2, y)) {
                            model.swap_remove(i);
                            remove.push(Point(x / 2, y));
                            continue;
                        }
                    }
                    model.push(Point(x / 2, y));
                    add.push(Point(x / 2, y));
                }
                add.sort_unstable();
                remove.sort_unstable();
                points.update(&add, &remove);
            }
            for (a, b, c) in queries {
                let (lo, hi) = (a.min(b), a.max(b));
                let expected = model.iter().filter(|p| { let (x, y) = (p.0, p.1); x >= lo && x < hi && y <= c }).count();
                prop_assert_eq!(points.count(lo, hi, c), expected);
                let all = model.iter().filter(|p| { let x = p.0; x >= lo && x < hi }).count();
                prop_assert_eq!(points.count(lo, hi, u32::MAX), all);
            }
        }
    }
}

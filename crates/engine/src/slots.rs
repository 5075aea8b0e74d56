//! Every lead's slot, encoded: about 50 bytes a lead instead of a 144-byte struct and two
//! boxes (its touches and its lead index).
//!
//! A slot is written as varints relative to the lead's latest event: most of a lead's times
//! are days or hours before it, so each takes 4 to 6 bytes instead of 8, and a milestone not
//! reached takes no byte at all (one bit says which are). The encoding, in order:
//!
//! - `flags`: the stage (bits 0–3) and how the score is kept (bits 4–5: none, an integer as a
//!   varint, or the 8 bytes of the `f64`); `present`: one bit per milestone reached, bit 7 the
//!   first touch;
//! - `last_at` (zigzag varint), then `last_at − t` (zigzag) for each present milestone and the
//!   first touch, then the score, then channel, campaign, producer and owner (varints);
//! - the touches: their byte length, their count, then per touch `last_at − at` and its
//!   channel;
//! - the lead index ([`crate::facts::filed`]'s bytes) to the end.
//!
//! Leads are kept in copy-on-write pages of [`PAGE_LEADS`]: a snapshot clones page pointers,
//! and a batch rewrites each page it changes once. A lead's handoffs, rejections and deals
//! (the rare [`Extra`]) stay shared behind an `Arc` beside the bytes.

use std::sync::Arc;

use funnel_core::lead::Stage;
use funnel_core::time::Micros;

use crate::facts::{Extra, Facts, LeadSlot, Touch, NEVER};

/// Leads per copy-on-write page.
pub const PAGE_LEADS: usize = 256;
// A lead's place in its page is kept in a byte.
const _: () = assert!(PAGE_LEADS <= 256);

const STAGES: [Stage; 8] = [
    Stage::Inquiry,
    Stage::Mql,
    Stage::Sal,
    Stage::Sql,
    Stage::Opportunity,
    Stage::Won,
    Stage::Lost,
    Stage::Nurture,
];
const SCORE_NONE: u8 = 0;
const SCORE_INTEGER: u8 = 1;
const SCORE_BITS: u8 = 2;

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_signed(out: &mut Vec<u8>, v: i64) {
    put(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Reads encoded slots (written by [`encode`] in this process: never outside input).
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    fn get(&mut self) -> u64 {
        let (mut v, mut shift) = (0u64, 0u32);
        loop {
            let b = self.byte();
            v |= u64::from(b & 0x7f) << shift.min(63);
            if b & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }
    fn get_signed(&mut self) -> i64 {
        let v = self.get();
        ((v >> 1) as i64) ^ -((v & 1) as i64)
    }
}

/// Appends `slot`'s encoding to `out` (its `extra` is kept beside, not encoded).
fn encode(slot: &LeadSlot, out: &mut Vec<u8>) {
    let f = &slot.facts;
    let score = f.score;
    let as_integer = score as i64;
    let (kind, integer) = if score.to_bits() == f64::NAN.to_bits() {
        (SCORE_NONE, 0)
    } else if (as_integer as f64).to_bits() == score.to_bits() {
        (SCORE_INTEGER, as_integer)
    } else {
        (SCORE_BITS, 0)
    };
    out.push(f.stage as u8 | (kind << 4));
    let mut present = 0u8;
    for (m, t) in f.milestones.iter().enumerate() {
        if *t != NEVER {
            present |= 1 << m;
        }
    }
    if f.source_at != NEVER {
        present |= 1 << 7;
    }
    out.push(present);
    let last = slot.last_at;
    put_signed(out, last);
    for t in f.milestones.iter().chain([&f.source_at]).filter(|t| **t != NEVER) {
        put_signed(out, last.wrapping_sub(*t));
    }
    match kind {
        SCORE_INTEGER => put_signed(out, integer),
        SCORE_BITS => out.extend_from_slice(&score.to_bits().to_le_bytes()),
        _ => {}
    }
    for sym in [f.channel, f.campaign, f.producer, f.owner] {
        put(out, u64::from(sym));
    }
    let mut touches = Vec::with_capacity(slot.touches.len() * 6 + 2);
    put(&mut touches, slot.touches.len() as u64);
    for t in slot.touches.iter() {
        put_signed(&mut touches, last.wrapping_sub(t.at));
        put(&mut touches, u64::from(t.channel));
    }
    put(out, touches.len() as u64);
    out.extend_from_slice(&touches);
    out.extend_from_slice(&slot.filed);
}

/// One lead read in place: its fixed facts decoded, its touches and lead index borrowed.
#[derive(Debug, Clone, Copy)]
pub struct SlotView<'a> {
    pub facts: Facts,
    /// Time of the lead's latest live event ([`Micros::MIN`] with none).
    pub last_at: Micros,
    /// The handoffs, rejections and deals, encoded ([`Extra::encode`]).
    extra: Option<&'a [u8]>,
    /// The lead index, as [`crate::facts::filed`] encodes it.
    pub filed: &'a [u8],
    touches: &'a [u8],
    encoded: &'a [u8],
}

impl<'a> SlotView<'a> {
    fn decode(bytes: &'a [u8], extra: Option<&'a [u8]>) -> SlotView<'a> {
        let mut r = Reader { bytes, at: 0 };
        let flags = r.byte();
        let present = r.byte();
        let last_at = r.get_signed();
        let mut facts = Facts::EMPTY;
        facts.stage = STAGES[usize::from(flags & 0x0f) % STAGES.len()];
        for m in 0..7 {
            if present & (1 << m) != 0 {
                facts.milestones[m] = last_at.wrapping_sub(r.get_signed());
            }
        }
        if present & (1 << 7) != 0 {
            facts.source_at = last_at.wrapping_sub(r.get_signed());
        }
        facts.score = match (flags >> 4) & 3 {
            SCORE_INTEGER => r.get_signed() as f64,
            SCORE_BITS => {
                let mut b = [0u8; 8];
                for x in &mut b {
                    *x = r.byte();
                }
                f64::from_bits(u64::from_le_bytes(b))
            }
            _ => f64::NAN,
        };
        let mut sym = || u32::try_from(r.get()).unwrap_or(u32::MAX);
        (facts.channel, facts.campaign, facts.producer, facts.owner) = (sym(), sym(), sym(), sym());
        let len = r.get() as usize;
        let touches = bytes.get(r.at..r.at + len).unwrap_or_default();
        let filed = bytes.get(r.at + len..).unwrap_or_default();
        SlotView {
            facts,
            last_at,
            extra,
            filed,
            touches,
            encoded: bytes,
        }
    }

    /// The lead's handoffs, rejections and deals, if it has any.
    pub fn extra(&self) -> Option<Extra> {
        let decoded = Extra::decode(self.extra?);
        debug_assert!(decoded.is_ok(), "a page holds extras it encoded or checked");
        decoded.ok()
    }

    /// [`Self::extra`] as the page holds it (what [`Slots::push_encoded`] takes back).
    pub fn extra_encoded(&self) -> Option<&'a [u8]> {
        self.extra
    }

    /// The live touches in `(at, seq)` order.
    pub fn touches(&self) -> impl ExactSizeIterator<Item = Touch> + 'a {
        let mut r = Reader {
            bytes: self.touches,
            at: 0,
        };
        let count = r.get() as usize;
        let last_at = self.last_at;
        (0..count).map(move |_| {
            let at = last_at.wrapping_sub(r.get_signed());
            let channel = u32::try_from(r.get()).unwrap_or(u32::MAX);
            Touch { at, channel }
        })
    }

    /// The slot's encoding (what [`Slots::push_encoded`] takes back).
    pub fn encoded(&self) -> &'a [u8] {
        self.encoded
    }

    /// Bytes the touches take in the encoding.
    pub fn touch_bytes(&self) -> usize {
        self.touches.len()
    }

    /// The slot as an owned value.
    pub fn to_slot(&self) -> LeadSlot {
        LeadSlot {
            facts: self.facts,
            last_at: self.last_at,
            touches: self.touches().collect(),
            extra: self.extra().map(Arc::new),
            filed: self.filed.into(),
        }
    }
}

/// The leads of one page.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// `ends[i]`: where lead `i`'s encoding ends in `bytes`.
    ends: Vec<u32>,
    bytes: Vec<u8>,
    /// The page's leads that have an `Extra` (about one in five), by place in the page, each
    /// with where its encoding ends in `extra_bytes`.
    extras: Vec<(u8, u32)>,
    extra_bytes: Vec<u8>,
}

impl Page {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<SlotView<'_>> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some(SlotView::decode(&self.bytes[start..end], self.extra(i)))
    }

    pub fn iter(&self) -> impl Iterator<Item = SlotView<'_>> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    fn extra(&self, i: usize) -> Option<&[u8]> {
        let at = self.extras.binary_search_by_key(&(i as u8), |(place, _)| *place).ok()?;
        let start = if at == 0 { 0 } else { self.extras[at - 1].1 as usize };
        self.extra_bytes.get(start..self.extras[at].1 as usize)
    }

    fn push_extra(&mut self, extra: Option<&[u8]>) {
        if let Some(extra) = extra {
            self.extra_bytes.extend_from_slice(extra);
            // A page holds at most 256 leads: every place fits a byte.
            self.extras.push((
                (self.ends.len() - 1) as u8,
                u32::try_from(self.extra_bytes.len()).expect("a page of extras past 4 GiB"),
            ));
        }
    }

    fn push(&mut self, slot: &LeadSlot) {
        encode(slot, &mut self.bytes);
        self.ends
            .push(u32::try_from(self.bytes.len()).expect("a page of slots past 4 GiB"));
        self.push_extra(slot.extra.as_ref().map(|e| e.encode()).as_deref());
    }

    fn push_encoded(&mut self, encoded: &[u8], extra: Option<&[u8]>) {
        self.bytes.extend_from_slice(encoded);
        self.ends
            .push(u32::try_from(self.bytes.len()).expect("a page of slots past 4 GiB"));
        self.push_extra(extra);
    }

    /// Gives the page's buffers allocations of their own size once it is full.
    fn fit(&mut self) {
        fit(&mut self.bytes);
        fit(&mut self.extras);
        fit(&mut self.extra_bytes);
    }

    /// Bytes the encoded extras and their places take.
    fn extra_bytes(&self) -> usize {
        self.extras.capacity() * 8 + self.extra_bytes.capacity()
    }

    fn bytes(&self) -> usize {
        self.ends.capacity() * 4 + self.bytes.capacity() + self.extra_bytes()
    }
}

/// Gives a full page's buffer an allocation of its own size. Not `shrink_to_fit`: mimalloc
/// shrinks a block in place while the new size is at least half the old, so a page that grew
/// past its reservation (12 KiB doubled to 24 KiB) and then shrank to its 13 KiB kept all
/// 24: at 1 M leads the pages held 97 MB for 54 MB of bytes (`mi_usable_size` against the
/// sizes asked for), 5 to 11 MB of it resident.
fn fit<T: Copy>(buffer: &mut Vec<T>) {
    if buffer.capacity() > buffer.len() {
        *buffer = buffer.as_slice().to_vec();
    }
}

/// Every lead's slot, in copy-on-write pages.
#[derive(Debug, Clone, Default)]
pub struct Slots {
    pages: Vec<Arc<Page>>,
    len: usize,
}

impl Slots {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, no: usize) -> Option<SlotView<'_>> {
        self.pages.get(no / PAGE_LEADS)?.get(no % PAGE_LEADS)
    }

    pub fn iter(&self) -> impl Iterator<Item = SlotView<'_>> + '_ {
        self.pages.iter().flat_map(|p| p.iter())
    }

    /// The numbers of the leads with handoffs, rejections or deals, in order, without
    /// decoding any slot.
    pub fn with_extra(&self) -> impl Iterator<Item = usize> + '_ {
        self.pages
            .iter()
            .enumerate()
            .flat_map(|(p, page)| (page.extras.iter()).map(move |(place, _)| p * PAGE_LEADS + usize::from(*place)))
    }

    /// Pages themselves, for splitting work between threads.
    pub fn pages(&self) -> &[Arc<Page>] {
        &self.pages
    }

    pub fn push(&mut self, slot: &LeadSlot) {
        self.last_page().push(slot);
        self.pushed();
    }

    /// Adds the leads of `other` after these (whole pages moved when these fill whole pages).
    pub fn append(&mut self, other: Slots) {
        if self.len.is_multiple_of(PAGE_LEADS) {
            self.len += other.len;
            self.pages.extend(other.pages);
        } else {
            for slot in other.iter() {
                self.push_encoded(slot.encoded(), slot.extra_encoded());
            }
        }
    }

    /// Adds a lead from its encoding, as [`SlotView::encoded`] gave it (a checkpoint's).
    pub fn push_encoded(&mut self, encoded: &[u8], extra: Option<&[u8]>) {
        self.last_page().push_encoded(encoded, extra);
        self.pushed();
    }

    /// The page the next lead goes to.
    fn last_page(&mut self) -> &mut Page {
        if self.len.is_multiple_of(PAGE_LEADS) {
            self.pages.push(Arc::default());
        }
        let last = self.pages.len() - 1;
        let page = Arc::make_mut(&mut self.pages[last]);
        if page.is_empty() {
            // The page's bytes, sized once for a page of average slots.
            page.bytes.reserve(PAGE_LEADS * 48);
            page.ends.reserve_exact(PAGE_LEADS);
        }
        page
    }

    fn pushed(&mut self) {
        self.len += 1;
        if self.len.is_multiple_of(PAGE_LEADS) {
            if let Some(last) = self.pages.last_mut() {
                Arc::make_mut(last).fit();
            }
        }
    }

    /// Replaces the slots of existing leads (`changes` sorted by lead number, each at most
    /// once), rewriting each page it touches once.
    pub fn replace(&mut self, changes: &[(usize, LeadSlot)]) {
        for same_page in changes.chunk_by(|a, b| a.0 / PAGE_LEADS == b.0 / PAGE_LEADS) {
            let p = same_page[0].0 / PAGE_LEADS;
            let old = &self.pages[p];
            let mut page = Page {
                ends: Vec::with_capacity(old.ends.capacity()),
                bytes: Vec::with_capacity(old.bytes.len() + 64 * same_page.len()),
                extras: Vec::with_capacity(old.extras.len() + same_page.len()),
                extra_bytes: Vec::with_capacity(old.extra_bytes.len() + 40 * same_page.len()),
            };
            let mut next = same_page.iter().peekable();
            for i in 0..old.len() {
                match next.next_if(|(no, _)| no % PAGE_LEADS == i) {
                    Some((_, slot)) => page.push(slot),
                    None => {
                        let start = if i == 0 { 0 } else { old.ends[i - 1] as usize };
                        page.bytes.extend_from_slice(&old.bytes[start..old.ends[i] as usize]);
                        page.ends.push(page.bytes.len() as u32);
                        page.push_extra(old.extra(i));
                    }
                }
            }
            if page.len() == PAGE_LEADS {
                page.fit();
            }
            self.pages[p] = Arc::new(page);
        }
    }

    /// Bytes the leads' encoded extras and their places take.
    pub fn extra_bytes(&self) -> usize {
        self.pages.iter().map(|p| p.extra_bytes()).sum()
    }

    /// Bytes held: pages, their offsets and encoded extras.
    pub fn bytes(&self) -> usize {
        self.pages.iter().map(|p| p.bytes() + 16).sum::<usize>() + self.pages.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn time() -> impl Strategy<Value = Micros> {
        prop_oneof![
            Just(NEVER),
            Just(Micros::MIN),
            1_600_000_000_000_000i64..1_900_000_000_000_000,
            any::<i64>()
        ]
    }

    fn slot() -> impl Strategy<Value = LeadSlot> {
        (
            proptest::collection::vec(time(), 9),
            prop_oneof![
                Just(f64::NAN),
                Just(0.0),
                Just(-0.0),
                Just(42.0),
                any::<f64>(),
                -1e6f64..1e6
            ],
            proptest::collection::vec(any::<u32>(), 4),
            0usize..8,
            proptest::collection::vec((time(), any::<u32>()), 0..5),
            proptest::collection::vec(any::<u8>(), 0..12),
            // Extras of different lengths and contents, so that one read in another lead's
            // place, or cut short, would show.
            proptest::option::of(proptest::collection::vec(
                (time(), time(), proptest::option::of(time())),
                0..4,
            )),
        )
            .prop_map(|(times, score, syms, stage, touches, filed, extra)| LeadSlot {
                facts: Facts {
                    milestones: std::array::from_fn(|m| times[m]),
                    source_at: times[7],
                    score,
                    channel: syms[0],
                    campaign: syms[1],
                    producer: syms[2],
                    owner: syms[3],
                    stage: STAGES[stage],
                },
                last_at: times[8],
                touches: touches.into_iter().map(|(at, channel)| Touch { at, channel }).collect(),
                extra: extra.map(|handoffs| {
                    Arc::new(Extra {
                        handoffs: handoffs
                            .into_iter()
                            .map(|(at, deadline, answered_at)| funnel_core::lead::Handoff {
                                at,
                                deadline,
                                answered_at,
                            })
                            .collect(),
                        ..Extra::default()
                    })
                }),
                filed: filed.into(),
            })
    }

    fn same(a: &LeadSlot, b: &LeadSlot) -> bool {
        let score = |s: &LeadSlot| s.facts.score.to_bits();
        score(a) == score(b)
            && LeadSlot {
                facts: Facts { score: 0.0, ..a.facts },
                ..a.clone()
            } == LeadSlot {
                facts: Facts { score: 0.0, ..b.facts },
                ..b.clone()
            }
    }

    proptest! {
        /// Every slot reads back exactly (the score to the bit), pushed or replaced, and
        /// replacing some leads leaves the others as they were.
        #[test]
        fn slots_read_back_what_was_written(
            slots in proptest::collection::vec(slot(), 1..700),
            replaced in proptest::collection::vec((any::<proptest::sample::Index>(), slot()), 0..40),
        ) {
            let mut stored = Slots::default();
            for slot in &slots {
                stored.push(slot);
            }
            let mut expected = slots.clone();
            let mut changes: Vec<(usize, LeadSlot)> = replaced.into_iter().map(|(i, s)| (i.index(slots.len()), s)).collect();
            changes.sort_by_key(|(no, _)| *no);
            changes.dedup_by_key(|(no, _)| *no);
            let before = stored.clone();
            stored.replace(&changes);
            for (no, s) in &changes {
                expected[*no] = s.clone();
            }
            prop_assert_eq!(stored.len(), expected.len());
            for (no, s) in expected.iter().enumerate() {
                let view = stored.get(no).map(|v| v.to_slot());
                prop_assert!(view.as_ref().is_some_and(|v| same(v, s)), "lead {}: {:?} != {:?}", no, view, s);
            }
            for (no, s) in slots.iter().enumerate() {
                prop_assert!(before.get(no).is_some_and(|v| same(&v.to_slot(), s)), "snapshot changed at {}", no);
            }
        }

        /// Slots appended in parts (whole pages, or cut anywhere) read back as if pushed one
        /// by one.
        #[test]
        fn appended_parts_read_back_in_order(
            slots in proptest::collection::vec(slot(), 1..900),
            cuts in proptest::collection::vec(prop_oneof![(1usize..4).prop_map(|p| p * PAGE_LEADS), 1usize..300], 1..6),
        ) {
            let mut stored = Slots::default();
            let mut rest = &slots[..];
            for cut in cuts.iter().chain(std::iter::once(&usize::MAX)) {
                let (part, after) = rest.split_at((*cut).min(rest.len()));
                let mut fragment = Slots::default();
                for slot in part {
                    fragment.push(slot);
                }
                stored.append(fragment);
                rest = after;
            }
            prop_assert_eq!(stored.len(), slots.len());
            for (no, s) in slots.iter().enumerate() {
                let view = stored.get(no).map(|v| v.to_slot());
                prop_assert!(view.as_ref().is_some_and(|v| same(v, s)), "lead {}: {:?} != {:?}", no, view, s);
            }
        }
    }
}

//! Giving back the memory of large freed blocks that the allocator keeps resident.
//!
//! mimalloc (the service's allocator) returns a page of blocks to the system only once every
//! block in it is free. A restore or bulk load frees hundreds of megabytes of temporaries
//! (decoded history parts, index entries, Markov steps) of the same sizes as the indexes it
//! keeps, 16 KiB to 1 MiB, so most pages it leaves behind hold a kept block beside freed ones
//! that stay resident: 32 MB of the 1 M-lead engine's 330 MB after a restore (measured by
//! releasing them all, `target/release/examples/queries DIR 1 none`).
//!
//! [`release_free_blocks`] hands those back with `madvise(MADV_DONTNEED)`: the next touch
//! maps a zero page, which the allocator never relies on for a block it hands out again (it
//! zeroes what must be zero). Only the calling thread's own pages are visited, because only
//! the owning thread allocates from a page: no other thread can take a block between the visit
//! that finds it free and the call that releases it, and this thread allocates nothing in
//! between (the list of used blocks is reserved before the visit that fills it). A block
//! freed by another thread meanwhile only stays resident. The first 4 KiB of each free block
//! are kept: the allocator keeps its free list in the blocks' first words.
//!
//! Called at the end of every thread of a restore or bulk load (its temporaries are freed
//! by then and the thread's pages are about to be abandoned), by [`crate::Live::open`], and at
//! most once a second ([`release_now_and_then`]) by [`crate::Live::catch_up`] and the query
//! service's report threads.
//! With another global allocator (tests) it visits mimalloc's empty heap and does nothing.
//!
//! [`Allocator`], the binaries' global allocator, is mimalloc except for zeroed allocations of
//! 1 MiB or more, which it maps straight from the kernel.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Blocks smaller than this are left alone: small blocks share OS pages with others.
const BLOCK_MIN: usize = 16 * 1024;
/// Bytes of a free block kept at its start (the allocator's free-list link).
const KEPT: usize = 4096;

/// `mi_heap_area_t` in mimalloc.h (3.x, as libmimalloc-sys 0.1.49 bundles it).
#[repr(C)]
struct Area {
    blocks: *mut c_void,
    reserved: usize,
    committed: usize,
    used: usize,
    block_size: usize,
    full_block_size: usize,
    reserved1: *mut c_void,
}

type Visitor = extern "C" fn(*const c_void, *const Area, *mut c_void, usize, *mut c_void) -> bool;

extern "C" {
    fn mi_theap_get_default() -> *mut c_void;
    fn mi_collect(force: bool);
    fn mi_theap_visit_blocks(theap: *const c_void, visit_blocks: bool, visitor: Visitor, arg: *mut c_void) -> bool;
}

/// What a visit gathers, in room reserved before it starts.
struct Visit {
    /// Per area of large blocks: its start, block size, committed bytes, and where its used
    /// blocks start in `used`.
    areas: Vec<(usize, usize, usize, usize)>,
    used: Vec<usize>,
    /// Counting only (nothing recorded), or recording; `full` when the room ran out.
    recording: bool,
    full: bool,
    counted: (usize, usize),
}

extern "C" fn visit(
    _theap: *const c_void,
    area: *const Area,
    block: *mut c_void,
    _size: usize,
    arg: *mut c_void,
) -> bool {
    // SAFETY: mimalloc passes the `arg` given to `mi_theap_visit_blocks` (a `Visit` the
    // caller holds exclusively) and an area valid for this call.
    let (v, area) = unsafe { (&mut *(arg as *mut Visit), &*area) };
    if area.full_block_size < BLOCK_MIN {
        return true;
    }
    // An area comes first (no block), then its used blocks.
    if block.is_null() {
        v.counted.0 += 1;
        let first_used = v.used.len();
        !v.recording
            || within_room(
                &mut v.areas,
                (area.blocks as usize, area.full_block_size, area.committed, first_used),
                &mut v.full,
            )
    } else {
        v.counted.1 += 1;
        !v.recording || within_room(&mut v.used, block as usize, &mut v.full)
    }
}

/// Pushes `item` if `list` has room for it (never allocating); otherwise sets `full`, which
/// stops the visit.
fn within_room<T>(list: &mut Vec<T>, item: T, full: &mut bool) -> bool {
    if list.len() == list.capacity() {
        *full = true;
        return false;
    }
    list.push(item);
    true
}

/// Returns the resident memory of the calling thread's free blocks of 16 KiB or more to the
/// system; the bytes released.
pub fn release_free_blocks() -> usize {
    let mut v = Visit {
        areas: Vec::new(),
        used: Vec::new(),
        recording: false,
        full: false,
        counted: (0, 0),
    };
    // SAFETY: the theap is this thread's own; the visitor only writes into `v`.
    let theap = unsafe { mi_theap_get_default() };
    unsafe { mi_theap_visit_blocks(theap, true, visit, &mut v as *mut Visit as *mut c_void) };
    // Room for what the count found and what reserving it may add (one more block each).
    v.areas = Vec::with_capacity(v.counted.0 + 4);
    v.used = Vec::with_capacity(v.counted.1 + 4);
    v.recording = true;
    // SAFETY: as above. From here until the releases below this thread allocates nothing.
    unsafe { mi_theap_visit_blocks(theap, true, visit, &mut v as *mut Visit as *mut c_void) };
    if v.full {
        return 0;
    }
    let mut released = 0;
    for (a, &(start, size, committed, first)) in v.areas.iter().enumerate() {
        let last = v.areas.get(a + 1).map_or(v.used.len(), |next| next.3);
        let used = &mut v.used[first..last];
        used.sort_unstable();
        let mut next_used = used.iter().peekable();
        for k in 0..committed / size {
            let block = start + k * size;
            if next_used.next_if(|u| **u < block + size).is_some() {
                continue;
            }
            let from = (block + KEPT).next_multiple_of(4096);
            let to = (block + size) / 4096 * 4096;
            if to > from {
                // SAFETY: `[from, to)` lies inside a block that is free in a page this thread
                // owns, past its first 4 KiB; see the module comment.
                unsafe { libc::madvise(from as *mut c_void, to - from, libc::MADV_DONTNEED) };
                released += to - from;
            }
        }
    }
    released
}

/// [`release_free_blocks`] unless this thread did so less than a second ago: for threads that
/// serve one request after another (a query's blocking thread, the writer's), whose freed
/// temporaries would otherwise stay resident between requests.
pub fn release_now_and_then() {
    thread_local! {
        static LAST: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    }
    let now = std::time::Instant::now();
    if LAST
        .get()
        .is_some_and(|last| now.duration_since(last) < std::time::Duration::from_secs(1))
    {
        return;
    }
    LAST.set(Some(now));
    release_free_blocks();
}

/// Has the allocator return to the system, at once, the memory it keeps free for reuse (it
/// otherwise does so a second after the free, and only while it is called again).
pub fn return_free_memory() {
    // SAFETY: mi_collect only returns free pages to the system; no live allocation is touched.
    unsafe { mi_collect(true) };
}

/// `f`, then [`release_free_blocks`].
pub fn releasing<T>(f: impl FnOnce() -> T) -> T {
    let out = f();
    release_free_blocks();
    out
}

/// The global allocator of the service and of what measures it: mimalloc, except that a zeroed
/// allocation of [`DIRECT_MIN`] or more is an anonymous mapping of its own, whose pages the
/// kernel maps (zeroed) when they are first written, and which is unmapped when freed.
///
/// mimalloc zeroes such a block itself when it reuses memory, making every page of it
/// resident: sled allocates a 4 MiB and a 2 MiB table of page pointers, zeroed, per store
/// (`alloc_zeroed`), and writes a few words of them; the checkpoint store, opened again
/// after a restore has freed its temporaries, had both resident, 6.3 MB of a restarted 1 M-lead
/// service (`/proc/PID/pagemap` over its large allocations).
pub struct Allocator;

/// Zeroed allocations from this size on are mapped directly.
pub const DIRECT_MIN: usize = 1 << 20;

/// The addresses of the live direct mappings (0: a free place). When every place is taken,
/// a zeroed allocation falls back to mimalloc.
static DIRECT: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

fn mapped_len(size: usize) -> usize {
    size.next_multiple_of(4096)
}

/// The place of `block` among the direct mappings, if it is one.
fn direct_place(block: *mut u8) -> Option<&'static AtomicUsize> {
    DIRECT
        .iter()
        .find(|place| place.load(Ordering::Acquire) == block as usize)
}

unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= DIRECT_MIN && layout.align() <= 4096 {
            let len = mapped_len(layout.size());
            // SAFETY: a new private anonymous mapping; nothing else refers to it.
            let mapped = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if mapped != libc::MAP_FAILED {
                let noted = DIRECT.iter().any(|place| {
                    (place.compare_exchange(0, mapped as usize, Ordering::AcqRel, Ordering::Relaxed)).is_ok()
                });
                if noted {
                    return mapped.cast();
                }
                // SAFETY: the mapping made above, referred to by nothing.
                unsafe { libc::munmap(mapped, len) };
            }
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if layout.size() >= DIRECT_MIN {
            if let Some(place) = direct_place(block) {
                place.store(0, Ordering::Release);
                // SAFETY: a direct mapping of this size (the caller's layout), freed by its owner.
                unsafe { libc::munmap(block.cast(), mapped_len(layout.size())) };
                return;
            }
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { mimalloc::MiMalloc.dealloc(block, layout) }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let place = if layout.size() >= DIRECT_MIN {
            direct_place(block)
        } else {
            None
        };
        let Some(place) = place else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { mimalloc::MiMalloc.realloc(block, layout, new_size) };
        };
        let old_len = mapped_len(layout.size());
        if new_size >= DIRECT_MIN {
            // SAFETY: a direct mapping of `old_len` bytes, owned by the caller; on failure it
            // is left as it was, as `realloc` must.
            let moved = unsafe { libc::mremap(block.cast(), old_len, mapped_len(new_size), libc::MREMAP_MAYMOVE) };
            if moved == libc::MAP_FAILED {
                return std::ptr::null_mut();
            }
            place.store(moved as usize, Ordering::Release);
            return moved.cast();
        }
        // Smaller than a direct mapping: into mimalloc.
        // SAFETY: `new_size` is non-zero and, rounded up to the alignment, fits (the caller's
        // contract); the two blocks do not overlap.
        unsafe {
            let small = mimalloc::MiMalloc.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
            if small.is_null() {
                return small;
            }
            std::ptr::copy_nonoverlapping(block, small, new_size);
            place.store(0, Ordering::Release);
            libc::munmap(block.cast(), old_len);
            small
        }
    }
}

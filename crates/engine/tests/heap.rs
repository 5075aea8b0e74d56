//! `heap::release_free_blocks` under the allocator it is written for: what is kept is never
//! touched, what is freed can be allocated again and holds what is written to it, whatever
//! the sizes, and a release gives back what a thread freed.

use funnel_engine::heap::release_free_blocks;

#[global_allocator]
static GLOBAL: funnel_engine::heap::Allocator = funnel_engine::heap::Allocator;

/// A buffer of `len` bytes, each a function of the buffer's number and the byte's place.
fn filled(no: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (no.wrapping_mul(31) ^ i.wrapping_mul(7)) as u8)
        .collect()
}

fn intact(no: usize, buffer: &[u8]) -> bool {
    buffer
        .iter()
        .enumerate()
        .all(|(i, b)| *b == (no.wrapping_mul(31) ^ i.wrapping_mul(7)) as u8)
}

#[test]
fn kept_blocks_are_untouched_and_freed_ones_are_usable_again() {
    // On a thread of its own, as a restore's workers run: sizes across mimalloc's small,
    // medium and large pages, 16 KiB to 1 MiB.
    std::thread::spawn(|| {
        let sizes = [16 * 1024, 20_000, 40_000, 100_000, 250_000, 700_000, 1 << 20];
        let mut buffers: Vec<(usize, Vec<u8>)> = (0..600).map(|no| (no, filled(no, sizes[no % sizes.len()]))).collect();
        // Free every other one, interleaved with the kept ones, as temporaries are.
        let kept: Vec<(usize, Vec<u8>)> = buffers.drain(..).filter(|(no, _)| no % 2 == 0).collect();
        let released = release_free_blocks();
        assert!(released > 0, "freed blocks beside kept ones were released");
        assert!(kept.iter().all(|(no, b)| intact(*no, b)), "a kept block was touched");
        // The freed blocks come back from the allocator and hold what is written.
        let again: Vec<(usize, Vec<u8>)> = (1_000..1_300)
            .map(|no| (no, filled(no, sizes[no % sizes.len()])))
            .collect();
        assert!(again.iter().all(|(no, b)| intact(*no, b)));
        // Zeroed allocations are zero, released or not.
        let zeroed: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0u8; n]).collect();
        assert!(zeroed.iter().all(|z| z.iter().all(|b| *b == 0)));
        assert!(kept.iter().all(|(no, b)| intact(*no, b)));
        // Nothing freed since: a second release finds the same free blocks and changes
        // nothing either.
        release_free_blocks();
        assert!(kept.iter().chain(&again).all(|(no, b)| intact(*no, b)));
    })
    .join()
    .expect("the allocating thread");
}

/// How many of the pages of `block` are resident.
fn resident_pages(block: &[u8]) -> usize {
    let start = block.as_ptr() as usize / 4096 * 4096;
    let len = block.as_ptr() as usize + block.len() - start;
    let mut pages = vec![0u8; len.div_ceil(4096)];
    // SAFETY: `[start, start + len)` covers the live block `block`, rounded out to its pages.
    let status = unsafe { libc::mincore(start as *mut libc::c_void, len, pages.as_mut_ptr()) };
    assert_eq!(status, 0, "mincore over a live block");
    pages.iter().filter(|p| **p & 1 == 1).count()
}

#[test]
fn a_large_zeroed_block_is_resident_only_where_written_and_keeps_its_bytes() {
    let len = 8 << 20;
    // Memory the allocator has touched and holds free, as a restore leaves it: a zeroed
    // block of that size taken from it would have to be zeroed by hand, every page resident.
    for round in 0..4 {
        let touched = filled(round, len);
        assert!(intact(round, &touched));
    }
    let mut zeroed = vec![0u8; len];
    assert_eq!(
        resident_pages(&zeroed),
        0,
        "no page of an untouched zeroed block is resident"
    );
    for at in (0..len).step_by(1 << 16) {
        zeroed[at] = (at >> 16) as u8;
    }
    assert_eq!(resident_pages(&zeroed), len >> 16, "the pages written, and only those");
    // Grown, shrunk below the direct size, and freed, it keeps its bytes.
    zeroed.reserve_exact(len);
    zeroed.resize(2 * len, 7);
    let kept =
        |b: &[u8], upto: usize| (0..upto).all(|at| b[at] == if at % (1 << 16) == 0 { (at >> 16) as u8 } else { 0 });
    assert!(kept(&zeroed, len) && zeroed[len..].iter().all(|b| *b == 7));
    zeroed.truncate(300_000);
    zeroed.shrink_to_fit();
    assert!(kept(&zeroed, 300_000));
    drop(zeroed);
    // Many at once, more than the allocator notes as direct: the rest come from mimalloc,
    // and every one is zero and freed as what it is.
    let many: Vec<Vec<u8>> = (0..300).map(|_| vec![0u8; funnel_engine::heap::DIRECT_MIN]).collect();
    assert!(many.iter().all(|b| b.iter().all(|x| *x == 0)));
}

//! `heap::release_free_blocks` under the allocator it is written for: what is kept is never
//! touched, what is freed can be allocated again and holds what is written to it, whatever
//! the sizes, and a release gives back what a thread freed.

use funnel_engine::heap::release_free_blocks;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

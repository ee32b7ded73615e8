//! The harness's allocator: mimalloc, the allocator of the `rask` binary (the harness is a
//! client program, and runs in-process clusters of its own), counting the bytes in use
//! while a measurement asks for it (the client's memory per future).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};

use mimalloc::MiMalloc;

/// mimalloc, counting while [`count_from_now`] is on.
pub(crate) struct Counting;

/// Whether allocations are counted now: off, the count costs one load per call.
static ON: AtomicBool = AtomicBool::new(false);
/// Usable bytes allocated less those freed while counting.
static NET: AtomicI64 = AtomicI64::new(0);

fn usable(p: *const u8) -> i64 {
    // SAFETY: `p` is a live block of mimalloc's (or null, for which it answers 0).
    unsafe { MiMalloc.usable_size(p) as i64 }
}

// SAFETY: every call is mimalloc's own; the count only reads the blocks' sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { MiMalloc.alloc(layout) };
        if ON.load(Relaxed) {
            NET.fetch_add(usable(p), Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { MiMalloc.alloc_zeroed(layout) };
        if ON.load(Relaxed) {
            NET.fetch_add(usable(p), Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if ON.load(Relaxed) {
            NET.fetch_sub(usable(p), Relaxed);
        }
        unsafe { MiMalloc.dealloc(p, layout) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let counting = ON.load(Relaxed);
        let old = if counting { usable(p) } else { 0 };
        let q = unsafe { MiMalloc.realloc(p, layout, new_size) };
        if counting && !q.is_null() {
            NET.fetch_add(usable(q) - old, Relaxed);
        }
        q
    }
}

/// Starts counting from zero: [`bytes_since`] then answers the bytes allocated and not
/// freed since (blocks allocated before and freed since count negative, as they
/// leave the heap).
pub(crate) fn count_from_now() {
    NET.store(0, Relaxed);
    ON.store(true, Relaxed);
}

/// The heap's growth since [`count_from_now`], and counting stops.
pub(crate) fn bytes_since() -> i64 {
    ON.store(false, Relaxed);
    NET.load(Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_the_growth_of_the_heap_between_its_ends() {
        let before: Vec<u64> = vec![7; 1000];
        let before_bytes = usable(before.as_ptr().cast());
        count_from_now();
        let kept: Vec<u64> = vec![1; 4096];
        // Grown by reallocation, from 10 bytes to 100,000 and more.
        let mut grown: Vec<u8> = Vec::with_capacity(10);
        grown.extend(std::iter::repeat_n(3u8, 100_000));
        let passing = vec![0u8; 50_000];
        drop(passing);
        drop(before);
        let n = bytes_since();
        let expected = usable(kept.as_ptr().cast()) + usable(grown.as_ptr()) - before_bytes;
        assert!(expected > 100_000);
        // Other test threads may allocate meanwhile: a little slack.
        assert!(
            (n - expected).abs() < 16 * 1024,
            "counted {n}, expected {expected}"
        );
        // Off, nothing is counted.
        count_from_now();
        let n0 = bytes_since();
        let _more = vec![0u8; 1 << 20];
        assert_eq!(bytes_since(), n0);
    }
}

//! Where ops' output bytes go: an [`OutputAlloc`] a worker supplies (its shared-memory
//! arena, or a simulated GPU's memory) for the duration of a call, used through
//! [`output_bytes`].

use std::sync::Arc;

/// Memory for ops' output bytes. A worker supplies one so that results land where its
/// same-host peers can map them (shared-memory arenas) instead of on the private heap.
pub trait OutputAlloc: Send + Sync {
    /// A writable buffer of `len` bytes (contents unspecified), or `None` for the heap.
    fn alloc(&self, len: usize) -> Option<Box<dyn OutputBuf>>;
}

/// A buffer from an [`OutputAlloc`].
pub trait OutputBuf: Send {
    /// The bytes, to be written.
    fn bytes_mut(&mut self) -> &mut [u8];
    /// The finished, immutable bytes.
    fn freeze(self: Box<Self>) -> bytes::Bytes;
}

thread_local! {
    static OUTPUT_ALLOC: std::cell::RefCell<Option<Arc<dyn OutputAlloc>>> =
        const { std::cell::RefCell::new(None) };
}

/// An op's output of `len` bytes, written by `fill` (which must write every byte), in the
/// memory of the allocator of the call in progress (the heap outside one).
pub fn output_bytes(len: usize, fill: impl FnOnce(&mut [u8])) -> bytes::Bytes {
    let buf = OUTPUT_ALLOC.with(|a| a.borrow().as_ref().and_then(|a| a.alloc(len)));
    match buf {
        Some(mut b) => {
            fill(b.bytes_mut());
            b.freeze()
        }
        None => {
            let mut v = vec![0u8; len];
            fill(&mut v);
            v.into()
        }
    }
}

/// Makes `alloc` the allocator of [`output_bytes`] on this thread until the guard is
/// dropped (then the previous one is back).
pub(crate) fn scoped(alloc: &Arc<dyn OutputAlloc>) -> impl Drop {
    struct Reset(Option<Arc<dyn OutputAlloc>>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let prev = self.0.take();
            OUTPUT_ALLOC.with(|a| *a.borrow_mut() = prev);
        }
    }
    Reset(OUTPUT_ALLOC.with(|c| c.borrow_mut().replace(alloc.clone())))
}

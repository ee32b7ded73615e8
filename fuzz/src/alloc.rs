//! The allocation bound every harness runs under: while a harness runs on a thread, no
//! single allocation of that thread may exceed a budget that grows with the input's
//! length, nor may its live bytes grow past a second such budget. A decoder that
//! allocates what a peer announced before checking it (a `Vec::with_capacity(len)` from a
//! length field) aborts here with the sizes printed, and the fuzzer keeps the input.
//!
//! The counters are per thread and only armed inside [`guarded`], so tests running side
//! by side do not see each other's allocations. Nothing here allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The process's allocator: the system's, with the per-thread bound checked.
pub struct Bounded;

/// Bytes any one allocation may take, plus [`PER_INPUT_BYTE`] per byte of input.
pub const SINGLE_BASE: usize = 4 << 20;
/// Bytes the thread's live allocations may grow by during one run, plus
/// [`PER_INPUT_BYTE`] per byte of input.
pub const LIVE_BASE: usize = 64 << 20;
/// What one byte of input may cost in memory: decoded forms are larger than archived
/// ones (a 16-byte archived node becomes a 32-byte datum, a string gets its own
/// allocation), by a small constant factor.
pub const PER_INPUT_BYTE: usize = 64;

#[derive(Clone, Copy)]
struct Budget {
    armed: bool,
    single: usize,
    live: isize,
    limit: isize,
    peak: isize,
}

thread_local! {
    /// What runs now, named in a report (set outside the bound).
    static LABEL: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    static BUDGET: Cell<Budget> = const {
        Cell::new(Budget { armed: false, single: 0, live: 0, limit: 0, peak: 0 })
    };
}

/// Names what this thread runs next (a corpus file), for the report if it goes over the
/// bound.
pub fn label(what: &str) {
    LABEL.with(|l| {
        let mut l = l.borrow_mut();
        l.clear();
        l.push_str(what);
    });
}

/// Runs `f` with the bound armed for an input of `input_len` bytes; returns what `f`
/// returned and the peak of live bytes it reached.
pub fn guarded<T>(input_len: usize, f: impl FnOnce() -> T) -> (T, usize) {
    disarm_on_panic();
    let extra = input_len.saturating_mul(PER_INPUT_BYTE);
    let before = BUDGET.with(|b| b.get());
    BUDGET.with(|b| {
        b.set(Budget {
            armed: true,
            single: SINGLE_BASE.saturating_add(extra),
            live: 0,
            limit: LIVE_BASE.saturating_add(extra) as isize,
            peak: 0,
        })
    });
    // Disarmed again however `f` ends (a panic is the finding; the report stays exact).
    struct Disarm(Budget);
    impl Drop for Disarm {
        fn drop(&mut self) {
            BUDGET.with(|b| b.set(self.0));
        }
    }
    let disarm = Disarm(before);
    let out = f();
    let peak = BUDGET.with(|b| b.get().peak).max(0) as usize;
    drop(disarm);
    (out, peak)
}

/// A panic is a finding of its own: reporting it (a backtrace reads debug info) is not
/// held to the input's bound.
fn disarm_on_panic() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = BUDGET.try_with(|b| {
                let mut g = b.get();
                g.armed = false;
                b.set(g);
            });
            previous(info);
        }));
    });
}

fn on_alloc(size: usize) {
    let _ = BUDGET.try_with(|b| {
        let mut g = b.get();
        if !g.armed {
            return;
        }
        if size > g.single {
            g.armed = false;
            b.set(g);
            fail("one allocation", size, g.single);
        }
        g.live += size as isize;
        g.peak = g.peak.max(g.live);
        if g.live > g.limit {
            g.armed = false;
            b.set(g);
            fail("live bytes", g.live as usize, g.limit as usize);
        }
        b.set(g);
    });
}

fn on_free(size: usize) {
    let _ = BUDGET.try_with(|b| {
        let mut g = b.get();
        if g.armed {
            g.live -= size as isize;
            b.set(g);
        }
    });
}

/// Says what went over the bound (without allocating) and aborts: the fuzzer saves the
/// input as a crash.
fn fail(what: &str, got: usize, limit: usize) -> ! {
    let mut msg = Line::default();
    let _ = std::fmt::Write::write_fmt(
        &mut msg,
        format_args!(
            "\nallocation bound exceeded: {what} {got} bytes, bound {limit} for this input\n"
        ),
    );
    let mut err = std::io::stderr();
    let _ = std::io::Write::write_all(&mut err, msg.as_bytes());
    let _ = LABEL.try_with(|l| {
        if let Ok(l) = l.try_borrow() {
            if !l.is_empty() {
                let _ = std::io::Write::write_all(&mut err, b"while running ");
                let _ = std::io::Write::write_all(&mut err, l.as_bytes());
                let _ = std::io::Write::write_all(&mut err, b"\n");
            }
        }
    });
    std::process::abort();
}

/// A line formatted on the stack.
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            buf: [0; 256],
            len: 0,
        }
    }
}

impl Line {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; the bookkeeping
// around it touches only a thread-local `Cell` and never allocates.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_free(layout.size());
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        on_free(layout.size());
        on_alloc(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

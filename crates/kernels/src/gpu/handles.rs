//! Peers' allocations opened by CUDA IPC handle, kept open for the next transfer from the
//! same allocation (opening a handle costs far more than a small copy; UCX's `cuda_ipc`
//! keeps the same kind of cache).
//!
//! The release protocol stays intact: a mapping stays open only while the loan of the
//! transfer that last used it is held here (the exporter keeps a lent allocation alive
//! until its loan is released, so a cached handle never names freed memory, and a handle
//! of a live allocation names no other). The cache is bounded, and entries idle for
//! longer than a few seconds are closed and their loans released, so that an exporter is
//! not kept from freeing a value for long.

use std::time::{Duration, Instant};

/// Opened handles (`M`: the mapping) with the loans (`L`) that keep their allocations
/// alive; most recently used last.
pub struct Handles<M, L> {
    entries: Vec<Entry<M, L>>,
    capacity: usize,
    idle: Duration,
}

struct Entry<M, L> {
    handle: Vec<u8>,
    mapping: M,
    _loan: L,
    used: Instant,
}

impl<M, L> Handles<M, L> {
    /// At most `capacity` open at once, each closed after `idle` without use.
    pub fn new(capacity: usize, idle: Duration) -> Handles<M, L> {
        Handles {
            entries: Vec::new(),
            capacity: capacity.max(1),
            idle,
        }
    }

    /// The mapping of `handle`: the cached one (its loan replaced by `loan`, the older
    /// released), or one opened by `open` now and cached (closing the least recently used
    /// when full).
    pub fn get<E>(
        &mut self,
        handle: &[u8],
        loan: L,
        now: Instant,
        open: impl FnOnce() -> Result<M, E>,
    ) -> Result<&M, E> {
        match self.entries.iter().position(|e| e.handle == handle) {
            Some(i) => {
                let mut e = self.entries.remove(i);
                e._loan = loan;
                e.used = now;
                self.entries.push(e);
            }
            None => {
                let mapping = open()?;
                if self.entries.len() == self.capacity {
                    self.entries.remove(0);
                }
                self.entries.push(Entry {
                    handle: handle.to_vec(),
                    mapping,
                    _loan: loan,
                    used: now,
                });
            }
        }
        Ok(&self.entries.last().expect("just pushed").mapping)
    }

    /// Closes the mappings idle for longer than the cache keeps them (releasing their
    /// loans).
    pub fn expire(&mut self, now: Instant) {
        let idle = self.idle;
        self.entries
            .retain(|e| now.saturating_duration_since(e.used) <= idle);
    }

    /// Closes a handle's mapping, if open (after an error using it).
    pub fn forget(&mut self, handle: &[u8]) {
        self.entries.retain(|e| e.handle != handle);
    }

    /// Mappings open.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A loan that counts its releases.
    struct Loan(Rc<Cell<u32>>);

    impl Drop for Loan {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn a_handle_is_opened_once_and_each_loan_released_when_the_next_arrives() {
        let (opened, released) = (Cell::new(0), Rc::new(Cell::new(0)));
        let mut h: Handles<u32, Loan> = Handles::new(4, Duration::from_secs(5));
        let t0 = Instant::now();
        let open = |n: u32| {
            opened.set(opened.get() + 1);
            Ok::<_, ()>(n)
        };
        for i in 0..5 {
            let m = *h.get(b"A", Loan(released.clone()), t0, || open(7)).unwrap();
            assert_eq!(m, 7);
            // The previous transfer's loan is released; this one's is held.
            assert_eq!(released.get(), i);
        }
        assert_eq!(opened.get(), 1, "opened once for five transfers");
        assert_eq!(h.len(), 1);
        assert!(!h.is_empty());
        // Another allocation is another mapping.
        assert_eq!(
            *h.get(b"B", Loan(released.clone()), t0, || open(8)).unwrap(),
            8
        );
        assert_eq!(opened.get(), 2);
    }

    #[test]
    fn idle_and_least_recently_used_mappings_are_closed_releasing_their_loans() {
        let released = Rc::new(Cell::new(0));
        let mut h: Handles<&str, Loan> = Handles::new(2, Duration::from_secs(5));
        let t0 = Instant::now();
        let ok = |m| move || Ok::<_, ()>(m);
        h.get(b"A", Loan(released.clone()), t0, ok("a")).unwrap();
        h.get(b"B", Loan(released.clone()), t0, ok("b")).unwrap();
        // A used again: B is now the least recently used, closed when C comes.
        h.get(b"A", Loan(released.clone()), t0, ok("a2")).unwrap();
        assert_eq!(released.get(), 1);
        h.get(b"C", Loan(released.clone()), t0, ok("c")).unwrap();
        assert_eq!(released.get(), 2);
        assert_eq!(h.len(), 2);
        assert_eq!(
            *h.get(b"A", Loan(released.clone()), t0, ok("new")).unwrap(),
            "a"
        );
        // Idle beyond the limit: closed, loans released.
        h.expire(t0 + Duration::from_secs(5));
        assert_eq!(h.len(), 2, "not idle beyond the limit yet");
        h.expire(t0 + Duration::from_secs(6));
        assert!(h.is_empty());
        assert_eq!(released.get(), 5);
    }

    #[test]
    fn a_failed_open_caches_nothing_and_a_forgotten_handle_is_opened_again() {
        let released = Rc::new(Cell::new(0));
        let mut h: Handles<u8, Loan> = Handles::new(2, Duration::from_secs(5));
        let t0 = Instant::now();
        assert!(h
            .get(b"A", Loan(released.clone()), t0, || Err("refused"))
            .is_err());
        assert!(h.is_empty());
        assert_eq!(released.get(), 1, "the loan of a failed open is released");
        h.get(b"A", Loan(released.clone()), t0, || Ok::<_, ()>(1))
            .unwrap();
        h.forget(b"A");
        assert!(h.is_empty());
        assert_eq!(
            *h.get(b"A", Loan(released.clone()), t0, || Ok::<_, ()>(2))
                .unwrap(),
            2
        );
    }
}

//! The virtual clock: a queue of events ordered by (time, sequence number), so that
//! events due at the same microsecond come out in the order they were scheduled and a
//! run never depends on anything but its inputs.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// An event due at a virtual time.
struct Due<E> {
    time: u64,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Due<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}

impl<E> Eq for Due<E> {}

impl<E> PartialOrd for Due<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Due<E> {
    /// Reversed: the heap's top is the earliest, then the first scheduled.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

/// Events by virtual time, ties in scheduling order.
pub struct EventQueue<E> {
    heap: BinaryHeap<Due<E>>,
    seq: u64,
    now: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            seq: 0,
            now: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// The virtual time of the event taken last (µs).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Schedules `event` at `time` (not before now).
    pub fn push(&mut self, time: u64, event: E) {
        let time = time.max(self.now);
        self.seq += 1;
        self.heap.push(Due {
            time,
            seq: self.seq,
            event,
        });
    }

    /// The next event, with its time and sequence number; the clock moves to its time.
    pub fn pop(&mut self) -> Option<(u64, u64, E)> {
        let d = self.heap.pop()?;
        self.now = d.time;
        Some((d.time, d.seq, d.event))
    }

    /// Events still due.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no event is due.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_by_time_then_in_scheduling_order() {
        let mut q = EventQueue::default();
        q.push(5, "c");
        q.push(1, "a");
        q.push(5, "d");
        q.push(1, "b");
        let order: Vec<&str> = std::iter::from_fn(|| q.pop().map(|(_, _, e)| e)).collect();
        assert_eq!(order, ["a", "b", "c", "d"]);
        assert_eq!(q.now(), 5);
        // Nothing is scheduled in the past.
        q.push(2, "e");
        assert_eq!(q.pop().map(|(t, _, _)| t), Some(5));
    }
}

//! Which ops run in place: an op measured to take microseconds costs less to run on the
//! worker's event loop than to hand to an executor thread (two cross-thread wake-ups,
//! tens of µs each on a VM that halts idle cores). Durations arrive with each result; no
//! clock is read here.

use rustc_hash::FxHashMap;

/// An op whose average duration is below this many µs runs in place.
pub const INLINE_MAX_US: f64 = 20.0;

/// Each op's moving average duration (new measurements weigh 1/5), by op number.
#[derive(Debug, Default)]
pub struct OpTimes {
    ids: FxHashMap<String, u32>,
    avg_us: Vec<Option<f64>>,
    /// Each op's name, by number.
    names: Vec<String>,
    /// The op numbered last: tasks come in runs of one op (a map's), found without a
    /// lookup.
    last: u32,
    /// The number of the unnamed op, once seen.
    unnamed: Option<u32>,
}

impl OpTimes {
    /// The number of `op` (given on first sight). The unnamed op `""` is never fast.
    pub fn id(&mut self, op: &str) -> u32 {
        if self.names.get(self.last as usize).is_some_and(|n| n == op) {
            return self.last;
        }
        let id = match self.ids.get(op) {
            Some(&id) => id,
            None => {
                let id = self.avg_us.len() as u32;
                self.ids.insert(op.to_string(), id);
                self.names.push(op.to_string());
                self.avg_us.push(None);
                if op.is_empty() {
                    self.unnamed = Some(id);
                }
                id
            }
        };
        self.last = id;
        id
    }

    /// A run of op `id` took `duration_us`.
    pub fn observe(&mut self, id: u32, duration_us: u64) {
        let us = duration_us as f64;
        let slot = &mut self.avg_us[id as usize];
        *slot = Some(match *slot {
            None => us,
            Some(avg) => 0.8 * avg + 0.2 * us,
        });
    }

    /// The average duration of `op` so far, if it ran.
    pub fn average_us(&self, op: &str) -> Option<f64> {
        self.avg_us[*self.ids.get(op)? as usize]
    }

    /// Whether op `id` is measured to take microseconds (not before it ran once, and
    /// never for the unnamed op).
    pub fn fast(&self, id: u32) -> bool {
        id != self.unnamed() && self.avg_us[id as usize].is_some_and(|us| us < INLINE_MAX_US)
    }

    /// The number of the unnamed op, if it has been seen.
    fn unnamed(&self) -> u32 {
        self.unnamed.unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_op_runs_inline_once_measured_fast_and_stops_when_it_slows_down() {
        let mut t = OpTimes::default();
        let inc = t.id("inc");
        assert_eq!(t.id("inc"), inc);
        let sleep = t.id("sleep");
        assert_ne!(inc, sleep);
        assert!(!t.fast(inc), "not before it ran");
        t.observe(inc, 3);
        assert!(t.fast(inc));
        assert_eq!(t.average_us("inc"), Some(3.0));
        // A new measurement weighs one fifth: 0.8 × 3 + 0.2 × 200 = 42.4 µs.
        t.observe(inc, 200);
        assert_eq!(t.average_us("inc"), Some(42.4));
        assert!(!t.fast(inc));
        // Exactly at the threshold is not fast.
        t.observe(sleep, INLINE_MAX_US as u64);
        assert!(!t.fast(sleep));
        t.observe(sleep, 0);
        assert!(t.fast(sleep));
        let unnamed = t.id("");
        t.observe(unnamed, 0);
        assert!(!t.fast(unnamed), "an unnamed op never runs inline");
        // Numbers stay as given, whichever op was numbered last.
        assert_eq!(
            (t.id("inc"), t.id("inc"), t.id(""), t.id("sleep")),
            (inc, inc, unnamed, sleep)
        );
        let again = t.id("");
        assert!(!t.fast(again), "still not inline");
        assert_eq!(t.average_us("never"), None);
    }
}

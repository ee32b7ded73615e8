//! How long a device has been busy: the clock behind a worker's GPU utilization (the
//! share of time its queue had a command running), kept by the simulated GPUs' queues and
//! the CUDA GPU's thread alike.

use std::sync::Mutex;
use std::time::Instant;

/// Microseconds of busy time, the command running now included.
#[derive(Debug, Default)]
pub struct Busy {
    /// Since when the running command runs, and the busy time of those finished.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Busy {
    /// A command starts (one at a time: a second start restarts the clock's interval).
    pub fn start(&self) {
        self.start_at(Instant::now());
    }

    /// The running command ended.
    pub fn stop(&self) {
        self.stop_at(Instant::now());
    }

    /// Busy microseconds so far, the running command's time up to now included.
    pub fn micros(&self) -> u64 {
        self.micros_at(Instant::now())
    }

    fn start_at(&self, now: Instant) {
        let mut s = self.state.lock().expect("busy lock");
        if let Some(since) = s.0 {
            s.1 += now.saturating_duration_since(since).as_micros() as u64;
        }
        s.0 = Some(now);
    }

    fn stop_at(&self, now: Instant) {
        let mut s = self.state.lock().expect("busy lock");
        if let Some(since) = s.0.take() {
            s.1 += now.saturating_duration_since(since).as_micros() as u64;
        }
    }

    fn micros_at(&self, now: Instant) -> u64 {
        let s = self.state.lock().expect("busy lock");
        s.1 + s.0.map_or(0, |since| {
            now.saturating_duration_since(since).as_micros() as u64
        })
    }
}

/// A device's utilization in percent between two readings of its [`Busy::micros`]
/// taken `wall_us` apart (none for an empty interval), at most 100.
pub fn utilization(busy_before: u64, busy_now: u64, wall_us: u64) -> Option<f32> {
    (wall_us > 0).then(|| {
        let busy = busy_now.saturating_sub(busy_before) as f64;
        (busy * 100.0 / wall_us as f64).min(100.0) as f32
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn busy_time_counts_finished_commands_and_the_running_one() {
        let b = Busy::default();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(b.micros_at(ms(5)), 0);
        b.start_at(ms(10));
        assert_eq!(b.micros_at(ms(15)), 5_000, "the running command counts");
        b.stop_at(ms(30));
        assert_eq!(b.micros_at(ms(100)), 20_000, "idle time does not");
        b.stop_at(ms(120));
        assert_eq!(
            b.micros_at(ms(130)),
            20_000,
            "a stop without a start adds nothing"
        );
        b.start_at(ms(200));
        b.start_at(ms(210));
        b.stop_at(ms(215));
        assert_eq!(b.micros_at(ms(300)), 35_000);
    }

    #[test]
    fn utilization_is_the_busy_share_of_the_interval() {
        assert_eq!(utilization(1_000, 1_250, 1_000), Some(25.0));
        assert_eq!(utilization(0, 2_000, 1_000), Some(100.0), "at most 100");
        assert_eq!(utilization(500, 500, 1_000), Some(0.0));
        assert_eq!(utilization(0, 10, 0), None);
        assert_eq!(
            utilization(10, 0, 100),
            Some(0.0),
            "a clock never runs back"
        );
    }
}

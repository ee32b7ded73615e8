//! A small seeded random number generator (SplitMix64) and the value mixer the simulated
//! ops use. Deterministic on every platform: the same seed gives the same numbers, so a
//! simulation's trace depends on its seed only. Not for anything that needs
//! unpredictability.

/// SplitMix64: one `u64` of state, fast, good enough for workload shapes and fault
/// times.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.state)
    }

    /// A number in `0..n` (`n > 0`), by multiply-shift (its bias is far below what a
    /// workload shape can notice).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// A number spread evenly on a log scale over `lo..=hi` (`lo > 0`): durations and
    /// sizes of real tasks span orders of magnitude.
    pub fn log_range(&mut self, lo: u64, hi: u64) -> u64 {
        let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
        let u = self.unit();
        ((a + (b - a) * u).exp() as u64).clamp(lo, hi)
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// SplitMix64's finalizer: a bijective mix of 64 bits.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What the simulated op of task `index` returns for these input values (in argument
/// order): a hash of the index and of every input, so that a wrong, missing, reordered
/// or stale input anywhere upstream changes every value downstream of it.
pub fn task_value(index: u64, inputs: impl IntoIterator<Item = u64>) -> u64 {
    let mut h = mix(index ^ 0x5bd1_e995_7f3a_2c61);
    for v in inputs {
        h = mix(h ^ v).wrapping_add(0x2545_f491_4f6c_dd1d);
    }
    h
}

/// A running hash of a sequence of numbers (the simulation's trace).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceHash(pub u64);

impl TraceHash {
    /// Adds one number to the sequence.
    pub fn add(&mut self, x: u64) {
        self.0 = mix(self.0 ^ x).wrapping_add(0x9e37_79b9_7f4a_7c15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_numbers() {
        let a: Vec<u64> = (0..5)
            .scan(Rng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..5)
            .scan(Rng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let c: Vec<u64> = (0..5)
            .scan(Rng::new(8), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn ranges_stay_in_bounds() {
        let mut r = Rng::new(1);
        for _ in 0..10_000 {
            assert!(r.below(7) < 7);
            let x = r.range(3, 5);
            assert!((3..=5).contains(&x));
            let y = r.log_range(10, 1_000_000);
            assert!((10..=1_000_000).contains(&y));
        }
    }

    #[test]
    fn values_depend_on_input_order() {
        assert_ne!(task_value(1, [2, 3]), task_value(1, [3, 2]));
        assert_ne!(task_value(1, [2]), task_value(2, [2]));
    }
}

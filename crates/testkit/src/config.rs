//! A simulation's settings: the cluster, its links, the fault knobs, and the checks'
//! budget. Plain data; the simulation reads it and never changes it.

use rask_scheduler_core::CoreConfig;

use crate::graph::Graph;
use crate::rng::Rng;
use crate::worker::Sabotage;

/// Everything a run depends on: the same configuration and graph give the same trace.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seeds every random choice of the run (link jitter, worker speeds, which worker a
    /// fault hits).
    pub seed: u64,
    /// Workers at the start.
    pub workers: u32,
    /// Threads (task slots) of each worker.
    pub threads_per_worker: u32,
    /// One-way latency of every link, scheduler ⇄ worker and worker ⇄ worker (µs).
    pub latency_us: u64,
    /// Bytes per second a worker sends data to peers at; transfers from one worker
    /// queue behind each other.
    pub bandwidth: f64,
    /// Each message is delayed by up to this much more (µs), drawn per message; messages
    /// on one scheduler link still arrive in order (a stream, as TCP).
    pub jitter_us: u64,
    /// Workers' speeds are spread evenly over `1 ± speed_spread` (an op of nominal
    /// duration d runs d / speed).
    pub speed_spread: f64,
    /// Workers joining, retiring and dying during the run.
    pub faults: Faults,
    /// `validate()` of the scheduler core and of every worker core after this many
    /// scheduler stimuli (0: only at the end).
    pub validate_every: u64,
    /// Events the run may take before it is declared stuck; `None`: 64 per task plus a
    /// million.
    pub max_events: Option<u64>,
    /// Deliberate faults, to show that the checks catch them.
    pub sabotage: Sabotage,
    /// The scheduler core's tunables.
    pub core: CoreConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            workers: 10,
            threads_per_worker: 2,
            latency_us: 100,
            bandwidth: 1.25e9,
            jitter_us: 20,
            speed_spread: 0.25,
            faults: Faults::default(),
            validate_every: 0,
            max_events: None,
            sabotage: Sabotage::default(),
            core: CoreConfig::default(),
        }
    }
}

/// Workers joining, retiring (asked by a client, data handed over first), leaving (the
/// worker asks to close, as at the end of its lifetime) and dying (connection lost), at
/// virtual times (µs). Which worker retires, leaves or dies is drawn from the seed among
/// the running ones; a fault that would leave fewer than two running workers is skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Times a new worker joins.
    pub joins: Vec<u64>,
    /// Times a client asks to retire one running worker.
    pub retires: Vec<u64>,
    /// Times a running worker asks to close gracefully.
    pub leaves: Vec<u64>,
    /// Times a worker dies.
    pub deaths: Vec<u64>,
}

impl Faults {
    /// `n` faults of each kind, each kind spread evenly over `from_us..to_us` and offset
    /// from the others so that no two coincide.
    pub fn spread(n: u32, from_us: u64, to_us: u64) -> Faults {
        let times = |offset: u64| -> Vec<u64> {
            let span = to_us.saturating_sub(from_us);
            (0..u64::from(n))
                .map(|i| from_us + span * (4 * i + offset) / (4 * u64::from(n)))
                .collect()
        };
        Faults {
            joins: times(0),
            retires: times(1),
            leaves: times(2),
            deaths: times(3),
        }
    }

    /// Faults of each kind at `per_s` a second on average, from `from_us` to `to_us`: the
    /// times of a Poisson process per kind, drawn from `seed`.
    pub fn at_rate(per_s: f64, from_us: u64, to_us: u64, seed: u64) -> Faults {
        let mut rng = Rng::new(seed ^ 0x6661_756c_7473);
        let mut times = || -> Vec<u64> {
            let mut out = Vec::new();
            let mut t = from_us as f64;
            loop {
                // An exponential gap of mean 1 / per_s seconds.
                t += -(1.0 - rng.unit()).ln() / per_s * 1e6;
                if t >= to_us as f64 || !t.is_finite() {
                    return out;
                }
                out.push(t as u64);
            }
        };
        Faults {
            joins: times(),
            retires: times(),
            leaves: times(),
            deaths: times(),
        }
    }
}

/// A makespan no schedule of `graph` can beat on the cluster `cfg` describes, known
/// before the run (for setting fault times): the critical path, or the work spread over
/// every thread of the starting workers, all at the fastest speed possible. A run's
/// [`Report::lower_bound_us`](crate::Report::lower_bound_us) is tighter: it uses the
/// speeds drawn.
pub fn lower_bound_us(cfg: &SimConfig, graph: &Graph) -> u64 {
    let fastest = 1.0 + cfg.speed_spread;
    let threads = f64::from(cfg.workers.max(1) * cfg.threads_per_worker.max(1));
    let cp = graph.critical_path_us() as f64 / fastest;
    let spread = graph.work_us() as f64 / threads / fastest;
    cp.max(spread) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_faults_interleave_within_the_span() {
        let f = Faults::spread(2, 100, 900);
        assert_eq!(f.joins, vec![100, 500]);
        assert_eq!(f.retires, vec![200, 600]);
        assert_eq!(f.leaves, vec![300, 700]);
        assert_eq!(f.deaths, vec![400, 800]);
    }

    #[test]
    fn faults_at_a_rate_come_at_about_that_rate_within_the_span() {
        let f = Faults::at_rate(100.0, 1_000_000, 11_000_000, 4);
        for times in [&f.joins, &f.retires, &f.leaves, &f.deaths] {
            // 10 s at 100/s: about 1,000, within a few standard deviations (√1000 ≈ 32).
            assert!((850..1150).contains(&times.len()), "{}", times.len());
            assert!(times.windows(2).all(|w| w[0] <= w[1]));
            assert!(times.iter().all(|t| (1_000_000..11_000_000).contains(t)));
        }
        assert_ne!(f.joins, f.deaths);
        assert_eq!(f, Faults::at_rate(100.0, 1_000_000, 11_000_000, 4));
    }
}

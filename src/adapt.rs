//! Adaptive scaling, as Dask's `cluster.adapt(minimum, maximum)`: every interval the
//! scheduler is asked how many workers its work calls for (its adaptive target: queued
//! and running work by the ops' measured durations, against a target duration; memory in
//! use against the workers' limits); the cluster grows to it at once, and shrinks only
//! after a worker has been suggested for closing several times in a row (Dask's
//! `wait_count`), retiring it gracefully so that nothing it holds is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::ClusterError;

/// A cluster that [`Adaptive`] can grow and shrink.
pub trait Scalable: Send + 'static {
    /// The scheduler's address.
    fn address(&self) -> String;
    /// How a client connects to it (its secret and TLS, if it has them).
    fn client_options(&self) -> rask_client::ClientOptions {
        rask_client::ClientOptions::default()
    }
    /// The workers asked for (started or starting).
    fn planned(&self) -> usize;
    /// Grows to `n` workers.
    fn scale_up(&mut self, n: usize) -> Result<(), ClusterError>;
    /// Retires the named workers gracefully and stops them.
    fn scale_down(&mut self, names: &[String]) -> Result<(), ClusterError>;

    /// Adapts the cluster between `minimum` and `maximum` workers, as Dask's
    /// `cluster.adapt(minimum=, maximum=)`; see [`Adaptive::new`] for the other options.
    fn adapt(self, minimum: usize, maximum: usize) -> Result<Adaptive<Self>, ClusterError>
    where
        Self: Sized,
    {
        Adaptive::new(
            self,
            AdaptOptions {
                minimum,
                maximum,
                ..AdaptOptions::default()
            },
        )
    }
}

/// The bounds and pace of adaptation.
#[derive(Clone, Debug)]
pub struct AdaptOptions {
    /// Fewest workers (default 0).
    pub minimum: usize,
    /// Most workers (default: no bound).
    pub maximum: usize,
    /// How often to decide (default 1 s).
    pub interval: Duration,
    /// Suggestions in a row before a worker is closed (default 3).
    pub wait_count: usize,
    /// How long the queued work should take (default 5 s).
    pub target_duration: Duration,
}

impl Default for AdaptOptions {
    fn default() -> Self {
        AdaptOptions {
            minimum: 0,
            maximum: usize::MAX,
            interval: Duration::from_secs(1),
            wait_count: 3,
            target_duration: Duration::from_secs(5),
        }
    }
}

/// What to do this interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing.
    Stay,
    /// Grow to this many workers.
    Up(usize),
    /// Retire these workers.
    Down(Vec<String>),
}

/// Dask's damping of scale-down: a worker is closed only once it has been suggested
/// `wait_count` times in a row. Pure: the tests drive it.
#[derive(Debug, Default)]
pub struct Damping {
    close_counts: HashMap<String, usize>,
}

impl Damping {
    /// The decision for a scheduler `target` (clamped to the options' bounds) and the
    /// workers planned, with `to_close` the scheduler's suggestion of whom to close to
    /// reach the target (only looked at when shrinking).
    pub fn decide(
        &mut self,
        opts: &AdaptOptions,
        target: usize,
        planned: usize,
        to_close: impl FnOnce(usize) -> Vec<String>,
    ) -> Decision {
        let target = target.clamp(opts.minimum, opts.maximum.max(opts.minimum));
        if target >= planned {
            self.close_counts.clear();
            return if target > planned {
                Decision::Up(target)
            } else {
                Decision::Stay
            };
        }
        let suggested = to_close(target);
        self.close_counts.retain(|w, _| suggested.contains(w));
        let mut firm: Vec<String> = Vec::new();
        for w in suggested {
            let c = self.close_counts.entry(w.clone()).or_insert(0);
            *c += 1;
            if *c >= opts.wait_count.max(1) {
                firm.push(w);
            }
        }
        // No more than the target allows, and those closed start counting afresh.
        firm.truncate(planned - target);
        for w in &firm {
            self.close_counts.remove(w);
        }
        if firm.is_empty() {
            Decision::Stay
        } else {
            Decision::Down(firm)
        }
    }
}

/// A cluster under adaptive scaling; adaptation stops when this is dropped (or with
/// [`Adaptive::stop`], which gives the cluster back).
pub struct Adaptive<C: Scalable> {
    /// Always there until [`Adaptive::stop`] takes it.
    cluster: Option<Arc<Mutex<C>>>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    log: Arc<Mutex<Vec<Decision>>>,
}

impl<C: Scalable> Adaptive<C> {
    /// Starts adapting `cluster` within `opts`.
    pub fn new(cluster: C, opts: AdaptOptions) -> Result<Adaptive<C>, ClusterError> {
        let client =
            rask_client::Client::connect_with(&cluster.address(), cluster.client_options())?;
        let cluster = Arc::new(Mutex::new(cluster));
        let log: Arc<Mutex<Vec<Decision>>> = Arc::default();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = {
            let (cluster, log) = (cluster.clone(), log.clone());
            std::thread::Builder::new()
                .name("rask-adapt".into())
                .spawn(move || {
                    let mut damping = Damping::default();
                    loop {
                        match stopped.recv_timeout(opts.interval) {
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                            _ => return,
                        }
                        let Ok(target) = client.adaptive_target(opts.target_duration) else {
                            continue;
                        };
                        let mut c = cluster.lock().unwrap_or_else(|e| e.into_inner());
                        let planned = c.planned();
                        let decision = damping.decide(&opts, target, planned, |t| {
                            client.workers_to_close(t).unwrap_or_default()
                        });
                        let outcome = match &decision {
                            Decision::Stay => Ok(()),
                            Decision::Up(n) => c.scale_up(*n),
                            Decision::Down(names) => c.scale_down(names),
                        };
                        if let Err(e) = outcome {
                            tracing::warn!("adaptive scaling ({decision:?}): {e}");
                        }
                        if decision != Decision::Stay {
                            tracing::info!(
                                "adaptive scaling: {decision:?} (target {target}, had {planned})"
                            );
                            log.lock().unwrap_or_else(|e| e.into_inner()).push(decision);
                        }
                    }
                })
                .map_err(|e| ClusterError::Scheduler(format!("no thread for adaptation: {e}")))?
        };
        Ok(Adaptive {
            cluster: Some(cluster),
            stop: Some(stop),
            thread: Some(thread),
            log,
        })
    }

    /// The cluster (adaptation waits while it is held).
    pub fn cluster(&self) -> MutexGuard<'_, C> {
        self.cluster
            .as_ref()
            .expect("invariant: the cluster is there until stop")
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The decisions taken so far that changed the cluster.
    pub fn decisions(&self) -> Vec<Decision> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn halt(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Stops adapting and gives the cluster back.
    pub fn stop(mut self) -> C {
        self.halt();
        let cluster = self
            .cluster
            .take()
            .expect("invariant: the cluster is there until stop");
        match Arc::try_unwrap(cluster) {
            Ok(m) => m.into_inner().unwrap_or_else(|e| e.into_inner()),
            Err(_) => unreachable!("the adaptation thread, the only other owner, has ended"),
        }
    }
}

impl<C: Scalable> Drop for Adaptive<C> {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(min: usize, max: usize) -> AdaptOptions {
        AdaptOptions {
            minimum: min,
            maximum: max,
            ..AdaptOptions::default()
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn it_grows_at_once_within_the_bounds() {
        let mut d = Damping::default();
        let o = opts(1, 4);
        assert_eq!(d.decide(&o, 10, 0, |_| unreachable!()), Decision::Up(4));
        assert_eq!(d.decide(&o, 3, 1, |_| unreachable!()), Decision::Up(3));
        assert_eq!(d.decide(&o, 0, 0, |_| unreachable!()), Decision::Up(1));
        assert_eq!(d.decide(&o, 2, 2, |_| unreachable!()), Decision::Stay);
    }

    #[test]
    fn it_shrinks_only_after_wait_count_suggestions_in_a_row() {
        let mut d = Damping::default();
        let o = opts(0, 8);
        let ab = || names(&["a", "b"]);
        assert_eq!(
            d.decide(&o, 0, 2, |t| {
                assert_eq!(t, 0);
                ab()
            }),
            Decision::Stay
        );
        assert_eq!(d.decide(&o, 0, 2, |_| ab()), Decision::Stay);
        assert_eq!(d.decide(&o, 0, 2, |_| ab()), Decision::Down(ab()));
        // Counted afresh afterwards.
        assert_eq!(d.decide(&o, 0, 2, |_| ab()), Decision::Stay);
    }

    #[test]
    fn a_break_in_the_suggestions_or_new_work_starts_the_count_again() {
        let mut d = Damping::default();
        let o = opts(0, 8);
        d.decide(&o, 1, 2, |_| names(&["a"]));
        d.decide(&o, 1, 2, |_| names(&["a"]));
        // Another worker suggested: a's count is gone.
        assert_eq!(d.decide(&o, 1, 2, |_| names(&["b"])), Decision::Stay);
        assert_eq!(d.decide(&o, 1, 2, |_| names(&["a"])), Decision::Stay);
        assert_eq!(d.decide(&o, 1, 2, |_| names(&["a"])), Decision::Stay);
        // Work arrives: the counts are cleared.
        assert_eq!(d.decide(&o, 2, 2, |_| unreachable!()), Decision::Stay);
        assert_eq!(d.decide(&o, 1, 2, |_| names(&["a"])), Decision::Stay);
        assert_eq!(d.decide(&o, 1, 2, |_| names(&["a"])), Decision::Stay);
        assert_eq!(
            d.decide(&o, 1, 2, |_| names(&["a"])),
            Decision::Down(names(&["a"]))
        );
    }

    #[test]
    fn it_never_goes_below_the_minimum_nor_closes_more_than_the_target_allows() {
        let mut d = Damping::default();
        let o = AdaptOptions {
            wait_count: 1,
            ..opts(2, 8)
        };
        // The target 0 is raised to the minimum 2: of 3 workers, one goes.
        assert_eq!(
            d.decide(&o, 0, 3, |t| {
                assert_eq!(t, 2);
                names(&["a", "b", "c"])
            }),
            Decision::Down(names(&["a"]))
        );
        assert_eq!(d.decide(&o, 0, 2, |_| unreachable!()), Decision::Stay);
    }
}

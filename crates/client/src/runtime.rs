//! The client's own runtime thread, and running its futures from a blocking call (on a
//! plain thread or inside any async runtime) or from async code.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::TryRecvError;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::ClientError;

/// How long a blocking call busy-waits for its answer before it sleeps.
///
/// Waking a sleeping thread on another core is the dearest step of a short call (an
/// inter-processor interrupt, a core out of its idle state): a thread that polls instead
/// of sleeping is there when the answer comes, and the rest of the path runs on the cores
/// left. It pays only when the answer comes while it polls, so the budget follows the
/// calls before: twice their recent duration when that is within the limit, none when
/// calls take longer (a spin cut short by a late answer is lost work).
#[derive(Debug)]
pub(crate) struct Spin {
    limit_us: u64,
    /// Recent calls' duration in µs (a moving average); none measured yet: zero.
    recent_us: AtomicU64,
}

impl Spin {
    /// A spin of at most `limit` (zero: never).
    pub(crate) fn new(limit: Duration) -> Spin {
        Spin {
            limit_us: u64::try_from(limit.as_micros()).unwrap_or(u64::MAX),
            recent_us: AtomicU64::new(0),
        }
    }

    /// How long the next call may poll.
    pub(crate) fn budget(&self) -> Duration {
        let twice = self.recent_us.load(Ordering::Relaxed).saturating_mul(2);
        if twice <= self.limit_us {
            Duration::from_micros(twice)
        } else {
            Duration::ZERO
        }
    }

    /// A call took `took`.
    pub(crate) fn record(&self, took: Duration) {
        if self.limit_us == 0 {
            return;
        }
        let took = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let old = self.recent_us.load(Ordering::Relaxed);
        // Half the weight to the last call: a change of pace is followed within a few.
        let new = old / 2 + took / 2;
        self.recent_us.store(new, Ordering::Relaxed);
    }
}

/// Runs `fut` on `handle`'s runtime and waits for it on this thread — from a plain thread
/// or from inside any async runtime (where `Handle::block_on` would panic) — polling for
/// the answer as long as `spin` allows before sleeping.
pub(crate) fn block_on<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    spin: &Spin,
    fut: impl std::future::Future<Output = Result<T, ClientError>> + Send + 'static,
) -> Result<T, ClientError> {
    let started = Instant::now();
    let budget = spin.budget();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    let wait = move || {
        let stopped = || Err(ClientError::Runtime("stopped while a call waited".into()));
        while started.elapsed() < budget {
            match rx.try_recv() {
                Ok(v) => return v,
                Err(TryRecvError::Empty) => std::hint::spin_loop(),
                Err(TryRecvError::Disconnected) => return stopped(),
            }
        }
        rx.recv().unwrap_or_else(|_| stopped())
    };
    let out = match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    };
    spin.record(started.elapsed());
    out
}

/// Runs `fut` on `handle`'s runtime; awaitable from any runtime.
pub(crate) async fn on_runtime<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    fut: impl std::future::Future<Output = Result<T, ClientError>> + Send + 'static,
) -> Result<T, ClientError> {
    handle
        .spawn(fut)
        .await
        .map_err(|e| ClientError::Runtime(e.to_string()))?
}

/// Starts the client's runtime thread; returns its handle and what stops it when dropped.
pub(crate) fn start_runtime() -> Result<(tokio::runtime::Handle, oneshot::Sender<()>), ClientError>
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Runtime(format!("cannot start the client runtime: {e}")))?;
    let handle = rt.handle().clone();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("rask-client".into())
        .spawn(move || {
            rt.block_on(async {
                let _ = stop_rx.await;
            });
        })
        .map_err(|e| ClientError::Runtime(format!("cannot start the client thread: {e}")))?;
    Ok((handle, stop_tx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn the_spin_follows_recent_calls_within_its_limit() {
        let s = Spin::new(us(1000));
        assert_eq!(s.budget(), Duration::ZERO, "nothing measured yet");
        s.record(us(200));
        assert_eq!(s.budget(), us(200), "twice the average of 0 and 200");
        s.record(us(200));
        assert_eq!(s.budget(), us(300));
        s.record(us(200));
        assert_eq!(s.budget(), us(350));
        // Calls that take longer than half the limit: no spin, until they are short again.
        s.record(us(5000));
        assert_eq!(s.budget(), Duration::ZERO);
        s.record(us(100));
        assert_eq!(s.budget(), Duration::ZERO, "average 1343 µs");
        for _ in 0..4 {
            s.record(us(100));
        }
        assert_eq!(s.budget(), us(354), "average 177 µs");
        // Exactly at the limit still spins.
        let s = Spin::new(us(400));
        s.record(us(400));
        assert_eq!(s.budget(), us(400));
        s.record(us(402));
        assert_eq!(s.budget(), Duration::ZERO, "average 401 µs");
    }

    #[test]
    fn by_default_only_a_process_with_more_than_one_cpu_spins() {
        use crate::options::{default_spin, DEFAULT_SPIN};
        assert_eq!(default_spin(1), Duration::ZERO);
        assert_eq!(default_spin(2), DEFAULT_SPIN);
        assert_eq!(default_spin(64), DEFAULT_SPIN);
    }

    #[test]
    fn a_zero_limit_never_spins() {
        let s = Spin::new(Duration::ZERO);
        for took in [0, 1, 10, 1000] {
            s.record(us(took));
            assert_eq!(s.budget(), Duration::ZERO);
        }
    }

    #[test]
    fn a_blocking_call_gives_its_answer_whether_it_comes_while_polling_or_after() {
        let (handle, _stop) = start_runtime().unwrap();
        let s = Spin::new(Duration::from_secs(10));
        s.record(Duration::from_secs(2));
        assert_eq!(block_on(&handle, &s, async { Ok(7) }).unwrap(), 7);
        // A long spin budget and an answer that comes only when told: still the answer.
        let (tx, rx) = oneshot::channel::<u32>();
        let waiter = std::thread::spawn({
            let handle = handle.clone();
            move || {
                let s = Spin::new(Duration::from_micros(1));
                block_on(&handle, &s, async move { Ok(rx.await.unwrap()) })
            }
        });
        tx.send(9).unwrap();
        assert_eq!(waiter.join().unwrap().unwrap(), 9);
        let e = block_on(&handle, &s, async {
            Err::<(), _>(ClientError::Other("no".into()))
        });
        assert!(matches!(e, Err(ClientError::Other(m)) if m == "no"));
    }
}

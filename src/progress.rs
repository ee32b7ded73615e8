//! A progress bar for a computation: [`progress`] waits for futures and, when standard
//! error is a terminal, draws how many are done, as Dask's `progress(futures)` does.
//!
//! It only waits and draws: it fetches no value, and it never draws where nobody reads a
//! terminal (standard error sent to a file or a pipe, or `TERM` unset or `dumb`), so a
//! log file gets no escape codes.

use std::io::Write;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rask_client::{ClientError, Future};

/// Whether `gather` draws a bar by itself: standard error is a terminal, and
/// `RASK_PROGRESS` is not `off` (or `0`, `false`).
pub(crate) fn automatic() -> bool {
    let off = std::env::var("RASK_PROGRESS").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "off" | "0" | "false"
        )
    });
    !off && std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// How the bar reads: `[#####>----] 3/4 tasks | 75% | 2s`.
const TEMPLATE: &str = "[{wide_bar}] {pos}/{len} tasks | {percent}% | {elapsed}";

/// Waits until every one of `futures` is done, drawing a bar of how many are to standard
/// error when it is a terminal (nothing otherwise). Returns at the first one that failed,
/// with its error (the bar then stays where it was, not counting it); values are not fetched: get them
/// afterwards with [`rask_client::Client::gather`] or [`Future::result`].
///
/// ```no_run
/// let client = rask::Client::new()?;
/// let futures = client.map("inc", (0..1000).map(|i| [rask::Arg::from(i)]))?;
/// rask::progress(&futures)?;
/// let values = client.gather(&futures)?;
/// # Ok::<(), rask::Error>(())
/// ```
///
/// It blocks the calling thread, as [`Future::wait`] does: call it from synchronous code,
/// not from inside an async runtime.
pub fn progress<T: 'static>(futures: &[Future<T>]) -> Result<(), ClientError> {
    let bar =
        ProgressBar::with_draw_target(Some(futures.len() as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(TEMPLATE)
            .expect("invariant: the template parses")
            .progress_chars("#>-"),
    );
    let outcome = wait_all(futures, &bar);
    if !bar.is_hidden() {
        // The bar stays on the screen; what is written next goes below it.
        let _ = writeln!(std::io::stderr());
    }
    outcome
}

/// Waits for `futures`, one step of `bar` for each that is done; finishes the bar when all
/// are, or leaves it where it was at the first error, which it returns.
fn wait_all<T: 'static>(futures: &[Future<T>], bar: &ProgressBar) -> Result<(), ClientError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Runtime(format!("cannot start the progress runtime: {e}")))?;
    rt.block_on(async {
        let mut waits = tokio::task::JoinSet::new();
        for f in futures {
            // A handle of its own for each wait; the caller's keep the keys held.
            let f = f.clone();
            waits.spawn(async move { f.wait_async().await });
        }
        while let Some(done) = waits.join_next().await {
            match done {
                Ok(Ok(())) => bar.inc(1),
                Ok(Err(e)) => {
                    bar.abandon();
                    return Err(e);
                }
                Err(e) => {
                    bar.abandon();
                    return Err(ClientError::Runtime(format!("waiting for a future: {e}")));
                }
            }
        }
        bar.finish();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rask_client::Arg;

    fn cluster() -> (crate::LocalCluster, rask_client::Client) {
        let cluster = crate::LocalCluster::builder()
            .n_workers(1)
            .build()
            .expect("a local cluster");
        let client = rask_client::Client::connect(cluster.scheduler_address()).expect("connect");
        (cluster, client)
    }

    #[test]
    fn counts_every_future_done_and_finishes() {
        let (_cluster, client) = cluster();
        let futures = client
            .map("inc", (0..5i64).map(|i| [Arg::from(i)]))
            .unwrap();
        let bar = ProgressBar::hidden();
        bar.set_length(futures.len() as u64);
        wait_all(&futures, &bar).unwrap();
        assert_eq!(bar.position(), 5);
        assert!(bar.is_finished());
        assert!(futures.iter().all(Future::done));
    }

    #[test]
    fn returns_the_first_error_without_waiting_for_the_rest() {
        let (_cluster, client) = cluster();
        // "stuck" needs a resource no worker offers: it is never done.
        let mut g = rask_client::Graph::new();
        g.task("stuck", "inc", [Arg::from(1)])
            .resources(&[("nowhere", 1.0)])
            .task("failed", "fail", [Arg::from("boom")]);
        let futures = client.compute(&g, &["stuck", "failed"]).unwrap();
        let bar = ProgressBar::hidden();
        let e = wait_all(&futures, &bar).unwrap_err();
        assert!(
            matches!(&e, ClientError::Task { message, .. } if message.contains("boom")),
            "{e:?}"
        );
        assert!(!futures[0].done());
        // Neither the failed one nor the stuck one counts as done.
        assert_eq!(bar.position(), 0);
    }
}

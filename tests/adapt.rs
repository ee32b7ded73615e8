//! Adaptive scaling of a local cluster: a burst of long tasks grows it from its minimum to
//! its maximum, idling shrinks it back, and the data held on the workers it retires is
//! still there, exact, without anything computed twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rask::adapt::{AdaptOptions, Adaptive, Decision, Scalable};
use rask::{Arg, Client, LocalCluster, Value};

mod common;

use common::{eventually, within, DEADLINE};

/// Runs of the `made` op, in this process (the workers are its threads).
static MADE: AtomicUsize = AtomicUsize::new(0);

fn registry() -> rask::Registry {
    let mut r = rask::Registry::builtin();
    // 256 KiB of a byte, counted: a value worth moving, and proof of how often it ran.
    r.register("made", 1, |a| {
        MADE.fetch_add(1, Ordering::SeqCst);
        let fill = match a.first() {
            Some(Value::Int(i)) => *i as u8,
            _ => 0,
        };
        Ok(Value::Bytes(vec![fill; 256 << 10].into()))
    });
    r
}

#[test]
fn a_burst_grows_the_cluster_to_its_maximum_and_idling_shrinks_it_without_losing_data() {
    within(DEADLINE, || {
        let cluster = LocalCluster::builder()
            .n_workers(1)
            .registry(registry())
            .build()
            .unwrap();
        let adaptive = Adaptive::new(
            cluster,
            AdaptOptions {
                minimum: 1,
                maximum: 4,
                interval: Duration::from_millis(200),
                ..AdaptOptions::default()
            },
        )
        .unwrap();
        let client =
            Client::connect_with_registry(&adaptive.cluster().address(), &registry()).unwrap();
        let workers = || client.scheduler_info().unwrap().workers.len();

        // Forty tasks of 0.3 s with no measured duration yet: Dask's rule asks for
        // 40 × 0.5 s / 5 s = 4 workers.
        let burst = client
            .map("sleep", (0..40i64).map(|i| [Arg::from(0.3), Arg::from(i)]))
            .unwrap();
        eventually("the cluster grows to its maximum", || workers() == 4);
        assert_eq!(adaptive.cluster().planned(), 4);
        // Data made on the grown cluster, held by the program.
        let kept: Vec<_> = (0..8i64)
            .map(|i| client.submit("made", [Arg::from(i)]).unwrap())
            .collect();
        for f in &burst {
            f.wait().unwrap();
        }
        for f in &kept {
            f.wait().unwrap();
        }
        let made = MADE.load(Ordering::SeqCst);
        assert_eq!(made, 8);
        drop(burst);

        // Idle: back to the minimum, one worker at a time or several, each retired only
        // after three suggestions in a row.
        eventually("the cluster shrinks to its minimum", || workers() == 1);
        assert_eq!(adaptive.cluster().planned(), 1);
        let decisions = adaptive.decisions();
        assert_eq!(decisions.first(), Some(&Decision::Up(4)), "{decisions:?}");
        let closed: usize = decisions
            .iter()
            .map(|d| match d {
                Decision::Down(names) => names.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(closed, 3, "{decisions:?}");

        // Everything kept is still there and exact, and nothing ran twice.
        for (i, f) in kept.iter().enumerate() {
            assert_eq!(
                f.result().unwrap(),
                Value::Bytes(vec![i as u8; 256 << 10].into())
            );
        }
        assert_eq!(MADE.load(Ordering::SeqCst), made);
        drop(client);
        drop(adaptive.stop());
    });
}

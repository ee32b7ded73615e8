//! Graceful retirement end to end. With real processes (`rask scheduler`, `rask worker`s,
//! a client): workers retired hand the data only they hold to the others before they
//! leave, nothing is recomputed, a running task finishes first, and the last worker
//! holding data is not retired. In process: a worker whose lifetime is over retires
//! itself the same way. Data is pinned to workers by resources no other worker offers,
//! so a value lost would have no worker to be computed again on. Each multi-process test
//! fails after [`DEADLINE`] instead of hanging.

use std::collections::HashMap;
use std::time::Duration;

use rask::{Arg, Client, Future, Graph, LocalCluster, Value};

mod common;

use common::{
    eventually, random_bytes, scheduler, seed, tasks_run_by, within, worker_info, Proc, DEADLINE,
};

/// `rask worker` named `name`, offering the resource `on-NAME` (which pins tasks to it).
fn worker(addr: &str, name: &str) -> Proc {
    let resource = format!("on-{name}=1");
    common::worker_with(&[], addr, name, &["--resources", &resource])
}

fn count(c: &Client, state: &str) -> u64 {
    c.scheduler_info()
        .unwrap()
        .tasks_by_state
        .iter()
        .find(|(s, _)| s == state)
        .map_or(0, |(_, n)| *n)
}

fn names(c: &Client) -> Vec<String> {
    let mut n: Vec<String> = c
        .scheduler_info()
        .unwrap()
        .workers
        .into_iter()
        .map(|w| w.name)
        .collect();
    n.sort();
    n
}

/// Values pinned to each of `workers`: random payloads of a few sizes (sent by the
/// client, echoed by `identity`) and an integer; returns their futures (kept) and the
/// values expected, in the same order.
fn persist(c: &Client, workers: &[&str]) -> (Vec<Future>, Vec<Value>) {
    let s = seed();
    let mut g = Graph::new();
    let mut keys = Vec::new();
    let mut want = Vec::new();
    for (i, w) in workers.iter().enumerate() {
        let on = format!("on-{w}");
        for (k, n) in [0usize, 4097, (1 << 20) + 3].into_iter().enumerate() {
            let data = random_bytes(n, s.wrapping_add((i * 8 + k) as u64));
            let key = format!("data-{w}-{k}");
            g.task(
                &key,
                "identity",
                [Arg::Value(Value::Bytes(data.clone().into()))],
            )
            .resources(&[(on.as_str(), 1.0)]);
            keys.push(key);
            want.push(Value::Bytes(data.into()));
        }
        let key = format!("int-{w}");
        g.task(&key, "inc", [Arg::from(41 + i as i64)])
            .resources(&[(on.as_str(), 1.0)]);
        keys.push(key);
        want.push(Value::Int(42 + i as i64));
    }
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let futures = c.compute(&g, &keys).unwrap();
    for f in &futures {
        f.wait().unwrap();
    }
    (futures, want)
}

/// The addresses holding each future's key, sorted.
fn holders(c: &Client, futures: &[Future]) -> Vec<Vec<String>> {
    let who = c.who_has(futures).unwrap();
    futures
        .iter()
        .map(|f| {
            let mut h = who[f.key()].clone();
            h.sort();
            h
        })
        .collect()
}

#[test]
fn retiring_two_of_three_workers_keeps_their_data_exact_and_runs_nothing_twice() {
    within(DEADLINE, || {
        let (_s, addr) = scheduler(&[]);
        let mut a = worker(&addr, "a");
        let mut b = worker(&addr, "b");
        let _d = worker(&addr, "d");
        let c = Client::connect(&addr).unwrap();
        c.wait_for_workers(3).unwrap();
        let (futures, want) = persist(&c, &["a", "b", "d"]);
        let addrs: HashMap<&str, String> = ["a", "b", "d"]
            .into_iter()
            .map(|w| (w, worker_info(&c, w).addr))
            .collect();
        for (f, h) in futures.iter().zip(holders(&c, &futures)) {
            let w = f.key().split('-').nth(1).unwrap();
            assert_eq!(h, vec![addrs[w].clone()], "{}", f.key());
        }
        eventually("each worker reports the 4 tasks it ran", || {
            ["a", "b", "d"].iter().all(|w| tasks_run_by(&c, w) == 4)
        });

        let mut retired = c.retire_workers(&["b".into(), "a".into()]).unwrap();
        retired.sort();
        assert_eq!(retired, ["a", "b"]);
        // Gone once the call returns, and their processes ended as closed on request.
        assert_eq!(names(&c), ["d"]);
        for p in [&mut a, &mut b] {
            let status = p.0.wait().unwrap();
            assert!(status.success(), "a retired worker exits cleanly: {status}");
        }
        // Everything is on d now, exact, and nothing was computed again: no task could
        // run anywhere but on a or b, and d ran only its own.
        for (f, h) in futures.iter().zip(holders(&c, &futures)) {
            assert_eq!(h, vec![addrs["d"].clone()], "{}", f.key());
        }
        assert_eq!(count(&c, "memory"), 12);
        assert_eq!(count(&c, "no-worker") + count(&c, "processing"), 0);
        let got = c.gather(&futures).unwrap();
        for ((f, got), want) in futures.iter().zip(got).zip(&want) {
            assert!(&got == want, "{} differs", f.key());
        }
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(tasks_run_by(&c, "d"), 4);
        assert_eq!(worker_info(&c, "d").status, "running");

        // d holds the only copy of everything and no worker is left to take it: it stays.
        assert_eq!(
            c.retire_workers(&["d".into(), "nobody".into()]).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(names(&c), ["d"]);
        assert_eq!(worker_info(&c, "d").status, "running");
        let got = c.gather(&futures).unwrap();
        assert!(got == want, "the data is still there");
        // And it keeps working.
        let x = c.submit("inc", [Arg::from(1)]).unwrap();
        assert_eq!(x.result_as::<i64>().unwrap(), 2);
    });
}

#[test]
fn a_retiring_worker_finishes_its_task_gets_no_new_one_and_is_shown_closing_gracefully() {
    within(DEADLINE, || {
        let (_s, addr) = scheduler(&[]);
        let _a = worker(&addr, "a");
        let _b = worker(&addr, "b");
        let c = Client::connect(&addr).unwrap();
        c.wait_for_workers(2).unwrap();
        let mut g = Graph::new();
        g.task("slow", "sleep", [Arg::from(2.0), Arg::from(7i64)])
            .resources(&[("on-a", 1.0)]);
        let slow = c.compute(&g, &["slow"]).unwrap().pop().unwrap();
        eventually("a runs the slow task", || {
            worker_info(&c, "a").processing == 1
        });
        let retiring = {
            let addr = addr.clone();
            std::thread::spawn(move || Client::connect(&addr)?.retire_workers(&["a".into()]))
        };
        eventually("a is shown closing gracefully", || {
            worker_info(&c, "a").status == "closing_gracefully"
        });
        assert_eq!(worker_info(&c, "b").status, "running");
        // New work goes to b only, though a's queue has room for it.
        let xs: Vec<Future> = (0..4)
            .map(|i| c.submit("inc", [Arg::from(i as i64)]).unwrap())
            .collect();
        for (i, x) in xs.iter().enumerate() {
            assert_eq!(x.result_as::<i64>().unwrap(), i as i64 + 1);
        }
        let b_addr = worker_info(&c, "b").addr;
        for (_, h) in c.who_has(&xs).unwrap() {
            assert_eq!(h, std::slice::from_ref(&b_addr));
        }
        // The slow task finishes on a, its value moves to b, then a leaves.
        assert_eq!(retiring.join().unwrap().unwrap(), ["a"]);
        assert_eq!(names(&c), ["b"]);
        assert_eq!(slow.result_as::<i64>().unwrap(), 7);
        assert_eq!(
            c.who_has(std::slice::from_ref(&slow)).unwrap()["slow"],
            std::slice::from_ref(&b_addr)
        );
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(tasks_run_by(&c, "b"), 4, "b ran the incs only");
    });
}

/// A worker of this process whose lifetime is `lifetime`, offering `on-NAME`; the thread
/// ends when the worker does, with its outcome.
fn worker_thread(
    addr: &str,
    name: &str,
    lifetime: Duration,
) -> std::thread::JoinHandle<Result<(), String>> {
    let mut cfg = rask_worker::WorkerConfig::new(addr);
    cfg.name = name.into();
    cfg.nthreads = 1;
    cfg.resources = vec![rask::Resource {
        name: format!("on-{name}"),
        amount: 1.0,
    }];
    cfg.lifetime = Some(lifetime);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let w = rask_worker::Worker::connect(cfg)
                .await
                .map_err(|e| e.to_string())?;
            w.run(std::future::pending())
                .await
                .map_err(|e| e.to_string())
        })
    })
}

#[test]
fn a_worker_whose_lifetime_is_over_hands_its_data_over_and_leaves() {
    within(DEADLINE, || {
        // One process: its workers run the same code.
        let cluster = LocalCluster::builder()
            .n_workers(1)
            .processes(false)
            .threads_per_worker(1)
            .build()
            .unwrap();
        let addr = cluster.scheduler_address().to_string();
        let c = Client::connect(&addr).unwrap();
        c.wait_for_workers(1).unwrap();
        let life = worker_thread(&addr, "life", Duration::from_secs(6));
        c.wait_for_workers(2).unwrap();
        let (futures, want) = persist(&c, &["life"]);
        let other = c
            .scheduler_info()
            .unwrap()
            .workers
            .into_iter()
            .find(|w| w.name != "life")
            .unwrap();
        let life_addr = worker_info(&c, "life").addr;
        for h in holders(&c, &futures) {
            assert_eq!(h, vec![life_addr.clone()]);
        }
        // At the end of its lifetime it asks to retire; its data moves, then it is closed.
        assert_eq!(life.join().unwrap(), Ok(()));
        eventually("the scheduler lets the worker go", || {
            names(&c) == [other.name.clone()]
        });
        for h in holders(&c, &futures) {
            assert_eq!(h, vec![other.addr.clone()]);
        }
        let got = c.gather(&futures).unwrap();
        assert!(got == want, "the data is exact");
        // Nothing was computed again (it could not: only `life` offers on-life).
        assert_eq!(count(&c, "memory"), 4);
        assert_eq!(count(&c, "no-worker") + count(&c, "processing"), 0);
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(tasks_run_by(&c, &other.name), 0);
    });
}

#[test]
fn the_scheduler_says_how_many_workers_it_wants_and_which_can_go() {
    within(DEADLINE, || {
        let (_s, addr) = scheduler(&[]);
        let _a = worker(&addr, "a");
        let _b = worker(&addr, "b");
        let c = Client::connect(&addr).unwrap();
        c.wait_for_workers(2).unwrap();
        // Idle and empty: none is needed, either can go (lowest-holding first).
        assert_eq!(c.adaptive_target(Duration::from_secs(5)).unwrap(), 0);
        let (_futures, _) = persist(&c, &["a"]);
        assert_eq!(c.workers_to_close(1).unwrap(), ["b"]);
        assert_eq!(c.workers_to_close(2).unwrap(), Vec::<String>::new());
        // 20 tasks no one can run, of an op never measured (half a second each): 10 s of
        // work, 2 workers for a target of 5 s, 10 for 1 s.
        let mut g = Graph::new();
        let mut keys = Vec::new();
        for i in 0..20 {
            let key = format!("stuck-{i}");
            g.task(&key, "neg", [Arg::from(i as i64)])
                .resources(&[("nowhere", 1.0)]);
            keys.push(key);
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let _stuck = c.compute(&g, &keys).unwrap();
        eventually("the tasks wait for a worker", || {
            count(&c, "no-worker") == 20
        });
        assert_eq!(c.adaptive_target(Duration::from_secs(5)).unwrap(), 2);
        assert_eq!(c.adaptive_target(Duration::from_secs(1)).unwrap(), 10);
    });
}

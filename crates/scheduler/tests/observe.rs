//! End to end, in one process: a scheduler, two workers and a client run a few tasks (one
//! failing); `scheduler_info`'s prefix counts, the task stream and `story(key)` tell what
//! ran, through the client and through the in-process `Observer` the dashboard gets.

use std::collections::BTreeSet;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use rask_client::{Arg, Client, Graph, TransitionMsg};
use rask_scheduler::{DashboardServer, Observer, SchedulerConfig};
use rask_worker::{Worker, WorkerConfig};

/// The whole test fails, rather than hangs, past this.
const DEADLINE: Duration = Duration::from_secs(120);

/// Finished tasks the scheduler keeps for the stream here.
const STREAM: usize = 8;

fn count(states: &[(String, u64)], state: &str) -> u64 {
    states
        .iter()
        .find(|(s, _)| s == state)
        .unwrap_or_else(|| panic!("no state {state}"))
        .1
}

fn steps(story: &[TransitionMsg]) -> Vec<(String, String)> {
    story
        .iter()
        .map(|t| (t.from.clone(), t.to.clone()))
        .collect()
}

fn pair(from: &str, to: &str) -> (String, String) {
    (from.to_string(), to.to_string())
}

#[test]
fn info_task_stream_and_story_tell_what_ran() {
    let (done_tx, done_rx) = std_mpsc::channel();
    let body = std::thread::spawn(move || {
        scenario();
        let _ = done_tx.send(());
    });
    match done_rx.recv_timeout(DEADLINE) {
        Ok(()) => body.join().unwrap(),
        // The body panicked: its panic is the failure.
        Err(std_mpsc::RecvTimeoutError::Disconnected) => body.join().unwrap(),
        Err(std_mpsc::RecvTimeoutError::Timeout) => {
            panic!("not done within {} s", DEADLINE.as_secs())
        }
    }
}

fn scenario() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (observer_tx, observer_rx) = std_mpsc::channel::<(Observer, String)>();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = rask_transport::listener_addr(&listener).unwrap();
    let mut cfg = SchedulerConfig::default();
    cfg.core.stream_capacity = STREAM;
    cfg.dashboard = Some("127.0.0.1:0".into());
    cfg.dashboard_server = Some(DashboardServer::new(move |l, o, _tls| {
        let at = l.local_addr().unwrap().to_string();
        let _ = observer_tx.send((o, at));
        // Holds the listener for as long as the scheduler runs.
        async move {
            let _keep = l;
            std::future::pending::<()>().await
        }
    }));
    rt.spawn(rask_scheduler::run(listener, cfg, std::future::pending()));
    let (observer, dashboard_at) = observer_rx.recv().unwrap();
    for name in ["w-a", "w-b"] {
        let mut wc = WorkerConfig::new(addr.clone());
        wc.name = name.into();
        wc.nthreads = 2;
        let w = rt.block_on(Worker::connect(wc)).unwrap();
        rt.spawn(w.run(std::future::pending()));
    }
    let c = Client::connect(&addr).unwrap();
    c.wait_for_workers(2).unwrap();

    let mut g = Graph::new();
    g.task("inc-1", "inc", [Arg::from(1i64)]);
    g.task("inc-2", "inc", [Arg::from(2i64)]);
    g.task("total", "add", [Arg::key("inc-1"), Arg::key("inc-2")]);
    g.task("boom", "fail", [Arg::from("kaboom")]);
    let futs = c.compute(&g, &["total", "boom"]).unwrap();
    assert_eq!(futs[0].result_as::<i64>().unwrap(), 5);
    let err = futs[1].result().unwrap_err().to_string();
    assert!(err.contains("kaboom"), "{err}");

    // scheduler_info: prefixes from keys (`inc`) or ops (`add`, `fail`), counters.
    let info = c.scheduler_info().unwrap();
    assert!(
        info.dashboard.ends_with(&format!("{dashboard_at}/status")),
        "{}",
        info.dashboard
    );
    let prefix = |name: &str| {
        info.prefixes
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no prefix {name} in {:?}", info.prefixes))
            .clone()
    };
    let inc = prefix("inc");
    assert_eq!(count(&inc.totals, "memory"), 2);
    assert_eq!(count(&inc.totals, "processing"), 2);
    assert_eq!(count(&inc.states, "processing"), 0);
    assert_eq!(inc.output_bytes, 16);
    let add = prefix("add");
    assert_eq!(
        (count(&add.states, "memory"), count(&add.totals, "memory")),
        (1, 1)
    );
    let fail = prefix("fail");
    assert_eq!(
        (count(&fail.states, "erred"), count(&fail.totals, "memory")),
        (1, 0)
    );
    assert_eq!((info.tasks_completed, info.tasks_erred), (3, 1));
    assert_eq!((info.workers_added, info.workers_removed), (2, 0));
    assert_eq!(info.task_stream_last, 3);
    assert!(info.now_us >= info.started_us && info.started_us > 0);
    let names: BTreeSet<&str> = info.workers.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["w-a", "w-b"]));
    for w in &info.workers {
        assert_eq!(w.nthreads, 2);
        assert!(
            w.last_seen_secs < DEADLINE.as_secs_f64(),
            "{}",
            w.last_seen_secs
        );
    }

    // The task stream: one entry per finished task, with its worker.
    let stream = c.get_task_stream(0, 100).unwrap();
    let keys: BTreeSet<&str> = stream.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, BTreeSet::from(["inc-1", "inc-2", "total"]));
    assert_eq!(stream.last, 3);
    for e in &stream.entries {
        assert!(names.contains(e.worker_name.as_str()), "{e:?}");
        assert!(info
            .workers
            .iter()
            .any(|w| w.id == e.worker && w.name == e.worker_name));
        assert!(e.start_us <= e.stop_us && e.stop_us <= info.now_us, "{e:?}");
        assert_eq!(e.kind, "compute");
    }
    assert_eq!(c.get_task_stream(3, 100).unwrap().entries, vec![]);
    let cut = c.get_task_stream(0, 2).unwrap();
    assert_eq!(cut.entries.len(), 2);
    assert_eq!(cut.last, cut.entries[1].seq);

    // story: the real state names, in order; the failure's message.
    let total = c.story("total").unwrap();
    let s = steps(&total);
    assert_eq!(s.first(), Some(&pair("released", "waiting")));
    assert!(s.contains(&pair("waiting", "processing")), "{s:?}");
    assert_eq!(s.last(), Some(&pair("processing", "memory")));
    assert_eq!(total.last().unwrap().why, "task-finished");
    assert!(names.contains(total.last().unwrap().worker_name.as_str()));
    let boom = c.story("boom").unwrap();
    let last = boom.last().unwrap();
    assert_eq!(pair(&last.from, &last.to), pair("processing", "erred"));
    let error = last.error.as_ref().unwrap();
    assert_eq!(
        (error.key.as_str(), error.message.as_str()),
        ("boom", "kaboom")
    );
    assert_eq!(c.story("never-submitted").unwrap(), vec![]);

    // The observer sees the same, and so does the async twin.
    let seen = rt.block_on(observer.info()).unwrap();
    assert_eq!(seen.prefixes, c.scheduler_info().unwrap().prefixes);
    let o_stream = rt.block_on(observer.task_stream(0, 100)).unwrap();
    assert_eq!(o_stream, stream);
    assert_eq!(rt.block_on(observer.story("boom")).unwrap(), boom);
    let async_stream = rt.block_on(c.get_task_stream_async(1, 100)).unwrap();
    assert_eq!(async_stream.entries, stream.entries[1..].to_vec());
    assert_eq!(rt.block_on(c.story_async("total")).unwrap(), total);

    // Bounded: past its capacity the stream keeps the last entries only.
    let mut g = Graph::new();
    let keys: Vec<String> = (0..20).map(|i| format!("many-{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        g.task(k, "inc", [Arg::from(i as i64)]);
    }
    let outs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let futs = c.compute(&g, &outs).unwrap();
    c.gather(&futs).unwrap();
    let all = c.get_task_stream(0, 1000).unwrap();
    let seqs: Vec<u64> = all.entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (24 - STREAM as u64..24).collect::<Vec<_>>());
    assert_eq!(all.last, 23);
    let many = c.scheduler_info().unwrap();
    let many = many.prefixes.iter().find(|p| p.name == "many").unwrap();
    assert_eq!(count(&many.states, "memory"), 20);

    drop(c);
    rt.shutdown_timeout(Duration::from_secs(5));
}

//! End-to-end tests on in-process clusters (scheduler and workers as threads, real TCP
//! on 127.0.0.1).

use std::time::{Duration, Instant};

use rask::{Arg, Client, ClientError, Graph, LocalCluster, Registry, Value};

mod common;

fn client(workers: usize) -> Client {
    let cluster = LocalCluster::builder()
        .n_workers(workers)
        .build()
        .expect("cluster starts");
    Client::for_cluster(cluster).expect("client connects")
}

/// Polls `cond` until it holds; fails the test after a generous bound. This waits on a
/// condition (not a duration), so it is as fast as the system allows.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut delay = Duration::from_millis(1);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

#[test]
fn submit_map_gather() {
    let c = client(2);
    let x = c.submit("inc", [Arg::from(41)]).unwrap();
    assert_eq!(x.result_as::<i64>().unwrap(), 42);
    let ys = c
        .map("mul", (0..1000).map(|i| [Arg::from(i), Arg::from(2)]))
        .unwrap();
    let total: i64 = c
        .gather(&ys)
        .unwrap()
        .into_iter()
        .map(|v| match v {
            Value::Int(i) => i,
            other => panic!("not an int: {other:?}"),
        })
        .sum();
    assert_eq!(total, 2 * (0..1000).sum::<i64>());
    // A dependent task reading futures of both workers.
    let s = c
        .submit("sum", [Arg::List(ys.iter().map(Arg::from).collect())])
        .unwrap();
    assert_eq!(s.result_as::<i64>().unwrap(), total);
}

#[test]
fn dict_graph_get_and_compute_many_outputs() {
    let c = client(2);
    let mut g = Graph::new();
    g.value("x", 1).task("y", "add", [Arg::key("x"), 2.into()]);
    assert_eq!(c.get(&g, &["y"]).unwrap(), vec![Value::Int(3)]);

    let mut g = Graph::new();
    for i in 0..10 {
        g.task(&format!("a-{i}"), "inc", [Arg::from(i)]);
    }
    g.task("total", "add", (0..10).map(|i| Arg::key(format!("a-{i}"))));
    let outs = c.compute(&g, &["a-0", "a-9", "total"]).unwrap();
    assert_eq!(
        c.gather(&outs).unwrap(),
        vec![Value::Int(1), Value::Int(10), Value::Int(55)]
    );
}

#[test]
fn byte_payloads_travel_as_buffers_both_ways() {
    let c = client(2);
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let expect = common::fnv1a(&payload) as i64;
    let up = c
        .submit(
            "identity",
            [Arg::from(Value::Bytes(payload.clone().into()))],
        )
        .unwrap();
    let sum = c.submit("checksum", [Arg::from(&up)]).unwrap();
    assert_eq!(sum.result_as::<i64>().unwrap(), expect);
    let back = up.result_as::<bytes::Bytes>().unwrap();
    assert_eq!(&back[..], &payload[..]);
    // Made on a worker, read by a task on (possibly) the other, gathered by the client.
    let made = c
        .submit("bytes", [Arg::from(1 << 20), Arg::from(9)])
        .unwrap();
    let len = c.submit("len", [Arg::from(&made)]).unwrap();
    assert_eq!(len.result_as::<i64>().unwrap(), 1 << 20);
    assert!(made
        .result_as::<bytes::Bytes>()
        .unwrap()
        .iter()
        .all(|b| *b == 9));
}

#[test]
fn errors_carry_op_key_and_message_downstream() {
    let c = client(2);
    let bad = c.submit("fail", [Arg::from("disk on fire")]).unwrap();
    let after = c.submit("inc", [Arg::from(&bad)]).unwrap();
    match bad.result() {
        Err(ClientError::Task {
            key,
            cause,
            op,
            message,
        }) => {
            assert_eq!(key, bad.key());
            assert_eq!(cause, bad.key());
            assert_eq!(op, "fail");
            assert_eq!(message, "disk on fire");
        }
        other => panic!("expected a task error, got {other:?}"),
    }
    match after.result() {
        Err(ClientError::Task { key, cause, op, .. }) => {
            assert_eq!(key, after.key());
            assert_eq!(cause, bad.key(), "the error names the upstream cause");
            assert_eq!(op, "fail");
        }
        other => panic!("expected a task error, got {other:?}"),
    }
    let wrong_type = c.submit("add", [Arg::from("a"), Arg::from(1)]).unwrap();
    assert!(matches!(wrong_type.result(), Err(ClientError::Task { .. })));
    // The cluster is still fine.
    assert_eq!(
        c.submit("inc", [Arg::from(1)])
            .unwrap()
            .result_as::<i64>()
            .unwrap(),
        2
    );
}

#[test]
fn unknown_op_fails_at_submit_naming_it() {
    let c = client(1);
    match c.submit("no_such_op", [Arg::from(1)]) {
        Err(ClientError::UnknownOp { op, .. }) => assert_eq!(op, "no_such_op"),
        other => panic!("expected UnknownOp, got {other:?}"),
    }
    // A client without a registry is checked by the scheduler instead.
    let raw = rask_client::Client::connect(c.scheduler_address()).unwrap();
    let f = raw.submit("no_such_op", [Arg::from(1)]).unwrap();
    match f.result() {
        Err(ClientError::Rejected(m)) => assert!(m.contains("no_such_op"), "{m}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn who_has_and_scheduler_info() {
    let c = client(2);
    let info = c.scheduler_info().unwrap();
    assert_eq!(info.workers.len(), 2);
    assert!(info
        .workers
        .iter()
        .all(|w| w.nthreads == 1 && w.addr.starts_with("tcp://127.0.0.1:")));
    let x = c.submit("inc", [Arg::from(1)]).unwrap();
    x.wait().unwrap();
    let wh = c.who_has(std::slice::from_ref(&x)).unwrap();
    let holders = &wh[x.key()];
    assert_eq!(holders.len(), 1);
    assert!(info.workers.iter().any(|w| w.addr == holders[0]));
    let info = c.scheduler_info().unwrap();
    let memory = info
        .tasks_by_state
        .iter()
        .find(|(s, _)| s == "memory")
        .unwrap()
        .1;
    assert_eq!(memory, 1);
}

/// A key released (its last future dropped) and submitted again at once, with other
/// arguments: the release reaches the scheduler first (releases wait to be sent together,
/// but never behind a later message), so the key is computed again from the new task.
#[test]
fn a_key_released_and_submitted_again_at_once_is_computed_again() {
    // A release sent behind the new task would forget it while it is held: the gather
    // would wait for ever, so the test has a deadline.
    common::within(Duration::from_secs(60), || {
        let c = client(2);
        for round in 0..50 {
            let mut g = Graph::new();
            g.task("again", "inc", [Arg::from(round)]);
            let f = c.compute(&g, &["again"]).unwrap();
            assert_eq!(
                c.gather(&f).unwrap(),
                vec![Value::Int(round + 1)],
                "{round}"
            );
            drop(f);
        }
        // Many released together still all go.
        let futs = c.map("inc", (0..1000).map(|i| [Arg::from(i)])).unwrap();
        c.gather(&futs).unwrap();
        drop(futs);
        eventually("every key released", || {
            c.scheduler_info()
                .unwrap()
                .tasks_by_state
                .iter()
                .all(|(_, n)| *n == 0)
        });
    });
}

#[test]
fn releasing_futures_frees_worker_memory() {
    let c = client(2);
    let futs = c
        .map("bytes", (0..20).map(|_| [Arg::from(100_000), Arg::from(1)]))
        .unwrap();
    for f in &futs {
        f.wait().unwrap();
    }
    let stored = |c: &Client| {
        c.scheduler_info()
            .unwrap()
            .workers
            .iter()
            .map(|w| w.stored_keys)
            .sum::<u64>()
    };
    assert_eq!(stored(&c), 20);
    let bytes: u64 = c
        .scheduler_info()
        .unwrap()
        .workers
        .iter()
        .map(|w| w.stored_bytes)
        .sum();
    assert!(bytes >= 20 * 100_000, "{bytes}");
    drop(futs);
    eventually("workers free the released data", || stored(&c) == 0);
    let info = c.scheduler_info().unwrap();
    assert!(
        info.tasks_by_state.iter().all(|(_, n)| *n == 0),
        "{:?}",
        info.tasks_by_state
    );
}

#[test]
fn two_clients_share_a_scheduler() {
    let a = client(2);
    let b = Client::connect(a.scheduler_address()).unwrap();
    assert_eq!(a.scheduler_info().unwrap().clients, 2);
    let mut g = Graph::new();
    g.value("shared-x", 10);
    let fa = a.compute(&g, &["shared-x"]).unwrap();
    let fb = b.compute(&g, &["shared-x"]).unwrap();
    assert_eq!(fa[0].result_as::<i64>().unwrap(), 10);
    assert_eq!(fb[0].result_as::<i64>().unwrap(), 10);
    // One client releasing does not take the data from the other.
    drop(fa);
    let fb2 = b.submit("inc", [Arg::from(&fb[0])]).unwrap();
    assert_eq!(fb2.result_as::<i64>().unwrap(), 11);
    // Dropping the client and its futures closes its connection.
    drop((fb, fb2, b));
    eventually("the departed client's keys are released", || {
        a.scheduler_info()
            .unwrap()
            .tasks_by_state
            .iter()
            .all(|(_, n)| *n == 0)
    });
}

#[test]
fn clients_need_not_know_every_op_but_must_agree_on_those_they_share() {
    let mut mine = Registry::builtin();
    mine.register("my_op", 1, |a| Ok(a[0].clone()));
    let cluster = LocalCluster::builder()
        .n_workers(1)
        .registry(mine.clone())
        .build()
        .unwrap();
    let c = Client::for_cluster(cluster).unwrap();
    let f = c.submit("my_op", [Arg::from(5)]).unwrap();
    assert_eq!(f.result_as::<i64>().unwrap(), 5);
    // A client knowing only the built-ins (a subset of the cluster's ops) is welcome, and
    // its tasks run.
    let plain = Client::connect(c.scheduler_address()).unwrap();
    assert_eq!(
        plain
            .submit("inc", [Arg::from(1)])
            .unwrap()
            .result_as::<i64>()
            .unwrap(),
        2
    );
    // One with my_op in another version is refused, the op named.
    let mut other = Registry::builtin();
    other.register("my_op", 2, |a| Ok(a[0].clone()));
    let err = match Client::connect_with_registry(c.scheduler_address(), &other) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a client with another version of my_op must be refused"),
    };
    assert!(
        err.contains("op version mismatch") && err.contains("my_op"),
        "{err}"
    );
}

#[test]
fn async_await_from_another_runtime() {
    let c = client(2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let v = rt.block_on(async {
        let f = c.submit("add", [Arg::from(20), Arg::from(22)]).unwrap();
        (&f).await.unwrap()
    });
    assert_eq!(v, Value::Int(42));
}

#[test]
fn chains_and_trees_give_exact_results() {
    let c = client(2);
    let mut g = Graph::new();
    g.value("c-0", 0);
    for i in 1..2000 {
        g.task(&format!("c-{i}"), "inc", [Arg::key(format!("c-{}", i - 1))]);
    }
    assert_eq!(c.get(&g, &["c-1999"]).unwrap(), vec![Value::Int(1999)]);

    let leaves = c
        .map("identity", (0..1000).map(|i| [Arg::from(i)]))
        .unwrap();
    let mut level = leaves;
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| {
                c.submit("add", p.iter().map(Arg::from).collect::<Vec<_>>())
                    .unwrap()
            })
            .collect();
    }
    assert_eq!(level[0].result_as::<i64>().unwrap(), 999 * 1000 / 2);
}

/// Echoes (the message path's ceiling) go through the scheduler to the workers and every
/// one comes back; another may follow, and with no worker the scheduler answers itself.
#[test]
fn echoes_pass_through_the_workers_and_all_come_back() {
    common::within(Duration::from_secs(60), || {
        let c = client(2);
        assert!(c.echo(10_000).expect("echoes back") > Duration::ZERO);
        assert!(c.echo(3).expect("echoes back again") > Duration::ZERO);
        assert_eq!(c.echo(0).expect("nothing to send"), Duration::ZERO);
        let x = c.submit("inc", [Arg::from(1)]).expect("submits");
        assert_eq!(x.result_as::<i64>().expect("a result"), 2);
        let alone = client(0);
        assert!(alone.echo(5).expect("the scheduler answers") > Duration::ZERO);
    });
}

/// A map larger than one submission goes in several, the first sent (and taken by the
/// scheduler) before the rest is built; every task's arguments, buffers among them, reach
/// it across the submissions' boundaries.
#[test]
fn a_large_map_goes_in_submissions_the_first_sent_before_the_rest_is_built() {
    let c = client(2);
    let n = 2 * rask::MAP_CHUNK + 3;
    let mut known_while_building = None;
    let items = (0..n).map(|i| {
        if i == rask::MAP_CHUNK + 1 {
            // Asked on the same connection as the submissions: answered after what was
            // sent before.
            let info = c.scheduler_info().unwrap();
            known_while_building = Some(info.tasks_by_state.iter().map(|(_, n)| n).sum::<u64>());
        }
        [Arg::Value(Value::Bytes(
            format!("item {i}").into_bytes().into(),
        ))]
    });
    let fs = c.map("identity", items).unwrap();
    assert_eq!(known_while_building, Some(rask::MAP_CHUNK as u64));
    let vals = c.gather(&fs).unwrap();
    assert_eq!(vals.len(), n);
    for (i, v) in vals.iter().enumerate() {
        assert_eq!(
            v,
            &Value::Bytes(format!("item {i}").into_bytes().into()),
            "item {i}"
        );
    }
}

/// A map whose items hold futures reads their values (such a submission goes as the graph
/// of its tasks, each naming its inputs); items without futures beside them read none.
#[test]
fn a_map_over_futures_reads_their_values() {
    let c = client(2);
    let xs = c.map("inc", (0..20).map(|i| [Arg::from(i)])).unwrap();
    let items = xs.iter().enumerate().map(|(i, x)| match i % 3 {
        0 => [Arg::from(i as i64 * 100), Arg::from(1)],
        _ => [Arg::from(x), Arg::from(1000)],
    });
    let ys = c.map("add", items).unwrap();
    let vals = c.gather(&ys).unwrap();
    for (i, v) in vals.iter().enumerate() {
        let want = match i % 3 {
            0 => i as i64 * 100 + 1,
            _ => i as i64 + 1 + 1000,
        };
        assert_eq!(*v, Value::Int(want), "item {i}");
    }
}

/// An item that cannot be sent (arguments nested too deep) fails a map already partly
/// sent: nothing is returned, and the tasks sent before are released.
#[test]
fn a_map_failing_after_its_first_submission_releases_what_it_sent() {
    let c = client(1);
    let bad = rask::MAP_CHUNK + 5;
    let items = (0..rask::MAP_CHUNK + 10).map(|i| {
        let mut a = Arg::from(i as i64);
        if i == bad {
            for _ in 0..1000 {
                a = Arg::List(vec![a]);
            }
        }
        [a]
    });
    let e = c.map("identity", items).unwrap_err();
    assert!(matches!(e, ClientError::Rejected(_)), "{e}");
    assert_eq!(c.held_keys(), 0);
    eventually("the scheduler to forget the tasks sent", || {
        let info = c.scheduler_info().unwrap();
        info.tasks_by_state.iter().map(|(_, n)| n).sum::<u64>() == 0
    });
}

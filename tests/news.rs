//! What the scheduler tells a client, read on the wire by a client speaking the protocol
//! itself: news of a key names its holders by id, and where a worker can be reached
//! comes once per connection, before the first news naming it. Each test fails after
//! [`DEADLINE`] instead of hanging.

use rask::Client;
use rask_proto::msg::{map_key, Holder, Role, ToClient, ToScheduler, UpdateGraphMsg};
use rask_proto::{Datum, WorkerId};

mod common;

use common::{raw_hello, scheduler, within, worker_info, worker_with, DEADLINE};

/// What a raw client heard while its `n` tasks `inc-0` … were computed: the messages
/// in order, up to the last key in memory.
fn submit_and_listen(addr: &str, name: &str, n: usize) -> Vec<ToClient> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = rask_transport::ConnConfig::default();
        let (mut r, w, _) = rask_transport::connect(addr, &raw_hello(Role::Client, name), cfg)
            .await
            .unwrap();
        let tx = rask_transport::spawn_writer::<ToScheduler, _>(w);
        let keys: Vec<String> = (0..n).map(|i| format!("inc-{i}")).collect();
        let tasks = keys
            .iter()
            .enumerate()
            .map(|(i, k)| rask_proto::msg::TaskSpec {
                key: k.clone(),
                op: "inc".into(),
                args: Datum::List(vec![Datum::Int(i as i64)]),
                deps: vec![],
                resources: vec![],
            })
            .collect();
        tx.send(ToScheduler::UpdateGraph(UpdateGraphMsg {
            tasks,
            wanted: keys,
            more: false,
        }))
        .unwrap();
        let mut heard = Vec::new();
        let mut in_memory = 0;
        while in_memory < n {
            let batch = r.read_batch::<ToClient>().await.unwrap().unwrap();
            for m in batch.msgs {
                in_memory += keys_named(&m).len();
                heard.push(m);
            }
        }
        heard
    })
}

/// The keys a message says are in memory, with the holders it names for them.
fn keys_named(m: &ToClient) -> Vec<(String, Vec<WorkerId>)> {
    match m {
        ToClient::KeyInMemory { key, holders, .. } => vec![(key.to_string(), holders.clone())],
        ToClient::MapInMemory {
            prefix,
            holders,
            keys,
        } => keys
            .iter()
            .map(|k| (map_key(prefix, k.n), holders.clone()))
            .collect(),
        _ => Vec::new(),
    }
}

/// Checks that every holder named by news was told before, once, with what the
/// scheduler reports of that worker; returns the workers told, in order.
fn told_before_named(heard: &[ToClient], c: &Client, names: &[&str]) -> Vec<WorkerId> {
    let mut told: Vec<WorkerId> = Vec::new();
    for m in heard {
        match m {
            ToClient::Workers { holders } => {
                for Holder {
                    worker,
                    addr,
                    shm_addr,
                    host_id,
                    pid,
                    device,
                } in holders
                {
                    assert!(!told.contains(worker), "worker {worker:?} told twice");
                    told.push(*worker);
                    let info = names
                        .iter()
                        .map(|n| worker_info(c, n))
                        .find(|i| i.id == *worker)
                        .unwrap_or_else(|| panic!("told of unknown worker {worker:?}"));
                    assert_eq!(
                        (addr, shm_addr, host_id, *pid, device),
                        (
                            &info.addr,
                            &info.shm_addr,
                            &info.host_id,
                            info.pid,
                            &info.device
                        )
                    );
                }
            }
            ToClient::KeyInMemory { .. } | ToClient::MapInMemory { .. } => {
                for (key, holders) in keys_named(m) {
                    assert_eq!(holders.len(), 1, "{key}: {holders:?}");
                    assert!(
                        told.contains(&holders[0]),
                        "{key} names {:?} before it was told",
                        holders[0]
                    );
                }
            }
            other => panic!("unexpected news: {other:?}"),
        }
    }
    told
}

#[test]
fn news_names_holders_by_id_each_told_once_per_connection_before_it_is_named() {
    within(DEADLINE, || {
        let (_s, addr) = scheduler(&[]);
        let _a = worker_with(&[], &addr, "a", &[]);
        let _b = worker_with(&[], &addr, "b", &[]);
        let c = Client::connect(&addr).unwrap();
        c.wait_for_workers(2).unwrap();
        let n = 200;
        let heard = submit_and_listen(&addr, "raw-1", n);
        let told = told_before_named(&heard, &c, &["a", "b"]);
        // Both workers computed some of 200 tasks; each was told once.
        let mut told_sorted = told.clone();
        told_sorted.sort();
        let mut ids = vec![worker_info(&c, "a").id, worker_info(&c, "b").id];
        ids.sort();
        assert_eq!(told_sorted, ids);
        let news = heard
            .iter()
            .filter(|m| matches!(m, ToClient::Workers { .. }))
            .count();
        assert!(news <= 2, "{news} messages of workers");
        // Another connection is told again: it knows nothing of the first one's.
        let heard = submit_and_listen(&addr, "raw-2", n);
        // Each key named once (its map's form, by number).
        let mut named: Vec<String> = heard.iter().flat_map(keys_named).map(|(k, _)| k).collect();
        named.sort();
        let mut keys: Vec<String> = (0..n).map(|i| format!("inc-{i}")).collect();
        keys.sort();
        assert_eq!(named, keys);
        assert!(
            !heard
                .iter()
                .any(|m| matches!(m, ToClient::KeyInMemory { .. })),
            "keys of a map's form are named by number"
        );
        assert!(!told_before_named(&heard, &c, &["a", "b"]).is_empty());
    });
}

/// A client's keys of a map's form that it did not submit as a map (a graph's, kept by
/// their text) hear their news by number as well: each future waiting on one wakes with
/// its value, beside a key of no map's form and a map's own keys.
#[test]
fn keys_of_a_maps_form_in_a_graph_hear_their_news_by_number() {
    within(DEADLINE, || {
        let (_s, addr) = scheduler(&[]);
        let _a = worker_with(&[], &addr, "a", &[]);
        let c = Client::connect(&addr).unwrap();
        c.wait_for_workers(1).unwrap();
        let mut g = rask::Graph::new();
        g.task("x-1", "inc", [rask::Arg::from(1)]);
        g.task("x-2", "inc", [rask::Arg::key("x-1")]);
        g.task("x-3", "inc", [rask::Arg::key("x-2")]);
        // A leading zero: no map's form, named by its text.
        g.task("x-03", "inc", [rask::Arg::key("x-3")]);
        let futures = c.compute(&g, &["x-3", "x-2", "x-03"]).unwrap();
        let values: Vec<rask::Value> = futures.iter().map(|f| f.result().unwrap()).collect();
        assert_eq!(
            values,
            [
                rask::Value::Int(4),
                rask::Value::Int(3),
                rask::Value::Int(5)
            ]
        );
        let mapped = c
            .map("inc", (0..500i64).map(|i| [rask::Arg::from(i)]))
            .unwrap();
        let sum: i64 = c
            .gather(&mapped)
            .unwrap()
            .into_iter()
            .map(|v| <i64 as rask::FromValue>::from_value(v).unwrap())
            .sum();
        assert_eq!(sum, (1..=500).sum::<i64>());
    });
}

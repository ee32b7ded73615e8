//! A worker cut off by the network in the middle of a graph: the scheduler notices it is
//! silent within its time to live and gives its work to the other worker; the results are
//! exact; when the network heals the worker joins again as a new member (what it held is
//! taken back only where it is not stale) and takes new work. "Hosts" are network
//! namespaces the test makes on a bridge (root and iproute2 needed; elsewhere the test
//! says why and skips).

mod common;

use std::process::Command;
use std::time::Instant;

use common::{ip, within, DEADLINE};
use rask::{Arg, Graph};

fn worker_in(ns: &str, ip_addr: &str, addr: &str, name: &str) -> common::Proc {
    common::Proc::new(
        Command::new("ip")
            .args(["netns", "exec", ns, common::RASK, "worker", addr])
            .args(["--name", name, "--nthreads", "1"])
            .args(["--listen", &format!("{ip_addr}:0")])
            .args(["--peer-timeout", "2", "--death-timeout", "120"])
            .env("RASK_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// `CHAINS` chains of `LEN` tasks, each link sleeping a little: `c-K-I` is `K + I + 1`.
const CHAINS: i64 = 16;
const LEN: i64 = 10;

fn graph(tag: &str) -> (Graph, Vec<String>) {
    let mut g = Graph::new();
    let mut outs = Vec::new();
    for k in 0..CHAINS {
        let key = |i: i64| format!("{tag}-{k}-{i}");
        g.task(&key(0), "sleep", [Arg::from(0.02), Arg::from(k + 1)]);
        for i in 1..LEN {
            g.task(
                &format!("{tag}-{k}-{i}-s"),
                "sleep",
                [Arg::from(0.02), Arg::key(key(i - 1))],
            );
            g.task(&key(i), "inc", [Arg::key(format!("{tag}-{k}-{i}-s"))]);
        }
        outs.push(key(LEN - 1));
    }
    (g, outs)
}

fn check(values: &[rask::Value]) {
    for (k, v) in values.iter().enumerate() {
        assert_eq!(*v, rask::Value::Int(k as i64 + LEN), "chain {k}");
    }
}

#[test]
fn a_partitioned_worker_is_noticed_its_work_rescheduled_and_it_rejoins_when_healed() {
    within(DEADLINE, || {
        let (lan, here) = match common::make_lan(2) {
            Ok(l) => l,
            Err(e) => {
                common::cannot_run(&format!(
                    "cannot create network namespaces here ({e}); this test needs root and iproute2"
                ));
                return;
            }
        };
        let (_sched, addr) = common::scheduler_with(&[], &["--host", &here, "--worker-ttl", "3"]);
        let (cut_ns, cut_ip) = lan.hosts[0].clone();
        let (ok_ns, ok_ip) = lan.hosts[1].clone();
        let _cut = worker_in(&cut_ns, &cut_ip, &addr, "cut");
        let _ok = worker_in(&ok_ns, &ok_ip, &addr, "ok");
        let c = rask::Client::connect(&addr).unwrap();
        c.wait_for_workers(2).unwrap();
        let cut_id = common::worker_info(&c, "cut").id;

        let (g, outs) = graph("a");
        let outs: Vec<&str> = outs.iter().map(String::as_str).collect();
        let futures = c.compute(&g, &outs).unwrap();
        common::eventually("the worker to be cut has done some of the work", || {
            common::tasks_run_by(&c, "cut") >= 3
        });
        // Its host drops off the network: no close reaches anyone.
        ip(&["-n", &cut_ns, "link", "set", "eth0", "down"]).unwrap();
        let cut_at = Instant::now();
        common::eventually("the scheduler notices the silent worker", || {
            !c.scheduler_info()
                .unwrap()
                .workers
                .iter()
                .any(|w| w.name == "cut")
        });
        println!(
            "the cut-off worker was dropped {:.1} s after the cut (its time to live: 3 s)",
            cut_at.elapsed().as_secs_f64()
        );
        // Its work is done by the other worker: exact results.
        check(&c.gather(&futures).unwrap());

        // The network heals: it joins again as a new member, and works.
        ip(&["-n", &cut_ns, "link", "set", "eth0", "up"]).unwrap();
        let healed = Instant::now();
        common::eventually("the worker joins again", || {
            c.scheduler_info()
                .unwrap()
                .workers
                .iter()
                .any(|w| w.name == "cut" && w.id != cut_id)
        });
        println!(
            "it joined again {:.1} s after the network healed",
            healed.elapsed().as_secs_f64()
        );
        let ran_before = common::tasks_run_by(&c, "cut");
        let (g, outs) = graph("b");
        let outs: Vec<&str> = outs.iter().map(String::as_str).collect();
        check(&c.get(&g, &outs).unwrap());
        common::eventually("the worker back reports new work done", || {
            common::tasks_run_by(&c, "cut") > ran_before
        });
        // The first graph's results are still exact, whoever holds them now.
        check(&c.gather(&futures).unwrap());
        drop(c);
        drop(lan);
    });
}

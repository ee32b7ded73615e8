//! Two "hosts" on one machine: a network namespace the test creates, joined to this one by
//! a veth pair. The scheduler, worker a and the client run here; worker b runs in the
//! namespace. Data between them must take tcp (another namespace is another host to the
//! transport selection), and arrive exact. Needs root (CAP_NET_ADMIN) and `ip`; elsewhere
//! the test says why and skips.

use std::process::Command;

use rask::{Arg, Client, Graph, Value};

mod common;

use common::{ip, within, DEADLINE};

/// The namespace and veth pair; removed when dropped.
struct Net {
    ns: String,
    veth: String,
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it ours.
        let _ = ip(&["netns", "del", &self.ns]);
        let _ = ip(&["link", "del", &self.veth]);
    }
}

/// Creates the namespace; returns it with (our address, its address).
fn make_net() -> Result<(Net, String, String), String> {
    let id = std::process::id() % 100_000;
    let net = Net {
        ns: format!("rask-test-{id}"),
        veth: format!("rk{id}a"),
    };
    let peer = format!("rk{id}b");
    let subnet = format!("10.213.{}", id % 250);
    let (here, there) = (format!("{subnet}.1"), format!("{subnet}.2"));
    ip(&["netns", "add", &net.ns])?;
    ip(&[
        "link", "add", &net.veth, "type", "veth", "peer", "name", &peer,
    ])?;
    ip(&["link", "set", &peer, "netns", &net.ns])?;
    ip(&["addr", "add", &format!("{here}/24"), "dev", &net.veth])?;
    ip(&["link", "set", &net.veth, "up"])?;
    let in_ns = |args: &[&str]| {
        let mut a = vec!["netns", "exec", &net.ns, "ip"];
        a.extend_from_slice(args);
        ip(&a)
    };
    in_ns(&["addr", "add", &format!("{there}/24"), "dev", &peer])?;
    in_ns(&["link", "set", &peer, "up"])?;
    in_ns(&["link", "set", "lo", "up"])?;
    Ok((net, here, there))
}

#[test]
fn workers_on_two_hosts_exchange_data_over_tcp() {
    within(DEADLINE, || {
        let (net, here, there) = match make_net() {
            Ok(n) => n,
            Err(e) => {
                println!("SKIPPED: cannot create a network namespace here ({e}); this test needs root and iproute2");
                return;
            }
        };
        let (_sched, addr) = common::scheduler_with(&[], &["--host", &here]);
        let worker = |prefix: &[&str], name: &str, listen: &str| {
            let listen = format!("{listen}:0");
            let resource = format!("on-{name}=1");
            common::worker_with(
                prefix,
                &addr,
                name,
                &["--quiet", "--listen", &listen, "--resources", &resource],
            )
        };
        let _a = worker(&[], "a", &here);
        let _b = worker(&["ip", "netns", "exec", &net.ns], "b", &there);
        let c = Client::connect(&addr).unwrap();
        c.wait_for_workers(2).unwrap();
        let info = c.scheduler_info().unwrap();
        let host = |n: &str| {
            info.workers
                .iter()
                .find(|w| w.name == n)
                .map(|w| (w.host_id.clone(), w.addr.clone()))
                .unwrap()
        };
        assert_ne!(host("a").0, host("b").0, "the namespace is another host");
        assert!(host("b").1.contains(&there), "{:?}", host("b"));

        // Payloads both ways, read on the other host and echoed back to the client.
        let mut g = Graph::new();
        let mut keys = Vec::new();
        let mut want = Vec::new();
        for (k, (from, to)) in [("a", "b"), ("b", "a")].into_iter().enumerate() {
            for (j, n) in [1usize, 70_000, 3 << 20].into_iter().enumerate() {
                let fill = (10 * k + j + 1) as i64;
                let p = format!("p-{from}-{n}");
                g.task(&p, "bytes", [Arg::from(n as i64), Arg::from(fill)])
                    .resources(&[(format!("on-{from}").as_str(), 1.0)]);
                g.task(&format!("sum-{p}"), "checksum", [Arg::key(&p)])
                    .resources(&[(format!("on-{to}").as_str(), 1.0)]);
                g.task(&format!("echo-{p}"), "identity", [Arg::key(&p)])
                    .resources(&[(format!("on-{to}").as_str(), 1.0)]);
                let bytes = Value::Bytes(vec![fill as u8; n].into());
                keys.push(format!("sum-{p}"));
                want.push(Value::Int(common::fnv1a(&vec![fill as u8; n]) as i64));
                keys.push(format!("echo-{p}"));
                want.push(bytes);
            }
        }
        let outputs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let got = c.get(&g, &outputs).unwrap();
        for ((k, w), g) in keys.iter().zip(&want).zip(&got) {
            assert!(w == g, "{k} differs");
        }
        drop(c);
        drop(net);
    });
}

#[test]
fn hosts_bound_to_every_interface_or_one_announce_reachable_addresses_and_trade_data_peer_to_peer()
{
    within(DEADLINE, || {
        let (lan, _here) = match common::make_lan(3) {
            Ok(l) => l,
            Err(e) => {
                common::cannot_run(&format!("cannot create network namespaces here ({e}); this test needs root and iproute2"));
                return;
            }
        };
        let (s_ns, s_ip) = lan.hosts[0].clone();
        let (a_ns, a_ip) = lan.hosts[1].clone();
        let (b_ns, b_ip) = lan.hosts[2].clone();
        // The scheduler listens on every interface of its host and announces its eth0.
        let s_prefix = ["ip", "netns", "exec", s_ns.as_str()];
        let (_sched, addr) = common::scheduler_with(&s_prefix, &["--host", "0.0.0.0"]);
        assert!(
            addr.starts_with(&format!("tcp://{s_ip}:")),
            "the scheduler announces {addr}, not its address {s_ip}"
        );
        // Worker a on every interface; worker b on its eth0 by name; a cuda-worker with
        // two simulated GPUs on b's host, on every interface.
        let a_prefix = ["ip", "netns", "exec", a_ns.as_str()];
        let b_prefix = ["ip", "netns", "exec", b_ns.as_str()];
        let _a = common::worker_with(
            &a_prefix,
            &addr,
            "a",
            &["--quiet", "--host", "0.0.0.0", "--resources", "on-a=1"],
        );
        let _b = common::worker_with(
            &b_prefix,
            &addr,
            "b",
            &["--quiet", "--interface", "eth0", "--resources", "on-b=1"],
        );
        let _gpus = common::Proc::new(
            std::process::Command::new("ip")
                .args(["netns", "exec", &b_ns, env!("CARGO_BIN_EXE_cuda-worker")])
                .args([
                    &addr,
                    "--sim-gpus",
                    "2:64MiB",
                    "--host",
                    "0.0.0.0",
                    "--name",
                    "g",
                ])
                .env("RASK_WORKER_BIN", common::RASK)
                .env("RASK_LOG", "warn")
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        // The client is on a fourth host (this one, on the bridge).
        let c = common::connect_retrying(&addr);
        c.wait_for_workers(4).unwrap();
        let info = c.scheduler_info().unwrap();
        for w in &info.workers {
            let want = if w.name == "a" { &a_ip } else { &b_ip };
            assert!(
                w.addr.starts_with(&format!("tcp://{want}:")),
                "{} announces {}, not {want}",
                w.name,
                w.addr
            );
        }

        // Payloads made on one host and read on another, both ways, and onto a GPU.
        let mut g = Graph::new();
        let mut keys = Vec::new();
        let mut want = Vec::new();
        let routes = [("on-a", "on-b"), ("on-b", "on-a"), ("on-a", "gpu")];
        for (k, (from, to)) in routes.into_iter().enumerate() {
            let n = (1 << 20) + k;
            let fill = k as i64 + 1;
            let p = format!("p-{k}");
            g.task(&p, "bytes", [Arg::from(n as i64), Arg::from(fill)])
                .resources(&[(from, 1.0)]);
            g.task(&format!("sum-{k}"), "checksum", [Arg::key(&p)])
                .resources(&[(to, 1.0)]);
            keys.push(format!("sum-{k}"));
            want.push(Value::Int(common::fnv1a(&vec![fill as u8; n]) as i64));
        }
        let outputs: Vec<&str> = keys.iter().map(String::as_str).collect();
        assert_eq!(c.get(&g, &outputs).unwrap(), want);
        // The bytes went from worker to worker over tcp: each reader counts them (in
        // its next heartbeat).
        let tcp = |name: &str| -> u64 {
            c.scheduler_info()
                .unwrap()
                .workers
                .iter()
                .filter(|w| w.name.starts_with(name))
                .flat_map(|w| w.received.clone())
                .filter(|(k, _)| k == "tcp")
                .map(|(_, v)| v)
                .sum()
        };
        for reader in ["b", "a", "g"] {
            common::eventually(&format!("{reader} reports a MiB received over tcp"), || {
                tcp(reader) > 1 << 20
            });
        }
        drop(c);
        drop(lan);
    });
}

#[test]
fn a_worker_cut_off_from_its_scheduler_notices_within_its_peer_timeout_and_rejoins_when_healed() {
    use std::io::BufRead;
    within(DEADLINE, || {
        let (lan, _here) = match common::make_lan(2) {
            Ok(l) => l,
            Err(e) => {
                common::cannot_run(&format!("cannot create network namespaces here ({e}); this test needs root and iproute2"));
                return;
            }
        };
        let (s_ns, s_ip) = lan.hosts[0].clone();
        let (w_ns, _) = lan.hosts[1].clone();
        let addr = format!("tcp://{s_ip}:8786");
        let _sched = common::Proc::new(
            Command::new("ip")
                .args(["netns", "exec", &s_ns, common::RASK, "scheduler"])
                .args(["--host", "0.0.0.0", "--port", "8786"])
                .env("RASK_LOG", "warn")
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut worker = common::Proc::new(
            Command::new("ip")
                .args(["netns", "exec", &w_ns, common::RASK, "worker", &addr])
                .args([
                    "--name",
                    "cut",
                    "--peer-timeout",
                    "2",
                    "--death-timeout",
                    "100",
                ])
                .env("RASK_LOG", "info")
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
        let err = std::io::BufReader::new(worker.0.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let c = common::connect_retrying(&addr);
        c.wait_for_workers(1).unwrap();
        let before = c.scheduler_info().unwrap().workers[0].id;
        drop(c);

        // The scheduler's host drops off the network: no close reaches the worker.
        ip(&["-n", &s_ns, "link", "set", "eth0", "down"]).unwrap();
        let lost = loop {
            let line = lines
                .recv()
                .expect("the worker ended without noticing that it lost the scheduler");
            if line.contains("lost the scheduler") {
                break line;
            }
        };
        assert!(lost.contains("joining it again"), "{lost}");

        // The network heals: the worker joins again, as a new worker, and works.
        ip(&["-n", &s_ns, "link", "set", "eth0", "up"]).unwrap();
        let c = common::connect_retrying(&addr);
        common::eventually("the worker joins again", || {
            let i = c.scheduler_info().unwrap();
            i.workers.len() == 1 && i.workers[0].id != before && i.workers[0].name == "cut"
        });
        let f = c
            .submit("add", [rask::Arg::from(20i64), rask::Arg::from(22i64)])
            .unwrap();
        assert_eq!(f.result_as::<i64>().unwrap(), 42);
        drop(c);
        drop(lan);
    });
}

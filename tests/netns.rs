//! Two "hosts" on one machine: a network namespace the test creates, joined to this one by
//! a veth pair. The scheduler, worker a and the client run here; worker b runs in the
//! namespace. Data between them must take tcp (another namespace is another host to the
//! transport selection), and arrive exact. Needs root (CAP_NET_ADMIN) and `ip`; elsewhere
//! the test says why and skips.

use std::process::Command;

use rask::{Arg, Client, Graph, Value};

mod common;

use common::{within, DEADLINE};

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

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
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

//! End-to-end tests with real processes: `rask scheduler`, `rask worker`s and a client,
//! over TCP on 127.0.0.1. Faults: SIGKILL of a worker mid-graph (its data recomputed), a
//! task that kills its workers, garbage / oversize / half-finished frames from a raw TCP
//! peer. Each test fails after [`DEADLINE`] instead of hanging.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use rask::{Arg, Client, ClientError, Future, Graph, LocalCluster, Value};

mod common;

use common::{
    eventually, random_bytes, scheduler, seed, tasks_run_by, tmpfile, within, worker_info, Proc,
    DEADLINE, RASK,
};

/// A client's hello as the scheduler expects it, for raw-protocol tests to alter.
fn client_hello(name: &str) -> rask_proto::msg::Hello {
    common::raw_hello(rask_proto::msg::Role::Client, name)
}

fn worker(addr: &str, name: &str) -> Proc {
    common::worker_with(&[], addr, name, &[])
}

fn count(c: &Client, state: &str) -> u64 {
    c.scheduler_info()
        .unwrap()
        .tasks_by_state
        .iter()
        .find(|(s, _)| s == state)
        .map_or(0, |(_, n)| *n)
}

/// Worker a alone computes the first two levels of a sum tree over 32 random numbers: it
/// is the only holder of the 16 pair sums, and the leaves under them are already released.
/// a is frozen (with worker b, if `survivor`, which joined meanwhile), the rest of the
/// tree is submitted and assigned, and a is SIGKILLed mid-graph. Once the scheduler has
/// dropped a, nothing is in memory anywhere; b is thawed (or joins now) and everything
/// must be recomputed on it from lineage: the total equals the sum computed here, the pair
/// sums now live on b, and b ran all 63 tasks of the graph, the 32 released leaves
/// included.
fn sigkill_mid_graph(survivor: bool) {
    let (_s, addr) = scheduler(&[]);
    let a = worker(&addr, "a");
    let c = Client::connect(&addr).unwrap();
    c.wait_for_workers(1).unwrap();
    let xs: Vec<i64> = random_bytes(4 * 32, seed())
        .chunks(4)
        .map(|b| i64::from(u32::from_le_bytes(b.try_into().unwrap())))
        .collect();
    let want: i64 = xs.iter().map(|x| x + 1).sum();
    let mut g = Graph::new();
    for (i, x) in xs.iter().enumerate() {
        g.task(&format!("leaf-{i}"), "inc", [Arg::from(*x)]);
    }
    let pair_keys: Vec<String> = (0..16).map(|j| format!("pair-{j}")).collect();
    for (j, key) in pair_keys.iter().enumerate() {
        g.task(
            key,
            "add",
            [
                Arg::key(format!("leaf-{}", 2 * j)),
                Arg::key(format!("leaf-{}", 2 * j + 1)),
            ],
        );
    }
    let keys: Vec<&str> = pair_keys.iter().map(String::as_str).collect();
    let pairs = c.compute(&g, &keys).unwrap();
    for p in &pairs {
        p.wait().unwrap();
    }
    eventually("the leaves are released", || count(&c, "released") == 32);
    let a_addr = worker_info(&c, "a").addr;
    for (key, holders) in c.who_has(&pairs).unwrap() {
        assert_eq!(holders, std::slice::from_ref(&a_addr), "{key}");
    }

    let b = survivor.then(|| {
        let b = worker(&addr, "b");
        c.wait_for_workers(2).unwrap();
        b
    });
    a.freeze();
    if let Some(b) = &b {
        b.freeze();
    }
    let mut level: Vec<Future> = pairs
        .chunks(2)
        .map(|p| c.submit("add", p.iter().map(Arg::from)).unwrap())
        .collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| c.submit("add", p.iter().map(Arg::from)).unwrap())
            .collect();
    }
    let total = level.pop().unwrap();
    eventually("tasks of the tree are assigned", || {
        count(&c, "processing") > 0
    });
    a.kill();
    eventually("the scheduler drops the dead worker", || {
        c.scheduler_info().unwrap().workers.len() == usize::from(survivor)
    });
    assert_eq!(
        count(&c, "memory"),
        0,
        "what only the dead worker held is not in memory anywhere"
    );
    let _b = match b {
        Some(b) => {
            b.thaw();
            b
        }
        None => worker(&addr, "b"),
    };
    c.wait_for_workers(1).unwrap();

    let b_addr = worker_info(&c, "b").addr;
    eventually("the pair sums are recomputed on b", || {
        let who = c.who_has(&pairs).unwrap();
        who.len() == pairs.len() && who.values().all(|h| h == std::slice::from_ref(&b_addr))
    });
    assert_eq!(total.result_as::<i64>().unwrap(), want);
    eventually("b reports the tasks it ran", || tasks_run_by(&c, "b") >= 63);
    assert_eq!(tasks_run_by(&c, "b"), 63, "32 leaves, 16 pairs, 15 sums");
}

#[test]
fn sigkill_mid_graph_recomputes_on_a_new_worker_what_only_the_dead_one_held() {
    within(DEADLINE, || sigkill_mid_graph(false));
}

/// As above, with the survivor there all along: tasks whose inputs only the dead worker
/// held are assigned to it when that worker dies.
#[test]
fn sigkill_mid_graph_recomputes_on_the_survivor_what_only_the_dead_worker_held() {
    within(DEADLINE, || sigkill_mid_graph(true));
}

#[test]
fn a_task_that_kills_three_workers_errs_with_killed_worker() {
    within(DEADLINE, || {
        let (_s, addr) = scheduler(&[]);
        let _ws: Vec<Proc> = (0..4).map(|i| worker(&addr, &format!("k{i}"))).collect();
        let c = Client::connect(&addr).unwrap();
        c.wait_for_workers(4).unwrap();
        let f = c.submit("abort", []).unwrap();
        match f.result() {
            Err(ClientError::Task { message, op, .. }) => {
                assert!(message.contains("killed worker"), "{message}");
                assert_eq!(op, "abort");
            }
            other => panic!("expected killed worker, got {other:?}"),
        }
        eventually("three workers died", || {
            c.scheduler_info().unwrap().workers.len() == 1
        });
        // The survivor still works.
        assert_eq!(
            c.submit("inc", [Arg::from(1)])
                .unwrap()
                .result_as::<i64>()
                .unwrap(),
            2
        );
    });
}

/// Reads until the peer closes; true if it closed (EOF or reset) within the bound.
fn closed_by_peer(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a refusal message may come first
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn garbage_oversize_and_half_open_frames_close_only_that_connection() {
    within(DEADLINE, || {
        let (_s, addr) = scheduler(&["--max-header", "4096", "--frame-timeout", "1"]);
        let _w = worker(&addr, "w");
        let c = Client::connect(&addr).unwrap();
        c.wait_for_workers(1).unwrap();
        let held = c.submit("inc", [Arg::from(1)]).unwrap();
        assert_eq!(held.result_as::<i64>().unwrap(), 2);
        let host = addr.trim_start_matches("tcp://");

        let mut garbage = TcpStream::connect(host).unwrap();
        garbage
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert!(
            closed_by_peer(&mut garbage),
            "garbage closes the connection"
        );

        let mut oversize = TcpStream::connect(host).unwrap();
        oversize
            .write_all(&rask_proto::frame::encode_prefix(1 << 30, [].into_iter()))
            .unwrap();
        assert!(
            closed_by_peer(&mut oversize),
            "an oversize header closes the connection"
        );

        let mut random = TcpStream::connect(host).unwrap();
        let mut frame = rask_proto::frame::encode_prefix(64, [].into_iter());
        frame.extend((0..64u32).map(|i| (i * 37 % 256) as u8));
        random.write_all(&frame).unwrap();
        assert!(
            closed_by_peer(&mut random),
            "an unparsable hello closes the connection"
        );

        let mut half = TcpStream::connect(host).unwrap();
        half.write_all(&rask_proto::frame::encode_prefix(100, [].into_iter())[..10])
            .unwrap();
        assert!(
            closed_by_peer(&mut half),
            "a frame never finished times out"
        );

        // Nothing was lost: the held result and the worker are still there.
        assert_eq!(held.result_as::<i64>().unwrap(), 2);
        assert_eq!(c.scheduler_info().unwrap().workers.len(), 1);
        assert_eq!(
            c.submit("add", [Arg::from(2), Arg::from(3)])
                .unwrap()
                .result_as::<i64>()
                .unwrap(),
            5
        );
    });
}

#[test]
fn malformed_batch_after_handshake_drops_only_that_client() {
    within(DEADLINE, || {
        let (_s, addr) = scheduler(&[]);
        let _w = worker(&addr, "w");
        let good = Client::connect(&addr).unwrap();
        good.wait_for_workers(1).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let hello = client_hello("evil");
            let (mut r, mut w, _) =
                rask_transport::connect(&addr, &hello, rask_transport::ConnConfig::default())
                    .await
                    .unwrap();
            rask_transport::write_frame(&mut w, b"\x01\x02\x03 definitely not an archive", &[])
                .await
                .unwrap();
            // The scheduler says why, then closes this connection.
            let said = r.read_batch::<rask_proto::msg::ToClient>().await.unwrap().unwrap();
            assert!(
                matches!(&said.msgs[..], [rask_proto::msg::ToClient::Closing { reason }] if reason.contains("malformed")),
                "{:?}",
                said.msgs
            );
            assert!(r.read_frame().await.map_or(true, |f| f.is_none()));
        });
        assert_eq!(good.scheduler_info().unwrap().clients, 1);
        assert_eq!(
            good.submit("inc", [Arg::from(9)])
                .unwrap()
                .result_as::<i64>()
                .unwrap(),
            10
        );
    });
}

#[test]
fn version_mismatch_is_refused_naming_both_versions() {
    within(DEADLINE, || {
        let (_s, addr) = scheduler(&[]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt.block_on(async {
            let hello = rask_proto::msg::Hello {
                rask_version: "0.0.0-old".into(),
                ..client_hello("old")
            };
            match rask_transport::connect(&addr, &hello, rask_transport::ConnConfig::default())
                .await
            {
                Err(e) => e.to_string(),
                Ok(_) => panic!("an old client must be refused"),
            }
        });
        assert!(
            err.contains("0.0.0-old") && err.contains(rask_proto::RASK_VERSION),
            "{err}"
        );
    });
}

#[test]
fn local_cluster_with_worker_processes() {
    within(DEADLINE, || {
        let cluster = LocalCluster::builder()
            .n_workers(2)
            .processes(true)
            .worker_binary(RASK)
            .build()
            .unwrap();
        assert_eq!(cluster.worker_pids().len(), 2);
        let c = Client::for_cluster(cluster).unwrap();
        let info = c.scheduler_info().unwrap();
        assert_eq!(info.workers.len(), 2);
        let pids: Vec<u32> = c.cluster().unwrap().worker_pids();
        assert!(pids.iter().all(|p| *p != std::process::id()));
        let fs = c.map("inc", (0..100).map(|i| [Arg::from(i)])).unwrap();
        let vals = c.gather(&fs).unwrap();
        assert_eq!(vals, (1..=100).map(Value::Int).collect::<Vec<_>>());
    });
}

/// The scheduler says which process and host it is, as each worker does: what a program
/// on the same host needs to read the cluster's use of the machine.
#[test]
fn the_scheduler_names_its_process_and_host() {
    within(DEADLINE, || {
        let (s, addr) = scheduler(&[]);
        let _w = worker(&addr, "w");
        let c = Client::connect(&addr).unwrap();
        c.wait_for_workers(1).unwrap();
        let info = c.scheduler_info().unwrap();
        assert_eq!(info.pid, s.0.id());
        assert_ne!(info.pid, std::process::id());
        assert!(!info.host_id.is_empty());
        assert_eq!(info.host_id, info.workers[0].host_id, "one host");
    });
}

#[test]
fn a_silent_worker_is_presumed_dead_and_its_work_rescheduled() {
    within(DEADLINE, || {
        let (_s, addr) = scheduler(&["--worker-ttl", "1"]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A "worker" that joins, then never says anything again (a frozen host: no FIN).
        let silent = rt.block_on(async {
            let hello = rask_proto::msg::Hello {
                role: rask_proto::msg::Role::Worker,
                registry: Some(rask::Registry::builtin().info()),
                worker: Some(rask_proto::msg::WorkerHello {
                    listen_addr: "tcp://127.0.0.1:9".into(),
                    shm_addr: String::new(),
                    transport: "tcp".into(),
                    device: "host".into(),
                    gpu: None,
                    nvlink: vec![],
                    device_memory_limit: 0,
                    device_spill_at: 0,
                    device_name: String::new(),
                    nthreads: 4,
                    memory_limit: 1 << 30,
                    resources: vec![],
                    // The code of the real workers that join later.
                    code: rask_kernels::code_identity_of(std::path::Path::new(RASK)).unwrap(),
                    runs_programs: false,
                    dashboard: String::new(),
                    holds: false,
                }),
                ..client_hello("frozen")
            };
            rask_transport::connect(&addr, &hello, rask_transport::ConnConfig::default())
                .await
                .unwrap()
        });
        let c = Client::connect(&addr).unwrap();
        c.wait_for_workers(1).unwrap();
        // With only the frozen worker, tasks are sent to it and never come back.
        let fs = c.map("inc", (0..20).map(|i| [Arg::from(i)])).unwrap();
        eventually("tasks are assigned to the frozen worker", || {
            count(&c, "processing") > 0
        });
        let _w = worker(&addr, "real");
        assert_eq!(
            c.gather(&fs).unwrap(),
            (1..=20).map(Value::Int).collect::<Vec<_>>()
        );
        let names: Vec<String> = c
            .scheduler_info()
            .unwrap()
            .workers
            .into_iter()
            .map(|w| w.name)
            .collect();
        assert_eq!(names, vec!["real".to_string()]);
        drop(silent);
    });
}

#[test]
fn a_build_with_other_message_definitions_is_refused() {
    within(DEADLINE, || {
        let (_s, addr) = scheduler(&[]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt.block_on(async {
            let hello = rask_proto::msg::Hello {
                schema: rask_proto::PROTOCOL_SCHEMA ^ 1,
                ..client_hello("patched")
            };
            match rask_transport::connect(&addr, &hello, rask_transport::ConnConfig::default())
                .await
            {
                Err(e) => e.to_string(),
                Ok(_) => panic!("a build with other message definitions must be refused"),
            }
        });
        assert!(err.contains("wire schema mismatch"), "{err}");
    });
}

#[test]
fn every_connection_must_prove_the_shared_secret() {
    within(DEADLINE, || {
        let secret = tmpfile("secret");
        std::fs::write(&secret, "s3cret-for-tests\n").unwrap();
        let path = secret.to_str().unwrap();
        let (_s, addr) = scheduler(&["--auth-file", path]);
        let _w = Proc::new(
            Command::new(RASK)
                .args(["worker", &addr, "--name", "authed", "--auth-file", path])
                .env("RASK_LOG", "warn")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let with = |s: Option<&str>| {
            let mut opts = rask::ClientOptions {
                registry: Some(rask::Registry::builtin().info()),
                ..Default::default()
            };
            opts.conn.auth = s.map(|s| rask::Secret::new(s.as_bytes().to_vec()));
            Client::connect_with(&addr, opts)
        };
        let good = with(Some("s3cret-for-tests")).unwrap();
        good.wait_for_workers(1).unwrap();
        assert_eq!(
            good.submit("inc", [Arg::from(1)])
                .unwrap()
                .result_as::<i64>()
                .unwrap(),
            2
        );
        let worker_addr = good.scheduler_info().unwrap().workers[0].addr.clone();
        drop(good);

        match with(None) {
            Err(e) => assert!(e.to_string().contains("requires authentication"), "{e}"),
            Ok(_) => panic!("a client without the secret must be refused"),
        }
        match with(Some("wrong")) {
            Err(e) => assert!(e.to_string().contains("authentication failed"), "{e}"),
            Ok(_) => panic!("a client with a wrong secret must be refused"),
        }
        // The worker's data port asks for the secret too.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let peer = rt.block_on(rask_transport::connect(
            &worker_addr,
            &rask_worker::peer_hello("intruder"),
            rask_transport::ConnConfig::default(),
        ));
        assert!(matches!(
            peer,
            Err(rask_transport::TransportError::AuthRequired)
        ));
        // Nothing ran for the refused clients.
        let good = with(Some("s3cret-for-tests")).unwrap();
        let info = good.scheduler_info().unwrap();
        assert!(
            info.tasks_by_state.iter().all(|(_, n)| *n == 0),
            "{:?}",
            info.tasks_by_state
        );
        let _ = std::fs::remove_file(&secret);
    });
}

/// A worker alone in its process stops past 95 % of its memory limit (as Dask's nanny
/// stops a worker), with an error naming the memory; the scheduler stays up for others.
#[test]
fn a_worker_past_its_memory_terminate_threshold_stops_with_an_error() {
    within(DEADLINE, || {
        let (_sched, addr) = scheduler(&[]);
        // The process's own heap alone is more than 95 % of 256 KiB.
        let mut child = common::worker_reporting(&addr, "small", &["--memory-limit", "262144"]);
        let mut status = None;
        eventually("the worker stops", || {
            status = child.0.try_wait().unwrap();
            status.is_some()
        });
        let mut err = String::new();
        child
            .0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(!status.unwrap().success(), "{err}");
        assert!(
            err.contains("past 95% of the worker's limit of 262144 bytes"),
            "{err}"
        );
        // Another worker joins the same scheduler and runs work.
        let _w = worker(&addr, "big");
        let c = Client::connect(&addr).unwrap();
        c.wait_for_workers(1).unwrap();
        let sum = c.submit("add", [Arg::from(40), Arg::from(2)]).unwrap();
        assert_eq!(sum.result_as::<i64>().unwrap(), 42);
    });
}

#[test]
fn a_worker_reports_how_long_its_tasks_waited_for_inputs_from_peers() {
    within(DEADLINE, || {
        let (_s, addr) = scheduler(&[]);
        let _a = common::worker_with(&[], &addr, "a", &["--resources", "on-a=1"]);
        let _b = common::worker_with(&[], &addr, "b", &["--resources", "on-b=1"]);
        let c = Client::connect(&addr).unwrap();
        c.wait_for_workers(2).unwrap();
        // Values made on a, each read by a task on b: b fetches every one.
        let mut g = Graph::new();
        let mut keys = Vec::new();
        for i in 0..8 {
            let (x, y) = (format!("x-{i}"), format!("y-{i}"));
            let data = random_bytes(1 << 20, seed().wrapping_add(i));
            g.task(&x, "identity", [Arg::Value(Value::Bytes(data.into()))])
                .resources(&[("on-a", 1.0)]);
            g.task(&y, "identity", [rask::Arg::Key(x)])
                .resources(&[("on-b", 1.0)]);
            keys.push(y);
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        for f in c.compute(&g, &keys).unwrap() {
            f.wait().unwrap();
        }
        // Each wait is at least a round trip between two processes; a never waits.
        assert!(worker_info(&c, "b").fetch_us > 0);
        assert_eq!(worker_info(&c, "a").fetch_us, 0);
    });
}

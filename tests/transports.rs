//! Worker-to-worker data over each transport: tcp and shm between worker processes,
//! inproc between workers of one process. Payloads of awkward sizes and random content
//! are produced on one worker, consumed on the other, and compared byte for byte; a
//! payload whose only holder dies while it is read is recomputed. Each test fails after
//! [`DEADLINE`] instead of hanging.

use rask::{Arg, Client, Graph, Registry, Value};

mod common;

use common::{
    eventually, fnv1a, random_bytes, scheduler as start_scheduler, seed, tasks_run_by, within,
    worker_info, Proc, DEADLINE,
};

fn scheduler() -> (Proc, String) {
    start_scheduler(&[])
}

/// A worker process offering the resource `on-NAME`, so tasks can be pinned to it.
fn worker(addr: &str, name: &str, transport: &str) -> Proc {
    let resource = format!("on-{name}=1");
    common::worker_with(
        &[],
        addr,
        name,
        &[
            "--quiet",
            "--transport",
            transport,
            "--resources",
            &resource,
        ],
    )
}

/// Payloads made on worker a — random bytes sent by the client (heap memory on a) and
/// constant fills made by an op (the worker's arena) — are read on worker b: b echoes
/// each back to the client and checksums it.
fn exact_across_workers(c: &Client) {
    let s = seed();
    let sizes = [0usize, 1, 4097, 65535, 65536, 65537, (1 << 20) + 3, 5 << 20];
    let mut g = Graph::new();
    let mut expect = Vec::new();
    let mut outputs = Vec::new();
    for (k, &n) in sizes.iter().enumerate() {
        let data = random_bytes(n, s.wrapping_add(k as u64));
        let fill = vec![k as u8 + 1; n];
        g.task(
            &format!("x{k}"),
            "identity",
            [Arg::Value(Value::Bytes(data.clone().into()))],
        )
        .resources(&[("on-a", 1.0)]);
        g.task(
            &format!("y{k}"),
            "bytes",
            [Arg::from(n as i64), Arg::from(k as i64 + 1)],
        )
        .resources(&[("on-a", 1.0)]);
        for (src, bytes) in [("x", data), ("y", fill)] {
            let key = format!("{src}{k}");
            g.task(&format!("echo-{key}"), "identity", [Arg::key(&key)])
                .resources(&[("on-b", 1.0)]);
            g.task(&format!("sum-{key}"), "checksum", [Arg::key(&key)])
                .resources(&[("on-b", 1.0)]);
            let sum = Value::Int(common::fnv1a(&bytes) as i64);
            expect.push((format!("echo-{key}"), Value::Bytes(bytes.into())));
            expect.push((format!("sum-{key}"), sum));
        }
    }
    for (k, _) in &expect {
        outputs.push(k.as_str());
    }
    let got = c.get(&g, &outputs).unwrap();
    for ((key, want), got) in expect.iter().zip(got) {
        assert!(&got == want, "{key} differs");
    }
}

fn over_processes(transport: &str) {
    let (_s, addr) = scheduler();
    let _a = worker(&addr, "a", transport);
    let _b = worker(&addr, "b", transport);
    let c = Client::connect(&addr).unwrap();
    c.wait_for_workers(2).unwrap();
    let info = c.scheduler_info().unwrap();
    for w in &info.workers {
        assert_eq!(w.transport, transport, "{}", w.name);
        assert_eq!(!w.shm_addr.is_empty(), transport != "tcp", "{}", w.name);
    }
    exact_across_workers(&c);
}

#[test]
fn worker_to_worker_over_tcp_is_exact() {
    within(DEADLINE, || over_processes("tcp"));
}

#[test]
fn worker_to_worker_over_shared_memory_is_exact() {
    within(DEADLINE, || over_processes("shm"));
}

#[test]
fn workers_in_one_process_hand_over_buffers_without_copying() {
    within(DEADLINE, || {
        let (_s, addr) = scheduler();
        let mut registry = Registry::builtin();
        // Where a payload's bytes are: equal on both workers only if nothing was copied.
        registry.register("address", 1, |a| match a {
            [Value::Bytes(b)] => Ok(Value::Int(b.as_ptr() as i64)),
            _ => Err("address of a byte payload".into()),
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        for name in ["a", "b"] {
            let mut cfg = rask_worker::WorkerConfig::new(addr.clone());
            cfg.name = name.into();
            cfg.nthreads = 1;
            cfg.registry = registry.clone();
            cfg.resources = vec![rask_proto::msg::Resource {
                name: format!("on-{name}"),
                amount: 1.0,
            }];
            rt.spawn(async move {
                let w = rask_worker::Worker::connect(cfg).await.unwrap();
                let _ = w.run(std::future::pending::<()>()).await;
            });
        }
        let opts = rask::ClientOptions {
            registry: Some(registry.info()),
            ..Default::default()
        };
        let c = Client::connect_with(&addr, opts).unwrap();
        c.wait_for_workers(2).unwrap();
        let mut g = Graph::new();
        g.task("p", "bytes", [Arg::from(3 << 20), Arg::from(9)])
            .resources(&[("on-a", 1.0)]);
        g.task("at-a", "address", [Arg::key("p")])
            .resources(&[("on-a", 1.0)]);
        g.task("at-b", "address", [Arg::key("p")])
            .resources(&[("on-b", 1.0)]);
        g.task("sum-b", "checksum", [Arg::key("p")])
            .resources(&[("on-b", 1.0)]);
        let got = c.get(&g, &["at-a", "at-b", "sum-b", "p"]).unwrap();
        assert_eq!(got[0], got[1], "the payload was copied between workers");
        let Value::Bytes(p) = &got[3] else {
            panic!("not bytes")
        };
        assert_eq!(
            Value::Int(p.as_ptr() as i64),
            got[0],
            "the payload was copied to the client"
        );
        assert!(
            p[..] == vec![9u8; 3 << 20][..],
            "the payload's bytes differ"
        );
        assert_eq!(
            got[2],
            Value::Int(common::fnv1a(&vec![9u8; 3 << 20]) as i64)
        );
        drop(c);
        rt.shutdown_background();
    });
}

/// The holder of a payload dies while the other worker reads it. The payload is made on
/// one worker only; that holder is frozen before a task pinned to the other worker (the
/// reader) is submitted, so the read cannot finish. Once the task is assigned the reader
/// is frozen too, the holder SIGKILLed, and the reader thawed once the scheduler has
/// dropped the holder: the reader's failed read is reported after that, so bringing the
/// payload back is up to the scheduler's recovery. The checksum equals the FNV-1a computed
/// here, the payload now lives on the reader, and the reader ran two tasks: the payload
/// and the checksum.
fn holder_dies_mid_transfer(transport: &str) {
    let (_s, addr) = scheduler();
    let mut procs = vec![
        ("a", worker(&addr, "a", transport)),
        ("b", worker(&addr, "b", transport)),
    ];
    let c = Client::connect(&addr).unwrap();
    c.wait_for_workers(2).unwrap();
    let n = 64 << 20;
    let p = c
        .submit("bytes", [Arg::from(n as i64), Arg::from(5)])
        .unwrap();
    p.wait().unwrap();
    let holders = c.who_has(std::slice::from_ref(&p)).unwrap()[p.key()].clone();
    assert_eq!(holders.len(), 1, "{holders:?}");
    let info = c.scheduler_info().unwrap();
    let holder = info
        .workers
        .iter()
        .find(|w| w.addr == holders[0])
        .map(|w| w.name.clone())
        .unwrap();
    let i = procs.iter().position(|(name, _)| *name == holder).unwrap();
    let (_, holder_proc) = procs.remove(i);
    let (reader, reader_proc) = procs.pop().unwrap();

    holder_proc.freeze();
    let mut g = Graph::new();
    g.task("sum", "checksum", [Arg::from(&p)])
        .resources(&[(format!("on-{reader}").as_str(), 1.0)]);
    let sum = c.compute(&g, &["sum"]).unwrap().pop().unwrap();
    eventually("the checksum is assigned to the reader", || {
        worker_info(&c, reader).processing > 0
    });
    reader_proc.freeze();
    holder_proc.kill();
    eventually("the scheduler drops the dead holder", || {
        c.scheduler_info().unwrap().workers.len() == 1
    });
    reader_proc.thaw();

    let reader_addr = worker_info(&c, reader).addr;
    eventually("the payload is recomputed on the reader", || {
        let who = c.who_has(std::slice::from_ref(&p)).unwrap();
        who.get(p.key())
            .is_some_and(|h| h == std::slice::from_ref(&reader_addr))
    });
    let want = fnv1a(&vec![5u8; n]) as i64;
    assert_eq!(sum.result().unwrap(), Value::Int(want));
    eventually("the reader reports the tasks it ran", || {
        tasks_run_by(&c, reader) >= 2
    });
    assert_eq!(tasks_run_by(&c, reader), 2, "the payload and its checksum");
}

#[test]
fn holder_death_mid_transfer_over_tcp_is_recomputed() {
    within(DEADLINE, || holder_dies_mid_transfer("tcp"));
}

#[test]
fn holder_death_mid_transfer_over_shared_memory_is_recomputed() {
    within(DEADLINE, || holder_dies_mid_transfer("shm"));
}

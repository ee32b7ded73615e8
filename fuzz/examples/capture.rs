//! Writes the seed corpora (`corpus/<target>/<name>`): frames captured from the
//! transport's own writer (the batching `Sender` a connection writes with, into an
//! in-memory pipe) for representative messages of every direction — a graph submission,
//! computes, task reports, heartbeats, data requests and replies, hellos — and
//! shared-memory replies lent by the transport's own `Exporter`; then hand-made hostile
//! inputs: nesting beyond `MAX_DEPTH`, huge announced lengths, wrong versions and
//! schemas, truncated frames.
//!
//! Run from the fuzz directory: `cargo run --no-default-features --example capture`.
//! It rewrites only the seeds it names (files the fuzzer added are left alone).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rask_fuzz::input::ScriptWriter;
use rask_fuzz::net::block_on;
use rask_fuzz::sched::step as sstep;
use rask_fuzz::wcore::step as wstep;
use rask_proto::flat::Node;
use rask_proto::frame::{self, encode_refusal};
use rask_proto::msg::*;
use rask_proto::observe::{
    ActivityKind, ActivityMsg, PeerBytesMsg, TaskStreamEntryMsg, TransitionMsg,
};
use rask_proto::packed::Packed;
use rask_proto::{Arg, Datum, DeviceLoc, TaskId, Value, WorkerId, MAX_DEPTH};
use serde::Serialize;
use tokio::io::AsyncReadExt;

/// Frames exactly as a connection's writer puts them on the wire: each inner list is
/// queued at once, so it leaves as one batch (one frame).
fn wire<M: rask_transport::pairs::Encode>(batches: Vec<Vec<(M, Vec<Bytes>)>>) -> Vec<u8> {
    block_on(async move {
        let mut out = Vec::new();
        for batch in batches {
            let (tx, writer) = rask_transport::channel::<M>();
            for (m, bufs) in batch {
                tx.send_with(m, bufs).expect("queued");
            }
            drop(tx);
            let (near, mut far) = tokio::io::duplex(1 << 20);
            writer.start(near);
            far.read_to_end(&mut out).await.expect("the writer's bytes");
        }
        out
    })
}

/// One batch without buffers.
fn plain<M: rask_transport::pairs::Encode>(msgs: Vec<M>) -> Vec<u8> {
    wire(vec![msgs.into_iter().map(|m| (m, Vec::new())).collect()])
}

/// A frame around any archived header (hostile layouts the writer never makes).
fn raw_frame<T>(header: &T, bufs: &[&[u8]]) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    frame::encode_frame(&frame::encode_header(header), bufs)
}

struct Corpus {
    root: PathBuf,
    written: HashMap<&'static str, usize>,
}

impl Corpus {
    fn put(&mut self, target: &'static str, name: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(name), bytes).expect("seed written");
        *self.written.entry(target).or_default() += 1;
    }
}

fn hello(role: Role) -> Hello {
    let mut h = Hello::new(role, "fuzz-seed", "host-a");
    h.pid = 4242;
    h.nonce = [7; 32];
    h
}

fn worker_hello() -> Hello {
    let mut h = hello(Role::Worker);
    h.registry = Some(RegistryInfo {
        fingerprint: 0x1234,
        ops: ["add", "array.matmul", "inc", "sum"]
            .iter()
            .map(|n| OpInfo {
                name: n.to_string(),
                version: 1,
                program: false,
            })
            .collect(),
    });
    h.worker = Some(WorkerHello {
        listen_addr: "tcp://127.0.0.1:40001".into(),
        shm_addr: "unix:@rask-40001".into(),
        transport: "auto".into(),
        device: "sim:0".into(),
        device_name: "simulated GPU (1 GiB)".into(),
        gpu: Some(0),
        nvlink: vec![1],
        device_memory_limit: 1 << 30,
        device_spill_at: 800 << 20,
        nthreads: 2,
        memory_limit: 4 << 30,
        resources: vec![Resource {
            name: "gpu".into(),
            amount: 1.0,
        }],
        code: 0xfeed,
        runs_programs: true,
        dashboard: "http://127.0.0.1:40002".into(),
        holds: false,
    });
    h
}

fn client_hello() -> Hello {
    let mut h = hello(Role::Client);
    h.program = Some(ProgramInfo {
        code: 0xbeef,
        size: 1 << 20,
        name: "pi".into(),
        platform: "linux-x86_64".into(),
        shippable: true,
    });
    h
}

/// A client's graph, built the way the client builds one: arguments from `Arg`s (keys
/// become dependency references, byte payloads frame buffers).
fn graph() -> (UpdateGraphMsg, Vec<Bytes>) {
    let mut bufs = Vec::new();
    let mut task = |key: &str, op: &str, arg: Arg| {
        let mut deps = Vec::new();
        let args = arg
            .to_datum(&mut deps, &mut bufs)
            .expect("a graph's arguments");
        TaskSpec {
            key: key.into(),
            op: op.into(),
            args,
            deps,
            resources: vec![],
        }
    };
    let tasks = vec![
        task("x-1", "inc", Arg::from(1i64)),
        task(
            "y-1",
            "add",
            Arg::List(vec![
                Arg::key("x-1"),
                Arg::Value(Value::Bytes(Bytes::from_static(b"\x02\0\0\0\0\0\0\0"))),
            ]),
        ),
        task(
            "sum-1",
            "sum",
            Arg::List(vec![Arg::key("x-1"), Arg::key("y-1"), Arg::from(2.5f64)]),
        ),
        {
            let mut t = task("gpu-1", "inc", Arg::from("on a gpu"));
            t.resources = vec![Resource {
                name: "gpu".into(),
                amount: 1.0,
            }];
            t
        },
    ];
    (
        UpdateGraphMsg {
            tasks,
            wanted: vec!["sum-1".into(), "gpu-1".into()],
            more: false,
        },
        bufs,
    )
}

fn heartbeat() -> ToScheduler {
    ToScheduler::Heartbeat(Box::new(HeartbeatMsg {
        stored_bytes: 1 << 20,
        stored_keys: 3,
        executing: 1,
        rss_bytes: 200 << 20,
        device_memory_used: 64 << 20,
        device_to_host: 4096,
        received: vec![("shm".into(), 1 << 20), ("tcp".into(), 10)],
        spilled: vec![("device->host".into(), 4096)],
        ran: vec![("device".into(), 5), ("cpu".into(), 7)],
        device_bytes: 1 << 20,
        disk_bytes: 0,
        activity: vec![
            ActivityMsg {
                task: TaskId(0),
                kind: ActivityKind::Transfer {
                    from: WorkerId(2),
                    link: "shm".into(),
                },
                start_ago_us: 900,
                stop_ago_us: 100,
                nbytes: 1 << 20,
            },
            ActivityMsg {
                task: TaskId(1),
                kind: ActivityKind::Spill {
                    direction: "device->host".into(),
                },
                start_ago_us: 50,
                stop_ago_us: 10,
                nbytes: 4096,
            },
            ActivityMsg {
                task: TaskId(1),
                kind: ActivityKind::Spill {
                    direction: "sideways".into(),
                },
                start_ago_us: 1,
                stop_ago_us: u64::MAX,
                nbytes: u64::MAX,
            },
        ],
        activity_dropped: 2,
        received_from: vec![PeerBytesMsg {
            peer: WorkerId(2),
            link: "shm".into(),
            bytes: 1 << 20,
            micros: 800,
        }],
        utilization: Some(37.5),
    }))
}

fn finished(task: u64, value: Option<Datum>) -> ToScheduler {
    ToScheduler::TaskFinished(TaskFinishedMsg {
        run: 1,
        task: TaskId(task),
        nbytes: 8,
        duration_us: 120,
        fetch_us: 900,
        value: value.as_ref().map(Packed::new),
    })
}

fn nested(levels: usize) -> Datum {
    let mut d = Datum::Int(7);
    for _ in 0..levels {
        d = Datum::List(vec![d]);
    }
    d
}

/// A frame prefix with chosen fields (magic, version, flags, header length, buffers).
fn prefix(magic: &[u8; 4], version: u16, flags: u16, header_len: u32, nbufs: u32) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(magic);
    p.extend_from_slice(&version.to_le_bytes());
    p.extend_from_slice(&flags.to_le_bytes());
    p.extend_from_slice(&header_len.to_le_bytes());
    p.extend_from_slice(&nbufs.to_le_bytes());
    p
}

/// Frames whose announced lengths are far beyond what follows, or what any limit allows.
fn huge_lengths() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    out.push(("huge-header-len", prefix(b"RASK", 1, 0, u32::MAX, 0)));
    out.push(("huge-buffer-count", prefix(b"RASK", 1, 0, 16, u32::MAX)));
    let mut one_big = prefix(b"RASK", 1, 0, 0, 1);
    one_big.extend_from_slice(&(15u64 << 30).to_le_bytes());
    out.push(("one-15-GiB-buffer", one_big));
    let mut overflow = prefix(b"RASK", 1, 0, 0, 2);
    overflow.extend_from_slice(&u64::MAX.to_le_bytes());
    overflow.extend_from_slice(&2u64.to_le_bytes());
    out.push(("buffer-lengths-overflow", overflow));
    let mut many = prefix(b"RASK", 1, 0, 64 << 20, 1 << 20);
    many.extend_from_slice(&[0xff; 64]);
    out.push(("max-header-and-buffers", many));
    out.push(("refusal-huge-text", prefix(b"RASK", 9, 1, 64 << 20, 0)));
    out
}

/// Version and magic errors, around a real frame.
fn wrong_versions(real: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let mut v = real.to_vec();
    v[4..6].copy_from_slice(&2u16.to_le_bytes());
    out.push(("wrong-protocol-version", v));
    let mut m = real.to_vec();
    m[..4].copy_from_slice(b"HTTP");
    out.push(("wrong-magic", m));
    out.push((
        "http-request",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ));
    out
}

/// A frame cut short at several places.
fn truncations(real: &[u8]) -> Vec<(String, Vec<u8>)> {
    [1, 15, 17, real.len() / 2, real.len().saturating_sub(1)]
        .into_iter()
        .filter(|&n| n < real.len())
        .map(|n| (format!("truncated-at-{n}"), real[..n].to_vec()))
        .collect()
}

fn main() {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let mut c = Corpus {
        root,
        written: HashMap::new(),
    };

    // Hellos and the handshake's other frames.
    // As the handshake writes them (`write_frame`, one frame each).
    let hello_frame = |h: &Hello| {
        block_on(async {
            let mut out = Vec::new();
            rask_transport::write_frame(&mut out, &frame::encode_header(h), &[])
                .await
                .expect("written");
            out
        })
    };
    let worker_hello_frame = hello_frame(&worker_hello());
    c.put("hello", "worker-hello", &hello_frame(&worker_hello()));
    c.put(
        "hello",
        "client-hello-with-program",
        &hello_frame(&client_hello()),
    );
    c.put("hello", "peer-hello", &hello_frame(&hello(Role::Peer)));
    let mut resume = client_hello();
    resume.resume = Some(3);
    c.put("hello", "client-hello-resuming", &hello_frame(&resume));
    let mut holding = worker_hello();
    if let Some(w) = &mut holding.worker {
        w.holds = true;
    }
    c.put("hello", "worker-hello-holding", &hello_frame(&holding));
    let mut old = hello(Role::Client);
    old.protocol = 99;
    old.rask_version = "0.0.1".into();
    c.put("hello", "hello-wrong-version", &hello_frame(&old));
    let mut fork = hello(Role::Worker);
    fork.schema ^= 1;
    c.put("hello", "hello-wrong-schema", &hello_frame(&fork));
    c.put(
        "hello",
        "welcome",
        &raw_frame(
            &HelloReply::Welcome {
                id: 3,
                rask_version: rask_proto::RASK_VERSION.into(),
                proof: Some([9; 32]),
            },
            &[],
        ),
    );
    c.put(
        "hello",
        "challenge",
        &raw_frame(&HelloReply::Challenge { nonce: [1; 32] }, &[]),
    );
    c.put(
        "hello",
        "auth-proof",
        &raw_frame(&AuthProof { proof: [2; 32] }, &[]),
    );
    c.put(
        "hello",
        "refusal",
        &encode_refusal("version mismatch: go away"),
    );
    for (n, b) in truncations(&hello_frame(&worker_hello())) {
        c.put("hello", &n, &b);
    }

    // Frame prefixes.
    c.put("frame_header", "worker-hello", &worker_hello_frame);
    let (g, gbufs) = graph();
    let graph_frame = wire(vec![vec![(
        ToScheduler::UpdateGraph(g.clone()),
        gbufs.clone(),
    )]]);
    c.put("frame_header", "graph-submission", &graph_frame);
    c.put("frame_header", "refusal", &encode_refusal("no"));
    for (n, b) in huge_lengths()
        .into_iter()
        .chain(wrong_versions(&graph_frame))
    {
        c.put("frame_header", n, &b);
    }

    // Messages to the scheduler: a client's and a worker's.
    let mut parts = g.clone();
    let rest = parts.tasks.split_off(2);
    parts.more = true;
    let last = UpdateGraphMsg {
        tasks: rest,
        wanted: parts.wanted.clone(),
        more: false,
    };
    parts.wanted.clear();
    let map = MapMsg {
        prefix: "inc-1-0".into(),
        first: 0,
        op: "inc".into(),
        // Arguments travel packed: every kind of node, nested.
        args: vec![
            Datum::List(vec![Datum::Int(1)]).into(),
            Datum::List(vec![Datum::Int(2), Datum::Buf(0)]).into(),
            Datum::List(vec![
                Datum::Str("é".into()),
                Datum::Float(0.5),
                Datum::Int(-1 << 40),
                Datum::List(vec![Datum::Null, Datum::Bool(true), Datum::Bool(false)]),
            ])
            .into(),
        ],
        resources: vec![],
    };
    let client_session = wire(vec![
        vec![(ToScheduler::UpdateGraph(g.clone()), gbufs.clone())],
        vec![(
            ToScheduler::Map(Box::new(map)),
            vec![Bytes::from_static(b"a map's payload")],
        )],
        vec![
            (
                ToScheduler::WhoHas {
                    req: 1,
                    keys: vec!["sum-1".into(), "nope".into()],
                },
                vec![],
            ),
            (ToScheduler::Info { req: 2 }, vec![]),
            (
                ToScheduler::GetTaskStream {
                    req: 3,
                    since: 0,
                    limit: u64::MAX,
                },
                vec![],
            ),
            (
                ToScheduler::Story {
                    req: 4,
                    key: "x-1".into(),
                },
                vec![],
            ),
            (
                ToScheduler::AdaptiveTarget {
                    req: 5,
                    target_duration_us: 5_000_000,
                },
                vec![],
            ),
            (ToScheduler::WorkersToClose { req: 6, target: 1 }, vec![]),
            (
                ToScheduler::Datasets {
                    req: 8,
                    op: DatasetOp::Publish {
                        name: "answers".into(),
                        keys: vec!["sum-1".into(), "x-1".into()],
                        replace: false,
                    },
                },
                vec![],
            ),
            (
                ToScheduler::Datasets {
                    req: 9,
                    op: DatasetOp::Get {
                        name: "answers".into(),
                    },
                },
                vec![],
            ),
            (
                ToScheduler::RetireWorkers {
                    req: 7,
                    names: vec!["worker-1".into()],
                },
                vec![],
            ),
            (
                ToScheduler::ReleaseKeys {
                    keys: vec!["sum-1".into()],
                },
                vec![],
            ),
            (
                ToScheduler::ReleaseMapKeys {
                    runs: vec![KeyRun {
                        prefix: "inc".into(),
                        first: 1,
                        count: 2,
                    }],
                },
                vec![],
            ),
        ],
    ]);
    let graph_in_parts = wire(vec![
        vec![(ToScheduler::UpdateGraph(parts.clone()), gbufs.clone())],
        vec![(ToScheduler::UpdateGraph(last.clone()), gbufs.clone())],
    ]);
    let program = wire(vec![vec![
        (
            ToScheduler::ProgramPart {
                code: 0xbeef,
                offset: 0,
                size: 16,
                buf: 0,
            },
            vec![Bytes::from_static(b"\x7fELF program...")],
        ),
        (
            ToScheduler::ProgramFailed {
                code: 0xbeef,
                message: "cannot start".into(),
            },
            vec![],
        ),
        (ToScheduler::Echo { client: 0, seq: 1 }, vec![]),
        (
            ToScheduler::Shutdown {
                reason: "done".into(),
            },
            vec![],
        ),
    ]]);
    let worker_session = plain(vec![
        finished(0, Some(Datum::Int(2))),
        finished(1, None),
        ToScheduler::TaskErred(TaskErredMsg {
            run: 1,
            task: TaskId(2),
            message: "ZeroDivisionError".into(),
        }),
        ToScheduler::MissingData {
            task: TaskId(2),
            dep: TaskId(0),
            holder: WorkerId(2),
        },
        ToScheduler::StealResponse {
            task: TaskId(1),
            run: 1,
            released: true,
        },
        ToScheduler::Echo { client: 1, seq: 7 },
        heartbeat(),
        ToScheduler::ReplicasAcquired {
            tasks: vec![TaskId(0), TaskId(1)],
        },
        ToScheduler::ReplicaMissing {
            task: TaskId(1),
            holder: WorkerId(1),
        },
        ToScheduler::GetProgram { code: 0xbeef },
        ToScheduler::DeviceLost {
            message: "cuda:0 failed for good: CUDA_ERROR_ILLEGAL_ADDRESS".into(),
        },
        ToScheduler::CloseGracefully {
            reason: "lifetime".into(),
        },
    ]);
    c.put("to_scheduler", "graph-submission", &graph_frame);
    c.put("to_scheduler", "graph-in-parts", &graph_in_parts);
    c.put("to_scheduler", "client-requests", &client_session);
    c.put("to_scheduler", "program-parts", &program);
    c.put("to_scheduler", "worker-reports", &worker_session);
    c.put("to_scheduler", "heartbeat", &plain(vec![heartbeat()]));
    c.put(
        "to_scheduler",
        "holding-and-resubscribe",
        &plain(vec![
            ToScheduler::Holding {
                tasks: vec![(TaskId(0), 8), (TaskId(u64::MAX), u64::MAX)],
                last: false,
            },
            ToScheduler::Holding {
                tasks: vec![],
                last: true,
            },
            ToScheduler::Resubscribe {
                keys: vec!["sum-1".into()],
            },
        ]),
    );
    let mut deep = g.clone();
    deep.tasks[0].args = nested(MAX_DEPTH + 1);
    c.put(
        "to_scheduler",
        "graph-nested-beyond-max-depth",
        &wire(vec![vec![(ToScheduler::UpdateGraph(deep), vec![])]]),
    );
    let mut missing_buf = g.clone();
    missing_buf.tasks[0].args = Datum::List(vec![Datum::Buf(u32::MAX), Datum::Ref(u32::MAX)]);
    c.put(
        "to_scheduler",
        "graph-missing-buffer",
        &raw_frame(&vec![ToScheduler::UpdateGraph(missing_buf)], &[]),
    );
    c.put(
        "to_scheduler",
        "finished-huge-numbers",
        &plain(vec![ToScheduler::TaskFinished(TaskFinishedMsg {
            run: 1,
            task: TaskId(u64::MAX),
            nbytes: u64::MAX,
            duration_us: u64::MAX,
            fetch_us: u64::MAX,
            value: Some(Packed::new(&nested(MAX_DEPTH))),
        })]),
    );
    for (n, b) in truncations(&graph_frame) {
        c.put("to_scheduler", &n, &b);
    }
    for (n, b) in huge_lengths()
        .into_iter()
        .chain(wrong_versions(&graph_frame))
    {
        c.put("to_scheduler", n, &b);
    }

    // Messages to a worker.
    let compute = |task: u64, deps: Vec<DepLoc>, args: Datum| {
        ToWorker::Compute(ComputeMsg {
            run: 1,
            task: TaskId(task),
            op: "add".into(),
            args: args.into(),
            deps,
            priority: task,
            report_value: task.is_multiple_of(2),
        })
    };
    let dep = |t: u64, holders: Vec<u32>| DepLoc {
        task: TaskId(t),
        nbytes: 8,
        holders: holders.into_iter().map(WorkerId).collect(),
    };
    let scheduler_to_worker = wire(vec![
        vec![(
            ToWorker::Peers {
                peers: vec![PeerAddr {
                    worker: WorkerId(2),
                    addr: "tcp://127.0.0.1:40003".into(),
                    shm_addr: "unix:@rask-40003".into(),
                    host_id: "host-a".into(),
                    pid: 77,
                    gpu: Some(1),
                }],
            },
            vec![],
        )],
        vec![
            (
                compute(0, vec![], Datum::List(vec![Datum::Int(1), Datum::Buf(0)])),
                vec![Bytes::from_static(b"\x02\0\0\0\0\0\0\0")],
            ),
            (
                compute(
                    1,
                    vec![dep(0, vec![]), dep(9, vec![2, 3])],
                    Datum::List(vec![Datum::Ref(0), Datum::Ref(1)]),
                ),
                vec![],
            ),
            (compute(2, vec![dep(1, vec![])], Datum::Ref(0)), vec![]),
        ],
        vec![
            (
                ToWorker::Free {
                    tasks: vec![TaskId(1)],
                },
                vec![],
            ),
            (compute(1, vec![dep(0, vec![])], Datum::Ref(0)), vec![]),
            (
                ToWorker::Steal {
                    task: TaskId(2),
                    run: 1,
                },
                vec![],
            ),
            (ToWorker::Echo { client: 1, seq: 7 }, vec![]),
            (
                ToWorker::AcquireReplicas {
                    tasks: vec![dep(9, vec![2]), dep(10, vec![])],
                },
                vec![],
            ),
            (
                ToWorker::PeerGone {
                    worker: WorkerId(3),
                },
                vec![],
            ),
        ],
        vec![
            (
                ToWorker::RunProgram {
                    program: ProgramInfo {
                        code: 0xbeef,
                        size: 16,
                        name: "pi".into(),
                        platform: "linux-x86_64".into(),
                        shippable: true,
                    },
                },
                vec![],
            ),
            (
                ToWorker::ProgramPart {
                    code: 0xbeef,
                    offset: 0,
                    size: 16,
                    buf: 0,
                },
                vec![Bytes::from_static(b"\x7fELF program...")],
            ),
            (ToWorker::StopProgram { code: 0xbeef }, vec![]),
            (
                ToWorker::Close {
                    reason: "retired".into(),
                },
                vec![],
            ),
        ],
    ]);
    c.put("to_worker", "scheduler-session", &scheduler_to_worker);
    c.put(
        "to_worker",
        "compute-nested-beyond-max-depth",
        &plain(vec![compute(5, vec![], nested(MAX_DEPTH + 1))]),
    );
    for (n, b) in truncations(&scheduler_to_worker) {
        c.put("to_worker", &n, &b);
    }
    for (n, b) in huge_lengths() {
        c.put("to_worker", n, &b);
    }

    // Messages to a client.
    let holder = Holder {
        worker: WorkerId(1),
        addr: "tcp://127.0.0.1:40001".into(),
        shm_addr: "unix:@rask-40001".into(),
        host_id: "host-a".into(),
        pid: 4242,
        device: "sim:0".into(),
    };
    let to_client = plain(vec![
        ToClient::Workers {
            holders: vec![holder.clone()],
        },
        ToClient::KeyInMemory {
            key: "sum-1".into(),
            task: TaskId(2),
            nbytes: 8,
            holders: vec![holder.worker],
            value: Some(Packed::new(&Datum::List(vec![
                Datum::Float(5.5),
                Datum::Str("ok".into()),
            ]))),
        },
        ToClient::MapInMemory {
            prefix: "inc".into(),
            holders: vec![holder.worker],
            keys: vec![
                MapNews {
                    n: 0,
                    task: TaskId(3),
                    nbytes: 8,
                    value: Some(Packed::new(&Datum::Int(1))),
                },
                MapNews {
                    n: 1,
                    task: TaskId(4),
                    nbytes: 1 << 20,
                    value: None,
                },
            ],
        },
        ToClient::KeyErred {
            key: "y-1".into(),
            error: TaskError {
                key: "x-1".into(),
                op: "inc".into(),
                message: "killed worker".into(),
            },
        },
        ToClient::GraphRejected {
            keys: vec!["z".into()],
            message: "unknown op".into(),
        },
        ToClient::WhoHasReply {
            req: 1,
            entries: vec![WhoHasEntry {
                key: "sum-1".into(),
                holders: vec![holder],
            }],
        },
        ToClient::InfoReply {
            req: 2,
            info: Box::new(SchedulerInfoMsg {
                address: "tcp://127.0.0.1:8786".into(),
                rask_version: rask_proto::RASK_VERSION.into(),
                workers: vec![],
                tasks_by_state: vec![("memory".into(), 3)],
                clients: 1,
                programs: vec![],
                prefixes: vec![],
                tasks_completed: 3,
                tasks_erred: 0,
                workers_added: 2,
                workers_removed: 0,
                task_stream_last: 3,
                now_us: 1,
                started_us: 0,
                dashboard: String::new(),
                host_id: "host-a".into(),
                pid: 4242,
            }),
        },
        ToClient::TaskStreamReply {
            req: 3,
            entries: vec![TaskStreamEntryMsg {
                seq: 1,
                task: TaskId(0),
                key: "x-1".into(),
                prefix: "x".into(),
                worker: WorkerId(1),
                worker_name: "worker-1".into(),
                start_us: 1,
                stop_us: 2,
                nbytes: 8,
                kind: "compute".into(),
                peer: None,
                peer_name: String::new(),
                detail: String::new(),
            }],
            last: 1,
        },
        ToClient::StoryReply {
            req: 4,
            transitions: vec![TransitionMsg {
                key: "x-1".into(),
                task: TaskId(0),
                from: "released".into(),
                to: "waiting".into(),
                stimulus: 1,
                why: "update-graph".into(),
                worker: None,
                worker_name: String::new(),
                time_us: 1,
                error: None,
            }],
        },
        ToClient::SendProgram { code: 0xbeef },
        ToClient::RetireWorkersReply {
            req: 7,
            retired: vec!["worker-1".into()],
        },
        ToClient::AdaptiveTargetReply { req: 5, target: 2 },
        ToClient::DatasetsReply {
            req: 9,
            names: vec!["sum-1".into(), "x-1".into()],
            error: None,
        },
        ToClient::DatasetsReply {
            req: 10,
            names: vec![],
            error: Some("no dataset named \"scratch\"".into()),
        },
        ToClient::WorkersToCloseReply {
            req: 6,
            names: vec!["worker-2".into()],
        },
        ToClient::KeysLost {
            keys: vec!["x-1".into()],
            reason: "the scheduler restarted without them".into(),
        },
        ToClient::Echo { seq: 7 },
        ToClient::Closing {
            reason: "shutting down".into(),
        },
    ]);
    c.put("to_client", "scheduler-replies", &to_client);
    for (n, b) in truncations(&to_client) {
        c.put("to_client", &n, &b);
    }

    // Data connections: a request, tcp replies.
    let get = plain(vec![PeerMsg::GetData {
        req: 1,
        tasks: vec![TaskId(0), TaskId(1), TaskId(2), TaskId(99)],
        into_device: false,
    }]);
    let mut vbufs = Vec::new();
    let chunk = rask_proto::chunk::chunk_value(
        rask_proto::DType::F32,
        &[2, 2],
        Value::Bytes(Bytes::from(vec![0u8; 16])),
    );
    let item_value = chunk.to_datum(&mut vbufs).expect("a chunk's wire form");
    let data_reply = wire(vec![vec![(
        PeerMsg::Data {
            req: 1,
            items: vec![
                DataItem {
                    task: TaskId(0),
                    value: item_value.clone(),
                },
                DataItem {
                    task: TaskId(1),
                    value: Datum::Str("small".into()),
                },
            ],
            missing: vec![TaskId(99)],
        },
        vbufs.clone(),
    )]]);
    c.put("peer_msg", "get-data", &get);
    c.put("peer_msg", "data-reply", &data_reply);
    c.put(
        "peer_msg",
        "release-and-retired",
        &plain(vec![
            PeerMsg::Release { loans: vec![1, 2] },
            PeerMsg::Retired { segments: vec![1] },
        ]),
    );
    c.put(
        "peer_msg",
        "data-missing-buffer",
        &plain(vec![PeerMsg::Data {
            req: 2,
            items: vec![DataItem {
                task: TaskId(0),
                value: Datum::Buf(7),
            }],
            missing: vec![],
        }]),
    );
    for (n, b) in truncations(&data_reply) {
        c.put("peer_msg", &n, &b);
    }

    // Shared-memory replies, lent by the transport's exporter from a real arena (its
    // segments are 2 MiB, as the harness's are).
    let arena = rask_transport::shm::Arena::new(64 << 10);
    let mut exporter = rask_transport::shm::Exporter::new(arena.clone());
    let big = arena.copy_in(&vec![3u8; 100 << 10]).expect("arena");
    let value = Value::List(vec![
        Value::Bytes(big),
        Value::Bytes(Bytes::from_static(b"inline")),
    ]);
    let mut payloads = Vec::new();
    let datum = value.to_datum_lent(&mut payloads, false).expect("lent");
    let export = exporter.export(payloads).expect("exported");
    let shm_reply = |req: u64, export: rask_transport::shm::Export, datum: Datum| {
        (
            PeerMsg::ShmData {
                req,
                items: vec![DataItem {
                    task: TaskId(req),
                    value: datum,
                }],
                missing: vec![TaskId(99)],
                refs: export.refs,
                segments: export.segments,
                loan: export.loan,
            },
            export.inline,
        )
    };
    let first = shm_reply(1, export, datum.clone());
    let mut again = Vec::new();
    let datum2 = value.to_datum_lent(&mut again, false).expect("lent");
    let second = shm_reply(2, exporter.export(again).expect("exported"), datum2);
    let shm_session = wire(vec![
        vec![first.clone(), second],
        vec![(PeerMsg::Retired { segments: vec![1] }, vec![])],
    ]);
    c.put("shm_reply", "shm-replies", &shm_session);
    let (PeerMsg::ShmData { refs, segments, .. }, _) = &first.clone() else {
        unreachable!()
    };
    let hostile = |name: &str, refs: Vec<BufRef>, segs: Vec<ShmSegment>, loan: u64| {
        (
            name.to_string(),
            raw_frame(
                &vec![PeerMsg::ShmData {
                    req: 9,
                    items: vec![DataItem {
                        task: TaskId(9),
                        value: Datum::List(vec![Datum::Buf(0), Datum::Buf(1)]),
                    }],
                    missing: vec![],
                    refs,
                    segments: segs,
                    loan,
                }],
                &[b"inline"],
            ),
        )
    };
    let seg = segments.first().expect("a segment").clone();
    let shm = |segment: u32, offset: u64, len: u64| BufRef::Shm {
        segment,
        offset,
        len,
    };
    for (name, bytes) in [
        hostile(
            "range-overflows",
            vec![shm(seg.id, u64::MAX, 2), BufRef::Inline(0)],
            vec![seg.clone()],
            1,
        ),
        hostile(
            "range-past-segment",
            vec![shm(seg.id, seg.len - 1, 2), BufRef::Inline(0)],
            vec![seg.clone()],
            1,
        ),
        hostile(
            "unknown-segment",
            vec![shm(77, 0, 1), BufRef::Inline(0)],
            vec![],
            1,
        ),
        hostile(
            "segment-longer-than-its-file",
            vec![shm(seg.id, 0, 1), BufRef::Inline(0)],
            vec![ShmSegment {
                id: seg.id,
                len: u64::MAX,
            }],
            1,
        ),
        hostile(
            "third-descriptor-is-not-a-segment",
            vec![shm(3, 0, 1), BufRef::Inline(0)],
            vec![
                ShmSegment { id: 1, len: 4096 },
                ShmSegment { id: 2, len: 4096 },
                ShmSegment { id: 3, len: 4096 },
            ],
            1,
        ),
        hostile(
            "more-segments-than-descriptors",
            vec![BufRef::Inline(0), BufRef::Inline(0)],
            (0..3).map(|id| ShmSegment { id, len: 64 }).collect(),
            1,
        ),
        hostile(
            "shared-buffer-outside-a-loan",
            vec![shm(seg.id, 0, 1), BufRef::Inline(0)],
            vec![seg.clone()],
            0,
        ),
        hostile(
            "inline-index-missing",
            vec![BufRef::Inline(5), BufRef::Inline(u32::MAX)],
            vec![],
            0,
        ),
        hostile(
            "device-buffer-bad-device",
            vec![
                BufRef::Device {
                    device: "cuda:-1 of nowhere".into(),
                    handle: vec![0; 64],
                    offset: u64::MAX,
                    len: u64::MAX,
                },
                BufRef::Device {
                    device: DeviceLoc::sim(1).to_string(),
                    handle: vec![],
                    offset: 0,
                    len: u64::MAX,
                },
            ],
            vec![],
            3,
        ),
    ] {
        if name == "more-segments-than-descriptors" {
            // The first frame takes every descriptor that came (the third is no segment);
            // the second announces one more.
            c.put("shm_reply", &name, &[bytes.clone(), bytes].concat());
        } else {
            c.put("shm_reply", &name, &bytes);
        }
    }
    let _ = refs;
    for (n, b) in truncations(&shm_session) {
        c.put("shm_reply", &n, &b);
    }

    // The frame reader: a mode byte (bit 0 welcomed, bit 1 an arena, bits 2.. the
    // message type), then the stream.
    let with_mode = |mode: u8, stream: &[u8]| [&[mode][..], stream].concat();
    c.put(
        "frame_reader",
        "hello-unwelcomed",
        &with_mode(3 << 2, &worker_hello_frame),
    );
    c.put(
        "frame_reader",
        "graph-welcomed",
        &with_mode(1, &graph_in_parts),
    );
    c.put(
        "frame_reader",
        "worker-reports",
        &with_mode(1, &worker_session),
    );
    c.put(
        "frame_reader",
        "computes",
        &with_mode(1 | (1 << 2), &scheduler_to_worker),
    );
    c.put(
        "frame_reader",
        "client-replies",
        &with_mode(1 | (2 << 2), &to_client),
    );
    let large = wire(vec![vec![(
        PeerMsg::Data {
            req: 1,
            items: vec![DataItem {
                task: TaskId(0),
                value: Datum::Buf(0),
            }],
            missing: vec![],
        },
        vec![Bytes::from(vec![5u8; 70 << 10])],
    )]]);
    c.put(
        "frame_reader",
        "large-payload-into-arena",
        &with_mode(1 | 2 | (3 << 2), &large),
    );
    c.put(
        "frame_reader",
        "refusal",
        &with_mode(4 << 2, &encode_refusal("no thanks")),
    );
    for (n, b) in huge_lengths() {
        c.put("frame_reader", n, &with_mode(1 | 2 | (4 << 2), &b));
    }
    c.put(
        "frame_reader",
        "graph-unwelcomed-too-large",
        &with_mode(0, &graph_frame),
    );

    // The handshake, as the connecting side sends it.
    let peer_hello = hello_frame(&hello(Role::Peer));
    let handshake = |mode: u8, frames: &[&[u8]]| {
        let mut out = vec![mode];
        for f in frames {
            out.extend_from_slice(f);
        }
        out
    };
    c.put(
        "handshake",
        "peer-hello-then-get",
        &handshake(0, &[&peer_hello, &get]),
    );
    c.put(
        "handshake",
        "peer-hello-with-secret-wrong-proof",
        &handshake(
            1,
            &[&peer_hello, &raw_frame(&AuthProof { proof: [0; 32] }, &[])],
        ),
    );
    c.put(
        "handshake",
        "wrong-version",
        &handshake(0, &[&hello_frame(&old)]),
    );
    c.put(
        "handshake",
        "wrong-schema",
        &handshake(0, &[&hello_frame(&fork)]),
    );
    let mut big_hello = hello(Role::Peer);
    big_hello.name = "n".repeat(70 << 10);
    c.put(
        "handshake",
        "hello-over-handshake-limit",
        &handshake(0, &[&hello_frame(&big_hello)]),
    );
    c.put(
        "handshake",
        "refusal",
        &handshake(0, &[&encode_refusal("no")]),
    );
    c.put(
        "handshake",
        "huge-header-len",
        &handshake(1, &[&huge_lengths()[0].1]),
    );

    // A holder serving a requester: hello, requests, releases.
    let requests = plain(vec![
        PeerMsg::GetData {
            req: 1,
            tasks: (0..9).map(TaskId).collect(),
            into_device: false,
        },
        PeerMsg::GetData {
            req: 2,
            tasks: vec![TaskId(2), TaskId(3)],
            into_device: true,
        },
    ]);
    let releases = plain(vec![
        PeerMsg::Release {
            loans: vec![1, 2, 3, u64::MAX],
        },
        PeerMsg::GetData {
            req: 3,
            tasks: vec![TaskId(3)],
            into_device: false,
        },
    ]);
    c.put(
        "peer_serve",
        "requests",
        &[&peer_hello[..], &requests, &releases].concat(),
    );
    c.put(
        "peer_serve",
        "unexpected-reply",
        &[&peer_hello[..], &data_reply].concat(),
    );
    c.put("peer_serve", "wrong-version", &hello_frame(&old));

    // Values: an archived datum as a frame's header.
    let datum_frame = |d: &Datum, bufs: &[&[u8]]| raw_frame(d, bufs);
    c.put(
        "value",
        "every-kind",
        &datum_frame(
            &Datum::List(vec![
                Datum::Null,
                Datum::Bool(true),
                Datum::Int(-5),
                Datum::Float(2.5),
                Datum::Str("a string longer than eight bytes".into()),
                Datum::Buf(0),
                Datum::List(vec![]),
                Datum::Ref(1),
            ]),
            &[b"bytes"],
        ),
    );
    c.put(
        "value",
        "array-chunk",
        &datum_frame(&item_value, &[&[0u8; 16]]),
    );
    let overflowing_chunk = Datum::List(vec![
        Datum::Str("f64".into()),
        Datum::List(vec![
            Datum::Int(1 << 32),
            Datum::Int(1 << 32),
            Datum::Int(1 << 3),
        ]),
        Datum::Buf(0),
    ]);
    c.put(
        "value",
        "chunk-shape-overflows",
        &datum_frame(&overflowing_chunk, &[b""]),
    );
    c.put(
        "value",
        "chunk-negative-dim",
        &datum_frame(
            &Datum::List(vec![
                Datum::Str("u8".into()),
                Datum::List(vec![Datum::Int(-1)]),
                Datum::Buf(0),
            ]),
            &[b"x"],
        ),
    );
    #[derive(Serialize)]
    enum Shape {
        #[allow(dead_code)]
        Empty,
        Circle(f64),
        Poly(Vec<(i32, i32)>),
        Named {
            name: String,
            sides: u8,
        },
    }
    let typed: Vec<Value> = vec![
        rask_proto::typed::to_value(&(7u64, "seven".to_string())).unwrap(),
        rask_proto::typed::to_value(&vec![1.5f32; 2000]).unwrap(),
        rask_proto::typed::to_value(&vec![Shape::Circle(1.0), Shape::Poly(vec![(1, 2)])]).unwrap(),
        rask_proto::typed::to_value(&Shape::Named {
            name: "hex".into(),
            sides: 6,
        })
        .unwrap(),
        rask_proto::typed::to_value(&HashMap::from([("k".to_string(), vec![1i64, 2])])).unwrap(),
        rask_proto::typed::to_value(&(u128::MAX, i128::MIN, true)).unwrap(),
        rask_proto::typed::to_value(&Some([1u16, 2, 3, 4])).unwrap(),
    ];
    for (i, v) in typed.iter().enumerate() {
        let mut bufs = Vec::new();
        let d = v.to_datum(&mut bufs).expect("typed wire form");
        let refs: Vec<&[u8]> = bufs.iter().map(|b| &b[..]).collect();
        c.put("value", &format!("typed-{i}"), &datum_frame(&d, &refs));
    }
    c.put(
        "value",
        "nested-max-depth",
        &datum_frame(&nested(MAX_DEPTH), &[]),
    );
    c.put(
        "value",
        "nested-beyond-max-depth",
        &datum_frame(&nested(MAX_DEPTH + 1), &[]),
    );
    // Far deeper than any stack: only a node list can say it.
    let mut deep: Vec<Node> = (0..100_000).map(|_| Node::List(1)).collect();
    deep.push(Node::Int(1));
    c.put("value", "nested-100000-levels", &raw_frame(&deep, &[]));
    c.put(
        "value",
        "list-announces-4-billion-items",
        &raw_frame(&vec![Node::List(u32::MAX), Node::Null], &[]),
    );
    let mut wide: Vec<Node> = (0..MAX_DEPTH as u32)
        .map(|i| Node::List(4096 - i))
        .collect();
    wide.extend((0..4096).map(|_| Node::Null));
    c.put(
        "value",
        "nested-lists-each-claiming-all",
        &raw_frame(&wide, &[]),
    );
    c.put(
        "value",
        "nodes-after-the-end",
        &raw_frame(&vec![Node::Int(1), Node::Int(2)], &[]),
    );

    // The scheduler's state machine: step scripts (see rask_fuzz::sched).
    let mut s = ScriptWriter::default();
    s.u8(sstep::CLIENT_JOINS)
        .u8(sstep::WORKER_JOINS)
        .u8(0b0000_0100)
        .u8(sstep::WORKER_JOINS)
        .u8(0b0011_0001)
        .u8(sstep::CLOCK)
        .u64(1_700_000_000_000_000)
        .u8(sstep::CLIENT_FRAME)
        .u8(0)
        .chunk(&graph_frame);
    for round in 0..6u8 {
        for w in 0..2u8 {
            s.u8(sstep::ANSWER)
                .u8(w)
                .u8(0)
                .u32(8 + round as u32)
                .u32(100);
        }
    }
    let happy = s.out.clone();
    s.u8(sstep::CLIENT_FRAME).u8(0).chunk(&client_session);
    s.u8(sstep::WORKER_FRAME)
        .u8(1)
        .chunk(&plain(vec![heartbeat()]));
    s.u8(sstep::RETIRE_SELF).u8(1);
    s.u8(sstep::ANSWER).u8(0).u8(3).u32(0).u32(0);
    s.u8(sstep::WORKER_LOST).u8(0);
    s.u8(sstep::CLIENT_LEFT).u8(0);
    c.put("scheduler_core", "graph-runs-to-the-end", &happy);
    c.put("scheduler_core", "client-session-then-retire", &s.out);
    let mut s = ScriptWriter::default();
    s.u8(sstep::CLIENT_JOINS)
        .u8(sstep::WORKER_JOINS)
        .u8(0)
        .u8(sstep::REGISTRY)
        .u8(1)
        .u8(sstep::CLIENT_FRAME)
        .u8(0)
        .chunk(&graph_in_parts)
        .u8(sstep::ANSWER)
        .u8(0)
        .u8(1)
        .u32(0)
        .u32(0)
        .u8(sstep::ANSWER)
        .u8(0)
        .u8(2)
        .u32(0)
        .u32(0)
        .u8(sstep::WORKER_FRAME)
        .u8(0)
        .chunk(&worker_session)
        .u8(sstep::WORKER_LOST)
        .u8(0)
        .u8(sstep::WORKER_JOINS)
        .u8(0x90)
        .u8(sstep::CLIENT_FRAME)
        .u8(0)
        .chunk(&program);
    c.put("scheduler_core", "errors-missing-data-and-loss", &s.out);
    let mut s = ScriptWriter::default();
    s.u8(sstep::CLIENT_JOINS);
    for _ in 0..3 {
        s.u8(sstep::WORKER_JOINS).u8(2);
    }
    s.u8(sstep::CLIENT_FRAME).u8(0).chunk(&graph_frame);
    for w in 0..3u8 {
        s.u8(sstep::ANSWER).u8(w).u8(0).u32(1 << 20).u32(10);
    }
    s.u8(sstep::CLIENT_FRAME)
        .u8(0)
        .chunk(&plain(vec![ToScheduler::RetireWorkers {
            req: 1,
            names: vec!["worker-1".into(), "tcp://127.0.0.1:40002".into()],
        }]));
    for w in 0..3u8 {
        s.u8(sstep::ANSWER).u8(w).u8(3).u32(0).u32(0);
        s.u8(sstep::ANSWER).u8(w).u8(0).u32(8).u32(10);
    }
    c.put("scheduler_core", "retire-workers-copies", &s.out);
    let mut s = ScriptWriter::default();
    s.u8(sstep::CLIENT_JOINS)
        .u8(sstep::WORKER_JOINS)
        .u8(0)
        .u8(sstep::CLIENT_FRAME)
        .u8(0)
        .chunk(&graph_frame)
        .u8(sstep::WORKER_FRAME)
        .u8(0)
        .chunk(&plain(vec![ToScheduler::TaskFinished(TaskFinishedMsg {
            run: 1,
            task: TaskId(0),
            nbytes: u64::MAX,
            duration_us: u64::MAX,
            fetch_us: u64::MAX,
            value: None,
        })]))
        .u8(sstep::WORKER_FRAME)
        .u8(0)
        .chunk(&plain(vec![ToScheduler::TaskFinished(TaskFinishedMsg {
            run: 1,
            task: TaskId(1),
            nbytes: u64::MAX,
            duration_us: u64::MAX,
            fetch_us: u64::MAX,
            value: None,
        })]));
    c.put("scheduler_core", "finished-with-huge-numbers", &s.out);
    // Built steps: small graphs over a few keys, reports on any task, questions.
    let mut s = ScriptWriter::default();
    s.u8(sstep::CLIENT_JOINS)
        .u8(sstep::CLIENT_JOINS)
        .u8(sstep::WORKER_JOINS)
        .u8(0)
        .u8(sstep::WORKER_JOINS)
        .u8(0x30)
        .u8(sstep::WORKER_JOINS)
        .u8(2);
    // inc-1; inc-2; add-1 reads inc-1 and inc-2 (with a buffer); sum-1 reads add-1; a
    // GPU task; wanted: add-1, sum-1, gpu-1.
    s.u8(sstep::GRAPH).u8(0).u8(5);
    for spec in [
        [0u8, 0, 0],
        [1, 0, 2],
        [2, 0b11, 3],
        [4, 0b100, 4],
        [5, 0, 0x10],
    ] {
        s.u8(spec[0]).u8(spec[1]).u8(spec[2]);
    }
    s.u8(0b10_0100);
    // The other client: a cycle (x reads itself), refused; then one reading inc-1.
    s.u8(sstep::GRAPH)
        .u8(1)
        .u8(1)
        .u8(6)
        .u8(0b100_0000)
        .u8(0)
        .u8(0);
    s.u8(sstep::GRAPH)
        .u8(1)
        .u8(1)
        .u8(6)
        .u8(1)
        .u8(2)
        .u8(0b100_0000);
    for round in 0..4u8 {
        for w in 0..3u8 {
            s.u8(sstep::ANSWER)
                .u8(w)
                .u8(0)
                .u32(64)
                .u32(round as u32 * 10);
        }
    }
    s.u8(sstep::REPORT).u8(0).u8(0).u8(2).u8(0);
    s.u8(sstep::REPORT).u8(1).u8(2).u8(3).u8(2);
    s.u8(sstep::ASK).u8(0).u8(3).u8(0xff);
    s.u8(sstep::ASK).u8(0).u8(0).u8(0b001);
    s.u8(sstep::ASK).u8(1).u8(5).u8(0x41);
    s.u8(sstep::RELEASE).u8(0).u8(0b11_0100);
    s.u8(sstep::WORKER_LOST).u8(1);
    s.u8(sstep::CLIENT_LEFT).u8(1);
    c.put("scheduler_core", "built-steps", &s.out);
    // A worker that joins again holding values (after a partition), and a client that
    // resubscribes.
    let mut s = ScriptWriter::default();
    s.u8(sstep::CLIENT_JOINS)
        .u8(sstep::WORKER_JOINS)
        .u8(0)
        .u8(sstep::CLIENT_FRAME)
        .u8(0)
        .chunk(&graph_frame)
        .u8(sstep::ANSWER)
        .u8(0)
        .u8(0)
        .u32(8)
        .u32(10)
        .u8(sstep::WORKER_LOST)
        .u8(0)
        .u8(sstep::REJOIN)
        .u8(0)
        .u8(sstep::HOLD)
        .u8(0)
        .u8(2)
        .u8(0)
        .u8(1)
        .u8(1)
        .u8(1)
        .u8(sstep::WORKER_FRAME)
        .u8(0)
        .chunk(&plain(vec![ToScheduler::Holding {
            tasks: vec![(TaskId(2), 8), (TaskId(1 << 32), u64::MAX)],
            last: true,
        }]))
        .u8(sstep::CLIENT_FRAME)
        .u8(0)
        .chunk(&plain(vec![ToScheduler::Resubscribe {
            keys: vec!["sum-1".into(), "gone".into()],
        }]));
    c.put("scheduler_core", "worker-rejoins-holding", &s.out);

    // The worker's state machine: step scripts (see rask_fuzz::wcore).
    let mut s = ScriptWriter::default();
    s.u8(1).u8(wstep::FRAMES).chunk(&scheduler_to_worker);
    let mut w = ScriptWriter::default();
    w.u8(1)
        .u8(wstep::FRAMES)
        .chunk(&wire(vec![vec![
            (
                compute(0, vec![], Datum::List(vec![Datum::Int(1), Datum::Buf(0)])),
                vec![Bytes::from_static(b"x")],
            ),
            (
                compute(
                    1,
                    vec![dep(0, vec![]), dep(9, vec![2, 3])],
                    Datum::List(vec![Datum::Ref(0), Datum::Ref(1)]),
                ),
                vec![],
            ),
        ]]))
        .u8(wstep::FETCH_FAILED)
        .u8(0)
        .u8(wstep::FETCHED)
        .u8(0)
        .u8(0)
        .u8(wstep::EXECUTED)
        .u8(0)
        .u8(0)
        .u32(8)
        .u8(wstep::EXECUTED)
        .u8(0)
        .u8(0)
        .u32(8);
    c.put("worker_core", "scheduler-session", &s.out);
    c.put("worker_core", "fetch-then-run", &w.out);
    let mut w = ScriptWriter::default();
    w.u8(3);
    for (tag, a, b, cc) in [
        (wstep::COMPUTE, 0x01, 0x01, 0x05),
        (wstep::COMPUTE, 0x02, 0x05, 0x06),
        (wstep::REPLICAS, 0x03, 0x05, 0),
        (wstep::PAUSE, 1, 0, 0),
        (wstep::PAUSE, 0, 0, 0),
        (wstep::FETCHED, 0, 0xff, 0),
        (wstep::FREE, 0x01, 0, 0),
        (wstep::COMPUTE, 0x01, 0x01, 0x05),
    ] {
        w.u8(tag).u8(a).u8(b).u8(cc);
    }
    c.put("worker_core", "computes-frees-copies", &w.out);
    let mut w = ScriptWriter::default();
    w.u8(2);
    for (tag, a, b, cc) in [
        (wstep::COMPUTE, 0x01, 0x01, 0x05),
        (wstep::COMPUTE, 0x02, 0x00, 0x00),
        (wstep::COMPUTE, 0x03, 0x05, 0x06),
        (wstep::REJOIN, 0, 0, 0),
        (wstep::FETCHED, 0, 0, 0),
        (wstep::EXECUTED, 0, 0, 0),
        (wstep::COMPUTE, 0x01, 0x01, 0x05),
    ] {
        w.u8(tag).u8(a).u8(b).u8(cc);
    }
    c.put("worker_core", "rejoin-mid-work", &w.out);

    let mut names: Vec<_> = c.written.iter().collect();
    names.sort();
    for (t, n) in names {
        println!("{t}: {n} seeds");
    }
}

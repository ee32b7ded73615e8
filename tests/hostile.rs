//! Hostile and careless peers against real processes: values nested far deeper than any
//! stack on every port, unauthenticated connections announcing huge frames, floods of
//! garbage, stray workers with other ops or other code, refusals that must say why, and
//! calls that must fail at once instead of hanging. Every test has a deadline that fails
//! it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rask::{Arg, Client, Graph, LocalCluster, Value};
use rask_proto::frame::{encode_frame, encode_header, encode_prefix, PREFIX_LEN};
use rask_proto::msg::{
    DataItem, Hello, PeerMsg, Role, TaskSpec, ToClient, ToScheduler, UpdateGraphMsg,
};
use rask_proto::{Datum, TaskId};

mod common;

use common::{eventually, tmpfile, within, Proc, RASK};

/// `rask scheduler` on a free port with its log in a file; `env` are extra variables.
fn scheduler_logged(extra: &[&str], env: &[(&str, &str)]) -> (Proc, String, PathBuf) {
    let file = tmpfile(&format!("addr-{}", unique()));
    let log = tmpfile(&format!("log-{}", unique()));
    let child = Command::new(RASK)
        .args(["scheduler", "--port", "0", "--scheduler-file"])
        .arg(&file)
        .args(extra)
        .envs(env.iter().copied())
        .env("RASK_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start rask scheduler");
    let mut p = Proc::new(child);
    let mut addr = String::new();
    eventually("the scheduler writes its address", || {
        if let Ok(Some(status)) = p.0.try_wait() {
            panic!("the scheduler exited: {status}");
        }
        addr = std::fs::read_to_string(&file)
            .unwrap_or_default()
            .trim()
            .to_string();
        !addr.is_empty()
    });
    let _ = std::fs::remove_file(&file);
    (p, addr, log)
}

fn unique() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn worker(addr: &str, name: &str, extra: &[&str]) -> Proc {
    common::worker_with(&[], addr, name, extra)
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`: the peak).
fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("no {field} for {pid}"))
}

fn alive(p: &mut Proc) -> bool {
    matches!(p.0.try_wait(), Ok(None))
}

fn hello(role: Role, name: &str) -> Hello {
    common::raw_hello(role, name)
}

/// A worker's description for a raw-protocol worker (it leaves before any work).
fn fake_worker(code: u64) -> rask_proto::msg::WorkerHello {
    rask_proto::msg::WorkerHello {
        listen_addr: "tcp://127.0.0.1:9".into(),
        shm_addr: String::new(),
        transport: "tcp".into(),
        device: "host".into(),
        device_name: String::new(),
        gpu: None,
        nvlink: vec![],
        device_memory_limit: 0,
        device_spill_at: 0,
        nthreads: 1,
        memory_limit: 1 << 30,
        resources: vec![],
        code,
        runs_programs: false,
        dashboard: String::new(),
        holds: false,
    }
}

fn tcp_addr(addr: &str) -> &str {
    addr.strip_prefix("tcp://").unwrap_or(addr)
}

/// The bytes of one frame whose messages carry a value nested `LEVELS` deep. Built and
/// dropped on a thread with a stack large enough for the value itself (building and
/// dropping a tree recurse; the receivers must not).
const LEVELS: usize = 200_000;

fn deep_frame<M: Send + 'static>(
    make: impl FnOnce(Datum) -> Vec<M> + Send + 'static,
    encode: fn(&Vec<M>) -> Vec<u8>,
) -> Vec<u8> {
    std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(move || {
            let mut d = Datum::Int(1);
            for _ in 0..LEVELS {
                d = Datum::List(vec![d]);
            }
            let msgs = make(d);
            let header = encode(&msgs);
            assert!(header.len() > LEVELS, "a {} byte frame", header.len());
            encode_frame(&header, &[])
        })
        .unwrap()
        .join()
        .unwrap()
}

fn deep_update_graph() -> Vec<u8> {
    deep_frame(
        |d| {
            vec![ToScheduler::UpdateGraph(UpdateGraphMsg {
                tasks: vec![TaskSpec {
                    key: "deep".into(),
                    op: "identity".into(),
                    args: d,
                    deps: vec![],
                    resources: vec![],
                }],
                wanted: vec!["deep".into()],
                more: false,
            })]
        },
        |m| encode_header(m).to_vec(),
    )
}

fn deep_peer_data() -> Vec<u8> {
    deep_frame(
        |d| {
            vec![PeerMsg::Data {
                req: 1,
                items: vec![DataItem {
                    task: TaskId(1),
                    value: d,
                }],
                missing: vec![],
            }]
        },
        |m| encode_header(m).to_vec(),
    )
}

/// Sends `frame` on a connection that has been through its handshake; returns both
/// halves, so that the caller can see it closed while keeping its own side open.
async fn send_after_hello<R, W>(
    conn: (rask_transport::FrameReader<R>, W, u32),
    frame: &[u8],
) -> (rask_transport::FrameReader<R>, W)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let (r, mut w, _) = conn;
    // The peer may close before reading all of it.
    let _ = w.write_all(frame).await;
    let _ = w.flush().await;
    (r, w)
}

/// Reads until the peer closes the connection (batches it sends first are skipped).
async fn closed_by_peer<R: tokio::io::AsyncRead + Unpin>(r: &mut rask_transport::FrameReader<R>) {
    while let Ok(Some(_)) = r.read_frame().await {}
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Checks that the cluster still computes exactly.
fn still_serves(addr: &str) {
    let c = Client::connect(addr).unwrap();
    let fs = c.map("inc", (0..50).map(|i| [Arg::from(i)])).unwrap();
    assert_eq!(
        c.gather(&fs).unwrap(),
        (1..=50).map(Value::Int).collect::<Vec<_>>()
    );
}

#[test]
fn a_value_nested_200000_levels_deep_closes_only_its_connection_on_every_port() {
    within(Duration::from_secs(240), || {
        let (mut sched, addr, _log) = scheduler_logged(&[], &[]);
        let mut w = worker(&addr, "w", &[]);
        let c = Client::connect(&addr).unwrap();
        c.wait_for_workers(1).unwrap();
        let info = c.scheduler_info().unwrap();
        let (data_addr, shm_addr) = (
            info.workers[0].addr.clone(),
            info.workers[0].shm_addr.clone(),
        );
        assert!(!shm_addr.is_empty(), "the worker offers shared memory");
        let rt = rt();
        let cfg = rask_transport::ConnConfig::default;

        // The scheduler, from a client and from a worker (one with the cluster's ops and
        // code, so that it is welcomed).
        let frame = deep_update_graph();
        let code = rask_kernels::code_identity_of(std::path::Path::new(RASK)).unwrap();
        for role in [Role::Client, Role::Worker] {
            rt.block_on(async {
                let mut h = hello(role.clone(), "deep");
                if role == Role::Worker {
                    h.registry = Some(rask::Registry::builtin().info());
                    h.worker = Some(fake_worker(code));
                }
                let conn = rask_transport::connect(&addr, &h, cfg()).await.unwrap();
                let (mut r, _w) = send_after_hello(conn, &frame).await;
                closed_by_peer(&mut r).await;
            });
        }
        assert!(alive(&mut sched), "the scheduler survived");
        still_serves(&addr);

        // The worker's tcp data port and its shared-memory socket.
        let frame = deep_peer_data();
        rt.block_on(async {
            let conn = rask_transport::connect(&data_addr, &hello(Role::Peer, "deep"), cfg())
                .await
                .unwrap();
            let (mut r, _w) = send_after_hello(conn, &frame).await;
            closed_by_peer(&mut r).await;
            let conn = rask_transport::connect_unix(&shm_addr, &hello(Role::Peer, "deep"), cfg())
                .await
                .unwrap();
            let (mut r, _w) = send_after_hello(conn, &frame).await;
            closed_by_peer(&mut r).await;
        });
        assert!(alive(&mut w), "the worker survived");
        assert!(alive(&mut sched), "the scheduler survived");
        still_serves(&addr);
    });
}

#[test]
fn a_client_told_a_value_200000_levels_deep_gets_an_error_and_lives() {
    within(Duration::from_secs(120), || {
        let rt = rt();
        let listener = rt.block_on(rask_transport::listen("127.0.0.1:0")).unwrap();
        let addr = rask_transport::listener_addr(&listener).unwrap();
        let frame = deep_frame(
            |d| {
                vec![ToClient::KeyInMemory {
                    key: "k".into(),
                    task: TaskId(1),
                    nbytes: 8,
                    holders: vec![],
                    value: Some(rask_proto::packed::Packed::new(&d)),
                }]
            },
            |m| encode_header(m).to_vec(),
        );
        // A scheduler that answers the client's submission with a value too deep.
        let server = std::thread::spawn(move || {
            rt.block_on(async move {
                use tokio::io::AsyncWriteExt;
                let (s, _) = listener.accept().await.unwrap();
                let (r, mut w) = s.into_split();
                let cfg = rask_transport::ConnConfig::default();
                let mut reader = rask_transport::FrameReader::new(r, cfg.clone());
                rask_transport::accept(&mut reader, &mut w, &cfg)
                    .await
                    .unwrap();
                rask_transport::welcome(&mut w, &reader, 1).await.unwrap();
                reader.read_batch::<ToScheduler>().await.unwrap().unwrap();
                w.write_all(&frame).await.unwrap();
                // Hold the connection until the client is done with it.
                let _ = reader.read_frame().await;
            })
        });
        let c = Client::connect(&addr).unwrap();
        let mut g = Graph::new();
        g.value("k", 1);
        let err = c.get(&g, &["k"]).unwrap_err().to_string();
        assert!(err.contains("deeper than 64"), "{err}");
        drop(c);
        server.join().unwrap();
    });
}

/// Maps a client could send that name no task rightly — numbered past the largest number,
/// a buffer the frame does not have, an input a map's task cannot have — are refused to
/// that client for each of its keys, with the reason, by a scheduler with a journal and
/// one without; nothing is added, and both go on serving.
#[test]
fn malformed_maps_are_refused_to_their_client_with_the_reason() {
    use rask_proto::msg::MapMsg;
    within(Duration::from_secs(120), || {
        let journal = tmpfile(&format!("journal-maps-{}", unique()));
        let _ = std::fs::remove_file(&journal);
        let journal_arg = journal.to_string_lossy().to_string();
        for extra in [vec![], vec!["--journal", journal_arg.as_str()]] {
            let (mut sched, addr, _log) = scheduler_logged(&extra, &[]);
            let _w = worker(&addr, "w", &[]);
            let map = |first: u64, args: Vec<Datum>| MapMsg {
                prefix: "hostile".into(),
                first,
                op: "inc".into(),
                args: args.into_iter().map(Into::into).collect(),
                resources: vec![],
            };
            let one = || Datum::List(vec![Datum::Int(1)]);
            let cases = [
                (
                    map(u64::MAX, vec![one(), one()]),
                    "past the largest number",
                    2,
                ),
                (
                    map(0, vec![one(), Datum::List(vec![Datum::Buf(0)])]),
                    "buffer",
                    2,
                ),
                (
                    map(0, vec![Datum::List(vec![Datum::Ref(0)])]),
                    "refers to dependency 0",
                    1,
                ),
            ];
            rt().block_on(async {
                let conn = rask_transport::connect(
                    &addr,
                    &hello(Role::Client, "maps"),
                    rask_transport::ConnConfig::default(),
                )
                .await
                .unwrap();
                let (mut r, mut w, _) = conn;
                for (m, why, n) in cases {
                    use tokio::io::AsyncWriteExt;
                    let header = encode_header(&vec![ToScheduler::Map(Box::new(m))]);
                    w.write_all(&encode_frame(&header, &[])).await.unwrap();
                    let (keys, message) = loop {
                        let batch = r.read_batch::<ToClient>().await.unwrap().unwrap();
                        let rejected = batch.msgs.into_iter().find_map(|m| match m {
                            ToClient::GraphRejected { keys, message } => Some((keys, message)),
                            _ => None,
                        });
                        if let Some(r) = rejected {
                            break r;
                        }
                    };
                    assert!(message.contains(why), "{message} (journal: {extra:?})");
                    assert_eq!(keys.len(), n, "every key of the map: {keys:?}");
                    assert!(keys.iter().all(|k| k.starts_with("hostile-")), "{keys:?}");
                }
            });
            let c = Client::connect(&addr).unwrap();
            let held: u64 = c
                .scheduler_info()
                .unwrap()
                .tasks_by_state
                .iter()
                .map(|(_, n)| n)
                .sum();
            assert_eq!(held, 0, "nothing was added");
            still_serves(&addr);
            assert!(alive(&mut sched), "the scheduler lives");
        }
        let _ = std::fs::remove_file(&journal);
    });
}

/// A release naming more keys than one message may (a run announcing 2^64 - 1 keys, or
/// runs whose counts sum past the bound) is refused whole, logged with its client, and
/// changes nothing; a release within the bound, runs wrapping past the largest number and
/// naming keys never known among them, releases what it names.
#[test]
fn releases_of_more_keys_than_a_message_may_name_are_refused_and_logged() {
    use rask_proto::msg::{KeyRun, MapMsg, MAX_RELEASE_RUN_KEYS};
    within(Duration::from_secs(120), || {
        let (mut sched, addr, log) = scheduler_logged(&[], &[]);
        let _w = worker(&addr, "w", &[]);
        let held = |c: &Client| -> u64 {
            let info = c.scheduler_info().unwrap();
            info.tasks_by_state.iter().map(|(_, n)| n).sum()
        };
        let run = |prefix: &str, first: u64, count: u64| KeyRun {
            prefix: prefix.into(),
            first,
            count,
        };
        let observer = Client::connect(&addr).unwrap();
        // A raw client: each frame written on its runtime, the scheduler watched from
        // outside it.
        let rt = rt();
        let (_r, mut w, _) = rt
            .block_on(rask_transport::connect(
                &addr,
                &hello(Role::Client, "releases"),
                rask_transport::ConnConfig::default(),
            ))
            .unwrap();
        let mut send = |m: ToScheduler| {
            use tokio::io::AsyncWriteExt;
            let frame = encode_frame(&encode_header(&vec![m]), &[]);
            rt.block_on(async { w.write_all(&frame).await.and(w.flush().await) })
                .unwrap();
        };
        let map = MapMsg {
            prefix: "hostile".into(),
            first: u64::MAX - 49,
            op: "inc".into(),
            args: (0..50)
                .map(|i| Datum::List(vec![Datum::Int(i)]).into())
                .collect(),
            resources: vec![],
        };
        send(ToScheduler::Map(Box::new(map)));
        eventually("the map is held", || held(&observer) == 50);
        for (i, runs) in [
            vec![run("hostile", 0, u64::MAX)],
            vec![
                run("hostile", u64::MAX - 49, MAX_RELEASE_RUN_KEYS),
                run("hostile", 0, 1),
            ],
        ]
        .into_iter()
        .enumerate()
        {
            send(ToScheduler::ReleaseMapKeys { runs });
            eventually("the refusal is logged", || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                text.matches("refusing a release of more keys").count() == i + 1
            });
            let text = std::fs::read_to_string(&log).unwrap();
            assert!(text.contains("client="), "{text}");
            assert_eq!(held(&observer), 50, "a refused release released nothing");
        }
        // Within the bound: the last ten (and two numbers past them, wrapping), a prefix
        // never known, then the first forty.
        send(ToScheduler::ReleaseMapKeys {
            runs: vec![
                run("hostile", u64::MAX - 9, 12),
                run("never", 3, 1000),
                run("hostile", u64::MAX - 49, 40),
            ],
        });
        eventually("everything is released", || held(&observer) == 0);
        still_serves(&addr);
        assert!(alive(&mut sched), "the scheduler lives");
    });
}

/// A frame prefix announcing `header` bytes of header and `bufs` buffers.
fn announce(header: u32, bufs: &[u64]) -> Vec<u8> {
    encode_prefix(header as usize, bufs.iter().copied())
}

#[test]
fn unauthenticated_connections_announcing_64_mib_frames_cost_no_memory() {
    within(Duration::from_secs(180), || {
        let (mut sched, addr, _log) = scheduler_logged(
            &["--frame-timeout", "3"],
            &[("RASK_AUTH_SECRET", "a secret nobody here knows")],
        );
        let pid = sched.0.id();
        let before = status_kib(pid, "VmHWM");
        let mut conns = Vec::new();
        for i in 0..64 {
            let mut s = TcpStream::connect(tcp_addr(&addr)).unwrap();
            let prefix = if i % 2 == 0 {
                announce(64 << 20, &[])
            } else {
                announce(16, &[64 << 20])
            };
            s.write_all(&prefix).unwrap();
            // Some of the announced bytes, to be read (or not).
            let _ = s.write_all(&vec![0u8; 64 << 10]);
            conns.push(s);
        }
        // The scheduler ends every one of them (at once, or when the frame times out).
        for s in &mut conns {
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        let grew = status_kib(pid, "VmHWM").saturating_sub(before);
        assert!(alive(&mut sched));
        assert!(
            grew < 8 << 10,
            "the scheduler's peak memory grew by {grew} KiB"
        );
    });
}

#[test]
fn welcomed_peers_announcing_64_mib_but_sending_little_hold_little() {
    within(Duration::from_secs(180), || {
        let (mut sched, addr, _log) = scheduler_logged(&["--frame-timeout", "3"], &[]);
        let pid = sched.0.id();
        let before = status_kib(pid, "VmHWM");
        let rt = rt();
        rt.block_on(async {
            let mut readers = Vec::new();
            for i in 0..16 {
                let conn = rask_transport::connect(
                    &addr,
                    &hello(Role::Client, "greedy"),
                    rask_transport::ConnConfig::default(),
                )
                .await
                .unwrap();
                // A header beyond a frame's target size, one of that size (what a
                // writer sends at most), or a large buffer.
                let mut announced = match i % 3 {
                    0 => announce(64 << 20, &[]),
                    1 => announce(rask_transport::FRAME_TARGET as u32, &[]),
                    _ => announce(16, &[64 << 20]),
                };
                announced.extend_from_slice(&[0u8; 4096]);
                readers.push(send_after_hello(conn, &announced).await);
            }
            // The frames time out after 3 s: then every one has been read as far as it
            // goes.
            for (r, _w) in &mut readers {
                closed_by_peer(r).await;
            }
        });
        let grew = status_kib(pid, "VmHWM").saturating_sub(before);
        assert!(alive(&mut sched));
        assert!(
            grew < 8 << 10,
            "the scheduler's peak memory grew by {grew} KiB"
        );
    });
}

/// Garbage of many kinds: text, bad magic, wrong versions, oversize and truncated
/// frames, undecodable headers, half-open connections.
fn garbage(i: usize) -> Vec<u8> {
    let seed = i as u64 * 7919 + 1;
    match i % 6 {
        0 => b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        1 => common::random_bytes(1 + i % 4096, seed),
        2 => {
            let mut p = announce(64, &[]);
            p[4] = 9;
            p
        }
        3 => announce(u32::MAX, &[]),
        4 => encode_frame(&common::random_bytes(200, seed), &[]),
        _ => announce(1 << 20, &[])[..PREFIX_LEN - 3].to_vec(),
    }
}

#[test]
fn memory_returns_after_floods_of_garbage() {
    within(Duration::from_secs(240), || {
        let (mut sched, addr, _log) = scheduler_logged(
            &["--connect-timeout", "2"],
            &[("RASK_AUTH_SECRET", "secret")],
        );
        let pid = sched.0.id();
        let flood = || {
            for batch in 0..514 / 64 + 1 {
                let mut conns = Vec::new();
                for i in batch * 64..((batch + 1) * 64).min(514) {
                    let mut s = TcpStream::connect(tcp_addr(&addr)).unwrap();
                    let _ = s.write_all(&garbage(i));
                    conns.push(s);
                }
                for mut s in conns {
                    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    let mut buf = [0u8; 1024];
                    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                }
            }
        };
        still_serves_auth(&addr);
        let start = status_kib(pid, "VmRSS");
        flood();
        let first = status_kib(pid, "VmRSS");
        flood();
        let second = status_kib(pid, "VmRSS");
        assert!(alive(&mut sched));
        // Every admission was given back: more garbage connections came and went than
        // may be in a handshake at once, and a client still joins.
        still_serves_auth(&addr);
        println!("scheduler RSS: {start} KiB, after one flood {first} KiB, after two {second} KiB");
        assert!(
            first < start + (4 << 10),
            "{start} -> {first} KiB after 514 garbage connections"
        );
        assert!(
            second < first + (2 << 10),
            "{first} -> {second} KiB: memory kept per rejected connection"
        );
    });
}

fn still_serves_auth(addr: &str) {
    let opts = rask::ClientOptions {
        conn: rask_transport::ConnConfig {
            auth: Some(rask::Secret::new("secret")),
            ..Default::default()
        },
        ..Default::default()
    };
    let c = Client::connect_with(addr, opts).unwrap();
    assert_eq!(c.scheduler_info().unwrap().clients, 1);
}

#[test]
fn silent_connections_do_not_keep_others_from_joining() {
    within(Duration::from_secs(120), || {
        // The scheduler would wait a minute for each silent connection's hello: longer
        // than anyone joining waits for its own handshake (10 s), so a silent connection
        // holding a turn would keep them out.
        let (_s, addr, _log) = scheduler_logged(&["--connect-timeout", "60"], &[]);
        // More silent connections than handshakes may run at once.
        let silent: Vec<TcpStream> = (0..200)
            .map(|_| TcpStream::connect(tcp_addr(&addr)).unwrap())
            .collect();
        let started = Instant::now();
        let _w = worker(&addr, "w", &[]);
        still_serves(&addr);
        drop(silent);
        println!(
            "joined past 200 silent connections in {:?}",
            started.elapsed()
        );
    });
}

#[test]
fn failed_handshakes_are_logged_with_the_peers_address_and_why() {
    within(Duration::from_secs(120), || {
        let (_s, addr, log) = scheduler_logged(&[], &[("RASK_AUTH_SECRET", "right")]);
        let opts = rask::ClientOptions {
            conn: rask_transport::ConnConfig {
                auth: Some(rask::Secret::new("wrong")),
                ..Default::default()
            },
            ..Default::default()
        };
        let err = match Client::connect_with(&addr, opts) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a wrong secret must be refused"),
        };
        assert!(err.contains("authentication failed"), "{err}");
        eventually("the scheduler logs the refusal", || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines().any(|l| {
                l.contains("handshake failed")
                    && l.contains("peer=127.0.0.1:")
                    && l.contains("wrong proof")
            })
        });
    });
}

#[test]
fn a_peer_of_another_protocol_version_reads_why_it_is_refused() {
    within(Duration::from_secs(60), || {
        let (_s, addr, log) = scheduler_logged(&[], &[]);
        let mut s = TcpStream::connect(tcp_addr(&addr)).unwrap();
        // A hello framed by protocol version 2 (its body is whatever that version sends).
        let mut frame = encode_frame(&encode_header(&hello(Role::Client, "future")), &[]);
        frame[4..6].copy_from_slice(&2u16.to_le_bytes());
        s.write_all(&frame).unwrap();
        // What any version reads: the prefix, the refusal flag, the text.
        let mut prefix = [0u8; PREFIX_LEN];
        s.read_exact(&mut prefix).unwrap();
        assert_eq!(&prefix[..4], b"RASK");
        assert_eq!(
            u16::from_le_bytes([prefix[6], prefix[7]]) & 1,
            1,
            "a refusal frame"
        );
        let len = u32::from_le_bytes(prefix[8..12].try_into().unwrap()) as usize;
        let mut text = vec![0u8; len];
        s.read_exact(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("protocol version mismatch") && text.contains("you speak protocol 2"),
            "{text}"
        );
        eventually("the scheduler logs it", || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("protocol version mismatch")
        });
    });
}

#[test]
fn connecting_to_a_listener_that_never_answers_fails_within_the_connect_timeout() {
    within(Duration::from_secs(60), || {
        let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("tcp://{}", mute.local_addr().unwrap());
        let opts = rask::ClientOptions {
            conn: rask_transport::ConnConfig {
                handshake_timeout: Duration::from_secs(1),
                ..Default::default()
            },
            ..Default::default()
        };
        let err = match Client::connect_with(&addr, opts) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("nobody answered"),
        };
        assert!(err.contains("connect timeout"), "{err}");
        // A worker started against it says the same and exits once its death timeout
        // has passed (it tries again until then: a scheduler may be slow to start).
        let out = Command::new(RASK)
            .args([
                "worker",
                &addr,
                "--connect-timeout",
                "1",
                "--death-timeout",
                "1",
            ])
            .env("RASK_LOG", "error")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("connect timeout"), "{stderr}");
        drop(mute);
    });
}

#[test]
fn a_worker_that_joined_first_with_other_ops_does_not_pin_them_after_it_left() {
    within(Duration::from_secs(120), || {
        let (_s, addr, _log) = scheduler_logged(&[], &[]);
        let rt = rt();
        // A stray worker with another registry joins first, then leaves.
        let mut other = rask::Registry::builtin();
        other.register("stray", 1, |a| Ok(a[0].clone()));
        rt.block_on(async {
            let mut h = hello(Role::Worker, "stray");
            h.registry = Some(other.info());
            h.worker = Some(fake_worker(1));
            let (r, w, _) =
                rask_transport::connect(&addr, &h, rask_transport::ConnConfig::default())
                    .await
                    .unwrap();
            drop((r, w));
        });
        let c = Client::connect(&addr).unwrap();
        eventually("the stray worker is gone", || {
            c.scheduler_info().unwrap().workers.is_empty()
        });
        // A stock worker is welcome, and its ops run.
        let _w = worker(&addr, "w", &[]);
        c.wait_for_workers(1).unwrap();
        still_serves(&addr);
        // So is a client that knows only some of the cluster's ops.
        let mut few = rask::Registry::empty();
        few.register("inc", 1, |a| Ok(a[0].clone()));
        let small = Client::connect_with_registry(&addr, &few).unwrap();
        assert_eq!(
            small
                .submit("inc", [Arg::from(1)])
                .unwrap()
                .result_as::<i64>()
                .unwrap(),
            2
        );
    });
}

/// A copy of the `rask` binary with one byte of its read-only data changed (a help
/// text): the same ops and versions, other code.
fn changed_rask() -> PathBuf {
    let mut bytes = std::fs::read(RASK).unwrap();
    let needle = b"Print this build's version, op registry and host";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the help text is in the binary");
    bytes[at] = b'p';
    let path = tmpfile(&format!("rask-changed-{}", unique()));
    std::fs::write(&path, bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn two_worker_binaries_with_other_code_for_the_same_ops_never_serve_one_cluster() {
    within(Duration::from_secs(120), || {
        let (_s, addr, _log) = scheduler_logged(&[], &[]);
        let _good = worker(&addr, "good", &[]);
        let c = Client::connect(&addr).unwrap();
        c.wait_for_workers(1).unwrap();
        let changed = changed_rask();
        let out = Command::new(&changed)
            .args(["worker", &addr, "--name", "changed"])
            .env("RASK_LOG", "error")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&changed);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "the changed worker joined: {stderr}");
        assert!(
            stderr.contains("code mismatch") && stderr.contains("changed"),
            "{stderr}"
        );
        let names: Vec<String> = c
            .scheduler_info()
            .unwrap()
            .workers
            .into_iter()
            .map(|w| w.name)
            .collect();
        assert_eq!(names, ["good"]);
        still_serves(&addr);
    });
}

#[test]
fn getting_a_released_key_errs_at_once() {
    within(Duration::from_secs(60), || {
        let c = rask::Client::new().unwrap();
        let f = c.submit("inc", [Arg::from(1)]).unwrap();
        let key = f.key().to_string();
        assert_eq!(f.result_as::<i64>().unwrap(), 2);
        drop(f);
        let err = c.get(&Graph::new(), &[&key]).unwrap_err().to_string();
        assert!(err.contains(&key) && err.contains("released"), "{err}");
        // The client still works.
        assert_eq!(
            c.submit("inc", [Arg::from(2)])
                .unwrap()
                .result_as::<i64>()
                .unwrap(),
            3
        );
    });
}

#[test]
fn blocking_calls_work_inside_a_runtime_and_have_async_twins() {
    within(Duration::from_secs(120), || {
        let cluster = LocalCluster::builder().n_workers(1).build().unwrap();
        let addr = cluster.scheduler_address().to_string();
        let x = rask::array::from_ndarray(&ndarray::arr1(&[1.0f64, 2.0, 3.0]).into_dyn(), &[2])
            .unwrap();
        let y = &x * 2.0;
        for flavor in ["current_thread", "multi_thread"] {
            let rt = match flavor {
                "current_thread" => tokio::runtime::Builder::new_current_thread(),
                _ => tokio::runtime::Builder::new_multi_thread(),
            }
            .enable_all()
            .build()
            .unwrap();
            rt.block_on(async {
                // Blocking calls from async code: they block this thread, never panic.
                let c = Client::connect(&addr).unwrap();
                let f = c.submit("inc", [Arg::from(1)]).unwrap();
                assert_eq!(f.result().unwrap(), Value::Int(2));
                assert_eq!(c.gather(std::slice::from_ref(&f)).unwrap(), [Value::Int(2)]);
                f.wait().unwrap();
                assert_eq!(c.scheduler_info().unwrap().workers.len(), 1);
                assert_eq!(c.who_has(std::slice::from_ref(&f)).unwrap().len(), 1);
                let got = c.compute_array::<f64>(&y).unwrap();
                assert_eq!(got.as_slice().unwrap(), [2.0, 4.0, 6.0]);
                // Their twins.
                let c = Client::connect_async(&addr).await.unwrap();
                let f = c.submit("inc", [Arg::from(41)]).unwrap();
                assert_eq!(f.result_async().await.unwrap(), Value::Int(42));
                f.wait_async().await.unwrap();
                assert_eq!((&f).await.unwrap(), Value::Int(42));
                assert_eq!(
                    c.gather_async(std::slice::from_ref(&f)).await.unwrap(),
                    [Value::Int(42)]
                );
                assert_eq!(c.scheduler_info_async().await.unwrap().workers.len(), 1);
                assert_eq!(
                    c.who_has_async(std::slice::from_ref(&f))
                        .await
                        .unwrap()
                        .len(),
                    1
                );
                c.wait_for_workers_async(1).await.unwrap();
                let got = c.compute_array_async::<f64>(&y).await.unwrap();
                assert_eq!(got.as_slice().unwrap(), [2.0, 4.0, 6.0]);
            });
        }
    });
}

#[test]
fn command_output_into_a_closed_pipe_ends_quietly() {
    within(Duration::from_secs(60), || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(RASK)
            .arg("info")
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(out.status.code(), Some(0), "{stderr}");
    });
}

#[test]
fn a_million_task_map_from_one_call_completes_exactly() {
    within(Duration::from_secs(600), || {
        let (_s, addr, _log) = scheduler_logged(&[], &[]);
        let _w1 = worker(&addr, "w1", &[]);
        let _w2 = worker(&addr, "w2", &[]);
        let c = Client::connect(&addr).unwrap();
        c.wait_for_workers(2).unwrap();
        let n = 1_000_000i64;
        let t = Instant::now();
        let fs = c.map("inc", (0..n).map(|i| [Arg::from(i)])).unwrap();
        let submitted = t.elapsed();
        let got = c.gather(&fs).unwrap();
        println!(
            "1,000,000 tasks: submitted in {submitted:?}, gathered after {:?}",
            t.elapsed()
        );
        assert_eq!(got.len(), n as usize);
        for (i, v) in got.iter().enumerate() {
            assert_eq!(*v, Value::Int(i as i64 + 1), "task {i}");
        }
    });
}

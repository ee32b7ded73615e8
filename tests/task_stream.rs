//! What workers do besides computing, as the scheduler shows it: a value fetched from a
//! peer is a `transfer` in the task stream (from whom, over which link, how many bytes) and
//! in the pair-by-pair totals of `scheduler_info`; a value spilled is a `spill` with its
//! direction; each simulated GPU reports its utilization.

mod common;

use common::{eventually, within, DEADLINE};
use rask::{Arg, Client, ClientOptions, Graph, LocalCUDACluster};
use rask_proto::observe::TaskStreamEntryMsg;
use rask_transport::TransportMode;

const MIB: i64 = 1 << 20;

#[test]
fn transfers_and_spills_are_in_the_task_stream_and_the_link_totals() {
    within(DEADLINE, || {
        // Two simulated GPUs of 10 MiB each, spilled past 8 MiB; their workers in this
        // process, their data over tcp.
        let cluster = LocalCUDACluster::sim(2, 10 << 20)
            .processes(false)
            .transport(TransportMode::Tcp)
            .build()
            .unwrap();
        let opts = ClientOptions {
            registry: Some(cluster.registry().info()),
            ..ClientOptions::default()
        };
        let c = Client::connect_with(cluster.scheduler_address(), opts).unwrap();
        c.wait_for_workers(2).unwrap();
        let mut g = Graph::new();
        // 4 + 6 MiB on sim:0: past its spilling target, one of them leaves the GPU.
        g.task("big-a", "bytes", [Arg::from(4 * MIB), Arg::from(1)])
            .resources(&[("sim:0", 1.0)]);
        g.task("big-b", "bytes", [Arg::from(6 * MIB), Arg::from(2)])
            .resources(&[("sim:0", 1.0)]);
        // Read on sim:1: big-a travels.
        g.task("sum-a", "checksum", [Arg::key("big-a")])
            .resources(&[("sim:1", 1.0)]);
        let held = c.compute(&g, &["big-a", "big-b", "sum-a"]).unwrap();
        for f in &held {
            f.wait().unwrap();
        }
        let info = c.scheduler_info().unwrap();
        let name_of = |device: &str| {
            info.workers
                .iter()
                .find(|w| w.device == device)
                .map(|w| (w.id, w.name.clone()))
                .unwrap()
        };
        let (w0, gpu0) = name_of("sim:0");
        let (_, gpu1) = name_of("sim:1");

        let mut stream: Vec<TaskStreamEntryMsg> = Vec::new();
        eventually("the transfer and the spill are reported", || {
            stream = c.get_task_stream(0, 1000).unwrap().entries;
            stream.iter().any(|e| e.kind == "transfer") && stream.iter().any(|e| e.kind == "spill")
        });
        let t = stream.iter().find(|e| e.kind == "transfer").unwrap();
        assert_eq!(t.key, "big-a");
        assert_eq!((&t.worker_name, &t.peer_name), (&gpu1, &gpu0));
        assert_eq!(t.peer, Some(w0));
        let made = stream
            .iter()
            .find(|e| e.key == "big-a" && e.kind == "compute")
            .unwrap();
        assert_eq!(t.nbytes, made.nbytes, "the bytes of the value made");
        assert!(t.nbytes >= 4 << 20);
        assert!(t.start_us <= t.stop_us, "{t:?}");
        let computed = stream
            .iter()
            .find(|e| e.key == "sum-a" && e.kind == "compute")
            .unwrap();
        assert!(
            t.stop_us <= computed.stop_us,
            "the input arrived before its reader finished: {t:?} {computed:?}"
        );
        let s = stream.iter().find(|e| e.kind == "spill").unwrap();
        assert_eq!((s.detail.as_str(), &s.worker_name), ("device->host", &gpu0));
        assert!(s.key.starts_with("big-"), "{s:?}");
        assert!(s.nbytes >= 4 << 20, "{s:?}");
        assert!(s.peer.is_none() && s.peer_name.is_empty(), "{s:?}");
        assert!(stream
            .iter()
            .all(|e| e.kind != "compute" || e.detail.is_empty()));

        let mut receiver = None;
        eventually(
            "sim:1 reports what it received from sim:0 and its utilization",
            || {
                let info = c.scheduler_info().unwrap();
                receiver = info.workers.into_iter().find(|w| w.name == gpu1);
                receiver
                    .as_ref()
                    .is_some_and(|w| !w.received_from.is_empty() && w.utilization.is_some())
            },
        );
        let r = receiver.unwrap();
        assert_eq!(r.received_from.len(), 1, "{:?}", r.received_from);
        let pair = &r.received_from[0];
        assert_eq!((pair.peer, pair.bytes), (w0, t.nbytes));
        assert_eq!(
            pair.link, t.detail,
            "the stream and the totals name one link"
        );
        let class: u64 = r
            .received
            .iter()
            .filter(|(l, _)| *l == pair.link)
            .map(|(_, b)| b)
            .sum();
        assert_eq!(class, pair.bytes, "the pair's bytes are its link class's");
        let u = r.utilization.unwrap();
        assert!((0.0..=100.0).contains(&u), "{u}");
        assert!(
            info.workers.iter().all(|w| w.dashboard.is_empty()),
            "workers in this process serve no metrics of their own"
        );
    });
}

//! Simulated GPUs end to end: a LocalCUDACluster of four simulated GPUs in two NVLink
//! pairs; devices reported, work placed where its input is (or on the input's NVLink
//! peer when that GPU is busy), bytes moved counted per link.

mod common;

use common::{within, DEADLINE};

use rask::{Arg, Client, Graph, LocalCUDACluster, Topology, Value};

/// A client of 4 simulated GPUs of `memory` bytes each, in two NVLink pairs (0-1, 2-3).
fn four_gpus_in_pairs(memory: u64) -> Client {
    let cluster = LocalCUDACluster::sim(4, memory)
        .nvlink(Topology::pairs(4))
        .build()
        .unwrap();
    Client::for_cluster(cluster).unwrap()
}

/// The device holding a computed value (one holder).
fn device_of(c: &Client, f: &rask::Future) -> String {
    let holders = &c.who_has_devices(std::slice::from_ref(f)).unwrap()[f.key()];
    assert_eq!(holders.len(), 1, "{holders:?}");
    holders[0].1.clone()
}

#[test]
fn four_simulated_gpus_place_work_by_data_and_nvlink() {
    within(DEADLINE, || {
        let c = four_gpus_in_pairs(256 << 20);
        let info = c.scheduler_info().unwrap();
        let mut devices: Vec<String> = info.workers.iter().map(|w| w.device.clone()).collect();
        devices.sort();
        assert_eq!(devices, ["sim:0", "sim:1", "sim:2", "sim:3"]);
        for w in &info.workers {
            assert_eq!(w.device_memory_limit, 256 << 20);
            for r in ["gpu", w.device.as_str()] {
                assert!(
                    w.resources.iter().any(|x| x.name == r && x.amount == 1.0),
                    "{r} in {:?}",
                    w.resources
                );
            }
        }
        let device_of = |f: &rask::Future| device_of(&c, f);
        let one = |g: &Graph, key: &str| c.compute(g, &[key]).unwrap().pop().unwrap();

        // A 32 MiB input on GPU 2, accounted there.
        let n: u64 = 32 << 20;
        let mut g = Graph::new();
        g.task("x", "bytes", [Arg::from(n as i64), Arg::from(3)])
            .resources(&[("sim:2", 1.0), ("gpu", 1.0)]);
        let x = one(&g, "x");
        x.wait().unwrap();
        assert_eq!(device_of(&x), "sim:2");
        common::eventually("the input is accounted on GPU 2", || {
            let info = c.scheduler_info().unwrap();
            let w = info.workers.iter().find(|w| w.device == "sim:2").unwrap();
            w.device_memory_used >= n
        });
        let want = Value::Int(common::fnv1a(&vec![3u8; n as usize]) as i64);

        // A consumer that may run on any GPU runs where its input is.
        let mut g = Graph::new();
        g.task("y", "checksum", [Arg::from(&x)])
            .resources(&[("gpu", 1.0)]);
        let y = one(&g, "y");
        assert_eq!(y.result().unwrap(), want);
        assert_eq!(device_of(&y), "sim:2");

        // GPU 2 busy: the next consumer goes to its NVLink peer, GPU 3, which receives the
        // input over NVLink.
        let mut g = Graph::new();
        g.task("busy", "sleep", [Arg::from(2.0)])
            .resources(&[("sim:2", 1.0), ("gpu", 1.0)]);
        let _busy = one(&g, "busy");
        let mut g = Graph::new();
        g.task("z", "checksum", [Arg::from(&x)])
            .resources(&[("gpu", 1.0)]);
        let z = one(&g, "z");
        assert_eq!(z.result().unwrap(), want);
        assert_eq!(device_of(&z), "sim:3");
        common::eventually("GPU 3 reports the input received over NVLink", || {
            let info = c.scheduler_info().unwrap();
            let w = info.workers.iter().find(|w| w.device == "sim:3").unwrap();
            w.received.iter().any(|(k, v)| k == "nvlink" && *v >= n)
        });
        let info = c.scheduler_info().unwrap();
        for w in &info.workers {
            if w.device != "sim:3" {
                assert!(
                    w.received.iter().all(|(_, v)| *v == 0),
                    "{} received {:?}",
                    w.device,
                    w.received
                );
            }
        }
    });
}

/// A working set four times the GPUs' memory: values spill from the (simulated) devices to
/// the host and from the host to disk, and every result is still exact.
#[test]
fn a_working_set_four_times_device_memory_spills_and_stays_exact() {
    within(DEADLINE, || {
        let cluster = LocalCUDACluster::sim(4, 16 << 20)
            .memory_limit(64 << 20)
            .build()
            .unwrap();
        let c = Client::for_cluster(cluster).unwrap();
        let n: usize = 8 << 20;
        // 32 payloads of 8 MiB = 256 MiB, all held by the client, on 4 × 16 MiB of GPUs.
        let mut g = Graph::new();
        for i in 0..32 {
            g.task(
                &format!("p{i}"),
                "bytes",
                [Arg::from(n as i64), Arg::from(i)],
            )
            .resources(&[("gpu", 1.0)]);
        }
        let keys: Vec<String> = (0..32).map(|i| format!("p{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let payloads = c.compute(&g, &refs).unwrap();
        for p in &payloads {
            p.wait().unwrap();
        }
        let mut g = Graph::new();
        for (i, p) in payloads.iter().enumerate() {
            g.task(&format!("sum{i}"), "checksum", [Arg::from(p)])
                .resources(&[("gpu", 1.0)]);
        }
        let keys: Vec<String> = (0..32).map(|i| format!("sum{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let sums = c.get(&g, &refs).unwrap();
        for (i, s) in sums.iter().enumerate() {
            let want = Value::Int(common::fnv1a(&vec![i as u8; n]) as i64);
            assert_eq!(s, &want, "payload {i}");
        }
        common::eventually("workers report spilling to host and to disk", || {
            let info = c.scheduler_info().unwrap();
            let total = |what: &str| -> u64 {
                info.workers
                    .iter()
                    .flat_map(|w| w.spilled.iter())
                    .filter(|(k, _)| k.ends_with(what))
                    .map(|(_, v)| *v)
                    .sum()
            };
            total("->host") + total("device->disk") > 0 && total("->disk") > 0
        });
        for w in c.scheduler_info().unwrap().workers {
            assert!(
                w.device_memory_used <= w.device_memory_limit,
                "{}: {} of {}",
                w.device,
                w.device_memory_used,
                w.device_memory_limit
            );
        }
    });
}

/// Arrays on simulated GPUs: chunks are made on the GPU workers (in device memory) and
/// the results are exact.
#[test]
fn arrays_run_on_simulated_gpus() {
    within(DEADLINE, || {
        let cluster = LocalCUDACluster::sim(2, 256 << 20).build().unwrap();
        let c = Client::for_cluster(cluster).unwrap();
        let x = rask::array::Array::random_uniform(
            &[256, 256],
            &[128, 128],
            rask::array::DType::F64,
            5,
            0.0,
            1.0,
        )
        .unwrap();
        let p = c.persist_array(&x).unwrap();
        // Every chunk (128 KiB) lives in a GPU's memory.
        common::eventually("the chunks are accounted on the GPUs", || {
            let info = c.scheduler_info().unwrap();
            info.workers
                .iter()
                .map(|w| w.device_memory_used)
                .sum::<u64>()
                >= 4 * (128 * 128 * 8)
        });
        let y = p.matmul(&p.t().unwrap()).unwrap();
        common::check_gram(&c, p.array(), &y);
        // The chunk ops ran as device plans (kernel launches and GEMMs, here by the kernels'
        // CPU twins), on both GPUs; the array ops without one (none in this graph) would
        // count as "cpu".
        common::eventually("heartbeats report the tasks run on the devices", || {
            let info = c.scheduler_info().unwrap();
            info.workers.iter().all(|w| {
                let on = |k: &str| w.ran.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
                on("device") > 0 && on("cpu") == 0
            })
        });
    });
}

/// Device kernels' outputs stay in the GPU's memory: a chain of device ops copies nothing
/// to the host, and neither does sending results to the client (a simulated GPU's memory
/// is shared with same-host readers, the CUDA IPC analogue); an op without a device plan
/// (a rechunk) gets its inputs brought to the host, and the worker counts those bytes.
#[test]
fn device_outputs_stay_on_the_gpu_until_an_op_on_the_cpu_needs_them() {
    within(DEADLINE, || {
        let cluster = LocalCUDACluster::sim(1, 256 << 20).build().unwrap();
        let c = Client::for_cluster(cluster).unwrap();
        let local =
            ndarray::Array2::<f64>::from_shape_fn((512, 512), |(i, j)| (i * 512 + j) as f64);
        let x = rask::array::from_ndarray(&local.clone().into_dyn(), &[256, 256]).unwrap();
        let y = x.scalar("mul", 2.0).scalar("add", 1.0);
        let p = c.persist_array(&y).unwrap();
        let bytes = 512 * 512 * 8;
        let mut seen = None;
        common::eventually("the chunks are in the GPU's memory", || {
            let info = c.scheduler_info().unwrap();
            let w = info.workers[0].clone();
            let done = w.device_memory_used >= bytes;
            seen = Some(w);
            done
        });
        let w = seen.unwrap();
        assert_eq!(w.device_to_host, 0, "nothing came to the host: {w:?}");
        let want = (&local * 2.0 + 1.0).into_dyn();
        assert_eq!(c.compute_array::<f64>(p.array()).unwrap(), want);

        let r = p.array().rechunk(&[128, 512]).unwrap();
        assert_eq!(c.compute_array::<f64>(&r).unwrap(), want);
        common::eventually("the rechunk's inputs were copied to the host", || {
            let info = c.scheduler_info().unwrap();
            info.workers[0].device_to_host >= bytes
        });
    });
}

/// Array chunks made by device kernels spill from the GPUs' memory to the host (and to
/// disk) like any value, come back exact, and go back to a GPU with room when its kernels
/// read them.
#[test]
fn device_chunks_spill_and_come_back_exact() {
    within(DEADLINE, || {
        let cluster = LocalCUDACluster::sim(2, 4 << 20)
            .memory_limit(16 << 20)
            .build()
            .unwrap();
        let c = Client::for_cluster(cluster).unwrap();
        // 16 MiB of chunks (1 MiB each) on 2 × 4 MiB of GPU memory.
        let local =
            ndarray::Array2::<f64>::from_shape_fn((2048, 1024), |(i, j)| (i * 1024 + j) as f64);
        let x = rask::array::from_ndarray(&local.clone().into_dyn(), &[128, 1024]).unwrap();
        let p = c.persist_array(&x.scalar("mul", 3.0)).unwrap();
        let want = (&local * 3.0).into_dyn();
        assert_eq!(c.compute_array::<f64>(p.array()).unwrap(), want);
        common::eventually("the GPUs spilled chunks", || {
            let info = c.scheduler_info().unwrap();
            info.workers
                .iter()
                .flat_map(|w| w.spilled.iter())
                .any(|(k, v)| k.starts_with("device->") && *v > 0)
        });
        for w in c.scheduler_info().unwrap().workers {
            assert!(w.device_memory_used <= w.device_memory_limit, "{w:?}");
        }
        assert_eq!(c.compute_array::<f64>(p.array()).unwrap(), want);

        // Another array pushes every chunk of `p` off the GPUs; once it is released the GPUs
        // have room, and an op by their kernels brings `p`'s chunks back as it reads them.
        let q = c.persist_array(&x.scalar("add", 5.0)).unwrap();
        drop(q);
        common::eventually("the GPUs have room again", || {
            let info = c.scheduler_info().unwrap();
            info.workers.iter().all(|w| w.device_memory_used <= 1 << 20)
        });
        let r = p.array().scalar("add", 1.0);
        assert_eq!(c.compute_array::<f64>(&r).unwrap(), &want + 1.0);
        common::eventually("chunks went back to the GPUs", || {
            let info = c.scheduler_info().unwrap();
            info.workers
                .iter()
                .flat_map(|w| w.spilled.iter())
                .any(|(k, v)| k.ends_with("->device") && *v > 0)
        });
    });
}

/// With 4 simulated GPUs in two NVLink pairs, a consumer of two inputs held by one pair
/// runs in that pair: its input crosses NVLink, never PCIe.
#[test]
fn transfers_stay_within_nvlink_pairs() {
    within(DEADLINE, || {
        let c = four_gpus_in_pairs(256 << 20);
        let n: i64 = 8 << 20;
        let mut g = Graph::new();
        for i in 0..4 {
            g.task(&format!("a{i}"), "bytes", [Arg::from(n), Arg::from(i)])
                .resources(&[(format!("sim:{i}").as_str(), 1.0), ("gpu", 1.0)]);
        }
        let inputs = c.compute(&g, &["a0", "a1", "a2", "a3"]).unwrap();
        for f in &inputs {
            f.wait().unwrap();
        }
        let mut g = Graph::new();
        g.task(
            "p01",
            "list",
            [Arg::from(&inputs[0]), Arg::from(&inputs[1])],
        )
        .resources(&[("gpu", 1.0)]);
        g.task(
            "p23",
            "list",
            [Arg::from(&inputs[2]), Arg::from(&inputs[3])],
        )
        .resources(&[("gpu", 1.0)]);
        let pairs = c.compute(&g, &["p01", "p23"]).unwrap();
        for (k, f) in pairs.iter().enumerate() {
            let want: Vec<Value> = (0..2)
                .map(|j| Value::Bytes(vec![(2 * k + j) as u8; n as usize].into()))
                .collect();
            assert_eq!(f.result().unwrap(), Value::List(want));
            let ran_on = device_of(&c, f);
            let pair = [format!("sim:{}", 2 * k), format!("sim:{}", 2 * k + 1)];
            assert!(pair.contains(&ran_on), "{} ran on {ran_on}", f.key());
        }
        common::eventually("each pair reports one input received over NVLink", || {
            let info = c.scheduler_info().unwrap();
            let nvlink: u64 = info
                .workers
                .iter()
                .flat_map(|w| &w.received)
                .filter(|(k, _)| k == "nvlink")
                .map(|(_, v)| *v)
                .sum();
            nvlink >= 2 * n as u64
        });
        for w in &c.scheduler_info().unwrap().workers {
            for (k, v) in &w.received {
                assert!(
                    k == "nvlink" || *v == 0,
                    "{} received {v} bytes over {k}",
                    w.device
                );
            }
        }
    });
}

/// A consumer runs on the GPU that holds its input unless that GPU's memory is full: then
/// on the input's NVLink peer, which has room.
#[test]
fn a_consumer_leaves_a_full_gpu_for_its_nvlink_peer() {
    within(DEADLINE, || {
        let c = four_gpus_in_pairs(64 << 20);
        let n: i64 = 8 << 20;
        let mut g = Graph::new();
        g.task("x", "bytes", [Arg::from(n), Arg::from(5)])
            .resources(&[("sim:2", 1.0), ("gpu", 1.0)]);
        // 40 MiB more on GPU 2: 48 of its 64 MiB, below where it spills (80 %), but a
        // consumer's output there would push values out.
        g.task("fill", "bytes", [Arg::from(40i64 << 20), Arg::from(1)])
            .resources(&[("sim:2", 1.0), ("gpu", 1.0)]);
        let held = c.compute(&g, &["x", "fill"]).unwrap();
        for f in &held {
            f.wait().unwrap();
        }
        common::eventually("GPU 2 reports 48 MiB in use", || {
            let info = c.scheduler_info().unwrap();
            let w = info.workers.iter().find(|w| w.device == "sim:2").unwrap();
            w.device_memory_used >= 48 << 20
        });
        let mut g = Graph::new();
        g.task("y", "checksum", [Arg::from(&held[0])])
            .resources(&[("gpu", 1.0)]);
        let y = c.compute(&g, &["y"]).unwrap().pop().unwrap();
        let want = Value::Int(common::fnv1a(&vec![5u8; n as usize]) as i64);
        assert_eq!(y.result().unwrap(), want);
        assert_eq!(device_of(&c, &y), "sim:3");
    });
}

/// Workers offer their memory as resources (`memory`, and `device_memory` on a GPU): a
/// task that declares what it needs runs where that fits, and waits for a worker where
/// it fits nowhere.
#[test]
fn tasks_declaring_memory_run_only_where_it_fits() {
    within(DEADLINE, || {
        let cluster = LocalCUDACluster::sim(2, 64 << 20)
            .memory_limit(1 << 30)
            .build()
            .unwrap();
        let c = Client::for_cluster(cluster).unwrap();
        let info = c.scheduler_info().unwrap();
        assert_eq!(info.workers.len(), 2);
        for w in &info.workers {
            let offered = |name: &str| {
                w.resources
                    .iter()
                    .find(|r| r.name == name)
                    .map(|r| r.amount)
            };
            assert_eq!(offered("memory"), Some((1u64 << 30) as f64));
            assert_eq!(offered("device_memory"), Some((64u64 << 20) as f64));
        }
        let mut g = Graph::new();
        g.task("fits", "add", [Arg::from(1), Arg::from(2)])
            .resources(&[("device_memory", (48u64 << 20) as f64)]);
        g.task("too-big", "add", [Arg::from(3), Arg::from(4)])
            .resources(&[("device_memory", (128u64 << 20) as f64)]);
        let fs = c.compute(&g, &["fits", "too-big"]).unwrap();
        assert_eq!(fs[0].result().unwrap(), Value::Int(3));
        common::eventually("the task that fits nowhere waits for a worker", || {
            let info = c.scheduler_info().unwrap();
            info.tasks_by_state
                .iter()
                .any(|(s, n)| s == "no-worker" && *n == 1)
        });
    });
}

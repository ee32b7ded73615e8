//! A worker's GPU busy or full: the worker keeps answering its scheduler and serving its
//! data while a long kernel runs (only the work that needs the GPU waits for it), and an op
//! that does not fit in the GPU's memory spills what it needs and runs again, or runs on
//! the CPU when nothing more can go.

mod common;

use common::{within, DEADLINE};
use rask::array::{from_ndarray, Array, DType};
use rask::{Arg, Client, ClientOptions, Graph, LocalCUDACluster, LocalCluster, Value};
use rask_transport::TransportMode;

const MIB: u64 = 1 << 20;

/// One test's cluster at a time: each has a `sim:0`, and [`rask_kernels::plan::stall`]
/// must find this test's.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A cluster of one simulated GPU of `memory` bytes, its worker in this process (a
/// thread with a runtime of one thread, as `rask worker` has), and a client fetching from
/// it over tcp (through the worker's data server, as a client on another host would).
fn one_gpu(memory: u64) -> (LocalCluster, Client) {
    let cluster = LocalCUDACluster::sim(1, memory)
        .processes(false)
        .transport(TransportMode::Tcp)
        .build()
        .unwrap();
    let opts = ClientOptions {
        transport: Some(TransportMode::Tcp),
        registry: Some(cluster.registry().info()),
        ..ClientOptions::default()
    };
    let c = Client::connect_with(cluster.scheduler_address(), opts).unwrap();
    (cluster, c)
}

/// The only worker's report.
fn worker(c: &Client) -> rask::WorkerInfoMsg {
    c.scheduler_info().unwrap().workers.pop().unwrap()
}

fn spilled(w: &rask::WorkerInfoMsg, what: &str) -> u64 {
    w.spilled
        .iter()
        .find(|(k, _)| k == what)
        .map_or(0, |(_, v)| *v)
}

/// An array of one chunk of `mib` MiB (f64, 128 KiB rows) filled with `value`, made on
/// the GPU.
fn filled(mib: u64, value: f64) -> Array {
    let rows = mib * 8;
    Array::full(&[rows, 16384], &[rows, 16384], DType::F64, value).unwrap()
}

#[test]
fn a_busy_gpu_stops_neither_answers_nor_data_serving_nor_its_spilling() {
    within(DEADLINE, || {
        let _alone = one_at_a_time();
        // 40 MiB of GPU memory, spilled past 32.
        let (_cluster, c) = one_gpu(40 * MIB);
        let held: Vec<_> = (1..=3)
            .map(|i| c.persist_array(&filled(8, i as f64)).unwrap())
            .collect();
        common::eventually("24 MiB of chunks on the GPU", || {
            worker(&c).device_memory_used >= 24 * MIB
        });
        // A long kernel keeps the GPU busy from now on.
        let busy = rask_kernels::plan::stall(rask_proto::DeviceLoc::sim(0)).unwrap();
        // 12 MiB more in the GPU's memory (an op on the CPU writes its output there): past
        // the spilling target, so a chunk is spilled — a download, which waits for the GPU.
        let mut g = Graph::new();
        g.task(
            "more",
            "bytes",
            [Arg::from((12 * MIB) as i64), Arg::from(7)],
        );
        let more = c.compute(&g, &["more"]).unwrap().pop().unwrap();
        more.wait().unwrap();
        // The worker answers the scheduler: a task on the CPU runs and its result comes.
        let mut g = Graph::new();
        g.task("sum", "add", [Arg::from(40), Arg::from(2)]);
        let sum = c.compute(&g, &["sum"]).unwrap().pop().unwrap();
        assert_eq!(sum.result().unwrap(), Value::Int(42));
        // Its data server answers: a host value, and a chunk in the GPU's memory.
        match more.result().unwrap() {
            Value::Bytes(b) => {
                assert_eq!(b.len() as u64, 12 * MIB);
                assert!(b.iter().all(|&x| x == 7));
            }
            v => panic!("{v:?}"),
        }
        let third = c.compute_array::<f64>(held[2].array()).unwrap();
        assert!(third.iter().all(|&x| x == 3.0));
        // The spill waits for the GPU meanwhile; once the kernel is done it completes.
        assert_eq!(spilled(&worker(&c), "device->host"), 0);
        drop(busy);
        common::eventually("a chunk was spilled to the host", || {
            let w = worker(&c);
            spilled(&w, "device->host") >= 8 * MIB && w.device_memory_used <= 32 * MIB
        });
        for (i, h) in held.iter().enumerate() {
            let got = c.compute_array::<f64>(h.array()).unwrap();
            assert!(got.iter().all(|&x| x == (i + 1) as f64), "array {i}");
        }
    });
}

/// A 12 MiB array sent by the client (its chunk is host bytes on the worker), and the
/// same plus one.
fn host_input() -> (rask::ndarray::ArrayD<f64>, Array) {
    let local =
        rask::ndarray::Array2::<f64>::from_shape_fn((96, 16384), |(i, j)| (i * 16384 + j) as f64)
            .into_dyn();
    let a = from_ndarray(&local, &[96, 16384]).unwrap();
    (local, a)
}

#[test]
fn an_op_that_does_not_fit_on_the_gpu_spills_what_it_needs_and_runs_again() {
    within(DEADLINE, || {
        let _alone = one_at_a_time();
        let (_cluster, c) = one_gpu(40 * MIB);
        // 30 MiB of chunks on the GPU: below the spilling target (32 MiB).
        let held: Vec<_> = (1..=3)
            .map(|i| c.persist_array(&filled(10, i as f64)).unwrap())
            .collect();
        common::eventually("30 MiB of chunks on the GPU", || {
            worker(&c).device_memory_used >= 30 * MIB
        });
        assert_eq!(spilled(&worker(&c), "device->host"), 0);
        // Adding one to a 12 MiB host chunk brings it to the GPU, which has 10 MiB free:
        // the least recently used chunk is spilled, and the op runs again.
        let (local, a) = host_input();
        let got = c.compute_array::<f64>(&a.scalar("add", 1.0)).unwrap();
        assert_eq!(got, &local + 1.0);
        common::eventually("a chunk was spilled to make room", || {
            spilled(&worker(&c), "device->host") >= 10 * MIB
        });
        for (i, h) in held.iter().enumerate() {
            let got = c.compute_array::<f64>(h.array()).unwrap();
            assert!(got.iter().all(|&x| x == (i + 1) as f64), "array {i}");
        }
    });
}

#[test]
fn an_op_that_can_never_fit_on_the_gpu_runs_on_the_cpu() {
    within(DEADLINE, || {
        let _alone = one_at_a_time();
        // 8 MiB of GPU memory for a 12 MiB input: nothing to spill makes room.
        let (_cluster, c) = one_gpu(8 * MIB);
        let (local, a) = host_input();
        let got = c.compute_array::<f64>(&a.scalar("add", 1.0)).unwrap();
        assert_eq!(got, &local + 1.0);
        common::eventually("the op is reported run on the CPU", || {
            let w = worker(&c);
            w.ran.iter().any(|(k, n)| k == "cpu" && *n > 0)
        });
    });
}

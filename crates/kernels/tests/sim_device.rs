//! A simulated GPU behaves as a CUDA one where a worker can tell: injected CUDA errors go
//! through the real classification (a sticky one loses the device for good, naming the
//! kernel; out of memory is "full"), a plan that does not fit its pool is refused before
//! it runs, and a download waits for the plan running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use bytes::Bytes;
use rask_device::MemoryPool;
use rask_kernels::plan::{stall, HostPlans};
use rask_kernels::{Accelerator, OpError, OutputAlloc, OutputBuf, Registry};
use rask_proto::{DeviceLoc, Value};

/// Heap buffers accounted in a pool (the simulated GPU's memory).
struct Pooled(Arc<MemoryPool>);

struct PooledBuf {
    bytes: Vec<u8>,
    _room: rask_device::Reservation,
}

impl OutputBuf for PooledBuf {
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
    fn freeze(self: Box<Self>) -> Bytes {
        Bytes::from_owner(*self)
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl OutputAlloc for Pooled {
    fn alloc(&self, len: usize) -> Option<Box<dyn OutputBuf>> {
        let r = self.0.reserve(len as u64).ok()?;
        Some(Box::new(PooledBuf {
            bytes: vec![0; len],
            _room: r,
        }))
    }
}

fn sim(index: u32, limit: u64) -> (HostPlans, Arc<MemoryPool>) {
    let pool = MemoryPool::new(DeviceLoc::sim(index), limit);
    let plans = HostPlans::new(DeviceLoc::sim(index), Arc::new(Pooled(pool.clone())));
    (plans, pool)
}

fn s(v: &str) -> Value {
    Value::Str(v.into())
}

fn ints(v: &[i64]) -> Value {
    Value::List(v.iter().map(|&i| Value::Int(i)).collect())
}

/// `array.full` of `n` f64 elements.
fn full(n: i64, x: f64) -> (String, Vec<Value>) {
    (
        "array.full".into(),
        vec![s("f64"), ints(&[n]), Value::Float(x)],
    )
}

/// `array.arange` of 4 f64 elements.
fn arange() -> Vec<Value> {
    vec![
        s("f64"),
        Value::Float(0.0),
        Value::Float(1.0),
        Value::Int(4),
    ]
}

/// A 16 × 32 f64 matrix (4096 bytes) in host memory.
fn matrix() -> Value {
    let x: Vec<f64> = (0..512).map(|i| i as f64).collect();
    rask_kernels::chunk::Chunk {
        dtype: rask_proto::DType::F64,
        shape: vec![16, 32],
        bytes: Bytes::copy_from_slice(rask_kernels::cpu::as_bytes(&x)),
    }
    .to_value()
}

#[test]
fn a_sticky_error_loses_the_device_for_good_and_names_the_kernel() {
    let registry = Registry::builtin();
    let (plans, _) = sim(7, 1 << 20);
    let plans = plans.faults(vec![("array.full".into(), 700)]);
    assert_eq!(plans.lost(), None);
    let (op, args) = full(16, 1.0);
    let e = plans.try_run(&registry, &op, &args).unwrap().unwrap_err();
    let OpError::DeviceLost(why) = &e else {
        panic!("not lost: {e}")
    };
    assert!(why.contains("CUDA_ERROR_ILLEGAL_ADDRESS (700)"), "{why}");
    assert!(why.contains("kernel fill_f64"), "{why}");
    assert!(why.contains("sim:7"), "{why}");
    assert_eq!(plans.lost().as_deref(), Some(why.as_str()));
    // Every later op on it fails the same way, whatever it is.
    let other = plans
        .try_run(&registry, "array.arange", &arange())
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&other, OpError::DeviceLost(w) if w == why),
        "{other}"
    );
    // Through the registry, the error is typed for the worker.
    let e = registry
        .call_on(&op, &Value::List(args), None, Some(&plans))
        .unwrap_err();
    assert!(
        matches!(&e, rask_kernels::KernelError::DeviceLost { op, .. } if op == "array.full"),
        "{e:?}"
    );
}

#[test]
fn errors_that_do_not_poison_the_context_leave_the_device_usable() {
    let registry = Registry::builtin();
    let (plans, _) = sim(8, 1 << 20);
    // An invalid value (1) fails the op only; out of memory (2) is "full".
    let plans = plans.faults(vec![("array.full".into(), 1), ("array.arange".into(), 2)]);
    let (op, args) = full(16, 1.0);
    let e = plans.try_run(&registry, &op, &args).unwrap().unwrap_err();
    assert!(
        matches!(&e, OpError::Message(m) if m.contains("CUDA_ERROR_INVALID_VALUE")),
        "{e}"
    );
    let e = plans
        .try_run(&registry, "array.arange", &arange())
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, OpError::DeviceFull { needed: 32, .. }), "{e}");
    assert_eq!(plans.lost(), None);
    let ok = plans
        .try_run(&registry, "array.transpose", &[matrix()])
        .unwrap();
    assert!(ok.is_ok());
}

#[test]
fn a_plan_that_does_not_fit_its_pool_is_refused_before_it_runs() {
    let registry = Registry::builtin();
    let (plans, pool) = sim(9, 4000);
    let plans = plans.accounting(pool.clone());
    // 4096 bytes of input from the host while the plan runs: 4000 there.
    let args = [matrix()];
    let e = plans
        .try_run(&registry, "array.transpose", &args)
        .expect("a plan")
        .unwrap_err();
    assert!(
        matches!(&e, OpError::DeviceFull { needed: 4096, device, .. } if device == "sim:9"),
        "{e}"
    );
    assert_eq!(pool.used(), 0, "nothing kept from the refused run");
    // Room for the input while it runs, not for the output as well: full too.
    let (half, pool) = sim(13, 6000);
    let half = half.accounting(pool.clone());
    let e = half
        .try_run(&registry, "array.transpose", &args)
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&e, OpError::DeviceFull { needed: 8192, .. }),
        "{e}"
    );
    assert_eq!(pool.used(), 0);
    // With room, the same plan runs and its output stays in the pool.
    let (roomy, pool) = sim(10, 1 << 20);
    let roomy = roomy.accounting(pool.clone());
    let v = roomy
        .try_run(&registry, "array.transpose", &args)
        .unwrap()
        .unwrap();
    assert!(v.on_device());
    assert_eq!(pool.used(), 4096, "the output; the input's room given back");
}

#[test]
fn a_download_waits_for_the_plan_running() {
    let registry = Registry::builtin();
    let (plans, _) = sim(11, 1 << 20);
    let (op, args) = full(8, 2.0);
    let v = plans.try_run(&registry, &op, &args).unwrap().unwrap();
    let stalled = stall(DeviceLoc::sim(11)).expect("this process's sim:11");
    let released = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel();
    let seen = released.clone();
    let reader = std::thread::spawn(move || {
        let host = v.to_host().unwrap();
        // Only possible once the stall is over.
        done_tx.send(seen.load(Ordering::SeqCst)).unwrap();
        host
    });
    released.store(true, Ordering::SeqCst);
    drop(stalled);
    assert!(
        done_rx.recv().unwrap(),
        "the download finished during the stall"
    );
    let host = reader.join().unwrap();
    let c = rask_kernels::chunk::Chunk::from_value(&host).unwrap();
    assert_eq!(c.elems::<f64>().unwrap().as_ref(), &[2.0; 8]);
    assert!(stall(DeviceLoc::sim(12345)).is_none());
}

#[test]
fn injected_faults_parse_by_code_or_name_and_bad_entries_are_named() {
    use rask_kernels::plan::parse_faults;
    assert_eq!(
        parse_faults("rask.array.map=illegal_address, array.full=2,").unwrap(),
        vec![
            ("rask.array.map".to_string(), 700),
            ("array.full".to_string(), 2)
        ]
    );
    assert_eq!(parse_faults("").unwrap(), vec![]);
    assert_eq!(parse_faults("a=700,b").unwrap_err(), "b");
    assert_eq!(
        parse_faults("a=no_such_error").unwrap_err(),
        "a=no_such_error"
    );
}

#[test]
fn a_simulated_gpu_counts_the_time_its_queue_is_held_as_busy() {
    let (plans, _) = sim(13, 1 << 20);
    assert_eq!(plans.busy_us(), Some(0), "idle from the start");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let stalled = stall(DeviceLoc::sim(13)).expect("this process's sim:13");
    // Held: its busy time grows by itself.
    while plans.busy_us().unwrap() < 2_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "busy time does not grow"
        );
        std::hint::spin_loop();
    }
    drop(stalled);
    let after = plans.busy_us().unwrap();
    // Released: the clock stands still however long it stays idle.
    let idle = std::time::Instant::now();
    while idle.elapsed() < std::time::Duration::from_millis(3) {
        std::hint::spin_loop();
    }
    assert_eq!(plans.busy_us().unwrap(), after, "idle time counted as busy");
    let (op, args) = full(8, 2.0);
    plans
        .try_run(&Registry::builtin(), &op, &args)
        .unwrap()
        .unwrap();
    assert!(plans.busy_us().unwrap() >= after, "a plan's time counts");
}

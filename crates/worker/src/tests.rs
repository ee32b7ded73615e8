//! Unit tests of the worker's pieces that need no sockets.
use std::sync::Arc;

use bytes::Bytes;
use rask_kernels::{Accelerator, OpError, Registry};
use rask_proto::{DeviceBytes, DeviceData, IpcExport, Payload};
use rask_proto::{IpcBuffer, TaskId, Value};

use crate::config::{host_gpu_index, spill_limits, WorkerDevice};
use crate::event_loop::import_failure_lasts;
use crate::peers::import_values;
use crate::store::{lent, lookup_data, Store};

#[test]
fn a_cuda_worker_names_its_gpu_by_the_hosts_index() {
    let host = || {
        vec![
            (0, "GPU-aaaa".to_string()),
            (1, "GPU-bbbb".to_string()),
            (2, "GPU-cccc".to_string()),
            // MIG instances of GPU 1.
            (1, "MIG-dddd".to_string()),
            (1, "MIG-eeee".to_string()),
        ]
    };
    let none = || -> Vec<(u32, String)> { panic!("NVML asked without need") };
    assert_eq!(host_gpu_index(None, 1, none), 1);
    assert_eq!(host_gpu_index(Some("3"), 0, none), 3);
    assert_eq!(host_gpu_index(Some("2,0"), 1, none), 0);
    assert_eq!(host_gpu_index(Some("GPU-cccc"), 0, host), 2);
    assert_eq!(host_gpu_index(Some("GPU-aaaa, GPU-bbbb"), 1, host), 1);
    assert_eq!(host_gpu_index(Some("GPU-cc"), 0, host), 2);
    // A MIG instance names its GPU.
    assert_eq!(host_gpu_index(Some("MIG-eeee"), 0, host), 1);
    assert_eq!(host_gpu_index(Some("MIG-dd"), 0, host), 1);
    assert_eq!(host_gpu_index(Some("MIG-cccc"), 0, host), 0);
    // A UUID this host does not have, or an ordinal past the list: the ordinal.
    assert_eq!(host_gpu_index(Some("GPU-zzzz"), 0, host), 0);
    assert_eq!(host_gpu_index(Some("1"), 4, none), 4);
}

/// Memory of a test device that lends by IPC handle (its first byte) and counts trips
/// to the host.
struct TestGpu(Bytes, Arc<std::sync::atomic::AtomicUsize>);

impl DeviceData for TestGpu {
    fn device(&self) -> rask_proto::DeviceLoc {
        rask_proto::DeviceLoc::cuda(0)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn to_host(&self) -> Result<Bytes, String> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.0.clone())
    }
    fn ipc_export(&self) -> Option<Result<IpcExport, String>> {
        Some(Ok(IpcExport {
            handle: vec![self.0[0]],
            offset: 0,
        }))
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Imports a lent buffer as host bytes `[handle; len]`; handle 0 cannot be opened, and
/// handle 255 finds the device full.
struct Importer;

impl Accelerator for Importer {
    fn try_run(&self, _: &Registry, _: &str, _: &[Value]) -> Option<Result<Value, OpError>> {
        None
    }
    fn imports(&self) -> bool {
        true
    }
    fn import(&self, b: &IpcBuffer) -> Result<Value, OpError> {
        match b.export.handle[0] {
            0 => Err("cannot open handle 0".into()),
            255 => Err(OpError::DeviceFull {
                device: "cuda:1".into(),
                needed: b.len,
                why: "the pool is full".into(),
            }),
            h => Ok(Value::Bytes(Bytes::from(vec![h; b.len as usize]))),
        }
    }
}

fn on_gpu(byte: u8, len: usize, trips: &Arc<std::sync::atomic::AtomicUsize>) -> Value {
    Value::Device(DeviceBytes::new(TestGpu(
        Bytes::from(vec![byte; len]),
        trips.clone(),
    )))
}

#[test]
fn a_cuda_gpu_spills_at_its_limit_and_a_simulated_one_at_80_percent_of_its_memory() {
    let cuda = WorkerDevice::Cuda {
        index: 0,
        memory_limit: None,
    };
    let sim = WorkerDevice::Sim {
        index: 0,
        memory: 100,
    };
    let target = |d: &WorkerDevice| {
        let l = spill_limits(d, Some(100), 1000);
        (l.device.unwrap() as f64 * l.device_target) as u64
    };
    assert_eq!(target(&cuda), 100);
    assert_eq!(target(&sim), 80);
    assert_eq!(
        spill_limits(&WorkerDevice::Host, None, 1000).host_target,
        0.6
    );
}

#[test]
fn a_lookup_lends_device_bytes_only_to_a_device_that_imports_them() {
    let trips = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let store: Store = Arc::default();
    {
        let mut s = store.lock().unwrap();
        let host = Value::Bytes(Bytes::from_static(b"host"));
        s.insert(TaskId(1), Value::List(vec![host, on_gpu(7, 8, &trips)]));
        s.insert(TaskId(2), on_gpu(9, 3, &trips));
    }
    let tasks = vec![TaskId(1), TaskId(2), TaskId(3)];
    let trips_now = || trips.load(std::sync::atomic::Ordering::Relaxed);
    for into_device in [true, false] {
        let before = trips_now();
        let (items, bufs, missing) = lookup_data(&store, tasks.clone(), into_device);
        // Lent, the device bytes stay on the device; for the host, both come over.
        assert_eq!(trips_now() - before, if into_device { 0 } else { 2 });
        assert_eq!(missing, vec![TaskId(3)]);
        assert_eq!(bufs.len(), 3);
        assert_eq!(
            bufs.iter()
                .filter(|p| matches!(p, Payload::Device(_)))
                .count(),
            if into_device { 2 } else { 0 }
        );
        let host = |i: usize| bufs[i].to_host().unwrap();
        let want: [&[u8]; 3] = [b"host", &[7; 8], &[9; 3]];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(&host(i)[..], *w, "buffer {i}");
        }
        // Each item refers to its own buffers.
        let got: Vec<Value> = items
            .iter()
            .map(|it| {
                it.value
                    .to_value_from(&bufs, &[])
                    .unwrap()
                    .to_host()
                    .unwrap()
            })
            .collect();
        let stored = store.lock().unwrap();
        assert_eq!(got[0], stored[&TaskId(1)].to_host().unwrap());
        assert_eq!(got[1], stored[&TaskId(2)].to_host().unwrap());
    }
}

#[test]
fn lent_values_are_imported_and_those_that_fail_are_named() {
    let lent_buf = |h: u8, len: u64| {
        Value::Device(DeviceBytes::new(IpcBuffer {
            device: rask_proto::DeviceLoc::cuda(0),
            export: IpcExport {
                handle: vec![h],
                offset: 0,
            },
            len,
            loan: None,
        }))
    };
    let values = vec![
        (TaskId(1), Value::List(vec![Value::Int(1), lent_buf(5, 4)])),
        (TaskId(2), Value::Int(2)),
        (TaskId(3), lent_buf(0, 4)),
    ];
    assert!(lent(&values[0].1) && !lent(&values[1].1) && lent(&values[2].1));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let acc: Arc<dyn Accelerator> = Arc::new(Importer);
    let (ok, failed) = rt.block_on(import_values(Some(acc), values.clone()));
    assert_eq!(
        ok,
        vec![
            (
                TaskId(1),
                Value::List(vec![Value::Int(1), Value::Bytes(Bytes::from(vec![5u8; 4]))])
            ),
            (TaskId(2), Value::Int(2)),
        ]
    );
    let (tasks, error) = failed.unwrap();
    assert_eq!(tasks, vec![TaskId(3)]);
    assert!(error.to_string().contains("handle 0"), "{error}");
    assert!(
        import_failure_lasts(&error),
        "a handle that cannot be opened"
    );
    // A worker whose device does not import asks for all of them again.
    let (ok, failed) = rt.block_on(import_values(None, values));
    assert_eq!(ok, vec![(TaskId(2), Value::Int(2))]);
    assert_eq!(failed.unwrap().0, vec![TaskId(1), TaskId(3)]);
}

/// A peer's device memory that could not be imported because this device was full is
/// fetched through the host this time only; any other failure, from then on.
#[test]
fn an_import_that_found_the_device_full_is_not_held_against_the_peer() {
    let lent_buf = |h: u8| {
        Value::Device(DeviceBytes::new(IpcBuffer {
            device: rask_proto::DeviceLoc::cuda(0),
            export: IpcExport {
                handle: vec![h],
                offset: 0,
            },
            len: 4,
            loan: None,
        }))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let acc: Arc<dyn Accelerator> = Arc::new(Importer);
    let import =
        |values: Vec<(TaskId, Value)>| rt.block_on(import_values(Some(acc.clone()), values));
    let (ok, failed) = import(vec![(TaskId(1), lent_buf(255)), (TaskId(2), lent_buf(3))]);
    assert_eq!(ok.len(), 1);
    let (tasks, error) = failed.unwrap();
    assert_eq!(tasks, vec![TaskId(1)]);
    assert!(
        matches!(error, OpError::DeviceFull { needed: 4, .. }),
        "{error}"
    );
    assert!(!import_failure_lasts(&error));
    // Both kinds in one reply: the full device is the reason given (the peer is not
    // marked for good on account of a moment without room).
    let (_, failed) = import(vec![(TaskId(1), lent_buf(0)), (TaskId(2), lent_buf(255))]);
    let (tasks, error) = failed.unwrap();
    assert_eq!(tasks, vec![TaskId(1), TaskId(2)]);
    assert!(!import_failure_lasts(&error), "{error}");
    // A device that does not import at all: for good.
    let (_, failed) = rt.block_on(import_values(None, vec![(TaskId(1), lent_buf(3))]));
    assert!(import_failure_lasts(&failed.unwrap().1));
}

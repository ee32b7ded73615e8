//! Bytes in a device's memory lent by IPC handle over the shared-memory transport (the
//! protocol of CUDA IPC), with a test device: its "allocations" are numbered, its handle
//! is the number, and importing looks the number up — while the holder keeps the memory.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use common::*;
use rask_proto::msg::BufRef;
use rask_proto::{DeviceBytes, DeviceData, IpcBuffer, IpcExport, Payload};
use rask_transport::shm::{Importer, INLINE_MAX};
use rask_transport::ConnConfig;
use tokio::sync::mpsc;

/// The test device's allocations by handle; weak, so memory lives only while its holder
/// (or a loan) keeps it.
static ALLOCATIONS: Mutex<Option<HashMap<u64, Weak<Vec<u8>>>>> = Mutex::new(None);

struct TestGpu {
    id: u64,
    mem: Arc<Vec<u8>>,
    exports: bool,
    downloads: Arc<AtomicUsize>,
    freed: mpsc::UnboundedSender<u64>,
    /// IPC handles asked of it.
    handles: Arc<AtomicUsize>,
    /// While closed, a download waits (as behind a long kernel).
    gate: Option<Arc<Gate>>,
}

/// A device kept busy until opened.
#[derive(Default)]
struct Gate {
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
    /// Told when a download starts waiting.
    waiting: Mutex<Option<mpsc::UnboundedSender<()>>>,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    fn is_open(&self) -> bool {
        *self.open.lock().unwrap()
    }

    fn pass(&self) {
        if let Some(tx) = self.waiting.lock().unwrap().as_ref() {
            let _ = tx.send(());
        }
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }
}

impl TestGpu {
    /// A payload in the test device's memory.
    fn payload(
        id: u64,
        data: Vec<u8>,
        exports: bool,
        downloads: &Arc<AtomicUsize>,
        freed: &mpsc::UnboundedSender<u64>,
    ) -> Payload {
        Payload::Device(DeviceBytes::new(TestGpu::payload_with(
            id, data, exports, downloads, freed,
        )))
    }

    fn payload_with(
        id: u64,
        data: Vec<u8>,
        exports: bool,
        downloads: &Arc<AtomicUsize>,
        freed: &mpsc::UnboundedSender<u64>,
    ) -> TestGpu {
        let mem = Arc::new(data);
        ALLOCATIONS
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .insert(id, Arc::downgrade(&mem));
        TestGpu {
            id,
            mem,
            exports,
            downloads: downloads.clone(),
            freed: freed.clone(),
            handles: Arc::default(),
            gate: None,
        }
    }

    /// Its downloads wait for `gate` to open.
    fn gate(mut self, gate: Arc<Gate>) -> TestGpu {
        self.gate = Some(gate);
        self
    }
}

impl DeviceData for TestGpu {
    fn device(&self) -> rask_proto::DeviceLoc {
        rask_proto::DeviceLoc::cuda(5)
    }
    fn len(&self) -> usize {
        self.mem.len()
    }
    fn to_host(&self) -> Result<Bytes, String> {
        if let Some(g) = &self.gate {
            g.pass();
        }
        self.downloads.fetch_add(1, Ordering::Relaxed);
        Ok(Bytes::copy_from_slice(&self.mem))
    }
    fn ipc_export(&self) -> Option<Result<IpcExport, String>> {
        self.handles.fetch_add(1, Ordering::Relaxed);
        let mut handle = vec![0u8; 64];
        handle[..8].copy_from_slice(&self.id.to_le_bytes());
        self.exports.then_some(Ok(IpcExport { handle, offset: 0 }))
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Drop for TestGpu {
    fn drop(&mut self) {
        let _ = self.freed.send(self.id);
    }
}

/// What the receiving device does with an imported buffer: opens the handle, copies.
fn import(p: &Payload) -> Result<Vec<u8>, String> {
    let Payload::Device(d) = p else {
        return Err("host bytes, not a device buffer".into());
    };
    let b = d.downcast::<IpcBuffer>().ok_or("not an IPC buffer")?;
    let id = u64::from_le_bytes(b.export.handle[..8].try_into().unwrap());
    let mem = ALLOCATIONS.lock().unwrap().as_ref().unwrap()[&id]
        .upgrade()
        .ok_or("the holder freed the memory before the import")?;
    let at = b.export.offset as usize;
    Ok(mem[at..at + b.len as usize].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_bytes_go_by_handle_and_the_holder_keeps_them_until_released() {
    let h = holder(ConnConfig::default()).await;
    let s = seed();
    let downloads = Arc::new(AtomicUsize::new(0));
    let (freed_tx, mut freed) = mpsc::unbounded_channel();
    // Device buffers of INLINE_MAX bytes or more go by handle.
    let big = random_bytes(3 << 20, s);
    let small = random_bytes(INLINE_MAX, s + 1);
    let host = random_bytes(1 << 20, s + 2);
    {
        let mut store = h.store.lock().unwrap();
        store.insert(
            1,
            TestGpu::payload(101, big.clone(), true, &downloads, &freed_tx),
        );
        store.insert(
            2,
            TestGpu::payload(102, small.clone(), true, &downloads, &freed_tx),
        );
        store.insert(3, Payload::Host(Bytes::from(host.clone())));
    }
    let mut req = Requester::connect(&h.addr, ConnConfig::default())
        .await
        .unwrap();
    let got = req.get_payloads(&[1, 2, 3], true).await.unwrap();
    let got: Vec<Payload> = got.into_iter().map(Option::unwrap).collect();
    assert_eq!(
        downloads.load(Ordering::Relaxed),
        0,
        "no byte went to the host"
    );
    assert_eq!(
        h.arena.stats().used,
        1 << 20,
        "only the host buffer is in the arena"
    );
    match &got[0] {
        Payload::Device(d) => {
            assert_eq!(d.len(), 3 << 20);
            assert_eq!(d.label(), "cuda:5 of a peer");
            assert!(
                d.data().to_host().is_err(),
                "an IPC buffer is imported, not read"
            );
        }
        p => panic!("{p:?}"),
    }
    // The holder drops its values; the loan keeps the device memory until the receiver
    // has imported it.
    h.store.lock().unwrap().clear();
    assert_eq!(import(&got[0]).unwrap(), big);
    assert_eq!(import(&got[1]).unwrap(), small);
    assert!(import(&got[2]).is_err());
    assert!(matches!(&got[2], Payload::Host(b) if b[..] == host[..]));
    assert!(freed.try_recv().is_err(), "freed while lent");
    // Imported: dropping the buffers releases the loan, and the holder frees the memory.
    drop(got);
    let mut ids = vec![freed.recv().await.unwrap(), freed.recv().await.unwrap()];
    ids.sort();
    assert_eq!(ids, vec![101, 102]);
    assert_eq!(downloads.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_bytes_come_through_the_host_for_a_host_requester_or_without_a_handle() {
    let h = holder(ConnConfig::default()).await;
    let s = seed();
    let downloads = Arc::new(AtomicUsize::new(0));
    let (freed_tx, _freed) = mpsc::unbounded_channel();
    let a = random_bytes(2 << 20, s);
    let b = random_bytes(2 << 20, s + 1);
    {
        let mut store = h.store.lock().unwrap();
        store.insert(
            1,
            TestGpu::payload(201, a.clone(), true, &downloads, &freed_tx),
        );
        store.insert(
            2,
            TestGpu::payload(202, b.clone(), false, &downloads, &freed_tx),
        );
    }
    let mut req = Requester::connect(&h.addr, ConnConfig::default())
        .await
        .unwrap();
    // A requester that cannot import (a client, a CPU worker) gets host bytes.
    let got = req.get(&[1]).await.unwrap().pop().unwrap().unwrap();
    assert_eq!(&got[..], &a[..]);
    assert_eq!(downloads.load(Ordering::Relaxed), 1);
    // A device without IPC handles lends through the host even to one that could import.
    let got = req.get_payloads(&[2], true).await.unwrap().pop().unwrap();
    assert!(matches!(&got, Some(Payload::Host(x)) if x[..] == b[..]));
    assert_eq!(downloads.load(Ordering::Relaxed), 2);
}

#[test]
fn a_device_reference_outside_a_loan_is_an_error() {
    let mut imp = Importer::new(|_| {});
    let r = BufRef::Device {
        device: "cuda:0".into(),
        handle: vec![0; 64],
        offset: 0,
        len: 8,
    };
    let e = imp.import(&[r], &[], 0).unwrap_err().to_string();
    assert!(e.contains("outside a loan"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_device_bytes_come_inline_through_the_host_not_by_handle() {
    let h = holder(ConnConfig::default()).await;
    let s = seed();
    let downloads = Arc::new(AtomicUsize::new(0));
    let (freed_tx, _freed) = mpsc::unbounded_channel();
    let sizes = [1, 100, INLINE_MAX - 1, INLINE_MAX, 1 << 20];
    let data: Vec<Vec<u8>> = (0..sizes.len())
        .map(|i| random_bytes(sizes[i], s + i as u64))
        .collect();
    let mut handles = Vec::new();
    {
        let mut store = h.store.lock().unwrap();
        for (i, d) in data.iter().enumerate() {
            let p = TestGpu::payload(300 + i as u64, d.clone(), true, &downloads, &freed_tx);
            let Payload::Device(dev) = &p else {
                unreachable!()
            };
            handles.push(dev.downcast::<TestGpu>().unwrap().handles.clone());
            store.insert(i as u64, p);
        }
    }
    let mut req = Requester::connect(&h.addr, ConnConfig::default())
        .await
        .unwrap();
    let keys: Vec<u64> = (0..sizes.len() as u64).collect();
    let got = req.get_payloads(&keys, true).await.unwrap();
    for (i, p) in got.into_iter().enumerate() {
        let p = p.unwrap();
        let small = sizes[i] < INLINE_MAX;
        match &p {
            Payload::Host(_) => assert!(small, "{} bytes came through the host", sizes[i]),
            Payload::Device(_) => assert!(!small, "{} bytes went by handle", sizes[i]),
        }
        if small {
            assert_eq!(p.to_host().unwrap()[..], data[i][..], "buffer {i}");
        } else {
            assert_eq!(import(&p).unwrap(), data[i], "buffer {i}");
        }
        let asked = handles[i].load(Ordering::Relaxed);
        assert_eq!(asked, usize::from(!small), "handles asked of buffer {i}");
    }
    // The three small ones were downloaded, once each.
    assert_eq!(downloads.load(Ordering::Relaxed), 3);
    assert_eq!(h.arena.stats().used, 0, "nothing was copied into the arena");
}

/// A holder whose device is busy (a download waits, as behind a long kernel) keeps
/// serving its other connections, even on a runtime of one thread: the download waits on
/// a blocking thread, not on the runtime's.
#[tokio::test(flavor = "current_thread")]
async fn a_device_that_makes_a_download_wait_does_not_stop_other_requests() {
    let h = holder(ConnConfig::default()).await;
    let s = seed();
    let downloads = Arc::new(AtomicUsize::new(0));
    let (freed_tx, _freed) = mpsc::unbounded_channel();
    let on_device = random_bytes(2 << 20, s);
    let host = random_bytes(1 << 20, s + 1);
    let gate = Arc::new(Gate::default());
    let (waiting_tx, mut waiting) = mpsc::unbounded_channel();
    *gate.waiting.lock().unwrap() = Some(waiting_tx);
    {
        let mut store = h.store.lock().unwrap();
        let busy = TestGpu::payload_with(401, on_device.clone(), false, &downloads, &freed_tx)
            .gate(gate.clone());
        store.insert(1, Payload::Device(DeviceBytes::new(busy)));
        store.insert(2, Payload::Host(Bytes::from(host.clone())));
    }
    // The deadline: should the runtime's only thread be stuck in the download, the gate
    // opens after it, and the test fails below instead of hanging.
    let deadline = {
        let gate = gate.clone();
        std::thread::spawn(move || {
            let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !gate.is_open() && std::time::Instant::now() < end {
                std::thread::park_timeout(std::time::Duration::from_millis(100));
            }
            gate.open();
        })
    };
    let mut first = Requester::connect(&h.addr, ConnConfig::default())
        .await
        .unwrap();
    let (done_tx, done) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = done_tx.send(first.get(&[1]).await);
    });
    waiting.recv().await.unwrap();
    // The device is busy with the first request's download: another connection asks for
    // a host value.
    let mut second = Requester::connect(&h.addr, ConnConfig::default())
        .await
        .unwrap();
    let got = second.get(&[2]).await.unwrap().pop().unwrap().unwrap();
    let busy = !gate.is_open();
    assert_eq!(got[..], host[..]);
    assert!(busy, "the host value waited for the device");
    gate.open();
    deadline.thread().unpark();
    let got = done.await.unwrap().unwrap().pop().unwrap().unwrap();
    assert_eq!(got[..], on_device[..]);
    deadline.join().unwrap();
}

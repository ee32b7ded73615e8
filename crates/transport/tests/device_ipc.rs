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
use rask_transport::shm::Importer;
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
        let mem = Arc::new(data);
        ALLOCATIONS
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .insert(id, Arc::downgrade(&mem));
        Payload::Device(DeviceBytes::new(TestGpu {
            id,
            mem,
            exports,
            downloads: downloads.clone(),
            freed: freed.clone(),
        }))
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
        self.downloads.fetch_add(1, Ordering::Relaxed);
        Ok(Bytes::copy_from_slice(&self.mem))
    }
    fn ipc_export(&self) -> Option<Result<IpcExport, String>> {
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
    // Large and small: a device buffer goes by handle whatever its size.
    let big = random_bytes(3 << 20, s);
    let small = random_bytes(100, s + 1);
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

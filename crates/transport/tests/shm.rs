//! The shared-memory transport end to end in one process: integrity over random sizes,
//! peer death on either side, authentication.

mod common;

use bytes::Bytes;
use common::*;
use rask_proto::msg::BufRef;
use rask_proto::Payload;
use rask_transport::shm::{Arena, Exporter};
use rask_transport::{ConnConfig, Secret, TransportError};
use std::collections::HashMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_over_random_sizes_up_to_a_gib() {
    let h = holder(ConnConfig::default()).await;
    let s = seed();
    let mut sizes = vec![
        0usize,
        1,
        63,
        4095,
        4096,
        4097,
        65535,
        65536,
        65537,
        1 << 20,
    ];
    let mut x = s;
    for _ in 0..6 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        sizes.push((x >> 40) as usize % (8 << 20));
    }
    sizes.push(1 << 30);
    let mut expect = HashMap::new();
    for (k, &len) in sizes.iter().enumerate() {
        let data = random_bytes(len, s.wrapping_add(k as u64));
        expect.insert(k as u64, (len, hash(&data)));
        // Half the values live in the arena already (lent as they are), half on the heap
        // (copied into the arena when first lent).
        let b = if k % 2 == 0 && len > 0 {
            let mut r = h.arena.alloc(len).unwrap();
            r.as_mut_slice().copy_from_slice(&data);
            r.freeze()
        } else {
            Bytes::from(data)
        };
        h.store.lock().unwrap().insert(k as u64, Payload::Host(b));
    }
    let mut req = Requester::connect(&h.addr, ConnConfig::default())
        .await
        .unwrap();
    let keys: Vec<u64> = (0..sizes.len() as u64).collect();
    // Small batches and one big one.
    for batch in [&keys[..4], &keys[4..10], &keys[10..]] {
        let got = req.get(batch).await.unwrap();
        for (k, b) in batch.iter().zip(got) {
            let b = b.unwrap();
            assert_eq!((b.len(), hash(&b)), expect[k], "key {k}");
        }
    }
    assert_eq!(req.get(&[999]).await.unwrap(), vec![None]);
    assert!(req.importer.mapped() >= 1);
}

/// Zero copy, as the kernel sees it: the bytes a requester receives lie in a read-only
/// shared mapping of the holder's own segment (same memfd by device and inode, at the
/// offset where the holder keeps them), not in memory of the requester's, and the holder
/// lends a value already in its arena without copying it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_bytes_are_a_mapping_of_the_holders_segment() {
    let h = holder(ConnConfig::default()).await;
    let s = seed();
    let in_arena = random_bytes(3 << 20, s);
    let on_heap = random_bytes(1 << 20, s.wrapping_add(1));
    let stored = h.arena.copy_in(&in_arena).unwrap();
    let (segment, offset) = h.arena.locate(&stored).unwrap();
    let holders_segment = file_id(&*h.arena.segment(segment).unwrap().0);
    {
        let mut store = h.store.lock().unwrap();
        store.insert(1, Payload::Host(stored.clone()));
        store.insert(2, Payload::Host(Bytes::from(on_heap.clone())));
    }
    let used = h.arena.stats().used;
    let mut req = Requester::connect(&h.addr, ConnConfig::default())
        .await
        .unwrap();
    let got = req.get(&[1]).await.unwrap().pop().unwrap().unwrap();
    assert_eq!(&got[..], &in_arena[..]);
    assert_eq!(
        h.arena.stats().used,
        used,
        "the holder copied a value to lend it"
    );

    let at = got.as_ptr() as usize;
    let m = mapping_of(at).expect("the received bytes are mapped");
    assert!(m.path.starts_with("/memfd:rask-arena"), "{m:?}");
    assert_eq!(
        (m.dev, m.inode),
        holders_segment,
        "not a mapping of the holder's segment: {m:?}"
    );
    assert_eq!(
        m.offset + (at - m.start) as u64,
        offset,
        "not where the holder keeps the value: {m:?}"
    );
    assert!(at + got.len() <= m.end, "{m:?}");
    // The requester's own mapping (read-only), not the holder's (read-write).
    assert_eq!(m.perms, "r--s", "{m:?}");
    assert_ne!(got.as_ptr(), stored.as_ptr());

    // A value on the holder's heap is copied into its arena once, to be lent, and read
    // from there.
    let got = req.get(&[2]).await.unwrap().pop().unwrap().unwrap();
    assert_eq!(&got[..], &on_heap[..]);
    let m = mapping_of(got.as_ptr() as usize).expect("the received bytes are mapped");
    let segments: Vec<_> = (1..=h.arena.stats().segments as u32)
        .filter_map(|id| h.arena.segment(id))
        .map(|(fd, _)| file_id(&*fd))
        .collect();
    assert!(
        segments.contains(&(m.dev, m.inode)) && m.perms == "r--s",
        "not a mapping of a holder's segment: {m:?}, segments {segments:?}"
    );
}

/// The holder's side of lending: a value in the arena is lent where it is (its segment
/// and offset, no byte copied); a value elsewhere is copied into the arena once, and
/// counted.
#[test]
fn lending_a_value_in_the_arena_copies_nothing() {
    let arena = Arena::new(4 << 20);
    let in_arena = arena.copy_in(&random_bytes(1 << 20, 3)).unwrap();
    let (segment, offset) = arena.locate(&in_arena).unwrap();
    let mut ex = Exporter::new(arena.clone());
    let e = ex.export(vec![Payload::Host(in_arena.clone())]).unwrap();
    assert_eq!(e.copied, 0);
    assert_eq!(
        e.refs,
        vec![BufRef::Shm {
            segment,
            offset,
            len: 1 << 20
        }]
    );
    assert_eq!(e.fds.len(), 1);
    assert_eq!(
        file_id(&*e.fds[0]),
        file_id(&*arena.segment(segment).unwrap().0)
    );

    let heap = Bytes::from(random_bytes(1 << 20, 4));
    let e = ex.export(vec![Payload::Host(heap)]).unwrap();
    assert_eq!(e.copied, 1 << 20);
    assert_eq!(arena.stats().used, 2 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_death_keeps_received_bytes_and_fails_new_requests() {
    let h = holder(ConnConfig::default()).await;
    let data = random_bytes(3 << 20, seed());
    h.store
        .lock()
        .unwrap()
        .insert(7, Payload::Host(Bytes::from(data.clone())));
    let mut req = Requester::connect(&h.addr, ConnConfig::default())
        .await
        .unwrap();
    let b = req.get(&[7]).await.unwrap().pop().unwrap().unwrap();
    h.kill().await;
    // The pages stay mapped while we hold them; the holder is gone.
    assert_eq!(&b[..], &data[..]);
    assert!(req.get(&[7]).await.is_err());
    assert_eq!(&b[..], &data[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requester_death_ends_its_loans() {
    let mut h = holder(ConnConfig::default()).await;
    let data = random_bytes(2 << 20, seed());
    h.store
        .lock()
        .unwrap()
        .insert(1, Payload::Host(Bytes::from(data)));
    let mut req = Requester::connect(&h.addr, ConnConfig::default())
        .await
        .unwrap();
    // Copied into the arena on first lending, then held by the loan.
    let held = req.get(&[1]).await.unwrap().pop().unwrap().unwrap();
    assert_eq!(h.arena.stats().used, 2 << 20);
    h.store.lock().unwrap().clear();
    // The requester's connection dies while it still holds the buffer: the holder does
    // not wait for a release that will never come.
    rustix::net::shutdown(req.reader.get_mut().stream(), rustix::net::Shutdown::Both).unwrap();
    h.ended.recv().await.unwrap();
    assert_eq!(h.arena.stats().used, 0);
    drop(held);
    drop(req);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_the_secret_is_refused() {
    let cfg = ConnConfig {
        auth: Some(Secret::new(b"cluster secret".to_vec())),
        ..Default::default()
    };
    let h = holder(cfg.clone()).await;
    h.store
        .lock()
        .unwrap()
        .insert(1, Payload::Host(Bytes::from(vec![5u8; 1 << 20])));
    let none = Requester::connect(&h.addr, ConnConfig::default()).await;
    assert!(
        matches!(none, Err(TransportError::AuthRequired)),
        "{:?}",
        none.err()
    );
    let wrong = ConnConfig {
        auth: Some(Secret::new(b"another".to_vec())),
        ..Default::default()
    };
    let bad = Requester::connect(&h.addr, wrong).await;
    assert!(
        matches!(bad, Err(TransportError::AuthFailed(_))),
        "{:?}",
        bad.err()
    );
    let mut ok = Requester::connect(&h.addr, cfg).await.unwrap();
    let b = ok.get(&[1]).await.unwrap().pop().unwrap().unwrap();
    assert_eq!(&b[..], &[5u8; 1 << 20][..]);
}

//! The shared-memory transport end to end in one process: integrity over random sizes,
//! peer death on either side, authentication.

mod common;

use bytes::Bytes;
use common::*;
use rask_proto::Payload;
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

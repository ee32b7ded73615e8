//! Integrity over tcp: random sizes up to 1 GiB and random content, written with vectored
//! writes and received both into fresh buffers and into an arena.

mod common;

use bytes::Bytes;
use common::{hash, random_bytes, seed};
use rask_proto::msg::{DataItem, PeerMsg};
use rask_proto::{Datum, TaskId};
use rask_transport::shm::Arena;
use rask_transport::{ConnConfig, FrameReader};

async fn round_trip(sizes: &[usize], arena: Option<Arena>) {
    let s = seed();
    let data: Vec<Bytes> = sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| Bytes::from(random_bytes(n, s.wrapping_add(k as u64))))
        .collect();
    let want: Vec<(usize, u64)> = data.iter().map(|b| (b.len(), hash(b))).collect();
    let listener = rask_transport::listen("127.0.0.1:0").await.unwrap();
    let addr = rask_transport::listener_addr(&listener).unwrap();
    let cfg = ConnConfig::default();
    let server_cfg = cfg.clone();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (r, mut w) = stream.into_split();
        let mut reader = FrameReader::new(r, server_cfg.clone());
        reader.set_arena(arena);
        rask_transport::accept(&mut reader, &mut w, &server_cfg)
            .await
            .unwrap();
        rask_transport::welcome(&mut w, &reader, 0).await.unwrap();
        let mut got = Vec::new();
        while let Some(b) = reader.read_batch::<PeerMsg>().await.unwrap() {
            for m in b.msgs {
                let PeerMsg::Data { items, .. } = m else {
                    panic!("unexpected message")
                };
                for it in items {
                    let Datum::Buf(i) = it.value else {
                        panic!("not a buffer")
                    };
                    let buf = &b.bufs[i as usize];
                    got.push((buf.len(), hash(buf)));
                }
            }
        }
        got
    });
    let (_r, w, _) = rask_transport::connect(&addr, &common::hello(), cfg)
        .await
        .unwrap();
    let tx = rask_transport::spawn_writer::<PeerMsg, _>(w);
    for (k, b) in data.into_iter().enumerate() {
        let item = DataItem {
            task: TaskId(k as u64),
            value: Datum::Buf(0),
        };
        let m = PeerMsg::Data {
            req: k as u64,
            items: vec![item],
            missing: vec![],
        };
        tx.send_with(m, vec![b]).unwrap();
    }
    drop(tx);
    assert_eq!(server.await.unwrap(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sizes_into_fresh_buffers() {
    round_trip(&[0, 1, 4095, 4096, 65537, (3 << 20) + 5, 1 << 30], None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sizes_into_an_arena() {
    round_trip(
        &[0, 1, 65535, 65536, 65537, (3 << 20) + 5, 1 << 30],
        Some(Arena::new(4 << 20)),
    )
    .await;
}

//! Descriptor and mapping accounting of the shared-memory transport (its own test binary,
//! so that no other test's arenas are counted).

mod common;

use common::*;
use rask_proto::Payload;
use rask_transport::ConnConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_transfers_leak_no_descriptor_or_mapping() {
    let mut h = holder(ConnConfig::default()).await;
    let data = random_bytes(1 << 20, seed());
    let want = hash(&data);
    h.store
        .lock()
        .unwrap()
        .insert(1, Payload::Host(h.arena.copy_in(&data).unwrap()));
    let before_any = (count_fds(), count_maps());
    let mut req = Requester::connect(&h.addr, ConnConfig::default())
        .await
        .unwrap();
    for _ in 0..10 {
        let b = req.get(&[1]).await.unwrap().pop().unwrap().unwrap();
        assert_eq!(hash(&b), want);
    }
    let warm = (count_fds(), count_maps());
    for i in 0..10_000 {
        let b = req.get(&[1]).await.unwrap().pop().unwrap().unwrap();
        assert_eq!(b.len(), 1 << 20);
        if i % 1000 == 0 {
            assert_eq!(hash(&b), want);
        }
    }
    // Replies come in order after releases, so one more request settles them.
    assert_eq!(req.get(&[2]).await.unwrap(), vec![None]);
    assert_eq!((count_fds(), count_maps()), warm);
    // The holder's segment and the requester's mapping of it; one connection.
    assert_eq!(warm.1, 2);
    assert_eq!(warm.0 .0, 1);
    assert_eq!(
        h.arena.stats().used,
        1 << 20,
        "only the stored value is in use"
    );

    // The holder frees the value and shrinks its arena; the requester unmaps too.
    h.store.lock().unwrap().clear();
    let gone = h.arena.trim(0, 0);
    assert_eq!(gone.len(), 1);
    h.retire.send(gone).unwrap();
    // The retirement notice precedes the reply to a request sent after it.
    while req.importer.mapped() > 0 {
        assert_eq!(req.get(&[3]).await.unwrap(), vec![None]);
    }
    drop(req);
    h.ended.recv().await.unwrap();
    let after = (count_fds(), count_maps());
    assert_eq!(after, ((0, before_any.0 .1), 0), "before: {before_any:?}");
}

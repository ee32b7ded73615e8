//! The load index: left unfiled where placement and stealing weigh every worker, and
//! what they find there the same as what the index would give.

use rask_proto::ClientId;

use crate::api::CoreConfig;
use crate::core::SchedulerCore;
use crate::tests::{map, spec};

/// In a cluster small enough for stealing to weigh every worker (the load index unread),
/// the idle worker it finds is the one the index would give, filed now: the least work
/// first, ties by id, never a retiring worker, none when no thread is free.
#[test]
fn a_small_clusters_idle_worker_is_the_one_the_index_would_give() {
    use crate::load::LEAST_LOADED;
    use rask_proto::{TaskId, WorkerId};
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut answers = [0usize; 2];
    for _ in 0..500 {
        let mut s = SchedulerCore::new(CoreConfig::default());
        let count = 1 + next(LEAST_LOADED as u64);
        for i in 0..count {
            let mut sp = spec(&format!("w{i}"));
            sp.nthreads = 1 + next(3) as u32;
            s.on_worker_joined(WorkerId(i as u32 + 1), sp);
        }
        for i in 0..count {
            let id = WorkerId(i as u32 + 1);
            let w = s.workers.get_mut(&id).expect("joined");
            for t in 0..next(4) {
                w.processing.insert(TaskId(1000 * i + t));
            }
            w.stealing_in = next(2) as u32;
            // Few loads, so that ties are common.
            w.occupancy_us = 10 * next(3);
            w.retiring = next(5) == 0;
            s.reindex(id);
        }
        assert!(!s.places_by_index());
        let scanned = s.idle_worker();
        s.refresh_index();
        let filed = s.idle.first().map(|&(_, id)| id);
        assert_eq!(scanned, filed);
        answers[usize::from(scanned.is_some())] += 1;
    }
    // Both answers were asked for.
    assert!(answers.iter().all(|&n| n > 50), "{answers:?}");
}

/// The load index is filed where placement reads it, in a cluster of more than
/// `LEAST_LOADED` workers, and left unfiled in a smaller one, where placement and
/// stealing weigh every worker: at the edge, eight workers and nine.
#[test]
fn the_load_index_is_filed_only_where_placement_reads_it() {
    use crate::load::LEAST_LOADED;
    use rask_proto::WorkerId;
    for count in [1, LEAST_LOADED, LEAST_LOADED + 1, 20] {
        let a = ClientId(1);
        let mut s = SchedulerCore::new(CoreConfig::default());
        s.on_client_joined(a);
        for i in 0..count {
            s.on_worker_joined(WorkerId(i as u32 + 1), spec(&format!("w{i}")));
        }
        s.on_map(a, map("m", 0, 3 * count as i64)).unwrap();
        s.validate();
        // Filed: every worker (some marked again since, by the last tasks placed); not
        // filed: none, each marked once.
        let filed = s.by_load.len();
        match count > LEAST_LOADED {
            true => assert_eq!(filed, count, "{count} workers"),
            false => assert_eq!((filed, s.stale.len()), (0, count), "{count} workers"),
        }
    }
}

use crate::msg::{DepLoc, ToClient, ToScheduler, ToWorker, WireMessage};
use crate::{TaskId, WorkerId};

/// Round-trips one message alone in a batch; returns its archived size.
pub(super) fn round_trip<M: WireMessage + PartialEq + std::fmt::Debug + Clone>(m: &M) -> usize {
    let bytes = M::encode_batch(&vec![m.clone()]);
    assert_eq!(&M::decode_batch(&bytes).unwrap(), &vec![m.clone()]);
    bytes.len()
}

#[test]
fn the_retirement_messages_round_trip_within_their_size_estimates() {
    let names: Vec<String> = (0..50).map(|i| format!("worker-{i}")).collect();
    let dep = |t: u64| DepLoc {
        task: TaskId(t),
        nbytes: 1 << 40,
        holders: vec![WorkerId(1), WorkerId(u32::MAX)],
    };
    let to_scheduler = [
        ToScheduler::RetireWorkers {
            req: 3,
            names: names.clone(),
        },
        ToScheduler::AdaptiveTarget {
            req: 4,
            target_duration_us: 5_000_000,
        },
        ToScheduler::WorkersToClose {
            req: 5,
            target: u64::MAX,
        },
        ToScheduler::CloseGracefully {
            reason: "its lifetime is over".into(),
        },
        ToScheduler::DeviceLost {
            message: "cuda:0 failed for good: CUDA_ERROR_ILLEGAL_ADDRESS ".repeat(40),
        },
        ToScheduler::ReplicasAcquired {
            tasks: (0..300).map(TaskId).collect(),
        },
        ToScheduler::ReplicaMissing {
            task: TaskId(7),
            holder: WorkerId(2),
        },
    ];
    for m in &to_scheduler {
        assert!(round_trip(m) <= m.wire_size(), "{m:?}");
    }
    let m = ToWorker::AcquireReplicas {
        tasks: (0..300).map(dep).collect(),
    };
    assert!(round_trip(&m) <= m.wire_size());
    let to_client = [
        ToClient::RetireWorkersReply {
            req: 3,
            retired: names.clone(),
        },
        ToClient::AdaptiveTargetReply { req: 4, target: 17 },
        ToClient::WorkersToCloseReply { req: 5, names },
    ];
    for m in &to_client {
        assert!(round_trip(m) <= m.wire_size(), "{m:?}");
    }
}

/// The news of a map's keys round-trips within its size estimate, with values or
/// without, for one key and for thousands.
#[test]
fn the_news_of_a_maps_keys_round_trips_within_its_size_estimate() {
    use crate::msg::MapNews;
    use crate::Datum;
    let values = [
        None,
        Some(Datum::Int(i64::MIN)),
        Some(Datum::Str("v".repeat(200))),
        Some(Datum::List((0..100).map(Datum::Int).collect())),
    ];
    for count in [1u64, 3, 5000] {
        let m = ToClient::MapInMemory {
            prefix: "inc-0123456789abcdef".into(),
            holders: vec![WorkerId(1), WorkerId(u32::MAX)],
            keys: (0..count)
                .map(|n| MapNews {
                    n: u64::MAX - n,
                    task: TaskId(n << 32 | n),
                    nbytes: n,
                    value: values[n as usize % values.len()]
                        .as_ref()
                        .map(crate::packed::Packed::new),
                })
                .collect(),
        };
        assert!(round_trip(&m) <= m.wire_size(), "{count} keys");
    }
}

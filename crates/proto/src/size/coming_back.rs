use crate::msg::{HeartbeatMsg, ToClient, ToScheduler, WireMessage};
use crate::observe::{ActivityKind, ActivityMsg, PeerBytesMsg};
use crate::{TaskId, WorkerId};

use super::tests::round_trip;

#[test]
fn rejoining_and_watching_messages_round_trip_within_their_size_estimates() {
    let keys: Vec<String> = (0..500).map(|i| format!("inc-{i:x}-{i}")).collect();
    let activity = (0..1000u64)
        .map(|i| ActivityMsg {
            task: TaskId(i << 32 | i),
            kind: if i % 2 == 0 {
                ActivityKind::Transfer {
                    from: WorkerId(i as u32),
                    link: "nvlink".into(),
                }
            } else {
                ActivityKind::Spill {
                    direction: "device->disk".into(),
                }
            },
            start_ago_us: u64::MAX,
            stop_ago_us: i,
            nbytes: 1 << 40,
        })
        .collect();
    let heartbeat = HeartbeatMsg {
        stored_bytes: 1,
        stored_keys: 2,
        executing: 3,
        rss_bytes: 4,
        device_memory_used: 5,
        device_to_host: 6,
        received: vec![("nvlink".into(), 1), ("tcp".into(), 2)],
        spilled: vec![("device->host".into(), 3)],
        ran: vec![("device".into(), 4)],
        device_bytes: 7,
        disk_bytes: 8,
        activity,
        activity_dropped: 9,
        received_from: (0..64)
            .map(|i| PeerBytesMsg {
                peer: WorkerId(i),
                link: "pcie".into(),
                bytes: u64::MAX,
                micros: u64::MAX,
            })
            .collect(),
        utilization: Some(42.5),
    };
    let to_scheduler = [
        ToScheduler::Heartbeat(Box::new(heartbeat)),
        ToScheduler::Holding {
            tasks: (0..10_000)
                .map(|i| (TaskId(i << 32 | i), u64::MAX))
                .collect(),
            last: true,
        },
        ToScheduler::Resubscribe { keys: keys.clone() },
    ];
    for m in &to_scheduler {
        let (actual, estimate) = (round_trip(m), m.wire_size());
        assert!(actual <= estimate, "{actual} > {estimate}");
    }
    let m = ToClient::KeysLost {
        keys,
        reason: "the scheduler restarted without them".into(),
    };
    assert!(round_trip(&m) <= m.wire_size());
}

/// A task's report with its value (up to the 1 KiB a worker sends inline, and past
/// it) within its size estimate, and not a wild one.
#[test]
fn a_report_with_its_value_round_trips_within_its_size_estimate() {
    use crate::msg::TaskFinishedMsg;
    use crate::packed::Packed;
    use crate::Datum;
    for len in [0, 1, 200, 1024, 5000] {
        let value = Packed::new(&Datum::Str("v".repeat(len)));
        let m = ToScheduler::TaskFinished(TaskFinishedMsg {
            task: TaskId(u64::MAX),
            nbytes: u64::MAX,
            duration_us: u64::MAX,
            fetch_us: u64::MAX,
            value: Some(value),
            run: u32::MAX,
        });
        let (actual, estimate) = (round_trip(&m), m.wire_size());
        assert!(actual <= estimate, "{len}: {actual} > {estimate}");
        assert!(
            estimate <= 2 * actual + 256,
            "{len}: {estimate} for {actual}"
        );
    }
}

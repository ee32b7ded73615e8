//! Upper estimates of messages' archived sizes, so that a writer keeps its frames within
//! a target without encoding twice (see `WireMessage::wire_size`). Not part of the wire
//! layout: these estimates may change without changing the protocol's schema hash.

use crate::msg::{Holder, PeerMsg, TaskSpec, ToClient, ToScheduler, ToWorker};
use crate::packed::{Packed, TaskArgs};
use crate::Datum;

/// An upper estimate of a datum's archived size.
pub fn datum_wire_size(d: &Datum) -> usize {
    // Recursive: the datums sent are made here, within the depth a receiver accepts.
    fn nodes(d: &Datum) -> usize {
        24 + match d {
            Datum::Str(s) => s.len(),
            Datum::List(l) => l.iter().map(nodes).sum(),
            _ => 0,
        }
    }
    16 + nodes(d)
}

/// An upper estimate of a task's arguments archived: their packing's length (see
/// [`crate::packed`]), counted exactly, and the list that holds it.
pub fn args_wire_size(a: &TaskArgs) -> usize {
    16 + match a {
        TaskArgs::Datum(d) => packed_len(d),
        TaskArgs::Packed(p) => p.bytes().len(),
    }
}

/// An upper estimate of a packed datum's archived size.
pub fn packed_wire_size(p: &Packed) -> usize {
    16 + p.bytes().len()
}

/// The length of `d`'s packing, without packing it. Recursive: the datums sent are made
/// here, within the depth a receiver accepts.
fn packed_len(d: &Datum) -> usize {
    fn varint_len(v: u64) -> usize {
        (64 - v.leading_zeros() as usize).max(1).div_ceil(7)
    }
    1 + match d {
        Datum::Null | Datum::Bool(_) => 0,
        Datum::Int(i) => varint_len(((i << 1) ^ (i >> 63)) as u64),
        Datum::Float(_) => 8,
        Datum::Str(s) => varint_len(s.len() as u64) + s.len(),
        Datum::Buf(i) | Datum::Ref(i) => varint_len(u64::from(*i)),
        Datum::List(l) => varint_len(l.len() as u64) + l.iter().map(packed_len).sum::<usize>(),
    }
}

/// An upper estimate of a task's archived size.
pub fn task_wire_size(t: &TaskSpec) -> usize {
    64 + t.key.len()
        + t.op.len()
        + datum_wire_size(&t.args)
        + t.deps.iter().map(|d| d.len() + 16).sum::<usize>()
        + t.resources.iter().map(|r| r.name.len() + 32).sum::<usize>()
}

/// The size estimate of each message type (see [`WireMessage::wire_size`]).
pub(crate) trait WireSize {
    fn wire_size(&self) -> usize {
        256
    }
}

impl WireSize for ToWorker {
    fn wire_size(&self) -> usize {
        match self {
            ToWorker::Compute(c) => {
                128 + c.op.len() + args_wire_size(&c.args) + c.deps.len() * (32 + 8 * 4)
            }
            ToWorker::Free { tasks } => 64 + tasks.len() * 8,
            ToWorker::Peers { peers } => {
                64 + peers
                    .iter()
                    .map(|p| 96 + p.addr.len() + p.shm_addr.len() + p.host_id.len())
                    .sum::<usize>()
            }
            ToWorker::RunProgram { program } => 128 + program.name.len() + program.platform.len(),
            ToWorker::AcquireReplicas { tasks } => {
                128 + tasks
                    .iter()
                    .map(|d| 32 + 8 * d.holders.len())
                    .sum::<usize>()
            }
            _ => 256,
        }
    }
}

fn holders_wire_size(holders: &[Holder]) -> usize {
    holders
        .iter()
        .map(|h| 96 + h.addr.len() + h.shm_addr.len() + h.host_id.len() + h.device.len())
        .sum()
}

impl WireSize for ToClient {
    fn wire_size(&self) -> usize {
        match self {
            ToClient::KeyInMemory {
                key,
                holders,
                value,
                ..
            } => 96 + key.len() + 8 * holders.len() + value.as_ref().map_or(0, packed_wire_size),
            ToClient::MapInMemory {
                prefix,
                holders,
                keys,
            } => {
                64 + prefix.len()
                    + 8 * holders.len()
                    + keys
                        .iter()
                        .map(|k| 48 + k.value.as_ref().map_or(0, packed_wire_size))
                        .sum::<usize>()
            }
            ToClient::Workers { holders } => 64 + holders_wire_size(holders),
            ToClient::KeyErred { key, error } => {
                96 + key.len() + error.key.len() + error.op.len() + error.message.len()
            }
            ToClient::GraphRejected { keys, message }
            | ToClient::KeysLost {
                keys,
                reason: message,
            } => 64 + message.len() + keys.iter().map(|k| k.len() + 16).sum::<usize>(),
            ToClient::WhoHasReply { entries, .. } => {
                64 + entries
                    .iter()
                    .map(|e| 32 + e.key.len() + holders_wire_size(&e.holders))
                    .sum::<usize>()
            }
            ToClient::InfoReply { info, .. } => {
                4096 + info.workers.len() * 1024
                    + info
                        .prefixes
                        .iter()
                        .map(|p| 512 + p.name.len())
                        .sum::<usize>()
                    + info
                        .programs
                        .iter()
                        .map(|p| 128 + p.name.len() + p.error.len())
                        .sum::<usize>()
            }
            ToClient::Closing { reason } => 64 + reason.len(),
            ToClient::Echo { .. } => 32,
            ToClient::SendProgram { .. } => 64,
            ToClient::RetireWorkersReply { retired: names, .. }
            | ToClient::WorkersToCloseReply { names, .. } => {
                128 + names.iter().map(|n| n.len() + 16).sum::<usize>()
            }
            ToClient::AdaptiveTargetReply { .. } => 128,
            ToClient::DatasetsReply { names, error, .. } => {
                128 + error.as_ref().map_or(0, String::len)
                    + names.iter().map(|n| n.len() + 16).sum::<usize>()
            }
            ToClient::TaskStreamReply { entries, .. } => {
                64 + entries
                    .iter()
                    .map(|e| {
                        128 + e.key.len() + e.prefix.len() + e.worker_name.len() + e.kind.len()
                    })
                    .sum::<usize>()
            }
            ToClient::StoryReply { transitions, .. } => {
                64 + transitions
                    .iter()
                    .map(|t| {
                        160 + t.key.len()
                            + t.why.len()
                            + t.worker_name.len()
                            + t.error
                                .as_ref()
                                .map_or(0, |e| e.key.len() + e.op.len() + e.message.len() + 48)
                    })
                    .sum::<usize>()
            }
        }
    }
}

impl WireSize for PeerMsg {
    fn wire_size(&self) -> usize {
        match self {
            PeerMsg::GetData { tasks, .. } => 64 + tasks.len() * 8,
            PeerMsg::Data { items, missing, .. } => {
                64 + missing.len() * 8
                    + items
                        .iter()
                        .map(|i| 16 + datum_wire_size(&i.value))
                        .sum::<usize>()
            }
            PeerMsg::ShmData {
                items,
                missing,
                refs,
                segments,
                ..
            } => {
                96 + missing.len() * 8
                    + refs.len() * 128
                    + segments.len() * 16
                    + items
                        .iter()
                        .map(|i| 16 + datum_wire_size(&i.value))
                        .sum::<usize>()
            }
            PeerMsg::Release { loans } => 64 + loans.len() * 8,
            PeerMsg::Retired { segments } => 64 + segments.len() * 4,
        }
    }
}

impl WireSize for ToScheduler {
    fn wire_size(&self) -> usize {
        match self {
            ToScheduler::UpdateGraph(g) => {
                64 + g.tasks.iter().map(task_wire_size).sum::<usize>()
                    + g.wanted.iter().map(|k| k.len() + 16).sum::<usize>()
            }
            ToScheduler::Map(m) => {
                128 + m.prefix.len()
                    + m.op.len()
                    + m.args.iter().map(args_wire_size).sum::<usize>()
                    + m.resources.iter().map(|r| r.name.len() + 32).sum::<usize>()
            }
            ToScheduler::ReleaseKeys { keys }
            | ToScheduler::WhoHas { keys, .. }
            | ToScheduler::Resubscribe { keys } => {
                64 + keys.iter().map(|k| k.len() + 16).sum::<usize>()
            }
            ToScheduler::ReleaseMapKeys { runs } => {
                64 + runs.iter().map(|r| r.prefix.len() + 32).sum::<usize>()
            }
            ToScheduler::Holding { tasks, .. } => 64 + tasks.len() * 16,
            ToScheduler::Heartbeat(h) => {
                let list = |l: &[(String, u64)]| l.iter().map(|(k, _)| k.len() + 24).sum::<usize>();
                512 + list(&h.received)
                    + list(&h.spilled)
                    + list(&h.ran)
                    + h.activity
                        .iter()
                        .map(|a| {
                            64 + match &a.kind {
                                crate::observe::ActivityKind::Transfer { link, .. } => link.len(),
                                crate::observe::ActivityKind::Spill { direction } => {
                                    direction.len()
                                }
                            }
                        })
                        .sum::<usize>()
                    + h.received_from
                        .iter()
                        .map(|p| 48 + p.link.len())
                        .sum::<usize>()
            }
            ToScheduler::ProgramFailed { message, .. } => 64 + message.len(),
            ToScheduler::RetireWorkers { names, .. } => {
                128 + names.iter().map(|n| n.len() + 16).sum::<usize>()
            }
            ToScheduler::CloseGracefully { reason } => 128 + reason.len(),
            ToScheduler::DeviceLost { message } => 128 + message.len(),
            ToScheduler::ReplicasAcquired { tasks } => 128 + tasks.len() * 8,
            ToScheduler::Story { key, .. } => 64 + key.len(),
            ToScheduler::TaskFinished(f) => 128 + f.value.as_ref().map_or(0, packed_wire_size),
            _ => 256,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::msg::{DepLoc, ToClient, ToScheduler, ToWorker, WireMessage};
    use crate::{TaskId, WorkerId};

    /// Round-trips one message alone in a batch; returns its archived size.
    fn round_trip<M: WireMessage + PartialEq + std::fmt::Debug + Clone>(m: &M) -> usize {
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
}

#[cfg(test)]
mod maps {
    use super::WireSize;
    use crate::msg::{MapMsg, Resource, ToScheduler, WireMessage};
    use crate::Datum;

    /// A map is boxed in the message: the message, moved through every queue, is no larger
    /// than its most frequent variant, a task's report, with its tag.
    #[test]
    fn a_map_does_not_make_every_message_larger() {
        let message = std::mem::size_of::<ToScheduler>();
        let report = std::mem::size_of::<crate::msg::TaskFinishedMsg>();
        assert!(message <= report + 8, "{message} bytes, a report {report}");
    }

    /// A map round-trips, within its size estimate, whatever its arguments, and its
    /// buffer indices move with the frame's.
    /// Compute messages, their arguments packed or not, round-trip to the same bytes
    /// within their size estimates, and are read back packed.
    #[test]
    fn compute_messages_round_trip_within_their_size_estimate_packed_or_not() {
        use crate::msg::{ComputeMsg, ToWorker};
        use crate::packed::{Packed, TaskArgs};
        let datums = [
            Datum::Null,
            Datum::Int(i64::MIN),
            Datum::Float(0.5),
            Datum::Str(String::new()),
            Datum::List(vec![Datum::Int(3), Datum::Ref(0), Datum::Buf(1)]),
            Datum::List((0..1000).map(Datum::Int).collect()),
            Datum::List(vec![
                Datum::Str("x".repeat(300)),
                Datum::List(vec![Datum::Bool(true), Datum::Str("é".into())]),
            ]),
        ];
        for d in datums {
            let compute = |args: TaskArgs| {
                ToWorker::Compute(ComputeMsg {
                    task: crate::TaskId(7),
                    op: "inc".into(),
                    args,
                    deps: vec![],
                    priority: 1,
                    report_value: true,
                    run: 1,
                })
            };
            let plain = compute(TaskArgs::Datum(d.clone()));
            let packed = compute(TaskArgs::Packed(Packed::new(&d)));
            let bytes = ToWorker::encode_batch(&vec![packed.clone()]);
            let plain_bytes = ToWorker::encode_batch(&vec![plain.clone()]);
            assert_eq!(bytes.as_slice(), plain_bytes.as_slice(), "{d:?}");
            let back = ToWorker::decode_batch(&bytes).unwrap();
            assert_eq!(back, vec![plain.clone()]);
            assert!(
                matches!(&back[0], ToWorker::Compute(c) if matches!(c.args, TaskArgs::Packed(_))),
                "read back packed"
            );
            for (m, what) in [(&plain, "plain"), (&packed, "packed")] {
                let estimate = WireSize::wire_size(m);
                assert!(bytes.len() <= estimate, "{what} {d:?}");
                assert!(
                    estimate <= 2 * bytes.len() + 256,
                    "{what}: {estimate} for {}",
                    bytes.len()
                );
            }
            assert_eq!(WireSize::wire_size(&packed), WireSize::wire_size(&plain));
        }
    }

    #[test]
    fn a_map_round_trips_within_its_size_estimate() {
        let args = |n: i64| {
            (0..n)
                .map(|i| {
                    Datum::List(vec![
                        Datum::Int(i),
                        Datum::Str("x".repeat(i as usize % 40)),
                        Datum::Buf(i as u32 % 2),
                    ])
                    .into()
                })
                .collect::<Vec<crate::packed::TaskArgs>>()
        };
        for (n, long) in [(0, 1), (1, 1), (1000, 1), (0, 2000), (3, 2000)] {
            let m = ToScheduler::Map(Box::new(MapMsg {
                prefix: "inc-7f-3".repeat(long),
                first: u64::MAX - n as u64,
                op: "inc".repeat(long),
                args: args(n),
                resources: vec![Resource {
                    name: "gpu".repeat(long),
                    amount: 0.5,
                }],
            }));
            let bytes = ToScheduler::encode_batch(&vec![m.clone()]);
            assert_eq!(ToScheduler::decode_batch(&bytes).unwrap(), vec![m.clone()]);
            let estimate = WireSize::wire_size(&m);
            assert!(bytes.len() <= estimate, "{n} arguments, names {long}×");
            // An upper estimate, not a wild one: frames are cut by it.
            assert!(
                estimate <= 2 * bytes.len() + 256,
                "{estimate} for {}",
                bytes.len()
            );
        }
        let mut m = ToScheduler::Map(Box::new(MapMsg {
            prefix: "p".into(),
            first: 0,
            op: "inc".into(),
            args: args(3),
            resources: vec![],
        }));
        m.shift_buffers(5);
        let ToScheduler::Map(m) = m else {
            unreachable!()
        };
        let bufs: Vec<_> = m
            .args
            .iter()
            .map(|a| match a.datum().into_owned() {
                Datum::List(l) => l[2].clone(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(bufs, [Datum::Buf(5), Datum::Buf(6), Datum::Buf(5)]);
    }
}

#[cfg(test)]
mod coming_back {
    use crate::msg::{HeartbeatMsg, ToClient, ToScheduler, WireMessage};
    use crate::observe::{ActivityKind, ActivityMsg, PeerBytesMsg};
    use crate::{TaskId, WorkerId};

    fn size<M: WireMessage + PartialEq + std::fmt::Debug + Clone>(m: &M) -> usize {
        let bytes = M::encode_batch(&vec![m.clone()]);
        assert_eq!(&M::decode_batch(&bytes).unwrap(), &vec![m.clone()]);
        bytes.len()
    }

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
            let (actual, estimate) = (size(m), m.wire_size());
            assert!(actual <= estimate, "{actual} > {estimate}");
        }
        let m = ToClient::KeysLost {
            keys,
            reason: "the scheduler restarted without them".into(),
        };
        assert!(size(&m) <= m.wire_size());
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
            let (actual, estimate) = (size(&m), m.wire_size());
            assert!(actual <= estimate, "{len}: {actual} > {estimate}");
            assert!(
                estimate <= 2 * actual + 256,
                "{len}: {estimate} for {actual}"
            );
        }
    }
}

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

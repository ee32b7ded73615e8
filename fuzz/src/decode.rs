//! The pure decoders: frame prefixes, the handshake's messages, each direction's message
//! batches, and values (the flat datum form, `MAX_DEPTH`, array chunks, typed values).
//!
//! Every harness decodes what a receiver decodes and then does with the result what the
//! receiver does first (moves a task's buffers out of the frame, rebuilds values). What
//! decodes must also re-encode to a batch that decodes again, to the same bytes: what a
//! node accepts, it can pass on.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use rask_proto::chunk::chunk_parts;
use rask_proto::frame::{self, FrameLimits, PREFIX_LEN};
use rask_proto::msg::{
    check_versions, AuthProof, Hello, HelloReply, PeerMsg, ToClient, ToScheduler, ToWorker,
    WireMessage,
};
use rask_proto::packed::{Packed, TaskArgs};
use rask_proto::{Datum, Value, MAX_DEPTH};
use serde::{Deserialize, Serialize};

use crate::input::{split_frame, welcomed_limits, RawFrame};

/// The most frames one input is read for.
pub const MAX_FRAMES: usize = 16;

/// The frame prefix and the buffer-length table, under the limits of a welcomed peer, of
/// one still in its handshake, and under tight ones.
pub fn frame_header(data: &[u8]) {
    let tight = FrameLimits {
        max_header: 1024,
        max_buffers: 4,
        max_payload: 1 << 20,
    };
    for limits in [
        FrameLimits::default(),
        rask_transport::HANDSHAKE_LIMITS,
        tight,
    ] {
        let Some(prefix) = data.get(..PREFIX_LEN) else {
            return;
        };
        let prefix: &[u8; PREFIX_LEN] = prefix.try_into().expect("16 bytes");
        let Ok(p) = frame::parse_prefix(prefix, &limits) else {
            continue;
        };
        assert!(p.header_len <= limits.max_header, "header over its limit");
        if p.refusal {
            assert_eq!(p.nbufs, 0, "a refusal carries no buffers");
        } else {
            assert!(p.nbufs <= limits.max_buffers, "buffer count over its limit");
        }
        let table = &data[PREFIX_LEN..];
        let table = &table[..table.len().min(p.nbufs as usize * 8) / 8 * 8];
        if let Ok(lens) = frame::parse_buf_lens(table, &limits) {
            let total = lens.iter().try_fold(0u64, |a, &l| a.checked_add(l));
            assert!(
                total.is_some_and(|t| t <= limits.max_payload),
                "payload over its limit"
            );
            if !p.refusal {
                // The prefix as the encoder writes it is the one parsed.
                let again = frame::encode_prefix(p.header_len as usize, lens.iter().copied());
                let parsed = frame::parse_prefix(again[..PREFIX_LEN].try_into().unwrap(), &limits)
                    .expect("an encoded prefix parses");
                assert_eq!(parsed.header_len, p.header_len);
                assert_eq!(parsed.nbufs as usize, lens.len());
            }
        }
    }
}

/// Decodes `bytes` as `T` and checks that what decoded re-encodes stably.
fn round_trip<T>(bytes: &[u8]) -> Option<T>
where
    T: rkyv::Archive
        + for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(bytes);
    let v: T = frame::decode_header(&aligned).ok()?;
    let once = frame::encode_header(&v);
    let back: T =
        frame::decode_header(&once).expect("a decoded header re-encodes to one that decodes");
    let twice = frame::encode_header(&back);
    assert_eq!(once.as_slice(), twice.as_slice(), "re-encoding is stable");
    Some(v)
}

/// The handshake's frames, as a server reads the connecting side's and the connecting
/// side reads the server's: a hello (checked against this build), a reply, a proof; and a
/// refusal's text.
pub fn hello(data: &[u8]) {
    let mut rest = data;
    for _ in 0..MAX_FRAMES {
        let Ok((f, used)) = split_frame(rest, &rask_transport::HANDSHAKE_LIMITS) else {
            return;
        };
        rest = &rest[used..];
        if f.refusal {
            let _ = String::from_utf8_lossy(&f.header);
            continue;
        }
        if let Some(h) = round_trip::<Hello>(&f.header) {
            let _ = check_versions(&h, "the fuzzer");
            if let Some(reg) = &h.registry {
                let _ = reg.ops.iter().map(|o| o.name.len()).sum::<usize>();
            }
        }
        let _ = round_trip::<HelloReply>(&f.header);
        let _ = round_trip::<AuthProof>(&f.header);
    }
}

/// Splits the frames of `data` (welcomed limits) and hands each decoded batch to `each`.
fn batches<M: WireMessage>(data: &[u8], mut each: impl FnMut(Vec<M>, &[Bytes])) {
    let mut rest = data;
    for _ in 0..MAX_FRAMES {
        let Ok((RawFrame { header, bufs, .. }, used)) = split_frame(rest, &welcomed_limits())
        else {
            return;
        };
        rest = &rest[used..];
        let Ok(msgs) = M::decode_batch(&header) else {
            continue;
        };
        let once = M::encode_batch(&msgs);
        let back = M::decode_batch(&once).expect("a decoded batch re-encodes to one that decodes");
        let twice = M::encode_batch(&back);
        assert_eq!(once.as_slice(), twice.as_slice(), "re-encoding is stable");
        for m in &msgs {
            let _ = m.wire_size();
        }
        each(msgs, &bufs);
    }
}

/// A datum's value, rebuilt as a receiver rebuilds it (frame buffers, `deps` values
/// standing in for the task's inputs).
fn rebuild(d: &Datum, bufs: &[Bytes], deps: usize) -> Option<Value> {
    let inputs: Vec<Value> = (0..deps.min(64)).map(|i| Value::Int(i as i64)).collect();
    let refs: Vec<&Value> = inputs.iter().collect();
    let v = d.to_value(bufs, &refs).ok()?;
    value_checks(&v);
    Some(v)
}

/// A packed datum's value, made as a receiver makes it (it must be the value of the
/// datum it unpacks to: the two readings of one packing agree).
fn rebuild_packed(p: &Packed, bufs: &[Bytes], deps: usize) -> Option<Value> {
    let inputs: Vec<Value> = (0..deps.min(64)).map(|i| Value::Int(i as i64)).collect();
    let refs: Vec<&Value> = inputs.iter().collect();
    let direct = p.to_value(bufs, &refs);
    let unpacked = p.unpack().to_value(bufs, &refs);
    assert_eq!(
        format!("{direct:?}"),
        format!("{unpacked:?}"),
        "a packing's value is its datum's"
    );
    let v = direct.ok()?;
    value_checks(&v);
    Some(v)
}

/// A task's arguments moved out of the frame's buffers and their value made, as the
/// scheduler checks a map's and a worker runs a compute's.
fn rebuild_args(mut args: TaskArgs, bufs: &[Bytes], deps: usize) {
    let (max_buf, max_ref) = (args.max_buf(), args.max_ref());
    let datum = args.datum().into_owned();
    assert_eq!((max_buf, max_ref), (datum.max_buf(), datum.max_ref()));
    if let Ok(own) = args.localize(bufs) {
        if let TaskArgs::Packed(p) = &args {
            rebuild_packed(p, &own, deps);
        } else {
            rebuild(&args.datum(), &own, deps);
        }
    }
}

/// Batches of messages to the scheduler, from clients and workers: a graph's task
/// arguments moved out of the frame's buffers (as the scheduler does), results and
/// program parts found in them.
pub fn to_scheduler(data: &[u8]) {
    batches::<ToScheduler>(data, |msgs, bufs| {
        for m in msgs {
            match m {
                ToScheduler::UpdateGraph(g) => {
                    for mut t in g.tasks {
                        let _ = t.args.max_ref();
                        assert!(
                            t.args.depth() <= MAX_DEPTH,
                            "a decoded datum nests too deep"
                        );
                        if let Ok(own) = t.args.localize(bufs) {
                            rebuild(&t.args, &own, t.deps.len());
                            let mut frame_bufs = Vec::new();
                            t.args
                                .globalize(&own, &mut frame_bufs)
                                .expect("a localized datum globalizes");
                        }
                    }
                }
                ToScheduler::Map(m) => {
                    for a in m.args {
                        rebuild_args(a, bufs, 0);
                    }
                }
                ToScheduler::TaskFinished(f) => {
                    if let Some(v) = &f.value {
                        rebuild_packed(v, &[], 0);
                    }
                }
                ToScheduler::ProgramPart { buf, .. } => {
                    let _ = bufs.get(buf as usize);
                }
                _ => {}
            }
        }
    });
}

/// Batches of messages to a worker: a compute's arguments moved out of the frame and
/// rebuilt with its inputs, as the worker runs it.
pub fn to_worker(data: &[u8]) {
    batches::<ToWorker>(data, |msgs, bufs| {
        for m in msgs {
            match m {
                ToWorker::Compute(c) => rebuild_args(c.args, bufs, c.deps.len()),
                ToWorker::ProgramPart { buf, .. } => {
                    let _ = bufs.get(buf as usize);
                }
                _ => {}
            }
        }
    });
}

/// Batches of messages to a client: values that travel with the news, rebuilt.
pub fn to_client(data: &[u8]) {
    batches::<ToClient>(data, |msgs, bufs| {
        for m in msgs {
            match &m {
                ToClient::KeyInMemory { value: Some(v), .. } => {
                    drop(rebuild_packed(v, bufs, 0))
                }
                ToClient::MapInMemory { keys, .. } => {
                    for v in keys.iter().filter_map(|k| k.value.as_ref()) {
                        drop(rebuild_packed(v, bufs, 0));
                    }
                }
                _ => {}
            }
        }
    });
}

/// Batches on a data connection, as a requester over tcp reads them
/// (`rask_transport::data::replies`), each value rebuilt from the frame's buffers.
pub fn peer_msg(data: &[u8]) {
    batches::<PeerMsg>(data, |msgs, bufs| {
        let batch = rask_transport::Batch {
            msgs,
            bufs: bufs.to_vec(),
            frame_bytes: 0,
        };
        if let Ok(replies) = rask_transport::data::replies(batch, None, None) {
            for r in replies {
                for it in &r.items {
                    if let Ok(v) = it.value.to_value_from(&r.bufs, &[]) {
                        value_checks(&v);
                    }
                }
            }
        }
    });
}

/// A value on its own: a frame whose header is one archived datum, rebuilt with the
/// frame's buffers; then read as an array chunk and as several programs' types.
pub fn value(data: &[u8]) {
    let mut rest = data;
    for _ in 0..MAX_FRAMES {
        let Ok((f, used)) = split_frame(rest, &welcomed_limits()) else {
            return;
        };
        rest = &rest[used..];
        let Some(mut d) = round_trip::<Datum>(&f.header) else {
            continue;
        };
        assert!(d.depth() <= MAX_DEPTH, "a decoded datum nests too deep");
        let refs = d.max_ref() as usize;
        rebuild(&d, &f.bufs, refs);
        if let Ok(own) = d.localize(&f.bufs) {
            rebuild(&d, &own, refs);
        }
    }
}

/// What every rebuilt value must allow: its wire form again (which the decoder accepts,
/// to an equal value), its size, and reading it as a chunk and as programs' types.
fn value_checks(v: &Value) {
    let _ = v.nbytes();
    let _ = v.type_name();
    let mut bufs = Vec::new();
    let d = v.to_datum(&mut bufs).expect("a decoded value encodes");
    let bytes = frame::encode_header(&d);
    let back: Datum = frame::decode_header(&bytes).expect("an encoded value decodes");
    assert_eq!(
        frame::encode_header(&back).as_slice(),
        bytes.as_slice(),
        "a value's wire form is stable"
    );
    if let Ok((dtype, shape, data)) = chunk_parts(v) {
        let n: u64 = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .expect("a chunk's shape does not overflow");
        let len = match data {
            Value::Bytes(b) => b.len() as u64,
            Value::Device(d) => d.len() as u64,
            _ => unreachable!("chunk data is bytes"),
        };
        assert_eq!(
            n.checked_mul(dtype.size()),
            Some(len),
            "chunk length checked"
        );
    }
    typed(v);
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Point {
    x: f64,
    y: f32,
    tag: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Shape {
    Empty,
    Circle(f64),
    Poly(Vec<(i32, i32)>),
    Named { name: String, sides: u8 },
    Nested(Box<Shape>),
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Unit;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Wrapper(u16);

/// Reads a value as programs' types, as a typed op's arguments are read.
fn typed(v: &Value) {
    use rask_proto::typed::{from_value, from_values, to_value};
    fn check<T>(v: &Value)
    where
        T: serde::de::DeserializeOwned + Serialize + std::fmt::Debug,
    {
        if let Ok(x) = from_value::<T>(v) {
            // What decoded encodes, and decodes again.
            let again = to_value(&x).expect("a decoded typed value encodes");
            from_value::<T>(&again).expect("an encoded typed value decodes");
        }
    }
    check::<u64>(v);
    check::<i8>(v);
    check::<char>(v);
    check::<String>(v);
    check::<(u64, String)>(v);
    check::<Vec<f32>>(v);
    check::<Vec<u8>>(v);
    check::<Vec<i64>>(v);
    check::<[u16; 4]>(v);
    check::<(i128, u128, bool)>(v);
    check::<Option<Vec<Point>>>(v);
    check::<HashMap<String, Vec<i64>>>(v);
    check::<BTreeMap<u32, Shape>>(v);
    check::<Vec<Shape>>(v);
    check::<Shape>(v);
    check::<Unit>(v);
    check::<Wrapper>(v);
    check::<()>(v);
    if let Value::List(items) = v {
        let _ = from_values::<(u64, String)>(items);
        let _ = from_values::<(Point, Vec<Shape>, Option<u8>)>(items);
        let _ = from_values::<()>(items);
    }
}

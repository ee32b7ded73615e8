//! The frame codec.
//!
//! ```text
//! prefix (16 B): magic "RASK" | protocol u16 LE | flags u16 | header_len u32 | nbufs u32
//! buffer lengths: nbufs × u64 LE
//! header: header_len bytes of rkyv archive (read into an aligned buffer)
//! buffers: the raw payloads, back to back
//! ```
//!
//! A **refusal** (flag bit 0) is the one frame whose layout every protocol version keeps:
//! the prefix with [`FLAG_REFUSAL`], no buffers, and a header of UTF-8 text saying why.
//! It is read whatever protocol version its prefix names, so a peer of another version
//! learns why it was refused instead of seeing the connection drop.
//!
//! Every limit is checked before anything is allocated; the header is validated by rkyv's
//! checked access. This module does no I/O: the transport reads the bytes.

use rkyv::util::AlignedVec;

use crate::{ProtoError, PROTOCOL_VERSION};

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"RASK";
/// Size of the fixed frame prefix.
pub const PREFIX_LEN: usize = 16;
/// Prefix flag of a refusal frame (see the module docs).
pub const FLAG_REFUSAL: u16 = 1;

/// Upper bounds on what a peer may send, checked before allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// Bytes in the rkyv header.
    pub max_header: u32,
    /// Raw buffers in one frame.
    pub max_buffers: u32,
    /// Bytes in all buffers of one frame together.
    pub max_payload: u64,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_header: 64 << 20,
            max_buffers: 1 << 20,
            max_payload: 16 << 30,
        }
    }
}

/// The decoded fixed prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// Bytes of header after the buffer lengths (of reason text for a refusal).
    pub header_len: u32,
    /// Raw buffers in the frame; their lengths follow the prefix (8 bytes each).
    pub nbufs: u32,
    /// A refusal frame: the header is the reason, as text.
    pub refusal: bool,
}

/// Encodes the prefix and buffer lengths of a frame.
pub fn encode_prefix(header_len: usize, buf_lens: impl ExactSizeIterator<Item = u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX_LEN + 8 * buf_lens.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(header_len as u32).to_le_bytes());
    out.extend_from_slice(&(buf_lens.len() as u32).to_le_bytes());
    for len in buf_lens {
        out.extend_from_slice(&len.to_le_bytes());
    }
    out
}

/// Encodes a refusal frame (see the module docs): the reason, as text.
pub fn encode_refusal(reason: &str) -> Vec<u8> {
    let mut out = encode_prefix(reason.len(), std::iter::empty());
    out[6..8].copy_from_slice(&FLAG_REFUSAL.to_le_bytes());
    out.extend_from_slice(reason.as_bytes());
    out
}

/// Parses and checks the fixed prefix.
pub fn parse_prefix(b: &[u8; PREFIX_LEN], limits: &FrameLimits) -> Result<Prefix, ProtoError> {
    let magic = [b[0], b[1], b[2], b[3]];
    if magic != MAGIC {
        return Err(ProtoError::BadMagic(magic));
    }
    let version = u16::from_le_bytes([b[4], b[5]]);
    let flags = u16::from_le_bytes([b[6], b[7]]);
    let header_len = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    let nbufs = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
    let refusal = flags & FLAG_REFUSAL != 0;
    if !refusal && version != PROTOCOL_VERSION {
        return Err(ProtoError::Version {
            peer: version,
            ours: PROTOCOL_VERSION,
        });
    }
    if header_len > limits.max_header {
        return Err(ProtoError::TooLarge {
            what: "header",
            got: header_len as u64,
            limit: limits.max_header as u64,
        });
    }
    let max_buffers = if refusal { 0 } else { limits.max_buffers };
    if nbufs > max_buffers {
        return Err(ProtoError::TooLarge {
            what: "buffer count",
            got: nbufs as u64,
            limit: max_buffers as u64,
        });
    }
    Ok(Prefix {
        header_len,
        nbufs,
        refusal,
    })
}

/// Parses the buffer lengths and checks their total.
pub fn parse_buf_lens(b: &[u8], limits: &FrameLimits) -> Result<Vec<u64>, ProtoError> {
    let lens: Vec<u64> = b
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("invariant: chunk of 8")))
        .collect();
    let total = lens.iter().try_fold(0u64, |a, &l| a.checked_add(l));
    match total {
        Some(t) if t <= limits.max_payload => Ok(lens),
        _ => Err(ProtoError::TooLarge {
            what: "payload",
            got: total.unwrap_or(u64::MAX),
            limit: limits.max_payload,
        }),
    }
}

/// Archives a header.
pub fn encode_header<T>(value: &T) -> AlignedVec
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    rkyv::to_bytes::<rkyv::rancor::Error>(value)
        .expect("invariant: archiving into memory cannot fail")
}

/// Validates and deserializes a header. `bytes` must be 16-byte aligned (an `AlignedVec`).
pub fn decode_header<T>(bytes: &[u8]) -> Result<T, ProtoError>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    rkyv::from_bytes::<T, rkyv::rancor::Error>(bytes)
        .map_err(|e| ProtoError::Malformed(e.to_string()))
}

/// Encodes a whole frame into one contiguous buffer (tests and small control frames; the
/// transport writes prefix, header and buffers with one vectored write instead).
pub fn encode_frame(header: &[u8], bufs: &[&[u8]]) -> Vec<u8> {
    let mut out = encode_prefix(header.len(), bufs.iter().map(|b| b.len() as u64));
    out.extend_from_slice(header);
    for b in bufs {
        out.extend_from_slice(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::*;
    use crate::{Datum, TaskId};

    fn sample() -> Vec<ToScheduler> {
        vec![
            ToScheduler::TaskFinished(TaskFinishedMsg {
                task: TaskId(5_000_000_000),
                nbytes: 5 << 30,
                duration_us: 17,
                fetch_us: 250,
                value: Some(crate::packed::Packed::new(&Datum::Str("x".into()))),
                run: 3,
            }),
            ToScheduler::UpdateGraph(UpdateGraphMsg {
                tasks: vec![TaskSpec {
                    key: "inc-1".into(),
                    op: "add".into(),
                    args: Datum::List(vec![Datum::Ref(0), Datum::Int(1), Datum::Buf(0)]),
                    deps: vec!["x".into()],
                    resources: vec![],
                }],
                wanted: vec!["inc-1".into()],
                more: false,
            }),
        ]
    }

    /// Encoded with room made first, a batch is the same bytes, in a buffer that did not
    /// grow past the room asked for: the messages' own estimate was enough.
    #[test]
    fn a_batch_encoded_with_room_is_the_same_and_stays_in_it() {
        let msgs = sample();
        let room: usize = msgs.iter().map(WireMessage::wire_size).sum::<usize>() + 64;
        let bytes = ToScheduler::encode_batch_with_room(&msgs, room);
        assert_eq!(bytes.as_slice(), encode_header(&msgs).as_slice());
        assert_eq!(bytes.capacity(), room);
    }

    #[test]
    fn header_round_trip_keeps_u64() {
        let msgs = sample();
        let bytes = encode_header(&msgs);
        let back: Vec<ToScheduler> = decode_header(&bytes).unwrap();
        assert_eq!(back, msgs);
    }

    #[test]
    fn prefix_round_trip_and_limits() {
        let p = encode_prefix(100, [1u64, 2, 3].into_iter());
        let prefix = parse_prefix(p[..16].try_into().unwrap(), &FrameLimits::default()).unwrap();
        assert_eq!(
            prefix,
            Prefix {
                header_len: 100,
                nbufs: 3,
                refusal: false,
            }
        );
        assert_eq!(
            parse_buf_lens(&p[16..], &FrameLimits::default()).unwrap(),
            vec![1, 2, 3]
        );
        let tight = FrameLimits {
            max_header: 99,
            max_buffers: 2,
            max_payload: 5,
        };
        assert!(matches!(
            parse_prefix(p[..16].try_into().unwrap(), &tight),
            Err(ProtoError::TooLarge { what: "header", .. })
        ));
        assert!(matches!(
            parse_buf_lens(&p[16..], &tight),
            Err(ProtoError::TooLarge {
                what: "payload",
                got: 6,
                ..
            })
        ));
        let mut bad = p.clone();
        bad[0] = b'X';
        assert!(matches!(
            parse_prefix(bad[..16].try_into().unwrap(), &tight),
            Err(ProtoError::BadMagic(_))
        ));
        let mut old = p;
        old[4] = 99;
        assert!(matches!(
            parse_prefix(old[..16].try_into().unwrap(), &tight),
            Err(ProtoError::Version { peer: 99, .. })
        ));
    }

    /// The refusal frame's layout is what every version reads: magic, any version, flag
    /// bit 0, the text's length at bytes 8..12, no buffers, then the text.
    #[test]
    fn a_refusal_is_read_whatever_version_its_prefix_names() {
        let mut f = encode_refusal("go away");
        assert_eq!(&f[..4], b"RASK");
        assert_eq!(&f[6..8], &[1, 0]);
        assert_eq!(&f[8..12], &7u32.to_le_bytes());
        assert_eq!(&f[12..16], &[0, 0, 0, 0]);
        assert_eq!(&f[16..], b"go away");
        f[4] = 200;
        let p = parse_prefix(f[..16].try_into().unwrap(), &FrameLimits::default()).unwrap();
        assert!(p.refusal);
        assert_eq!(p.header_len, 7);
        // A refusal carries no buffers.
        f[12] = 1;
        assert!(parse_prefix(f[..16].try_into().unwrap(), &FrameLimits::default()).is_err());
    }

    #[test]
    fn overflowing_lengths_are_refused() {
        let p = encode_prefix(0, [u64::MAX, 2].into_iter());
        assert!(parse_buf_lens(&p[16..], &FrameLimits::default()).is_err());
    }

    #[test]
    fn a_truncated_header_is_an_error_or_other_messages_never_those_cut() {
        let msgs = sample();
        let bytes = encode_header(&msgs);
        for cut in [0, 1, 7, bytes.len() / 2, bytes.len() - 1] {
            let mut v = AlignedVec::<16>::new();
            v.extend_from_slice(&bytes[..cut]);
            match decode_header::<Vec<ToScheduler>>(&v) {
                // Too short to hold the root: an error.
                r if cut < 8 => assert!(r.is_err(), "cut at {cut}: {r:?}"),
                // A prefix may happen to be an archive of its own (its last bytes an
                // empty list, say), never of the messages cut.
                Ok(back) => assert_ne!(back, msgs, "cut at {cut}"),
                Err(_) => {}
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut v = AlignedVec::<16>::new();
            v.extend_from_slice(&data);
            let _ = decode_header::<Vec<ToScheduler>>(&v);
            let _ = decode_header::<Vec<ToWorker>>(&v);
            let _ = decode_header::<Hello>(&v);
        }
    }
}

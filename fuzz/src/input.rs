//! Reading a fuzz input: whole frames as the wire carries them, and the small step
//! scripts the state-machine targets read (a tag byte per step, then its fields), in a
//! format simple enough that the capture step writes seeds in it by hand.

use bytes::Bytes;
use rask_proto::frame::{self, FrameLimits, PREFIX_LEN};
use rask_proto::ProtoError;
use rkyv::util::AlignedVec;

/// A frame split out of a byte string.
pub struct RawFrame {
    /// The rkyv header, 16-byte aligned as the transport reads it.
    pub header: AlignedVec<16>,
    /// The payload buffers.
    pub bufs: Vec<Bytes>,
    /// Whether it is a refusal frame (the header is then its reason, as text).
    pub refusal: bool,
}

/// Why a byte string is not a whole frame.
#[derive(Debug)]
pub enum SplitError {
    /// The frame's prefix or lengths are refused (as the transport refuses them).
    Proto(ProtoError),
    /// Fewer bytes than the frame announces.
    Truncated,
}

/// Splits the frame at the start of `data` the way the transport reads one: the prefix
/// checked against `limits`, then every announced length checked against the bytes
/// actually present before anything is allocated for it. Returns the frame and the
/// bytes it took.
pub fn split_frame(data: &[u8], limits: &FrameLimits) -> Result<(RawFrame, usize), SplitError> {
    let prefix: &[u8; PREFIX_LEN] = data
        .get(..PREFIX_LEN)
        .and_then(|p| p.try_into().ok())
        .ok_or(SplitError::Truncated)?;
    let p = frame::parse_prefix(prefix, limits).map_err(SplitError::Proto)?;
    let mut at = PREFIX_LEN;
    let lens_len = (p.nbufs as usize)
        .checked_mul(8)
        .ok_or(SplitError::Truncated)?;
    let lens = take(data, &mut at, lens_len)?;
    let lens = frame::parse_buf_lens(lens, limits).map_err(SplitError::Proto)?;
    let header_bytes = take(data, &mut at, p.header_len as usize)?;
    let mut header = AlignedVec::<16>::new();
    header.extend_from_slice(header_bytes);
    let mut bufs = Vec::with_capacity(lens.len());
    for len in lens {
        let len = usize::try_from(len).map_err(|_| SplitError::Truncated)?;
        bufs.push(Bytes::copy_from_slice(take(data, &mut at, len)?));
    }
    Ok((
        RawFrame {
            header,
            bufs,
            refusal: p.refusal,
        },
        at,
    ))
}

fn take<'a>(data: &'a [u8], at: &mut usize, len: usize) -> Result<&'a [u8], SplitError> {
    let end = at.checked_add(len).ok_or(SplitError::Truncated)?;
    let b = data.get(*at..end).ok_or(SplitError::Truncated)?;
    *at = end;
    Ok(b)
}

/// Limits as a welcomed peer's frames are read with (the transport's defaults).
pub fn welcomed_limits() -> FrameLimits {
    FrameLimits::default()
}

/// A cursor over a step script. Reading past the end yields zeros and empty slices, so
/// every input is a valid script.
pub struct Script<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Script<'a> {
    /// A script over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Script { data, at: 0 }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.at >= self.data.len()
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at = self.at.saturating_add(1);
        b
    }

    /// The next 4 bytes, little-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    /// The next 8 bytes, little-endian.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.u8();
        }
        out
    }

    /// A length-prefixed (u32 little-endian) chunk, cut short at the end of the input.
    pub fn chunk(&mut self) -> &'a [u8] {
        let len = self.u32() as usize;
        let start = self.at.min(self.data.len());
        let end = start.saturating_add(len).min(self.data.len());
        self.at = start.saturating_add(len);
        &self.data[start..end]
    }

    /// The rest of the input.
    pub fn rest(&mut self) -> &'a [u8] {
        let start = self.at.min(self.data.len());
        self.at = self.data.len();
        &self.data[start..]
    }
}

/// Writes step scripts (the capture step's seeds, and the tests').
#[derive(Default)]
pub struct ScriptWriter {
    /// The script so far.
    pub out: Vec<u8>,
}

impl ScriptWriter {
    /// A byte.
    pub fn u8(&mut self, b: u8) -> &mut Self {
        self.out.push(b);
        self
    }

    /// 4 bytes, little-endian.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// 8 bytes, little-endian.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A length-prefixed chunk.
    pub fn chunk(&mut self, bytes: &[u8]) -> &mut Self {
        self.u32(bytes.len() as u32);
        self.out.extend_from_slice(bytes);
        self
    }
}

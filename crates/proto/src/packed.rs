//! [`Packed`]: a datum as a task's arguments travel and are kept — a compact byte
//! encoding, inline when short — and [`TaskArgs`], the arguments of a compute message or
//! of a map's task, on the wire as that encoding.
//!
//! The scheduler never reads inside a task's arguments once the graph is checked; it
//! only hands them to the worker that runs the task (and again if the task is computed
//! once more). Kept as a `Datum`, the usual arguments (a few numbers and references) cost
//! a 32-byte enum plus a heap list per task; packed they fit in the task itself. Dask
//! keeps its tasks' run specs serialized for the same reason. On the wire they are the
//! same bytes: a client's map sends each task's arguments packed, the scheduler keeps
//! them as they came (checked once), and sends them on to the worker as they are kept;
//! the worker makes the op's argument `Value` from them. No `Datum` is built on the way.
//!
//! The encoding, in pre-order: one tag byte per node; integers zigzag-encoded as LEB128
//! varints; floats as 8 little-endian bytes; strings and lists prefixed by their length.
//! A [`Packed`] holds only bytes [`Packed::new`] wrote, or bytes a peer sent that
//! [`Packed::from_wire`] checked (its representation is private), so reading it cannot
//! fail. The check refuses what rebuilding a `Datum` from a peer's nodes would refuse
//! ([`crate::flat`]): lists nested more than [`MAX_DEPTH`] levels, a list announcing more
//! items than follow, anything after the datum's end; and what the encoding cannot
//! hold: an unknown tag, a number cut short or past 64 bits, an index or a length past
//! 32 bits, a string running past the end or not UTF-8. Nothing in it recurses.

use std::borrow::Cow;

use bytes::Bytes;

use crate::flat::Node;
use crate::value::MAX_DEPTH;
use crate::{Arg, AsPayload, Datum, ProtoError, Value};

mod wire;

pub use wire::{ArchivedPacked, PackedResolver};

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const INT: u8 = 3;
const FLOAT: u8 = 4;
const STR: u8 = 5;
const BUF: u8 = 6;
const LIST: u8 = 7;
const REF: u8 = 8;

/// The longest encoding kept inline.
const INLINE: usize = 22;

/// The most bytes [`SCRATCH`] keeps room for between encodings.
const SCRATCH_KEPT: usize = 4096;

thread_local! {
    /// Where [`Packed::new`] encodes.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A datum, packed. 24 bytes; encodings up to 22 bytes need no allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed(Repr);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

const _: () = assert!(std::mem::size_of::<Packed>() == 24);

impl Packed {
    /// Packs `d`.
    pub fn new(d: &Datum) -> Self {
        written(|out| {
            encode(d, out);
            Self::of(out)
        })
    }

    /// Packs a value holding no bytes (a small result, sent with the news of its key):
    /// `None` for a value with a byte leaf, or nested deeper than [`MAX_DEPTH`] levels
    /// (which [`Value::to_datum`] refuses too).
    pub fn of_value(v: &Value) -> Option<Self> {
        written(|out| encode_value(v, out, 0).then(|| Self::of(out)))
    }

    /// The packing of a task's arguments as [`Arg::to_datum`] makes each (the list of
    /// them packed as that list of datums would be), with no `Datum` built: keys named
    /// go to `deps` once each, byte payloads to `bufs`.
    pub fn of_args(
        args: &[Arg],
        deps: &mut Vec<String>,
        bufs: &mut Vec<Bytes>,
    ) -> Result<Self, ProtoError> {
        written(|out| {
            out.push(LIST);
            varint(args.len() as u64, out);
            args.iter()
                .try_for_each(|a| encode_arg(a, out, deps, bufs, 0))
                .map(|()| Self::of(out))
        })
    }

    /// A packing of `bytes`, which are one.
    fn of(bytes: &[u8]) -> Self {
        if bytes.len() <= INLINE {
            let mut inline = [0; INLINE];
            inline[..bytes.len()].copy_from_slice(bytes);
            Packed(Repr::Inline {
                len: bytes.len() as u8,
                bytes: inline,
            })
        } else {
            Packed(Repr::Heap(bytes.into()))
        }
    }

    /// The packing a peer sent, checked (see the module's docs for what is refused).
    pub fn from_wire(bytes: &[u8]) -> Result<Self, ProtoError> {
        wire::check(bytes)?;
        Ok(Self::of(bytes))
    }

    /// The datum packed.
    pub fn unpack(&self) -> Datum {
        let mut r = Reader(self.bytes());
        let d = r.datum();
        debug_assert!(r.0.is_empty(), "invariant: one datum per packing");
        d
    }

    /// The value the datum stands for: `bufs[i]` for a buffer `i`, `deps[i]` for a
    /// reference `i` (as [`Datum::to_value`] makes it, with no `Datum` made).
    pub fn to_value<P: AsPayload>(&self, bufs: &[P], deps: &[&Value]) -> Result<Value, ProtoError> {
        Reader(self.bytes()).value(bufs, deps, 0)
    }

    /// The encoding.
    pub fn bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..*len as usize],
            Repr::Heap(b) => b,
        }
    }

    /// What the datum holds, counted.
    pub(crate) fn scan(&self) -> Scan {
        let mut r = Reader(self.bytes());
        let mut scan = Scan::default();
        while !r.0.is_empty() {
            match r.byte() {
                STR => {
                    r.str();
                }
                BUF => scan.max_buf = scan.max_buf.max(r.varint() + 1),
                REF => scan.max_ref = scan.max_ref.max(r.varint() + 1),
                INT | LIST => {
                    r.varint();
                }
                FLOAT => {
                    r.float();
                }
                _ => {}
            }
        }
        scan
    }

    /// One past the largest buffer index (0 with none). Every buffer node begins with
    /// its tag byte: with no such byte at all there is none, found without reading node
    /// by node.
    fn max_buf(&self) -> u64 {
        match self.bytes().contains(&BUF) {
            true => self.scan().max_buf,
            false => 0,
        }
    }
}

/// What [`Packed::scan`] counts.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    /// One past the largest buffer index ([`Datum::max_ref`]'s count, for buffers).
    pub(crate) max_buf: u64,
    /// One past the largest reference ([`Datum::max_ref`]).
    pub(crate) max_ref: u64,
}

/// A task's arguments as a message carries them: a datum, or a datum [`Packed`]. Both
/// are written as the packing, to the same bytes; read back, they are packed.
#[derive(Clone, Debug)]
pub enum TaskArgs {
    /// A datum.
    Datum(Datum),
    /// A datum, packed.
    Packed(Packed),
}

impl TaskArgs {
    /// The datum (unpacked if packed).
    pub fn datum(&self) -> Cow<'_, Datum> {
        match self {
            TaskArgs::Datum(d) => Cow::Borrowed(d),
            TaskArgs::Packed(p) => Cow::Owned(p.unpack()),
        }
    }

    /// The datum, to change (unpacked in place if packed).
    pub fn datum_mut(&mut self) -> &mut Datum {
        if let TaskArgs::Packed(p) = self {
            *self = TaskArgs::Datum(p.unpack());
        }
        match self {
            TaskArgs::Datum(d) => d,
            TaskArgs::Packed(_) => unreachable!("invariant: unpacked just now"),
        }
    }

    /// [`Datum::shift_buffers`] (unpacking if some index is to move).
    pub fn shift_buffers(&mut self, base: u32) {
        match self {
            _ if base == 0 => {}
            TaskArgs::Packed(p) if p.max_buf() == 0 => {}
            _ => self.datum_mut().shift_buffers(base),
        }
    }

    /// [`Datum::localize`]; packed arguments that name no buffer stay packed.
    pub fn localize(&mut self, frame_bufs: &[Bytes]) -> Result<Vec<Bytes>, ProtoError> {
        match self {
            TaskArgs::Packed(p) if p.max_buf() == 0 => Ok(Vec::new()),
            _ => self.datum_mut().localize(frame_bufs),
        }
    }

    /// The value the arguments stand for ([`Datum::to_value`]).
    pub fn to_value<P: AsPayload>(&self, bufs: &[P], deps: &[&Value]) -> Result<Value, ProtoError> {
        match self {
            TaskArgs::Datum(d) => d.to_value_at(bufs, deps, 0),
            TaskArgs::Packed(p) => p.to_value(bufs, deps),
        }
    }

    /// One past the largest reference ([`Datum::max_ref`]).
    pub fn max_ref(&self) -> u64 {
        match self {
            TaskArgs::Datum(d) => d.max_ref(),
            TaskArgs::Packed(p) => p.scan().max_ref,
        }
    }

    /// One past the largest buffer index (0 with none).
    pub fn max_buf(&self) -> u64 {
        match self {
            TaskArgs::Datum(d) => d.max_buf(),
            TaskArgs::Packed(p) => p.max_buf(),
        }
    }

    /// The datum (unpacked if packed).
    pub fn into_datum(self) -> Datum {
        match self {
            TaskArgs::Datum(d) => d,
            TaskArgs::Packed(p) => p.unpack(),
        }
    }

    /// The packing (packed now if a datum).
    pub fn into_packed(self) -> Packed {
        match self {
            TaskArgs::Datum(d) => Packed::new(&d),
            TaskArgs::Packed(p) => p,
        }
    }
}

impl From<Datum> for TaskArgs {
    fn from(d: Datum) -> Self {
        TaskArgs::Datum(d)
    }
}

/// Equal when their datums are, packed or not.
impl PartialEq for TaskArgs {
    fn eq(&self, other: &Self) -> bool {
        self.datum() == other.datum()
    }
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

fn encode(d: &Datum, out: &mut Vec<u8>) {
    match d {
        Datum::Null => out.push(NULL),
        Datum::Bool(false) => out.push(FALSE),
        Datum::Bool(true) => out.push(TRUE),
        Datum::Int(i) => {
            out.push(INT);
            varint(zigzag(*i), out);
        }
        Datum::Float(f) => {
            out.push(FLOAT);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Datum::Str(s) => {
            out.push(STR);
            varint(s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
        }
        Datum::Buf(i) => {
            out.push(BUF);
            varint(u64::from(*i), out);
        }
        Datum::List(items) => {
            out.push(LIST);
            varint(items.len() as u64, out);
            for i in items {
                encode(i, out);
            }
        }
        Datum::Ref(i) => {
            out.push(REF);
            varint(u64::from(*i), out);
        }
    }
}

/// What `write` makes of a packing it writes into a buffer kept per thread, emptied
/// first: most packings are short and kept inline, and a buffer allocated for each would
/// be an allocation per task. The buffer's room is let go if one grew it past
/// [`SCRATCH_KEPT`].
fn written<R>(write: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    SCRATCH.with(|s| {
        let mut out = s.borrow_mut();
        out.clear();
        let made = write(&mut out);
        if out.capacity() > SCRATCH_KEPT {
            *out = Vec::new();
        }
        made
    })
}

/// Writes the packing of `a`'s datum ([`Arg::to_datum`], at `depth`).
fn encode_arg(
    a: &Arg,
    out: &mut Vec<u8>,
    deps: &mut Vec<String>,
    bufs: &mut Vec<Bytes>,
    depth: usize,
) -> Result<(), ProtoError> {
    if depth > MAX_DEPTH {
        return Err(ProtoError::TooDeep(MAX_DEPTH));
    }
    match a {
        Arg::Value(v) => {
            let at = out.len();
            // Most values hold no bytes: packed as they are. One that does goes as its
            // datum, its bytes to the frame's buffers.
            if !encode_value(v, out, 0) {
                out.truncate(at);
                encode(&v.to_datum(bufs)?, out);
            }
        }
        Arg::Key(k) => {
            out.push(REF);
            varint(u64::from(crate::arg::dep_index(deps, k)), out);
        }
        Arg::List(l) => {
            out.push(LIST);
            varint(l.len() as u64, out);
            for a in l {
                encode_arg(a, out, deps, bufs, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// Writes `v`'s packing, as [`encode`] writes its datum's; false (with `out` part
/// written) for a byte leaf, or a value nested past the limit.
fn encode_value(v: &Value, out: &mut Vec<u8>, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    match v {
        Value::Null => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Int(i) => {
            out.push(INT);
            varint(zigzag(*i), out);
        }
        Value::Float(f) => {
            out.push(FLOAT);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Value::Str(s) => {
            out.push(STR);
            varint(s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
        }
        Value::List(items) => {
            out.push(LIST);
            varint(items.len() as u64, out);
            return items.iter().all(|i| encode_value(i, out, depth + 1));
        }
        Value::Bytes(_) | Value::Device(_) => return false,
    }
    true
}

/// Reads what [`encode`] wrote; anything else is a broken invariant.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    #[inline]
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().expect("invariant: packed by encode");
        self.0 = rest;
        b
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    #[inline]
    fn varint(&mut self) -> u64 {
        // Most numbers in arguments (list lengths, indices, small integers) take a byte.
        match self.0.split_first() {
            Some((&b, rest)) if b < 0x80 => {
                self.0 = rest;
                u64::from(b)
            }
            _ => self.long_varint(),
        }
    }

    fn long_varint(&mut self) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = self.byte();
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }

    fn index(&mut self) -> u32 {
        u32::try_from(self.varint()).expect("invariant: packed from a u32")
    }

    fn float(&mut self) -> f64 {
        let b: [u8; 8] = self.take(8).try_into().expect("invariant: 8 bytes");
        f64::from_bits(u64::from_le_bytes(b))
    }

    fn str(&mut self) -> &str {
        let n = self.varint() as usize;
        std::str::from_utf8(self.take(n)).expect("invariant: packed a str")
    }

    /// The next node.
    #[inline]
    fn node(&mut self) -> Node {
        match self.byte() {
            NULL => Node::Null,
            FALSE => Node::Bool(false),
            TRUE => Node::Bool(true),
            INT => Node::Int(unzigzag(self.varint())),
            FLOAT => Node::Float(self.float()),
            STR => Node::Str(self.str().to_owned()),
            BUF => Node::Buf(self.index()),
            LIST => Node::List(
                u32::try_from(self.varint())
                    .expect("invariant: a list on the wire has fewer than 2^32 items"),
            ),
            REF => Node::Ref(self.index()),
            t => unreachable!("invariant: packed tags only, found {t}"),
        }
    }

    /// The next datum: its node, and a list's items after it.
    fn datum(&mut self) -> Datum {
        match self.node() {
            Node::Null => Datum::Null,
            Node::Bool(b) => Datum::Bool(b),
            Node::Int(i) => Datum::Int(i),
            Node::Float(f) => Datum::Float(f),
            Node::Str(s) => Datum::Str(s),
            Node::Buf(i) => Datum::Buf(i),
            Node::Ref(i) => Datum::Ref(i),
            Node::List(n) => {
                // Each item takes a byte at least: `n` is bounded by what is left.
                let mut items = Vec::with_capacity((n as usize).min(self.0.len()));
                for _ in 0..n {
                    items.push(self.datum());
                }
                Datum::List(items)
            }
        }
    }

    /// The next datum's value ([`Packed::to_value`]); refuses lists nested deeper than
    /// [`Datum::to_value`] does.
    fn value<P: AsPayload>(
        &mut self,
        bufs: &[P],
        deps: &[&Value],
        depth: usize,
    ) -> Result<Value, ProtoError> {
        if depth > MAX_DEPTH {
            return Err(ProtoError::TooDeep(MAX_DEPTH));
        }
        Ok(match self.byte() {
            NULL => Value::Null,
            FALSE => Value::Bool(false),
            TRUE => Value::Bool(true),
            INT => Value::Int(unzigzag(self.varint())),
            FLOAT => Value::Float(self.float()),
            STR => Value::Str(self.str().to_owned()),
            BUF => {
                let index = self.index();
                bufs.get(index as usize)
                    .ok_or(ProtoError::MissingBuffer {
                        index,
                        count: bufs.len(),
                    })?
                    .to_leaf()
            }
            REF => {
                let index = self.index();
                (*deps
                    .get(index as usize)
                    .ok_or(ProtoError::MissingDependency {
                        index,
                        count: deps.len(),
                    })?)
                .clone()
            }
            LIST => {
                let n = self.varint() as usize;
                // Each item takes a byte at least: `n` is bounded by what is left.
                let mut items = Vec::with_capacity(n.min(self.0.len()));
                for _ in 0..n {
                    items.push(self.value(bufs, deps, depth + 1)?);
                }
                Value::List(items)
            }
            t => unreachable!("invariant: packed tags only, found {t}"),
        })
    }
}

#[cfg(test)]
mod tests;

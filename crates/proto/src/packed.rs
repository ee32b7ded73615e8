//! [`Packed`]: a datum as a scheduler keeps a task's arguments until it sends them — a
//! compact byte encoding, inline when short — and [`TaskArgs`], a compute message's
//! arguments, which a scheduler writes to the wire from that encoding.
//!
//! The scheduler never reads inside a task's arguments once the graph is checked; it
//! only hands them to the worker that runs the task (and again if the task is computed
//! once more). Kept as a `Datum`, the usual arguments (a few numbers and references) cost
//! a 32-byte enum plus a heap list per task; packed they fit in the task itself. Dask
//! keeps its tasks' run specs serialized for the same reason. The encoding lists the
//! datum's nodes in the order the wire does ([`crate::flat`]), so a compute message's
//! arguments are written from it node by node, with no `Datum` built in between.
//!
//! The encoding, in pre-order: one tag byte per node; integers zigzag-encoded as LEB128
//! varints; floats as 8 little-endian bytes; strings and lists prefixed by their length.
//! It is never read from a peer: every `Datum` packs, and a [`Packed`] holds only bytes
//! [`Packed::new`] wrote (its representation is private), so reading it cannot fail.

use std::borrow::Cow;

use crate::flat::Node;
use crate::Datum;

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
        // Encoded into a buffer kept per thread: most encodings are short and kept
        // inline, and a buffer allocated for each would be an allocation per task.
        SCRATCH.with(|s| {
            let mut out = s.borrow_mut();
            out.clear();
            encode(d, &mut out);
            let packed = if out.len() <= INLINE {
                let mut bytes = [0; INLINE];
                bytes[..out.len()].copy_from_slice(&out);
                Packed(Repr::Inline {
                    len: out.len() as u8,
                    bytes,
                })
            } else {
                Packed(Repr::Heap(out.as_slice().into()))
            };
            if out.capacity() > SCRATCH_KEPT {
                *out = Vec::new();
            }
            packed
        })
    }

    /// The datum packed.
    pub fn unpack(&self) -> Datum {
        let mut r = Reader(self.bytes());
        let d = r.datum();
        debug_assert!(r.0.is_empty(), "invariant: one datum per packing");
        d
    }

    /// The encoding.
    pub fn bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..*len as usize],
            Repr::Heap(b) => b,
        }
    }

    /// Whether the datum holds a string (a node with bytes out of line on the wire).
    pub(crate) fn has_str(&self) -> bool {
        self.scan().strings > 0
    }

    /// How many nodes and strings the datum has, and its strings' bytes.
    pub(crate) fn scan(&self) -> Scan {
        let mut r = Reader(self.bytes());
        let mut scan = Scan::default();
        while !r.0.is_empty() {
            scan.nodes += 1;
            match r.byte() {
                STR => {
                    scan.strings += 1;
                    scan.text += r.str().len();
                }
                INT | BUF | LIST | REF => {
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

    /// The datum's nodes, in the order the wire lists them.
    pub(crate) fn nodes(&self) -> Nodes<'_> {
        Nodes {
            r: Reader(self.bytes()),
            count: 0,
        }
    }
}

/// What [`Packed::scan`] counts.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    pub(crate) nodes: usize,
    pub(crate) strings: usize,
    /// The strings' bytes.
    pub(crate) text: usize,
}

/// A packed datum's nodes ([`Packed::nodes`]).
pub(crate) struct Nodes<'a> {
    r: Reader<'a>,
    /// Nodes given so far.
    pub(crate) count: usize,
}

impl Iterator for Nodes<'_> {
    type Item = Node;

    fn next(&mut self) -> Option<Node> {
        if self.r.0.is_empty() {
            return None;
        }
        let node = self.r.node();
        self.count += 1;
        Some(node)
    }
}

/// A compute message's arguments ([`crate::msg::ComputeMsg::args`]): a datum, or a
/// datum [`Packed`] as a scheduler keeps it. Both are written as the datum's nodes, to
/// the same bytes; read back, they are a datum.
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
        if base != 0 {
            self.datum_mut().shift_buffers(base);
        }
    }

    /// The datum (unpacked if packed).
    pub fn into_datum(self) -> Datum {
        match self {
            TaskArgs::Datum(d) => d,
            TaskArgs::Packed(p) => p.unpack(),
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

/// Reads what [`encode`] wrote; anything else is a broken invariant.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
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

    fn varint(&mut self) -> u64 {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn datum() -> impl Strategy<Value = Datum> {
        let leaf = prop_oneof![
            Just(Datum::Null),
            any::<bool>().prop_map(Datum::Bool),
            any::<i64>().prop_map(Datum::Int),
            any::<f64>().prop_map(Datum::Float),
            ".{0,30}".prop_map(Datum::Str),
            any::<u32>().prop_map(Datum::Buf),
            any::<u32>().prop_map(Datum::Ref),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop::collection::vec(inner, 0..8).prop_map(Datum::List)
        })
    }

    proptest! {
        /// Packed or not, arguments are written to the same bytes, read back as the
        /// datum; whether a string is held is told right.
        #[test]
        fn packed_arguments_are_written_as_their_datum_is(d in datum()) {
            let p = Packed::new(&d);
            let packed = rkyv::to_bytes::<rkyv::rancor::Error>(&TaskArgs::Packed(p.clone()))
                .unwrap();
            let plain = rkyv::to_bytes::<rkyv::rancor::Error>(&TaskArgs::Datum(d.clone()))
                .unwrap();
            prop_assert_eq!(packed.as_slice(), plain.as_slice());
            let direct = rkyv::to_bytes::<rkyv::rancor::Error>(&d).unwrap();
            prop_assert_eq!(packed.as_slice(), direct.as_slice());
            let back = crate::frame::decode_header::<TaskArgs>(&packed).unwrap();
            prop_assert!(matches!(back, TaskArgs::Datum(_)));
            prop_assert_eq!(format!("{:?}", back.into_datum()), format!("{d:?}"));
            prop_assert_eq!(p.has_str(), format!("{d:?}").contains("Str("));
            prop_assert_eq!(p.nodes().count(), count_nodes(&d));
        }

        #[test]
        fn every_datum_comes_back_as_it_was_packed(d in datum()) {
            let p = Packed::new(&d);
            // Floats by their bits: a NaN is not equal to itself.
            prop_assert_eq!(format!("{:?}", p.unpack()), format!("{d:?}"));
            prop_assert_eq!(matches!(p.0, Repr::Inline { .. }), p.bytes().len() <= INLINE);
        }
    }

    fn count_nodes(d: &Datum) -> usize {
        match d {
            Datum::List(l) => 1 + l.iter().map(count_nodes).sum::<usize>(),
            _ => 1,
        }
    }

    /// Packed arguments give their datum to read and to change, shift their buffers'
    /// indices as the datum's would be, and equal the datum they pack.
    #[test]
    fn packed_arguments_read_change_and_compare_as_their_datum() {
        let d = Datum::List(vec![Datum::Buf(1), Datum::Int(-3), Datum::Str("s".into())]);
        let mut a = TaskArgs::Packed(Packed::new(&d));
        assert_eq!(a, TaskArgs::Datum(d.clone()));
        assert_eq!(*a.datum(), d);
        a.shift_buffers(0);
        assert!(
            matches!(a, TaskArgs::Packed(_)),
            "nothing to move: kept packed"
        );
        a.shift_buffers(2);
        let moved = Datum::List(vec![Datum::Buf(3), Datum::Int(-3), Datum::Str("s".into())]);
        assert_eq!(a.clone().into_datum(), moved);
        *a.datum_mut() = Datum::Null;
        assert_eq!(a, TaskArgs::from(Datum::Null));
        assert_ne!(a, TaskArgs::Packed(Packed::new(&d)));
    }

    #[test]
    fn the_usual_arguments_are_kept_inline_in_few_bytes() {
        let d = Datum::List(vec![Datum::Int(9_999_999), Datum::Ref(1)]);
        let p = Packed::new(&d);
        assert_eq!(p.bytes(), &[LIST, 2, INT, 0xfe, 0xd9, 0xc4, 0x09, REF, 1]);
        assert!(matches!(p.0, Repr::Inline { len: 9, .. }));
        assert_eq!(p.unpack(), d);
    }

    #[test]
    fn extremes_and_long_encodings_round_trip() {
        for i in [0, 1, -1, 63, -64, 64, i64::MAX, i64::MIN] {
            assert_eq!(Packed::new(&Datum::Int(i)).unpack(), Datum::Int(i));
        }
        assert_eq!(Packed::new(&Datum::Int(-1)).bytes(), &[INT, 1]);
        assert_eq!(Packed::new(&Datum::Int(i64::MIN)).bytes().len(), 11);
        for i in [0, 127, 128, u32::MAX] {
            assert_eq!(Packed::new(&Datum::Buf(i)).unpack(), Datum::Buf(i));
            assert_eq!(Packed::new(&Datum::Ref(i)).unpack(), Datum::Ref(i));
        }
        let long = Datum::Str("x".repeat(22));
        let p = Packed::new(&long);
        assert!(matches!(p.0, Repr::Heap(_)));
        assert_eq!(p.bytes().len(), 24);
        assert_eq!(p.unpack(), long);
        let exact = Datum::Str("y".repeat(20));
        assert!(matches!(
            Packed::new(&exact).0,
            Repr::Inline { len: 22, .. }
        ));
        assert_eq!(Packed::new(&exact).unpack(), exact);
        let f = Datum::Float(-0.0);
        assert_eq!(Packed::new(&f).bytes(), &[FLOAT, 0, 0, 0, 0, 0, 0, 0, 0x80]);
        assert_eq!(
            Packed::new(&Datum::List(vec![
                Datum::Bool(true),
                Datum::Bool(false),
                Datum::Null
            ]))
            .bytes(),
            &[LIST, 3, TRUE, FALSE, NULL]
        );
    }
}

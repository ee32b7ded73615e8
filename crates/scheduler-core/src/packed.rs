//! [`Packed`]: a task's arguments as the scheduler keeps them until it sends them — a
//! compact byte encoding of the [`Datum`], inline when short.
//!
//! The scheduler never reads inside a task's arguments once the graph is checked; it
//! only hands them to the worker that runs the task (and again if the task is computed
//! once more). Kept as a `Datum`, the usual arguments (a few numbers and references) cost
//! a 32-byte enum plus a heap list per task; packed they fit in the task itself. Dask
//! keeps its tasks' run specs serialized for the same reason.
//!
//! The encoding, in pre-order: one tag byte per node; integers zigzag-encoded as LEB128
//! varints; floats as 8 little-endian bytes; strings and lists prefixed by their length.
//! This module must not fail on a datum: every `Datum` packs, and [`Packed::unpack`] reads
//! only bytes [`Packed::new`] wrote.

use rask_proto::Datum;

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
pub(crate) enum Packed {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

const _: () = assert!(std::mem::size_of::<Packed>() == 24);

impl Packed {
    /// Packs `d`.
    pub(crate) fn new(d: &Datum) -> Self {
        // Encoded into a buffer kept per thread: most encodings are short and kept
        // inline, and a buffer allocated for each would be an allocation per task.
        SCRATCH.with(|s| {
            let mut out = s.borrow_mut();
            out.clear();
            encode(d, &mut out);
            let packed = if out.len() <= INLINE {
                let mut bytes = [0; INLINE];
                bytes[..out.len()].copy_from_slice(&out);
                Packed::Inline {
                    len: out.len() as u8,
                    bytes,
                }
            } else {
                Packed::Heap(out.as_slice().into())
            };
            if out.capacity() > SCRATCH_KEPT {
                *out = Vec::new();
            }
            packed
        })
    }

    /// The datum packed.
    pub(crate) fn unpack(&self) -> Datum {
        let mut r = Reader(self.bytes());
        let d = r.datum();
        debug_assert!(r.0.is_empty(), "invariant: one datum per packing");
        d
    }

    /// The encoding.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Packed::Inline { len, bytes } => &bytes[..*len as usize],
            Packed::Heap(b) => b,
        }
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

    fn datum(&mut self) -> Datum {
        match self.byte() {
            NULL => Datum::Null,
            FALSE => Datum::Bool(false),
            TRUE => Datum::Bool(true),
            INT => Datum::Int(unzigzag(self.varint())),
            FLOAT => {
                let b: [u8; 8] = self.take(8).try_into().expect("invariant: 8 bytes");
                Datum::Float(f64::from_bits(u64::from_le_bytes(b)))
            }
            STR => {
                let n = self.varint() as usize;
                let s = std::str::from_utf8(self.take(n)).expect("invariant: packed a str");
                Datum::Str(s.to_owned())
            }
            BUF => Datum::Buf(self.index()),
            LIST => {
                let n = self.varint() as usize;
                // Each item takes a byte at least: `n` is bounded by what is left.
                let mut items = Vec::with_capacity(n.min(self.0.len()));
                for _ in 0..n {
                    items.push(self.datum());
                }
                Datum::List(items)
            }
            REF => Datum::Ref(self.index()),
            t => unreachable!("invariant: packed tags only, found {t}"),
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
        #[test]
        fn every_datum_comes_back_as_it_was_packed(d in datum()) {
            let p = Packed::new(&d);
            // Floats by their bits: a NaN is not equal to itself.
            prop_assert_eq!(format!("{:?}", p.unpack()), format!("{d:?}"));
            prop_assert_eq!(matches!(p, Packed::Inline { .. }), p.bytes().len() <= INLINE);
        }
    }

    #[test]
    fn the_usual_arguments_are_kept_inline_in_few_bytes() {
        let d = Datum::List(vec![Datum::Int(9_999_999), Datum::Ref(1)]);
        let p = Packed::new(&d);
        assert_eq!(p.bytes(), &[LIST, 2, INT, 0xfe, 0xd9, 0xc4, 0x09, REF, 1]);
        assert!(matches!(p, Packed::Inline { len: 9, .. }));
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
        assert!(matches!(p, Packed::Heap(_)));
        assert_eq!(p.bytes().len(), 24);
        assert_eq!(p.unpack(), long);
        let exact = Datum::Str("y".repeat(20));
        assert!(matches!(
            Packed::new(&exact),
            Packed::Inline { len: 22, .. }
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

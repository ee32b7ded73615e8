//! The wire form of a [`Packed`] datum and of [`TaskArgs`]: the packing's bytes, checked
//! when read.

use rkyv::rancor::{Fallible, Source};
use rkyv::ser::{Allocator, Writer};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Deserialize, Place, Portable, Serialize};

use super::{Packed, TaskArgs, BUF, FALSE, FLOAT, INT, LIST, NULL, REF, STR, TRUE};
use crate::value::MAX_DEPTH;
use crate::ProtoError;

/// The archived form of a [`Packed`] datum (and of [`TaskArgs`]): the packing's bytes.
#[derive(Portable, rkyv::bytecheck::CheckBytes)]
#[bytecheck(crate = rkyv::bytecheck)]
#[rkyv(crate = rkyv)]
#[repr(transparent)]
pub struct ArchivedPacked {
    bytes: ArchivedVec<u8>,
}

impl ArchivedPacked {
    /// The packing's bytes, as sent (not yet checked).
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }
}

/// Where a packing was written.
pub struct PackedResolver {
    bytes: VecResolver,
    len: usize,
}

fn resolve(resolver: PackedResolver, out: Place<ArchivedPacked>) {
    rkyv::munge::munge!(let ArchivedPacked { bytes } = out);
    ArchivedVec::<u8>::resolve_from_len(resolver.len, resolver.bytes, bytes);
}

fn write<S>(bytes: &[u8], serializer: &mut S) -> Result<PackedResolver, S::Error>
where
    S: Fallible + Allocator + Writer + ?Sized,
{
    Ok(PackedResolver {
        bytes: ArchivedVec::<u8>::serialize_from_slice(bytes, serializer)?,
        len: bytes.len(),
    })
}

impl Archive for Packed {
    type Archived = ArchivedPacked;
    type Resolver = PackedResolver;

    fn resolve(&self, resolver: PackedResolver, out: Place<ArchivedPacked>) {
        resolve(resolver, out);
    }
}

impl<S> Serialize<S> for Packed
where
    S: Fallible + Allocator + Writer + ?Sized,
{
    fn serialize(&self, serializer: &mut S) -> Result<PackedResolver, S::Error> {
        write(self.bytes(), serializer)
    }
}

impl<D> Deserialize<Packed, D> for ArchivedPacked
where
    D: Fallible + ?Sized,
    D::Error: Source,
{
    /// As sent, once checked.
    fn deserialize(&self, _: &mut D) -> Result<Packed, D::Error> {
        Packed::from_wire(self.bytes()).map_err(D::Error::new)
    }
}

/// Written as the packing, whether packed or not (the same bytes either way).
impl Archive for TaskArgs {
    type Archived = ArchivedPacked;
    type Resolver = PackedResolver;

    fn resolve(&self, resolver: PackedResolver, out: Place<ArchivedPacked>) {
        resolve(resolver, out);
    }
}

impl<S> Serialize<S> for TaskArgs
where
    S: Fallible + Allocator + Writer + ?Sized,
{
    fn serialize(&self, serializer: &mut S) -> Result<PackedResolver, S::Error> {
        match self {
            TaskArgs::Packed(p) => write(p.bytes(), serializer),
            TaskArgs::Datum(d) => write(Packed::new(d).bytes(), serializer),
        }
    }
}

impl<D> Deserialize<TaskArgs, D> for ArchivedPacked
where
    D: Fallible + ?Sized,
    D::Error: Source,
{
    /// Packed as sent, once checked.
    fn deserialize(&self, _: &mut D) -> Result<TaskArgs, D::Error> {
        Packed::from_wire(self.bytes())
            .map(TaskArgs::Packed)
            .map_err(D::Error::new)
    }
}

/// Checks a packing a peer sent (see the module's docs); nothing here recurses.
pub(super) fn check(bytes: &[u8]) -> Result<(), ProtoError> {
    check_bytes(bytes).map_err(ProtoError::from)
}

/// What is wrong with a packing: small, so that passing it back costs little until it
/// is said ([`ProtoError`]).
#[derive(Debug)]
enum Bad {
    /// The datum's shape or a node, as said.
    Malformed(&'static str),
    /// A string of `n` bytes with `left` left.
    StrPast { n: u64, left: usize },
    /// An index past 32 bits.
    IndexPast(u64),
    /// A list of more items than 32 bits count.
    ListPast(u64),
    /// An unknown tag.
    Tag(u8),
    /// Lists nested past [`MAX_DEPTH`].
    TooDeep,
}

impl From<Bad> for ProtoError {
    fn from(bad: Bad) -> Self {
        let what = match bad {
            Bad::TooDeep => return ProtoError::TooDeep(MAX_DEPTH),
            Bad::Malformed(what) => what.to_string(),
            Bad::StrPast { n, left } => format!("a string of {n} bytes where {left} are left"),
            Bad::IndexPast(i) => format!("index {i} past 32 bits"),
            Bad::ListPast(n) => format!("a list of {n} items, past 32 bits"),
            Bad::Tag(t) => format!("unknown tag {t}"),
        };
        ProtoError::Malformed(format!("packed datum: {what}"))
    }
}

fn check_bytes(bytes: &[u8]) -> Result<(), Bad> {
    let mut r = bytes;
    let Some((&tag, rest)) = r.split_first() else {
        return Err(Bad::Malformed("no nodes"));
    };
    r = rest;
    match node(tag, &mut r, 0)? {
        // A leaf alone, or an empty list (most results): no list to count items in.
        0 => end(r),
        n => lists(n, r),
    }
}

/// The rest of a packing that began with a list of `first` items, after its head.
fn lists(first: u32, mut r: &[u8]) -> Result<(), Bad> {
    // How many items each open list still awaits, the innermost last.
    let mut open = [0u32; MAX_DEPTH];
    open[0] = first;
    let mut depth = 1;
    loop {
        let Some((&tag, rest)) = r.split_first() else {
            return Err(Bad::Malformed("a list announces more items than follow"));
        };
        r = rest;
        let items = node(tag, &mut r, depth)?;
        if items > 0 {
            open[depth] = items;
            depth += 1;
            continue;
        }
        // A whole datum was read: count it in its list, closing every list it fills.
        loop {
            if depth == 0 {
                return end(r);
            }
            open[depth - 1] -= 1;
            if open[depth - 1] > 0 {
                break;
            }
            depth -= 1;
        }
    }
}

/// Checks the node of tag `tag` (read off already) at `depth` lists deep, reading its
/// contents off `r`: the items that follow it (a list's), 0 for any other node.
#[inline]
fn node(tag: u8, r: &mut &[u8], depth: usize) -> Result<u32, Bad> {
    match tag {
        NULL | FALSE | TRUE => {}
        INT => {
            wire_varint(r)?;
        }
        FLOAT => {
            *r = r.get(8..).ok_or(Bad::Malformed("a float cut short"))?;
        }
        STR => {
            let n = wire_varint(r)?;
            if n > r.len() as u64 {
                return Err(Bad::StrPast { n, left: r.len() });
            }
            let (text, rest) = r.split_at(n as usize);
            std::str::from_utf8(text).map_err(|_| Bad::Malformed("a string not UTF-8"))?;
            *r = rest;
        }
        BUF | REF => {
            let i = wire_varint(r)?;
            if i > u64::from(u32::MAX) {
                return Err(Bad::IndexPast(i));
            }
        }
        LIST => {
            let n = wire_varint(r)?;
            let n = u32::try_from(n).map_err(|_| Bad::ListPast(n))?;
            if n > 0 {
                // Its items would lie one level deeper than this list.
                if depth >= MAX_DEPTH {
                    return Err(Bad::TooDeep);
                }
                // Each item takes a byte at least.
                if n as usize > r.len() {
                    return Err(Bad::Malformed("a list announces more items than follow"));
                }
            }
            return Ok(n);
        }
        t => return Err(Bad::Tag(t)),
    }
    Ok(0)
}

/// The end of a packing: nothing may follow its datum.
fn end(r: &[u8]) -> Result<(), Bad> {
    match r.is_empty() {
        true => Ok(()),
        false => Err(Bad::Malformed("bytes after the end of the datum")),
    }
}

/// A varint a peer sent: at most ten bytes, within 64 bits.
#[inline]
fn wire_varint(r: &mut &[u8]) -> Result<u64, Bad> {
    // Most numbers (list lengths, indices, small integers) take a byte.
    if let Some((&b, rest)) = r.split_first() {
        if b < 0x80 {
            *r = rest;
            return Ok(u64::from(b));
        }
    }
    let mut v = 0u64;
    for i in 0..10 {
        let Some((&b, rest)) = r.split_first() else {
            return Err(Bad::Malformed("a number cut short"));
        };
        *r = rest;
        if i == 9 && b > 1 {
            return Err(Bad::Malformed("a number past 64 bits"));
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    unreachable!("invariant: the tenth byte ends the number")
}

//! The wire form of [`TaskArgs`]: the packing's bytes, checked when read.

use rkyv::rancor::{Fallible, Source};
use rkyv::ser::{Allocator, Writer};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Deserialize, Place, Portable, Serialize};

use super::{Packed, TaskArgs, BUF, FALSE, FLOAT, INT, LIST, NULL, REF, STR, TRUE};
use crate::value::MAX_DEPTH;
use crate::ProtoError;

/// The archived form of [`TaskArgs`]: the packing's bytes.
#[derive(Portable, rkyv::bytecheck::CheckBytes)]
#[bytecheck(crate = rkyv::bytecheck)]
#[rkyv(crate = rkyv)]
#[repr(transparent)]
pub struct ArchivedTaskArgs {
    bytes: ArchivedVec<u8>,
}

impl ArchivedTaskArgs {
    /// The packing's bytes, as sent (not yet checked).
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }
}

/// Where arguments' packing was written.
pub struct TaskArgsResolver {
    bytes: VecResolver,
    len: usize,
}

impl Archive for TaskArgs {
    type Archived = ArchivedTaskArgs;
    type Resolver = TaskArgsResolver;

    fn resolve(&self, resolver: TaskArgsResolver, out: Place<ArchivedTaskArgs>) {
        rkyv::munge::munge!(let ArchivedTaskArgs { bytes } = out);
        ArchivedVec::<u8>::resolve_from_len(resolver.len, resolver.bytes, bytes);
    }
}

impl<S> Serialize<S> for TaskArgs
where
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize(&self, serializer: &mut S) -> Result<TaskArgsResolver, S::Error> {
        let write = |bytes: &[u8], serializer: &mut S| {
            Ok(TaskArgsResolver {
                bytes: ArchivedVec::<u8>::serialize_from_slice(bytes, serializer)?,
                len: bytes.len(),
            })
        };
        match self {
            TaskArgs::Packed(p) => write(p.bytes(), serializer),
            TaskArgs::Datum(d) => write(Packed::new(d).bytes(), serializer),
        }
    }
}

impl<D> Deserialize<TaskArgs, D> for ArchivedTaskArgs
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
    let malformed = |what: &str| ProtoError::Malformed(format!("arguments: {what}"));
    // How many items each open list still awaits, the innermost last.
    let mut open = [0u32; MAX_DEPTH];
    let mut depth = 0;
    let mut r = bytes;
    loop {
        let Some((&tag, rest)) = r.split_first() else {
            return Err(match depth {
                0 => malformed("no nodes"),
                _ => malformed("a list announces more items than follow"),
            });
        };
        r = rest;
        match tag {
            NULL | FALSE | TRUE => {}
            INT => {
                wire_varint(&mut r)?;
            }
            FLOAT => {
                r = r.get(8..).ok_or_else(|| malformed("a float cut short"))?;
            }
            STR => {
                let n = wire_varint(&mut r)?;
                if n > r.len() as u64 {
                    return Err(malformed(&format!(
                        "a string of {n} bytes where {} are left",
                        r.len()
                    )));
                }
                let (text, rest) = r.split_at(n as usize);
                std::str::from_utf8(text).map_err(|_| malformed("a string not UTF-8"))?;
                r = rest;
            }
            BUF | REF => {
                let i = wire_varint(&mut r)?;
                if i > u64::from(u32::MAX) {
                    return Err(malformed(&format!("index {i} past 32 bits")));
                }
            }
            LIST => {
                let n = wire_varint(&mut r)?;
                let n = u32::try_from(n)
                    .map_err(|_| malformed(&format!("a list of {n} items, past 32 bits")))?;
                if n > 0 {
                    // Its items would lie one level deeper than this list.
                    if depth >= MAX_DEPTH {
                        return Err(ProtoError::TooDeep(MAX_DEPTH));
                    }
                    // Each item takes a byte at least.
                    if n as usize > r.len() {
                        return Err(malformed("a list announces more items than follow"));
                    }
                    open[depth] = n;
                    depth += 1;
                    continue;
                }
            }
            t => return Err(malformed(&format!("unknown tag {t}"))),
        }
        // A whole datum was read: count it in its list, closing every list it fills.
        loop {
            if depth == 0 {
                if !r.is_empty() {
                    return Err(malformed("bytes after the end of the datum"));
                }
                return Ok(());
            }
            open[depth - 1] -= 1;
            if open[depth - 1] > 0 {
                break;
            }
            depth -= 1;
        }
    }
}

/// A varint a peer sent: at most ten bytes, within 64 bits.
fn wire_varint(r: &mut &[u8]) -> Result<u64, ProtoError> {
    let malformed = |what: &str| ProtoError::Malformed(format!("arguments: {what}"));
    let mut v = 0u64;
    for i in 0..10 {
        let Some((&b, rest)) = r.split_first() else {
            return Err(malformed("a number cut short"));
        };
        *r = rest;
        if i == 9 && b > 1 {
            return Err(malformed("a number past 64 bits"));
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    unreachable!("invariant: the tenth byte ends the number")
}

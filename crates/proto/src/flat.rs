//! The wire form of a [`Datum`]: its nodes in pre-order, each list node followed by its
//! items.
//!
//! Why not rkyv's derived archive of the tree: validating a recursive archive recurses, one
//! stack frame per level, before any depth check can run — a peer could send a value
//! nested a few hundred thousand levels deep (a few megabytes, well inside the frame
//! limits) and overflow the receiver's stack. A flat list of nodes is validated by a loop
//! over a slice, and the tree is rebuilt by a loop with an explicit stack that refuses
//! more than [`MAX_DEPTH`] levels. Nothing in this module recurses on what a peer sent.
//!
//! Every message type of the protocol is non-recursive apart from `Datum`, so a frame of
//! any type validates in bounded stack.

use rkyv::rancor::{Fallible, Source};
use rkyv::ser::{Allocator, Writer};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Deserialize, Place, Portable, Serialize};

use crate::value::MAX_DEPTH;
use crate::{Datum, ProtoError};

/// One node of a flattened [`Datum`]. Wire layout; not for use outside the codec.
#[doc(hidden)]
#[derive(Archive, Serialize, Debug)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Buf(u32),
    /// A list of this many items; they follow, each with its own items.
    List(u32),
    Ref(u32),
}

/// The archived form of a [`Datum`]: its nodes in pre-order.
#[derive(Portable, rkyv::bytecheck::CheckBytes)]
#[bytecheck(crate = rkyv::bytecheck)]
#[rkyv(crate = rkyv)]
#[repr(transparent)]
pub struct ArchivedDatum {
    nodes: ArchivedVec<ArchivedNode>,
}

/// Where a datum's nodes were written.
pub struct DatumResolver {
    nodes: VecResolver,
    len: usize,
}

impl Archive for Datum {
    type Archived = ArchivedDatum;
    type Resolver = DatumResolver;

    fn resolve(&self, resolver: DatumResolver, out: Place<ArchivedDatum>) {
        resolve_nodes(resolver, out);
    }
}

/// Where a datum's nodes were written, resolved.
fn resolve_nodes(resolver: DatumResolver, out: Place<ArchivedDatum>) {
    rkyv::munge::munge!(let ArchivedDatum { nodes } = out);
    ArchivedVec::<ArchivedNode>::resolve_from_len(resolver.len, resolver.nodes, nodes);
}

impl<S> Serialize<S> for Datum
where
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize(&self, serializer: &mut S) -> Result<DatumResolver, S::Error> {
        // The most frequent shapes, a leaf or one list of leaves, with no string: their
        // nodes hold nothing out of line, so each is written where it lies as it is made,
        // with no list of nodes, nor of their resolvers, kept meanwhile.
        if let Some(len) = self.shallow_len() {
            let mut nodes = ShallowNodes { datum: self, at: 0 };
            let written = ArchivedVec::<ArchivedNode>::serialize_from_unknown_length_iter(
                &mut nodes, serializer,
            );
            return Ok(DatumResolver {
                nodes: written?,
                len,
            });
        }
        // The nodes go through a list kept per thread: most messages carry a datum (a
        // task's arguments, its result), and a list allocated for each would cost as
        // much as the rest of its serialization.
        let mut nodes = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        self.push_nodes(&mut nodes);
        let written = ArchivedVec::serialize_from_slice(&nodes, serializer);
        let len = nodes.len();
        nodes.clear();
        if nodes.capacity() <= SCRATCH_KEPT {
            SCRATCH.with(|s| *s.borrow_mut() = nodes);
        }
        Ok(DatumResolver {
            nodes: written?,
            len,
        })
    }
}

impl<D> Deserialize<Datum, D> for ArchivedDatum
where
    D: Fallible + ?Sized,
    D::Error: Source,
{
    fn deserialize(&self, _: &mut D) -> Result<Datum, D::Error> {
        from_nodes(self.nodes.as_slice()).map_err(D::Error::new)
    }
}

thread_local! {
    /// The nodes of the datum being serialized on this thread (see `serialize`).
    static SCRATCH: std::cell::RefCell<Vec<Node>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The most nodes [`SCRATCH`] keeps room for between datums.
const SCRATCH_KEPT: usize = 1024;

/// The nodes of a datum of [`Datum::shallow_len`]'s shapes, in pre-order.
struct ShallowNodes<'a> {
    datum: &'a Datum,
    /// The next node's place: 0 the datum itself, `i` a list's item `i - 1`.
    at: usize,
}

impl Iterator for ShallowNodes<'_> {
    type Item = Node;

    fn next(&mut self) -> Option<Node> {
        let node = match (self.datum, self.at) {
            (Datum::List(l), 0) => Node::List(
                u32::try_from(l.len())
                    .expect("invariant: a list on the wire has fewer than 2^32 items"),
            ),
            (Datum::List(l), i) => leaf_node(l.get(i - 1)?),
            (d, 0) => leaf_node(d),
            _ => return None,
        };
        self.at += 1;
        Some(node)
    }
}

/// The node of a datum neither a list nor a string (nothing out of line).
fn leaf_node(d: &Datum) -> Node {
    match d {
        Datum::Null => Node::Null,
        Datum::Bool(b) => Node::Bool(*b),
        Datum::Int(i) => Node::Int(*i),
        Datum::Float(f) => Node::Float(*f),
        Datum::Buf(i) => Node::Buf(*i),
        Datum::Ref(i) => Node::Ref(*i),
        Datum::Str(_) | Datum::List(_) => unreachable!("invariant: shallow datums only"),
    }
}

impl Datum {
    /// How many nodes the datum has if it is a leaf other than a string, or a list of
    /// such leaves; `None` otherwise.
    fn shallow_len(&self) -> Option<usize> {
        let deep = |d: &Datum| matches!(d, Datum::Str(_) | Datum::List(_));
        match self {
            Datum::Str(_) => None,
            Datum::List(l) if l.iter().any(deep) => None,
            Datum::List(l) => Some(1 + l.len()),
            _ => Some(1),
        }
    }

    /// Appends the datum's nodes in pre-order. Recursive: a datum being sent was made
    /// here (decoded within [`MAX_DEPTH`], or built by [`crate::Value::to_datum`], which
    /// refuses deeper values), never read from a peer.
    fn push_nodes(&self, out: &mut Vec<Node>) {
        out.push(match self {
            Datum::Null => Node::Null,
            Datum::Bool(b) => Node::Bool(*b),
            Datum::Int(i) => Node::Int(*i),
            Datum::Float(f) => Node::Float(*f),
            Datum::Str(s) => Node::Str(s.clone()),
            Datum::Buf(i) => Node::Buf(*i),
            Datum::Ref(i) => Node::Ref(*i),
            Datum::List(l) => {
                out.push(Node::List(u32::try_from(l.len()).expect(
                    "invariant: a list on the wire has fewer than 2^32 items",
                )));
                for x in l {
                    x.push_nodes(out);
                }
                return;
            }
        });
    }

    /// How deeply lists nest in this datum (0 for a leaf or an empty list's contents),
    /// without recursion.
    pub fn depth(&self) -> usize {
        let mut deepest = 0;
        let mut todo: Vec<(&Datum, usize)> = vec![(self, 0)];
        while let Some((d, depth)) = todo.pop() {
            deepest = deepest.max(depth);
            if let Datum::List(l) = d {
                todo.extend(l.iter().map(|x| (x, depth + 1)));
            }
        }
        deepest
    }
}

/// A list being rebuilt: its items so far and how many are still to come.
struct Open {
    items: Vec<Datum>,
    left: u32,
}

/// Rebuilds a datum from its nodes, refusing more than [`MAX_DEPTH`] levels of lists, a
/// list announcing more items than follow, and nodes after the end of the datum.
fn from_nodes(nodes: &[ArchivedNode]) -> Result<Datum, ProtoError> {
    if let Some(d) = flat_list(nodes) {
        return Ok(d);
    }
    let malformed = |what: &str| ProtoError::Malformed(format!("datum: {what}"));
    let mut stack: Vec<Open> = Vec::new();
    let mut rest = nodes.iter();
    loop {
        let node = rest.next().ok_or_else(|| match stack.len() {
            0 => malformed("no nodes"),
            _ => malformed("a list announces more items than follow"),
        })?;
        let mut done = match node {
            ArchivedNode::List(n) => {
                let n = n.to_native();
                if n == 0 {
                    Datum::List(Vec::new())
                } else {
                    // Its items would lie one level deeper than this list.
                    if stack.len() >= MAX_DEPTH {
                        return Err(ProtoError::TooDeep(MAX_DEPTH));
                    }
                    if n as usize > rest.len() {
                        return Err(malformed("a list announces more items than follow"));
                    }
                    // Capacity is bounded whatever the lengths announced: nested lists may
                    // each claim every remaining node before the count is proven.
                    stack.push(Open {
                        items: Vec::with_capacity((n as usize).min(4096)),
                        left: n,
                    });
                    continue;
                }
            }
            _ => leaf(node).expect("invariant: a node not a list is a leaf"),
        };
        // Hand the finished datum to the list it belongs to, closing every list it fills.
        loop {
            let Some(top) = stack.last_mut() else {
                if rest.len() != 0 {
                    return Err(malformed("nodes after the end of the datum"));
                }
                return Ok(done);
            };
            top.items.push(done);
            top.left -= 1;
            if top.left > 0 {
                break;
            }
            let full = stack.pop().expect("invariant: the top exists");
            done = Datum::List(full.items);
        }
    }
}

/// The datum of a node that is not a list.
fn leaf(node: &ArchivedNode) -> Option<Datum> {
    Some(match node {
        ArchivedNode::Null => Datum::Null,
        ArchivedNode::Bool(b) => Datum::Bool(*b),
        ArchivedNode::Int(i) => Datum::Int(i.to_native()),
        ArchivedNode::Float(f) => Datum::Float(f.to_native()),
        ArchivedNode::Str(s) => Datum::Str(s.as_str().to_owned()),
        ArchivedNode::Buf(i) => Datum::Buf(i.to_native()),
        ArchivedNode::Ref(i) => Datum::Ref(i.to_native()),
        ArchivedNode::List(_) => return None,
    })
}

/// The most frequent shapes, a leaf alone or one list of leaves (a task's arguments, most
/// results), rebuilt without the stack of open lists; `None` for any other shape, and for
/// nodes that do not make a datum (the general path says why).
fn flat_list(nodes: &[ArchivedNode]) -> Option<Datum> {
    match nodes {
        [ArchivedNode::List(n), items @ ..] if n.to_native() as usize == items.len() => {
            let mut out = Vec::with_capacity(items.len());
            for node in items {
                out.push(leaf(node)?);
            }
            Some(Datum::List(out))
        }
        [one] => leaf(one),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode_header, encode_header};

    fn nested(levels: usize) -> Datum {
        let mut d = Datum::Int(7);
        for _ in 0..levels {
            d = Datum::List(vec![d]);
        }
        d
    }

    fn scratch_room() -> usize {
        SCRATCH.with(|s| s.borrow().capacity())
    }

    /// Serializing keeps the list of nodes for the next datum, unless it grew past
    /// [`SCRATCH_KEPT`] (a huge datum's room is not held on to).
    #[test]
    fn the_list_of_nodes_is_kept_unless_huge() {
        let small = Datum::List(vec![Datum::Int(1), Datum::Str("x".into())]);
        round_trip(&small).unwrap();
        let room = scratch_room();
        assert!(room >= 3, "room kept: {room}");
        round_trip(&small).unwrap();
        assert_eq!(scratch_room(), room, "the same list serves again");
        // A string makes it go through the list (a list of numbers alone would not).
        let mut items = vec![Datum::Int(1); SCRATCH_KEPT * 2];
        items.push(Datum::Str("x".into()));
        let huge = Datum::List(items);
        assert_eq!(round_trip(&huge).unwrap(), huge);
        assert_eq!(scratch_room(), 0, "a huge datum's room is let go");
    }

    /// A leaf other than a string, or a list of such leaves, is written node by node as
    /// it is walked, into the very bytes the list of its nodes makes, and nothing else
    /// is; the list of nodes kept per thread is not touched.
    #[test]
    fn shallow_datums_are_written_as_their_list_of_nodes_would_be() {
        let leaves = [
            Datum::Null,
            Datum::Bool(false),
            Datum::Int(i64::MIN),
            Datum::Float(-0.5),
            Datum::Buf(7),
            Datum::Ref(u32::MAX),
        ];
        let mut shallow: Vec<Datum> = leaves.to_vec();
        shallow.push(Datum::List(vec![]));
        shallow.push(Datum::List(leaves.to_vec()));
        SCRATCH.with(|s| *s.borrow_mut() = Vec::new());
        for d in &shallow {
            assert_eq!(d.shallow_len(), Some(nodes_of(d).len()), "{d:?}");
            let direct = rkyv::to_bytes::<rkyv::rancor::Error>(d).unwrap();
            let listed = rkyv::to_bytes::<rkyv::rancor::Error>(&nodes_of(d)).unwrap();
            assert_eq!(direct.as_slice(), listed.as_slice(), "{d:?}");
            assert_eq!(round_trip(d).unwrap(), *d);
        }
        assert_eq!(scratch_room(), 0, "the list of nodes was not used");
        let deep = [
            Datum::Str("s".into()),
            Datum::List(vec![Datum::Int(1), Datum::Str("s".into())]),
            Datum::List(vec![Datum::List(vec![])]),
        ];
        for d in &deep {
            assert_eq!(d.shallow_len(), None, "{d:?}");
            assert_eq!(round_trip(d).unwrap(), *d);
        }
    }

    fn nodes_of(d: &Datum) -> Vec<Node> {
        let mut nodes = Vec::new();
        d.push_nodes(&mut nodes);
        nodes
    }

    fn round_trip(d: &Datum) -> Result<Datum, ProtoError> {
        decode_header::<Datum>(&encode_header(d))
    }

    #[test]
    fn every_kind_of_node_round_trips() {
        let d = Datum::List(vec![
            Datum::Null,
            Datum::Bool(true),
            Datum::Int(-5_000_000_000),
            Datum::Float(2.5),
            Datum::Str("a string longer than eight bytes".into()),
            Datum::Buf(3),
            Datum::List(vec![]),
            Datum::List(vec![
                Datum::Ref(1),
                Datum::List(vec![Datum::Str("x".into())]),
            ]),
            Datum::Ref(u32::MAX),
        ]);
        assert_eq!(round_trip(&d).unwrap(), d);
        assert_eq!(d.depth(), 3);
        assert_eq!(round_trip(&Datum::Int(1)).unwrap(), Datum::Int(1));
    }

    #[test]
    fn depth_up_to_the_limit_is_kept_and_beyond_it_refused() {
        assert_eq!(round_trip(&nested(MAX_DEPTH)).unwrap(), nested(MAX_DEPTH));
        assert!(matches!(
            round_trip(&nested(MAX_DEPTH + 1)),
            Err(ProtoError::Malformed(m)) if m.contains("deeper than 64")
        ));
    }

    /// The attack this encoding exists for: a value nested far deeper than any stack,
    /// validated and refused without recursion.
    #[test]
    fn a_value_nested_200000_levels_deep_is_refused_without_recursion() {
        let levels = 200_000;
        let mut nodes: Vec<Node> = (0..levels).map(|_| Node::List(1)).collect();
        nodes.push(Node::Int(1));
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&nodes).unwrap();
        // The same bytes are an archived datum (a transparent wrapper of the node list).
        let err = decode_header::<Datum>(&bytes).unwrap_err();
        assert!(err.to_string().contains("deeper than 64"), "{err}");
    }

    /// A leaf, and one list of leaves, are rebuilt by the short path; any other shape (or
    /// nodes that make no datum) is left to the general one.
    #[test]
    fn only_a_leaf_or_a_list_of_leaves_takes_the_short_path() {
        let short = |nodes: Vec<Node>| {
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&nodes).unwrap();
            let archived =
                rkyv::access::<rkyv::vec::ArchivedVec<ArchivedNode>, rkyv::rancor::Error>(&bytes)
                    .unwrap();
            flat_list(archived.as_slice())
        };
        assert_eq!(short(vec![Node::Int(4)]), Some(Datum::Int(4)));
        assert_eq!(short(vec![Node::List(0)]), Some(Datum::List(vec![])));
        assert_eq!(
            short(vec![
                Node::List(3),
                Node::Int(1),
                Node::Str("s".into()),
                Node::Ref(2)
            ]),
            Some(Datum::List(vec![
                Datum::Int(1),
                Datum::Str("s".into()),
                Datum::Ref(2)
            ]))
        );
        assert_eq!(
            short(vec![Node::List(2), Node::List(0), Node::Int(1)]),
            None
        );
        assert_eq!(short(vec![Node::List(1), Node::Int(1), Node::Int(2)]), None);
        assert_eq!(short(vec![Node::List(3), Node::Int(1)]), None);
        assert_eq!(short(vec![Node::Int(1), Node::Int(2)]), None);
        assert_eq!(short(vec![]), None);
    }

    #[test]
    fn malformed_node_lists_are_errors() {
        let check = |nodes: Vec<Node>, what: &str| {
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&nodes).unwrap();
            let err = decode_header::<Datum>(&bytes).unwrap_err().to_string();
            assert!(err.contains(what), "{err} should say {what}");
        };
        check(vec![], "no nodes");
        check(vec![Node::List(3), Node::Int(1)], "more items than follow");
        check(
            vec![Node::List(1), Node::List(2), Node::Int(1)],
            "more items than follow",
        );
        check(vec![Node::Int(1), Node::Int(2)], "after the end");
        check(
            vec![Node::List(u32::MAX), Node::Null],
            "more items than follow",
        );
    }
}

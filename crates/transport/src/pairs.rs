//! Encoding a writer's queued messages where they lie. A frame's header is the archive of
//! its messages as a `Vec<M>`; senders queue pairs of a message and its buffers. Written
//! from the pairs, the header is the same bytes, and no message is moved into a list of
//! messages alone first (a move of a hundred bytes or more for every message sent).

use bytes::Bytes;
use rask_proto::msg::WireMessage;
use rkyv::api::high::HighSerializer;
use rkyv::rancor::{Error, Fallible};
use rkyv::ser::allocator::ArenaHandle;
use rkyv::ser::{Allocator, Writer};
use rkyv::util::AlignedVec;
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Place, Serialize};

/// A message a writer can encode from its queue: every [`WireMessage`].
pub trait Encode:
    WireMessage + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, Error>>
{
}

impl<M> Encode for M where
    M: WireMessage + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, Error>>
{
}

/// The messages of a list of pairs, archived as the list of the messages alone would be.
struct Firsts<'a, M>(&'a [(M, Vec<Bytes>)]);

impl<M: Archive> Archive for Firsts<'_, M> {
    type Archived = ArchivedVec<M::Archived>;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: VecResolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_len(self.0.len(), resolver, out);
    }
}

impl<M, S> Serialize<S> for Firsts<'_, M>
where
    M: Serialize<S>,
    S: Fallible + Allocator + Writer + ?Sized,
{
    fn serialize(&self, s: &mut S) -> Result<VecResolver, S::Error> {
        ArchivedVec::<M::Archived>::serialize_from_iter::<M, _, S>(self.0.iter().map(|(m, _)| m), s)
    }
}

/// The header of a frame of the messages of `pairs` (their buffers' indices already
/// renumbered for the frame), into a buffer with room for `room` bytes: the bytes
/// [`WireMessage::encode_batch_with_room`] writes for the messages alone.
pub(crate) fn encode_pairs<M: Encode>(pairs: &[(M, Vec<Bytes>)], room: usize) -> AlignedVec {
    let out = AlignedVec::with_capacity(room);
    rkyv::api::high::to_bytes_in::<_, Error>(&Firsts(pairs), out)
        .expect("invariant: archiving into memory cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rask_proto::msg::{DataItem, PeerMsg, ToClient, ToWorker};
    use rask_proto::{Datum, TaskId};

    /// The same bytes as the messages alone, for several kinds of messages and for none.
    #[test]
    fn pairs_encode_as_the_messages_alone() {
        fn same<M: Encode + Clone>(msgs: Vec<M>) {
            let pairs: Vec<(M, Vec<Bytes>)> = msgs
                .iter()
                .map(|m| (m.clone(), vec![Bytes::new()]))
                .collect();
            let alone = M::encode_batch_with_room(&msgs, 64);
            assert_eq!(encode_pairs(&pairs, 64).as_slice(), alone.as_slice());
            assert_eq!(
                M::decode_batch(&encode_pairs(&pairs, 0)).unwrap().len(),
                msgs.len()
            );
        }
        same::<PeerMsg>(vec![]);
        same(vec![
            PeerMsg::Data {
                req: 7,
                items: vec![DataItem {
                    task: TaskId(3),
                    value: Datum::Buf(0),
                }],
                missing: vec![TaskId(9)],
            },
            PeerMsg::GetData {
                req: 8,
                tasks: vec![TaskId(1), TaskId(2)],
                into_device: true,
            },
        ]);
        same(vec![
            ToWorker::Free {
                tasks: vec![TaskId(4)],
            },
            ToWorker::Free { tasks: vec![] },
        ]);
        same(vec![ToClient::Workers { holders: vec![] }]);
    }
}

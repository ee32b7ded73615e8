//! The messages, by direction: [`ToScheduler`], [`ToWorker`], [`ToClient`], [`PeerMsg`]
//! (worker ⇄ worker and client → worker data), and the [`Hello`] handshake.
//!
//! A frame carries a batch (`Vec`) of one direction's messages; byte counts are `u64`
//! (rkyv archives `usize` as 32 bits).

use rkyv::{Archive, Deserialize, Serialize};

use crate::observe::{ActivityMsg, PeerBytesMsg, TaskPrefixMsg, TaskStreamEntryMsg, TransitionMsg};
use crate::packed::{Packed, TaskArgs};
use crate::{Datum, SharedStr, TaskId, WorkerId};

/// Derives the traits every message type needs.
macro_rules! wire {
    ($($item:item)*) => {$(
        #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
        $item
    )*};
}

mod hello;
mod peer;
mod to_client;
mod to_scheduler;
mod to_worker;

pub use hello::*;
pub use peer::*;
pub use to_client::*;
pub use to_scheduler::*;
pub use to_worker::*;

/// A message type that travels in batches: one frame carries a `Vec` of them plus the raw
/// buffers their [`Datum::Buf`] indices refer to.
pub trait WireMessage: Sized + Send + 'static {
    /// Archives a batch (a `Vec`, which is what the receiver's archive root is).
    #[allow(clippy::ptr_arg)]
    fn encode_batch(msgs: &Vec<Self>) -> rkyv::util::AlignedVec {
        Self::encode_batch_with_room(msgs, 0)
    }
    /// Like [`encode_batch`](Self::encode_batch), into a buffer with room for `room`
    /// bytes (an upper estimate of the encoded size, such as the messages'
    /// [`wire_size`](Self::wire_size)s summed, spares the buffer's growth).
    #[allow(clippy::ptr_arg)]
    fn encode_batch_with_room(msgs: &Vec<Self>, room: usize) -> rkyv::util::AlignedVec;
    /// Validates and deserializes a batch (`bytes` 16-byte aligned).
    fn decode_batch(bytes: &[u8]) -> Result<Vec<Self>, crate::ProtoError>;
    /// Renumbers this message's buffer indices by `base` (its buffers are appended to a
    /// frame's list at that position).
    fn shift_buffers(&mut self, base: u32);
    /// An upper estimate of the message's archived size in bytes, so that a writer can
    /// keep frames within a size (buffers not counted: they travel outside the header).
    fn wire_size(&self) -> usize {
        256
    }
}

macro_rules! wire_message {
    ($($t:ty => |$m:ident, $base:ident| $shift:block)*) => {$(
        impl WireMessage for $t {
            fn encode_batch_with_room(msgs: &Vec<Self>, room: usize) -> rkyv::util::AlignedVec {
                let out = rkyv::util::AlignedVec::with_capacity(room);
                rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(msgs, out)
                    .expect("invariant: archiving into memory cannot fail")
            }
            fn decode_batch(bytes: &[u8]) -> Result<Vec<Self>, crate::ProtoError> {
                crate::frame::decode_header(bytes)
            }
            #[allow(unused_variables)]
            fn shift_buffers(&mut self, $base: u32) {
                let $m = self;
                $shift
            }
            fn wire_size(&self) -> usize {
                crate::size::WireSize::wire_size(self)
            }
        }
    )*};
}

wire_message! {
    ToScheduler => |m, base| {
        match m {
            ToScheduler::UpdateGraph(g) => {
                g.tasks.iter_mut().for_each(|t| t.args.shift_buffers(base));
            }
            ToScheduler::Map(m) => m.args.iter_mut().for_each(|a| a.shift_buffers(base)),
            ToScheduler::ProgramPart { buf, .. } => *buf += base,
            _ => {}
        }
    }
    ToWorker => |m, base| {
        match m {
            ToWorker::Compute(c) => c.args.shift_buffers(base),
            ToWorker::ProgramPart { buf, .. } => *buf += base,
            _ => {}
        }
    }
    ToClient => |m, base| {}
    PeerMsg => |m, base| {
        match m {
            PeerMsg::Data { items, .. } => {
                items.iter_mut().for_each(|i| i.value.shift_buffers(base));
            }
            PeerMsg::ShmData { refs, .. } => {
                for r in refs {
                    if let BufRef::Inline(i) = r {
                        *i += base;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Refuses a peer of another version, protocol, or wire schema, naming both sides.
pub fn check_versions(h: &Hello, us: &str) -> Result<(), String> {
    if h.protocol != crate::PROTOCOL_VERSION || h.rask_version != crate::RASK_VERSION {
        return Err(format!(
            "version mismatch: {:?} {:?} runs rask {} (protocol {}), {us} runs rask {} (protocol {})",
            h.role, h.name, h.rask_version, h.protocol, crate::RASK_VERSION, crate::PROTOCOL_VERSION
        ));
    }
    if h.schema != crate::PROTOCOL_SCHEMA {
        return Err(format!(
            "wire schema mismatch: {:?} {:?} was built from other message definitions ({:016x}) than {us} ({:016x}), both rask {}; rebuild both from the same sources",
            h.role, h.name, h.schema, crate::PROTOCOL_SCHEMA, crate::RASK_VERSION
        ));
    }
    Ok(())
}

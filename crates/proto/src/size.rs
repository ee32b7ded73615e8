//! Upper estimates of messages' archived sizes, so that a writer keeps its frames within
//! a target without encoding twice (see `WireMessage::wire_size`). Not part of the wire
//! layout: these estimates may change without changing the protocol's schema hash.

use crate::msg::{Holder, PeerMsg, TaskSpec, ToClient, ToScheduler, ToWorker};
use crate::packed::{Packed, TaskArgs};
use crate::Datum;

/// An upper estimate of a datum's archived size.
pub fn datum_wire_size(d: &Datum) -> usize {
    // Recursive: the datums sent are made here, within the depth a receiver accepts.
    fn nodes(d: &Datum) -> usize {
        24 + match d {
            Datum::Str(s) => s.len(),
            Datum::List(l) => l.iter().map(nodes).sum(),
            _ => 0,
        }
    }
    16 + nodes(d)
}

/// An upper estimate of a task's arguments archived: their packing's length (see
/// [`crate::packed`]), counted exactly, and the list that holds it.
pub fn args_wire_size(a: &TaskArgs) -> usize {
    16 + match a {
        TaskArgs::Datum(d) => packed_len(d),
        TaskArgs::Packed(p) => p.bytes().len(),
    }
}

/// An upper estimate of a packed datum's archived size.
pub fn packed_wire_size(p: &Packed) -> usize {
    16 + p.bytes().len()
}

/// The length of `d`'s packing, without packing it. Recursive: the datums sent are made
/// here, within the depth a receiver accepts.
fn packed_len(d: &Datum) -> usize {
    fn varint_len(v: u64) -> usize {
        (64 - v.leading_zeros() as usize).max(1).div_ceil(7)
    }
    1 + match d {
        Datum::Null | Datum::Bool(_) => 0,
        Datum::Int(i) => varint_len(((i << 1) ^ (i >> 63)) as u64),
        Datum::Float(_) => 8,
        Datum::Str(s) => varint_len(s.len() as u64) + s.len(),
        Datum::Buf(i) | Datum::Ref(i) => varint_len(u64::from(*i)),
        Datum::List(l) => varint_len(l.len() as u64) + l.iter().map(packed_len).sum::<usize>(),
    }
}

/// An upper estimate of a task's archived size.
pub fn task_wire_size(t: &TaskSpec) -> usize {
    64 + t.key.len()
        + t.op.len()
        + datum_wire_size(&t.args)
        + t.deps.iter().map(|d| d.len() + 16).sum::<usize>()
        + t.resources.iter().map(|r| r.name.len() + 32).sum::<usize>()
}

/// The size estimate of each message type (see [`WireMessage::wire_size`]).
pub(crate) trait WireSize {
    fn wire_size(&self) -> usize {
        256
    }
}

impl WireSize for ToWorker {
    fn wire_size(&self) -> usize {
        match self {
            ToWorker::Compute(c) => {
                128 + c.op.len() + args_wire_size(&c.args) + c.deps.len() * (32 + 8 * 4)
            }
            ToWorker::Free { tasks } => 64 + tasks.len() * 8,
            ToWorker::Peers { peers } => {
                64 + peers
                    .iter()
                    .map(|p| 96 + p.addr.len() + p.shm_addr.len() + p.host_id.len())
                    .sum::<usize>()
            }
            ToWorker::RunProgram { program } => 128 + program.name.len() + program.platform.len(),
            ToWorker::AcquireReplicas { tasks } => {
                128 + tasks
                    .iter()
                    .map(|d| 32 + 8 * d.holders.len())
                    .sum::<usize>()
            }
            _ => 256,
        }
    }
}

fn holders_wire_size(holders: &[Holder]) -> usize {
    holders
        .iter()
        .map(|h| 96 + h.addr.len() + h.shm_addr.len() + h.host_id.len() + h.device.len())
        .sum()
}

impl WireSize for ToClient {
    fn wire_size(&self) -> usize {
        match self {
            ToClient::KeyInMemory {
                key,
                holders,
                value,
                ..
            } => 96 + key.len() + 8 * holders.len() + value.as_ref().map_or(0, packed_wire_size),
            ToClient::MapInMemory {
                prefix,
                holders,
                keys,
            } => {
                64 + prefix.len()
                    + 8 * holders.len()
                    + keys
                        .iter()
                        .map(|k| 48 + k.value.as_ref().map_or(0, packed_wire_size))
                        .sum::<usize>()
            }
            ToClient::Workers { holders } => 64 + holders_wire_size(holders),
            ToClient::KeyErred { key, error } => {
                96 + key.len() + error.key.len() + error.op.len() + error.message.len()
            }
            ToClient::GraphRejected { keys, message }
            | ToClient::KeysLost {
                keys,
                reason: message,
            } => 64 + message.len() + keys.iter().map(|k| k.len() + 16).sum::<usize>(),
            ToClient::WhoHasReply { entries, .. } => {
                64 + entries
                    .iter()
                    .map(|e| 32 + e.key.len() + holders_wire_size(&e.holders))
                    .sum::<usize>()
            }
            ToClient::InfoReply { info, .. } => {
                4096 + info.workers.len() * 1024
                    + info
                        .prefixes
                        .iter()
                        .map(|p| 512 + p.name.len())
                        .sum::<usize>()
                    + info
                        .programs
                        .iter()
                        .map(|p| 128 + p.name.len() + p.error.len())
                        .sum::<usize>()
            }
            ToClient::Closing { reason } => 64 + reason.len(),
            ToClient::Echo { .. } => 32,
            ToClient::SendProgram { .. } => 64,
            ToClient::RetireWorkersReply { retired: names, .. }
            | ToClient::WorkersToCloseReply { names, .. } => {
                128 + names.iter().map(|n| n.len() + 16).sum::<usize>()
            }
            ToClient::AdaptiveTargetReply { .. } => 128,
            ToClient::DatasetsReply { names, error, .. } => {
                128 + error.as_ref().map_or(0, String::len)
                    + names.iter().map(|n| n.len() + 16).sum::<usize>()
            }
            ToClient::TaskStreamReply { entries, .. } => {
                64 + entries
                    .iter()
                    .map(|e| {
                        128 + e.key.len() + e.prefix.len() + e.worker_name.len() + e.kind.len()
                    })
                    .sum::<usize>()
            }
            ToClient::StoryReply { transitions, .. } => {
                64 + transitions
                    .iter()
                    .map(|t| {
                        160 + t.key.len()
                            + t.why.len()
                            + t.worker_name.len()
                            + t.error
                                .as_ref()
                                .map_or(0, |e| e.key.len() + e.op.len() + e.message.len() + 48)
                    })
                    .sum::<usize>()
            }
        }
    }
}

impl WireSize for PeerMsg {
    fn wire_size(&self) -> usize {
        match self {
            PeerMsg::GetData { tasks, .. } => 64 + tasks.len() * 8,
            PeerMsg::Data { items, missing, .. } => {
                64 + missing.len() * 8
                    + items
                        .iter()
                        .map(|i| 16 + datum_wire_size(&i.value))
                        .sum::<usize>()
            }
            PeerMsg::ShmData {
                items,
                missing,
                refs,
                segments,
                ..
            } => {
                96 + missing.len() * 8
                    + refs.len() * 128
                    + segments.len() * 16
                    + items
                        .iter()
                        .map(|i| 16 + datum_wire_size(&i.value))
                        .sum::<usize>()
            }
            PeerMsg::Release { loans } => 64 + loans.len() * 8,
            PeerMsg::Retired { segments } => 64 + segments.len() * 4,
        }
    }
}

impl WireSize for ToScheduler {
    fn wire_size(&self) -> usize {
        match self {
            ToScheduler::UpdateGraph(g) => {
                64 + g.tasks.iter().map(task_wire_size).sum::<usize>()
                    + g.wanted.iter().map(|k| k.len() + 16).sum::<usize>()
            }
            ToScheduler::Map(m) => {
                128 + m.prefix.len()
                    + m.op.len()
                    + m.args.iter().map(args_wire_size).sum::<usize>()
                    + m.resources.iter().map(|r| r.name.len() + 32).sum::<usize>()
            }
            ToScheduler::ReleaseKeys { keys }
            | ToScheduler::WhoHas { keys, .. }
            | ToScheduler::Resubscribe { keys } => {
                64 + keys.iter().map(|k| k.len() + 16).sum::<usize>()
            }
            ToScheduler::ReleaseMapKeys { runs } => {
                64 + runs.iter().map(|r| r.prefix.len() + 32).sum::<usize>()
            }
            ToScheduler::Holding { tasks, .. } => 64 + tasks.len() * 16,
            ToScheduler::Heartbeat(h) => {
                let list = |l: &[(String, u64)]| l.iter().map(|(k, _)| k.len() + 24).sum::<usize>();
                512 + list(&h.received)
                    + list(&h.spilled)
                    + list(&h.ran)
                    + h.activity
                        .iter()
                        .map(|a| {
                            64 + match &a.kind {
                                crate::observe::ActivityKind::Transfer { link, .. } => link.len(),
                                crate::observe::ActivityKind::Spill { direction } => {
                                    direction.len()
                                }
                            }
                        })
                        .sum::<usize>()
                    + h.received_from
                        .iter()
                        .map(|p| 48 + p.link.len())
                        .sum::<usize>()
            }
            ToScheduler::ProgramFailed { message, .. } => 64 + message.len(),
            ToScheduler::RetireWorkers { names, .. } => {
                128 + names.iter().map(|n| n.len() + 16).sum::<usize>()
            }
            ToScheduler::CloseGracefully { reason } => 128 + reason.len(),
            ToScheduler::DeviceLost { message } => 128 + message.len(),
            ToScheduler::ReplicasAcquired { tasks } => 128 + tasks.len() * 8,
            ToScheduler::Story { key, .. } => 64 + key.len(),
            ToScheduler::TaskFinished(f) => 128 + f.value.as_ref().map_or(0, packed_wire_size),
            _ => 256,
        }
    }
}

#[cfg(test)]
mod coming_back;
#[cfg(test)]
mod maps;
#[cfg(test)]
mod tests;

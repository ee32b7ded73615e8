//! Data between peers: [`PeerMsg`] (worker ⇄ worker and client → worker), values inline
//! or lent through shared memory ([`BufRef`], [`ShmSegment`]).

use super::*;

wire! {
    /// One value in a [`PeerMsg::Data`] reply.
    pub struct DataItem {
        /// The task whose value this is.
        pub task: TaskId,
        /// The value; its `Buf` indices refer to the frame's buffers (or, in
        /// [`PeerMsg::ShmData`], to its `refs`).
        pub value: Datum,
    }

    /// Where one buffer of a shared-memory reply lives.
    pub enum BufRef {
        /// In the frame's own buffer list, at this index (small buffers travel inline).
        Inline(u32),
        /// In a segment of the holder's shared-memory arena.
        Shm {
            /// The segment's id (see [`ShmSegment::id`]).
            segment: u32,
            /// Where the buffer starts in the segment, in bytes.
            offset: u64,
            /// Length of the buffer in bytes.
            len: u64,
        },
        /// In the holder's device memory (`device`, as the holder names it): the receiver
        /// opens the allocation's IPC `handle`, copies `len` bytes from `offset` into its
        /// own device, and closes it.
        Device {
            /// The holder's device (`cuda:N` in the holder's numbering).
            device: String,
            /// The allocation's IPC handle.
            handle: Vec<u8>,
            /// Where the bytes start in the allocation.
            offset: u64,
            /// Length in bytes.
            len: u64,
        },
    }

    /// A shared-memory segment the receiver has not seen yet; its file descriptor
    /// travels with the frame (SCM_RIGHTS), in the order of this list.
    pub struct ShmSegment {
        /// The segment's id in the holder's arena; [`BufRef::Shm`] and
        /// [`PeerMsg::Retired`] name it by this.
        pub id: u32,
        /// Its length in bytes (what the receiver maps).
        pub len: u64,
    }

    /// Data connections: a worker or client fetching from a worker.
    pub enum PeerMsg {
        /// `into_device`: the requester imports bytes held in a device's memory into its
        /// own device (CUDA IPC on one host) rather than receiving them through the host.
        GetData {
            /// The requester's request number, echoed in the reply.
            req: u64,
            /// The values wanted.
            tasks: Vec<TaskId>,
            /// Leave device bytes on the holder's device for the requester to import.
            into_device: bool,
        },
        /// The reply on a tcp or in-process connection: the values, their bytes in the
        /// frame's buffers.
        Data {
            /// The request's number.
            req: u64,
            /// The values the holder has.
            items: Vec<DataItem>,
            /// The tasks asked for that the holder does not hold.
            missing: Vec<TaskId>,
        },
        /// The reply on a shared-memory connection: the items' `Datum::Buf(i)` refer to
        /// `refs[i]`. The holder keeps the buffers unchanged until the receiver releases
        /// `loan` (0: nothing lent).
        ShmData {
            /// The request's number.
            req: u64,
            /// The values the holder has.
            items: Vec<DataItem>,
            /// The tasks asked for that the holder does not hold.
            missing: Vec<TaskId>,
            /// Where each buffer is.
            refs: Vec<BufRef>,
            /// Segments first used by this reply.
            segments: Vec<ShmSegment>,
            /// The loan covering `refs`, released by [`PeerMsg::Release`].
            loan: u64,
        },
        /// The receiver no longer reads these loans' buffers.
        Release {
            /// The loans ([`PeerMsg::ShmData::loan`]).
            loans: Vec<u64>,
        },
        /// The holder unmapped these segments; the receiver drops its mappings of them.
        Retired {
            /// The segments' ids.
            segments: Vec<u32>,
        },
    }
}

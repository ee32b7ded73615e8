//! The batching writer of a connection: [`Sender`]s queue messages (one at a time or in
//! batches), and the writer task drains everything queued since its last write into one
//! frame, up to a target size.

use bytes::Bytes;
use rask_proto::msg::WireMessage;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::pairs::{encode_pairs, Encode};
use crate::{write_frame, TransportError};

/// Sends messages on a connection; cheap to clone. Messages queued while the writer is
/// busy go out together in its next frame.
pub struct Sender<M> {
    tx: mpsc::UnboundedSender<Queued<M>>,
    /// Payload bytes that may wait in the queue (see [`channel_bounded`]).
    budget: Option<(std::sync::Arc<tokio::sync::Semaphore>, u32)>,
}

/// A message waiting for the writer, with the budget its payload holds until written.
type Msg<M> = (M, Vec<Bytes>, Option<tokio::sync::OwnedSemaphorePermit>);

/// What a sender queues: one message, or a batch of them in one entry of the queue (one
/// wake-up of the writer, and no move of each message through the queue), or a frame the
/// sender encoded itself.
enum Queued<M> {
    One(Msg<M>),
    Many(Vec<(M, Vec<Bytes>)>),
    Frame(Encoded),
}

/// A frame encoded by its sender ([`Sender::send_encoded`]): its header and buffers.
struct Encoded {
    header: rkyv::util::AlignedVec,
    bufs: Vec<Bytes>,
}

impl<M> Clone for Sender<M> {
    fn clone(&self) -> Self {
        Sender {
            tx: self.tx.clone(),
            budget: self.budget.clone(),
        }
    }
}

impl<M: Encode> Sender<M> {
    /// Queues a message without buffers.
    pub fn send(&self, m: M) -> Result<(), TransportError> {
        self.send_with(m, Vec::new())
    }

    /// Queues a message whose `Datum::Buf(i)` indices refer to `bufs[i]`.
    pub fn send_with(&self, m: M, bufs: Vec<Bytes>) -> Result<(), TransportError> {
        self.tx
            .send(Queued::One((m, bufs, None)))
            .map_err(|_| TransportError::Closed)
    }

    /// Queues messages (each with its buffers, as for [`Sender::send_with`]), in order,
    /// as one entry: for a sender with many messages at once, cheaper than one call each.
    pub fn send_batch(&self, msgs: Vec<(M, Vec<Bytes>)>) -> Result<(), TransportError> {
        if msgs.is_empty() {
            return match self.tx.is_closed() {
                true => Err(TransportError::Closed),
                false => Ok(()),
            };
        }
        self.tx
            .send(Queued::Many(msgs))
            .map_err(|_| TransportError::Closed)
    }

    /// Like [`Sender::send_batch`], but the messages are encoded here, on the calling
    /// thread, into a frame of their own, which the writer writes as it is (after what was
    /// queued before). The messages are freed where they were made: with an allocator of
    /// per-thread heaps, freeing many small blocks made on another thread costs several
    /// times as much. For large batches of messages that a caller builds on its own
    /// thread, such as a graph's parts; the caller keeps the batch within a frame's size
    /// ([`FRAME_TARGET`]).
    pub fn send_encoded(&self, mut msgs: Vec<(M, Vec<Bytes>)>) -> Result<(), TransportError> {
        if self.tx.is_closed() {
            return Err(TransportError::Closed);
        }
        if msgs.is_empty() {
            return Ok(());
        }
        let mut bufs = Vec::new();
        let mut size = BATCH_OVERHEAD;
        for (m, own) in &mut msgs {
            size += m.wire_size();
            if !own.is_empty() {
                m.shift_buffers(bufs.len() as u32);
                bufs.append(own);
            }
        }
        let msgs: Vec<M> = msgs.into_iter().map(|(m, _)| m).collect();
        let header = M::encode_batch_with_room(&msgs, size);
        let sent = self
            .tx
            .send(Queued::Frame(Encoded { header, bufs }))
            .map_err(|_| TransportError::Closed);
        // Freed once the frame is on its way: the writer need not wait for it.
        drop(msgs);
        sent
    }

    /// Like [`Sender::send_with`], but on a [`channel_bounded`] sender waits while the
    /// payload bytes queued and not yet written exceed the bound: a slow receiver then
    /// slows the sender instead of growing its queue.
    pub async fn send_bounded(&self, m: M, bufs: Vec<Bytes>) -> Result<(), TransportError> {
        let permit = match &self.budget {
            Some((sem, max)) => {
                let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
                let n = total.min(*max as u64) as u32;
                Some(
                    sem.clone()
                        .acquire_many_owned(n)
                        .await
                        .map_err(|_| TransportError::Closed)?,
                )
            }
            None => None,
        };
        self.tx
            .send(Queued::One((m, bufs, permit)))
            .map_err(|_| TransportError::Closed)
    }

    /// Whether the writer has stopped (the connection failed or closed).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The most messages one frame carries.
const MAX_BATCH: usize = 16 * 1024;

/// The header size a writer aims to stay below when it batches messages into a frame (by
/// their [`WireMessage::wire_size`] estimates): well inside any receiver's header limit.
/// A single larger message still goes, alone; senders split what they send so that none
/// is (the client splits large graphs into parts).
pub const FRAME_TARGET: usize = 8 << 20;

/// What a batch's header holds besides its messages (the list's own root and padding).
const BATCH_OVERHEAD: usize = 64;

/// Starts the writer task of a connection. It ends when every [`Sender`] is dropped or a
/// write fails; the write half is then shut down.
pub fn spawn_writer<M: Encode, W: AsyncWrite + Unpin + Send + 'static>(w: W) -> Sender<M> {
    let (tx, pending) = channel();
    pending.start(w);
    tx
}

/// A sender whose connection does not exist yet: messages queue until
/// [`PendingWriter::start`] is given the connection.
pub fn channel<M: Encode>() -> (Sender<M>, PendingWriter<M>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Sender { tx, budget: None }, PendingWriter { rx })
}

/// [`channel`] whose [`Sender::send_bounded`] keeps at most `max_bytes` of payload queued
/// (a single larger payload still goes, alone).
pub fn channel_bounded<M: Encode>(max_bytes: u32) -> (Sender<M>, PendingWriter<M>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(max_bytes as usize));
    (
        Sender {
            tx,
            budget: Some((sem, max_bytes)),
        },
        PendingWriter { rx },
    )
}

/// The receiving end of [`channel`].
pub struct PendingWriter<M> {
    rx: mpsc::UnboundedReceiver<Queued<M>>,
}

impl<M: Encode> PendingWriter<M> {
    /// Starts writing queued and future messages to `w`.
    pub fn start<W: AsyncWrite + Unpin + Send + 'static>(self, mut w: W) {
        let mut rx = self.rx;
        tokio::spawn(async move {
            // The next frame's messages with their buffers, as queued: a sender's batch
            // taken whole is encoded where it lies (see `pairs`).
            let mut pairs: Vec<(M, Vec<Bytes>)> = Vec::new();
            let mut bufs = Vec::new();
            let mut permits = Vec::new();
            // What did not fit in the frame (a message that would take it past
            // FRAME_TARGET, the rest of a batch), or a frame encoded by its sender: waits
            // for the next.
            let mut next: Option<Queued<M>> = None;
            loop {
                let first = match next.take() {
                    Some(m) => m,
                    None => match rx.recv().await {
                        Some(m) => m,
                        None => break,
                    },
                };
                let mut size = 0;
                let mut item = first;
                loop {
                    let queued = match item {
                        Queued::Frame(f) if pairs.is_empty() => {
                            match write_frame(&mut w, &f.header, &f.bufs).await {
                                Ok(()) => break,
                                Err(e) => {
                                    tracing::debug!("write failed: {e}");
                                    return close(rx, w).await;
                                }
                            }
                        }
                        Queued::Frame(f) => {
                            next = Some(Queued::Frame(f));
                            break;
                        }
                        Queued::One((m, own, permit)) => {
                            let grown = size + m.wire_size();
                            if grown > FRAME_TARGET && !pairs.is_empty() {
                                next = Some(Queued::One((m, own, permit)));
                                break;
                            }
                            size = grown;
                            permits.extend(permit);
                            pairs.push((m, own));
                            None
                        }
                        Queued::Many(v) => take_many(&mut pairs, &mut size, v),
                    };
                    if let Some(rest) = queued {
                        next = Some(Queued::Many(rest));
                        break;
                    }
                    if pairs.len() >= MAX_BATCH {
                        break;
                    }
                    item = match rx.try_recv() {
                        Ok(m) => m,
                        Err(_) => break,
                    };
                }
                if pairs.is_empty() {
                    continue;
                }
                for (m, own) in &mut pairs {
                    if !own.is_empty() {
                        m.shift_buffers(bufs.len() as u32);
                        bufs.append(own);
                    }
                }
                // Room for the estimate: the header does not grow (and copy) on the way.
                let header = encode_pairs(&pairs, size + BATCH_OVERHEAD);
                pairs.clear();
                if let Err(e) = write_frame(&mut w, &header, &bufs).await {
                    tracing::debug!("write failed: {e}");
                    break;
                }
                bufs.clear();
                // Written: the budget is free again.
                permits.clear();
            }
            close(rx, w).await;
        });
    }
}

/// Ends a writer: nothing more is queued, and the write half is shut down.
async fn close<M, W: AsyncWrite + Unpin>(mut rx: mpsc::UnboundedReceiver<Queued<M>>, mut w: W) {
    rx.close();
    let _ = w.shutdown().await;
}

/// Adds what fits of a sender's batch `v` to the frame's `pairs` (whose estimated size is
/// `size`): up to [`MAX_BATCH`] messages and [`FRAME_TARGET`] bytes, at least one message
/// if the frame has none. A batch that fits whole is taken as it is when the frame is
/// empty, else appended at once; the rest of one that does not is returned.
fn take_many<M: WireMessage>(
    pairs: &mut Vec<(M, Vec<Bytes>)>,
    size: &mut usize,
    mut v: Vec<(M, Vec<Bytes>)>,
) -> Option<Vec<(M, Vec<Bytes>)>> {
    let room = MAX_BATCH - pairs.len();
    let mut fits = 0;
    for (m, _) in v.iter().take(room) {
        let grown = *size + m.wire_size();
        if grown > FRAME_TARGET && !(pairs.is_empty() && fits == 0) {
            break;
        }
        *size = grown;
        fits += 1;
    }
    let rest = (fits < v.len()).then(|| v.split_off(fits));
    if pairs.is_empty() {
        *pairs = v;
    } else {
        pairs.append(&mut v);
    }
    rest.filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConnConfig, FrameReader};
    use rask_proto::msg::{DataItem, PeerMsg};
    use rask_proto::{Datum, TaskId};

    #[tokio::test]
    async fn a_reader_that_does_not_read_holds_back_a_bounded_sender() {
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let (tx, writer) = channel_bounded::<PeerMsg>(1 << 20);
        writer.start(near);
        let reply = |req| PeerMsg::Data {
            req,
            items: vec![DataItem {
                task: TaskId(req),
                value: Datum::Buf(0),
            }],
            missing: vec![],
        };
        let payload = Bytes::from(vec![3u8; 1 << 20]);
        // The first reply takes the whole budget and cannot be written: nobody reads.
        tx.send_bounded(reply(1), vec![payload.clone()])
            .await
            .unwrap();
        let second = tx.send_bounded(reply(2), vec![payload.clone()]);
        tokio::pin!(second);
        for _ in 0..10 {
            let polled = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(std::future::Future::poll(second.as_mut(), cx).is_pending())
            })
            .await;
            assert!(polled, "the second reply was queued past the budget");
            tokio::task::yield_now().await;
        }
        // Reading the first frame frees the budget.
        let mut reader = FrameReader::new(&mut far, ConnConfig::default());
        reader.welcome();
        let first = reader.read_batch::<PeerMsg>().await.unwrap().unwrap();
        assert_eq!(first.bufs[0].len(), 1 << 20);
        second.await.unwrap();
        let next = reader.read_batch::<PeerMsg>().await.unwrap().unwrap();
        assert!(matches!(next.msgs[0], PeerMsg::Data { req: 2, .. }));
    }

    /// A reply to request `req` whose one value is a buffer of `len` bytes, each `req`.
    fn data_reply(req: u64, len: usize) -> (PeerMsg, Vec<Bytes>) {
        (
            PeerMsg::Data {
                req,
                items: vec![DataItem {
                    task: TaskId(req),
                    value: Datum::Buf(0),
                }],
                missing: vec![],
            },
            vec![Bytes::from(vec![req as u8; len])],
        )
    }

    #[tokio::test]
    async fn batches_and_single_messages_go_in_the_order_sent_each_with_its_buffers() {
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let (tx, writer) = channel::<PeerMsg>();
        let data = |req: u64| data_reply(req, 10 + req as usize);
        let ask = |req: u64, n: usize| PeerMsg::GetData {
            req,
            tasks: vec![TaskId(req); n],
            into_device: false,
        };
        let (m, b) = data(1);
        tx.send_with(m, b).unwrap();
        tx.send_batch(vec![data(2), data(3)]).unwrap();
        tx.send_batch(Vec::new()).unwrap();
        // Two messages whose headers together pass a frame's target: they go in two frames.
        let big = FRAME_TARGET / 8 * 5 / 8;
        tx.send_batch(vec![(ask(4, big), vec![]), (ask(5, big), vec![])])
            .unwrap();
        let (m, b) = data(6);
        tx.send_with(m, b).unwrap();
        drop(tx);
        writer.start(near);
        let mut reader = FrameReader::new(&mut far, ConnConfig::default());
        reader.welcome();
        let mut seen = Vec::new();
        let mut frames = 0;
        while let Some(batch) = reader.read_batch::<PeerMsg>().await.unwrap() {
            frames += 1;
            for m in batch.msgs {
                match m {
                    PeerMsg::Data { req, items, .. } => {
                        let Datum::Buf(i) = items[0].value else {
                            panic!("a buffer")
                        };
                        let buf = &batch.bufs[i as usize];
                        assert_eq!(buf.len(), 10 + req as usize, "the buffer of {req}");
                        assert!(buf.iter().all(|b| *b as u64 == req), "the buffer of {req}");
                        seen.push(req);
                    }
                    PeerMsg::GetData { req, tasks, .. } => {
                        assert_eq!(tasks.len(), big);
                        seen.push(req);
                    }
                    _ => panic!("unexpected message"),
                }
            }
        }
        assert_eq!(seen, [1, 2, 3, 4, 5, 6]);
        assert!(frames >= 2, "the large batch split: {frames} frames");
    }

    /// A frame holds at most MAX_BATCH messages: a batch queued after a single message is
    /// appended to it up to that count, and its rest goes in the next frame, in order.
    #[tokio::test]
    async fn a_batch_past_a_frames_count_goes_on_in_the_next_frame() {
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let (tx, writer) = channel::<PeerMsg>();
        let ask = |req: u64| PeerMsg::GetData {
            req,
            tasks: vec![],
            into_device: false,
        };
        tx.send(ask(0)).unwrap();
        let n = MAX_BATCH as u64 + 10;
        tx.send_batch((1..=n).map(|r| (ask(r), vec![])).collect())
            .unwrap();
        tx.send_batch(vec![(ask(n + 1), vec![])]).unwrap();
        drop(tx);
        writer.start(near);
        let mut reader = FrameReader::new(&mut far, ConnConfig::default());
        reader.welcome();
        let mut sizes = Vec::new();
        let mut seen = Vec::new();
        while let Some(batch) = reader.read_batch::<PeerMsg>().await.unwrap() {
            sizes.push(batch.msgs.len());
            for m in batch.msgs {
                let PeerMsg::GetData { req, .. } = m else {
                    panic!("unexpected message")
                };
                seen.push(req);
            }
        }
        // The rest of the large batch, and the small batch after it appended.
        assert_eq!(sizes, [MAX_BATCH, 12]);
        assert_eq!(seen, (0..=n + 1).collect::<Vec<_>>());
    }

    /// Frames encoded by their senders go between the messages queued before and after
    /// them, each as it was encoded, its buffers renumbered for the frame.
    #[tokio::test]
    async fn encoded_frames_keep_their_place_and_their_messages() {
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let (tx, writer) = channel::<PeerMsg>();
        let data = |req: u64| data_reply(req, req as usize);
        let (m, b) = data(1);
        tx.send_with(m, b).unwrap();
        tx.send_encoded(vec![data(2), data(3)]).unwrap();
        tx.send_encoded(Vec::new()).unwrap();
        let (m, b) = data(4);
        tx.send_with(m, b).unwrap();
        tx.send_batch(vec![data(5)]).unwrap();
        tx.send_encoded(vec![data(6)]).unwrap();
        drop(tx);
        writer.start(near);
        let mut reader = FrameReader::new(&mut far, ConnConfig::default());
        reader.welcome();
        let mut frames = Vec::new();
        while let Some(batch) = reader.read_batch::<PeerMsg>().await.unwrap() {
            let mut reqs = Vec::new();
            for m in batch.msgs {
                let PeerMsg::Data { req, items, .. } = m else {
                    panic!("unexpected message")
                };
                let Datum::Buf(i) = items[0].value else {
                    panic!("a buffer")
                };
                assert_eq!(*batch.bufs[i as usize], vec![req as u8; req as usize][..]);
                reqs.push(req);
            }
            frames.push(reqs);
        }
        assert_eq!(frames, [vec![1], vec![2, 3], vec![4, 5], vec![6]]);
    }

    #[tokio::test]
    async fn a_batch_to_a_closed_writer_is_an_error() {
        let (tx, writer) = channel::<PeerMsg>();
        drop(writer);
        assert!(matches!(
            tx.send_batch(Vec::new()),
            Err(TransportError::Closed)
        ));
        let ask = PeerMsg::GetData {
            req: 1,
            tasks: vec![],
            into_device: false,
        };
        assert!(matches!(
            tx.send_batch(vec![(ask.clone(), vec![])]),
            Err(TransportError::Closed)
        ));
        assert!(matches!(
            tx.send_encoded(vec![(ask, vec![])]),
            Err(TransportError::Closed)
        ));
        assert!(matches!(
            tx.send_encoded(Vec::new()),
            Err(TransportError::Closed)
        ));
    }
}

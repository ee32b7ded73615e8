//! Routing the core's actions to the connections' writers, in the order the core gave
//! them, coalescing frees and copies per worker. Decides nothing: what to send is the
//! core's.

use std::sync::Arc;

use bytes::Bytes;

use rask_proto::msg::{split_map_key, DepLoc, MapNews, TaskError, ToClient, ToWorker};
use rask_proto::packed::Packed;
use rask_proto::{ClientId, TaskId, WorkerId};
use rask_scheduler_core::Action;
use rustc_hash::FxHashMap;
use tracing::info;

use crate::server::{holders_of, ClientConn, RetireReply, Server, WorkerConn};

/// The most actions whose room [`Server::flush`] keeps from one batch to the next, beyond
/// twice what the batch used.
const SPARE_ACTIONS: usize = 1 << 13;

/// The most keys the news of one message names ([`ToClient::MapInMemory`]): a graph of
/// known keys submitted again has news of all of them at once, and a message stays well
/// within a frame.
const MAP_NEWS_MAX: usize = 4096;

/// Messages for each connection, gathered while the core's actions are routed and handed
/// to each connection's writer at once: one queue entry per connection and batch.
#[derive(Default)]
struct Outboxes {
    workers: FxHashMap<WorkerId, Vec<(ToWorker, Vec<Bytes>)>>,
    clients: FxHashMap<ClientId, Vec<(ToClient, Vec<Bytes>)>>,
    /// The messages each connection had in its batches (see [`OutboxSizes`]).
    sized: OutboxSizes,
}

/// How many messages each connection had in its batches: the larger of its last batch's
/// and half of what it had before. Its list starts with room for twice as many: lists
/// of thousands grown as they fill are copied a dozen times, and sized by the last batch
/// alone they still grew in most batches of a steady flow (a round with nothing for a
/// connection came between two with a thousand).
#[derive(Default)]
pub(crate) struct OutboxSizes {
    workers: FxHashMap<WorkerId, usize>,
    clients: FxHashMap<ClientId, usize>,
}

/// The room a connection's list starts with, for its count in [`OutboxSizes`].
fn room(count: Option<&usize>) -> usize {
    count.map_or(0, |n| 2 * n)
}

/// Notes a batch of `len` messages in a connection's `count` (see [`OutboxSizes`]).
fn note_size(count: &mut usize, len: usize) {
    *count = len.max(*count / 2);
}

impl Outboxes {
    fn new(sized: OutboxSizes) -> Self {
        Outboxes {
            sized,
            ..Default::default()
        }
    }

    fn for_worker(&mut self, w: WorkerId, m: ToWorker, bufs: Vec<Bytes>) {
        let sized = &self.sized.workers;
        self.workers
            .entry(w)
            .or_insert_with(|| Vec::with_capacity(room(sized.get(&w))))
            .push((m, bufs));
    }

    /// Queues the news of a key in memory for client `c`: a key of a map's form goes in
    /// the client's last message if that is the news of the same map's keys held by the
    /// same workers (and holds fewer than [`MAP_NEWS_MAX`]), else in a new one, with room
    /// for `room` keys.
    #[allow(clippy::too_many_arguments)]
    fn key_news(
        &mut self,
        c: ClientId,
        key: Arc<str>,
        task: TaskId,
        nbytes: u64,
        holders: Vec<WorkerId>,
        value: Option<Packed>,
        room: usize,
    ) {
        let Some((prefix, n)) = split_map_key(&key) else {
            let news = ToClient::KeyInMemory {
                // The task's key, shared: no copy a task.
                key: key.into(),
                task,
                nbytes,
                holders,
                value,
            };
            return self.for_client(c, news);
        };
        let news = MapNews {
            n,
            task,
            nbytes,
            value,
        };
        let list = self.client_list(c);
        if let Some((
            ToClient::MapInMemory {
                prefix: p,
                holders: h,
                keys,
            },
            _,
        )) = list.last_mut()
        {
            if keys.len() < MAP_NEWS_MAX && **p == *prefix && *h == holders {
                keys.push(news);
                return;
            }
        }
        let m = ToClient::MapInMemory {
            prefix: prefix.into(),
            holders,
            keys: {
                let mut keys = Vec::with_capacity(room.max(1));
                keys.push(news);
                keys
            },
        };
        list.push((m, Vec::new()));
    }

    fn for_client(&mut self, c: ClientId, m: ToClient) {
        self.client_list(c).push((m, Vec::new()));
    }

    /// Client `c`'s list of messages, made with room for its recent batches if it has none.
    fn client_list(&mut self, c: ClientId) -> &mut Vec<(ToClient, Vec<Bytes>)> {
        let sized = &self.sized.clients;
        self.clients
            .entry(c)
            .or_insert_with(|| Vec::with_capacity(room(sized.get(&c))))
    }
}

impl Server {
    /// Forgets the sizes of the batches of a connection gone.
    pub(crate) fn forget_outbox(&mut self, peer: crate::conn::Peer) {
        match peer {
            crate::conn::Peer::Worker(w) => drop(self.outbox_sizes.workers.remove(&w)),
            crate::conn::Peer::Client(c) => drop(self.outbox_sizes.clients.remove(&c)),
        }
    }

    /// Routes the core's actions; frees to one worker coalesce into one message, sent
    /// before any later compute or copy to that worker (a task freed and given back to
    /// the same worker in one step must arrive in that order), and copies to one worker
    /// coalesce likewise, sent before any later free. Each connection's messages go to
    /// its writer together, in the order routed.
    pub(crate) fn flush(&mut self) {
        let mut frees: FxHashMap<WorkerId, Vec<TaskId>> = FxHashMap::default();
        let mut copies: FxHashMap<WorkerId, Vec<DepLoc>> = FxHashMap::default();
        let mut out = Outboxes::new(std::mem::take(&mut self.outbox_sizes));
        let mut actions = self
            .core
            .swap_actions(std::mem::take(&mut self.spare_actions));
        let used = actions.len();
        let mut todo = actions.drain(..);
        while let Some(a) = todo.next() {
            match a {
                Action::Compute { worker, msg, bufs } => {
                    if let Some(tasks) = frees.remove(&worker) {
                        out.for_worker(worker, ToWorker::Free { tasks }, Vec::new());
                    }
                    out.for_worker(worker, ToWorker::Compute(msg), bufs);
                }
                Action::Steal { worker, task, run } => {
                    if let Some(tasks) = frees.remove(&worker) {
                        out.for_worker(worker, ToWorker::Free { tasks }, Vec::new());
                    }
                    out.for_worker(worker, ToWorker::Steal { task, run }, Vec::new());
                }
                Action::Free { worker, task } => {
                    if let Some(tasks) = copies.remove(&worker) {
                        out.for_worker(worker, ToWorker::AcquireReplicas { tasks }, Vec::new());
                    }
                    frees.entry(worker).or_default().push(task)
                }
                Action::AcquireReplica { worker, dep } => {
                    if let Some(tasks) = frees.remove(&worker) {
                        out.for_worker(worker, ToWorker::Free { tasks }, Vec::new());
                    }
                    copies.entry(worker).or_default().push(dep);
                }
                Action::CloseWorker { worker } => {
                    if let Some(conn) = self.workers.get(&worker) {
                        info!(worker = worker.0, name = %conn.spec.name, "closing the worker: it retired");
                    }
                    let reason = "retired".into();
                    out.for_worker(worker, ToWorker::Close { reason }, Vec::new());
                }
                Action::Retired {
                    client,
                    req,
                    workers,
                } => {
                    // The reply may go at once: what was routed before it goes first.
                    self.send(&mut out);
                    let waiting = workers
                        .iter()
                        .map(|(w, _)| *w)
                        .filter(|w| self.workers.contains_key(w))
                        .collect();
                    self.retire_replies.push(RetireReply {
                        client,
                        req,
                        names: workers.iter().map(|(_, n)| n.to_string()).collect(),
                        waiting,
                    });
                    // Sent now if every one of them has left already.
                    self.retired_worker_left(WorkerId(u32::MAX));
                }
                Action::KeyInMemory {
                    client,
                    key,
                    task,
                    nbytes,
                    holders,
                    value,
                } => {
                    // The news of a map's keys is made with room for every action left
                    // (news of that map, most often), up to a message's most.
                    let room = (todo.len() + 1).min(MAP_NEWS_MAX);
                    self.key_in_memory(&mut out, client, holders, |out, holders| {
                        out.key_news(client, key, task, nbytes, holders, value, room)
                    })
                }
                Action::KeyErred { client, key, error } => {
                    let error = error_msg(&error);
                    let key = key.to_string();
                    out.for_client(client, ToClient::KeyErred { key, error });
                }
            }
        }
        drop(todo);
        // Kept for a later batch, unless far larger than this batch needed (its room was
        // made by one large batch, such as a graph released at once): under a steady flow
        // of large batches, the room is kept and not made again by growing each time.
        if actions.capacity() <= SPARE_ACTIONS.max(2 * used) {
            self.spare_actions = actions;
        }
        for (w, tasks) in copies {
            out.for_worker(w, ToWorker::AcquireReplicas { tasks }, Vec::new());
        }
        for (w, tasks) in frees {
            out.for_worker(w, ToWorker::Free { tasks }, Vec::new());
        }
        self.send(&mut out);
        self.outbox_sizes = out.sized;
    }

    /// Hands each connection's messages to its writer (those of connections gone are
    /// dropped), noting how many each had.
    fn send(&self, out: &mut Outboxes) {
        for (w, msgs) in out.workers.drain() {
            match self.workers.get(&w) {
                Some(WorkerConn { tx: Some(tx), .. }) => {
                    note_size(out.sized.workers.entry(w).or_default(), msgs.len());
                    let _ = tx.send_batch(msgs);
                }
                _ => drop(out.sized.workers.remove(&w)),
            }
        }
        for (c, msgs) in out.clients.drain() {
            match self.clients.get(&c) {
                Some(ClientConn { tx: Some(tx), .. }) => {
                    note_size(out.sized.clients.entry(c).or_default(), msgs.len());
                    let _ = tx.send_batch(msgs);
                }
                _ => drop(out.sized.clients.remove(&c)),
            }
        }
    }

    /// Queues news of a key in memory for a client, naming only holders still connected,
    /// after telling it where those it was not told of yet can be reached.
    fn key_in_memory(
        &mut self,
        out: &mut Outboxes,
        client: ClientId,
        mut holders: Vec<WorkerId>,
        news: impl FnOnce(&mut Outboxes, Vec<WorkerId>),
    ) {
        let Some(ClientConn { tx: Some(_), told }) = self.clients.get_mut(&client) else {
            return;
        };
        holders.retain(|w| self.workers.contains_key(w));
        if holders.iter().any(|w| !told.contains(w)) {
            let new: Vec<WorkerId> = holders
                .iter()
                .copied()
                .filter(|w| told.insert(*w))
                .collect();
            let holders = holders_of(&self.workers, &new);
            out.for_client(client, ToClient::Workers { holders });
        }
        news(out, holders);
    }

    pub(crate) fn to_worker(&self, w: WorkerId, m: ToWorker) {
        if let Some(WorkerConn { tx: Some(tx), .. }) = self.workers.get(&w) {
            let _ = tx.send(m);
        }
    }
}

pub(crate) fn error_msg(e: &Arc<rask_scheduler_core::TaskFailure>) -> TaskError {
    TaskError {
        key: e.key.clone(),
        op: e.op.clone(),
        message: e.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::{note_size, room, Outboxes, MAP_NEWS_MAX};
    use rask_proto::msg::{MapNews, ToClient};
    use rask_proto::packed::Packed;
    use rask_proto::{ClientId, Datum, TaskId, WorkerId};

    /// What a client's list says, briefly: a map's news as its prefix, holders and
    /// numbers, a key's news as its key.
    fn said(out: &Outboxes, c: ClientId) -> Vec<String> {
        out.clients[&c]
            .iter()
            .map(|(m, _)| match m {
                ToClient::MapInMemory {
                    prefix,
                    holders,
                    keys,
                } => {
                    let ns: Vec<u64> = keys.iter().map(|k| k.n).collect();
                    format!("{}@{holders:?}{ns:?}", &**prefix)
                }
                ToClient::KeyInMemory { key, .. } => format!("key {}", &**key),
                m => format!("{m:?}"),
            })
            .collect()
    }

    /// The news of a map's keys goes in one message while the keys are of one map and
    /// held by the same workers; any other message, another map's key, other holders or
    /// a key of no map's form start another, so the order stays as routed.
    #[test]
    fn a_maps_news_shares_a_message_until_something_else_comes_between() {
        let mut out = Outboxes::default();
        let c = ClientId(1);
        let w = |ids: &[u32]| ids.iter().map(|i| WorkerId(*i)).collect::<Vec<_>>();
        let news = |out: &mut Outboxes, key: &str, holders: &[u32]| {
            out.key_news(
                c,
                key.into(),
                TaskId(7),
                8,
                w(holders),
                Some(Packed::new(&Datum::Int(3))),
                2,
            )
        };
        news(&mut out, "inc-5", &[1]);
        news(&mut out, "inc-6", &[1]);
        news(&mut out, "inc-2", &[1]);
        news(&mut out, "inc-3", &[2]);
        news(&mut out, "dec-3", &[2]);
        news(&mut out, "total", &[2]);
        news(&mut out, "dec-4", &[2]);
        out.for_client(c, ToClient::Echo { seq: 9 });
        news(&mut out, "dec-5", &[2]);
        // Of no map's form (a leading zero): named by its key.
        news(&mut out, "dec-05", &[2]);
        assert_eq!(
            said(&out, c),
            [
                "inc@[WorkerId(1)][5, 6, 2]",
                "inc@[WorkerId(2)][3]",
                "dec@[WorkerId(2)][3]",
                "key total",
                "dec@[WorkerId(2)][4]",
                "Echo { seq: 9 }",
                "dec@[WorkerId(2)][5]",
                "key dec-05",
            ]
        );
        let ToClient::MapInMemory { keys, .. } = &out.clients[&c][0].0 else {
            panic!("a map's news")
        };
        assert_eq!(
            keys[0],
            MapNews {
                n: 5,
                task: TaskId(7),
                nbytes: 8,
                value: Some(Packed::new(&Datum::Int(3))),
            }
        );
    }

    /// One message names at most MAP_NEWS_MAX keys.
    #[test]
    fn a_maps_news_is_cut_into_messages_of_at_most_the_most_keys() {
        let mut out = Outboxes::default();
        let c = ClientId(1);
        for n in 0..2 * MAP_NEWS_MAX + 1 {
            out.key_news(
                c,
                format!("x-{n}").into(),
                TaskId(n as u64),
                0,
                vec![],
                None,
                1,
            );
        }
        let sizes: Vec<usize> = out.clients[&c]
            .iter()
            .map(|(m, _)| match m {
                ToClient::MapInMemory { keys, .. } => keys.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, [MAP_NEWS_MAX, MAP_NEWS_MAX, 1]);
    }

    /// A connection's count follows its largest recent batch, halving with each smaller
    /// one after it; its list starts with room for twice the count.
    #[test]
    fn a_count_keeps_the_largest_recent_batch_and_halves_after() {
        let mut count = 0;
        let seen: Vec<usize> = [1000, 10, 300, 10, 10, 2000]
            .into_iter()
            .map(|len| {
                note_size(&mut count, len);
                count
            })
            .collect();
        assert_eq!(seen, [1000, 500, 300, 150, 75, 2000]);
        assert_eq!(room(Some(&count)), 4000);
        assert_eq!(room(None), 0);
    }
}

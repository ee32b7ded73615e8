//! How much the main loop handles before it sends: a round of at most
//! [`ROUND_MESSAGES`] messages, oldest first, then a flush, then the other tasks' turn.
//!
//! The loop used to handle everything it had read before sending anything. With cheap
//! tasks that made the scheduler and its workers take turns instead of working side by
//! side: a worker reported thousands of results in one frame, the scheduler handled them
//! all (and placed as many tasks) before the first new compute message left, and the
//! workers, done with their queues meanwhile, sat idle until it had; then the scheduler
//! waited on their next reports. In rounds, the compute messages of the first reports
//! leave while the later ones are still being handled: the connections' writers run
//! between rounds (they share the loop's thread), and the readers read what came
//! meanwhile.
//!
//! A batch larger than what is left of a round is split: its first messages go in this
//! round, the rest stays first in line (holding the connection's unread budget until it
//! is handled). Events are handled in the order they were read; a batch's messages are
//! handled one by one anyway, so where it is split changes nothing but when the next
//! flush comes.

use std::collections::VecDeque;

use rask_transport::Batch;

use crate::conn::Event;

/// The most messages a round handles (a map's tasks count one each, as do the keys a
/// release names): about a millisecond of the core's time.
pub(crate) const ROUND_MESSAGES: usize = 1024;

/// What a round needs to know of an event.
pub(crate) trait Splittable: Sized {
    /// How many messages it holds, counted as [`ROUND_MESSAGES`] counts them (at least 1).
    fn messages(&self) -> usize;
    /// Takes its first messages, about `n` of them (at least one message, fewer than all),
    /// as an event of their own; `None` if it cannot be split so.
    fn split_front(&mut self, n: usize) -> Option<Self>;
}

/// Events read and not handled yet, oldest first.
#[derive(Debug)]
pub(crate) struct Backlog<E> {
    events: VecDeque<E>,
}

impl<E> Default for Backlog<E> {
    fn default() -> Self {
        Backlog {
            events: VecDeque::new(),
        }
    }
}

impl<E: Splittable> Backlog<E> {
    /// Whether events wait from an earlier round: the next round must not wait for new
    /// ones.
    pub(crate) fn waiting(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next round's events into `out`, oldest first, `arrived` after those waiting:
    /// up to [`ROUND_MESSAGES`] messages (at least one event).
    pub(crate) fn round(&mut self, arrived: impl IntoIterator<Item = E>, out: &mut Vec<E>) {
        self.events.extend(arrived);
        let mut left = ROUND_MESSAGES;
        while left > 0 {
            let Some(front) = self.events.front_mut() else {
                break;
            };
            let n = front.messages().max(1);
            if n <= left {
                left -= n;
                out.extend(self.events.pop_front());
                continue;
            }
            // Larger than what is left: its first messages go now, or it goes whole if it
            // cannot be split and is the round's first, or it waits.
            match front.split_front(left) {
                Some(part) => out.push(part),
                None if out.is_empty() => out.extend(self.events.pop_front()),
                None => {}
            }
            break;
        }
    }
}

impl Splittable for Event {
    fn messages(&self) -> usize {
        match self {
            Event::Batch(_, batch, _) => batch.msgs.iter().map(weight).sum::<usize>().max(1),
            _ => 1,
        }
    }

    fn split_front(&mut self, n: usize) -> Option<Self> {
        let Event::Batch(peer, batch, _) = self else {
            return None;
        };
        // The first messages whose weights fit in `n` (one at least).
        let mut take = 0;
        let mut sum = 0;
        for m in &batch.msgs {
            sum += weight(m);
            if take > 0 && sum > n {
                break;
            }
            take += 1;
        }
        if take >= batch.msgs.len() {
            return None;
        }
        let msgs: Vec<_> = batch.msgs.drain(..take).collect();
        let front = Batch {
            msgs,
            bufs: batch.bufs.clone(),
            frame_bytes: 0,
        };
        // The rest keeps the connection's unread budget.
        Some(Event::Batch(*peer, front, None))
    }
}

fn weight(m: &rask_proto::msg::ToScheduler) -> usize {
    use rask_proto::msg::ToScheduler;
    match m {
        ToScheduler::Map(map) => map.args.len(),
        ToScheduler::UpdateGraph(g) => g.tasks.len(),
        ToScheduler::ReleaseKeys { keys } => keys.len(),
        ToScheduler::ReleaseMapKeys { runs } => {
            usize::try_from(rask_proto::msg::run_keys(runs)).unwrap_or(usize::MAX)
        }
        _ => 1,
    }
    .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event: its source, and the numbers of its messages in that source.
    #[derive(Clone, Debug, PartialEq)]
    struct Ev {
        source: u32,
        msgs: Vec<u32>,
        splits: bool,
    }

    impl Splittable for Ev {
        fn messages(&self) -> usize {
            self.msgs.len().max(1)
        }
        fn split_front(&mut self, n: usize) -> Option<Self> {
            if !self.splits || n >= self.msgs.len() {
                return None;
            }
            let front = self.msgs.drain(..n.max(1)).collect();
            Some(Ev {
                source: self.source,
                msgs: front,
                splits: true,
            })
        }
    }

    fn batch(source: u32, from: u32, n: u32) -> Ev {
        Ev {
            source,
            msgs: (from..from + n).collect(),
            splits: true,
        }
    }

    fn count(out: &[Ev]) -> usize {
        out.iter().map(|e| e.msgs.len()).sum()
    }

    #[test]
    fn a_large_batch_goes_in_rounds() {
        let mut b = Backlog::default();
        let mut out = Vec::new();
        b.round([batch(1, 0, 3000), batch(2, 0, 10)], &mut out);
        assert_eq!(out, [batch(1, 0, ROUND_MESSAGES as u32)]);
        assert!(b.waiting());
        out.clear();
        // What came meanwhile waits behind it.
        b.round([batch(3, 0, 5)], &mut out);
        assert_eq!(out, [batch(1, 1024, 1024)]);
        out.clear();
        b.round([], &mut out);
        assert_eq!(out, [batch(1, 2048, 952), batch(2, 0, 10), batch(3, 0, 5)]);
        assert!(!b.waiting());
    }

    #[test]
    fn an_event_that_cannot_be_split_goes_whole_when_first_or_waits() {
        let mut b = Backlog::default();
        let mut out = Vec::new();
        let whole = |source, n| Ev {
            splits: false,
            ..batch(source, 0, n)
        };
        b.round([batch(1, 0, 1000), whole(2, 500), whole(3, 5000)], &mut out);
        assert_eq!(out, [batch(1, 0, 1000)], "it waits for the next round");
        out.clear();
        b.round([], &mut out);
        assert_eq!(out, [whole(2, 500)]);
        out.clear();
        b.round([], &mut out);
        assert_eq!(out, [whole(3, 5000)], "first in line, it goes whole");
        assert!(!b.waiting());
    }

    /// A scheduler's event counts a map's tasks, a graph's and a release's keys, one for
    /// any other message, and splits between messages, the front keeping the buffers.
    #[test]
    fn a_batch_counts_tasks_and_keys_and_splits_between_messages() {
        use crate::conn::Peer;
        use bytes::Bytes;
        use rask_proto::msg::{MapMsg, TaskSpec, ToScheduler, UpdateGraphMsg};
        use rask_proto::{ClientId, Datum};
        let map = |n| {
            ToScheduler::Map(Box::new(MapMsg {
                prefix: "m".into(),
                first: 0,
                op: "inc".into(),
                args: vec![Datum::Int(1); n],
                resources: Vec::new(),
            }))
        };
        let release = |n: usize| ToScheduler::ReleaseKeys {
            keys: (0..n).map(|i| format!("k-{i}")).collect(),
        };
        let graph = |n: usize| {
            ToScheduler::UpdateGraph(UpdateGraphMsg {
                tasks: (0..n)
                    .map(|i| TaskSpec {
                        key: format!("g-{i}"),
                        op: "inc".into(),
                        args: Datum::Int(1),
                        deps: Vec::new(),
                        resources: Vec::new(),
                    })
                    .collect(),
                wanted: Vec::new(),
                more: false,
            })
        };
        let bufs = vec![Bytes::from_static(b"buffer")];
        let mut e = Event::Batch(
            Peer::Client(ClientId(1)),
            Batch {
                msgs: vec![
                    map(600),
                    release(300),
                    ToScheduler::Info { req: 1 },
                    graph(7),
                    map(0),
                ],
                bufs: bufs.clone(),
                frame_bytes: 99,
            },
            None,
        );
        assert_eq!(e.messages(), 600 + 300 + 1 + 7 + 1);
        let sizes = |e: &Event| match e {
            Event::Batch(_, b, _) => (b.msgs.len(), b.bufs.clone()),
            _ => unreachable!(),
        };
        // The first two fill 900 exactly; then the next one alone, though past the count.
        let front = e.split_front(900).expect("split");
        assert_eq!((front.messages(), sizes(&front)), (900, (2, bufs.clone())));
        let front = e.split_front(0).expect("split");
        assert_eq!(front.messages(), 1);
        assert_eq!(e.messages(), 7 + 1);
        let front = e.split_front(3).expect("split");
        assert_eq!(front.messages(), 7, "a message is not split");
        assert_eq!(
            e.split_front(5).map(|e| e.messages()),
            None,
            "one message left"
        );
        let left = Event::Left(Peer::Client(ClientId(1)), None, false);
        assert_eq!(left.messages(), 1);
    }

    /// Whatever comes in whatever rounds, every message is handled once, in its source's
    /// order, and no round passes the budget unless one event alone does.
    #[test]
    fn every_message_goes_once_in_order_within_the_budget() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut b = Backlog::default();
        let mut sent = [0u32; 4];
        let mut handled: Vec<Vec<u32>> = vec![Vec::new(); 4];
        let mut step = 0;
        while step < 2000 || b.waiting() {
            step += 1;
            let arrived: Vec<Ev> = if step <= 2000 {
                (0..next() % 4)
                    .map(|_| {
                        let source = (next() % 4) as u32;
                        let n = (next() % 2500) as u32 + 1;
                        let e = Ev {
                            splits: source != 3,
                            ..batch(source, sent[source as usize], n)
                        };
                        sent[source as usize] += n;
                        e
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let mut out = Vec::new();
            let work = b.waiting() || !arrived.is_empty();
            b.round(arrived, &mut out);
            assert_eq!(
                work,
                !out.is_empty(),
                "a round with work to do makes progress"
            );
            assert!(
                count(&out) <= ROUND_MESSAGES || out.len() == 1,
                "a round of {} messages in {} events",
                count(&out),
                out.len()
            );
            for e in out {
                handled[e.source as usize].extend(e.msgs);
            }
        }
        for s in 0..4 {
            assert!(
                handled[s].iter().copied().eq(0..sent[s]),
                "source {s}: every message once, in order"
            );
        }
    }
}

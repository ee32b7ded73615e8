//! How much the main loop handles before it sends: a round of at most
//! [`ROUND_MESSAGES`] messages, the peers with events waiting taking turns, then a flush,
//! then the other tasks' turn.
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
//! Rounds taken oldest first still made workers wait: a client's map of 100,000 tasks
//! arrives as a hundred submissions within a few milliseconds, and the workers' reports
//! of their first tasks queued behind all of them — the workers idle while the scheduler
//! added tasks it could not give them. So the peers with events waiting (up to the first
//! event that belongs to no peer, see below) take turns: each round serves them in the
//! order their events wait, each taking what it waits for from what those before it left
//! of the round, and the one served first is served last in the next round. A worker's
//! report of a few hundred results goes within two rounds whatever a client submitted
//! before it (within as many rounds as peers wait, when all wait for much). Turns, not
//! equal parts of every round: a round split among all peers sends smaller frames to
//! more of them (on the echo path, a third more writes and a tenth more CPU time a
//! message).
//!
//! Only events of different peers change places, as they may anyway: they came over
//! different connections. An event that belongs to no peer (a hello, an observer's
//! question) is a fence: nothing read after it is handled before it, nor it before what
//! was read earlier — a client's hello to resume must not pass the end of its old
//! connection.
//!
//! An event larger than what is left for its peer is split: its first messages go in this round,
//! the rest stays first in its peer's line (holding the connection's unread budget until
//! it is handled). A batch's messages are handled one by one anyway, so where it is split
//! changes nothing but when the next flush comes.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use rask_transport::Batch;

use crate::conn::Event;

/// The most messages a round handles (a map's tasks count one each, as do the keys a
/// release names): about a millisecond of the core's time.
pub(crate) const ROUND_MESSAGES: usize = 1024;

/// What a round needs to know of an event.
pub(crate) trait Splittable: Sized {
    /// Whose events keep their order among themselves.
    type Source: Copy + Eq + std::hash::Hash;
    /// Its peer; `None` for a fence (see the module's note).
    fn source(&self) -> Option<Self::Source>;
    /// How many messages it holds, counted as [`ROUND_MESSAGES`] counts them (at least 1).
    fn messages(&self) -> usize;
    /// Takes its first messages, about `n` of them (at least one message, fewer than all),
    /// as an event of their own; `None` if it cannot be split so.
    fn split_front(&mut self, n: usize) -> Option<Self>;
    /// Takes its last messages, about `n` of them (at least one message, fewer than all),
    /// as an event of their own that holds what the whole held until handled (it is
    /// handled last); `None` if it cannot be split so.
    fn split_back(&mut self, n: usize) -> Option<Self>;
}

/// Events larger than this are cut into pieces of about this many messages as they
/// arrive: a round then takes pieces, and a batch of ten thousand messages is not moved
/// or counted again for each round that takes a part of it.
const PIECE: usize = ROUND_MESSAGES / 4;

/// An event waiting, with its [`Splittable::messages`] (counted once).
#[derive(Debug)]
struct Waiting<E> {
    weight: usize,
    event: E,
}

impl<E: Splittable> Waiting<E> {
    fn new(event: E) -> Self {
        Waiting {
            weight: event.messages().max(1),
            event,
        }
    }
}

/// Events read and not handled yet, in the order read.
#[derive(Debug)]
pub(crate) struct Backlog<E: Splittable> {
    events: VecDeque<Waiting<E>>,
    /// The peer served first in the last round: it is served last in the next.
    first: Option<E::Source>,
}

impl<E: Splittable> Default for Backlog<E> {
    fn default() -> Self {
        Backlog {
            events: VecDeque::new(),
            first: None,
        }
    }
}

/// A peer's share of a round being made.
#[derive(Clone, Copy, Default)]
struct Share {
    /// Messages of it waiting before the fence.
    waiting: usize,
    /// Messages of it the round may take.
    part: usize,
    /// Messages of it taken.
    taken: usize,
    /// One of its events waits: its later ones wait too.
    closed: bool,
}

impl<E: Splittable> Backlog<E> {
    /// Whether events wait from an earlier round: the next round must not wait for new
    /// ones.
    pub(crate) fn waiting(&self) -> bool {
        !self.events.is_empty()
    }

    /// An event read: in line, cut into pieces if it is large (see [`PIECE`]).
    fn arrive(&mut self, mut e: E) {
        let mut weight = e.messages().max(1);
        // Cut from the back: each cut moves only its own messages. (The list grows as cut:
        // a size is what a peer announces, up to `usize::MAX` for one release.)
        let mut pieces = Vec::new();
        while weight > PIECE {
            let Some(back) = e.split_back(PIECE) else {
                break;
            };
            let back = Waiting::new(back);
            weight = rest_of(weight, back.weight, &e);
            pieces.push(back);
        }
        self.events.push_back(Waiting { weight, event: e });
        self.events.extend(pieces.into_iter().rev());
    }

    /// The next round's events into `out`, `arrived` after those waiting: the fences
    /// first in line, then up to [`ROUND_MESSAGES`] messages shared among the peers
    /// whose events come before the next fence, each peer's in the order read (at least
    /// one event when any waits).
    pub(crate) fn round(&mut self, arrived: impl IntoIterator<Item = E>, out: &mut Vec<E>) {
        for e in arrived {
            self.arrive(e);
        }
        let mut left = ROUND_MESSAGES;
        while self
            .events
            .front()
            .is_some_and(|w| w.event.source().is_none())
        {
            out.extend(self.events.pop_front().map(|w| w.event));
            left = left.saturating_sub(1);
        }
        let end = self
            .events
            .iter()
            .position(|w| w.event.source().is_none())
            .unwrap_or(self.events.len());
        if left == 0 || end == 0 {
            return;
        }
        // The peers in the order their events wait, the one served first last time at
        // the end; each may have what those before it left of the round.
        let mut shares: FxHashMap<E::Source, Share> = FxHashMap::default();
        let mut order = Vec::new();
        for w in self.events.range(..end) {
            let source = w.event.source().expect("before the fence");
            let share = shares.entry(source).or_insert_with(|| {
                order.push(source);
                Share::default()
            });
            share.waiting = share.waiting.saturating_add(w.weight);
        }
        if let Some(at) = order.iter().position(|s| Some(*s) == self.first) {
            let last = order.remove(at);
            order.push(last);
        }
        let mut budget = left;
        for source in &order {
            let share = shares.get_mut(source).expect("listed above");
            share.part = share.waiting.min(budget);
            share.closed = share.part == 0;
            budget -= share.part;
        }
        self.first = order.first().copied();
        let mut open = shares.values().filter(|s| !s.closed).count();
        // Events looked at and left, in order; those after them were not looked at.
        let mut kept = Vec::new();
        for _ in 0..end {
            if open == 0 {
                break;
            }
            let Some(Waiting { weight, mut event }) = self.events.pop_front() else {
                break;
            };
            let share = shares
                .get_mut(&event.source().expect("before the fence"))
                .expect("counted above");
            if share.closed {
                kept.push(Waiting { weight, event });
                continue;
            }
            let room = share.part.saturating_sub(share.taken);
            if weight <= room {
                share.taken += weight;
                out.push(event);
                continue;
            }
            // Larger than its peer's room: its first messages go now (the first alone may
            // be larger), or it goes whole if it cannot be split, or it waits; its peer's
            // later events wait behind it. A peer's first event of the round may go past
            // its room: the first peer's first event always goes, whatever its size. Only
            // one event a round can: every peer but the last one with a part has a part of
            // all it waits for, so its events fit.
            share.closed = true;
            open -= 1;
            let may_pass = share.taken == 0;
            match (room > 0).then(|| event.split_front(room)).flatten() {
                Some(front) => {
                    let front = Waiting::new(front);
                    let rest = Waiting {
                        weight: rest_of(weight, front.weight, &event),
                        event,
                    };
                    if front.weight <= room || may_pass {
                        out.push(front.event);
                    } else {
                        kept.push(front);
                    }
                    kept.push(rest);
                }
                None if may_pass => out.push(event),
                None => kept.push(Waiting { weight, event }),
            }
        }
        for w in kept.into_iter().rev() {
            self.events.push_front(w);
        }
    }
}

/// The size of what is left of an event of size `total` once a part of size `part` is
/// taken: counted again when `total` saturated (what a peer announced past `usize::MAX`).
fn rest_of<E: Splittable>(total: usize, part: usize, rest: &E) -> usize {
    match total {
        usize::MAX => rest.messages().max(1),
        _ => total.saturating_sub(part).max(1),
    }
}

impl Splittable for Event {
    type Source = crate::conn::Peer;

    fn source(&self) -> Option<crate::conn::Peer> {
        match self {
            Event::Writer { peer, .. } | Event::Batch(peer, ..) | Event::Left(peer, ..) => {
                Some(*peer)
            }
            Event::Hello { .. } | Event::Observe(_) => None,
        }
    }

    fn messages(&self) -> usize {
        match self {
            Event::Batch(_, batch, _) => batch
                .msgs
                .iter()
                .fold(0usize, |n, m| n.saturating_add(weight(m)))
                .max(1),
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
            sum = weight(m).saturating_add(sum);
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

    fn split_back(&mut self, n: usize) -> Option<Self> {
        let Event::Batch(peer, batch, held) = self else {
            return None;
        };
        // The last messages whose weights fit in `n` (one at least), not all.
        let mut at = batch.msgs.len();
        let mut sum = 0;
        while at > 1 {
            sum = weight(&batch.msgs[at - 1]).saturating_add(sum);
            if at < batch.msgs.len() && sum > n {
                break;
            }
            at -= 1;
        }
        if at == 0 || at >= batch.msgs.len() {
            return None;
        }
        let back = Batch {
            msgs: batch.msgs.split_off(at),
            bufs: batch.bufs.clone(),
            frame_bytes: 0,
        };
        // Handled last, it holds the connection's unread budget.
        Some(Event::Batch(*peer, back, held.take()))
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
mod tests;

use super::*;

/// The source of a fence.
const FENCE: u32 = u32::MAX;

/// An event: its source ([`FENCE`] for a fence), and the numbers of its messages in
/// that source.
#[derive(Clone, Debug, PartialEq)]
struct Ev {
    source: u32,
    msgs: Vec<u32>,
    splits: bool,
}

impl Splittable for Ev {
    type Source = u32;

    fn source(&self) -> Option<u32> {
        (self.source != FENCE).then_some(self.source)
    }

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
    fn split_back(&mut self, n: usize) -> Option<Self> {
        if !self.splits || n >= self.msgs.len() {
            return None;
        }
        let back = self.msgs.split_off(self.msgs.len() - n.max(1));
        Some(Ev {
            source: self.source,
            msgs: back,
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

fn whole(source: u32, from: u32, n: u32) -> Ev {
    Ev {
        splits: false,
        ..batch(source, from, n)
    }
}

fn fence(n: u32) -> Ev {
    batch(FENCE, n, 1)
}

/// Rounds' events as runs of messages, one a source's events in a row make (where
/// events are cut is the backlog's business).
fn merged(out: &[Ev]) -> Vec<(u32, Vec<u32>)> {
    let mut runs: Vec<(u32, Vec<u32>)> = Vec::new();
    for e in out {
        match runs.last_mut() {
            Some((source, msgs)) if *source == e.source => msgs.extend(&e.msgs),
            _ => runs.push((e.source, e.msgs.clone())),
        }
    }
    runs
}

fn count(out: &[Ev]) -> usize {
    out.iter().map(|e| e.msgs.len()).sum()
}

/// A round's messages as runs: (source, first message, count).
fn runs(out: &[Ev]) -> Vec<(u32, u32, usize)> {
    merged(out)
        .into_iter()
        .map(|(source, msgs)| (source, msgs[0], msgs.len()))
        .collect()
}

#[test]
fn a_small_batch_goes_within_two_rounds_whatever_another_peer_sent_before() {
    let mut b = Backlog::default();
    let mut out = Vec::new();
    // A client's large submission, then a worker's report.
    b.round([batch(1, 0, 3000), batch(2, 0, 10)], &mut out);
    assert_eq!(runs(&out), [(1, 0, 1024)]);
    out.clear();
    // The client was first: it is last now; the others take what they wait for.
    b.round([batch(3, 0, 5), batch(2, 10, 3)], &mut out);
    assert_eq!(
        runs(&out),
        [(1, 1024, 1006), (2, 0, 10), (3, 0, 5), (2, 10, 3)]
    );
    out.clear();
    b.round([], &mut out);
    assert_eq!(runs(&out), [(1, 2030, 970)]);
    assert!(!b.waiting());
}

#[test]
fn peers_that_wait_for_much_take_turns() {
    let mut b = Backlog::default();
    let mut out = Vec::new();
    let mut round = |arrived: Vec<Ev>| {
        out.clear();
        b.round(arrived, &mut out);
        runs(&out)
    };
    let arrived = vec![
        batch(1, 0, 2000),
        batch(2, 0, 100),
        batch(3, 0, 2000),
        batch(1, 2000, 5),
    ];
    assert_eq!(round(arrived), [(1, 0, 1024)]);
    assert_eq!(round(vec![]), [(2, 0, 100), (3, 0, 924)]);
    assert_eq!(round(vec![]), [(1, 1024, 976), (3, 924, 43), (1, 2000, 5)]);
    assert_eq!(round(vec![]), [(3, 967, 1024)]);
    assert_eq!(round(vec![]), [(3, 1991, 9)]);
    assert_eq!(round(vec![]), []);
}

#[test]
fn an_event_that_cannot_be_split_goes_whole_once_a_round_or_waits() {
    let mut b = Backlog::default();
    let mut out = Vec::new();
    b.round(
        [whole(1, 0, 600), whole(2, 0, 600), whole(3, 0, 600)],
        &mut out,
    );
    // The first fits; the second, past what is left, goes whole (one event a round
    // may); the third has no part of this round.
    assert_eq!(runs(&out), [(1, 0, 600), (2, 0, 600)]);
    out.clear();
    b.round([batch(1, 600, 100), whole(2, 600, 5000)], &mut out);
    // The first peer served is last in turn now; the one served first goes past
    // its part, whole.
    assert_eq!(runs(&out), [(3, 0, 600), (2, 600, 5000)]);
    out.clear();
    b.round([], &mut out);
    assert_eq!(runs(&out), [(1, 600, 100)]);
    assert!(!b.waiting());

    // Only a peer's first event of a round may go past its room.
    out.clear();
    b.round(
        [batch(3, 600, 424), whole(2, 5600, 300), whole(2, 5900, 500)],
        &mut out,
    );
    assert_eq!(runs(&out), [(3, 600, 424), (2, 5600, 300)]);
    out.clear();
    b.round([], &mut out);
    assert_eq!(runs(&out), [(2, 5900, 500)]);
}

#[test]
fn nothing_passes_a_fence() {
    let mut b = Backlog::default();
    let mut out = Vec::new();
    b.round(
        [
            batch(1, 0, 2000),
            fence(0),
            batch(2, 0, 3),
            fence(1),
            fence(2),
        ],
        &mut out,
    );
    // The second peer's batch, read after the fence, waits behind it and the first
    // peer's whole batch.
    assert_eq!(merged(&out), merged(&[batch(1, 0, 1024)]));
    out.clear();
    b.round([batch(3, 0, 1)], &mut out);
    assert_eq!(merged(&out), merged(&[batch(1, 1024, 976)]));
    out.clear();
    b.round([], &mut out);
    assert_eq!(merged(&out), merged(&[fence(0), batch(2, 0, 3)]));
    out.clear();
    b.round([], &mut out);
    assert_eq!(merged(&out), merged(&[fence(1), fence(2), batch(3, 0, 1)]));
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
            args: vec![Datum::Int(1).into(); n],
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
    let client_batch = |msgs, held| {
        let batch = Batch {
            msgs,
            bufs: bufs.clone(),
            frame_bytes: 99,
        };
        Event::Batch(Peer::Client(ClientId(1)), batch, held)
    };
    let info = ToScheduler::Info { req: 1 };
    let mut e = client_batch(
        vec![map(600), release(300), info.clone(), graph(7), map(0)],
        None,
    );
    assert_eq!(e.messages(), 600 + 300 + 1 + 7 + 1);
    let runs = ToScheduler::ReleaseMapKeys {
        runs: vec![rask_proto::msg::KeyRun {
            prefix: "m".into(),
            first: 5,
            count: 40,
        }],
    };
    assert_eq!(weight(&runs), 40, "a release in runs counts its keys");
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
    assert_eq!(left.source(), Some(Peer::Client(ClientId(1))));

    // Cut from the back, the back holds the connection's unread budget.
    let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(10));
    let held = budget.clone().try_acquire_many_owned(4).expect("permits");
    let mut e = client_batch(
        vec![map(600), release(300), info.clone(), graph(7)],
        Some(held),
    );
    let last = e.split_back(8).expect("split");
    assert_eq!((last.messages(), sizes(&last)), (8, (2, bufs.clone())));
    let holds = |e: &Event| matches!(e, Event::Batch(_, _, Some(_)));
    assert!(holds(&last) && !holds(&e));
    let back = e.split_back(1).expect("split");
    assert_eq!(back.messages(), 300, "a message is not split");
    assert!(!holds(&back));
    assert_eq!(
        e.split_back(1000).map(|e| e.messages()),
        None,
        "one message left"
    );
    assert_eq!(e.messages(), 600);
    // All fit: all but the first.
    let info = |req| ToScheduler::Info { req };
    let mut small = Event::Batch(
        Peer::Worker(rask_proto::WorkerId(2)),
        Batch {
            msgs: vec![info(1), info(2), info(3)],
            bufs: Vec::new(),
            frame_bytes: 3,
        },
        None,
    );
    assert_eq!(small.split_back(10).map(|e| e.messages()), Some(2));
    assert_eq!(small.messages(), 1);
    drop((e, back));
    assert_eq!(budget.available_permits(), 6);
    drop(last);
    assert_eq!(
        budget.available_permits(),
        10,
        "the budget goes with the last part"
    );
}

/// A peer may announce releases of more keys than a message may name, several in one
/// frame: their sizes are counted without overflow, nothing is made to their measure, and
/// they go (to be refused) like any event.
#[test]
fn releases_announcing_every_key_go_through_the_rounds() {
    use crate::conn::Peer;
    use rask_proto::msg::{KeyRun, ToScheduler};
    use rask_proto::ClientId;
    let huge = || ToScheduler::ReleaseMapKeys {
        runs: vec![KeyRun {
            prefix: "m".into(),
            first: 0,
            count: u64::MAX,
        }],
    };
    let batch = |msgs| {
        let batch = Batch {
            msgs,
            bufs: Vec::new(),
            frame_bytes: 1,
        };
        Event::Batch(Peer::Client(ClientId(1)), batch, None)
    };
    let mut e = batch(vec![huge(), huge(), ToScheduler::Info { req: 1 }]);
    assert_eq!(e.messages(), usize::MAX);
    assert_eq!(e.split_front(10).map(|f| f.messages()), Some(usize::MAX));
    assert_eq!(e.split_back(10).map(|b| b.messages()), Some(1));
    let mut b = Backlog::default();
    let mut out = Vec::new();
    let mut handled = 0;
    b.round([batch(vec![huge(), huge(), huge()]), e], &mut out);
    while !out.is_empty() {
        for e in out.drain(..) {
            let Event::Batch(_, batch, _) = e else {
                unreachable!()
            };
            handled += batch.msgs.len();
        }
        b.round([], &mut out);
    }
    assert_eq!(handled, 4);
    assert!(!b.waiting());
    // What is left once a part is taken is counted again when the whole saturated.
    let three = batch(vec![huge(), huge(), ToScheduler::Info { req: 2 }]);
    assert_eq!(super::rest_of(usize::MAX, 1, &three), usize::MAX);
    assert_eq!(super::rest_of(600, 100, &three), 500);
    assert_eq!(super::rest_of(600, 600, &three), 1);
}

/// Whatever comes in whatever rounds, every message is handled once, in its source's
/// order, nothing passes a fence, and a round passes the budget by one event at most.
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
    let mut fences = 0;
    let mut handled: Vec<Vec<u32>> = vec![Vec::new(); 4];
    // Messages read before each fence, and handled when it was.
    let mut before_fence = Vec::new();
    let mut fenced = Vec::new();
    let mut step = 0;
    while step < 2000 || b.waiting() {
        step += 1;
        let mut arrived = Vec::new();
        for _ in 0..(next() % 4) * u64::from(step <= 2000) {
            if next() % 10 == 0 {
                before_fence.push(sent);
                arrived.push(fence(fences));
                fences += 1;
                continue;
            }
            let source = (next() % 4) as u32;
            let n = (next() % 2500) as u32 + 1;
            // Two sources whose events cannot be split.
            arrived.push(match source {
                2 | 3 => whole(source, sent[source as usize], n),
                _ => batch(source, sent[source as usize], n),
            });
            sent[source as usize] += n;
        }
        let mut out = Vec::new();
        let work = b.waiting() || !arrived.is_empty();
        b.round(arrived, &mut out);
        assert_eq!(
            work,
            !out.is_empty(),
            "a round with work to do makes progress"
        );
        let largest = out.iter().map(|e| e.msgs.len()).max().unwrap_or(0);
        assert!(
            count(&out) - largest <= ROUND_MESSAGES,
            "a round of {} messages in {} events",
            count(&out),
            out.len()
        );
        assert!(
            out.iter()
                .all(|e| !e.splits || e.msgs.len() <= ROUND_MESSAGES / 4),
            "what can be cut goes in pieces"
        );
        for e in out {
            match e.source {
                FENCE => {
                    assert_eq!(e.msgs, [fenced.len() as u32], "fences in order");
                    fenced.push(std::array::from_fn(|s| handled[s].len() as u32));
                }
                s => handled[s as usize].extend(e.msgs),
            }
        }
    }
    for s in 0..4 {
        assert!(
            handled[s].iter().copied().eq(0..sent[s]),
            "source {s}: every message once, in order"
        );
    }
    assert!(fences > 100);
    assert_eq!(
        fenced, before_fence,
        "what was read before a fence went before it"
    );
}

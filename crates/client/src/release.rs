//! [`Releasing`]: keys whose last future was dropped, not yet said to the scheduler.
//!
//! Said together, with the next message or by a task on the client's runtime: the
//! futures of a whole graph dropped together go in one message, not one each. A map's
//! keys go in runs of numbers ([`KeyRun`]): its futures are mostly dropped together and
//! in order (a `Vec` of them drops front to back), and a run of ten thousand keys is a
//! prefix and two numbers, where their names would be ten thousand strings to build,
//! send, and split again at the scheduler.
//!
//! One task is scheduled at a time. It says what is waiting at once when the last one
//! said its keys a while ago ([`QUIET`]): a future dropped after its result came, between
//! two round trips, is said before the next submission as it always was. Within that
//! while (futures dropped one after another, a map's `Vec` of them), it waits
//! [`RELEASE_DELAY`] and says everything dropped meanwhile: a task scheduled whenever the
//! list was empty was one spawned (and the runtime's thread woken, a system call) for
//! nearly every future of a map dropped on another thread, the runtime's thread emptying
//! the list as fast as it filled. Dask's client batches its messages to the scheduler
//! likewise (every 10 ms).

use std::time::{Duration, Instant};

use rask_proto::msg::{KeyRun, ToScheduler, MAX_RELEASE_RUN_KEYS};

/// How long after the first key a task scheduled within [`QUIET`] of the last one says
/// what is waiting.
pub(crate) const RELEASE_DELAY: Duration = Duration::from_millis(1);

/// Keys released this long after the last task said its keys are said at once.
pub(crate) const QUIET: Duration = Duration::from_micros(20);

#[derive(Default)]
pub(crate) struct Releasing {
    /// A task on the runtime will say what is waiting.
    scheduled: bool,
    /// When the last task said its keys.
    said: Option<Instant>,
    /// Keys of no map's form (or held where no block was open).
    keys: Vec<String>,
    /// Maps' keys, in runs of at most [`MAX_RELEASE_RUN_KEYS`].
    runs: Vec<KeyRun>,
}

impl Releasing {
    /// Whether nothing is waiting to be said.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.runs.is_empty()
    }

    /// `key` released; `numbered` is its prefix and number if it is a map's key. A number
    /// next to the last run's (after its last, or before its first) joins it. `true` if
    /// the caller must schedule a task to say it: none is (see [`Releasing::unschedule`]).
    #[must_use]
    pub(crate) fn push(&mut self, key: &str, numbered: Option<(&str, u64)>) -> bool {
        self.add(key, numbered);
        !std::mem::replace(&mut self.scheduled, true)
    }

    /// How long a task scheduled `now` waits before it says what is waiting: not at all
    /// when the last one said its keys [`QUIET`] ago or more.
    pub(crate) fn delay(&self, now: Instant) -> Option<Duration> {
        let last = self.said?;
        (now.saturating_duration_since(last) < QUIET).then_some(RELEASE_DELAY)
    }

    /// The scheduled task runs, `now`: the next key released schedules another.
    pub(crate) fn unschedule(&mut self, now: Instant) {
        self.scheduled = false;
        self.said = Some(now);
    }

    fn add(&mut self, key: &str, numbered: Option<(&str, u64)>) {
        let Some((prefix, n)) = numbered else {
            self.keys.push(key.into());
            return;
        };
        if let Some(r) = self.runs.last_mut() {
            if *r.prefix == *prefix && r.count < MAX_RELEASE_RUN_KEYS {
                if r.first.wrapping_add(r.count) == n {
                    r.count += 1;
                    return;
                }
                if n.wrapping_add(1) == r.first {
                    r.first = n;
                    r.count += 1;
                    return;
                }
            }
        }
        self.runs.push(KeyRun {
            prefix: prefix.into(),
            first: n,
            count: 1,
        });
    }

    /// What is waiting, as messages (each run's message naming at most
    /// [`MAX_RELEASE_RUN_KEYS`] keys); nothing is left waiting.
    pub(crate) fn take(&mut self) -> Vec<ToScheduler> {
        let mut out = Vec::new();
        if !self.keys.is_empty() {
            out.push(ToScheduler::ReleaseKeys {
                keys: std::mem::take(&mut self.keys),
            });
        }
        let mut runs = Vec::new();
        let mut count = 0;
        for r in self.runs.drain(..) {
            if count + r.count > MAX_RELEASE_RUN_KEYS {
                out.push(ToScheduler::ReleaseMapKeys {
                    runs: std::mem::take(&mut runs),
                });
                count = 0;
            }
            count += r.count;
            runs.push(r);
        }
        if !runs.is_empty() {
            out.push(ToScheduler::ReleaseMapKeys { runs });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use rask_proto::msg::{map_key, run_keys, split_map_key};

    use super::*;

    /// What the messages name, key by key, in order.
    fn named(msgs: &[ToScheduler]) -> Vec<String> {
        let mut out = Vec::new();
        for m in msgs {
            match m {
                ToScheduler::ReleaseKeys { keys } => out.extend(keys.iter().cloned()),
                ToScheduler::ReleaseMapKeys { runs } => {
                    assert!(run_keys(runs) <= MAX_RELEASE_RUN_KEYS, "a message too long");
                    for r in runs {
                        out.extend(r.numbers().map(|n| map_key(&r.prefix, n)));
                    }
                }
                other => panic!("not a release: {other:?}"),
            }
        }
        out
    }

    fn release(r: &mut Releasing, key: &str) {
        let _ = r.push(key, split_map_key(key));
    }

    /// One task is scheduled for any number of keys, however often they are taken
    /// before it runs; once it has run, the next key schedules another.
    #[test]
    fn one_task_is_scheduled_until_it_runs() {
        let mut r = Releasing::default();
        assert!(r.push("a", None), "the first key schedules a task");
        for n in 0..10_000 {
            assert!(!r.push(&map_key("m", n), Some(("m", n))));
        }
        // Said with the next message: the task is still to run.
        assert_eq!(r.take().len(), 2);
        assert!(r.is_empty());
        assert!(!r.push("b", None), "the scheduled task will say it");
        assert!(!r.is_empty(), "a name waits");
        r.unschedule(Instant::now());
        assert_eq!(r.take().len(), 1);
        assert!(r.push("c", None), "the task ran: another is scheduled");
        assert_eq!(r.take().len(), 1);
        let _ = r.push(&map_key("m", 7), Some(("m", 7)));
        assert!(!r.is_empty(), "a run waits");
    }

    /// A task says its keys at once when the last one said its keys a while ago (or never),
    /// and waits to gather more within that while.
    #[test]
    fn a_task_waits_only_when_the_last_said_its_keys_just_before() {
        let mut r = Releasing::default();
        let t0 = Instant::now();
        assert_eq!(r.delay(t0), None, "none said yet");
        assert!(r.push("a", None));
        r.unschedule(t0);
        assert_eq!(r.delay(t0), Some(RELEASE_DELAY));
        assert_eq!(r.delay(t0 + QUIET / 2), Some(RELEASE_DELAY));
        assert_eq!(r.delay(t0 + QUIET), None);
        assert_eq!(r.delay(t0 + RELEASE_DELAY), None);
    }

    /// A map's keys dropped in order, or in reverse, go as one run; others as names.
    #[test]
    fn keys_in_a_row_go_as_one_run_either_way() {
        let mut r = Releasing::default();
        assert!(r.is_empty() && r.take().is_empty());
        for n in 5..10_005 {
            release(&mut r, &map_key("inc-1f-2", n));
        }
        release(&mut r, "other");
        for n in (0..100).rev() {
            release(&mut r, &map_key("x", n));
        }
        assert!(!r.is_empty());
        let msgs = r.take();
        assert!(r.is_empty() && r.take().is_empty());
        let [ToScheduler::ReleaseKeys { keys }, ToScheduler::ReleaseMapKeys { runs }] = &msgs[..]
        else {
            panic!("{msgs:?}")
        };
        assert_eq!(keys, &["other"]);
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!(
            (&*runs[0].prefix, runs[0].first, runs[0].count),
            ("inc-1f-2", 5, 10_000)
        );
        assert_eq!(
            (&*runs[1].prefix, runs[1].first, runs[1].count),
            ("x", 0, 100)
        );
    }

    /// Keys released in any order are each named once, whatever runs they make; a run
    /// never passes the most a message may name, and neither does a message.
    #[test]
    fn every_key_is_named_once_in_messages_of_bounded_length() {
        let mut r = Releasing::default();
        let mut want = Vec::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut n = 0u64;
        for _ in 0..5000 {
            let key = match rand(4) {
                0 => format!("k{}", rand(100)),
                1 => map_key(["a", "b"][rand(2) as usize], rand(50)),
                _ => {
                    // Mostly in a row, now and then a jump (across u64::MAX too).
                    n = if rand(20) == 0 {
                        n.wrapping_add(rand(3) << 62)
                    } else {
                        n.wrapping_add(1)
                    };
                    map_key("m", n)
                }
            };
            release(&mut r, &key);
            want.push(key);
        }
        let mut got = named(&r.take());
        got.sort();
        want.sort();
        assert_eq!(got, want);
        // A run as long as a message may name, then one key more: two messages.
        let mut r = Releasing::default();
        r.runs.push(KeyRun {
            prefix: "m".into(),
            first: 0,
            count: MAX_RELEASE_RUN_KEYS,
        });
        release(&mut r, &map_key("m", MAX_RELEASE_RUN_KEYS));
        let msgs = r.take();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        let counts: Vec<u64> = msgs
            .iter()
            .map(|m| match m {
                ToScheduler::ReleaseMapKeys { runs } => run_keys(runs),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(counts, [MAX_RELEASE_RUN_KEYS, 1]);
    }
}

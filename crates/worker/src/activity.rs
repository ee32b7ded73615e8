//! What a worker did besides computing — transfers from peers and spills — reported in
//! its heartbeat for the scheduler's task stream and its link matrix, and its device's
//! utilization. Records are bounded per heartbeat: a worker moving many small values
//! reports the first [`MAX_ACTIVITY`] and counts the rest.

use std::time::Instant;

use rask_proto::observe::{ActivityKind, ActivityMsg, PeerBytesMsg};
use rask_proto::{LinkClass, TaskId, WorkerId};
use rustc_hash::FxHashMap;

/// The most transfers and spills one heartbeat reports.
pub(crate) const MAX_ACTIVITY: usize = 1_000;

struct Record {
    task: TaskId,
    kind: ActivityKind,
    start: Instant,
    stop: Instant,
    nbytes: u64,
}

/// Transfers and spills since the last heartbeat, and the running totals per peer.
#[derive(Default)]
pub(crate) struct Activity {
    records: Vec<Record>,
    dropped: u64,
    /// Bytes and microseconds received, by peer and link, so far, and whether they
    /// changed since the last heartbeat.
    pairs: FxHashMap<(WorkerId, LinkClass), (u64, u64, bool)>,
    /// The device's busy clock at the last heartbeat.
    busy_last: Option<(Instant, u64)>,
}

impl Activity {
    fn push(&mut self, r: Record) {
        if self.records.len() < MAX_ACTIVITY {
            self.records.push(r);
        } else {
            self.dropped += 1;
        }
    }

    /// Values fetched from `from` over `link` (each task with its size), asked for at
    /// `start`, arrived at `stop`.
    pub(crate) fn transfer(
        &mut self,
        from: WorkerId,
        link: LinkClass,
        values: &[(TaskId, u64)],
        start: Instant,
        stop: Instant,
    ) {
        if values.is_empty() {
            return;
        }
        let bytes: u64 = values.iter().map(|(_, n)| n).sum();
        let micros = stop.saturating_duration_since(start).as_micros() as u64;
        let pair = self.pairs.entry((from, link)).or_default();
        pair.0 += bytes;
        pair.1 += micros;
        pair.2 = true;
        for &(task, nbytes) in values {
            self.push(Record {
                task,
                kind: ActivityKind::Transfer {
                    from,
                    link: link.as_str().to_string(),
                },
                start,
                stop,
                nbytes,
            });
        }
    }

    /// `task`'s value moved `direction` (`device->host`, …), `nbytes` of it.
    pub(crate) fn spill(
        &mut self,
        task: TaskId,
        direction: &str,
        nbytes: u64,
        start: Instant,
        stop: Instant,
    ) {
        self.push(Record {
            task,
            kind: ActivityKind::Spill {
                direction: direction.to_string(),
            },
            start,
            stop,
            nbytes,
        });
    }

    /// What the heartbeat sent at `now` reports: the records (their times as
    /// microseconds before `now`), those dropped, and the peers' totals that changed. The
    /// next heartbeat reports what happens from now on.
    pub(crate) fn report(&mut self, now: Instant) -> (Vec<ActivityMsg>, u64, Vec<PeerBytesMsg>) {
        let ago = |t: Instant| now.saturating_duration_since(t).as_micros() as u64;
        let records = std::mem::take(&mut self.records)
            .into_iter()
            .map(|r| ActivityMsg {
                task: r.task,
                kind: r.kind,
                start_ago_us: ago(r.start),
                stop_ago_us: ago(r.stop),
                nbytes: r.nbytes,
            })
            .collect();
        let mut pairs: Vec<PeerBytesMsg> = self
            .pairs
            .iter_mut()
            .filter(|(_, p)| p.2)
            .map(|(&(peer, link), p)| {
                p.2 = false;
                PeerBytesMsg {
                    peer,
                    link: link.as_str().to_string(),
                    bytes: p.0,
                    micros: p.1,
                }
            })
            .collect();
        pairs.sort_by(|a, b| (a.peer, &a.link).cmp(&(b.peer, &b.link)));
        (records, std::mem::take(&mut self.dropped), pairs)
    }

    /// The device's utilization since the last call, from its busy clock now (`None`
    /// without one, or on the first call).
    pub(crate) fn utilization(&mut self, busy_us: Option<u64>, now: Instant) -> Option<f32> {
        let busy = busy_us?;
        let last = self.busy_last.replace((now, busy));
        let (then, before) = last?;
        let wall = now.saturating_duration_since(then).as_micros() as u64;
        rask_kernels::busy::utilization(before, busy, wall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn transfers_and_spills_are_reported_once_with_their_times_before_the_heartbeat() {
        let mut a = Activity::default();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let w1 = WorkerId(1);
        a.transfer(
            w1,
            LinkClass::Tcp,
            &[(TaskId(7), 100), (TaskId(8), 50)],
            ms(10),
            ms(30),
        );
        a.spill(TaskId(9), "device->host", 4096, ms(40), ms(45));
        a.transfer(w1, LinkClass::Tcp, &[(TaskId(10), 10)], ms(50), ms(60));
        let (records, dropped, pairs) = a.report(ms(100));
        assert_eq!(dropped, 0);
        assert_eq!(records.len(), 4);
        assert_eq!(records[0].task, TaskId(7));
        assert_eq!(
            (records[0].start_ago_us, records[0].stop_ago_us),
            (90_000, 70_000)
        );
        assert_eq!(records[1].nbytes, 50);
        assert_eq!(
            records[2].kind,
            ActivityKind::Spill {
                direction: "device->host".into()
            }
        );
        assert_eq!(
            (records[2].start_ago_us, records[2].stop_ago_us),
            (60_000, 55_000)
        );
        assert_eq!(
            records[3].kind,
            ActivityKind::Transfer {
                from: w1,
                link: "tcp".into()
            }
        );
        assert_eq!(
            pairs,
            vec![PeerBytesMsg {
                peer: w1,
                link: "tcp".into(),
                bytes: 160,
                micros: 30_000
            }],
            "one pair, its totals"
        );
        let (records, _, pairs) = a.report(ms(200));
        assert!(records.is_empty() && pairs.is_empty(), "reported once");
        a.transfer(
            WorkerId(2),
            LinkClass::Shm,
            &[(TaskId(11), 5)],
            ms(200),
            ms(201),
        );
        a.transfer(w1, LinkClass::Tcp, &[(TaskId(12), 40)], ms(200), ms(210));
        let (_, _, pairs) = a.report(ms(300));
        assert_eq!(pairs.len(), 2, "only the pairs that changed");
        assert_eq!(pairs[0].peer, w1, "in the order of the peers");
        assert_eq!(
            (pairs[0].bytes, pairs[0].micros),
            (200, 40_000),
            "running totals"
        );
        a.transfer(w1, LinkClass::Tcp, &[], ms(300), ms(400));
        assert!(
            a.report(ms(500)).2.is_empty(),
            "nothing received, nothing changed"
        );
    }

    #[test]
    fn past_the_bound_records_are_counted_not_kept() {
        let mut a = Activity::default();
        let t = Instant::now();
        for i in 0..MAX_ACTIVITY as u64 + 5 {
            a.spill(TaskId(i), "host->disk", 1, t, t);
        }
        let (records, dropped, _) = a.report(t);
        assert_eq!((records.len(), dropped), (MAX_ACTIVITY, 5));
        assert_eq!(a.report(t).1, 0, "the count starts again");
    }

    #[test]
    fn utilization_is_the_busy_share_between_heartbeats() {
        let mut a = Activity::default();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(a.utilization(None, ms(0)), None, "no device, no figure");
        assert_eq!(a.utilization(Some(1_000), ms(0)), None, "the first reading");
        assert_eq!(a.utilization(Some(251_000), ms(1_000)), Some(25.0));
        assert_eq!(a.utilization(Some(251_000), ms(2_000)), Some(0.0));
    }
}

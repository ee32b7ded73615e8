//! Spilling policy: which stored values move down a tier (device → host → disk), least
//! recently used first, when to pause executing, and when to give up. Pure: the worker
//! reports what it stores, uses and moves, and its process memory; this decides.
//! Thresholds follow dask-cuda (device memory is spilled when it passes the device
//! limit's target) and Dask's fractions of the host memory limit: values are spilled
//! past 60 % held (`target`) or 70 % of the process's memory (`spill`, down to 60 %),
//! tasks stop starting past 80 % (`pause`), and the worker stops past 95 % (`terminate`:
//! its supervisor starts a fresh one).
//!
//! Process memory is what the worker holds on the host plus what the process uses
//! besides (its private heap); memory shared with peers (arenas they map) and a
//! simulated GPU's memory are not counted twice.

use std::collections::BTreeSet;

use rask_proto::{IdMap, IdSet, TaskId};

/// Where a stored value lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// In the worker's device memory (a GPU's, or a simulated GPU's).
    Device,
    /// In host memory (the heap, or a shared-memory arena).
    Host,
    /// In a file without a name on disk, read back on access.
    Disk,
}

impl Tier {
    fn index(self) -> usize {
        self as usize
    }
}

/// Limits and thresholds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpillLimits {
    /// Device memory limit (None: no device).
    pub device: Option<u64>,
    /// Host memory limit of the worker.
    pub host: u64,
    /// Spill device values while device use is above this fraction of the device limit.
    pub device_target: f64,
    /// Spill host values to disk while the host bytes held are above this fraction.
    pub host_target: f64,
    /// Also spill while the process's memory is above this fraction (down to
    /// `host_target`).
    pub spill: f64,
    /// Stop starting tasks while the process's memory is above this fraction.
    pub pause: f64,
    /// Stop the worker when the process's memory passes this fraction.
    pub terminate: f64,
}

impl SpillLimits {
    /// Device memory use past which device values spill (None: no device).
    pub fn device_spill_at(&self) -> Option<u64> {
        self.device
            .map(|limit| (limit as f64 * self.device_target) as u64)
    }

    /// Dask's and dask-cuda's defaults for a device limit of `device` bytes (if any)
    /// and a host limit of `host` bytes: 80 % device target, 60 % host target, spill at
    /// 70 %, pause at 80 %, terminate at 95 %.
    pub fn new(device: Option<u64>, host: u64) -> SpillLimits {
        SpillLimits {
            device,
            host,
            device_target: 0.8,
            host_target: 0.6,
            spill: 0.7,
            pause: 0.8,
            terminate: 0.95,
        }
    }
}

/// Values smaller than this are not worth spilling (and are not tracked).
pub const MIN_SPILL: u64 = 64 * 1024;

#[derive(Clone, Copy, Debug)]
struct Entry {
    tier: Tier,
    nbytes: u64,
    tick: u64,
    /// Spilled from the device (and so brought back when a device kernel reads it).
    from_device: bool,
}

/// The stored values the policy knows of, in least-recently-used order.
#[derive(Debug)]
pub struct Spill {
    limits: SpillLimits,
    tick: u64,
    lru: BTreeSet<(u64, TaskId)>,
    entries: IdMap<TaskId, Entry>,
    used: [u64; 3],
    /// Values a job is bringing back to the device now.
    unspilling: IdSet<TaskId>,
    /// Values being moved down a tier now, and where to: planned no more until the move
    /// is done ([`Spill::moved`]) or given up ([`Spill::move_stopped`]).
    moving: IdMap<TaskId, Tier>,
}

impl Spill {
    /// A policy with nothing stored yet.
    pub fn new(limits: SpillLimits) -> Spill {
        Spill {
            limits,
            tick: 0,
            lru: BTreeSet::new(),
            entries: Default::default(),
            used: [0; 3],
            unspilling: Default::default(),
            moving: Default::default(),
        }
    }

    /// The limits it applies.
    pub fn limits(&self) -> &SpillLimits {
        &self.limits
    }

    /// Whether a value of `nbytes` is worth tracking (and spilling).
    pub fn tracks(nbytes: u64) -> bool {
        nbytes >= MIN_SPILL
    }

    /// A value was stored (or replaced).
    pub fn add(&mut self, task: TaskId, tier: Tier, nbytes: u64) {
        self.remove(task);
        if !Spill::tracks(nbytes) {
            return;
        }
        self.tick += 1;
        self.entries.insert(
            task,
            Entry {
                tier,
                nbytes,
                tick: self.tick,
                from_device: false,
            },
        );
        self.lru.insert((self.tick, task));
        self.used[tier.index()] += nbytes;
    }

    /// A value was read (by a task or a peer): it becomes the most recently used.
    pub fn touch(&mut self, task: TaskId) {
        let Some(e) = self.entries.get_mut(&task) else {
            return;
        };
        self.lru.remove(&(e.tick, task));
        self.tick += 1;
        e.tick = self.tick;
        self.lru.insert((self.tick, task));
    }

    /// A value was dropped.
    pub fn remove(&mut self, task: TaskId) {
        // Most workers hold no value worth spilling: no lookup per task then.
        if self.entries.is_empty() {
            return;
        }
        if let Some(e) = self.entries.remove(&task) {
            self.lru.remove(&(e.tick, task));
            self.used[e.tier.index()] -= e.nbytes;
            self.moving.remove(&task);
        }
    }

    /// A value starts moving to tier `to` (its bytes are being copied, off the caller's
    /// thread): it is not planned again until [`Spill::moved`] or [`Spill::move_stopped`].
    pub fn move_started(&mut self, task: TaskId, to: Tier) {
        if self.entries.contains_key(&task) {
            self.moving.insert(task, to);
        }
    }

    /// The move of a value was given up (it failed, or the value changed meanwhile).
    pub fn move_stopped(&mut self, task: TaskId) {
        self.moving.remove(&task);
    }

    /// Where a value is being moved now, if it is.
    pub fn moving(&self, task: TaskId) -> Option<Tier> {
        self.moving.get(&task).copied()
    }

    /// Bytes being moved now out of `tier`.
    fn moving_out_of(&self, tier: Tier) -> u64 {
        self.moving
            .keys()
            .map(|t| self.entries[t])
            .filter(|e| e.tier == tier)
            .map(|e| e.nbytes)
            .sum()
    }

    /// A value moved to another tier (a move started by [`Spill::move_started`] is done).
    pub fn moved(&mut self, task: TaskId, to: Tier) {
        self.moving.remove(&task);
        if let Some(e) = self.entries.get_mut(&task) {
            self.used[e.tier.index()] -= e.nbytes;
            e.from_device = e.tier == Tier::Device || (e.from_device && to != Tier::Device);
            e.tier = to;
            self.used[to.index()] += e.nbytes;
        }
    }

    /// Tracked bytes in a tier.
    pub fn used(&self, tier: Tier) -> u64 {
        self.used[tier.index()]
    }

    /// The tier of a tracked value.
    pub fn tier(&self, task: TaskId) -> Option<Tier> {
        self.entries.get(&task).map(|e| e.tier)
    }

    /// Whether a value spilled from the device (now on the host or disk) should go back
    /// to it, being read by a device kernel: only while the device stays below its
    /// spilling target with it (or spilling would move it straight out again).
    pub fn unspill(&self, task: TaskId, device_used: u64) -> bool {
        let (Some(e), Some(target)) = (self.entries.get(&task), self.limits.device_spill_at())
        else {
            return false;
        };
        e.from_device && e.tier != Tier::Device && device_used + e.nbytes <= target
    }

    /// Whether any of these inputs (of a task that runs by the device's kernels) should
    /// go back to the device, before their sizes are known.
    pub fn any_unspill(&self, inputs: impl IntoIterator<Item = TaskId>, device_used: u64) -> bool {
        inputs
            .into_iter()
            .any(|t| !self.unspilling.contains(&t) && self.unspill(t, device_used))
    }

    /// Which of a task's inputs (`(task, bytes)`, in order) go back to the device for it,
    /// by index: each as [`Spill::unspill`] says, counting what the ones before it bring
    /// to the device, and none that a job is already bringing back. The caller marks
    /// them with [`Spill::unspill_started`].
    pub fn unspill_plan(&self, inputs: &[(TaskId, u64)], device_used: u64) -> Vec<usize> {
        let mut planned = 0;
        let mut out = Vec::new();
        for (i, &(t, nbytes)) in inputs.iter().enumerate() {
            if !self.unspilling.contains(&t) && self.unspill(t, device_used + planned) {
                planned += nbytes;
                out.push(i);
            }
        }
        out
    }

    /// A job brings this value back to the device.
    pub fn unspill_started(&mut self, task: TaskId) {
        self.unspilling.insert(task);
    }

    /// The job that brought this value back to the device is done (whether it did).
    pub fn unspill_done(&mut self, task: TaskId) {
        self.unspilling.remove(&task);
    }

    /// The moves to make now, least recently used first: device values to the host while
    /// the device is above its target, then host values to disk while the host is above
    /// its target (counting what the first moves bring to the host), or while the
    /// process's memory is above the spill threshold, until it is back to the target.
    /// `process_memory` counts the values held on the host.
    /// Values being moved now are not planned again, and what they free is counted as
    /// freed.
    pub fn plan(&self, device_used: u64, process_memory: u64) -> Vec<(TaskId, Tier)> {
        let mut out = Vec::new();
        let from_device = self.moving_out_of(Tier::Device);
        let mut host =
            (self.used(Tier::Host) + from_device).saturating_sub(self.moving_out_of(Tier::Host));
        if let Some(target) = self.limits.device_spill_at() {
            let mut dev = device_used.saturating_sub(from_device);
            for &(_, t) in &self.lru {
                if dev <= target {
                    break;
                }
                let e = self.entries[&t];
                if e.tier == Tier::Device && !self.moving.contains_key(&t) {
                    out.push((t, Tier::Host));
                    dev = dev.saturating_sub(e.nbytes);
                    host += e.nbytes;
                }
            }
        }
        let target = (self.limits.host as f64 * self.limits.host_target) as u64;
        // Memory the process holds besides the values: spilling values is the only way to
        // bring the whole back to the target.
        let unmanaged = process_memory.saturating_sub(self.used(Tier::Host));
        let over_spill = process_memory as f64 > self.limits.host as f64 * self.limits.spill;
        let target = if over_spill {
            target.saturating_sub(unmanaged)
        } else {
            target
        };
        for &(_, t) in &self.lru {
            if host <= target {
                break;
            }
            let e = self.entries[&t];
            if self.moving.contains_key(&t) {
                continue;
            }
            // On the host already, or brought there by a move above (which then goes on
            // to disk).
            match out.iter_mut().find(|(x, _)| *x == t) {
                Some(m) => m.1 = Tier::Disk,
                None if e.tier == Tier::Host => out.push((t, Tier::Disk)),
                None => continue,
            }
            host -= e.nbytes;
        }
        out
    }

    /// Device values to move to the host, least recently used first, to free at least
    /// `bytes` of the device (an op that does not fit needs them): none of `keep` (the
    /// op's own inputs), none being moved already. Fewer when the device holds no more.
    pub fn free_device(&self, bytes: u64, keep: &[TaskId]) -> Vec<TaskId> {
        let mut out = Vec::new();
        let mut freed = 0;
        for &(_, t) in &self.lru {
            if freed >= bytes {
                break;
            }
            let e = self.entries[&t];
            if e.tier == Tier::Device && !self.moving.contains_key(&t) && !keep.contains(&t) {
                out.push(t);
                freed += e.nbytes;
            }
        }
        out
    }

    /// Device bytes being moved off the device now.
    pub fn leaving_device(&self) -> u64 {
        self.moving_out_of(Tier::Device)
    }

    /// Whether to stop starting tasks, given the process's memory.
    pub fn should_pause(&self, process_memory: u64) -> bool {
        process_memory as f64 > self.limits.host as f64 * self.limits.pause
    }

    /// Whether the worker should stop (its memory past what spilling can bring back).
    pub fn should_terminate(&self, process_memory: u64) -> bool {
        process_memory as f64 > self.limits.host as f64 * self.limits.terminate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1 << 20;

    #[test]
    fn device_values_spill_to_host_least_recently_used_first() {
        let mut s = Spill::new(SpillLimits::new(Some(10 * M), 1000 * M));
        for i in 0..5 {
            s.add(TaskId(i), Tier::Device, 2 * M);
        }
        s.touch(TaskId(0));
        // 10 MiB used, target 8: one value goes, the least recently used (1, not 0).
        assert_eq!(s.plan(10 * M, 0), vec![(TaskId(1), Tier::Host)]);
        s.moved(TaskId(1), Tier::Host);
        assert_eq!(s.used(Tier::Device), 8 * M);
        assert_eq!(s.used(Tier::Host), 2 * M);
        assert_eq!(s.plan(8 * M, 0), vec![]);
        // Small values are not tracked.
        s.add(TaskId(9), Tier::Device, 1000);
        assert_eq!(s.tier(TaskId(9)), None);
        s.remove(TaskId(2));
        assert_eq!(s.used(Tier::Device), 6 * M);
    }

    #[test]
    fn host_values_spill_to_disk_including_those_just_brought_down() {
        let mut s = Spill::new(SpillLimits::new(Some(4 * M), 10 * M));
        s.add(TaskId(1), Tier::Host, 4 * M);
        s.add(TaskId(2), Tier::Device, 4 * M);
        s.add(TaskId(3), Tier::Host, 3 * M);
        // Device 4 > 3.2: task 2 goes to the host (host would hold 11 > 6); then the
        // least recently used host values go to disk until 6 MiB: 1 (4), then 2 (4).
        let plan = s.plan(4 * M, 0);
        assert_eq!(
            plan,
            vec![(TaskId(2), Tier::Disk), (TaskId(1), Tier::Disk)],
            "{plan:?}"
        );
        assert!(s.should_pause(9 * M));
        assert!(!s.should_pause(7 * M));
    }

    #[test]
    fn process_memory_past_the_spill_threshold_spills_to_the_target_then_pauses_then_stops() {
        let mut s = Spill::new(SpillLimits::new(None, 100 * M));
        for i in 0..5 {
            s.add(TaskId(i), Tier::Host, 10 * M);
        }
        // 50 MiB held, below the 60 % target; the process holds 19 MiB more: below 70 %.
        assert_eq!(s.plan(0, 50 * M), vec![]);
        assert_eq!(s.plan(0, 69 * M), vec![]);
        // 25 MiB besides the values (75 % > 70 %): values go, least recently used first,
        // until the whole is back to 60 %: held ≤ 35 MiB, so two of them.
        assert_eq!(
            s.plan(0, 75 * M),
            vec![(TaskId(0), Tier::Disk), (TaskId(1), Tier::Disk)]
        );
        // Memory that is not values cannot be spilled: all of them go, and no more.
        assert_eq!(s.plan(0, 110 * M).len(), 5);
        assert!(!s.should_pause(80 * M));
        assert!(s.should_pause(81 * M));
        assert!(!s.should_terminate(95 * M));
        assert!(s.should_terminate(96 * M));
    }

    #[test]
    fn values_spilled_from_the_device_go_back_while_it_has_room() {
        let mut s = Spill::new(SpillLimits::new(Some(10 * M), 100 * M));
        s.add(TaskId(1), Tier::Device, 2 * M);
        s.add(TaskId(2), Tier::Host, 2 * M);
        assert!(!s.unspill(TaskId(1), 0), "on the device already");
        assert!(!s.unspill(TaskId(2), 0), "never was on the device");
        s.moved(TaskId(1), Tier::Host);
        assert!(s.unspill(TaskId(1), 6 * M), "6 + 2 ≤ the 8 MiB target");
        assert!(!s.unspill(TaskId(1), 7 * M), "it would be spilled again");
        s.moved(TaskId(1), Tier::Disk);
        assert!(s.unspill(TaskId(1), 0), "from disk too");
        s.moved(TaskId(1), Tier::Device);
        assert!(!s.unspill(TaskId(1), 0));
        assert_eq!(s.used(Tier::Device), 2 * M);
        assert_eq!(s.used(Tier::Disk), 0);
        s.moved(TaskId(2), Tier::Disk);
        assert_eq!(s.tier(TaskId(2)), Some(Tier::Disk));
        assert!(
            !s.unspill(TaskId(2), 0),
            "from the host to disk, never on the device"
        );
        let mut host_only = Spill::new(SpillLimits::new(None, 100 * M));
        host_only.add(TaskId(3), Tier::Host, 2 * M);
        assert!(!host_only.unspill(TaskId(3), 0));
    }

    #[test]
    fn a_tasks_inputs_go_back_to_the_device_while_they_fit_and_only_once() {
        // Device target: 8 MiB (80 % of 10).
        let mut s = Spill::new(SpillLimits::new(Some(10 * M), 100 * M));
        for t in 1..=4 {
            s.add(TaskId(t), Tier::Device, 3 * M);
            s.moved(TaskId(t), Tier::Host);
        }
        s.add(TaskId(5), Tier::Host, 3 * M);
        let inputs: Vec<(TaskId, u64)> = (1..=5).map(|t| (TaskId(t), 3 * M)).collect();
        assert!(s.any_unspill(inputs.iter().map(|i| i.0), M));
        // 1 + 3 + 3 ≤ 8; a third would make 10: inputs 0 and 1 only (5 was never on the
        // device).
        assert_eq!(s.unspill_plan(&inputs, M), vec![0, 1]);
        assert_eq!(s.unspill_plan(&inputs, 3 * M), vec![0]);
        assert_eq!(s.unspill_plan(&inputs, 6 * M), Vec::<usize>::new());
        // A value a job brings back already is not planned again.
        s.unspill_started(TaskId(1));
        assert_eq!(s.unspill_plan(&inputs, M), vec![1, 2]);
        assert!(!s.any_unspill([TaskId(1), TaskId(5)], 0));
        s.unspill_done(TaskId(1));
        assert!(s.any_unspill([TaskId(1)], 0));
    }

    #[test]
    fn values_being_moved_are_not_planned_again_and_count_as_moved() {
        let mut s = Spill::new(SpillLimits::new(Some(10 * M), 1000 * M));
        for i in 0..5 {
            s.add(TaskId(i), Tier::Device, 2 * M);
        }
        // 10 MiB used, target 8: task 0 goes.
        assert_eq!(s.plan(10 * M, 0), vec![(TaskId(0), Tier::Host)]);
        s.move_started(TaskId(0), Tier::Host);
        assert_eq!(s.moving(TaskId(0)), Some(Tier::Host));
        assert_eq!(s.leaving_device(), 2 * M);
        // Its device memory is still in use while it moves: not planned again, nor
        // another one in its place.
        assert_eq!(s.plan(10 * M, 0), vec![]);
        // 2 MiB more used: one more value goes, the next least recently used.
        assert_eq!(s.plan(12 * M, 0), vec![(TaskId(1), Tier::Host)]);
        s.moved(TaskId(0), Tier::Host);
        assert_eq!(s.moving(TaskId(0)), None);
        assert_eq!(s.used(Tier::Host), 2 * M);
        // A move given up lets the value be planned again; a removed value stops moving.
        s.move_started(TaskId(1), Tier::Host);
        s.move_stopped(TaskId(1));
        assert_eq!(s.plan(10 * M, 0), vec![(TaskId(1), Tier::Host)]);
        s.move_started(TaskId(1), Tier::Host);
        s.remove(TaskId(1));
        assert_eq!(s.moving(TaskId(1)), None);
        assert_eq!(s.leaving_device(), 0);
        // Host values moving to disk are not planned again either.
        let mut h = Spill::new(SpillLimits::new(None, M));
        h.add(TaskId(7), Tier::Host, M);
        assert_eq!(h.plan(0, 0), vec![(TaskId(7), Tier::Disk)]);
        h.move_started(TaskId(7), Tier::Disk);
        assert_eq!(h.plan(0, 0), vec![]);
    }

    #[test]
    fn freeing_device_bytes_takes_the_least_recently_used_but_not_the_ops_inputs() {
        let mut s = Spill::new(SpillLimits::new(Some(100 * M), 1000 * M));
        for i in 0..4 {
            s.add(TaskId(i), Tier::Device, 3 * M);
        }
        s.add(TaskId(9), Tier::Host, 3 * M);
        s.touch(TaskId(0));
        // LRU order: 1, 2, 3, 0. 4 MiB: two values; 1 is the op's input, so 2 and 3.
        assert_eq!(
            s.free_device(4 * M, &[TaskId(1)]),
            vec![TaskId(2), TaskId(3)]
        );
        assert_eq!(s.free_device(3 * M, &[]), vec![TaskId(1)]);
        assert_eq!(s.free_device(0, &[]), Vec::<TaskId>::new());
        // Being moved already: not again. More than the device holds: all it can.
        s.move_started(TaskId(2), Tier::Host);
        assert_eq!(
            s.free_device(100 * M, &[]),
            vec![TaskId(1), TaskId(3), TaskId(0)]
        );
        s.moved(TaskId(1), Tier::Host);
        assert_eq!(s.free_device(100 * M, &[TaskId(0)]), vec![TaskId(3)]);
    }

    #[test]
    fn only_values_of_64_kib_or_more_are_tracked() {
        assert!(!Spill::tracks(64 * 1024 - 1));
        assert!(Spill::tracks(64 * 1024));
        let mut s = Spill::new(SpillLimits::new(None, 100 * M));
        s.add(TaskId(1), Tier::Host, 32 * 1024);
        s.add(TaskId(2), Tier::Host, 64 * 1024);
        assert_eq!(s.tier(TaskId(1)), None);
        assert_eq!(s.tier(TaskId(2)), Some(Tier::Host));
        assert_eq!(s.used(Tier::Host), 64 * 1024);
    }

    #[test]
    fn least_recently_used_means_stored_or_read_last_whatever_the_task_ids() {
        // A host of 1 MiB: every value has to go, in least-recently-used order.
        let mut s = Spill::new(SpillLimits::new(None, M));
        for t in [5, 3, 9] {
            s.add(TaskId(t), Tier::Host, M);
        }
        let order = |s: &Spill| {
            s.plan(0, 0)
                .into_iter()
                .map(|(t, _)| t.0)
                .collect::<Vec<_>>()
        };
        assert_eq!(order(&s), vec![5, 3, 9]);
        s.touch(TaskId(5));
        assert_eq!(order(&s), vec![3, 9, 5]);
    }

    #[test]
    fn at_exactly_the_spill_threshold_nothing_spills() {
        let mut s = Spill::new(SpillLimits::new(None, 1_000_000_000));
        for t in 0..6 {
            s.add(TaskId(t), Tier::Host, 100_000_000);
        }
        // Values hold 60 % (the target), the process 70 % (the spill threshold).
        assert_eq!(s.plan(0, 700_000_000), vec![]);
        // One byte more: back to 60 % in all, so the values go down to 50 % minus a byte.
        assert_eq!(
            s.plan(0, 700_000_001),
            vec![(TaskId(0), Tier::Disk), (TaskId(1), Tier::Disk)]
        );
    }

    #[test]
    fn only_host_values_go_to_disk_not_device_values_nor_those_on_disk_already() {
        let mut s = Spill::new(SpillLimits::new(Some(10 * M), 10 * M));
        s.add(TaskId(1), Tier::Device, 2 * M);
        s.add(TaskId(2), Tier::Host, 2 * M);
        s.moved(TaskId(2), Tier::Disk);
        s.add(TaskId(3), Tier::Host, 4 * M);
        s.add(TaskId(4), Tier::Host, 4 * M);
        // The device is below its target; the host holds 8 MiB of a 6 MiB target.
        assert_eq!(s.plan(2 * M, 0), vec![(TaskId(3), Tier::Disk)]);
    }
}

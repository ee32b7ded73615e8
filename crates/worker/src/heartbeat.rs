//! The heartbeat: memory use and traffic reported to the scheduler, the pause and
//! terminate thresholds, and trimming of idle arena segments.

use rask_proto::msg::{HeartbeatMsg, ToScheduler};
use rask_proto::Value;
use rask_worker_core::spill::Tier;
use tracing::{debug, info, warn};

use crate::error::WorkerError;
use crate::event_loop::State;
use crate::sysmem::private_heap_bytes;
use crate::sysmem::rss_bytes;

/// Unused arena memory kept mapped for reuse, and how many heartbeats a segment must stay
/// unused before it is unmapped.
pub(crate) const ARENA_KEEP_FREE: u64 = rask_transport::shm::DEFAULT_SEGMENT;

pub(crate) const ARENA_IDLE_ROUNDS: u32 = 3;

impl State {
    /// Reports to the scheduler, applies the pause threshold; an error when the worker
    /// must stop (past the terminate threshold).
    pub(crate) fn heartbeat(&mut self) -> Option<WorkerError> {
        if self.cfg.own_process {
            self.private_heap = private_heap_bytes();
        }
        let used = self.process_memory();
        if self.cfg.own_process && self.spill.should_terminate(used) {
            let limits = self.spill.limits();
            let e = WorkerError::Memory {
                used,
                limit: limits.host,
                fraction: limits.terminate,
            };
            tracing::error!("{e}: stopping");
            return Some(e);
        }
        let pause = self.spill.should_pause(used);
        if pause != self.core.paused() {
            if pause {
                warn!(
                    "{:.0} MiB in use ({:.0} MiB of values on the host), above {:.0}% of the limit: pausing",
                    used as f64 / (1u64 << 20) as f64,
                    self.spill.used(Tier::Host) as f64 / (1u64 << 20) as f64,
                    self.spill.limits().pause * 100.0
                );
            } else {
                info!("memory back below the pause threshold: resuming");
            }
            self.core.set_paused(pause);
            self.drive();
        }
        self.host_arena.trim(ARENA_KEEP_FREE, ARENA_IDLE_ROUNDS);
        let gone = self.arena.trim(ARENA_KEEP_FREE, ARENA_IDLE_ROUNDS);
        if !gone.is_empty() {
            debug!(segments = ?gone, "arena shrank");
            let _ = self.retire_tx.send(gone);
        }
        let (stored_keys, stored_bytes) = {
            let store = self.store.lock().expect("store lock");
            (store.len() as u64, store.values().map(Value::nbytes).sum())
        };
        let now = std::time::Instant::now();
        let (activity, activity_dropped, received_from) = self.activity.report(now);
        let busy = self.exec.device.as_ref().and_then(|d| d.busy_us());
        let utilization = self.activity.utilization(busy, now);
        let beat = Box::new(HeartbeatMsg {
            stored_bytes,
            stored_keys,
            executing: self.core.executing() as u32,
            rss_bytes: rss_bytes(),
            device_memory_used: self.device_pool.as_ref().map_or(0, |p| p.used()),
            device_to_host: self.exec.device.as_ref().map_or(0, |d| d.downloaded()),
            spilled: self
                .spilled
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            ran: [("cpu", self.core.ran()[0]), ("device", self.core.ran()[1])]
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| (k.to_string(), n))
                .collect(),
            received: self
                .received
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            device_bytes: self.spill.used(Tier::Device),
            disk_bytes: self.spill.used(Tier::Disk),
            activity,
            activity_dropped,
            received_from,
            utilization,
        });
        if let Some(hook) = &self.cfg.on_heartbeat {
            (hook.0)(&beat);
        }
        let _ = self.to_scheduler.send(ToScheduler::Heartbeat(beat));
        None
    }

    /// The process's memory as the thresholds see it: at least the values held on the
    /// host, and at least the process's private heap (which holds the values that are not
    /// in shared memory, and the memory of ops while they run). Memory shared with peers
    /// and a simulated GPU's memory are not counted.
    pub(crate) fn process_memory(&self) -> u64 {
        self.spill.used(Tier::Host).max(self.private_heap)
    }
}

//! When the device fails an op: out of memory (spill what the op needs and run it again,
//! or run it on the CPU when nothing more can go), or lost for good (the worker leaves,
//! so that a fresh process takes the device).

use rask_proto::msg::ToScheduler;
use rask_proto::TaskId;
use rask_worker_core::spill::Tier;
use tracing::{error, info, warn};

use crate::error::WorkerError;
use crate::event_loop::State;
use crate::events::Retry;
use crate::executor::{Args, Job};

/// Times a task runs on a device that has no room for it (with values spilled between
/// runs) before it runs on the CPU.
pub(crate) const DEVICE_FULL_RUNS: u32 = 3;

/// A task whose op did not fit on the device, waiting for values to leave the device.
pub(crate) struct Parked {
    pub(crate) task: TaskId,
    pub(crate) retry: Retry,
}

impl State {
    /// A task's op did not fit on the device (`needed` bytes): values the task does not
    /// read are spilled to free what is missing and the task runs again once they are
    /// gone; when nothing more can be spilled, or after [`DEVICE_FULL_RUNS`] runs, it
    /// runs on the CPU.
    pub(crate) fn on_device_full(&mut self, task: TaskId, retry: Retry, needed: u64, why: &str) {
        let runs = self.device_full_runs.entry(task).or_insert(0);
        *runs += 1;
        let runs = *runs;
        let available = self
            .device_pool
            .as_ref()
            .map_or(0, |p| p.limit().saturating_sub(p.used()));
        let leaving = self.spill.leaving_device();
        let missing = needed.saturating_sub(available).saturating_sub(leaving);
        let victims = if runs < DEVICE_FULL_RUNS && missing > 0 {
            self.spill.free_device(missing, &retry.deps)
        } else {
            Vec::new()
        };
        if runs >= DEVICE_FULL_RUNS || (victims.is_empty() && leaving == 0 && missing > 0) {
            warn!(
                task = task.0,
                op = %retry.op,
                "{why}; nothing more can leave the device: running it on the CPU"
            );
            self.dispatch(task, retry, false);
            return;
        }
        info!(
            task = task.0,
            op = %retry.op,
            "{why}; spilling {} values to make room, then running it again",
            victims.len()
        );
        for t in victims {
            self.start_spill(t, Tier::Host);
        }
        self.parked.push(Parked { task, retry });
        if self.spill.leaving_device() == 0 {
            self.retry_device_full();
        }
    }

    /// Runs again the tasks waiting for room on the device (the values spilled for them
    /// have left it).
    pub(crate) fn retry_device_full(&mut self) {
        for Parked { task, retry } in std::mem::take(&mut self.parked) {
            self.dispatch(task, retry, true);
        }
    }

    /// Hands a task to the executor threads again, by the device's kernels or not.
    fn dispatch(&mut self, task: TaskId, retry: Retry, on_device: bool) {
        if !on_device {
            self.device_full_runs.remove(&task);
        }
        let job = Job {
            task,
            op: retry.op,
            args: Args::Ready(retry.args),
            deps: retry.deps,
            on_device,
        };
        if self.jobs.send(job).is_err() {
            self.core
                .on_executed(task, 0, Err("executor stopped".into()));
        }
    }

    /// The device failed for good: the scheduler is told why (its running tasks go to
    /// other workers, charged with this worker's death), and the worker stops with an
    /// error so that its supervisor starts a fresh process for the device.
    pub(crate) fn device_lost(&mut self, message: String) -> WorkerError {
        let device = self.device_label.clone();
        error!("{device} failed for good: {message}; leaving so that a fresh worker process takes the device");
        let _ = self.to_scheduler.send(ToScheduler::DeviceLost {
            message: format!("{device} failed for good: {message}"),
        });
        WorkerError::DeviceLost { device, message }
    }
}

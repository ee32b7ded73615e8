//! Executor threads: they run ops (on the device's kernels or the CPU) and report
//! results in batches; they decide nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rask_kernels::{Accelerator, OutputAlloc, Registry};
use rask_proto::{Datum, TaskId, Value};
use tokio::sync::mpsc;
use tracing::warn;

use crate::events::Event;
use crate::events::Executed;
use crate::events::JobError;
use crate::events::Retry;

/// Results are handed back in batches: a thread that finds more jobs queued keeps going
/// and reports when the queue is empty, when a batch is large, or when results have
/// waited long enough — one wake-up of the main loop per batch instead of per task.
pub(crate) const RESULT_BATCH: usize = 256;

pub(crate) const RESULT_DELAY: Duration = Duration::from_micros(500);

pub(crate) fn executor_loop(
    ex: &Exec,
    jobs: &crossbeam_channel::Receiver<Job>,
    events: &mpsc::UnboundedSender<Event>,
) {
    while let Ok(first) = jobs.recv() {
        // One clock read a job: a job's end is the next one's start (only a look at the
        // queue comes between).
        let batch_start = Instant::now();
        let (first, mut now) = run_job(ex, first, batch_start);
        let mut done = vec![first];
        while done.len() < RESULT_BATCH && now.duration_since(batch_start) < RESULT_DELAY {
            match jobs.try_recv() {
                Ok(job) => {
                    let (d, end) = run_job(ex, job, now);
                    done.push(d);
                    now = end;
                }
                Err(_) => break,
            }
        }
        if events.send(Event::Executed(done)).is_err() {
            return;
        }
    }
}

/// What runs ops: the registry, where outputs go, and the device that runs ops with a
/// device plan (a CUDA GPU, or a simulated GPU's CPU twins).
#[derive(Clone)]
pub(crate) struct Exec {
    pub(crate) registry: Registry,
    pub(crate) alloc: Option<Arc<dyn OutputAlloc>>,
    pub(crate) device: Option<Arc<dyn Accelerator>>,
}

/// Runs a job that started at `start` (a clock read just before); also returns when it
/// ended.
pub(crate) fn run_job(ex: &Exec, job: Job, start: Instant) -> (Executed, Instant) {
    let _span = tracing::debug_span!("task", task = job.task.0, op = %job.op).entered();
    let (args, unspilled) = match job.args {
        Args::Ready(v) => (Ok(v), Vec::new()),
        Args::Unspill {
            datum,
            bufs,
            mut deps,
            upload,
        } => unspill_inputs(ex, &datum, &bufs, &mut deps, &upload),
    };
    let mut retry = None;
    let result = args.map_err(JobError::Failed).and_then(|args| {
        let device = ex.device.as_deref().filter(|_| job.on_device);
        let r = ex
            .registry
            .call_on(&job.op, &args, ex.alloc.as_ref(), device);
        r.map_err(|e| match e {
            rask_kernels::KernelError::Failed { message, .. } => JobError::Failed(message),
            rask_kernels::KernelError::DeviceFull {
                needed, message, ..
            } => {
                retry = Some(Box::new(Retry {
                    op: job.op.clone(),
                    args,
                    deps: job.deps.clone(),
                }));
                JobError::DeviceFull { needed, message }
            }
            e @ rask_kernels::KernelError::DeviceLost { .. } => JobError::DeviceLost(e.to_string()),
            e => JobError::Failed(e.to_string()),
        })
    });
    let end = Instant::now();
    let duration_us = end.duration_since(start).as_micros() as u64;
    match &result {
        Ok(_) => tracing::debug!(duration_us, "ran"),
        Err(e) => tracing::debug!(duration_us, "failed: {e:?}"),
    }
    let done = Executed {
        task: job.task,
        result,
        duration_us,
        unspilled,
        retry,
    };
    (done, end)
}

/// Uploads the inputs `upload` names (indices into `deps`) to the device, on this
/// executor thread (a GPU's upload waits for the GPU: never on the event loop), and
/// builds the job's arguments from them. A value the device cannot take stays where it
/// is; the job runs either way.
pub(crate) fn unspill_inputs(
    ex: &Exec,
    datum: &Datum,
    bufs: &[Bytes],
    deps: &mut [Value],
    upload: &[(usize, TaskId)],
) -> (Result<Value, String>, Vec<(TaskId, Value)>) {
    let mut unspilled = Vec::new();
    if let Some(device) = &ex.device {
        for &(i, task) in upload {
            match device.upload(&deps[i]) {
                Some(Ok(on_device)) => {
                    deps[i] = on_device.clone();
                    unspilled.push((task, on_device));
                }
                Some(Err(e)) => warn!(
                    task = task.0,
                    "cannot bring a value back to the device: {e}"
                ),
                None => {}
            }
        }
    }
    let refs: Vec<&Value> = deps.iter().collect();
    let args = datum.to_value(bufs, &refs).map_err(|e| e.to_string());
    (args, unspilled)
}

/// The most time one wake-up of the event loop spends running ops inline before the
/// results so far are sent: about a hundred trivial tasks. A worker given a thousand
/// tasks at once used to run them all before reporting any, and the scheduler, with
/// nothing to do meanwhile, placed the next thousand only then: the two took turns.
pub(crate) const INLINE_SLICE: Duration = Duration::from_micros(200);

/// A job for an executor thread.
pub(crate) struct Job {
    pub(crate) task: TaskId,
    pub(crate) op: rask_proto::SharedStr,
    pub(crate) args: Args,
    /// The task's inputs.
    pub(crate) deps: Vec<TaskId>,
    /// Whether the op may run by the device's kernels (else on the CPU: the device had
    /// no room for it).
    pub(crate) on_device: bool,
}

/// A job's arguments: built, or to be built on the executor thread once some inputs are
/// back on the device.
pub(crate) enum Args {
    Ready(Value),
    Unspill {
        datum: Datum,
        bufs: Vec<Bytes>,
        deps: Vec<Value>,
        /// Inputs to upload first: index in `deps`, task.
        upload: Vec<(usize, TaskId)>,
    },
}

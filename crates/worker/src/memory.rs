//! Spill and unspill mechanics: tracking values by tier and moving their bytes (device,
//! host, disk). The policy (what and when) is `rask_worker_core::spill`'s.

use bytes::Bytes;
use rask_proto::msg::ComputeMsg;
use rask_proto::{TaskId, Value};
use rask_transport::shm::Arena;
use rask_worker_core::spill::{Spill, Tier};
use tokio::sync::mpsc;
use tracing::warn;

use crate::config::WorkerDevice;
use crate::event_loop::State;
use crate::events::{Event, Spilled};
use crate::executor::Args;

/// A copy of `v` with each byte payload (in host or device memory) moved by `put`, and
/// the bytes moved.
pub(crate) fn move_payloads(
    v: &Value,
    put: &mut dyn FnMut(&[u8]) -> Result<Bytes, String>,
) -> Result<(Value, u64), String> {
    Ok(match v {
        Value::Bytes(b) => (Value::Bytes(put(b)?), b.len() as u64),
        Value::Device(d) => {
            let host = d.data().to_host()?;
            (Value::Bytes(put(&host)?), host.len() as u64)
        }
        Value::List(l) => {
            let mut total = 0;
            let mut out = Vec::with_capacity(l.len());
            for x in l {
                let (x, n) = move_payloads(x, put)?;
                total += n;
                out.push(x);
            }
            (Value::List(out), total)
        }
        v => (v.clone(), 0),
    })
}

/// A value for the spill thread to move to `to`.
pub(crate) struct SpillJob {
    pub(crate) task: TaskId,
    pub(crate) to: Tier,
    pub(crate) gen: u64,
    pub(crate) value: Value,
}

/// Where the spill thread puts what it moves.
pub(crate) struct SpillTo {
    /// Host memory for values spilled from the device.
    pub(crate) host_arena: Arena,
    /// Where values spilled to disk go, in files without names.
    pub(crate) dir: std::path::PathBuf,
    /// The worker's id, in the names of spill files.
    pub(crate) worker: u64,
}

/// The spill thread: copies values down a tier (a download from a GPU waits for the
/// kernel it runs; a write to disk for the disk), off the event loop, and sends each copy
/// back as an event. Ends when the event loop drops its end of `jobs`.
pub(crate) fn spill_loop(
    to: &SpillTo,
    jobs: &crossbeam_channel::Receiver<SpillJob>,
    events: &mpsc::UnboundedSender<Event>,
) {
    while let Ok(job) = jobs.recv() {
        let started = std::time::Instant::now();
        let mut part = 0;
        let mut put = |b: &[u8]| match job.to {
            // Into host memory that stays mapped and is reused: a fresh heap buffer would
            // pay a page fault per 4 KiB on first touch.
            Tier::Host => to.host_arena.copy_in(b).map_err(|e| e.to_string()),
            Tier::Disk => {
                part += 1;
                // The name is used only where the file system cannot make unnamed files,
                // and only until the file is unlinked, at once.
                let pid = std::process::id();
                let name = format!("rask-spill-{pid}-{}-{}-{part}.bin", to.worker, job.task.0);
                rask_device::spill::to_file(&to.dir, &name, b)
                    .map_err(|e| format!("{}: {e}", to.dir.display()))
            }
            Tier::Device => Err("values are not spilled up".into()),
        };
        let result = move_payloads(&job.value, &mut put);
        // The value's own clone goes before the event: the device memory is given back
        // as soon as the store lets go of it.
        drop(job.value);
        let done = Spilled {
            task: job.task,
            to: job.to,
            gen: job.gen,
            result,
            started,
            stopped: std::time::Instant::now(),
        };
        if events.send(Event::Spilled(done)).is_err() {
            return;
        }
    }
}

impl State {
    /// Tells the spilling policy about a stored value and where it lives: on the device
    /// when its bytes are in device memory (a device kernel's output, or on a simulated
    /// GPU any op's output, which lands in the GPU's arena).
    pub(crate) fn track(&mut self, task: TaskId, v: &Value, nbytes: u64) {
        if !Spill::tracks(nbytes) {
            // Not worth spilling: no need to find out where it lives.
            self.spill.remove(task);
            return;
        }
        let sim = matches!(self.cfg.device, WorkerDevice::Sim { .. });
        let in_device_arena = |b: &Bytes| sim && self.arena.locate(b).is_some();
        // A value of another GPU of this process (fetched from it in place) is not in
        // this device's memory: spilling it here would free nothing.
        let here = |x: &Value| matches!(x, Value::Device(d) if d.label() == self.device_label);
        let tier = match v {
            v if v.any_leaf(&here) => Tier::Device,
            Value::Bytes(b) if in_device_arena(b) => Tier::Device,
            _ => Tier::Host,
        };
        self.spill.add(task, tier, nbytes);
    }

    /// Moves values down a tier as the policy says: device → host (a copy to the heap, the
    /// device memory is given back) and host → disk (written to a file that is then mapped
    /// and unlinked: the pages come back from disk when read, and the space is returned
    /// when the value is dropped). The copies are the spill thread's (a download waits for
    /// the GPU): the store takes the moved values when they come back.
    pub(crate) fn spill_now(&mut self) {
        let device_used = self.device_pool.as_ref().map_or(0, |p| p.used());
        let plan = self.spill.plan(device_used, self.process_memory());
        for (task, to) in plan {
            self.start_spill(task, to);
        }
    }

    /// Hands a value to the spill thread, to be moved to `to`.
    pub(crate) fn start_spill(&mut self, task: TaskId, to: Tier) {
        // A clone (it shares the bytes): the store keeps the value, readable meanwhile.
        let Some(value) = self.store.lock().expect("store lock").get(&task).cloned() else {
            self.spill.remove(task);
            return;
        };
        let gen = self.next_spill;
        self.next_spill += 1;
        self.spill.move_started(task, to);
        self.spilling.insert(task, gen);
        let job = SpillJob {
            task,
            to,
            gen,
            value,
        };
        if self.spiller.send(job).is_err() {
            self.spill.move_stopped(task);
            self.spilling.remove(&task);
        }
    }

    /// A value the spill thread moved: it replaces the stored one, unless that changed
    /// meanwhile (replaced, dropped, brought back to the device: the copy is dropped).
    pub(crate) fn on_spilled(&mut self, s: Spilled) {
        self.apply_spilled(s);
        // Tasks waiting for room on the device run again once what was spilled for them
        // has left it.
        if self.spill.leaving_device() == 0 {
            self.retry_device_full();
        }
    }

    fn apply_spilled(&mut self, s: Spilled) {
        if self.spilling.get(&s.task) != Some(&s.gen) {
            return;
        }
        self.spilling.remove(&s.task);
        if self.spill.moving(s.task) != Some(s.to) {
            return;
        }
        let task = s.task;
        match s.result {
            Ok((nv, nb)) => {
                let label = match (self.spill.tier(task), s.to) {
                    (Some(Tier::Device), Tier::Host) => "device->host",
                    (Some(Tier::Device), Tier::Disk) => "device->disk",
                    _ => "host->disk",
                };
                let mut store = self.store.lock().expect("store lock");
                match store.get_mut(&task) {
                    Some(slot) => {
                        tracing::debug!(task = task.0, bytes = nb, "{label}");
                        *self.spilled.entry(label).or_default() += nb;
                        self.activity.spill(task, label, nb, s.started, s.stopped);
                        *slot = nv;
                        drop(store);
                        self.spill.moved(task, s.to);
                    }
                    None => {
                        drop(store);
                        self.spill.remove(task);
                    }
                }
            }
            Err(e) => {
                warn!(task = task.0, "cannot spill: {e}");
                // Stop trying this one: keep it where it is.
                self.spill.remove(task);
            }
        }
    }

    /// Inputs spilled from the device go back to it when the task runs by the device's
    /// kernels (while the device has room below its spilling target): the job then
    /// uploads them on its executor thread and builds its arguments there
    /// ([`Args::Unspill`]); the store takes the uploaded values when the job is done.
    pub(crate) fn unspill_for(&mut self, spec: &ComputeMsg, bufs: Vec<Bytes>, args: Value) -> Args {
        let used = self.device_pool.as_ref().map_or(0, |p| p.used());
        if !self
            .spill
            .any_unspill(spec.deps.iter().map(|d| d.task), used)
        {
            return Args::Ready(args);
        }
        let Some(device) = self.exec.device.clone() else {
            return Args::Ready(args);
        };
        let list = match &args {
            Value::List(l) => l.as_slice(),
            v => std::slice::from_ref(v),
        };
        if !device.runs(&self.exec.registry, &spec.op, list) {
            return Args::Ready(args);
        }
        let deps: Option<Vec<Value>> = {
            let store = self.store.lock().expect("store lock");
            spec.deps
                .iter()
                .map(|d| store.get(&d.task).cloned())
                .collect()
        };
        let Some(deps) = deps else {
            return Args::Ready(args);
        };
        let sizes: Vec<(TaskId, u64)> = spec
            .deps
            .iter()
            .zip(&deps)
            .map(|(d, v)| (d.task, v.nbytes()))
            .collect();
        let upload: Vec<(usize, TaskId)> = self
            .spill
            .unspill_plan(&sizes, used)
            .into_iter()
            .map(|i| (i, sizes[i].0))
            .collect();
        for (_, t) in &upload {
            self.spill.unspill_started(*t);
        }
        Args::Unspill {
            datum: spec.args.datum().into_owned(),
            bufs,
            deps,
            upload,
        }
    }
}

//! The simulated GPU's executor: plans run by the CPU twins ([`super::host`]), outputs
//! left in the simulated GPU's memory.
//!
//! A simulated GPU behaves as a CUDA one where a worker can tell: its work runs one plan
//! at a time (a GPU thread and its stream), bringing a value's bytes to the host waits for
//! the plan running (a download queued behind a kernel), and a CUDA error injected by
//! `RASK_SIM_FAULT` goes through the classification a real error does
//! ([`rask_device::fault`]): a sticky one loses the device for good.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};

use bytes::Bytes;
use rask_proto::{DeviceBytes, DeviceData, DeviceLoc, Value};

use super::host::{run_into, run_on_host};
use super::plan;
use crate::chunk::chunk_value;
use crate::{OpError, OutputAlloc};
use rask_device::fault::FaultKind;

/// A simulated GPU's executor: device plans run by the kernels' CPU twins, launch by
/// launch, as a GPU would run them, their outputs left in the GPU's memory
/// ([`SimBytes`]). Users' kernels run their CPU twin.
pub struct HostPlans {
    device: DeviceLoc,
    memory: Arc<dyn OutputAlloc>,
    downloaded: Arc<AtomicU64>,
    queue: Arc<Queue>,
    faults: Vec<(String, u32)>,
    /// Why the device is lost, once a sticky error was injected.
    lost: OnceLock<String>,
    /// The device's memory account, for what a plan needs while it runs.
    pool: Option<Arc<rask_device::MemoryPool>>,
}

impl HostPlans {
    /// The executor of simulated GPU `device` (`sim:N`), whose memory is `memory`: an
    /// allocation it refuses (the GPU is full) leaves that output on the host. Faults to
    /// inject are read from `RASK_SIM_FAULT` (`OP=CODE[,OP=CODE…]`, see [`parse_faults`]).
    pub fn new(device: DeviceLoc, memory: Arc<dyn OutputAlloc>) -> HostPlans {
        let queue = Arc::new(Queue::default());
        QUEUES
            .lock()
            .expect("queues lock")
            .push((device, Arc::downgrade(&queue)));
        HostPlans {
            device,
            memory,
            downloaded: Arc::default(),
            queue,
            faults: faults_from_env(),
            lost: OnceLock::new(),
            pool: None,
        }
    }

    /// Raises CUDA error `code` whenever op `op` runs, for each pair (as `RASK_SIM_FAULT`
    /// does, which this replaces).
    pub fn faults(mut self, faults: Vec<(String, u32)>) -> HostPlans {
        self.faults = faults;
        self
    }

    /// Accounts what each plan needs while it runs (inputs brought to the device, its
    /// temporaries) in `pool`, as a CUDA GPU does, and refuses to leave an output on the
    /// host: a plan that does not fit, or whose output does not, fails with
    /// [`OpError::DeviceFull`] (its worker spills and runs it again). `pool` is the one
    /// the memory's allocations are accounted in.
    pub fn accounting(mut self, pool: Arc<rask_device::MemoryPool>) -> HostPlans {
        self.pool = Some(pool);
        self
    }

    /// Bytes of this GPU's memory as a device value's data.
    fn keep(&self, bytes: Bytes) -> DeviceBytes {
        DeviceBytes::new(SimBytes {
            bytes,
            device: self.device,
            downloaded: self.downloaded.clone(),
            queue: self.queue.clone(),
        })
    }

    /// The error injected for `op`, if any, classified as a real one: a sticky error
    /// loses the device (naming the kernels the plan launches), out of memory is the
    /// device being full, anything else fails the op.
    fn fault(&self, op: &str, p: &super::Plan) -> Option<OpError> {
        let &(_, code) = self.faults.iter().find(|(o, _)| o == op)?;
        let what = format!("running {} of op {op:?} on {}", p.kernels(), self.device);
        let e = rask_device::DeviceError::from_code(&what, code);
        Some(match e.kind() {
            FaultKind::Sticky => {
                let why = self.lost.get_or_init(|| format!("{e}")).clone();
                OpError::DeviceLost(why)
            }
            FaultKind::OutOfMemory => OpError::DeviceFull {
                device: self.device.to_string(),
                needed: p.out_len(),
                why: e.to_string(),
            },
            FaultKind::Other => OpError::Message(e.to_string()),
        })
    }
}

/// Parses `RASK_SIM_FAULT`: `OP=CODE[,OP=CODE…]`, a CUDA error code by number or name
/// (`rask.array.map=illegal_address`) that simulated GPUs raise when they run that op.
/// An entry that does not parse is ignored with a warning.
fn faults_from_env() -> Vec<(String, u32)> {
    let Ok(spec) = std::env::var("RASK_SIM_FAULT") else {
        return Vec::new();
    };
    parse_faults(&spec).unwrap_or_else(|bad| {
        tracing::warn!("RASK_SIM_FAULT: {bad:?} is not OP=CODE; ignored");
        Vec::new()
    })
}

/// The faults of `RASK_SIM_FAULT`'s form, `OP=CODE[,OP=CODE…]` (a CUDA error code by
/// number or name raised when that op runs), or the entry that does not parse.
pub fn parse_faults(spec: &str) -> Result<Vec<(String, u32)>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (op, code) = e.rsplit_once('=').ok_or_else(|| e.to_string())?;
            let code = rask_device::fault::parse_code(code).ok_or_else(|| e.to_string())?;
            Ok((op.trim().to_string(), code))
        })
        .collect()
}

/// A simulated GPU's work queue: one plan (or download) at a time, as a GPU thread
/// serves its commands.
#[derive(Default)]
struct Queue {
    busy: Mutex<bool>,
    free: Condvar,
    /// The time it was held.
    clock: crate::busy::Busy,
}

impl Queue {
    /// Waits for the queue, and holds it until the guard is dropped.
    fn enter(self: &Arc<Self>) -> Held {
        let mut busy = self.busy.lock().expect("queue lock");
        while *busy {
            busy = self.free.wait(busy).expect("queue lock");
        }
        *busy = true;
        self.clock.start();
        Held(self.clone())
    }
}

/// A simulated GPU's queue, held: its plans and downloads wait until this is dropped.
pub struct Held(Arc<Queue>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.clock.stop();
        *self.0.busy.lock().expect("queue lock") = false;
        self.0.free.notify_one();
    }
}

/// The queues of this process's simulated GPUs.
static QUEUES: Mutex<Vec<(DeviceLoc, Weak<Queue>)>> = Mutex::new(Vec::new());

/// Keeps simulated GPU `device` of this process busy, as a long kernel keeps a GPU, until
/// the guard is dropped: its plans and the downloads of its values wait meanwhile. `None`
/// when this process has no such simulated GPU. (For tests of what must not wait for a
/// device.)
pub fn stall(device: DeviceLoc) -> Option<Held> {
    let queue = {
        let mut queues = QUEUES.lock().expect("queues lock");
        queues.retain(|(_, q)| q.strong_count() > 0);
        queues
            .iter()
            .rev()
            .find(|(d, _)| *d == device)
            .and_then(|(_, q)| q.upgrade())?
    };
    Some(queue.enter())
}

impl crate::Accelerator for HostPlans {
    fn try_run(
        &self,
        registry: &crate::Registry,
        op: &str,
        args: &[Value],
    ) -> Option<Result<Value, OpError>> {
        if registry.cuda_kernel(op).is_some() {
            return None;
        }
        let p = plan(op, args)?;
        if let Some(why) = self.lost.get() {
            return Some(Err(OpError::DeviceLost(why.clone())));
        }
        let _running = self.queue.enter();
        if let Some(e) = self.fault(op, &p) {
            return Some(Err(e));
        }
        // Inputs in this GPU's memory are read in place; others and the temporaries take
        // room while the plan runs.
        let here = |i: &super::Input| match i {
            super::Input::Device(d) => d
                .downcast::<SimBytes>()
                .is_some_and(|s| s.device == self.device),
            super::Input::Host(_) => false,
        };
        let scratch = p.device_bytes(here) - p.out_len();
        let _scratch = match self.pool.as_ref().map(|pool| pool.reserve(scratch)) {
            Some(Err(e)) => {
                return Some(Err(OpError::DeviceFull {
                    device: self.device.to_string(),
                    needed: scratch,
                    why: e.to_string(),
                }))
            }
            Some(Ok(r)) => Some(r),
            None => None,
        };
        let len = p.out_len() as usize;
        let Some(mut out) = (len > 0).then(|| self.memory.alloc(len)).flatten() else {
            if let (Some(pool), true) = (&self.pool, len > 0) {
                // Accounted as a CUDA GPU is: no room for the output is the device
                // being full (its worker spills and runs the op again).
                return Some(Err(OpError::DeviceFull {
                    device: self.device.to_string(),
                    needed: scratch + len as u64,
                    why: format!(
                        "{} of {} bytes in use, {len} more for the output",
                        pool.used(),
                        pool.limit()
                    ),
                }));
            }
            return Some(run_on_host(&p).map(|c| c.to_value()).map_err(OpError::from));
        };
        if let Err(e) = run_into(&p, out.bytes_mut()) {
            return Some(Err(e.into()));
        }
        let data = Value::Device(self.keep(out.freeze()));
        Some(Ok(chunk_value(p.dtype, &p.shape, data)))
    }

    fn lost(&self) -> Option<String> {
        self.lost.get().cloned()
    }

    fn busy_us(&self) -> Option<u64> {
        Some(self.queue.clock.micros())
    }

    fn downloaded(&self) -> u64 {
        self.downloaded.load(Ordering::Relaxed)
    }

    fn runs(&self, registry: &crate::Registry, op: &str, args: &[Value]) -> bool {
        registry.cuda_kernel(op).is_none() && plan(op, args).is_some()
    }

    fn upload(&self, v: &Value) -> Option<Result<Value, OpError>> {
        let _queued = self.queue.enter();
        crate::map_host_bytes(v, &mut |b| {
            let mut m = self.memory.alloc(b.len())?;
            m.bytes_mut().copy_from_slice(b);
            Some(Ok(Value::Device(self.keep(m.freeze()))))
        })
    }
}

/// Bytes in a simulated GPU's memory. That memory is host memory, so going to the host
/// lends the same bytes (counted as a download, as a GPU would copy them).
pub struct SimBytes {
    bytes: Bytes,
    device: DeviceLoc,
    downloaded: Arc<AtomicU64>,
    /// The GPU's queue: a download waits for the plan running.
    queue: Arc<Queue>,
}

impl SimBytes {
    /// The bytes in place (for the simulated GPUs' kernels).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

impl DeviceData for SimBytes {
    fn device(&self) -> DeviceLoc {
        self.device
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    fn to_host(&self) -> Result<Bytes, String> {
        drop(self.queue.enter());
        self.downloaded
            .fetch_add(self.bytes.len() as u64, Ordering::Relaxed);
        Ok(self.bytes.clone())
    }

    /// Peers on the host map the simulated GPU's memory (the CUDA IPC analogue).
    fn host_view(&self) -> Option<Bytes> {
        Some(self.bytes.clone())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

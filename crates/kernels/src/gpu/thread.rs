//! A GPU driven by a thread of its own ([`GpuThread`]), and the values it leaves in the
//! GPU's memory ([`CudaBytes`]): executor threads (and whoever needs a value's bytes on the
//! host) send it commands and wait for the answers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};

use bytes::Bytes;
use rask_device::cuda::DeviceMem;
use rask_device::{DeviceError, MemoryPool, Reservation};
use rask_proto::{DeviceBytes, DeviceData, DeviceLoc, IpcBuffer, IpcExport, Value};

use super::{Gpu, Ran};
use crate::chunk::chunk_value;
use crate::plan::{self, Plan, Step};
use crate::{OpError, PlanError, Registry};
use rask_device::fault::FaultKind;

/// What a GPU's thread is asked to do.
enum Cmd {
    /// Run a plan, its output kept in device memory (reserved in the pool) or, when the
    /// pool is full, downloaded.
    Run {
        plan: Plan,
        /// The op, for messages.
        op: String,
        reply: mpsc::SyncSender<Result<Ran, PlanError>>,
    },
    /// The bytes of memory of this GPU, to the host.
    Download {
        mem: Arc<DeviceMem>,
        reply: mpsc::SyncSender<Result<Bytes, PlanError>>,
    },
    /// Memory of this GPU no value holds any more: freed after the work queued on the
    /// stream.
    Free { mem: Arc<DeviceMem> },
    /// Bytes into device memory, reserved in the pool by the caller.
    Upload {
        bytes: Bytes,
        reservation: Reservation,
        reply: mpsc::SyncSender<Result<Ran, PlanError>>,
    },
    /// The IPC handle of memory of this GPU.
    Export {
        mem: Arc<DeviceMem>,
        reply: mpsc::SyncSender<Result<IpcExport, PlanError>>,
    },
    /// A peer's exported bytes copied into this GPU's memory (reserved in the pool by the
    /// caller) or, without a reservation, to the host.
    Import {
        export: IpcExport,
        len: usize,
        reservation: Option<Reservation>,
        /// The peer's loan: kept while the allocation stays open here.
        loan: Option<super::Loan>,
        reply: mpsc::SyncSender<Result<Ran, PlanError>>,
    },
}

/// A GPU driven by a thread of its own, for a worker's executor threads (and anything that
/// needs a value's bytes on the host). The thread stops when this and every value in the
/// GPU's memory are dropped.
pub struct GpuThread {
    tx: mpsc::Sender<Cmd>,
    pool: Arc<MemoryPool>,
    gpu: u64,
    device: DeviceLoc,
    name: String,
    arch: String,
    blas: bool,
    /// How the built-in kernels were made ready at open.
    kernels: super::Kernels,
    /// Why the GPU is lost, once a sticky error was seen.
    lost: Arc<OnceLock<String>>,
    downloaded: Arc<AtomicU64>,
    /// The time its thread spent serving commands.
    busy: Arc<crate::busy::Busy>,
}

impl std::fmt::Debug for GpuThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuThread")
            .field("device", &self.device)
            .field("name", &self.name)
            .field("arch", &self.arch)
            .finish()
    }
}

impl GpuThread {
    /// Opens GPU `ordinal` on a new thread; outputs kept on the GPU are accounted in
    /// `pool` (the device's memory limit).
    pub fn spawn(ordinal: u32, pool: Arc<MemoryPool>) -> Result<GpuThread, DeviceError> {
        let (tx, rx) = mpsc::channel::<Cmd>();
        let (opened_tx, opened_rx) = mpsc::sync_channel(1);
        let kept = pool.clone();
        let lost = Arc::new(OnceLock::new());
        let lost_here = lost.clone();
        let busy = Arc::new(crate::busy::Busy::default());
        let busy_here = busy.clone();
        let device = DeviceLoc::cuda(ordinal);
        std::thread::Builder::new()
            .name(format!("rask-gpu-{ordinal}"))
            .spawn(move || {
                let mut gpu = match Gpu::open(ordinal) {
                    Ok(g) => g,
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                let info = (
                    gpu.id,
                    gpu.name().to_string(),
                    gpu.arch().to_string(),
                    gpu.gpu.has_blas(),
                    gpu.kernels().clone(),
                );
                if opened_tx.send(Ok(info)).is_err() {
                    return;
                }
                serve(&mut gpu, &kept, rx, &lost_here, device, &busy_here);
            })
            .map_err(DeviceError::Io)?;
        let (gpu, name, arch, blas, kernels) = opened_rx
            .recv()
            .map_err(|_| DeviceError::Cuda("the GPU's thread stopped while opening it".into()))??;
        Ok(GpuThread {
            tx,
            pool,
            gpu,
            device,
            name,
            arch,
            blas,
            kernels,
            lost,
            downloaded: Arc::default(),
            busy,
        })
    }

    /// How the built-in kernels were made ready when the GPU was opened (for the
    /// worker's start-up line).
    pub fn kernels(&self) -> &super::Kernels {
        &self.kernels
    }

    /// An op's error from the GPU's: a lost GPU, a full one, or another failure.
    fn op_error(&self, e: PlanError) -> OpError {
        match e {
            PlanError::Lost(why) => OpError::DeviceLost(why),
            PlanError::Full { needed, why } => OpError::DeviceFull {
                device: self.device.to_string(),
                needed,
                why,
            },
            PlanError::Device(d) | PlanError::Transfer { source: d, .. }
                if d.kind() == FaultKind::OutOfMemory =>
            {
                OpError::DeviceFull {
                    device: self.device.to_string(),
                    needed: 0,
                    why: d.to_string(),
                }
            }
            e => OpError::from(e),
        }
    }

    /// The GPU's product name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The architecture kernels are compiled for (`sm_XY`).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    fn ask<T>(
        &self,
        cmd: impl FnOnce(mpsc::SyncSender<Result<T, PlanError>>) -> Cmd,
    ) -> Result<T, PlanError> {
        ask(&self.tx, cmd)
    }

    /// The plan of `op` on this GPU (a user's kernel, or a built-in plan), `None` when it
    /// has none here (no plan, or a GEMM without cuBLAS): the op then runs on the CPU.
    fn plan(&self, registry: &Registry, op: &str, args: &[Value]) -> Option<Plan> {
        let plan = match registry.cuda_kernel(op) {
            Some(k) => plan::custom(&k.source, &k.entry, args)?,
            None => plan::plan(op, args)?,
        };
        let gemm = plan.steps.iter().any(|s| matches!(s, Step::Gemm { .. }));
        let launches = plan.steps.iter().any(|s| matches!(s, Step::Launch(_)));
        ((self.blas || !gemm) && (self.kernels.ready() || !launches)).then_some(plan)
    }

    /// A value left by the GPU's thread.
    fn value(&self, r: Ran) -> Value {
        match r {
            Ran::Host(b) => Value::Bytes(b),
            Ran::Kept { mem, reservation } => Value::Device(DeviceBytes::new(CudaBytes {
                len: mem.len(),
                mem: Some(Arc::new(mem)),
                gpu: self.gpu,
                device: self.device,
                tx: self.tx.clone(),
                downloaded: self.downloaded.clone(),
                export: OnceLock::new(),
                _reservation: reservation,
            })),
        }
    }
}

fn ask<T>(
    tx: &mpsc::Sender<Cmd>,
    cmd: impl FnOnce(mpsc::SyncSender<Result<T, PlanError>>) -> Cmd,
) -> Result<T, PlanError> {
    let (reply, answer) = mpsc::sync_channel(1);
    tx.send(cmd(reply)).map_err(|_| PlanError::GpuStopped)?;
    answer.recv().map_err(|_| PlanError::GpuStopped)?
}

/// Whether a plan's error is one that loses the GPU for good.
fn sticky(e: &PlanError) -> bool {
    match e {
        PlanError::Device(d) | PlanError::Transfer { source: d, .. } => {
            d.kind() == FaultKind::Sticky
        }
        _ => false,
    }
}

/// `r`, unless it is a sticky error: that loses the GPU (said once, with what was being
/// done) and becomes [`PlanError::Lost`].
fn lose_on_sticky<T>(
    r: Result<T, PlanError>,
    lost: &OnceLock<String>,
    device: DeviceLoc,
    doing: &dyn Fn() -> String,
) -> Result<T, PlanError> {
    match r {
        Err(e) if sticky(&e) => {
            let why = lost.get_or_init(|| {
                let why = format!("{device} failed for good while {}: {e}", doing());
                tracing::error!("{why}");
                why
            });
            Err(PlanError::Lost(why.clone()))
        }
        r => r,
    }
}

/// Runs a plan with its output kept in device memory: what it needs while running (inputs
/// brought to the GPU, temporaries) and its output are reserved in the pool first, so a
/// plan that does not fit is refused before anything is allocated.
fn run(gpu: &mut Gpu, pool: &Arc<MemoryPool>, plan: &Plan) -> Result<Ran, PlanError> {
    let id = gpu.id;
    let out = plan.out_len();
    let scratch = plan.device_bytes(|i| super::resident(i, id).is_some()) - out;
    let full = |e: DeviceError| PlanError::Full {
        needed: scratch + out,
        why: e.to_string(),
    };
    let _scratch = pool.reserve(scratch).map_err(full)?;
    let reservation = pool.reserve(out).map_err(full)?;
    let mem = gpu.run_kept(plan)?;
    Ok(Ran::Kept { mem, reservation })
}

/// The GPU's thread: one command at a time, until every sender is gone. After a sticky
/// error every command is refused with why (the context cannot be used again).
fn serve(
    gpu: &mut Gpu,
    pool: &Arc<MemoryPool>,
    rx: mpsc::Receiver<Cmd>,
    lost: &OnceLock<String>,
    device: DeviceLoc,
    busy: &crate::busy::Busy,
) {
    loop {
        let cmd = match rx.recv_timeout(super::HANDLE_IDLE / 2) {
            Ok(cmd) => cmd,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                gpu.expire_handles();
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        gpu.expire_handles();
        busy.start();
        serve_one(gpu, pool, cmd, lost, device);
        busy.stop();
    }
}

/// Serves one command (see [`serve`]).
fn serve_one(
    gpu: &mut Gpu,
    pool: &Arc<MemoryPool>,
    cmd: Cmd,
    lost: &OnceLock<String>,
    device: DeviceLoc,
) {
    let check = |r, doing: &dyn Fn() -> String| lose_on_sticky(r, lost, device, doing);
    let check_bytes = |r, doing: &dyn Fn() -> String| lose_on_sticky(r, lost, device, doing);
    let check_export = |r, doing: &dyn Fn() -> String| lose_on_sticky(r, lost, device, doing);
    {
        if let Some(why) = lost.get() {
            let refused = || PlanError::Lost(why.clone());
            match cmd {
                Cmd::Run { reply, .. } | Cmd::Upload { reply, .. } | Cmd::Import { reply, .. } => {
                    let _ = reply.send(Err(refused()));
                }
                Cmd::Download { reply, .. } => {
                    let _ = reply.send(Err(refused()));
                }
                Cmd::Export { reply, .. } => {
                    let _ = reply.send(Err(refused()));
                }
                // Freeing in a lost context fails: the memory goes with the process.
                Cmd::Free { mem } => std::mem::forget(mem),
            }
            return;
        }
        match cmd {
            Cmd::Run { plan, op, reply } => {
                let r = run(gpu, pool, &plan);
                let r = check(r, &|| format!("running {} of op {op:?}", plan.kernels()));
                let _ = reply.send(r);
            }
            Cmd::Download { mem, reply } => {
                let r = check_bytes(gpu.download(&mem), &|| "downloading a value".into());
                let _ = reply.send(r);
            }
            // Values hand their memory here when dropped. Every command is done (and has
            // dropped what it held) before the next is served, so this is its last owner.
            Cmd::Free { mem } => match Arc::try_unwrap(mem) {
                Ok(mem) => gpu.free(mem),
                Err(shared) => drop(shared),
            },
            Cmd::Upload {
                bytes,
                reservation,
                reply,
            } => {
                let kept = gpu.upload(&bytes).map(|mem| Ran::Kept { mem, reservation });
                let _ = reply.send(check(kept, &|| "uploading a value".into()));
            }
            Cmd::Export { mem, reply } => {
                let r = check_export(gpu.ipc_export(&mem), &|| "exporting an IPC handle".into());
                let _ = reply.send(r);
            }
            Cmd::Import {
                export,
                len,
                reservation,
                loan,
                reply,
            } => {
                let r = gpu.ipc_import(&export, len, reservation, loan);
                let _ = reply.send(check(r, &|| "importing a peer's value".into()));
            }
        }
    }
}

impl crate::Accelerator for GpuThread {
    fn try_run(
        &self,
        registry: &Registry,
        op: &str,
        args: &[Value],
    ) -> Option<Result<Value, OpError>> {
        let mut plan = self.plan(registry, op, args)?;
        // Inputs in another device's memory come to the host here, not on the GPU's
        // thread: two GPU threads waiting on each other's downloads would never finish.
        for i in &mut plan.inputs {
            if let plan::Input::Device(d) = i {
                if d.downcast::<CudaBytes>().is_none_or(|c| c.gpu != self.gpu) {
                    match d.data().to_host() {
                        Ok(b) => *i = plan::Input::Host(b),
                        Err(e) => return Some(Err(OpError::Message(e))),
                    }
                }
            }
        }
        let (dtype, shape) = (plan.dtype, plan.shape.clone());
        let op = op.to_string();
        let ran = self.ask(|reply| Cmd::Run { plan, op, reply });
        Some(
            ran.map(|r| chunk_value(dtype, &shape, self.value(r)))
                .map_err(|e| self.op_error(e)),
        )
    }

    fn lost(&self) -> Option<String> {
        self.lost.get().cloned()
    }

    fn downloaded(&self) -> u64 {
        self.downloaded.load(Ordering::Relaxed)
    }

    fn busy_us(&self) -> Option<u64> {
        Some(self.busy.micros())
    }

    fn runs(&self, registry: &Registry, op: &str, args: &[Value]) -> bool {
        self.plan(registry, op, args).is_some()
    }

    fn upload(&self, v: &Value) -> Option<Result<Value, OpError>> {
        crate::map_host_bytes(v, &mut |b| {
            // A full device keeps the value on the host.
            let reservation = self.pool.reserve(b.len() as u64).ok()?;
            let bytes = b.clone();
            let r = self.ask(|reply| Cmd::Upload {
                bytes,
                reservation,
                reply,
            });
            Some(r.map(|r| self.value(r)).map_err(|e| self.op_error(e)))
        })
    }

    fn imports(&self) -> bool {
        true
    }

    fn import(&self, b: &IpcBuffer) -> Result<Value, OpError> {
        let len = b.len as usize;
        // A full device takes the bytes to the host: an import is not worth spilling for
        // (the value may be read once), and it keeps IPC on for the next.
        let reservation = self.pool.reserve(b.len).ok();
        let export = b.export.clone();
        let loan = b.loan.clone();
        let r = self
            .ask(|reply| Cmd::Import {
                export,
                len,
                reservation,
                loan,
                reply,
            })
            .map_err(|e| self.op_error(e))?;
        Ok(self.value(r))
    }
}

/// Bytes in a CUDA GPU's memory, freed (on the GPU's thread) when the last reference is
/// dropped.
pub struct CudaBytes {
    /// The memory; `None` only while being dropped.
    mem: Option<Arc<DeviceMem>>,
    len: usize,
    /// The [`super::Gpu`] whose memory this is.
    pub(super) gpu: u64,
    device: DeviceLoc,
    tx: mpsc::Sender<Cmd>,
    downloaded: Arc<AtomicU64>,
    /// Its IPC handle, asked of the GPU's thread once.
    export: OnceLock<Result<IpcExport, String>>,
    _reservation: Reservation,
}

impl CudaBytes {
    /// The memory holding the bytes.
    pub(super) fn mem(&self) -> &DeviceMem {
        self.mem.as_ref().expect("invariant: memory until dropped")
    }

    fn shared_mem(&self) -> Arc<DeviceMem> {
        self.mem.clone().expect("invariant: memory until dropped")
    }
}

impl DeviceData for CudaBytes {
    fn device(&self) -> DeviceLoc {
        self.device
    }

    fn len(&self) -> usize {
        self.len
    }

    fn to_host(&self) -> Result<Bytes, String> {
        let mem = self.shared_mem();
        let b = ask(&self.tx, |reply| Cmd::Download { mem, reply }).map_err(|e| e.to_string())?;
        self.downloaded
            .fetch_add(self.len as u64, Ordering::Relaxed);
        Ok(b)
    }

    fn ipc_export(&self) -> Option<Result<IpcExport, String>> {
        Some(
            self.export
                .get_or_init(|| {
                    let mem = self.shared_mem();
                    ask(&self.tx, |reply| Cmd::Export { mem, reply }).map_err(|e| e.to_string())
                })
                .clone(),
        )
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Drop for CudaBytes {
    fn drop(&mut self) {
        if let Some(mem) = self.mem.take() {
            // If the thread has stopped, the undelivered command is dropped here and the
            // memory freed with it (the memory keeps its context alive until then).
            let _ = self.tx.send(Cmd::Free { mem });
        }
    }
}

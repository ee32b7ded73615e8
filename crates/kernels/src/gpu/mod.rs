//! Running device plans on a CUDA GPU: kernels from `cuda/` compiled by NVRTC when the GPU
//! is opened (users' kernels at first use) and cached, GEMM
//! through cuBLAS, inputs and outputs staged through pinned host memory, all on one stream
//! of the GPU's own. The GPU itself (memory, copies, launches, IPC) is
//! [`rask_device::cuda::CudaGpu`]; this module decides what to launch, in what order, on
//! which buffers.
//!
//! A worker drives its GPU from one thread of its own ([`GpuThread`], in `thread`): a CUDA
//! context binds to the calling thread, and every call here blocks until the GPU is done,
//! so executor threads hand plans to that thread and wait for the answer.
//!
//! Outputs stay in the GPU's memory ([`CudaBytes`], allocated with `cuMemAlloc` so that
//! they can be exported by CUDA IPC) and are accounted against the device's memory pool;
//! a plan whose inputs are already there uses them in place. Bytes go to the host only when
//! asked ([`rask_proto::DeviceData::to_host`]), and device memory is freed, on the GPU's
//! thread, when the last reference to a value is dropped.
//!
//! Between GPU workers of one host, a value's bytes go by CUDA IPC: the holder exports its
//! allocation's handle ([`CudaBytes`] implements [`rask_proto::DeviceData::ipc_export`]),
//! the receiver's GPU thread opens it (or finds it open, [`Handles`]), copies the bytes
//! into its own memory over NVLink or PCIe ([`crate::Accelerator::import`]); the host never
//! sees them.

mod handles;
mod targets;
mod thread;

pub use handles::Handles;
pub use targets::{targets, Kernels};
pub use thread::{CudaBytes, GpuThread};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use rask_device::cuda::{self, CudaGpu, DeviceMem, Function, KernelArg};
use rask_device::nvrtc::{ModuleCache, Options};
use rask_device::{DeviceError, Reservation};
use rask_proto::{DType, IpcExport};

use crate::chunk::Chunk;
use crate::plan::{self, Arg, Buf, Module, Plan, Step};
use crate::{cuda_sources, fnv1a, PlanError};

/// Tells GPUs of one process apart (a value's memory belongs to one of them).
static NEXT_GPU: AtomicU64 = AtomicU64::new(1);

/// An opened GPU ready to run plans.
pub struct Gpu {
    id: u64,
    gpu: CudaGpu,
    cache: ModuleCache,
    modules: HashMap<ModKey, Loaded>,
    /// How the built-in kernels were made ready at open.
    kernels: Kernels,
    /// Peers' allocations opened by IPC handle, with the loans keeping them alive.
    handles: Handles<cuda::IpcMapping, Option<Loan>>,
}

/// A peer's loan of lent bytes, released when dropped.
type Loan = std::sync::Arc<dyn std::any::Any + Send + Sync>;

/// Peers' allocations kept open at most.
const OPEN_HANDLES: usize = 64;

/// How long an opened handle is kept without use.
pub const HANDLE_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("name", &self.gpu.name())
            .field("arch", &self.gpu.arch())
            .field("cublas", &self.gpu.has_blas())
            .finish()
    }
}

/// A plan's output, or bytes imported.
enum Ran {
    /// In this GPU's memory, accounted in its pool.
    Kept {
        mem: DeviceMem,
        reservation: Reservation,
    },
    Host(Bytes),
}

impl Gpu {
    /// Opens GPU `ordinal` (as numbered in this process) and makes every built-in kernel
    /// ready ([`Gpu::kernels`]): compiled (or read from the cache) and loaded now, so
    /// that a GPU NVRTC or the driver cannot serve is known before any task runs. Without
    /// a driver the error says so; without NVRTC the GPU opens with its kernels
    /// unavailable.
    pub fn open(ordinal: u32) -> Result<Gpu, DeviceError> {
        cuda::driver()?;
        let mut gpu = Gpu {
            id: NEXT_GPU.fetch_add(1, Ordering::Relaxed),
            gpu: CudaGpu::open(ordinal)?,
            cache: ModuleCache::from_env(),
            modules: HashMap::new(),
            kernels: Kernels::Unavailable("not compiled yet".into()),
            handles: Handles::new(OPEN_HANDLES, HANDLE_IDLE),
        };
        gpu.kernels = gpu.prepare_kernels();
        Ok(gpu)
    }

    /// Compiles and loads every built-in kernel file for the first target that works
    /// ([`targets`]).
    fn prepare_kernels(&mut self) -> Kernels {
        let known = match rask_device::nvrtc::available()
            .and_then(|()| rask_device::nvrtc::supported_archs())
        {
            Ok(k) => k,
            Err(e) => return Kernels::Unavailable(e.to_string()),
        };
        let cc = self.gpu.compute_capability();
        let order = targets(cc, &known);
        if order.is_empty() {
            return Kernels::Unavailable(format!(
                "NVRTC compiles for {known:?}, nothing at or below this GPU's sm_{}{}",
                cc.0, cc.1
            ));
        }
        let mut tried = Vec::new();
        for target in order {
            self.modules.clear();
            let loaded = cuda_sources::FILES.iter().try_for_each(|(file, _)| {
                self.load(ModKey::File(file), Module::Builtin(file), file, &target)
                    .map(|_| ())
            });
            match loaded {
                Ok(()) => return Kernels::Ready { target, tried },
                Err(e) => tried.push((target, e.to_string())),
            }
        }
        self.modules.clear();
        Kernels::Unavailable(
            tried
                .iter()
                .map(|(t, e)| format!("{t}: {e}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    /// How the built-in kernels were made ready when the GPU was opened.
    pub fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    /// The GPU's product name.
    pub fn name(&self) -> &str {
        self.gpu.name()
    }

    /// The architecture kernels are compiled for (`sm_XY`).
    pub fn arch(&self) -> &str {
        self.gpu.arch()
    }

    /// Runs a plan: uploads its inputs, runs its steps, downloads its output.
    pub fn run(&mut self, plan: &Plan) -> Result<Chunk, PlanError> {
        let data = self.run_checked(plan, None)?;
        Ok(Chunk {
            dtype: plan.dtype,
            shape: plan.shape.clone(),
            bytes: data.expect("a downloaded output"),
        })
    }

    /// Runs a plan with its output left in the GPU's memory: `cuMemAlloc` memory (which
    /// CUDA IPC can export), freed when dropped.
    pub fn run_kept(&mut self, plan: &Plan) -> Result<DeviceMem, PlanError> {
        let out = self.gpu.alloc(plan.out_len())?;
        self.run_checked(plan, Some(&out))?;
        Ok(out)
    }

    /// Frees memory of [`Gpu::run_kept`] after the work queued on the stream.
    pub fn free(&mut self, mem: DeviceMem) {
        self.gpu.free(mem);
    }

    /// `bytes` copied into new device memory (as [`Gpu::run_kept`] allocates it).
    pub fn upload(&mut self, bytes: &[u8]) -> Result<DeviceMem, PlanError> {
        let mem = self.gpu.alloc(bytes.len() as u64)?;
        self.gpu
            .upload(bytes, &mem)
            .map_err(|source| PlanError::Transfer {
                what: "uploading",
                source,
            })?;
        Ok(mem)
    }

    /// The CUDA IPC handle of the allocation holding `mem` (`cuMemAlloc` memory), and
    /// `mem`'s offset in it.
    pub fn ipc_export(&mut self, mem: &DeviceMem) -> Result<IpcExport, PlanError> {
        Ok(self.gpu.export(mem)?)
    }

    /// Bytes a peer process exported ([`Gpu::ipc_export`]): `len` bytes at the export's
    /// offset of its allocation, opened in this context (or found open: see [`Handles`],
    /// which keeps `loan` until the next transfer from that allocation or until idle),
    /// copied into new memory of this GPU (with a reservation) or downloaded to the host.
    fn ipc_import(
        &mut self,
        e: &IpcExport,
        len: usize,
        reservation: Option<Reservation>,
        loan: Option<Loan>,
    ) -> Result<Ran, PlanError> {
        let r = self.import_open(e, len, reservation, loan);
        if r.is_err() {
            // Opened again next time, in case the mapping is what failed.
            self.handles.forget(&e.handle);
        }
        r
    }

    fn import_open(
        &mut self,
        e: &IpcExport,
        len: usize,
        reservation: Option<Reservation>,
        loan: Option<Loan>,
    ) -> Result<Ran, PlanError> {
        let gpu = &self.gpu;
        let peer = self
            .handles
            .get(&e.handle, loan, std::time::Instant::now(), || {
                gpu.open_ipc(&e.handle)
            })?;
        if let Some(reservation) = reservation {
            match gpu.copy_from_peer(peer, e.offset, len) {
                Ok(mem) => return Ok(Ran::Kept { mem, reservation }),
                // The GPU itself is full (beyond what the pool knows: another process's
                // memory): this value goes to the host; IPC stays on for the next.
                Err(e) if e.kind() == rask_device::fault::FaultKind::OutOfMemory => {
                    tracing::debug!("{e}: an imported value goes to the host");
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut r = Ok(());
        let out = crate::output_bytes(len, |b| r = gpu.download_from_peer(peer, e.offset, b));
        r.map_err(|source| PlanError::Transfer {
            what: "downloading",
            source,
        })?;
        Ok(Ran::Host(out))
    }

    /// Closes the peers' allocations idle for longer than [`HANDLE_IDLE`].
    pub fn expire_handles(&mut self) {
        self.handles.expire(std::time::Instant::now());
    }

    /// The bytes of `mem`, copied to the host.
    pub fn download(&mut self, mem: &DeviceMem) -> Result<Bytes, PlanError> {
        let mut r = Ok(());
        let out = crate::output_bytes(mem.len(), |b| r = self.gpu.download(mem, b));
        r.map_err(|source| PlanError::Transfer {
            what: "downloading",
            source,
        })?;
        Ok(out)
    }

    /// Runs the steps into `out` (device memory of the output's length), or downloads the
    /// output when `out` is `None`.
    fn run_checked(
        &mut self,
        plan: &Plan,
        out: Option<&DeviceMem>,
    ) -> Result<Option<Bytes>, PlanError> {
        let r = self.run_steps(plan, out);
        if r.is_err() {
            // Copies queued from the staging memory finish before it is reused.
            let _ = self.gpu.synchronize();
        }
        r
    }

    fn run_steps(
        &mut self,
        plan: &Plan,
        kept: Option<&DeviceMem>,
    ) -> Result<Option<Bytes>, PlanError> {
        self.gpu.bind()?;
        // Compile and load what the plan launches before allocating anything.
        let mut functions = Vec::new();
        for step in &plan.steps {
            if let Step::Launch(l) = step {
                functions.push(self.function(&l.module, &l.entry)?);
            }
        }
        let (gpu, id) = (&self.gpu, self.id);
        let out_len = plan.out_len() as usize;
        // Inputs already in this GPU's memory are used in place; others are uploaded.
        let mut uploaded = Vec::with_capacity(plan.inputs.len());
        for i in &plan.inputs {
            if resident(i, id).is_some() {
                uploaded.push(None);
                continue;
            }
            let host;
            let b: &[u8] = match i {
                plan::Input::Host(b) => b,
                plan::Input::Device(d) => {
                    host = d.data().to_host().map_err(PlanError::Input)?;
                    &host
                }
            };
            let mem = gpu.alloc_scratch(b.len() as u64)?;
            gpu.upload(b, &mem).map_err(|source| PlanError::Transfer {
                what: "uploading an input",
                source,
            })?;
            uploaded.push(Some(mem));
        }
        let temps = plan
            .temps
            .iter()
            .map(|&t| gpu.alloc_scratch(t))
            .collect::<Result<Vec<_>, _>>()?;
        let own_out = match kept {
            Some(_) => None,
            None => Some(gpu.alloc_scratch(out_len as u64)?),
        };
        let out = kept
            .or(own_out.as_ref())
            .expect("an output, kept or of this run");
        let inputs: Vec<&DeviceMem> = plan
            .inputs
            .iter()
            .zip(&uploaded)
            .map(|(i, own)| own.as_ref().or_else(|| resident(i, id)))
            .collect::<Option<_>>()
            .expect("every input resident or uploaded");
        let mem = |b: Buf| -> Result<&DeviceMem, PlanError> {
            match b {
                Buf::In(i) => inputs.get(i).copied(),
                Buf::Tmp(i) => temps.get(i),
                Buf::Out => Some(out),
            }
            .ok_or(PlanError::NoBuffer(b))
        };
        let mut functions = functions.into_iter();
        for step in &plan.steps {
            match step {
                Step::Launch(l) => {
                    let f = functions.next().expect("one function per launch");
                    let args = l
                        .args
                        .iter()
                        .map(|a| {
                            Ok(match *a {
                                Arg::Buf(b) => KernelArg::Mem(mem(b)?),
                                Arg::Null => KernelArg::Null,
                                Arg::U64(v) => KernelArg::U64(v),
                                Arg::I32(v) => KernelArg::I32(v),
                                Arg::I64(v) => KernelArg::I64(v),
                                Arg::F32(v) => KernelArg::F32(v),
                                Arg::F64(v) => KernelArg::F64(v),
                            })
                        })
                        .collect::<Result<Vec<_>, PlanError>>()?;
                    // SAFETY: the arguments match the entry point's parameters (checked
                    // against NVRTC's PTX in CI); the buffers are as large as the plan says.
                    unsafe { gpu.launch(&f, l.grid, l.block, &args) }?;
                }
                Step::Gemm {
                    dtype,
                    m,
                    k,
                    n,
                    a,
                    b,
                    out,
                    acc,
                } => {
                    if !gpu.has_blas() {
                        return Err(PlanError::Step("cuBLAS is not available"));
                    }
                    let (a, b, c) = (mem(*a)?, mem(*b)?, mem(*out)?);
                    if !matches!(dtype, DType::F32 | DType::F64) {
                        return Err(PlanError::NoGemm(*dtype));
                    }
                    gpu.gemm(*dtype, (*m, *k, *n), a, b, c, *acc)?;
                }
                Step::Copy { from, to, len } => {
                    gpu.copy(mem(*from)?, mem(*to)?, *len as usize)?;
                }
            }
        }
        if kept.is_some() {
            // Done when this returns: the output may be read by another process (CUDA
            // IPC) next.
            gpu.synchronize()?;
            return Ok(None);
        }
        // The download is queued after the steps on the same stream.
        let mut r = Ok(());
        let data = crate::output_bytes(out_len, |b| r = gpu.download(out, b));
        r.map_err(|source| PlanError::Transfer {
            what: "downloading the output",
            source,
        })?;
        Ok(Some(data))
    }

    /// The entry point: built-in kernels were loaded at open; a user's kernel is compiled
    /// (or read from the cache) and loaded at first use, for the target the built-in ones
    /// took.
    fn function(&mut self, module: &Module, entry: &str) -> Result<Function, PlanError> {
        // Found without building the source: built-in files by name, users' kernels by
        // the hash of their (short) source.
        let key = match module {
            Module::Builtin(file) => ModKey::File(file),
            Module::Custom(src) => ModKey::Source(fnv1a(src.as_bytes())),
        };
        if let Some(f) = self.modules.get(&key).and_then(|m| m.functions.get(entry)) {
            return Ok(f.clone());
        }
        if !self.modules.contains_key(&key) {
            let target = match &self.kernels {
                Kernels::Ready { target, .. } => target.clone(),
                Kernels::Unavailable(why) => {
                    return Err(PlanError::Device(DeviceError::Compile {
                        name: entry.to_string(),
                        log: format!("this GPU's kernels are unavailable: {why}"),
                    }))
                }
            };
            self.load(key.clone(), module.clone(), entry, &target)?;
        }
        let loaded = self.modules.get_mut(&key).expect("loaded above");
        let f = loaded.module.function(entry)?;
        loaded.functions.insert(entry.to_string(), f.clone());
        Ok(f)
    }

    /// Compiles (or reads from the cache) and loads a module (named `name` in messages)
    /// for `target`.
    fn load(
        &mut self,
        key: ModKey,
        module: Module,
        name: &str,
        target: &str,
    ) -> Result<(), PlanError> {
        let (source, name, opts) = match &module {
            Module::Builtin(file) => (
                cuda_sources::source(file).ok_or(PlanError::NoKernelFile(file))?,
                file.to_string(),
                Options::EXACT,
            ),
            Module::Custom(src) => (src.to_string(), name.to_string(), Options::DEFAULT),
        };
        let image = self.cache.get(&source, &name, target, opts)?;
        let module = self.gpu.load_module(image)?;
        self.modules.insert(
            key,
            Loaded {
                module,
                functions: HashMap::new(),
            },
        );
        Ok(())
    }
}

/// The memory of an input already in the memory of GPU `id`.
fn resident(i: &plan::Input, id: u64) -> Option<&DeviceMem> {
    match i {
        plan::Input::Device(d) => d
            .downcast::<CudaBytes>()
            .filter(|c| c.gpu == id)
            .map(CudaBytes::mem),
        plan::Input::Host(_) => None,
    }
}

/// A loaded module: a built-in kernel file, or a user's kernel source.
#[derive(Clone, PartialEq, Eq, Hash)]
enum ModKey {
    File(&'static str),
    Source(u64),
}

/// A module and the entry points looked up in it so far.
struct Loaded {
    module: cuda::Module,
    functions: HashMap<String, Function>,
}

//! Running device plans on a CUDA GPU: kernels from `kernels/` (and users' kernels)
//! compiled by NVRTC for the GPU's architecture at first use and cached on disk, GEMM
//! through cuBLAS, inputs and outputs staged through pinned host memory, all on one stream
//! of the GPU's own.
//!
//! A worker drives its GPU from one thread of its own ([`GpuThread`]): a CUDA context
//! binds to the calling thread, and every call here blocks until the GPU is done, so
//! executor threads hand plans to that thread and wait for the answer.
//!
//! Outputs stay in the GPU's memory ([`CudaBytes`], allocated with `cuMemAlloc` so that
//! they can be exported by CUDA IPC) and are accounted against the device's memory pool;
//! a plan whose inputs are already there uses them in place. Bytes go to the host only when
//! asked ([`rask_proto::DeviceData::to_host`]), and device memory is freed, on the GPU's
//! thread, when the last reference to a value is dropped.
//!
//! Between GPU workers of one host, a value's bytes go by CUDA IPC: the holder exports its
//! allocation's handle ([`CudaBytes`] implements [`DeviceData::ipc_export`]), the
//! receiver's GPU thread opens it, copies the bytes into its own memory over NVLink or
//! PCIe, and closes it ([`crate::Accelerator::import`]); the host never sees them.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use bytes::Bytes;

use rask_device::cuda::{guarded, CudaPinned, StreamEngine};
use rask_device::cudarc::cublas::{self, CudaBlas};
use rask_device::cudarc::driver::{result, sys, CudaContext, CudaFunction, CudaModule, CudaStream};
use rask_device::cudarc::nvrtc::Ptx;
use rask_device::nvrtc::ModuleCache;
use rask_device::staging::{self, StagingPool};
use rask_device::{DeviceError, MemoryPool, Reservation};
use rask_proto::{DType, DeviceBytes, DeviceData, DeviceLoc, IpcBuffer, IpcExport, Value};

use crate::chunk::{chunk_value, Chunk};
use crate::plan::{self, Arg, Buf, Module, Plan, Step};
use crate::{cuda_sources, fnv1a, OpError, PlanError, Registry};

/// Tells GPUs of one process apart (a value's memory belongs to one of them).
static NEXT_GPU: AtomicU64 = AtomicU64::new(1);

/// An opened GPU ready to run plans.
pub struct Gpu {
    id: u64,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    /// `sm_XY`, what kernels are compiled for.
    arch: String,
    cache: ModuleCache,
    modules: HashMap<ModKey, Loaded>,
    blas: Option<CudaBlas>,
    /// Two pinned buffers every transfer to or from the host goes through, in chunks.
    staging: StagingPool,
}

/// Bytes per staging buffer: large enough for the copy engine to run at full speed,
/// small enough that two per GPU pin little memory.
const STAGE_CHUNK: usize = 8 << 20;

// SAFETY: the staging buffers are owned by this value's pool and only touched through
// `&mut self`; the cudarc handles are Send.
unsafe impl Send for Gpu {}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("name", &self.name)
            .field("arch", &self.arch)
            .field("cublas", &self.blas.is_some())
            .finish()
    }
}

impl Gpu {
    /// Opens GPU `ordinal` (as numbered in this process). Without a driver, or without
    /// NVRTC to compile kernels, an error says which is missing.
    pub fn open(ordinal: u32) -> Result<Gpu, DeviceError> {
        rask_device::cuda::driver()?;
        rask_device::nvrtc::available()?;
        let ctx = guarded("creating a context", || CudaContext::new(ordinal as usize))?;
        let name = guarded("reading the device name", || ctx.name())?;
        let (major, minor) = guarded("reading the compute capability", || {
            ctx.compute_capability()
        })?;
        let stream = guarded("creating a stream", || ctx.new_stream())?;
        // SAFETY: only tries to open the library by its usual names.
        let blas = if unsafe { cublas::sys::is_culib_present() } {
            let s = stream.clone();
            match guarded("starting cuBLAS", move || CudaBlas::new(s)) {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::warn!("{e}: matrix products run on the CPU");
                    None
                }
            }
        } else {
            tracing::warn!("cuBLAS cannot be loaded: matrix products run on the CPU");
            None
        };
        let pinned = Arc::new(CudaPinned::new(ctx.clone()));
        Ok(Gpu {
            id: NEXT_GPU.fetch_add(1, Ordering::Relaxed),
            ctx,
            stream,
            name,
            arch: format!("sm_{major}{minor}"),
            cache: ModuleCache::new(ModuleCache::default_dir()),
            modules: HashMap::new(),
            blas,
            staging: StagingPool::new(pinned, STAGE_CHUNK, 2),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The architecture kernels are compiled for (`sm_XY`).
    pub fn arch(&self) -> &str {
        &self.arch
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
    /// CUDA IPC can export), freed with [`Gpu::free`].
    pub fn run_kept(&mut self, plan: &Plan) -> Result<u64, PlanError> {
        let out = self.alloc_kept(plan.out_len())?;
        match self.run_checked(plan, Some(out)) {
            Ok(_) => Ok(out),
            Err(e) => {
                self.free(out);
                Err(e)
            }
        }
    }

    fn alloc_kept(&mut self, len: u64) -> Result<u64, PlanError> {
        cuda("binding the context", || self.ctx.bind_to_thread())?;
        // SAFETY: a plain allocation.
        cuda("allocating device memory", || unsafe {
            result::malloc_sync(len.max(1) as usize)
        })
    }

    /// Frees memory of [`Gpu::run_kept`] (after the work queued on the stream).
    pub fn free(&mut self, ptr: u64) {
        let r = cuda("freeing device memory", || {
            self.ctx.bind_to_thread()?;
            self.stream.synchronize()?;
            // SAFETY: allocated by `alloc_kept`, freed once.
            unsafe { result::free_sync(ptr) }
        });
        if let Err(e) = r {
            tracing::warn!("{e}");
        }
    }

    /// `bytes` copied into new device memory (as [`Gpu::run_kept`] allocates it).
    pub fn upload(&mut self, bytes: &[u8]) -> Result<u64, PlanError> {
        let ptr = self.alloc_kept(bytes.len() as u64)?;
        let r = self.copy_in(bytes, ptr);
        match r {
            Ok(()) => Ok(ptr),
            Err(e) => {
                self.free(ptr);
                Err(e)
            }
        }
    }

    /// The CUDA IPC handle of the allocation holding `ptr` (`cuMemAlloc` memory), and
    /// `ptr`'s offset in it.
    pub fn ipc_export(&mut self, ptr: u64) -> Result<IpcExport, PlanError> {
        cuda("binding the context", || self.ctx.bind_to_thread())?;
        let (mut base, mut size): (sys::CUdeviceptr, usize) = (0, 0);
        // SAFETY: out-parameters of the declared types.
        cuda("finding the allocation", || unsafe {
            sys::cuMemGetAddressRange_v2(&mut base, &mut size, ptr).result()
        })?;
        let mut h = sys::CUipcMemHandle { reserved: [0; 64] };
        // SAFETY: as above; `base` is the start of a live allocation.
        cuda("exporting an IPC handle", || unsafe {
            sys::cuIpcGetMemHandle(&mut h, base).result()
        })?;
        Ok(IpcExport {
            handle: h.reserved.iter().map(|&c| c as u8).collect(),
            offset: ptr - base,
        })
    }

    /// Bytes a peer process exported ([`Gpu::ipc_export`]): its allocation opened in this
    /// context, `len` bytes from `offset` copied into new memory of this GPU (`keep`) or
    /// downloaded to the host, the handle closed.
    fn ipc_import(&mut self, e: &IpcExport, len: usize, keep: bool) -> Result<Ran, PlanError> {
        let mut h = sys::CUipcMemHandle { reserved: [0; 64] };
        if e.handle.len() != h.reserved.len() {
            return Err(PlanError::Input(format!(
                "a CUDA IPC handle is {} bytes, got {}",
                h.reserved.len(),
                e.handle.len()
            )));
        }
        for (d, s) in h.reserved.iter_mut().zip(&e.handle) {
            *d = *s as std::ffi::c_char;
        }
        cuda("binding the context", || self.ctx.bind_to_thread())?;
        let mut peer: sys::CUdeviceptr = 0;
        let flags = sys::CUipcMem_flags::CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS as u32;
        // SAFETY: an out-parameter; the handle was made by cuIpcGetMemHandle (the driver
        // checks it).
        cuda("opening a peer's IPC handle", || unsafe {
            sys::cuIpcOpenMemHandle_v2(&mut peer, h, flags).result()
        })?;
        let src = peer + e.offset;
        let r = if keep {
            self.alloc_kept(len as u64).and_then(|dst| {
                let cu_stream = self.stream.cu_stream();
                // SAFETY: both ranges hold `len` bytes (the holder's length); the copy is
                // finished before the handle is closed.
                let r = cuda("copying from the peer", || unsafe {
                    result::memcpy_dtod_async(dst, src, len, cu_stream)
                })
                .and_then(|_| cuda("synchronizing", || self.stream.synchronize()));
                match r {
                    Ok(()) => Ok(Ran::Imported(dst)),
                    Err(e) => {
                        self.free(dst);
                        Err(e)
                    }
                }
            })
        } else {
            self.download(src, len).map(Ran::Host)
        };
        // SAFETY: opened above; nothing reads it after this.
        let closed = cuda("closing a peer's IPC handle", || unsafe {
            sys::cuIpcCloseMemHandle(peer).result()
        });
        if let Err(e) = closed {
            tracing::warn!("{e}");
        }
        r
    }

    /// `len` bytes of device memory at `ptr`, copied to the host.
    pub fn download(&mut self, ptr: u64, len: usize) -> Result<Bytes, PlanError> {
        cuda("binding the context", || self.ctx.bind_to_thread())?;
        let mut r = Ok(());
        let out = crate::output_bytes(len, |b| {
            let mut engine = StreamEngine(&self.stream);
            r = staging::download(&self.staging, &mut engine, ptr, b);
        });
        r.map_err(|source| PlanError::Transfer {
            what: "downloading",
            source,
        })?;
        Ok(out)
    }

    /// `bytes` into device memory at `dst` (which holds as many), through the staging
    /// buffers; done when this returns.
    fn copy_in(&mut self, bytes: &[u8], dst: u64) -> Result<(), PlanError> {
        cuda("binding the context", || self.ctx.bind_to_thread())?;
        let mut engine = StreamEngine(&self.stream);
        staging::upload(&self.staging, &mut engine, bytes, dst).map_err(|source| {
            PlanError::Transfer {
                what: "uploading",
                source,
            }
        })
    }

    /// Runs the steps into `out` (device memory of the output's length), or downloads the
    /// output when `out` is `None`.
    fn run_checked(&mut self, plan: &Plan, out: Option<u64>) -> Result<Option<Bytes>, PlanError> {
        let r = self.run_steps(plan, out);
        if r.is_err() {
            // Copies queued from the staging memory finish before it is reused.
            let _ = guarded("synchronizing", || self.stream.synchronize());
        }
        r
    }

    fn run_steps(&mut self, plan: &Plan, kept: Option<u64>) -> Result<Option<Bytes>, PlanError> {
        guarded("binding the context", || self.ctx.bind_to_thread())?;
        // Compile and load what the plan launches before allocating anything.
        let mut functions = Vec::new();
        for step in &plan.steps {
            if let Step::Launch(l) = step {
                functions.push(self.function(&l.module, &l.entry)?);
            }
        }
        let cu_stream = self.stream.cu_stream();
        // Inputs already in this GPU's memory are used in place; others are uploaded.
        let resident = |i: &plan::Input| match i {
            plan::Input::Device(d) => d
                .downcast::<CudaBytes>()
                .filter(|c| c.gpu == self.id)
                .map(|c| c.ptr),
            plan::Input::Host(_) => None,
        };
        let out_len = plan.out_len() as usize;
        let mut mem = Vec::new();
        let alloc = |mem: &mut Vec<DevMem>, len: u64| -> Result<u64, PlanError> {
            let d = DevMem::alloc(&self.ctx, cu_stream, len)?;
            let p = d.ptr;
            mem.push(d);
            Ok(p)
        };
        let mut inputs = Vec::new();
        for i in &plan.inputs {
            if let Some(p) = resident(i) {
                inputs.push(p);
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
            let p = alloc(&mut mem, b.len() as u64)?;
            staging::upload(&self.staging, &mut StreamEngine(&self.stream), b, p).map_err(
                |source| PlanError::Transfer {
                    what: "uploading an input",
                    source,
                },
            )?;
            inputs.push(p);
        }
        let temps = plan
            .temps
            .iter()
            .map(|&t| alloc(&mut mem, t))
            .collect::<Result<Vec<_>, _>>()?;
        let out = match kept {
            Some(p) => p,
            None => alloc(&mut mem, out_len as u64)?,
        };
        let ptr = |b: Buf| -> Result<u64, PlanError> {
            match b {
                Buf::In(i) => inputs.get(i).copied(),
                Buf::Tmp(i) => temps.get(i).copied(),
                Buf::Out => Some(out),
            }
            .ok_or(PlanError::NoBuffer(b))
        };
        let mut functions = functions.into_iter();
        for step in &plan.steps {
            match step {
                Step::Launch(l) => {
                    let f = functions.next().expect("one function per launch");
                    // Each argument in an 8-byte slot; CUDA reads as many bytes as the
                    // parameter has (the low ones: x86_64 and aarch64 are little-endian).
                    let mut slots = l
                        .args
                        .iter()
                        .map(|a| {
                            Ok(match *a {
                                Arg::Buf(b) => ptr(b)?,
                                Arg::Null => 0,
                                Arg::U64(v) => v,
                                Arg::I32(v) => v as u32 as u64,
                                Arg::I64(v) => v as u64,
                                Arg::F32(v) => v.to_bits() as u64,
                                Arg::F64(v) => v.to_bits(),
                            })
                        })
                        .collect::<Result<Vec<u64>, PlanError>>()?;
                    let mut params: Vec<*mut c_void> = slots
                        .iter_mut()
                        .map(|s| s as *mut u64 as *mut c_void)
                        .collect();
                    // SAFETY: the arguments match the entry point's parameters (checked
                    // against NVRTC's PTX in CI); the buffers are as large as the plan says.
                    cuda(&l.entry, || unsafe {
                        result::launch_kernel(
                            f.cu_function(),
                            l.grid,
                            l.block,
                            0,
                            cu_stream,
                            &mut params,
                        )
                    })?;
                }
                Step::Gemm {
                    dtype,
                    m,
                    k,
                    n,
                    a,
                    b,
                    out,
                } => {
                    let blas = self
                        .blas
                        .as_ref()
                        .ok_or(PlanError::Step("cuBLAS is not available"))?;
                    let (a, b, c) = (ptr(*a)?, ptr(*b)?, ptr(*out)?);
                    gemm(blas, *dtype, (*m, *k, *n), a, b, c)?;
                }
                Step::Copy { from, to, len } => {
                    let (s, d) = (ptr(*from)?, ptr(*to)?);
                    // SAFETY: both buffers hold at least `len` bytes.
                    cuda("copying on the device", || unsafe {
                        result::memcpy_dtod_async(d, s, *len as usize, cu_stream)
                    })?;
                }
            }
        }
        if kept.is_some() {
            // Done when this returns: the output may be read by another process (CUDA
            // IPC) next.
            cuda("synchronizing", || self.stream.synchronize())?;
            return Ok(None);
        }
        // The download is queued after the steps on the same stream.
        let mut r = Ok(());
        let data = crate::output_bytes(out_len, |b| {
            r = staging::download(&self.staging, &mut StreamEngine(&self.stream), out, b);
        });
        r.map_err(|source| PlanError::Transfer {
            what: "downloading the output",
            source,
        })?;
        drop(mem);
        Ok(Some(data))
    }

    /// The entry point, its module compiled (or read from the disk cache) and loaded at
    /// first use.
    fn function(&mut self, module: &Module, entry: &str) -> Result<CudaFunction, PlanError> {
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
            let (source, name) = match module {
                Module::Builtin(file) => (
                    cuda_sources::source(file).ok_or(PlanError::NoKernelFile(file))?,
                    file.to_string(),
                ),
                Module::Custom(src) => (src.to_string(), entry.to_string()),
            };
            let image = self.cache.get(&source, &name, &self.arch)?;
            let ctx = self.ctx.clone();
            let module = cuda("loading a module", move || {
                ctx.load_module(Ptx::from_binary(image))
            })?;
            self.modules.insert(
                key.clone(),
                Loaded {
                    module,
                    functions: HashMap::new(),
                },
            );
        }
        let loaded = self.modules.get_mut(&key).expect("loaded above");
        let f = cuda(entry, || loaded.module.load_function(entry))?;
        loaded.functions.insert(entry.to_string(), f.clone());
        Ok(f)
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
    module: Arc<CudaModule>,
    functions: HashMap<String, CudaFunction>,
}

fn cuda<T, E: std::fmt::Debug>(
    what: &str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, PlanError> {
    Ok(guarded(what, f)?)
}

/// out (m×n) = a (m×k) · b (k×n), row-major, by cuBLAS (column-major): the row-major
/// product is the column-major Cᵀ = Bᵀ·Aᵀ, so the operands swap and nothing transposes.
fn gemm(
    blas: &CudaBlas,
    dtype: DType,
    (m, k, n): (u64, u64, u64),
    a: u64,
    b: u64,
    c: u64,
) -> Result<(), PlanError> {
    let (m, k, n) = (m as i32, k as i32, n as i32);
    let op = cublas::sys::cublasOperation_t::CUBLAS_OP_N;
    let h = *blas.handle();
    match dtype {
        // SAFETY: the buffers hold m·k, k·n and m·n elements (the plan's shapes).
        DType::F32 => cuda("sgemm", || unsafe {
            cublas::result::sgemm(
                h,
                op,
                op,
                n,
                m,
                k,
                &1.0f32,
                b as *const f32,
                n,
                a as *const f32,
                k,
                &0.0f32,
                c as *mut f32,
                n,
            )
        }),
        // SAFETY: as above.
        DType::F64 => cuda("dgemm", || unsafe {
            cublas::result::dgemm(
                h,
                op,
                op,
                n,
                m,
                k,
                &1.0f64,
                b as *const f64,
                n,
                a as *const f64,
                k,
                &0.0f64,
                c as *mut f64,
                n,
            )
        }),
        d => Err(PlanError::NoGemm(d)),
    }
}

/// What a GPU's thread is asked to do.
enum Cmd {
    /// Run a plan, its output kept in device memory (reserved in the pool) or, when the
    /// pool is full, downloaded.
    Run {
        plan: Plan,
        reply: mpsc::SyncSender<Result<Ran, PlanError>>,
    },
    Download {
        ptr: u64,
        len: usize,
        reply: mpsc::SyncSender<Result<Bytes, PlanError>>,
    },
    Free {
        ptr: u64,
    },
    /// Bytes into device memory, reserved in the pool by the caller.
    Upload {
        bytes: Bytes,
        reservation: Reservation,
        reply: mpsc::SyncSender<Result<Ran, PlanError>>,
    },
    /// The IPC handle of memory of this GPU.
    Export {
        ptr: u64,
        reply: mpsc::SyncSender<Result<IpcExport, PlanError>>,
    },
    /// A peer's exported bytes copied into this GPU's memory (reserved in the pool by the
    /// caller) or, without a reservation, to the host.
    Import {
        export: IpcExport,
        len: usize,
        reservation: Option<Reservation>,
        reply: mpsc::SyncSender<Result<Ran, PlanError>>,
    },
}

/// A plan's output, or bytes imported.
enum Ran {
    Kept {
        ptr: u64,
        reservation: Reservation,
    },
    Host(Bytes),
    /// In new memory of this GPU (before its reservation is attached).
    Imported(u64),
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
    downloaded: Arc<AtomicU64>,
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
                    gpu.name.clone(),
                    gpu.arch.clone(),
                    gpu.blas.is_some(),
                );
                if opened_tx.send(Ok(info)).is_err() {
                    return;
                }
                serve(&mut gpu, &kept, rx);
            })
            .map_err(DeviceError::Io)?;
        let (gpu, name, arch, blas) = opened_rx
            .recv()
            .map_err(|_| DeviceError::Cuda("the GPU's thread stopped while opening it".into()))??;
        Ok(GpuThread {
            tx,
            pool,
            gpu,
            device: DeviceLoc::cuda(ordinal),
            name,
            arch,
            blas,
            downloaded: Arc::default(),
        })
    }

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
}

fn ask<T>(
    tx: &mpsc::Sender<Cmd>,
    cmd: impl FnOnce(mpsc::SyncSender<Result<T, PlanError>>) -> Cmd,
) -> Result<T, PlanError> {
    let (reply, answer) = mpsc::sync_channel(1);
    tx.send(cmd(reply)).map_err(|_| PlanError::GpuStopped)?;
    answer.recv().map_err(|_| PlanError::GpuStopped)?
}

/// The GPU's thread: one command at a time, until every sender is gone.
fn serve(gpu: &mut Gpu, pool: &Arc<MemoryPool>, rx: mpsc::Receiver<Cmd>) {
    for cmd in rx {
        match cmd {
            Cmd::Run { plan, reply } => {
                let ran = match pool.reserve(plan.out_len()) {
                    Ok(reservation) => gpu
                        .run_kept(&plan)
                        .map(|ptr| Ran::Kept { ptr, reservation }),
                    // The device is full: the output goes to the host.
                    Err(_) => gpu.run(&plan).map(|c| Ran::Host(c.bytes)),
                };
                let _ = reply.send(ran);
            }
            Cmd::Download { ptr, len, reply } => {
                let _ = reply.send(gpu.download(ptr, len));
            }
            Cmd::Free { ptr } => gpu.free(ptr),
            Cmd::Upload {
                bytes,
                reservation,
                reply,
            } => {
                let kept = gpu.upload(&bytes).map(|ptr| Ran::Kept { ptr, reservation });
                let _ = reply.send(kept);
            }
            Cmd::Export { ptr, reply } => {
                let _ = reply.send(gpu.ipc_export(ptr));
            }
            Cmd::Import {
                export,
                len,
                reservation,
                reply,
            } => {
                let keep = reservation.is_some();
                let got = gpu
                    .ipc_import(&export, len, keep)
                    .map(|r| match (r, reservation) {
                        (Ran::Imported(ptr), Some(reservation)) => Ran::Kept { ptr, reservation },
                        (r, _) => r,
                    });
                let _ = reply.send(got);
            }
        }
    }
}

impl GpuThread {
    /// The plan of `op` on this GPU (a user's kernel, or a built-in plan), `None` when it
    /// has none here (no plan, or a GEMM without cuBLAS): the op then runs on the CPU.
    fn plan(&self, registry: &Registry, op: &str, args: &[Value]) -> Option<Plan> {
        let plan = match registry.cuda_kernel(op) {
            Some(k) => plan::custom(&k.source, &k.entry, args)?,
            None => plan::plan(op, args)?,
        };
        let gemm = plan.steps.iter().any(|s| matches!(s, Step::Gemm { .. }));
        (self.blas || !gemm).then_some(plan)
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
        let (dtype, shape, len) = (plan.dtype, plan.shape.clone(), plan.out_len() as usize);
        let ran = self.ask(|reply| Cmd::Run { plan, reply });
        Some(
            ran.map(|r| chunk_value(dtype, &shape, self.value(r, len)))
                .map_err(OpError::from),
        )
    }

    fn downloaded(&self) -> u64 {
        self.downloaded.load(Ordering::Relaxed)
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
            Some(r.map(|r| self.value(r, b.len())).map_err(OpError::from))
        })
    }

    fn imports(&self) -> bool {
        true
    }

    fn import(&self, b: &IpcBuffer) -> Result<Value, OpError> {
        let len = b.len as usize;
        // A full device takes the bytes to the host (as a full device leaves a kernel's
        // output there).
        let reservation = self.pool.reserve(b.len).ok();
        let export = b.export.clone();
        let r = self.ask(|reply| Cmd::Import {
            export,
            len,
            reservation,
            reply,
        })?;
        Ok(self.value(r, len))
    }
}

impl GpuThread {
    /// A value of `len` bytes left by the GPU's thread.
    fn value(&self, r: Ran, len: usize) -> Value {
        match r {
            Ran::Host(b) => Value::Bytes(b),
            Ran::Imported(ptr) => unreachable!("imported memory {ptr:#x} without a reservation"),
            Ran::Kept { ptr, reservation } => Value::Device(DeviceBytes::new(CudaBytes {
                ptr,
                len,
                gpu: self.gpu,
                device: self.device,
                tx: self.tx.clone(),
                downloaded: self.downloaded.clone(),
                export: std::sync::OnceLock::new(),
                _reservation: reservation,
            })),
        }
    }
}

/// Bytes in a CUDA GPU's memory, freed (on the GPU's thread) when the last reference is
/// dropped.
pub struct CudaBytes {
    ptr: u64,
    len: usize,
    gpu: u64,
    device: DeviceLoc,
    tx: mpsc::Sender<Cmd>,
    downloaded: Arc<AtomicU64>,
    /// Its IPC handle, asked of the GPU's thread once.
    export: std::sync::OnceLock<Result<IpcExport, String>>,
    _reservation: Reservation,
}

impl DeviceData for CudaBytes {
    fn device(&self) -> DeviceLoc {
        self.device
    }

    fn len(&self) -> usize {
        self.len
    }

    fn to_host(&self) -> Result<Bytes, String> {
        let (ptr, len) = (self.ptr, self.len);
        let b =
            ask(&self.tx, |reply| Cmd::Download { ptr, len, reply }).map_err(|e| e.to_string())?;
        self.downloaded.fetch_add(len as u64, Ordering::Relaxed);
        Ok(b)
    }

    fn ipc_export(&self) -> Option<Result<IpcExport, String>> {
        let ptr = self.ptr;
        Some(
            self.export
                .get_or_init(|| {
                    ask(&self.tx, |reply| Cmd::Export { ptr, reply }).map_err(|e| e.to_string())
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
        // A stopped thread has destroyed its context, and the memory with it.
        let _ = self.tx.send(Cmd::Free { ptr: self.ptr });
    }
}

/// Device memory of one run, from the stream-ordered pool where the GPU has one.
struct DevMem {
    ptr: u64,
    pooled: bool,
    stream: sys::CUstream,
}

impl DevMem {
    fn alloc(ctx: &CudaContext, stream: sys::CUstream, len: u64) -> Result<DevMem, DeviceError> {
        let len = len.max(1) as usize;
        let pooled = ctx.has_async_alloc();
        // SAFETY: plain allocations (on this context's stream for the pool).
        let ptr = guarded("allocating device memory", || unsafe {
            if pooled {
                result::malloc_async(stream, len)
            } else {
                result::malloc_sync(len)
            }
        })?;
        Ok(DevMem {
            ptr,
            pooled,
            stream,
        })
    }
}

/// Freed when dropped, on the success and the error paths alike: a pooled free is ordered
/// after the work queued on the stream, and cuMemFree waits for the device.
impl Drop for DevMem {
    fn drop(&mut self) {
        let (ptr, stream) = (self.ptr, self.stream);
        // SAFETY: allocated above, freed once.
        let r = guarded("freeing device memory", || unsafe {
            if self.pooled {
                result::free_async(ptr, stream)
            } else {
                result::free_sync(ptr)
            }
        });
        if let Err(e) = r {
            tracing::warn!("{e}");
        }
    }
}

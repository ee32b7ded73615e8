//! Running device plans on a CUDA GPU: kernels from `kernels/` (and users' kernels)
//! compiled by NVRTC for the GPU's architecture at first use and cached on disk, GEMM
//! through cuBLAS, inputs and outputs staged through pinned host memory, all on one stream
//! of the GPU's own.
//!
//! A [`Gpu`] is driven by one thread at a time (its owner locks it): a CUDA context binds to
//! the calling thread, and every call here blocks until the GPU is done.
//!
//! Values live in host memory between tasks: a task uploads its inputs and downloads its
//! output. Keeping values resident on the GPU between tasks (and lending them to peers by
//! CUDA IPC) is not done yet.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use rask_device::cuda::guarded;
use rask_device::cudarc::cublas::{self, CudaBlas};
use rask_device::cudarc::driver::{result, sys, CudaContext, CudaFunction, CudaModule, CudaStream};
use rask_device::cudarc::nvrtc::Ptx;
use rask_device::nvrtc::ModuleCache;
use rask_device::DeviceError;
use rask_proto::{DType, Value};

use crate::array::Chunk;
use crate::plan::{self, Arg, Buf, Module, Plan, Step};
use crate::{cuda_sources, fnv1a, Registry};

/// An opened GPU ready to run plans.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    /// `sm_XY`, what kernels are compiled for.
    arch: String,
    cache: ModuleCache,
    modules: HashMap<ModKey, Loaded>,
    blas: Option<CudaBlas>,
    staging: Pinned,
}

// SAFETY: the staging memory is owned by this value and only touched through `&mut self`;
// the cudarc handles are Send.
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
        Ok(Gpu {
            ctx,
            stream,
            name,
            arch: format!("sm_{major}{minor}"),
            cache: ModuleCache::new(ModuleCache::default_dir()),
            modules: HashMap::new(),
            blas,
            staging: Pinned::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The architecture kernels are compiled for (`sm_XY`).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Runs `op` on the GPU if it has a device plan there: `None` means "run the CPU
    /// implementation" (an op without a plan, or a GEMM without cuBLAS).
    pub fn call(
        &mut self,
        registry: &Registry,
        op: &str,
        args: &[Value],
    ) -> Option<Result<Value, String>> {
        let plan = match registry.cuda_kernel(op) {
            Some(k) => plan::custom(&k.source, &k.entry, args)?,
            None => plan::plan(op, args)?,
        };
        let gemm = plan.steps.iter().any(|s| matches!(s, Step::Gemm { .. }));
        if gemm && self.blas.is_none() {
            return None;
        }
        Some(self.run(&plan).map(|c| c.to_value()))
    }

    /// Runs a plan: uploads its inputs, runs its steps, downloads its output.
    pub fn run(&mut self, plan: &Plan) -> Result<Chunk, String> {
        let r = self.run_steps(plan);
        if r.is_err() {
            // Copies queued from the staging memory finish before it is reused.
            let _ = guarded("synchronizing", || self.stream.synchronize());
        }
        r
    }

    fn run_steps(&mut self, plan: &Plan) -> Result<Chunk, String> {
        guarded("binding the context", || self.ctx.bind_to_thread()).map_err(|e| e.to_string())?;
        // Compile and load what the plan launches before allocating anything.
        let mut functions = Vec::new();
        for step in &plan.steps {
            if let Step::Launch(l) = step {
                functions.push(self.function(&l.module, &l.entry)?);
            }
        }
        let cu_stream = self.stream.cu_stream();
        let in_bytes: usize = plan.inputs.iter().map(|b| b.len()).sum();
        let out_len = plan.out_len() as usize;
        self.staging
            .reserve(in_bytes.max(out_len))
            .map_err(|e| e.to_string())?;
        let mut mem = Vec::new();
        let alloc = |mem: &mut Vec<DevMem>, len: u64| -> Result<u64, String> {
            let d = DevMem::alloc(&self.ctx, cu_stream, len).map_err(|e| e.to_string())?;
            let p = d.ptr;
            mem.push(d);
            Ok(p)
        };
        let mut inputs = Vec::new();
        let mut at = 0;
        for i in &plan.inputs {
            let host;
            let b: &[u8] = match i {
                plan::Input::Host(b) => b,
                plan::Input::Device(d) => {
                    host = d.data().to_host()?;
                    &host
                }
            };
            let p = alloc(&mut mem, b.len() as u64)?;
            let staged = &mut self.staging.as_mut_slice()[at..at + b.len()];
            staged.copy_from_slice(b);
            // SAFETY: `p` holds b.len() bytes; the staging bytes stay untouched until the
            // stream is synchronized below.
            cuda("uploading an input", || unsafe {
                result::memcpy_htod_async(p, &*staged, cu_stream)
            })?;
            at += b.len();
            inputs.push(p);
        }
        let temps = plan
            .temps
            .iter()
            .map(|&t| alloc(&mut mem, t))
            .collect::<Result<Vec<_>, _>>()?;
        let out = alloc(&mut mem, out_len as u64)?;
        let ptr = |b: Buf| -> Result<u64, String> {
            match b {
                Buf::In(i) => inputs.get(i).copied(),
                Buf::Tmp(i) => temps.get(i).copied(),
                Buf::Out => Some(out),
            }
            .ok_or_else(|| format!("no buffer {b:?}"))
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
                        .collect::<Result<Vec<u64>, String>>()?;
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
                    let blas = self.blas.as_ref().ok_or("cuBLAS is not available")?;
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
        let staged = &mut self.staging.as_mut_slice()[..out_len];
        // SAFETY: `out` holds out_len bytes; the stream is synchronized before reading.
        cuda("downloading the output", || unsafe {
            result::memcpy_dtoh_async(&mut *staged, out, cu_stream)
        })?;
        cuda("synchronizing", || self.stream.synchronize())?;
        drop(mem);
        let staged = &self.staging.as_mut_slice()[..out_len];
        Ok(Chunk {
            dtype: plan.dtype,
            shape: plan.shape.clone(),
            data: crate::output_bytes(out_len, |b| b.copy_from_slice(staged)),
        })
    }

    /// The entry point, its module compiled (or read from the disk cache) and loaded at
    /// first use.
    fn function(&mut self, module: &Module, entry: &str) -> Result<CudaFunction, String> {
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
                    cuda_sources::source(file).ok_or_else(|| format!("no kernel file {file}"))?,
                    file.to_string(),
                ),
                Module::Custom(src) => (src.to_string(), entry.to_string()),
            };
            let image = self
                .cache
                .get(&source, &name, &self.arch)
                .map_err(|e| e.to_string())?;
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

fn cuda<T, E: std::fmt::Debug>(what: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, String> {
    guarded(what, f).map_err(|e| e.to_string())
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
) -> Result<(), String> {
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
        d => Err(format!("no GEMM for {d}")),
    }
}

/// A GPU shared by a worker's executor threads, one at a time.
pub struct SharedGpu(pub std::sync::Mutex<Gpu>);

impl crate::Accelerator for SharedGpu {
    fn try_run(
        &self,
        registry: &Registry,
        op: &str,
        args: &[Value],
    ) -> Option<Result<Value, String>> {
        let mut gpu = match self.0.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        gpu.call(registry, op, args)
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        // Pinned memory is freed with the context current.
        let _ = guarded("binding the context", || self.ctx.bind_to_thread());
        self.staging.release();
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

/// Pinned (page-locked) host memory for staging copies, grown as needed. Not
/// write-combined: the CPU reads downloads from it.
#[derive(Default)]
struct Pinned {
    ptr: Option<std::ptr::NonNull<u8>>,
    cap: usize,
}

impl Pinned {
    fn reserve(&mut self, len: usize) -> Result<(), DeviceError> {
        if len <= self.cap {
            return Ok(());
        }
        let cap = len.next_power_of_two().max(1 << 20);
        self.release();
        // SAFETY: a plain page-locked allocation (flags 0: not write-combined).
        let p = guarded("allocating pinned memory", || unsafe {
            result::malloc_host(cap, 0)
        })?;
        self.ptr = std::ptr::NonNull::new(p.cast());
        self.cap = cap;
        Ok(())
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        match self.ptr {
            // SAFETY: `cap` bytes allocated by cuMemHostAlloc, owned here.
            Some(p) => unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), self.cap) },
            None => &mut [],
        }
    }

    fn release(&mut self) {
        if let Some(p) = self.ptr.take() {
            // SAFETY: allocated by cuMemHostAlloc, freed once.
            let _ = guarded("freeing pinned memory", || unsafe {
                result::free_host(p.as_ptr().cast())
            });
        }
        self.cap = 0;
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        self.release();
    }
}

//! [`CudaGpu`]: an opened CUDA GPU driven from one thread, with a stream of its own, cuBLAS
//! where it can be loaded, and two pinned staging buffers every transfer to or from the
//! host goes through. Its methods are what a kernel launcher needs: memory, copies,
//! modules, launches, GEMM and CUDA IPC. Each binds the context to the calling thread
//! first; all block until done except where said (work queued on the stream runs in
//! order).

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cublas::{self, CudaBlas};
use cudarc::driver::{result, CudaContext, CudaStream};
use cudarc::nvrtc::Ptx;
use rask_proto::{DType, IpcExport};

use super::pinned::{CudaPinned, StreamEngine};
use super::{driver, guarded, ipc, DeviceMem, Function, IpcMapping, KernelArg, Module};
use crate::staging::{self, StagingPool};
use crate::DeviceError;

/// Bytes per staging buffer: large enough for the copy engine to run at full speed,
/// small enough that two per GPU pin little memory.
const STAGE_CHUNK: usize = 8 << 20;

/// An opened CUDA GPU (see the module docs).
pub struct CudaGpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    /// `sm_XY`, what kernels are compiled for.
    arch: String,
    /// The compute capability (major, minor).
    cc: (u32, u32),
    blas: Option<CudaBlas>,
    /// Two pinned buffers every transfer to or from the host goes through, in chunks.
    staging: StagingPool,
}

impl std::fmt::Debug for CudaGpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaGpu")
            .field("name", &self.name)
            .field("arch", &self.arch)
            .field("cublas", &self.blas.is_some())
            .finish()
    }
}

impl CudaGpu {
    /// Opens GPU `ordinal` (as numbered in this process) on this thread. Without a driver
    /// the error says so; without cuBLAS the GPU opens (and says so once), GEMMs refused.
    pub fn open(ordinal: u32) -> Result<CudaGpu, DeviceError> {
        driver()?;
        let ctx = guarded("creating a context", || CudaContext::new(ordinal as usize))?;
        let name = guarded("reading the device name", || ctx.name())?;
        let (major, minor) = guarded("reading the compute capability", || {
            ctx.compute_capability()
        })?;
        // The GPU's thread sleeps while it waits for the GPU instead of spinning a core
        // (cuCtxSetFlags needs a 12.1 driver: older ones spin, said once).
        if let Err(e) = guarded("asking for blocking synchronization", || {
            ctx.set_blocking_synchronize()
        }) {
            tracing::warn!("{e}: waiting for the GPU spins a CPU core");
        }
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
        Ok(CudaGpu {
            ctx,
            stream,
            name,
            arch: format!("sm_{major}{minor}"),
            cc: (major.max(0) as u32, minor.max(0) as u32),
            blas,
            staging: StagingPool::new(pinned, STAGE_CHUNK, 2),
        })
    }

    /// The GPU's product name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The architecture kernels are compiled for (`sm_XY`).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The compute capability (`(9, 0)`).
    pub fn compute_capability(&self) -> (u32, u32) {
        self.cc
    }

    /// Whether cuBLAS is loaded (GEMMs can run).
    pub fn has_blas(&self) -> bool {
        self.blas.is_some()
    }

    /// Binds the GPU's context to the calling thread.
    pub fn bind(&self) -> Result<(), DeviceError> {
        guarded("binding the context", || self.ctx.bind_to_thread())
    }

    /// Waits for the work queued on the stream.
    pub fn synchronize(&self) -> Result<(), DeviceError> {
        guarded("synchronizing", || self.stream.synchronize())
    }

    /// Whether `mem` is memory of this GPU.
    pub fn owns(&self, mem: &DeviceMem) -> bool {
        mem.of(&self.ctx)
    }

    /// `len` bytes of device memory (contents unspecified) that CUDA IPC can export.
    pub fn alloc(&self, len: u64) -> Result<DeviceMem, DeviceError> {
        self.bind()?;
        DeviceMem::alloc(&self.ctx, len as usize)
    }

    /// `len` bytes of device memory for the work of one run, from the stream-ordered pool
    /// where the GPU has one.
    pub fn alloc_scratch(&self, len: u64) -> Result<DeviceMem, DeviceError> {
        self.bind()?;
        DeviceMem::alloc_pooled(&self.stream, len as usize)
    }

    /// Frees `mem` after the work queued on the stream.
    pub fn free(&self, mem: DeviceMem) {
        if let Err(e) = self.bind().and_then(|()| self.synchronize()) {
            tracing::warn!("{e}");
        }
        drop(mem);
    }

    /// `bytes` into `dst` (which holds at least as many), through the staging buffers;
    /// done when this returns.
    pub fn upload(&self, bytes: &[u8], dst: &DeviceMem) -> Result<(), DeviceError> {
        fits("an upload", bytes.len(), dst.len())?;
        self.bind()?;
        let mut engine = StreamEngine(&self.stream);
        staging::upload(&self.staging, &mut engine, bytes, dst.ptr())
    }

    /// The first `out.len()` bytes of `src`, into `out`, through the staging buffers.
    /// Queued after the work on the stream; done when this returns.
    pub fn download(&self, src: &DeviceMem, out: &mut [u8]) -> Result<(), DeviceError> {
        fits("a download", out.len(), src.len())?;
        self.bind()?;
        let mut engine = StreamEngine(&self.stream);
        staging::download(&self.staging, &mut engine, src.ptr(), out)
    }

    /// The first `len` bytes of `src` into `dst` on the device, queued on the stream.
    pub fn copy(&self, src: &DeviceMem, dst: &DeviceMem, len: usize) -> Result<(), DeviceError> {
        fits("a copy", len, src.len().min(dst.len()))?;
        let (s, d, stream) = (src.ptr(), dst.ptr(), self.stream.cu_stream());
        // SAFETY: both allocations hold at least `len` bytes (checked) and live until
        // their owners drop them, which frees in stream order or after the device is done.
        guarded("copying on the device", || unsafe {
            result::memcpy_dtod_async(d, s, len, stream)
        })
    }

    /// A compiled image (PTX or CUBIN) loaded into the GPU's context.
    pub fn load_module(&self, image: Vec<u8>) -> Result<Module, DeviceError> {
        self.bind()?;
        let ctx = self.ctx.clone();
        guarded("loading a module", move || {
            ctx.load_module(Ptx::from_binary(image))
        })
        .map(Module)
    }

    /// Launches `f` on the stream with `grid` × `block` threads and `args`.
    ///
    /// # Safety
    ///
    /// `args` match the kernel's parameters in number and type, and the kernel reads and
    /// writes only within the memory passed to it (as large as the launch's work needs).
    pub unsafe fn launch(
        &self,
        f: &Function,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        args: &[KernelArg<'_>],
    ) -> Result<(), DeviceError> {
        let mut slots: Vec<u64> = args.iter().map(KernelArg::slot).collect();
        let mut params: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|s| s as *mut u64 as *mut c_void)
            .collect();
        let (cu_f, stream) = (f.f.cu_function(), self.stream.cu_stream());
        // SAFETY: the caller's contract: the arguments match the entry point's parameters
        // and the buffers are as large as the launch needs; `slots` outlives the call.
        guarded(&f.entry, || unsafe {
            result::launch_kernel(cu_f, grid, block, 0, stream, &mut params)
        })
    }

    /// out (m×n) = a (m×k) · b (k×n), or out += a · b with `acc` (cuBLAS's beta 1), row-
    /// major, by cuBLAS (column-major), queued on the stream: the row-major product is the
    /// column-major Cᵀ = Bᵀ·Aᵀ, so the operands swap and nothing transposes. f32 and f64
    /// only; the dimensions fit `i32`.
    pub fn gemm(
        &self,
        dtype: DType,
        (m, k, n): (u64, u64, u64),
        a: &DeviceMem,
        b: &DeviceMem,
        c: &DeviceMem,
        acc: bool,
    ) -> Result<(), DeviceError> {
        let blas = self
            .blas
            .as_ref()
            .ok_or_else(|| DeviceError::Cuda("cuBLAS is not available".into()))?;
        let size = dtype.size() as usize;
        let (mu, ku, nu) = (m as usize, k as usize, n as usize);
        fits("a GEMM's first operand", mu * ku * size, a.len())?;
        fits("a GEMM's second operand", ku * nu * size, b.len())?;
        fits("a GEMM's output", mu * nu * size, c.len())?;
        let dims = [m, k, n].map(|d| i32::try_from(d).ok());
        let [Some(m), Some(k), Some(n)] = dims else {
            return Err(DeviceError::Cuda(format!(
                "a GEMM of {m}×{k} by {k}×{n} has dimensions past cuBLAS's"
            )));
        };
        let op = cublas::sys::cublasOperation_t::CUBLAS_OP_N;
        let h = *blas.handle();
        let (a, b, c) = (a.ptr(), b.ptr(), c.ptr());
        match dtype {
            // SAFETY: the buffers hold m·k, k·n and m·n elements (checked above).
            DType::F32 => guarded("sgemm", || unsafe {
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
                    &(if acc { 1.0f32 } else { 0.0 }),
                    c as *mut f32,
                    n,
                )
            }),
            // SAFETY: as above.
            DType::F64 => guarded("dgemm", || unsafe {
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
                    &(if acc { 1.0f64 } else { 0.0 }),
                    c as *mut f64,
                    n,
                )
            }),
            d => Err(DeviceError::Cuda(format!("no GEMM for {d}"))),
        }
    }

    /// The CUDA IPC handle of `mem` (which must be [`DeviceMem::exportable`]).
    pub fn export(&self, mem: &DeviceMem) -> Result<IpcExport, DeviceError> {
        self.bind()?;
        ipc::export(mem)
    }

    /// Another process's allocation opened in this GPU's context by its IPC handle (see
    /// [`IpcMapping`]).
    pub fn open_ipc(&self, handle: &[u8]) -> Result<IpcMapping, DeviceError> {
        self.bind()?;
        IpcMapping::open(&self.ctx, handle)
    }

    /// `len` bytes at `offset` of `src` copied into new memory of this GPU (over NVLink or
    /// PCIe, never through the host); done when this returns.
    pub fn copy_from_peer(
        &self,
        src: &IpcMapping,
        offset: u64,
        len: usize,
    ) -> Result<DeviceMem, DeviceError> {
        let s = src.at(offset, len)?;
        let dst = self.alloc(len as u64)?;
        let (d, stream) = (dst.ptr(), self.stream.cu_stream());
        // SAFETY: both ranges hold `len` bytes (checked against the peer's allocation);
        // the copy is finished (synchronized below) before the mapping can be closed or
        // `dst` freed.
        guarded("copying from the peer", || unsafe {
            result::memcpy_dtod_async(d, s, len, stream)
        })?;
        self.synchronize()?;
        Ok(dst)
    }

    /// `out.len()` bytes at `offset` of `src` copied into `out` on the host, through the
    /// staging buffers; done when this returns.
    pub fn download_from_peer(
        &self,
        src: &IpcMapping,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), DeviceError> {
        let s = src.at(offset, out.len())?;
        self.bind()?;
        let mut engine = StreamEngine(&self.stream);
        staging::download(&self.staging, &mut engine, s, out)
    }
}

/// `need` bytes fit in `have`, or an error naming `what` (an internal invariant the caller
/// keeps; checked because a wrong length here would corrupt device memory).
fn fits(what: &str, need: usize, have: usize) -> Result<(), DeviceError> {
    if need <= have {
        Ok(())
    } else {
        Err(DeviceError::Cuda(format!(
            "{what} of {need} bytes into or out of {have}"
        )))
    }
}

//! Device plans: how an `array.*` op (or a user's kernel) runs on a GPU, as kernel launches
//! and GEMMs over device buffers. A GPU worker executes plans with CUDA (`gpu`, feature
//! `cuda`); [`run_on_host`] executes the same plan with the kernels' CPU twins, which is how
//! plans are tested on machines without a GPU, and CI checks every launch's arguments
//! against the parameters NVRTC reports for its entry point.
//!
//! Ops without a plan (`array.assemble`, ranks the kernels do not cover) run their CPU
//! implementation on the worker's host memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rask_proto::{DType, DeviceBytes, DeviceData, DeviceLoc, Value};

use crate::array::{chunk_parts, chunk_value, float, int_list, Chunk};
use crate::cpu::{self, Binary, Elem, Float, Reduce};
use crate::OutputAlloc;

/// An input of a plan: bytes in host memory (uploaded first), or already in a device's.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Host(Bytes),
    Device(DeviceBytes),
}

impl Input {
    pub fn len(&self) -> usize {
        match self {
            Input::Host(b) => b.len(),
            Input::Device(d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A chunk argument of a plan: its bytes wherever they are.
struct ChunkIn {
    dtype: DType,
    shape: Vec<u64>,
    data: Input,
}

fn chunk(v: &Value) -> Option<ChunkIn> {
    let (dtype, shape, data) = chunk_parts(v).ok()?;
    let data = match data {
        Value::Bytes(b) => Input::Host(b.clone()),
        Value::Device(d) => Input::Device(d.clone()),
        _ => return None,
    };
    Some(ChunkIn { dtype, shape, data })
}

/// A buffer of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buf {
    /// The `i`-th input (uploaded before the first step).
    In(usize),
    /// The `i`-th temporary (allocated, contents unspecified).
    Tmp(usize),
    /// The output chunk's data.
    Out,
}

/// A kernel argument.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    Buf(Buf),
    /// A null pointer.
    Null,
    U64(u64),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
}

impl Arg {
    /// The PTX parameter type this argument is passed as (`.u64` for pointers).
    pub fn ptx_type(&self) -> &'static str {
        match self {
            Arg::Buf(_) | Arg::Null | Arg::U64(_) | Arg::I64(_) => "u64",
            Arg::I32(_) => "u32",
            Arg::F32(_) => "f32",
            Arg::F64(_) => "f64",
        }
    }

    /// An element of `dtype` as an argument.
    fn scalar(dtype: DType, v: f64) -> Arg {
        match dtype {
            DType::F32 => Arg::F32(v as f32),
            DType::I32 => Arg::I32(v as i32),
            DType::I64 => Arg::I64(v as i64),
            _ => Arg::F64(v),
        }
    }
}

/// Where a launch's entry point is compiled from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Module {
    /// One of `kernels/*.cu` (see [`crate::cuda_sources`]).
    Builtin(&'static str),
    /// A user's kernel source (registered with `Registry::register_kernel`).
    Custom(Arc<str>),
}

/// One kernel launch.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    pub module: Module,
    pub entry: String,
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub args: Vec<Arg>,
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Launch(Launch),
    /// `out` (m×n) = `a` (m×k) · `b` (k×n), row-major (cuBLAS on a GPU).
    Gemm {
        dtype: DType,
        m: u64,
        k: u64,
        n: u64,
        a: Buf,
        b: Buf,
        out: Buf,
    },
    /// `len` bytes from one buffer to another.
    Copy {
        from: Buf,
        to: Buf,
        len: u64,
    },
}

/// An op as device work: inputs, temporaries, the output chunk and the steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub inputs: Vec<Input>,
    /// Sizes of the temporaries, in bytes.
    pub temps: Vec<u64>,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub steps: Vec<Step>,
}

impl Plan {
    fn new(dtype: DType, shape: Vec<u64>) -> Plan {
        Plan {
            inputs: Vec::new(),
            temps: Vec::new(),
            dtype,
            shape,
            steps: Vec::new(),
        }
    }

    /// Bytes of the output.
    pub fn out_len(&self) -> u64 {
        self.shape.iter().product::<u64>() * self.dtype.size()
    }

    fn input(&mut self, b: Input) -> Buf {
        self.inputs.push(b);
        Buf::In(self.inputs.len() - 1)
    }

    fn temp(&mut self, bytes: u64) -> Buf {
        self.temps.push(bytes);
        Buf::Tmp(self.temps.len() - 1)
    }

    fn launch(&mut self, entry: String, grid: (u32, u32, u32), block: u32, args: Vec<Arg>) {
        self.steps.push(Step::Launch(Launch {
            module: Module::Builtin(file_of(&entry)),
            entry,
            grid,
            block: (block, 1, 1),
            args,
        }));
    }

    /// A grid-stride kernel over `n` elements.
    fn elementwise(&mut self, entry: String, n: u64, args: Vec<Arg>) {
        if n > 0 {
            self.launch(entry, (grid_for(n, THREADS), 1, 1), THREADS, args);
        }
    }
}

/// Threads per block of the grid-stride kernels, and of the block reductions (`BLOCK` in
/// `reduce.cu`: they must launch with exactly this many).
pub const THREADS: u32 = 256;
/// Blocks enough to fill any current GPU; grid-stride loops cover the rest.
const MAX_BLOCKS: u64 = 4096;
/// Partials of a whole-chunk reduction's first pass (the second pass is one block).
const REDUCE_BLOCKS: u64 = 1024;
/// Transpose tiles and rows of threads per tile (`TILE`, `ROWS` in `transpose.cu`).
const TILE: u32 = 32;
const TILE_ROWS: u32 = 8;

fn grid_for(n: u64, threads: u32) -> u32 {
    n.div_ceil(threads as u64).clamp(1, MAX_BLOCKS) as u32
}

/// The kernel file that defines an entry point of `kernels/`.
pub fn file_of(entry: &str) -> &'static str {
    let op = entry.rsplit_once('_').map_or(entry, |(op, _)| op);
    match op {
        "fill" | "arange" => "fill.cu",
        "random_uniform" | "random_normal" => "random.cu",
        "sum" | "amax" | "amin" | "argmax" | "sum_axis" | "amax_axis" | "amin_axis" => "reduce.cu",
        "transpose" => "transpose.cu",
        _ => "elementwise.cu",
    }
}

fn suffix(dtype: DType) -> Result<&'static str, String> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::F64 => Ok("f64"),
        DType::I32 => Ok("i32"),
        DType::I64 => Ok("i64"),
        d => Err(format!("no kernels for {d}")),
    }
}

/// The device plan of `op` on `args`, or `None` when the op has none (it then runs on the
/// CPU). Malformed arguments also give `None`: the CPU implementation reports them.
pub fn plan(op: &str, args: &[Value]) -> Option<Plan> {
    match (op, args) {
        ("array.full", [Value::Str(dt), shape, value]) => {
            let dtype: DType = dt.parse().ok()?;
            let mut p = Plan::new(dtype, int_list(shape, "shape").ok()?);
            let n = p.shape.iter().product();
            let entry = format!("fill_{}", suffix(dtype).ok()?);
            let value = Arg::scalar(dtype, float(value).ok()?);
            p.elementwise(entry, n, vec![Arg::Buf(Buf::Out), Arg::U64(n), value]);
            Some(p)
        }
        ("array.arange", [Value::Str(dt), start, step, Value::Int(n)]) => {
            let dtype: DType = dt.parse().ok()?;
            let n = (*n).max(0) as u64;
            let mut p = Plan::new(dtype, vec![n]);
            let entry = format!("arange_{}", suffix(dtype).ok()?);
            let (start, step) = (float(start).ok()?, float(step).ok()?);
            let args = vec![
                Arg::Buf(Buf::Out),
                Arg::U64(n),
                Arg::scalar(dtype, start),
                Arg::scalar(dtype, step),
            ];
            p.elementwise(entry, n, args);
            Some(p)
        }
        (
            "array.random_uniform" | "array.random_normal",
            [Value::Str(dt), Value::Int(seed), global, origin, shape, p0, p1],
        ) => {
            let dtype: DType = dt.parse().ok()?;
            if !matches!(dtype, DType::F32 | DType::F64) {
                return None;
            }
            let (global, origin, shape) = (
                int_list(global, "global shape").ok()?,
                int_list(origin, "origin").ok()?,
                int_list(shape, "shape").ok()?,
            );
            // Rows of a chunk of rank ≤ 2 start at evenly spaced global indices; higher
            // ranks run on the CPU.
            if shape.len() > 2 || global.len() != shape.len() || origin.len() != shape.len() {
                return None;
            }
            let cols = shape.last().copied().unwrap_or(1);
            let row_stride = global.last().copied().unwrap_or(1);
            let offset = match origin[..] {
                [] => 0,
                [c] => c,
                [r, c] => r * row_stride + c,
                _ => return None,
            };
            let kind = op.trim_start_matches("array.");
            let mut p = Plan::new(dtype, shape);
            let n = p.shape.iter().product();
            let args = vec![
                Arg::Buf(Buf::Out),
                Arg::U64(n),
                Arg::U64(cols),
                Arg::U64(*seed as u64),
                Arg::U64(offset),
                Arg::U64(row_stride),
                Arg::scalar(dtype, float(p0).ok()?),
                Arg::scalar(dtype, float(p1).ok()?),
            ];
            p.elementwise(format!("{kind}_{}", suffix(dtype).ok()?), n, args);
            Some(p)
        }
        ("array.binary", [Value::Str(name), x, y]) => {
            let x = chunk(x)?;
            let s = suffix(x.dtype).ok()?;
            let is_float = matches!(x.dtype, DType::F32 | DType::F64);
            let known = Binary::parse(name).is_some()
                || (is_float && matches!(name.as_str(), "div" | "pow"));
            if !known {
                return None;
            }
            let mut p = Plan::new(x.dtype, x.shape.clone());
            let n = p.shape.iter().product();
            let a = p.input(x.data.clone());
            let (b, b_scalar) = match y {
                Value::Float(_) | Value::Int(_) => {
                    (p.input(scalar_bytes(x.dtype, float(y).ok()?)), 1)
                }
                v => {
                    let y = chunk(v)?;
                    if y.dtype != x.dtype || y.shape != x.shape {
                        return None;
                    }
                    (p.input(y.data), 0)
                }
            };
            let args = vec![
                Arg::Buf(a),
                Arg::Buf(b),
                Arg::Buf(Buf::Out),
                Arg::U64(n),
                Arg::I32(0),
                Arg::I32(b_scalar),
            ];
            p.elementwise(format!("{name}_{s}"), n, args);
            Some(p)
        }
        ("array.combine", [Value::Str(name), rest @ ..]) => {
            let chunks: Vec<ChunkIn> = rest.iter().map(chunk).collect::<Option<_>>()?;
            let first = chunks.first()?;
            if !matches!(
                Binary::parse(name),
                Some(Binary::Add | Binary::Max | Binary::Min)
            ) || chunks
                .iter()
                .any(|c| c.dtype != first.dtype || c.shape != first.shape)
            {
                return None;
            }
            let s = suffix(first.dtype).ok()?;
            let mut p = Plan::new(first.dtype, first.shape.clone());
            let n: u64 = p.shape.iter().product();
            let bufs: Vec<Buf> = chunks.iter().map(|c| p.input(c.data.clone())).collect();
            if bufs.len() == 1 {
                let len = p.out_len();
                p.steps.push(Step::Copy {
                    from: bufs[0],
                    to: Buf::Out,
                    len,
                });
            }
            // out = c0 op c1, then out = out op ci: elementwise, so in place is safe.
            let mut acc = bufs[0];
            for &b in &bufs[1..] {
                let args = vec![
                    Arg::Buf(acc),
                    Arg::Buf(b),
                    Arg::Buf(Buf::Out),
                    Arg::U64(n),
                    Arg::I32(0),
                    Arg::I32(0),
                ];
                p.elementwise(format!("{name}_{s}"), n, args);
                acc = Buf::Out;
            }
            Some(p)
        }
        ("array.transpose", [x]) => {
            let x = chunk(x)?;
            let [rows, cols] = x.shape[..] else {
                return None;
            };
            let tiles = |d: u64| d.div_ceil(TILE as u64);
            // gridDim.y is at most 65535.
            if tiles(rows) > 65_535 || tiles(cols) > i32::MAX as u64 {
                return None;
            }
            let mut p = Plan::new(x.dtype, vec![cols, rows]);
            let s = suffix(x.dtype).ok()?;
            let a = p.input(x.data);
            if rows * cols > 0 {
                p.steps.push(Step::Launch(Launch {
                    module: Module::Builtin("transpose.cu"),
                    entry: format!("transpose_{s}"),
                    grid: (tiles(cols) as u32, tiles(rows) as u32, 1),
                    block: (TILE, TILE_ROWS, 1),
                    args: vec![
                        Arg::Buf(a),
                        Arg::Buf(Buf::Out),
                        Arg::U64(rows),
                        Arg::U64(cols),
                    ],
                }));
            }
            Some(p)
        }
        ("array.matmul", [x, y]) => {
            let (x, y) = (chunk(x)?, chunk(y)?);
            let (&[m, k], &[k2, n]) = (&x.shape[..], &y.shape[..]) else {
                return None;
            };
            // cuBLAS takes 32-bit dimensions.
            let fits = [m, k, n].iter().all(|&d| d <= i32::MAX as u64);
            if k != k2 || x.dtype != y.dtype || !fits || !matches!(x.dtype, DType::F32 | DType::F64)
            {
                return None;
            }
            let mut p = Plan::new(x.dtype, vec![m, n]);
            let (a, b) = (p.input(x.data), p.input(y.data));
            if m * n > 0 {
                if k == 0 {
                    p.elementwise(
                        format!("fill_{}", suffix(x.dtype).ok()?),
                        m * n,
                        vec![
                            Arg::Buf(Buf::Out),
                            Arg::U64(m * n),
                            Arg::scalar(x.dtype, 0.0),
                        ],
                    );
                } else {
                    p.steps.push(Step::Gemm {
                        dtype: x.dtype,
                        m,
                        k,
                        n,
                        a,
                        b,
                        out: Buf::Out,
                    });
                }
            }
            Some(p)
        }
        ("array.reduce", [Value::Str(name), Value::Int(axis), x]) => {
            let x = chunk(x)?;
            let op = Reduce::parse(name)?;
            let s = suffix(x.dtype).ok()?;
            let kernel = match op {
                Reduce::Sum => "sum",
                Reduce::Max => "amax",
                Reduce::Min => "amin",
            };
            if *axis >= 0 {
                let ax = *axis as usize;
                if ax >= x.shape.len() {
                    return None;
                }
                let outer: u64 = x.shape[..ax].iter().product();
                let len = x.shape[ax];
                let inner: u64 = x.shape[ax + 1..].iter().product();
                let mut shape = x.shape.clone();
                shape.remove(ax);
                let mut p = Plan::new(x.dtype, shape);
                let a = p.input(x.data);
                let args = vec![
                    Arg::Buf(a),
                    Arg::Buf(Buf::Out),
                    Arg::U64(outer),
                    Arg::U64(len),
                    Arg::U64(inner),
                ];
                p.elementwise(format!("{kernel}_axis_{s}"), outer * inner, args);
                return Some(p);
            }
            let mut p = Plan::new(x.dtype, vec![]);
            let n: u64 = x.shape.iter().product();
            let a = p.input(x.data);
            if n == 0 {
                let init = op.init::<f64>();
                if !matches!(x.dtype, DType::F32 | DType::F64) {
                    return None;
                }
                let args = vec![Arg::Buf(Buf::Out), Arg::U64(1), Arg::scalar(x.dtype, init)];
                p.elementwise(format!("fill_{s}"), 1, args);
                return Some(p);
            }
            // Pass 1: one partial per block; pass 2 (one block) reduces the partials.
            let blocks = n.div_ceil(THREADS as u64).min(REDUCE_BLOCKS);
            let entry = format!("{kernel}_{s}");
            let first_out = if blocks == 1 {
                Buf::Out
            } else {
                p.temp(blocks * x.dtype.size())
            };
            let args = vec![Arg::Buf(a), Arg::Buf(first_out), Arg::U64(n)];
            p.launch(entry.clone(), (blocks as u32, 1, 1), THREADS, args);
            if blocks > 1 {
                let args = vec![Arg::Buf(first_out), Arg::Buf(Buf::Out), Arg::U64(blocks)];
                p.launch(entry, (1, 1, 1), THREADS, args);
            }
            Some(p)
        }
        _ => None,
    }
}

/// The plan of a user's kernel, by the calling convention of custom kernels:
/// `entry(inputs…, out, n, scalars…)`, every chunk argument an input (in order), the output
/// shaped like the first, numbers passed as its dtype.
pub fn custom(source: &str, entry: &str, args: &[Value]) -> Option<Plan> {
    let mut chunks = Vec::new();
    let mut scalars = Vec::new();
    for a in args {
        match a {
            Value::Float(_) | Value::Int(_) => scalars.push(float(a).ok()?),
            v => chunks.push(chunk(v)?),
        }
    }
    let first = chunks.first()?;
    let dtype = first.dtype;
    suffix(dtype).ok()?;
    let mut p = Plan::new(dtype, first.shape.clone());
    let n: u64 = p.shape.iter().product();
    let mut kargs: Vec<Arg> = chunks
        .into_iter()
        .map(|c| Arg::Buf(p.input(c.data)))
        .collect();
    kargs.push(Arg::Buf(Buf::Out));
    kargs.push(Arg::U64(n));
    kargs.extend(scalars.iter().map(|&v| Arg::scalar(dtype, v)));
    if n > 0 {
        p.steps.push(Step::Launch(Launch {
            module: Module::Custom(source.into()),
            entry: entry.to_string(),
            grid: (grid_for(n, THREADS), 1, 1),
            block: (THREADS, 1, 1),
            args: kargs,
        }));
    }
    Some(p)
}

fn scalar_bytes(dtype: DType, v: f64) -> Input {
    Input::Host(match dtype {
        DType::F32 => Bytes::copy_from_slice(&(v as f32).to_ne_bytes()),
        DType::I32 => Bytes::copy_from_slice(&(v as i32).to_ne_bytes()),
        DType::I64 => Bytes::copy_from_slice(&(v as i64).to_ne_bytes()),
        _ => Bytes::copy_from_slice(&v.to_ne_bytes()),
    })
}

/// A simulated GPU's executor: device plans run by the kernels' CPU twins, launch by
/// launch, as a GPU would run them, their outputs left in the GPU's memory
/// ([`SimBytes`]). Users' kernels run their CPU twin.
pub struct HostPlans {
    device: DeviceLoc,
    memory: Arc<dyn OutputAlloc>,
    downloaded: Arc<AtomicU64>,
}

impl HostPlans {
    /// The executor of simulated GPU `device` (`sim:N`), whose memory is `memory`: an
    /// allocation it refuses (the GPU is full) leaves that output on the host.
    pub fn new(device: DeviceLoc, memory: Arc<dyn OutputAlloc>) -> HostPlans {
        HostPlans {
            device,
            memory,
            downloaded: Arc::default(),
        }
    }

    /// Bytes of this GPU's memory as a device value's data.
    fn keep(&self, bytes: Bytes) -> DeviceBytes {
        DeviceBytes::new(SimBytes {
            bytes,
            device: self.device,
            downloaded: self.downloaded.clone(),
        })
    }
}

impl crate::Accelerator for HostPlans {
    fn try_run(
        &self,
        registry: &crate::Registry,
        op: &str,
        args: &[Value],
    ) -> Option<Result<Value, String>> {
        if registry.cuda_kernel(op).is_some() {
            return None;
        }
        let p = plan(op, args)?;
        let len = p.out_len() as usize;
        let Some(mut out) = (len > 0).then(|| self.memory.alloc(len)).flatten() else {
            return Some(run_on_host(&p).map(|c| c.to_value()));
        };
        if let Err(e) = run_into(&p, out.bytes_mut()) {
            return Some(Err(e));
        }
        let data = Value::Device(self.keep(out.freeze()));
        Some(Ok(chunk_value(p.dtype, &p.shape, data)))
    }

    fn downloaded(&self) -> u64 {
        self.downloaded.load(Ordering::Relaxed)
    }

    fn runs(&self, registry: &crate::Registry, op: &str, args: &[Value]) -> bool {
        registry.cuda_kernel(op).is_none() && plan(op, args).is_some()
    }

    fn upload(&self, v: &Value) -> Option<Result<Value, String>> {
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

/// A buffer of the plan runner: memory of its own, an input read in place, or the
/// output written in place (the last two when 8-byte aligned, copied otherwise).
enum HostBuf<'a> {
    Owned { words: Vec<u64>, len: usize },
    Input(&'a [u8]),
    Out(&'a mut [u8]),
}

impl<'a> HostBuf<'a> {
    fn new(len: u64) -> HostBuf<'a> {
        HostBuf::Owned {
            words: vec![0; (len as usize).div_ceil(8)],
            len: len as usize,
        }
    }

    /// Memory of its own filled with 0xA5, so that what no step writes shows.
    fn poisoned(len: u64) -> HostBuf<'a> {
        HostBuf::Owned {
            words: vec![0xA5A5_A5A5_A5A5_A5A5; (len as usize).div_ceil(8)],
            len: len as usize,
        }
    }

    fn input(b: &'a [u8]) -> HostBuf<'a> {
        if b.as_ptr().align_offset(8) == 0 {
            return HostBuf::Input(b);
        }
        Self::copy_of(b)
    }

    fn copy_of(b: &[u8]) -> HostBuf<'a> {
        let mut h = HostBuf::new(b.len() as u64);
        h.bytes_mut().expect("owned").copy_from_slice(b);
        h
    }

    /// A plan's input: read in place from host memory and from a simulated GPU's,
    /// brought to the host from any other device.
    fn of_input(i: &'a Input) -> Result<HostBuf<'a>, String> {
        match i {
            Input::Host(b) => Ok(Self::input(b)),
            Input::Device(d) => match d.downcast::<SimBytes>() {
                Some(s) => Ok(Self::input(s.bytes())),
                None => Ok(Self::copy_of(&d.data().to_host()?)),
            },
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            // SAFETY: `len` ≤ the words' byte length; u8 has no alignment.
            HostBuf::Owned { words, len } => unsafe {
                std::slice::from_raw_parts(words.as_ptr().cast(), *len)
            },
            HostBuf::Input(b) => b,
            HostBuf::Out(b) => b,
        }
    }

    /// Writable bytes; `None` for an input (kernels never write their inputs).
    fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        match self {
            // SAFETY: as above, borrowed exclusively.
            HostBuf::Owned { words, len } => {
                Some(unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast(), *len) })
            }
            HostBuf::Input(_) => None,
            HostBuf::Out(b) => Some(b),
        }
    }

    fn elems<T: Elem>(&self) -> &[T] {
        let b = self.bytes();
        // SAFETY: 8-byte aligned (checked when made), in bounds; every bit pattern is a
        // valid element.
        unsafe { std::slice::from_raw_parts(b.as_ptr().cast(), b.len() / std::mem::size_of::<T>()) }
    }

    fn elems_mut<T: Elem>(&mut self) -> Option<&mut [T]> {
        let b = self.bytes_mut()?;
        let n = b.len() / std::mem::size_of::<T>();
        // SAFETY: as above, borrowed exclusively.
        Some(unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr().cast(), n) })
    }
}

/// Runs a plan on the host with the kernels' CPU twins, as a GPU would run it: every launch
/// checks its arguments (count and types) and reads and writes only the buffers it is
/// given, with the launch shape's effect on partial results reproduced. Outputs start
/// poisoned, so an element no step writes is caught. Inputs are read in place and the
/// output is written where the op's output goes ([`crate::output_bytes`]).
pub fn run_on_host(plan: &Plan) -> Result<Chunk, String> {
    let mut result = Ok(());
    let data = crate::output_bytes(plan.out_len() as usize, |out| {
        result = run_into(plan, out);
    });
    result?;
    Ok(Chunk {
        dtype: plan.dtype,
        shape: plan.shape.clone(),
        data,
    })
}

/// Runs a plan with the CPU twins into `out` (the output's length).
pub fn run_into(plan: &Plan, out: &mut [u8]) -> Result<(), String> {
    if out.len() as u64 != plan.out_len() {
        return Err(format!(
            "an output of {} bytes for {} bytes",
            out.len(),
            plan.out_len()
        ));
    }
    if out.as_ptr().align_offset(8) == 0 {
        return run_steps(plan, out);
    }
    let mut own = HostBuf::new(out.len() as u64);
    let bytes = own.bytes_mut().expect("owned");
    run_steps(plan, bytes)?;
    out.copy_from_slice(bytes);
    Ok(())
}

/// Runs the steps with `out` (8-byte aligned) as the output.
fn run_steps(plan: &Plan, out: &mut [u8]) -> Result<(), String> {
    let mut bufs: Vec<HostBuf> = plan
        .inputs
        .iter()
        .map(HostBuf::of_input)
        .collect::<Result<_, _>>()?;
    let temps = bufs.len();
    bufs.extend(plan.temps.iter().map(|&t| HostBuf::poisoned(t)));
    out.fill(0xA5);
    bufs.push(HostBuf::Out(out));
    let index = |b: Buf| -> Result<usize, String> {
        let i = match b {
            Buf::In(i) if i < plan.inputs.len() => i,
            Buf::Tmp(i) if i < plan.temps.len() => temps + i,
            Buf::Out => plan.inputs.len() + plan.temps.len(),
            b => return Err(format!("no buffer {b:?}")),
        };
        Ok(i)
    };
    for step in &plan.steps {
        match step {
            Step::Copy { from, to, len } => {
                let (from, to, len) = (index(*from)?, index(*to)?, *len as usize);
                with_output(&mut bufs, to, &[from], |bufs, dst| {
                    let src = &bufs[from].bytes()[..len];
                    let dst = dst.bytes_mut().ok_or("a copy into an input")?;
                    dst[..len].copy_from_slice(src);
                    Ok::<_, String>(())
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
                let (m, k, n) = (*m as usize, *k as usize, *n as usize);
                let (ia, ib, io) = (index(*a)?, index(*b)?, index(*out)?);
                match dtype {
                    DType::F32 => host_gemm::<f32>(&mut bufs, (ia, ib, io), m, k, n)?,
                    DType::F64 => host_gemm::<f64>(&mut bufs, (ia, ib, io), m, k, n)?,
                    d => return Err(format!("no GEMM for {d}")),
                }
            }
            Step::Launch(l) => {
                let Module::Builtin(_) = l.module else {
                    return Err(format!("{}: a custom kernel has no twin here", l.entry));
                };
                let resolved = l
                    .args
                    .iter()
                    .map(|a| match a {
                        Arg::Buf(b) => index(*b).map(Resolved::Buf),
                        Arg::Null => Ok(Resolved::Null),
                        other => Ok(Resolved::Value(*other)),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                host_launch(l, &resolved, &mut bufs)?;
            }
        }
    }
    Ok(())
}

fn host_gemm<T: crate::array::Pod + Elem>(
    bufs: &mut [HostBuf],
    (a, b, out): (usize, usize, usize),
    m: usize,
    k: usize,
    n: usize,
) -> Result<(), String> {
    if out == a || out == b {
        return Err("a GEMM's output is one of its inputs".into());
    }
    with_output(bufs, out, &[a, b], |bufs, o| {
        let (x, y) = (bufs[a].elems::<T>(), bufs[b].elems::<T>());
        match o.elems_mut::<T>() {
            Some(dst) if x.len() >= m * k && y.len() >= k * n && dst.len() >= m * n => {
                T::gemm(m, k, n, &x[..m * k], &y[..k * n], &mut dst[..m * n]);
                Ok(())
            }
            Some(_) => Err("GEMM operands too small".into()),
            None => Err("a GEMM into an input".into()),
        }
    })
}

/// Runs `f` with buffer `out` taken out of the list, to be written, while the others are
/// read in place. A buffer `f` reads (`reads`) that is `out` itself (a combine plan's
/// `out = out op c`) is read from a copy left in its place: the elementwise kernels that
/// do this read each element before they write it, so the copy holds what they read.
fn with_output<'b, R>(
    bufs: &mut [HostBuf<'b>],
    out: usize,
    reads: &[usize],
    f: impl FnOnce(&[HostBuf<'b>], &mut HostBuf<'b>) -> R,
) -> R {
    let stand_in = if reads.contains(&out) {
        HostBuf::copy_of(bufs[out].bytes())
    } else {
        HostBuf::new(0)
    };
    let mut o = std::mem::replace(&mut bufs[out], stand_in);
    let r = f(bufs, &mut o);
    bufs[out] = o;
    r
}

#[derive(Clone, Copy)]
enum Resolved {
    Buf(usize),
    Null,
    Value(Arg),
}

fn host_launch(l: &Launch, args: &[Resolved], bufs: &mut [HostBuf]) -> Result<(), String> {
    let (op, dt) = l
        .entry
        .rsplit_once('_')
        .ok_or_else(|| format!("entry {:?} is not op_dtype", l.entry))?;
    match dt {
        "f32" => launch_typed::<f32>(op, l, args, bufs),
        "f64" => launch_typed::<f64>(op, l, args, bufs),
        "i32" => launch_elem::<i32>(op, l, args, bufs),
        "i64" => launch_elem::<i64>(op, l, args, bufs),
        _ => Err(format!("entry {:?}: unknown dtype", l.entry)),
    }
}

/// Reads a launch's arguments, checking each one's kind as the kernel declares it.
struct Args<'a> {
    entry: &'a str,
    args: &'a [Resolved],
}

impl Args<'_> {
    fn check_count(&self, n: usize) -> Result<(), String> {
        if self.args.len() == n {
            Ok(())
        } else {
            Err(format!(
                "{}: {} arguments, the kernel takes {n}",
                self.entry,
                self.args.len()
            ))
        }
    }

    fn buf(&self, i: usize) -> Result<usize, String> {
        match self.args.get(i) {
            Some(Resolved::Buf(b)) => Ok(*b),
            _ => Err(format!("{}: argument {i} is not a buffer", self.entry)),
        }
    }

    fn opt_buf(&self, i: usize) -> Result<Option<usize>, String> {
        match self.args.get(i) {
            Some(Resolved::Null) => Ok(None),
            _ => self.buf(i).map(Some),
        }
    }

    fn u64(&self, i: usize) -> Result<u64, String> {
        match self.args.get(i) {
            Some(Resolved::Value(Arg::U64(v))) => Ok(*v),
            _ => Err(format!("{}: argument {i} is not a u64", self.entry)),
        }
    }

    fn flag(&self, i: usize) -> Result<bool, String> {
        match self.args.get(i) {
            Some(Resolved::Value(Arg::I32(v))) => Ok(*v != 0),
            _ => Err(format!("{}: argument {i} is not an int", self.entry)),
        }
    }

    fn elem<T: Elem>(&self, i: usize) -> Result<T, String> {
        let v = match (T::NAME, self.args.get(i)) {
            ("f32", Some(Resolved::Value(Arg::F32(v)))) => *v as f64,
            ("f64", Some(Resolved::Value(Arg::F64(v)))) => *v,
            ("i32", Some(Resolved::Value(Arg::I32(v)))) => *v as f64,
            ("i64", Some(Resolved::Value(Arg::I64(v)))) => *v as f64,
            _ => return Err(format!("{}: argument {i} is not a {}", self.entry, T::NAME)),
        };
        Ok(T::from_f64(v))
    }
}

/// `n` elements of buffer `b`, read in place, or an error naming the entry point when it
/// is too short.
fn input<'a, T: Elem>(
    bufs: &'a [HostBuf],
    b: usize,
    n: usize,
    entry: &str,
) -> Result<&'a [T], String> {
    let e = bufs[b].elems::<T>();
    e.get(..n)
        .ok_or_else(|| format!("{entry}: a buffer of {} elements, {n} read", e.len()))
}

/// The first `n` elements of `buf`, to be written.
fn output<'a, T: Elem>(
    buf: &'a mut HostBuf<'_>,
    n: usize,
    entry: &str,
) -> Result<&'a mut [T], String> {
    let e = buf
        .elems_mut::<T>()
        .ok_or_else(|| format!("{entry}: writes an input"))?;
    let len = e.len();
    e.get_mut(..n)
        .ok_or_else(|| format!("{entry}: a buffer of {len} elements, {n} written"))
}

/// A binary kernel `(a, b, out, n, a_scalar, b_scalar)`: `f` gets the operands (a scalar
/// one is one element), the `n` elements of the output and the scalar flags.
fn binary_launch<T: Elem>(
    a: &Args<'_>,
    bufs: &mut [HostBuf],
    f: impl FnOnce(&[T], &[T], &mut [T], bool, bool),
) -> Result<(), String> {
    a.check_count(6)?;
    let n = a.u64(3)? as usize;
    let (sa, sb) = (a.flag(4)?, a.flag(5)?);
    let (ia, ib, io) = (a.buf(0)?, a.buf(1)?, a.buf(2)?);
    with_output(bufs, io, &[ia, ib], |bufs, o| {
        let x = input::<T>(bufs, ia, if sa { 1 } else { n }, a.entry)?;
        let y = input::<T>(bufs, ib, if sb { 1 } else { n }, a.entry)?;
        f(x, y, output::<T>(o, n, a.entry)?, sa, sb);
        Ok(())
    })
}

fn launch_typed<T: Float>(
    op: &str,
    l: &Launch,
    args: &[Resolved],
    bufs: &mut [HostBuf],
) -> Result<(), String> {
    let a = Args {
        entry: &l.entry,
        args,
    };
    match op {
        "random_uniform" | "random_normal" => {
            a.check_count(8)?;
            let n = a.u64(1)? as usize;
            let (cols, seed, offset, stride) = (a.u64(2)?, a.u64(3)?, a.u64(4)?, a.u64(5)?);
            let (p0, p1) = (a.elem::<T>(6)?.to_f64(), a.elem::<T>(7)?.to_f64());
            let out = output::<T>(&mut bufs[a.buf(0)?], n, &l.entry)?;
            let normal = op == "random_normal";
            cpu::random_rows(normal, out, cols as usize, seed, offset, stride, p0, p1);
            Ok(())
        }
        "div" | "pow" => binary_launch::<T>(&a, bufs, |x, y, out, sa, sb| {
            cpu::binary_float(op == "pow", x, y, out, sa, sb)
        }),
        _ => launch_elem::<T>(op, l, args, bufs),
    }
}

/// Launches of the entry points every element type has (the float-only ones are in
/// `launch_typed`).
fn launch_elem<T: Elem>(
    op: &str,
    l: &Launch,
    args: &[Resolved],
    bufs: &mut [HostBuf],
) -> Result<(), String> {
    let a = Args {
        entry: &l.entry,
        args,
    };
    let e = &l.entry;
    if let Some(op) = Binary::parse(op) {
        return binary_launch::<T>(&a, bufs, |x, y, out, sa, sb| {
            cpu::binary(op, x, y, out, sa, sb)
        });
    }
    match op {
        "fill" => {
            a.check_count(3)?;
            let n = a.u64(1)? as usize;
            let v = a.elem::<T>(2)?;
            cpu::fill(output::<T>(&mut bufs[a.buf(0)?], n, e)?, v);
        }
        "arange" => {
            a.check_count(4)?;
            let n = a.u64(1)? as usize;
            let (start, step) = (a.elem::<T>(2)?, a.elem::<T>(3)?);
            cpu::arange(output::<T>(&mut bufs[a.buf(0)?], n, e)?, start, step);
        }
        "sum" | "amax" | "amin" => {
            // Block b of a grid-stride launch reduces the elements i with
            // (i / threads) % blocks == b and writes partial b: run j of `threads`
            // elements goes to block j % blocks.
            a.check_count(3)?;
            if l.block != (THREADS, 1, 1) {
                return Err(format!("{e}: block reductions launch {THREADS} threads"));
            }
            let n = a.u64(2)? as usize;
            let blocks = l.grid.0 as usize;
            let x = input::<T>(bufs, a.buf(0)?, n, e)?;
            let r = Reduce::parse(op).expect("a reduction");
            let mut partials = vec![r.init::<T>(); blocks];
            for (j, run) in x.chunks(THREADS as usize).enumerate() {
                let p = &mut partials[j % blocks];
                for &v in run {
                    *p = r.combine(*p, v);
                }
            }
            output::<T>(&mut bufs[a.buf(1)?], blocks, e)?.copy_from_slice(&partials);
        }
        "sum_axis" | "amax_axis" | "amin_axis" => {
            a.check_count(5)?;
            let (outer, len, inner) = (a.u64(2)? as usize, a.u64(3)? as usize, a.u64(4)? as usize);
            let (ix, io) = (a.buf(0)?, a.buf(1)?);
            let r = Reduce::parse(op.trim_end_matches("_axis")).expect("a reduction");
            with_output(bufs, io, &[ix], |bufs, o| {
                let x = input::<T>(bufs, ix, outer * len * inner, e)?;
                cpu::reduce_axis(r, x, output::<T>(o, outer * inner, e)?, len, inner);
                Ok::<_, String>(())
            })?;
        }
        "argmax" => {
            a.check_count(5)?;
            if l.grid != (1, 1, 1) {
                return Err(format!("{e}: the twin covers one-block launches"));
            }
            let n = a.u64(4)? as usize;
            let x = input::<T>(bufs, a.buf(0)?, n, e)?;
            let idx = match a.opt_buf(1)? {
                Some(b) => Some(input::<i64>(bufs, b, n, e)?),
                None => None,
            };
            let i = cpu::argmax(x).ok_or_else(|| format!("{e}: argmax of nothing"))?;
            let (v, at) = (x[i], idx.map_or(i as i64, |idx| idx[i]));
            output::<T>(&mut bufs[a.buf(2)?], 1, e)?[0] = v;
            output::<i64>(&mut bufs[a.buf(3)?], 1, e)?[0] = at;
        }
        "transpose" => {
            a.check_count(4)?;
            let (rows, cols) = (a.u64(2)? as usize, a.u64(3)? as usize);
            let tiles = |d: usize| d.div_ceil(TILE as usize) as u32;
            if l.block != (TILE, TILE_ROWS, 1) || l.grid != (tiles(cols), tiles(rows), 1) {
                return Err(format!("{e}: launch shape does not cover the tiles"));
            }
            let (ix, io) = (a.buf(0)?, a.buf(1)?);
            with_output(bufs, io, &[ix], |bufs, o| {
                let x = input::<T>(bufs, ix, rows * cols, e)?;
                cpu::transpose(x, output::<T>(o, rows * cols, e)?, rows, cols);
                Ok::<_, String>(())
            })?;
        }
        _ => return Err(format!("{e}: no CPU twin for this entry point")),
    }
    Ok(())
}

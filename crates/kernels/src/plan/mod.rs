//! Device plans: how an `array.*` op (or a user's kernel) runs on a GPU, as kernel launches
//! and GEMMs over device buffers. A GPU worker executes plans with CUDA (`gpu`, feature
//! `cuda`); [`run_on_host`] executes the same plan with the kernels' CPU twins, which is how
//! plans are tested on machines without a GPU, and CI checks every launch's arguments
//! against the parameters NVRTC reports for its entry point.
//!
//! Ops without a plan (`array.assemble`, ranks the kernels do not cover) run their CPU
//! implementation on the worker's host memory.
//!
//! The IR is here (the [`Plan`] of [`Step`]s over [`Buf`]s); `op` parses an op into an
//! [`ArrayOp`], `lower` makes its plan ([`lower()`], [`plan()`], [`custom`]), `host` runs
//! plans with the CPU twins ([`run_on_host`]) and `sim` is the simulated GPU that does so
//! for a worker ([`HostPlans`], [`SimBytes`]).

mod host;
mod lower;
mod op;
mod sim;

use std::sync::Arc;

use bytes::Bytes;
use rask_proto::{DType, DeviceBytes};

pub use host::{run_into, run_on_host};
pub use lower::{custom, lower, plan};
pub use op::{ArrayOp, BinaryOp, ChunkArg, Operand, Random};
pub use sim::{parse_faults, stall, Held, HostPlans, SimBytes};

/// An input of a plan: bytes in host memory (uploaded first), or already in a device's.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// Host bytes, uploaded before the first step.
    Host(Bytes),
    /// Bytes in a device's memory: used in place on that device, brought over otherwise.
    Device(DeviceBytes),
}

impl Input {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Input::Host(b) => b.len(),
            Input::Device(d) => d.len(),
        }
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
    /// A buffer of the plan, passed as its address.
    Buf(Buf),
    /// A null pointer.
    Null,
    /// An element count or index (`unsigned long long`).
    U64(u64),
    /// An `int` (a flag, or an i32 element).
    I32(i32),
    /// An i64 element.
    I64(i64),
    /// An f32 element.
    F32(f32),
    /// An f64 element.
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
    /// One of `cuda/*.cu` (see [`crate::cuda_sources`]).
    Builtin(&'static str),
    /// A user's kernel source (registered with `Registry::register_kernel`).
    Custom(Arc<str>),
}

/// One kernel launch.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    /// Where the entry point is compiled from.
    pub module: Module,
    /// The entry point, `{op}_{dtype}` for the built-in kernels.
    pub entry: String,
    /// Blocks per grid (x, y, z).
    pub grid: (u32, u32, u32),
    /// Threads per block (x, y, z).
    pub block: (u32, u32, u32),
    /// The arguments, one per parameter of the entry point.
    pub args: Vec<Arg>,
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// A kernel launch.
    Launch(Launch),
    /// `out` (m×n) = `a` (m×k) · `b` (k×n), or `out` += `a` · `b` with `acc`, row-major
    /// (cuBLAS on a GPU).
    Gemm {
        /// The element type (f32 or f64: there is no integer GEMM).
        dtype: DType,
        /// Rows of `a` and `out`.
        m: u64,
        /// Columns of `a`, rows of `b`.
        k: u64,
        /// Columns of `b` and `out`.
        n: u64,
        /// The left matrix.
        a: Buf,
        /// The right matrix.
        b: Buf,
        /// Where the product goes (overwritten, or added to with `acc`).
        out: Buf,
        /// Add the product to `out` instead of overwriting it.
        acc: bool,
    },
    /// `len` bytes from one buffer to another.
    Copy {
        /// The source; its first `len` bytes are read.
        from: Buf,
        /// The destination; its first `len` bytes are overwritten (never an input).
        to: Buf,
        /// Bytes copied.
        len: u64,
    },
}

/// An op as device work: inputs, temporaries, the output chunk and the steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The inputs, [`Buf::In`] by index.
    pub inputs: Vec<Input>,
    /// Sizes of the temporaries, in bytes ([`Buf::Tmp`] by index).
    pub temps: Vec<u64>,
    /// The output chunk's dtype.
    pub dtype: DType,
    /// The output chunk's shape.
    pub shape: Vec<u64>,
    /// What runs, in order, on one stream.
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

    /// Bytes the plan needs on a device while it runs: its inputs not already there
    /// (`resident` says which are), its temporaries and its output.
    pub fn device_bytes(&self, resident: impl Fn(&Input) -> bool) -> u64 {
        let inputs: u64 = self
            .inputs
            .iter()
            .filter(|i| !resident(i))
            .map(|i| i.len() as u64)
            .sum();
        inputs + self.temps.iter().sum::<u64>() + self.out_len()
    }

    /// What the plan runs, for messages: its kernels' entry points and GEMMs, in order
    /// (`kernel add_f32, cuBLAS GEMM`).
    pub fn kernels(&self) -> String {
        let mut names: Vec<String> = Vec::new();
        for s in &self.steps {
            let n = match s {
                Step::Launch(l) => format!("kernel {}", l.entry),
                Step::Gemm { .. } => "cuBLAS GEMM".to_string(),
                Step::Copy { .. } => continue,
            };
            if !names.contains(&n) {
                names.push(n);
            }
        }
        if names.is_empty() {
            "copies".into()
        } else {
            names.join(", ")
        }
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

/// The kernel file that defines an entry point of `cuda/`.
pub fn file_of(entry: &str) -> &'static str {
    let op = entry.rsplit_once('_').map_or(entry, |(op, _)| op);
    match op {
        "fill" | "arange" => "fill.cu",
        "random_uniform" | "random_normal" => "random.cu",
        "sum" | "amax" | "amin" | "argmax" | "sum_axis" | "amax_axis" | "amin_axis"
        | "sum_rows" | "amax_rows" | "amin_rows" => "reduce.cu",
        "transpose" => "transpose.cu",
        _ => "elementwise.cu",
    }
}

/// The entry-point suffix of `dtype` (`add_f32`), if the kernels have it.
fn suffix(dtype: DType) -> Option<&'static str> {
    match dtype {
        DType::F32 => Some("f32"),
        DType::F64 => Some("f64"),
        DType::I32 => Some("i32"),
        DType::I64 => Some("i64"),
        _ => None,
    }
}

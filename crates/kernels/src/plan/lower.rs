//! Lowering: a typed op ([`ArrayOp`]) to a [`Plan`] of launches and GEMMs, one function
//! per op; `None` where the kernels do not cover the op's dtype, shapes or rank (the op
//! then runs on the CPU). Also the plan of a user's kernel ([`custom`]), by its calling
//! convention.

use bytes::Bytes;
use rask_proto::{DType, Value};

use super::op::{ArrayOp, BinaryOp, ChunkArg, Operand, Random};
use super::*;
use crate::chunk::expr::{ExprStep, Program};
use crate::chunk::float;
use crate::cpu::{Binary, Reduce};

/// The device plan of `op` on `args`, or `None` when the op has none (it then runs on the
/// CPU). Malformed arguments also give `None`: the CPU implementation reports them.
pub fn plan(op: &str, args: &[Value]) -> Option<Plan> {
    lower(ArrayOp::parse(op, args)?)
}

/// The device plan of a parsed op, if the kernels cover it.
pub fn lower(op: ArrayOp) -> Option<Plan> {
    match op {
        ArrayOp::Full {
            dtype,
            shape,
            value,
        } => full(dtype, shape, value),
        ArrayOp::Arange {
            dtype,
            start,
            step,
            n,
        } => arange(dtype, start, step, n),
        ArrayOp::Random(r) => random(r),
        ArrayOp::Binary { op, x, y } => binary(op, x, y),
        ArrayOp::Combine { op, chunks } => combine(op, chunks),
        ArrayOp::Transpose { x } => transpose(x),
        ArrayOp::Matmul { terms, nt } => {
            let terms = terms.into_iter().map(|(x, y)| (x, Some(y))).collect();
            matmul(terms, nt)
        }
        ArrayOp::Syrk { xs } => matmul(xs.into_iter().map(|x| (x, None)).collect(), true),
        ArrayOp::Reduce { op, axis, x } => reduce(op, axis, x),
        ArrayOp::Expr { program, inputs } => expr(program, inputs),
    }
}

fn full(dtype: DType, shape: Vec<u64>, value: f64) -> Option<Plan> {
    let mut p = Plan::new(dtype, shape);
    let n = p.shape.iter().product();
    let entry = format!("fill_{}", suffix(dtype)?);
    let value = Arg::scalar(dtype, value);
    p.elementwise(entry, n, vec![Arg::Buf(Buf::Out), Arg::U64(n), value]);
    Some(p)
}

fn arange(dtype: DType, start: f64, step: f64, n: u64) -> Option<Plan> {
    let mut p = Plan::new(dtype, vec![n]);
    let entry = format!("arange_{}", suffix(dtype)?);
    let args = vec![
        Arg::Buf(Buf::Out),
        Arg::U64(n),
        Arg::scalar(dtype, start),
        Arg::scalar(dtype, step),
    ];
    p.elementwise(entry, n, args);
    Some(p)
}

fn random(r: Random) -> Option<Plan> {
    let Random {
        normal,
        dtype,
        seed,
        global,
        origin,
        shape,
        p0,
        p1,
    } = r;
    if !matches!(dtype, DType::F32 | DType::F64) {
        return None;
    }
    // Rows of a chunk of rank ≤ 2 start at evenly spaced global indices; higher ranks run
    // on the CPU.
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
    let kind = if normal {
        "random_normal"
    } else {
        "random_uniform"
    };
    let mut p = Plan::new(dtype, shape);
    let n = p.shape.iter().product();
    let args = vec![
        Arg::Buf(Buf::Out),
        Arg::U64(n),
        Arg::U64(cols),
        Arg::U64(seed),
        Arg::U64(offset),
        Arg::U64(row_stride),
        Arg::scalar(dtype, p0),
        Arg::scalar(dtype, p1),
    ];
    p.elementwise(format!("{kind}_{}", suffix(dtype)?), n, args);
    Some(p)
}

fn binary(op: BinaryOp, x: ChunkArg, y: Operand) -> Option<Plan> {
    let s = suffix(x.dtype)?;
    let is_float = matches!(x.dtype, DType::F32 | DType::F64);
    if op.float_only() && !is_float {
        return None;
    }
    let mut p = Plan::new(x.dtype, x.shape.clone());
    let n = p.shape.iter().product();
    let a = p.input(x.data);
    let (b, b_scalar) = match y {
        Operand::Scalar(v) => (p.input(scalar_bytes(x.dtype, v)), 1),
        Operand::Chunk(y) => {
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
    p.elementwise(format!("{}_{s}", op.name()), n, args);
    Some(p)
}

fn combine(op: Binary, chunks: Vec<ChunkArg>) -> Option<Plan> {
    let first = chunks.first()?;
    if chunks
        .iter()
        .any(|c| c.dtype != first.dtype || c.shape != first.shape)
    {
        return None;
    }
    let s = suffix(first.dtype)?;
    let mut p = Plan::new(first.dtype, first.shape.clone());
    let n: u64 = p.shape.iter().product();
    let bufs: Vec<Buf> = chunks.into_iter().map(|c| p.input(c.data)).collect();
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
        p.elementwise(format!("{}_{s}", op.name()), n, args);
        acc = Buf::Out;
    }
    Some(p)
}

fn transpose(x: ChunkArg) -> Option<Plan> {
    let [rows, cols] = x.shape[..] else {
        return None;
    };
    let tiles = |d: u64| d.div_ceil(TILE as u64);
    // gridDim.y is at most 65535.
    if tiles(rows) > 65_535 || tiles(cols) > i32::MAX as u64 {
        return None;
    }
    let mut p = Plan::new(x.dtype, vec![cols, rows]);
    let s = suffix(x.dtype)?;
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

/// Σⱼ xⱼ · yⱼ, or Σⱼ xⱼ · yⱼᵀ (`nt`): the first product into the output, each next one
/// added to it by the GEMM (cuBLAS's beta 1). A y that is none is x itself (x · xᵀ, one
/// input).
fn matmul(terms: Vec<(ChunkArg, Option<ChunkArg>)>, nt: bool) -> Option<Plan> {
    let (x0, y0) = terms.first()?;
    let (m, n) = product_shape(x0, y0.as_ref().unwrap_or(x0), nt)?;
    let dtype = x0.dtype;
    let mut p = Plan::new(dtype, vec![m, n]);
    // The transposed right operands of `nt`, one temporary per size, reused.
    let mut transposed: Vec<(u64, Buf)> = Vec::new();
    for (j, (x, y)) in terms.into_iter().enumerate() {
        product(&mut p, x, y, nt, j > 0, &mut transposed)?;
    }
    Some(p)
}

/// The shape (m, n) of x · y (x · yᵀ with `nt`), if the kernels cover it: 2-d floats of
/// one dtype, inner extents equal, dimensions within cuBLAS's.
fn product_shape(x: &ChunkArg, y: &ChunkArg, nt: bool) -> Option<(u64, u64)> {
    let (&[m, k], &[r, c]) = (&x.shape[..], &y.shape[..]) else {
        return None;
    };
    let (k2, n) = if nt { (c, r) } else { (r, c) };
    // cuBLAS takes 32-bit dimensions.
    let fits = [m, k, n].iter().all(|&d| d <= i32::MAX as u64);
    let float = matches!(x.dtype, DType::F32 | DType::F64);
    (k == k2 && x.dtype == y.dtype && fits && float).then_some((m, n))
}

/// Adds the steps computing x · y (x · yᵀ with `nt`; y none: x itself) into the output,
/// or adding it there with `acc`; `None` when the product is not of the plan's dtype and
/// shape. With `nt`, y (n×k) is first transposed into a temporary
/// (`transposed` keeps one per size), the same `transpose_*` launch as `array.transpose`.
fn product(
    p: &mut Plan,
    x: ChunkArg,
    y: Option<ChunkArg>,
    nt: bool,
    acc: bool,
    transposed: &mut Vec<(u64, Buf)>,
) -> Option<()> {
    let same = y.is_none();
    let y = y.unwrap_or_else(|| x.clone());
    let (m, n) = product_shape(&x, &y, nt)?;
    if x.dtype != p.dtype || p.shape != [m, n] {
        return None;
    }
    let (k, [r, c]) = (x.shape[1], [y.shape[0], y.shape[1]]);
    let a = p.input(x.data);
    let mut b = if same { a } else { p.input(y.data) };
    if nt && m * n * k > 0 {
        let tiles = |d: u64| d.div_ceil(TILE as u64);
        if tiles(r) > 65_535 || tiles(c) > i32::MAX as u64 {
            return None;
        }
        let bytes = k * n * x.dtype.size();
        let t = match transposed.iter().find(|(size, _)| *size == bytes) {
            Some((_, t)) => *t,
            None => {
                let t = p.temp(bytes);
                transposed.push((bytes, t));
                t
            }
        };
        p.steps.push(Step::Launch(Launch {
            module: Module::Builtin("transpose.cu"),
            entry: format!("transpose_{}", suffix(x.dtype)?),
            grid: (tiles(c) as u32, tiles(r) as u32, 1),
            block: (TILE, TILE_ROWS, 1),
            args: vec![Arg::Buf(b), Arg::Buf(t), Arg::U64(r), Arg::U64(c)],
        }));
        b = t;
    }
    if m * n > 0 {
        if k > 0 {
            p.steps.push(Step::Gemm {
                dtype: x.dtype,
                m,
                k,
                n,
                a,
                b,
                out: Buf::Out,
                acc,
            });
        } else if !acc {
            // An empty inner extent: a product of zeros (added, it changes nothing).
            p.elementwise(
                format!("fill_{}", suffix(x.dtype)?),
                m * n,
                vec![
                    Arg::Buf(Buf::Out),
                    Arg::U64(m * n),
                    Arg::scalar(x.dtype, 0.0),
                ],
            );
        }
    }
    Some(())
}

/// A chain of elementwise ops: a launch per op (the elementwise kernels of
/// `array.binary`), each writing the buffer of its stack level — the output for the
/// bottom one, a temporary made when first needed for each above it — in place when its
/// left operand is there (elementwise, so safe).
fn expr(program: Program, inputs: Vec<ChunkArg>) -> Option<Plan> {
    let first = inputs.first()?;
    let (dtype, shape) = (first.dtype, first.shape.clone());
    let float = matches!(dtype, DType::F32 | DType::F64);
    let fits = inputs.iter().all(|c| c.dtype == dtype && c.shape == shape);
    if !fits || program.inputs > inputs.len() || (program.float_only() && !float) {
        return None;
    }
    let s = suffix(dtype)?;
    let mut p = Plan::new(dtype, shape);
    let n: u64 = p.shape.iter().product();
    let bufs: Vec<Buf> = inputs.into_iter().map(|c| p.input(c.data)).collect();
    let mut temps: Vec<Option<Buf>> = vec![None; program.depth];
    let mut stack: Vec<Buf> = Vec::with_capacity(program.depth);
    for step in program.steps {
        let (op, b, b_scalar) = match step {
            ExprStep::Input(k) => {
                stack.push(bufs[k]);
                continue;
            }
            ExprStep::Op(op) => (op, stack.pop()?, 0),
            ExprStep::Scalar(op, v) => (op, p.input(scalar_bytes(dtype, v)), 1),
        };
        let a = stack.pop()?;
        let out = match stack.len() {
            0 => Buf::Out,
            level => *temps[level].get_or_insert_with(|| p.temp(n * dtype.size())),
        };
        let args = vec![
            Arg::Buf(a),
            Arg::Buf(b),
            Arg::Buf(out),
            Arg::U64(n),
            Arg::I32(0),
            Arg::I32(b_scalar),
        ];
        p.elementwise(format!("{}_{s}", op.name()), n, args);
        stack.push(out);
    }
    // A program that is one input: a copy of it.
    let top = stack.pop()?;
    if top != Buf::Out {
        let len = p.out_len();
        p.steps.push(Step::Copy {
            from: top,
            to: Buf::Out,
            len,
        });
    }
    Some(p)
}

/// Most blocks of a launch reducing rows (a grid-stride loop covers more rows).
const ROW_BLOCKS: u64 = 65_535;

fn reduce(op: Reduce, axis: Option<usize>, x: ChunkArg) -> Option<Plan> {
    let s = suffix(x.dtype)?;
    let kernel = match op {
        Reduce::Sum => "sum",
        Reduce::Max => "amax",
        Reduce::Min => "amin",
    };
    if let Some(ax) = axis {
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
        if inner == 1 && outer > 0 && len > 0 {
            // Along the last axis: a block per row, its threads reading side by side.
            let args = vec![
                Arg::Buf(a),
                Arg::Buf(Buf::Out),
                Arg::U64(outer),
                Arg::U64(len),
            ];
            let blocks = outer.min(ROW_BLOCKS) as u32;
            p.launch(format!("{kernel}_rows_{s}"), (blocks, 1, 1), THREADS, args);
            return Some(p);
        }
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

/// The plan of a user's kernel, by the calling convention of custom kernels:
/// `entry(inputs…, out, n, scalars…)`, every chunk argument an input (in order), the output
/// shaped like the first, numbers passed as its dtype.
pub fn custom(source: &str, entry: &str, args: &[Value]) -> Option<Plan> {
    let mut chunks = Vec::new();
    let mut scalars = Vec::new();
    for a in args {
        match a {
            Value::Float(_) | Value::Int(_) => scalars.push(float(a).ok()?),
            v => chunks.push(ChunkArg::parse(v)?),
        }
    }
    let first = chunks.first()?;
    let dtype = first.dtype;
    suffix(dtype)?;
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

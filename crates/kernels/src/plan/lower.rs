//! Lowering: an op and its arguments to a [`Plan`] of launches and GEMMs.

use bytes::Bytes;
use rask_proto::{DType, Value};

use super::*;
use crate::chunk::{chunk_parts, float, int_list};
use crate::cpu::{Binary, Reduce};

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

/// The device plan of `op` on `args`, or `None` when the op has none (it then runs on the
/// CPU). Malformed arguments also give `None`: the CPU implementation reports them.
pub fn plan(op: &str, args: &[Value]) -> Option<Plan> {
    match (op, args) {
        ("array.full", [Value::Str(dt), shape, value]) => {
            let dtype: DType = dt.parse().ok()?;
            let mut p = Plan::new(dtype, int_list(shape, "shape").ok()?);
            let n = p.shape.iter().product();
            let entry = format!("fill_{}", suffix(dtype)?);
            let value = Arg::scalar(dtype, float(value).ok()?);
            p.elementwise(entry, n, vec![Arg::Buf(Buf::Out), Arg::U64(n), value]);
            Some(p)
        }
        ("array.arange", [Value::Str(dt), start, step, Value::Int(n)]) => {
            let dtype: DType = dt.parse().ok()?;
            let n = (*n).max(0) as u64;
            let mut p = Plan::new(dtype, vec![n]);
            let entry = format!("arange_{}", suffix(dtype)?);
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
            p.elementwise(format!("{kind}_{}", suffix(dtype)?), n, args);
            Some(p)
        }
        ("array.binary", [Value::Str(name), x, y]) => {
            let x = chunk(x)?;
            let s = suffix(x.dtype)?;
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
            let s = suffix(first.dtype)?;
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
                        format!("fill_{}", suffix(x.dtype)?),
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
            let s = suffix(x.dtype)?;
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

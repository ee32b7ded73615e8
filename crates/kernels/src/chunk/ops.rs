//! The `array.*` ops on chunks in host memory, by element type: what the registered ops
//! (`register`) run once their arguments are parsed.

use std::borrow::Cow;

use rask_proto::{DType, Value};

use super::{float, int_list, make, Chunk, Pod};
use crate::cpu::{self, Binary, Elem, Float};
use crate::OpError;

/// Elements of a chunk with row-major global positions: element (r, c, …) of the chunk at
/// `origin` in an array of `global` shape has linear index Σ (origin + r) · stride.
pub(super) fn global_index(global: &[u64], origin: &[u64], local: &[u64], mut i: u64) -> u64 {
    let mut idx = 0;
    let mut stride = 1;
    for d in (0..global.len()).rev() {
        let pos = i % local[d];
        i /= local[d];
        idx += (origin[d] + pos) * stride;
        stride *= global[d];
    }
    idx
}

pub(super) fn random<T: Pod + Float>(normal: bool, a: &[Value]) -> Result<Chunk, OpError> {
    let [_, seed, global, origin, shape, p0, p1] = a else {
        return Err(OpError::Args(
            "random: (dtype, seed, global shape, origin, shape, p0, p1)",
        ));
    };
    let seed = match seed {
        Value::Int(s) => *s as u64,
        _ => return Err(OpError::Args("random: the seed is an integer")),
    };
    let (global, origin, shape) = (
        int_list(global, "global shape")?,
        int_list(origin, "origin")?,
        int_list(shape, "shape")?,
    );
    if global.len() != shape.len() || origin.len() != shape.len() {
        return Err(OpError::Args("random: ranks differ"));
    }
    let (p0, p1) = (float(p0)?, float(p1)?);
    // Rows along the last dimension are contiguous in the global order: each is one run
    // of the generator.
    let cols = shape.last().copied().unwrap_or(1).max(1) as usize;
    Ok(make::<T>(shape.clone(), |out| {
        for (r, row) in out.chunks_mut(cols).enumerate() {
            let start = if shape.is_empty() {
                0
            } else {
                global_index(&global, &origin, &shape, (r * cols) as u64)
            };
            if normal {
                cpu::random_normal(row, seed, start, p0, p1);
            } else {
                cpu::random_uniform(row, seed, start, p0, p1);
            }
        }
    }))
}

pub(super) fn arange_chunk<T: Pod>(n: u64, start: f64, step: f64) -> Result<Chunk, OpError> {
    Ok(make::<T>(vec![n], |out| {
        for (i, o) in out.iter_mut().enumerate() {
            *o = T::from_f64(start + step * i as f64);
        }
    }))
}

pub(super) type Piece = (Chunk, Vec<u64>, Vec<u64>, Vec<u64>);

/// A chunk of `shape` made of blocks of other chunks: each piece copies `extent` elements
/// from `src start` in its chunk to `dst start` in the result. Every element of the
/// result must be covered.
pub(super) fn assemble<T: Pod>(shape: Vec<u64>, parts: &[Piece]) -> Result<Chunk, OpError> {
    let rank = shape.len();
    let mut covered = 0u64;
    for (c, s, d, e) in parts {
        if c.dtype != T::DTYPE {
            return Err(OpError::Args("assemble: mixed dtypes"));
        }
        if c.shape.len() != rank || s.len() != rank || d.len() != rank || e.len() != rank {
            return Err(OpError::Args("assemble: ranks differ"));
        }
        for k in 0..rank {
            if s[k] + e[k] > c.shape[k] || d[k] + e[k] > shape[k] {
                return Err(OpError::OutOfBounds(k));
            }
        }
        covered += e.iter().product::<u64>();
    }
    if covered != shape.iter().product::<u64>() {
        return Err(OpError::Args("assemble: the pieces do not cover the chunk"));
    }
    let strides = |dims: &[u64]| {
        let mut st = vec![1u64; dims.len()];
        for k in (0..dims.len().saturating_sub(1)).rev() {
            st[k] = st[k + 1] * dims[k + 1];
        }
        st
    };
    let dst_strides = strides(&shape);
    let mut views = Vec::new();
    for (c, ..) in parts {
        views.push(c.elems::<T>()?);
    }
    Ok(make::<T>(shape.clone(), |out| {
        for ((c, s, d, e), src) in parts.iter().zip(&views) {
            let src_strides = strides(&c.shape);
            let row = e.last().copied().unwrap_or(1) as usize;
            let rows: u64 = e[..rank.saturating_sub(1)].iter().product();
            for r in 0..rows {
                // The multi-index of this row within the block (all but the last dim).
                let mut rem = r;
                let (mut si, mut di) = (0u64, 0u64);
                for k in (0..rank.saturating_sub(1)).rev() {
                    let pos = rem % e[k];
                    rem /= e[k];
                    si += (s[k] + pos) * src_strides[k];
                    di += (d[k] + pos) * dst_strides[k];
                }
                if rank > 0 {
                    si += s[rank - 1];
                    di += d[rank - 1];
                }
                let (si, di) = (si as usize, di as usize);
                out[di..di + row].copy_from_slice(&src[si..si + row]);
            }
        }
    }))
}

pub(super) fn full<T: Pod>(shape: Vec<u64>, value: f64) -> Result<Chunk, OpError> {
    Ok(make::<T>(shape, |out| cpu::fill(out, T::from_f64(value))))
}

pub(super) fn binary<T: Pod>(op: &str, a: &Chunk, b: Either) -> Result<Chunk, OpError> {
    let x = a.elems::<T>()?;
    let (y, scalar): (Cow<'_, [T]>, bool) = match &b {
        Either::Chunk(c) => {
            if c.shape != a.shape {
                return Err(OpError::Shapes(a.shape.clone(), c.shape.clone()));
            }
            (c.elems::<T>()?, false)
        }
        Either::Scalar(v) => (Cow::Owned(vec![T::from_f64(*v)]), true),
    };
    let op = match (Binary::parse(op), op) {
        (Some(op), _) => Ok(op),
        (None, "div" | "pow") => Err(op == "pow"),
        (None, other) => {
            return Err(OpError::UnknownName {
                kind: "elementwise op",
                name: other.into(),
            })
        }
    };
    if let (Err(pow), false) = (op, T::FLOAT) {
        let op = if pow { "pow" } else { "div" };
        return Err(OpError::FloatOnly {
            op,
            dtype: T::DTYPE,
        });
    }
    Ok(make::<T>(a.shape.clone(), |out| match op {
        Ok(op) => cpu::binary(op, &x, &y, out, false, scalar),
        Err(pow) => T::div_pow(pow, &x, &y, out, scalar),
    }))
}

pub(super) enum Either {
    Chunk(Chunk),
    Scalar(f64),
}

pub(super) fn transpose<T: Pod>(a: &Chunk) -> Result<Chunk, OpError> {
    let [rows, cols] = a.shape[..] else {
        return Err(OpError::Args("transpose of a 2-d chunk"));
    };
    let x = a.elems::<T>()?;
    Ok(make::<T>(vec![cols, rows], |out| {
        cpu::transpose(&x, out, rows as usize, cols as usize)
    }))
}

/// Σⱼ aⱼ · bⱼ, or Σⱼ aⱼ · bⱼᵀ (`nt`, each b given untransposed: the transpose is in the
/// GEMM's strides): the products accumulate in the one output, with no buffer per term.
/// Every product must have the same shape; the inner extents may differ.
pub(super) fn matmul<T: Pod>(pairs: &[(Chunk, Chunk)], nt: bool) -> Result<Chunk, OpError> {
    let mut shape = None;
    let mut terms = Vec::with_capacity(pairs.len());
    for (a, b) in pairs {
        let (&[m, k], &[r, c]) = (&a.shape[..], &b.shape[..]) else {
            return Err(OpError::Args("matmul of 2-d chunks"));
        };
        let (k2, n) = if nt { (c, r) } else { (r, c) };
        if k != k2 || shape.is_some_and(|s| s != (m, n)) {
            return Err(OpError::Matmul(a.shape.clone(), b.shape.clone()));
        }
        shape = Some((m, n));
        terms.push((k as usize, a.elems::<T>()?, b.elems::<T>()?));
    }
    let (m, n) = shape.ok_or(OpError::Args("matmul of at least one pair"))?;
    let (m, n) = (m as usize, n as usize);
    Ok(make::<T>(vec![m as u64, n as u64], |out| {
        for (j, (k, x, y)) in terms.iter().enumerate() {
            if nt {
                T::gemm_nt(m, *k, n, x, y, out, j > 0)
            } else {
                T::gemm(m, *k, n, x, y, out, j > 0)
            }
        }
    }))
}

/// Σⱼ aⱼ · aⱼᵀ, exactly symmetric (the upper triangle summed by [`Pod::syrk`], then
/// mirrored once); every aⱼ has the same rows.
pub(super) fn syrk<T: Pod>(chunks: &[Chunk]) -> Result<Chunk, OpError> {
    let mut rows = None;
    let mut terms = Vec::with_capacity(chunks.len());
    for a in chunks {
        let &[n, k] = &a.shape[..] else {
            return Err(OpError::Args("syrk of 2-d chunks"));
        };
        if rows.is_some_and(|r| r != n) {
            return Err(OpError::Matmul(chunks[0].shape.clone(), a.shape.clone()));
        }
        rows = Some(n);
        terms.push((k as usize, a.elems::<T>()?));
    }
    let n = rows.ok_or(OpError::Args("syrk of at least one chunk"))?;
    Ok(make::<T>(vec![n, n], |out| {
        for (j, (k, x)) in terms.iter().enumerate() {
            T::syrk(n as usize, *k, x, out, j > 0)
        }
        super::mirror_upper(n as usize, out);
    }))
}

/// `op` (sum, max, min) over the whole chunk (`axis` None) or along one axis. Floats
/// accumulate in f64 (whole sums pairwise; f32 is widened); integers in their own type
/// (sums wrap, as on a GPU).
pub(super) fn reduce<T: Pod>(op: &str, axis: Option<usize>, a: &Chunk) -> Result<Chunk, OpError> {
    let r = match op {
        "sum" | "max" | "min" => cpu::Reduce::parse(op).expect("a reduction"),
        other => {
            return Err(OpError::UnknownName {
                kind: "reduction",
                name: other.into(),
            })
        }
    };
    let x = a.elems::<T>()?;
    // The chunk as (outer, len, inner) around the axis; the whole chunk is one run.
    let (shape, len, inner) = match axis {
        None => (vec![], x.len(), 1),
        Some(ax) if ax < a.shape.len() => {
            let mut shape = a.shape.clone();
            shape.remove(ax);
            let inner = a.shape[ax + 1..].iter().product::<u64>() as usize;
            (shape, a.shape[ax] as usize, inner)
        }
        Some(ax) => {
            return Err(OpError::Axis {
                axis: ax,
                rank: a.shape.len(),
            })
        }
    };
    fn fold<E: Elem>(
        r: cpu::Reduce,
        whole: bool,
        x: &[E],
        out: &mut [E],
        len: usize,
        inner: usize,
    ) {
        if whole && r == cpu::Reduce::Sum {
            out[0] = cpu::sum(x);
        } else {
            cpu::reduce_axis(r, x, out, len, inner);
        }
    }
    let whole = axis.is_none();
    // Integers and f64 accumulate in their own type; only f32 is widened and narrowed back.
    if !T::FLOAT || T::DTYPE == DType::F64 {
        return Ok(make::<T>(shape, |out| fold(r, whole, &x, out, len, inner)));
    }
    if whole && r == cpu::Reduce::Sum {
        // f32 whole sums: f64 lanes, without a widened copy.
        let f = cpu::cast::<f32>(cpu::as_bytes(&x)).expect("invariant: f32 elements");
        let total = cpu::sum_f32_wide(f);
        return Ok(make::<T>(vec![], |out| out[0] = T::from_f64(total)));
    }
    let wide: Vec<f64> = x.iter().map(|v| v.to_f64()).collect();
    let n: u64 = shape.iter().product();
    let mut acc = vec![0.0; n as usize];
    fold(r, whole, &wide, &mut acc, len, inner);
    Ok(make::<T>(shape, |out| {
        for (o, v) in out.iter_mut().zip(&acc) {
            *o = T::from_f64(*v);
        }
    }))
}

/// Elementwise `op` (add, max, min) of chunks of one shape.
pub(super) fn combine<T: Pod>(op: &str, chunks: &[Chunk]) -> Result<Chunk, OpError> {
    let first = chunks.first().ok_or(OpError::Args("combine of nothing"))?;
    let op = match Binary::parse(op) {
        Some(op @ (Binary::Add | Binary::Max | Binary::Min)) => op,
        _ => {
            return Err(OpError::UnknownName {
                kind: "combination",
                name: op.into(),
            })
        }
    };
    let mut views = vec![first.elems::<T>()?];
    for c in &chunks[1..] {
        if c.shape != first.shape {
            return Err(OpError::Shapes(first.shape.clone(), c.shape.clone()));
        }
        views.push(c.elems::<T>()?);
    }
    // out = c0, then out = out op ci in place, in order.
    Ok(make::<T>(first.shape.clone(), |out| {
        out.copy_from_slice(&views[0]);
        for y in &views[1..] {
            for (o, &v) in out.iter_mut().zip(y.iter()) {
                *o = op.apply(*o, v);
            }
        }
    }))
}

/// A chunk's largest element and its global index: `[0-d chunk, index]` (`[null, null]`
/// for an empty chunk).
pub(super) fn argmax_chunk<T: Pod>(
    a: &Chunk,
    global: &[u64],
    origin: &[u64],
) -> Result<Value, OpError> {
    let x = a.elems::<T>()?;
    let Some(i) = cpu::argmax(&x) else {
        return Ok(Value::List(vec![Value::Null, Value::Null]));
    };
    if global.len() != a.shape.len() || origin.len() != a.shape.len() {
        return Err(OpError::Args("argmax: ranks differ"));
    }
    let at = global_index(global, origin, &a.shape, i as u64);
    let v = x[i];
    let value = make::<T>(vec![], |o| o[0] = v);
    Ok(Value::List(vec![value.to_value(), Value::Int(at as i64)]))
}

/// The pair with the larger value (the smaller index on ties).
pub(super) fn argmax_pick<T: Pod>(pairs: &[(Chunk, i64)]) -> Result<usize, OpError> {
    let mut best: Option<(T, i64, usize)> = None;
    for (n, (c, at)) in pairs.iter().enumerate() {
        let v = c.elems::<T>()?[0];
        let better = match best {
            None => true,
            Some((b, bi, _)) => v > b || (v == b && *at < bi),
        };
        if better {
            best = Some((v, *at, n));
        }
    }
    best.map(|(_, _, n)| n)
        .ok_or(OpError::Args("argmax of nothing"))
}

pub(super) fn argmax_pairs(args: &[Value]) -> Result<Vec<(Chunk, i64)>, OpError> {
    let mut pairs = Vec::new();
    for a in args {
        match a {
            Value::List(p) => match &p[..] {
                [Value::Null, Value::Null] => {}
                [c, Value::Int(at)] => pairs.push((Chunk::from_value(c)?, *at)),
                _ => return Err(OpError::Args("argmax: expected [value, index] pairs")),
            },
            _ => return Err(OpError::Args("argmax: expected [value, index] pairs")),
        }
    }
    Ok(pairs)
}

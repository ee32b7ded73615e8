//! The `array.*` ops: chunks of blocked arrays, computed by the CPU twins (and GEMM by
//! `matrixmultiply`). A chunk travels as the value `[dtype, shape, bytes]`, the bytes
//! little-endian and row-major.

use std::borrow::Cow;

use bytes::Bytes;
use rask_proto::{DType, Value};

use crate::cpu::{self, Binary, Elem, Float};
use crate::Registry;

/// One chunk of an array.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub data: Bytes,
}

/// A chunk value, `[dtype, shape, data]`: `data` is the bytes, in host memory
/// (`Value::Bytes`) or in a device's (`Value::Device`).
pub fn chunk_value(dtype: DType, shape: &[u64], data: Value) -> Value {
    Value::List(vec![
        Value::Str(dtype.name().into()),
        Value::List(shape.iter().map(|&d| Value::Int(d as i64)).collect()),
        data,
    ])
}

/// The dtype, shape and bytes (host or device) of a chunk value, the length checked.
pub fn chunk_parts(v: &Value) -> Result<(DType, Vec<u64>, &Value), String> {
    let Value::List(parts) = v else {
        return Err(format!("not an array chunk: {}", v.type_name()));
    };
    let bad = || "not an array chunk: expected [dtype, shape, bytes]".to_string();
    let [Value::Str(dtype), Value::List(shape), data] = parts.as_slice() else {
        return Err(bad());
    };
    let len = match data {
        Value::Bytes(b) => b.len(),
        Value::Device(d) => d.len(),
        _ => return Err(bad()),
    };
    let dtype: DType = dtype.parse()?;
    let shape = shape
        .iter()
        .map(|d| match d {
            Value::Int(n) if *n >= 0 => Ok(*n as u64),
            _ => Err("bad chunk shape".to_string()),
        })
        .collect::<Result<Vec<u64>, String>>()?;
    let n: u64 = shape.iter().product();
    if n.checked_mul(dtype.size()) != Some(len as u64) {
        return Err(format!(
            "chunk of shape {shape:?} and dtype {dtype} has {len} bytes"
        ));
    }
    Ok((dtype, shape, data))
}

impl Chunk {
    pub fn to_value(&self) -> Value {
        chunk_value(self.dtype, &self.shape, Value::Bytes(self.data.clone()))
    }

    /// A chunk in host memory (ops on the CPU get their arguments there, see
    /// [`crate::Registry::call_on`]).
    pub fn from_value(v: &Value) -> Result<Chunk, String> {
        let (dtype, shape, data) = chunk_parts(v)?;
        match data {
            Value::Device(d) => Err(format!(
                "the chunk's bytes are in {}'s memory, not the host's",
                d.label()
            )),
            Value::Bytes(data) => Ok(Chunk {
                dtype,
                shape,
                data: data.clone(),
            }),
            _ => Err("not an array chunk".into()),
        }
    }

    /// A chunk of the given elements (row-major), e.g. the output of a custom op.
    pub fn from_elems<T: Pod>(shape: Vec<u64>, elems: &[T]) -> Result<Chunk, String> {
        if shape.iter().product::<u64>() != elems.len() as u64 {
            return Err(format!("{} elements for shape {shape:?}", elems.len()));
        }
        Ok(make::<T>(shape, |out| out.copy_from_slice(elems)))
    }

    /// The elements, borrowed when the bytes are aligned for `T`.
    pub fn elems<T: Pod>(&self) -> Result<Cow<'_, [T]>, String> {
        if self.dtype != T::DTYPE {
            return Err(format!("expected {} data, got {}", T::DTYPE, self.dtype));
        }
        Ok(view(&self.data))
    }
}

/// The element types of array chunks: f32, f64, i32, i64, each with its [`DType`].
///
/// Sealed like [`Elem`] (its supertrait): a chunk's dtype names one of these types, so no
/// other type can be one:
///
/// ```compile_fail
/// use rask_kernels::array::Pod;
/// use rask_kernels::cpu::Elem;
///
/// #[derive(Clone, Copy, Default, PartialEq, PartialOrd)]
/// struct Meters(f64);
///
/// impl Elem for Meters {
///     const NAME: &'static str = "meters";
///     const LOWEST: Self = Meters(f64::NEG_INFINITY);
///     const HIGHEST: Self = Meters(f64::INFINITY);
///     fn zero() -> Self { Meters(0.0) }
///     fn from_f64(v: f64) -> Self { Meters(v) }
///     fn to_f64(self) -> f64 { self.0 }
///     fn add(self, o: Self) -> Self { Meters(self.0 + o.0) }
///     fn sub(self, o: Self) -> Self { Meters(self.0 - o.0) }
///     fn mul(self, o: Self) -> Self { Meters(self.0 * o.0) }
///     fn neg(self) -> Self { Meters(-self.0) }
/// }
///
/// impl Pod for Meters {
///     const DTYPE: rask_proto::DType = rask_proto::DType::F64;
///     const FLOAT: bool = true;
///     fn gemm(_: usize, _: usize, _: usize, _: &[Self], _: &[Self], _: &mut [Self]) {}
///     fn div_pow(_: bool, _: &[Self], _: &[Self], _: &mut [Self], _: bool) {}
/// }
/// ```
///
/// # Safety
///
/// Chunk bytes are viewed as slices of `Self` and slices of `Self` as bytes: besides
/// [`Elem`]'s guarantees, `Self` has the size and alignment of `DTYPE`'s elements.
pub unsafe trait Pod: Elem + Default {
    const DTYPE: DType;
    /// Floating point (reductions accumulate in f64; `div`, `pow` and random values exist).
    const FLOAT: bool;
    /// out (m×n) = a (m×k) · b (k×n), all row-major and contiguous.
    fn gemm(m: usize, k: usize, n: usize, a: &[Self], b: &[Self], out: &mut [Self]);
    /// `div` or `pow`; only called for floats (`FLOAT`).
    fn div_pow(pow: bool, a: &[Self], b: &[Self], out: &mut [Self], b_scalar: bool);
}

macro_rules! pod {
    ($t:ty, $dt:expr, $gemm:path) => {
        const _: () = assert!(std::mem::size_of::<$t>() as u64 == $dt.size());
        // SAFETY: a primitive float (see its `Elem` impl) whose dtype has its size.
        unsafe impl Pod for $t {
            const DTYPE: DType = $dt;
            const FLOAT: bool = true;
            fn div_pow(pow: bool, a: &[Self], b: &[Self], out: &mut [Self], b_scalar: bool) {
                cpu::binary_float(pow, a, b, out, false, b_scalar);
            }
            fn gemm(m: usize, k: usize, n: usize, a: &[Self], b: &[Self], out: &mut [Self]) {
                assert!(a.len() >= m * k && b.len() >= k * n && out.len() >= m * n);
                // SAFETY: row-major buffers at least as large as the shapes (checked).
                unsafe {
                    $gemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        k as isize,
                        1,
                        b.as_ptr(),
                        n as isize,
                        1,
                        0.0,
                        out.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                }
            }
        }
    };
}

pod!(f32, DType::F32, matrixmultiply::sgemm);
pod!(f64, DType::F64, matrixmultiply::dgemm);

macro_rules! pod_int {
    ($t:ty, $dt:expr) => {
        const _: () = assert!(std::mem::size_of::<$t>() as u64 == $dt.size());
        // SAFETY: a primitive integer (see its `Elem` impl) whose dtype has its size.
        unsafe impl Pod for $t {
            const DTYPE: DType = $dt;
            const FLOAT: bool = false;
            fn div_pow(_: bool, _: &[Self], _: &[Self], _: &mut [Self], _: bool) {
                unreachable!("div and pow of integers are refused before they run")
            }
            /// Exact (wrapping) integer products, row by row.
            fn gemm(m: usize, k: usize, n: usize, a: &[Self], b: &[Self], out: &mut [Self]) {
                for i in 0..m {
                    let row = &mut out[i * n..(i + 1) * n];
                    row.fill(0);
                    for p in 0..k {
                        let x = a[i * k + p];
                        for (o, &y) in row.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                            *o = o.wrapping_add(x.wrapping_mul(y));
                        }
                    }
                }
            }
        }
    };
}

pod_int!(i32, DType::I32);
pod_int!(i64, DType::I64);

fn view<T: Pod>(b: &[u8]) -> Cow<'_, [T]> {
    let n = b.len() / std::mem::size_of::<T>();
    if b.as_ptr().align_offset(std::mem::align_of::<T>()) == 0 {
        // SAFETY: aligned, in bounds, and every bit pattern is a valid T (`Pod`).
        Cow::Borrowed(unsafe { std::slice::from_raw_parts(b.as_ptr().cast(), n) })
    } else {
        Cow::Owned(
            b.chunks_exact(std::mem::size_of::<T>())
                .map(|c| {
                    let mut v = T::default();
                    // SAFETY: v is size_of::<T>() bytes; c is as long.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            c.as_ptr(),
                            (&mut v as *mut T).cast::<u8>(),
                            c.len(),
                        )
                    };
                    v
                })
                .collect(),
        )
    }
}

/// A chunk of `n` elements of `T` written by `f` (into the worker's output memory).
fn make<T: Pod>(shape: Vec<u64>, f: impl FnOnce(&mut [T])) -> Chunk {
    let n: u64 = shape.iter().product();
    let size = std::mem::size_of::<T>();
    let data = crate::output_bytes(n as usize * size, |buf| {
        if buf.as_ptr().align_offset(std::mem::align_of::<T>()) == 0 {
            // SAFETY: aligned, in bounds, every bit pattern valid; exclusive borrow.
            let typed =
                unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<T>(), n as usize) };
            f(typed);
        } else {
            let mut tmp = vec![T::default(); n as usize];
            f(&mut tmp);
            // SAFETY: tmp's bytes, exactly buf.len() of them.
            let bytes = unsafe { std::slice::from_raw_parts(tmp.as_ptr().cast::<u8>(), buf.len()) };
            buf.copy_from_slice(bytes);
        }
    });
    Chunk {
        dtype: T::DTYPE,
        shape,
        data,
    }
}

pub(crate) fn int_list(v: &Value, what: &str) -> Result<Vec<u64>, String> {
    match v {
        Value::List(l) => l
            .iter()
            .map(|x| match x {
                Value::Int(n) if *n >= 0 => Ok(*n as u64),
                _ => Err(format!("{what}: expected non-negative integers")),
            })
            .collect(),
        _ => Err(format!("{what}: expected a list of integers")),
    }
}

pub(crate) fn float(v: &Value) -> Result<f64, String> {
    match v {
        Value::Float(f) => Ok(*f),
        Value::Int(i) => Ok(*i as f64),
        v => Err(format!("expected a number, got {}", v.type_name())),
    }
}

fn dtype(v: &Value) -> Result<DType, String> {
    match v {
        Value::Str(s) => s.parse(),
        v => Err(format!("expected a dtype, got {}", v.type_name())),
    }
}

macro_rules! by_dtype {
    ($dt:expr, $f:ident ( $($arg:expr),* )) => {
        match $dt {
            DType::F32 => $f::<f32>($($arg),*),
            DType::F64 => $f::<f64>($($arg),*),
            DType::I32 => $f::<i32>($($arg),*),
            DType::I64 => $f::<i64>($($arg),*),
            d => Err(format!("{d} arrays are not supported")),
        }
    };
}

macro_rules! float_dtype {
    ($dt:expr, $f:ident ( $($arg:expr),* )) => {
        match $dt {
            DType::F32 => $f::<f32>($($arg),*),
            DType::F64 => $f::<f64>($($arg),*),
            d => Err(format!("random values are f32 or f64, not {d}")),
        }
    };
}

/// Elements of a chunk with row-major global positions: element (r, c, …) of the chunk at
/// `origin` in an array of `global` shape has linear index Σ (origin + r) · stride.
fn global_index(global: &[u64], origin: &[u64], local: &[u64], mut i: u64) -> u64 {
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

fn random<T: Pod + Float>(normal: bool, a: &[Value]) -> Result<Chunk, String> {
    let [_, seed, global, origin, shape, p0, p1] = a else {
        return Err("random: (dtype, seed, global shape, origin, shape, p0, p1)".into());
    };
    let seed = match seed {
        Value::Int(s) => *s as u64,
        _ => return Err("random: the seed is an integer".into()),
    };
    let (global, origin, shape) = (
        int_list(global, "global shape")?,
        int_list(origin, "origin")?,
        int_list(shape, "shape")?,
    );
    if global.len() != shape.len() || origin.len() != shape.len() {
        return Err("random: ranks differ".into());
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

fn arange_chunk<T: Pod>(n: u64, start: f64, step: f64) -> Result<Chunk, String> {
    Ok(make::<T>(vec![n], |out| {
        for (i, o) in out.iter_mut().enumerate() {
            *o = T::from_f64(start + step * i as f64);
        }
    }))
}

type Piece = (Chunk, Vec<u64>, Vec<u64>, Vec<u64>);

/// A chunk of `shape` made of blocks of other chunks: each piece copies `extent` elements
/// from `src start` in its chunk to `dst start` in the result. Every element of the
/// result must be covered.
fn assemble<T: Pod>(shape: Vec<u64>, parts: &[Piece]) -> Result<Chunk, String> {
    let rank = shape.len();
    let mut covered = 0u64;
    for (c, s, d, e) in parts {
        if c.dtype != T::DTYPE {
            return Err("assemble: mixed dtypes".into());
        }
        if c.shape.len() != rank || s.len() != rank || d.len() != rank || e.len() != rank {
            return Err("assemble: ranks differ".into());
        }
        for k in 0..rank {
            if s[k] + e[k] > c.shape[k] || d[k] + e[k] > shape[k] {
                return Err(format!("assemble: block out of bounds in dimension {k}"));
            }
        }
        covered += e.iter().product::<u64>();
    }
    if covered != shape.iter().product::<u64>() {
        return Err("assemble: the pieces do not cover the chunk".into());
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

fn full<T: Pod>(shape: Vec<u64>, value: f64) -> Result<Chunk, String> {
    Ok(make::<T>(shape, |out| cpu::fill(out, T::from_f64(value))))
}

fn binary<T: Pod>(op: &str, a: &Chunk, b: Either) -> Result<Chunk, String> {
    let x = a.elems::<T>()?;
    let (y, scalar): (Cow<'_, [T]>, bool) = match &b {
        Either::Chunk(c) => {
            if c.shape != a.shape {
                return Err(format!("shapes {:?} and {:?} differ", a.shape, c.shape));
            }
            (c.elems::<T>()?, false)
        }
        Either::Scalar(v) => (Cow::Owned(vec![T::from_f64(*v)]), true),
    };
    let op = match (Binary::parse(op), op) {
        (Some(op), _) => Ok(op),
        (None, "div" | "pow") => Err(op == "pow"),
        (None, other) => return Err(format!("unknown elementwise op {other:?}")),
    };
    if let (Err(pow), false) = (op, T::FLOAT) {
        let op = if pow { "pow" } else { "div" };
        return Err(format!("{op} is for f32 and f64 arrays, not {}", T::DTYPE));
    }
    Ok(make::<T>(a.shape.clone(), |out| match op {
        Ok(op) => cpu::binary(op, &x, &y, out, false, scalar),
        Err(pow) => T::div_pow(pow, &x, &y, out, scalar),
    }))
}

enum Either {
    Chunk(Chunk),
    Scalar(f64),
}

fn transpose<T: Pod>(a: &Chunk) -> Result<Chunk, String> {
    let [rows, cols] = a.shape[..] else {
        return Err("transpose of a 2-d chunk".into());
    };
    let x = a.elems::<T>()?;
    Ok(make::<T>(vec![cols, rows], |out| {
        cpu::transpose(&x, out, rows as usize, cols as usize)
    }))
}

fn matmul<T: Pod>(a: &Chunk, b: &Chunk) -> Result<Chunk, String> {
    let (&[m, k], &[k2, n]) = (&a.shape[..], &b.shape[..]) else {
        return Err("matmul of 2-d chunks".into());
    };
    if k != k2 {
        return Err(format!("matmul of {:?} and {:?}", a.shape, b.shape));
    }
    let (x, y) = (a.elems::<T>()?, b.elems::<T>()?);
    Ok(make::<T>(vec![m, n], |out| {
        T::gemm(m as usize, k as usize, n as usize, &x, &y, out)
    }))
}

/// `op` (sum, max, min) over the whole chunk (`axis` None) or along one axis. Floats
/// accumulate in f64 (whole sums pairwise; f32 is widened); integers in their own type
/// (sums wrap, as on a GPU).
fn reduce<T: Pod>(op: &str, axis: Option<usize>, a: &Chunk) -> Result<Chunk, String> {
    let r = match op {
        "sum" | "max" | "min" => cpu::Reduce::parse(op).expect("a reduction"),
        other => return Err(format!("unknown reduction {other:?}")),
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
        Some(ax) => return Err(format!("axis {ax} of a {}-d chunk", a.shape.len())),
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
fn combine<T: Pod>(op: &str, chunks: &[Chunk]) -> Result<Chunk, String> {
    let first = chunks.first().ok_or("combine of nothing")?;
    let op = match Binary::parse(op) {
        Some(op @ (Binary::Add | Binary::Max | Binary::Min)) => op,
        _ => return Err(format!("unknown combination {op:?}")),
    };
    let mut views = vec![first.elems::<T>()?];
    for c in &chunks[1..] {
        if c.shape != first.shape {
            return Err(format!("shapes {:?} and {:?} differ", first.shape, c.shape));
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
fn argmax_chunk<T: Pod>(a: &Chunk, global: &[u64], origin: &[u64]) -> Result<Value, String> {
    let x = a.elems::<T>()?;
    let Some(i) = cpu::argmax(&x) else {
        return Ok(Value::List(vec![Value::Null, Value::Null]));
    };
    if global.len() != a.shape.len() || origin.len() != a.shape.len() {
        return Err("argmax: ranks differ".into());
    }
    let at = global_index(global, origin, &a.shape, i as u64);
    let v = x[i];
    let value = make::<T>(vec![], |o| o[0] = v);
    Ok(Value::List(vec![value.to_value(), Value::Int(at as i64)]))
}

/// The pair with the larger value (the smaller index on ties).
fn argmax_pick<T: Pod>(pairs: &[(Chunk, i64)]) -> Result<usize, String> {
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
        .ok_or_else(|| "argmax of nothing".into())
}

fn argmax_pairs(args: &[Value]) -> Result<Vec<(Chunk, i64)>, String> {
    let mut pairs = Vec::new();
    for a in args {
        match a {
            Value::List(p) => match &p[..] {
                [Value::Null, Value::Null] => {}
                [c, Value::Int(at)] => pairs.push((Chunk::from_value(c)?, *at)),
                _ => return Err("argmax: expected [value, index] pairs".into()),
            },
            _ => return Err("argmax: expected [value, index] pairs".into()),
        }
    }
    Ok(pairs)
}

/// Registers the `array.*` ops.
pub(crate) fn register(r: &mut Registry) {
    r.register("array.argmax", 1, |a| {
        let [x, global, origin] = a else {
            return Err("argmax: (chunk, global shape, origin)".into());
        };
        let x = Chunk::from_value(x)?;
        let (global, origin) = (
            int_list(global, "global shape")?,
            int_list(origin, "origin")?,
        );
        by_dtype!(x.dtype, argmax_chunk(&x, &global, &origin))
    });
    r.register("array.argmax_combine", 1, |a| {
        let pairs = argmax_pairs(a)?;
        let Some((first, _)) = pairs.first() else {
            return Ok(Value::List(vec![Value::Null, Value::Null]));
        };
        let n = by_dtype!(first.dtype, argmax_pick(&pairs))?;
        let (c, at) = &pairs[n];
        Ok(Value::List(vec![c.to_value(), Value::Int(*at)]))
    });
    r.register("array.argmax_index", 1, |a| {
        let pairs = argmax_pairs(a)?;
        let [(_, at)] = pairs[..] else {
            return Err("argmax of an empty array".into());
        };
        Ok(make::<i64>(vec![], |o| o[0] = at).to_value())
    });
    r.register("array.random_uniform", 1, |a| {
        let dt = dtype(a.first().ok_or("random: no dtype")?)?;
        float_dtype!(dt, random(false, a)).map(|c| c.to_value())
    });
    r.register("array.random_normal", 1, |a| {
        let dt = dtype(a.first().ok_or("random: no dtype")?)?;
        float_dtype!(dt, random(true, a)).map(|c| c.to_value())
    });
    r.register("array.arange", 1, |a| {
        let [dt, start, step, Value::Int(n)] = a else {
            return Err("arange: (dtype, start, step, n)".into());
        };
        let (dt, start, step) = (dtype(dt)?, float(start)?, float(step)?);
        let n = (*n).max(0) as u64;
        by_dtype!(dt, arange_chunk(n, start, step)).map(|c| c.to_value())
    });
    r.register("array.assemble", 1, |a| {
        let [shape, pieces @ ..] = a else {
            return Err("assemble: (shape, (chunk, src start, dst start, extent)…)".into());
        };
        let shape = int_list(shape, "shape")?;
        if pieces.is_empty() || pieces.len() % 4 != 0 {
            return Err("assemble: pieces are (chunk, src start, dst start, extent)".into());
        }
        let mut parts = Vec::new();
        for p in pieces.chunks(4) {
            parts.push((
                Chunk::from_value(&p[0])?,
                int_list(&p[1], "src start")?,
                int_list(&p[2], "dst start")?,
                int_list(&p[3], "extent")?,
            ));
        }
        let dt = parts[0].0.dtype;
        by_dtype!(dt, assemble(shape, &parts)).map(|c| c.to_value())
    });
    r.register("array.full", 1, |a| {
        let [dt, shape, value] = a else {
            return Err("full: (dtype, shape, value)".into());
        };
        let (dt, shape, value) = (dtype(dt)?, int_list(shape, "shape")?, float(value)?);
        by_dtype!(dt, full(shape, value)).map(|c| c.to_value())
    });
    r.register("array.binary", 1, |a| {
        let [Value::Str(op), x, y] = a else {
            return Err("binary: (op, chunk, chunk or number)".into());
        };
        let x = Chunk::from_value(x)?;
        let y = match y {
            Value::Float(_) | Value::Int(_) => Either::Scalar(float(y)?),
            v => Either::Chunk(Chunk::from_value(v)?),
        };
        if let Either::Chunk(c) = &y {
            if c.dtype != x.dtype {
                return Err(format!("dtypes {} and {} differ", x.dtype, c.dtype));
            }
        }
        by_dtype!(x.dtype, binary(op, &x, y)).map(|c| c.to_value())
    });
    r.register("array.transpose", 1, |a| {
        let [x] = a else {
            return Err("transpose: (chunk)".into());
        };
        let x = Chunk::from_value(x)?;
        by_dtype!(x.dtype, transpose(&x)).map(|c| c.to_value())
    });
    r.register("array.matmul", 1, |a| {
        let [x, y] = a else {
            return Err("matmul: (chunk, chunk)".into());
        };
        let (x, y) = (Chunk::from_value(x)?, Chunk::from_value(y)?);
        if x.dtype != y.dtype {
            return Err(format!("dtypes {} and {} differ", x.dtype, y.dtype));
        }
        by_dtype!(x.dtype, matmul(&x, &y)).map(|c| c.to_value())
    });
    r.register("array.reduce", 1, |a| {
        let [Value::Str(op), axis, x] = a else {
            return Err("reduce: (op, axis or -1, chunk)".into());
        };
        let axis = match axis {
            Value::Int(i) if *i >= 0 => Some(*i as usize),
            Value::Int(_) => None,
            _ => return Err("reduce: the axis is an integer".into()),
        };
        let x = Chunk::from_value(x)?;
        by_dtype!(x.dtype, reduce(op, axis, &x)).map(|c| c.to_value())
    });
    r.register("array.combine", 1, |a| {
        let [Value::Str(op), rest @ ..] = a else {
            return Err("combine: (op, chunk, …)".into());
        };
        let chunks = rest
            .iter()
            .map(Chunk::from_value)
            .collect::<Result<Vec<_>, _>>()?;
        let dt = chunks.first().ok_or("combine of nothing")?.dtype;
        by_dtype!(dt, combine(op, &chunks)).map(|c| c.to_value())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(shape: &[u64], v: &[f64]) -> Value {
        make::<f64>(shape.to_vec(), |o| o.copy_from_slice(v)).to_value()
    }

    #[test]
    fn ops_compute_chunks() {
        let r = Registry::builtin();
        let a = chunk(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let t = r
            .call("array.transpose", &Value::List(vec![a.clone()]))
            .unwrap();
        let t = Chunk::from_value(&t).unwrap();
        assert_eq!(t.shape, vec![3, 2]);
        assert_eq!(&*t.elems::<f64>().unwrap(), &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        let p = r
            .call("array.matmul", &Value::List(vec![a.clone(), t.to_value()]))
            .unwrap();
        let p = Chunk::from_value(&p).unwrap();
        assert_eq!(&*p.elems::<f64>().unwrap(), &[14.0, 32.0, 32.0, 77.0]);
        let s = r
            .call(
                "array.reduce",
                &Value::List(vec![Value::Str("sum".into()), Value::Int(-1), p.to_value()]),
            )
            .unwrap();
        assert_eq!(
            &*Chunk::from_value(&s).unwrap().elems::<f64>().unwrap(),
            &[155.0]
        );
        let b = r
            .call(
                "array.binary",
                &Value::List(vec![Value::Str("mul".into()), a.clone(), Value::Float(2.0)]),
            )
            .unwrap();
        assert_eq!(
            &*Chunk::from_value(&b).unwrap().elems::<f64>().unwrap(),
            &[2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
        );
        let bad = r.call("array.matmul", &Value::List(vec![a.clone(), a]));
        assert!(bad.is_err());
    }

    #[test]
    fn random_chunks_agree_with_the_whole_array() {
        let r = Registry::builtin();
        let call = |origin: &[i64], shape: &[i64]| {
            let v = r
                .call(
                    "array.random_uniform",
                    &Value::List(vec![
                        Value::Str("f32".into()),
                        Value::Int(9),
                        Value::List(vec![Value::Int(6), Value::Int(5)]),
                        Value::List(origin.iter().map(|&x| Value::Int(x)).collect()),
                        Value::List(shape.iter().map(|&x| Value::Int(x)).collect()),
                        Value::Float(0.0),
                        Value::Float(1.0),
                    ]),
                )
                .unwrap();
            Chunk::from_value(&v)
                .unwrap()
                .elems::<f32>()
                .unwrap()
                .into_owned()
        };
        let whole = call(&[0, 0], &[6, 5]);
        let part = call(&[2, 3], &[3, 2]);
        for r in 0..3 {
            for c in 0..2 {
                assert_eq!(part[r * 2 + c], whole[(2 + r) * 5 + 3 + c]);
            }
        }
    }
}

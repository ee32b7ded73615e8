//! Array chunks: a [`Chunk`] is one block of a blocked array, its bytes little-endian and
//! row-major. It travels as the value `[dtype, shape, bytes]` ([`Chunk::to_value`],
//! [`chunk_value`], [`chunk_parts`]), an encoding written and read in one place,
//! `rask_proto::chunk`. [`Pod`] names the element types a chunk can hold.
//!
//! The `array.*` ops over chunks (computed by the CPU twins; GEMM by the `gemm` crate for
//! a · b, by `matrixmultiply` for a · bᵀ and the symmetric a · aᵀ, each the faster on
//! that layout where measured) are in `ops`, chains of elementwise ops in one pass
//! (`array.expr`) in [`expr`], and their registration (argument parsing) in `register`.

pub mod expr;
mod ops;
mod register;

pub(crate) use register::register;

use std::borrow::Cow;

use bytes::Bytes;
use rask_proto::{DType, Value};

use crate::cpu::{self, Elem};
use crate::OpError;

/// One chunk of an array, in host memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    /// The element type.
    pub dtype: DType,
    /// The extent of each dimension (empty for a 0-d chunk of one element).
    pub shape: Vec<u64>,
    /// The elements, little-endian and row-major: exactly `shape`'s product times
    /// `dtype`'s size.
    pub bytes: Bytes,
}

pub use rask_proto::chunk::chunk_value;

/// The dtype, shape and bytes (host or device) of a chunk value, the length checked.
pub fn chunk_parts(v: &Value) -> Result<(DType, Vec<u64>, &Value), OpError> {
    use rask_proto::chunk::ChunkError;
    rask_proto::chunk::chunk_parts(v).map_err(|e| match e {
        ChunkError::NotAChunk(t) => OpError::NotAChunk(t),
        ChunkError::Form => OpError::ChunkForm,
        ChunkError::DTypeName(m) => OpError::DTypeName(m),
        ChunkError::Shape => OpError::ChunkShape,
        ChunkError::Length { shape, dtype, len } => OpError::ChunkLength { shape, dtype, len },
    })
}

impl Chunk {
    /// The chunk as a value: `[dtype, shape, bytes]`.
    pub fn to_value(&self) -> Value {
        chunk_value(self.dtype, &self.shape, Value::Bytes(self.bytes.clone()))
    }

    /// A chunk in host memory (ops on the CPU get their arguments there, see
    /// [`crate::Registry::call_on`]).
    pub fn from_value(v: &Value) -> Result<Chunk, OpError> {
        match chunk_parts(v)? {
            (_, _, Value::Device(d)) => Err(OpError::NotOnHost { device: d.label() }),
            (dtype, shape, Value::Bytes(bytes)) => Ok(Chunk {
                dtype,
                shape,
                bytes: bytes.clone(),
            }),
            _ => unreachable!("chunk_parts gives host or device bytes"),
        }
    }

    /// A chunk of the given elements (row-major), e.g. the output of a custom op.
    pub fn from_elems<T: Pod>(shape: Vec<u64>, elems: &[T]) -> Result<Chunk, OpError> {
        if shape.iter().product::<u64>() != elems.len() as u64 {
            return Err(OpError::Elements {
                n: elems.len(),
                shape,
            });
        }
        Ok(make::<T>(shape, |out| out.copy_from_slice(elems)))
    }

    /// The elements, borrowed when the bytes are aligned for `T`.
    pub fn elems<T: Pod>(&self) -> Result<Cow<'_, [T]>, OpError> {
        if self.dtype != T::DTYPE {
            return Err(OpError::WrongDType {
                want: T::DTYPE,
                got: self.dtype,
            });
        }
        Ok(view(&self.bytes))
    }
}

/// The element types of array chunks: f32, f64, i32, i64, each with its [`DType`].
///
/// Sealed like [`Elem`] (its supertrait): a chunk's dtype names one of these types, so no
/// other type can be one:
///
/// ```compile_fail
/// use rask_kernels::chunk::Pod;
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
///     fn gemm(_: usize, _: usize, _: usize, _: &[Self], _: &[Self], _: &mut [Self], _: bool) {}
///     fn gemm_nt(_: usize, _: usize, _: usize, _: &[Self], _: &[Self], _: &mut [Self], _: bool) {}
///     fn div_pow(_: bool, _: &[Self], _: &[Self], _: &mut [Self], _: bool) {}
/// }
/// ```
///
/// # Safety
///
/// Chunk bytes are viewed as slices of `Self` and slices of `Self` as bytes: besides
/// [`Elem`]'s guarantees, `Self` has the size and alignment of `DTYPE`'s elements.
pub unsafe trait Pod: Elem + Default {
    /// The dtype whose elements this type holds.
    const DTYPE: DType;
    /// Floating point (reductions accumulate in f64; `div`, `pow` and random values exist).
    const FLOAT: bool;
    /// out (m×n) = a (m×k) · b (k×n), all row-major and contiguous; with `acc`,
    /// out += a · b (a sum of products accumulates in place, with no buffer per term).
    fn gemm(m: usize, k: usize, n: usize, a: &[Self], b: &[Self], out: &mut [Self], acc: bool);
    /// out (m×n) = a (m×k) · bᵀ, b (n×k) row-major and contiguous: the transpose is in
    /// the strides, never materialised. `acc` as for [`Pod::gemm`].
    fn gemm_nt(m: usize, k: usize, n: usize, a: &[Self], b: &[Self], out: &mut [Self], acc: bool);
    /// The upper triangle (diagonal included) of out (n×n) = a (n×k) · aᵀ, or += with
    /// `acc`: computed by blocks of rows, so about half the products of
    /// [`Pod::gemm_nt`]. Below the diagonal, out holds whatever the computation left
    /// there: [`mirror_upper`] then makes it exactly symmetric (once, after a sum of such
    /// products).
    fn syrk(n: usize, k: usize, a: &[Self], out: &mut [Self], acc: bool) {
        Self::gemm_nt(n, k, n, a, a, out, acc);
    }
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
            fn gemm(
                m: usize,
                k: usize,
                n: usize,
                a: &[Self],
                b: &[Self],
                out: &mut [Self],
                acc: bool,
            ) {
                assert!(a.len() >= m * k && b.len() >= k * n && out.len() >= m * n);
                // The `gemm` crate: faster than matrixmultiply on a plain a · b here
                // (BENCHMARKS.md, single-thread GEMM), not on a · bᵀ. It computes
                // out = alpha · out + beta · a · b, reading out only with read_dst.
                // SAFETY: row-major buffers at least as large as the shapes (checked):
                // out and a with row stride (rs) n and k, b with n, column stride 1.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        out.as_mut_ptr(),
                        1,
                        n as isize,
                        acc,
                        a.as_ptr(),
                        1,
                        k as isize,
                        b.as_ptr(),
                        1,
                        n as isize,
                        if acc { 1.0 } else { 0.0 },
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                }
            }
            fn gemm_nt(
                m: usize,
                k: usize,
                n: usize,
                a: &[Self],
                b: &[Self],
                out: &mut [Self],
                acc: bool,
            ) {
                assert!(a.len() >= m * k && b.len() >= k * n && out.len() >= m * n);
                let beta = if acc { 1.0 } else { 0.0 };
                // SAFETY: as in `gemm`; bᵀ (k×n) is b (n×k) read with row stride 1 and
                // column stride k, inside b. matrixmultiply computes out = alpha · a · b +
                // beta · out.
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
                        1,
                        k as isize,
                        beta,
                        out.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                }
            }
            fn syrk(n: usize, k: usize, a: &[Self], out: &mut [Self], acc: bool) {
                assert!(a.len() >= n * k && out.len() >= n * n);
                // Row panel p: out[p, p..] = a[p] · a[p..]ᵀ (+= with acc), one GEMM per
                // panel (wider products run faster than one per block), written in place
                // (row stride n); what is below the diagonal is then mirrored.
                let beta = if acc { 1.0 } else { 0.0 };
                for p in (0..n).step_by(SYRK_PANEL) {
                    let rows = SYRK_PANEL.min(n - p);
                    let cols = n - p;
                    // SAFETY: panel p of a is rows × k from row p, the rows from p on
                    // cols × k (read transposed: row stride 1, column stride k), the
                    // block of out rows × cols at (p, p) with row stride n: all inside
                    // the buffers checked above.
                    unsafe {
                        $gemm(
                            rows,
                            k,
                            cols,
                            1.0,
                            a.as_ptr().add(p * k),
                            k as isize,
                            1,
                            a.as_ptr().add(p * k),
                            1,
                            k as isize,
                            beta,
                            out.as_mut_ptr().add(p * n + p),
                            n as isize,
                            1,
                        )
                    }
                }
            }
        }
    };
}

/// Rows per panel of the float [`Pod::syrk`]: n/PANEL · (n/PANEL + 1) / 2 GEMMs of
/// PANEL × k × PANEL instead of one n × k × n.
const SYRK_PANEL: usize = 256;

/// Copies the upper triangle of the n × n row-major `out` onto the lower one, so that it
/// is exactly symmetric.
pub fn mirror_upper<T: Copy>(n: usize, out: &mut [T]) {
    const TILE: usize = 32;
    for r0 in (0..n).step_by(TILE) {
        for c0 in (0..=r0).step_by(TILE) {
            for r in r0..(r0 + TILE).min(n) {
                for c in c0..(c0 + TILE).min(r) {
                    out[r * n + c] = out[c * n + r];
                }
            }
        }
    }
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
            fn gemm(
                m: usize,
                k: usize,
                n: usize,
                a: &[Self],
                b: &[Self],
                out: &mut [Self],
                acc: bool,
            ) {
                for i in 0..m {
                    let row = &mut out[i * n..(i + 1) * n];
                    if !acc {
                        row.fill(0);
                    }
                    for p in 0..k {
                        let x = a[i * k + p];
                        for (o, &y) in row.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                            *o = o.wrapping_add(x.wrapping_mul(y));
                        }
                    }
                }
            }
            /// Exact (wrapping) integer products, a dot product per element.
            fn gemm_nt(
                m: usize,
                k: usize,
                n: usize,
                a: &[Self],
                b: &[Self],
                out: &mut [Self],
                acc: bool,
            ) {
                for i in 0..m {
                    let x = &a[i * k..(i + 1) * k];
                    for j in 0..n {
                        let y = &b[j * k..(j + 1) * k];
                        let start = if acc { out[i * n + j] } else { 0 };
                        out[i * n + j] = x
                            .iter()
                            .zip(y)
                            .fold(start, |s: Self, (&p, &q)| s.wrapping_add(p.wrapping_mul(q)));
                    }
                }
            }
        }
    };
}

pod_int!(i32, DType::I32);
pod_int!(i64, DType::I64);

/// The elements of `b`, borrowed when `b` is aligned for `T`, else copied.
fn view<T: Pod>(b: &[u8]) -> Cow<'_, [T]> {
    if let Some(elems) = cpu::cast::<T>(b) {
        return Cow::Borrowed(elems);
    }
    let n = b.len() / std::mem::size_of::<T>();
    let mut owned = vec![T::default(); n];
    cpu::as_bytes_mut(&mut owned).copy_from_slice(&b[..n * std::mem::size_of::<T>()]);
    Cow::Owned(owned)
}

/// A chunk of `n` elements of `T` written by `f` (into the worker's output memory).
pub(crate) fn make<T: Pod>(shape: Vec<u64>, f: impl FnOnce(&mut [T])) -> Chunk {
    let n: u64 = shape.iter().product();
    let size = std::mem::size_of::<T>();
    let bytes = crate::output_bytes(n as usize * size, |buf| match cpu::cast_mut::<T>(buf) {
        Some(typed) => f(typed),
        None => {
            let mut tmp = vec![T::default(); n as usize];
            f(&mut tmp);
            buf.copy_from_slice(cpu::as_bytes(&tmp));
        }
    });
    Chunk {
        dtype: T::DTYPE,
        shape,
        bytes,
    }
}

/// A list of non-negative integers (a shape, an origin, …), named `what` in errors.
pub(crate) fn int_list(v: &Value, what: &'static str) -> Result<Vec<u64>, OpError> {
    match v {
        Value::List(l) => l
            .iter()
            .map(|x| match x {
                Value::Int(n) if *n >= 0 => Ok(*n as u64),
                _ => Err(OpError::NotNonNegative(what)),
            })
            .collect(),
        _ => Err(OpError::NotAList(what)),
    }
}

/// A number (an integer is taken as a float).
pub(crate) fn float(v: &Value) -> Result<f64, OpError> {
    match v {
        Value::Float(f) => Ok(*f),
        Value::Int(i) => Ok(*i as f64),
        v => Err(OpError::Type {
            expected: "a number",
            got: v.type_name(),
        }),
    }
}

/// A dtype by its name.
pub(crate) fn dtype(v: &Value) -> Result<DType, OpError> {
    match v {
        Value::Str(s) => s.parse().map_err(OpError::DTypeName),
        v => Err(OpError::Type {
            expected: "a dtype",
            got: v.type_name(),
        }),
    }
}

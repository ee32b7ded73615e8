//! CPU twins of the CUDA kernels: the same operation on host slices, used on host and
//! simulated devices and as the reference the GPU is checked against. Every entry point
//! `{op}_{dtype}` of `cuda/*.cu` has one (a test compiles the sources and compares).
//!
//! The element types and the byte views of their slices are in `elem`, the random
//! number generators in `random`; everything is re-exported here.

mod elem;
mod random;

pub use elem::{as_bytes, as_bytes_mut, cast, cast_mut, Elem, Float};
pub use random::{
    normal_at, philox4x32_10, random_normal, random_rows, random_uniform, uniform_f32_at,
    uniform_f64_at,
};

/// Every element `value`: the twin of `fill_*`.
pub fn fill<T: Elem>(out: &mut [T], value: T) {
    out.fill(value);
}

/// `start + i * step`: the twin of `arange_*`.
pub fn arange<T: Elem>(out: &mut [T], start: T, step: T) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = start.add(T::from_f64(i as f64).mul(step));
    }
}

/// `out[i] = f(a[i], b[i])`, an operand flagged scalar read at index 0: the loop of every
/// binary kernel, one loop per case so that each vectorises.
#[inline(always)]
fn zip_broadcast<T: Copy, U>(
    a: &[T],
    b: &[T],
    out: &mut [U],
    a_scalar: bool,
    b_scalar: bool,
    f: impl Fn(T, T) -> U,
) {
    match (a_scalar, b_scalar) {
        (false, false) => {
            let (a, b) = (&a[..out.len()], &b[..out.len()]);
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                *o = f(x, y);
            }
        }
        (false, true) => {
            let (a, y) = (&a[..out.len()], b[0]);
            for (o, &x) in out.iter_mut().zip(a) {
                *o = f(x, y);
            }
        }
        (true, false) => {
            let (x, b) = (a[0], &b[..out.len()]);
            for (o, &y) in out.iter_mut().zip(b) {
                *o = f(x, y);
            }
        }
        (true, true) => {
            let (x, y) = (a[0], b[0]);
            for o in out.iter_mut() {
                *o = f(x, y);
            }
        }
    }
}

/// Binary ops with scalar broadcast (an operand flagged scalar is read at index 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// `x + y`.
    Add,
    /// `x - y`.
    Sub,
    /// `x * y`.
    Mul,
    /// The larger (`x > y ? x : y`).
    Max,
    /// The smaller (`x < y ? x : y`).
    Min,
}

impl Binary {
    /// The op of an entry point's or an `array.*` op's name (`add`, `sub`, `mul`, `max`,
    /// `min`).
    pub fn parse(op: &str) -> Option<Binary> {
        match op {
            "add" => Some(Binary::Add),
            "sub" => Some(Binary::Sub),
            "mul" => Some(Binary::Mul),
            "max" => Some(Binary::Max),
            "min" => Some(Binary::Min),
            _ => None,
        }
    }

    /// The name, as in entry points (`add_f32`).
    pub fn name(self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Sub => "sub",
            Binary::Mul => "mul",
            Binary::Max => "max",
            Binary::Min => "min",
        }
    }

    /// `x op y`, as the kernels compute it.
    #[inline]
    pub fn apply<T: Elem>(self, x: T, y: T) -> T {
        match self {
            Binary::Add => x.add(y),
            Binary::Sub => x.sub(y),
            Binary::Mul => x.mul(y),
            Binary::Max => max(x, y),
            Binary::Min => min(x, y),
        }
    }
}

/// `x > y ? x : y`, as `elementwise.cu` (not `fmax`: the NaN cases differ).
#[inline]
fn max<T: Elem>(x: T, y: T) -> T {
    if x > y {
        x
    } else {
        y
    }
}

/// `x < y ? x : y`, as `elementwise.cu`.
#[inline]
fn min<T: Elem>(x: T, y: T) -> T {
    if x < y {
        x
    } else {
        y
    }
}

/// `a op b` elementwise: the twin of `{add,sub,mul,max,min}_*`.
pub fn binary<T: Elem>(
    op: Binary,
    a: &[T],
    b: &[T],
    out: &mut [T],
    a_scalar: bool,
    b_scalar: bool,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the feature the function is compiled for.
            return unsafe { binary_avx512(op, a, b, out, a_scalar, b_scalar) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { binary_avx2(op, a, b, out, a_scalar, b_scalar) };
        }
    }
    binary_loops(op, a, b, out, a_scalar, b_scalar)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn binary_avx512<T: Elem>(op: Binary, a: &[T], b: &[T], out: &mut [T], sa: bool, sb: bool) {
    binary_loops(op, a, b, out, sa, sb)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn binary_avx2<T: Elem>(op: Binary, a: &[T], b: &[T], out: &mut [T], sa: bool, sb: bool) {
    binary_loops(op, a, b, out, sa, sb)
}

/// [`binary`]'s loops, compiled once per instruction set (IEEE arithmetic: the same
/// results on each).
#[inline(always)]
fn binary_loops<T: Elem>(op: Binary, a: &[T], b: &[T], out: &mut [T], sa: bool, sb: bool) {
    // The op is chosen once: each arm is a loop of its own.
    match op {
        Binary::Add => zip_broadcast(a, b, out, sa, sb, T::add),
        Binary::Sub => zip_broadcast(a, b, out, sa, sb, T::sub),
        Binary::Mul => zip_broadcast(a, b, out, sa, sb, T::mul),
        Binary::Max => zip_broadcast(a, b, out, sa, sb, max),
        Binary::Min => zip_broadcast(a, b, out, sa, sb, min),
    }
}

/// `div` and `pow`, floating point only.
pub fn binary_float<T: Float>(
    pow: bool,
    a: &[T],
    b: &[T],
    out: &mut [T],
    a_scalar: bool,
    b_scalar: bool,
) {
    if pow {
        return zip_broadcast(a, b, out, a_scalar, b_scalar, T::powf);
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the feature the function is compiled for.
            return unsafe { div_avx512(a, b, out, a_scalar, b_scalar) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { div_avx2(a, b, out, a_scalar, b_scalar) };
        }
    }
    zip_broadcast(a, b, out, a_scalar, b_scalar, T::div);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn div_avx512<T: Float>(a: &[T], b: &[T], out: &mut [T], sa: bool, sb: bool) {
    zip_broadcast(a, b, out, sa, sb, T::div)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn div_avx2<T: Float>(a: &[T], b: &[T], out: &mut [T], sa: bool, sb: bool) {
    zip_broadcast(a, b, out, sa, sb, T::div)
}

/// `-a`: the twin of `neg_*`.
pub fn neg<T: Elem>(a: &[T], out: &mut [T]) {
    for (o, &x) in out.iter_mut().zip(a) {
        *o = x.neg();
    }
}

/// `|a|`: the twin of `abs_*`.
pub fn abs<T: Elem>(a: &[T], out: &mut [T]) {
    for (o, &x) in out.iter_mut().zip(a) {
        *o = if x < T::zero() { x.neg() } else { x };
    }
}

/// A unary function, computed in f64.
pub type UnaryFn = fn(f64) -> f64;

/// The floating-point unary ops of `elementwise.cu`.
pub const UNARY_FLOAT: &[(&str, UnaryFn)] = &[
    ("exp", f64::exp),
    ("log", f64::ln),
    ("sqrt", f64::sqrt),
    ("sin", f64::sin),
    ("cos", f64::cos),
    ("tanh", f64::tanh),
];

/// `f(a)` elementwise: the twin of the [`UNARY_FLOAT`] entry points.
pub fn unary_float<T: Float>(f: fn(f64) -> f64, a: &[T], out: &mut [T]) {
    for (o, &x) in out.iter_mut().zip(a) {
        *o = x.map(f);
    }
}

/// y = alpha * x + y
pub fn axpy<T: Elem>(alpha: T, x: &[T], y: &mut [T]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = alpha.mul(xi).add(*yi);
    }
}

/// Comparisons, giving 0 or 1 per element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    /// `x < y`.
    Lt,
    /// `x > y`.
    Gt,
    /// `x == y`.
    Eq,
}

/// `a op b` as 0 or 1 bytes: the twin of `{lt,gt,eq}_*`.
pub fn compare<T: Elem>(
    op: Compare,
    a: &[T],
    b: &[T],
    out: &mut [u8],
    a_scalar: bool,
    b_scalar: bool,
) {
    match op {
        Compare::Lt => zip_broadcast(a, b, out, a_scalar, b_scalar, |x, y| (x < y) as u8),
        Compare::Gt => zip_broadcast(a, b, out, a_scalar, b_scalar, |x, y| (x > y) as u8),
        Compare::Eq => zip_broadcast(a, b, out, a_scalar, b_scalar, |x, y| (x == y) as u8),
    }
}

/// `mask ? a : b` elementwise: the twin of `where_*`.
pub fn select<T: Elem>(mask: &[u8], a: &[T], b: &[T], out: &mut [T]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = if mask[i] != 0 { a[i] } else { b[i] };
    }
}

/// Sum by pairwise halving (the same tree shape as a block reduction, and far more
/// accurate than a running sum in f32).
pub fn sum<T: Elem>(a: &[T]) -> T {
    if a.len() <= 32 {
        return a.iter().fold(T::zero(), |s, &x| s.add(x));
    }
    let (l, r) = a.split_at(a.len() / 2);
    sum(l).add(sum(r))
}

/// The sum of f32s accumulated in f64, as [`sum`] of the widened values would be up to
/// rounding (the order differs): `LANES` running sums, lane `l` taking elements
/// `l, l + LANES, …`, then added pairwise. Vectorised with the widest instructions the CPU
/// has (checked at run time).
pub fn sum_f32_wide(a: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the feature the function is compiled for.
            return unsafe { sum_f32_wide_avx512(a) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { sum_f32_wide_avx2(a) };
        }
    }
    sum_f32_lanes(a)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sum_f32_wide_avx512(a: &[f32]) -> f64 {
    sum_f32_lanes(a)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_f32_wide_avx2(a: &[f32]) -> f64 {
    sum_f32_lanes(a)
}

#[inline(always)]
fn sum_f32_lanes(a: &[f32]) -> f64 {
    const LANES: usize = 32;
    let mut acc = [0f64; LANES];
    let mut runs = a.chunks_exact(LANES);
    for run in &mut runs {
        for (s, &x) in acc.iter_mut().zip(run) {
            *s += x as f64;
        }
    }
    for (s, &x) in acc.iter_mut().zip(runs.remainder()) {
        *s += x as f64;
    }
    sum(&acc)
}

/// The largest element (`None` for none).
pub fn amax<T: Elem>(a: &[T]) -> Option<T> {
    a.iter().copied().fold(None, |m, x| match m {
        Some(m) if m >= x => Some(m),
        _ => Some(x),
    })
}

/// The smallest element (`None` for none).
pub fn amin<T: Elem>(a: &[T]) -> Option<T> {
    a.iter().copied().fold(None, |m, x| match m {
        Some(m) if m <= x => Some(m),
        _ => Some(x),
    })
}

/// The index of the first largest element.
pub fn argmax<T: Elem>(a: &[T]) -> Option<usize> {
    let mut best: Option<(T, usize)> = None;
    for (i, &x) in a.iter().enumerate() {
        if best.is_none_or(|(b, _)| x > b) {
            best = Some((x, i));
        }
    }
    best.map(|(_, i)| i)
}

/// out (cols × rows) = transpose of a (rows × cols), row-major; in tiles, for the cache.
pub fn transpose<T: Elem>(a: &[T], out: &mut [T], rows: usize, cols: usize) {
    const TILE: usize = 32;
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = a[r * cols + c];
                }
            }
        }
    }
}

/// Whole and per-axis reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    /// The sum.
    Sum,
    /// The largest element.
    Max,
    /// The smallest element.
    Min,
}

impl Reduce {
    /// `sum`, `max` (or `amax`) or `min` (or `amin`).
    pub fn parse(op: &str) -> Option<Reduce> {
        match op {
            "sum" => Some(Reduce::Sum),
            "max" | "amax" => Some(Reduce::Max),
            "min" | "amin" => Some(Reduce::Min),
            _ => None,
        }
    }

    /// The identity: 0, the lowest or the highest value.
    pub fn init<T: Elem>(self) -> T {
        match self {
            Reduce::Sum => T::zero(),
            Reduce::Max => T::LOWEST,
            Reduce::Min => T::HIGHEST,
        }
    }

    /// `acc` with `x` taken in.
    pub fn combine<T: Elem>(self, acc: T, x: T) -> T {
        match self {
            Reduce::Sum => acc.add(x),
            Reduce::Max if x > acc => x,
            Reduce::Min if x < acc => x,
            _ => acc,
        }
    }
}

/// The twin of `{sum,amax,amin}_axis_*`: `a` seen as (outer, len, inner),
/// `out[o * inner + j]` combines `a[(o * len + k) * inner + j]` over `k`.
pub fn reduce_axis<T: Elem>(op: Reduce, a: &[T], out: &mut [T], len: usize, inner: usize) {
    out.fill(op.init());
    if len * inner == 0 {
        return;
    }
    for (o, block) in a.chunks(len * inner).enumerate() {
        let acc = &mut out[o * inner..(o + 1) * inner];
        for row in block.chunks(inner) {
            for (s, &x) in acc.iter_mut().zip(row) {
                *s = op.combine(*s, x);
            }
        }
    }
}

/// The twin of `{sum,amax,amin}_rows_*`: each row of `len` elements reduced as one block
/// of `threads` does it — thread `t` combines elements `t`, `t + threads`, … in order,
/// then a tree halves the partials (`s[t] = s[t] ∘ s[t + w]` for `w` = threads / 2 … 1)
/// — so the result is the kernel's to the bit.
pub fn reduce_rows<T: Elem>(op: Reduce, a: &[T], out: &mut [T], len: usize, threads: usize) {
    let mut s = vec![op.init::<T>(); threads];
    for (r, o) in out.iter_mut().enumerate() {
        let row = &a[r * len..(r + 1) * len];
        for (t, slot) in s.iter_mut().enumerate() {
            let mut acc = op.init::<T>();
            for &x in row.iter().skip(t).step_by(threads) {
                acc = op.combine(acc, x);
            }
            *slot = acc;
        }
        let mut w = threads / 2;
        while w > 0 {
            for t in 0..w {
                s[t] = op.combine(s[t], s[t + w]);
            }
            w /= 2;
        }
        *o = s[0];
    }
}

/// The entry points that have a twin here: `{op}_{dtype}`.
pub fn twins() -> Vec<String> {
    let all = ["f32", "f64", "i32", "i64"];
    let float = ["f32", "f64"];
    let mut out = Vec::new();
    let mut add = |ops: &[&str], types: &[&str]| {
        for op in ops {
            for t in types {
                out.push(format!("{op}_{t}"));
            }
        }
    };
    add(&["fill", "arange"], &all);
    add(&["random_uniform", "random_normal"], &float);
    add(&["add", "sub", "mul", "max", "min"], &all);
    add(&["div", "pow"], &float);
    add(&["neg", "abs"], &all);
    let unary: Vec<&str> = UNARY_FLOAT.iter().map(|(n, _)| *n).collect();
    add(&unary, &float);
    add(&["axpy"], &float);
    add(&["lt", "gt", "eq", "where"], &all);
    add(&["sum", "amax", "amin", "argmax"], &all);
    add(&["sum_axis", "amax_axis", "amin_axis"], &all);
    add(&["sum_rows", "amax_rows", "amin_rows"], &all);
    add(&["transpose"], &all);
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_f32_sums_agree_with_the_pairwise_f64_sum() {
        for len in [0usize, 1, 31, 32, 33, 1000, 100_003] {
            let a: Vec<f32> = (0..len)
                .map(|i| ((i * 37) % 101) as f32 * 0.25 - 7.5)
                .collect();
            let wide: Vec<f64> = a.iter().map(|&x| x as f64).collect();
            let (got, want) = (sum_f32_wide(&a), sum(&wide));
            // Quarter-steps of small integers: every partial sum is exact in f64.
            assert_eq!(got, want, "{len}");
        }
        assert_eq!(sum_f32_wide(&[1e8, 1.0, -1e8]), 1.0);
    }

    /// Each instruction set's copy of a sum or a binary op gives the same bits as the
    /// portable one (workers on different CPUs compute the same values).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn every_instruction_sets_copy_gives_the_same_bits() {
        let a: Vec<f32> = (0..10_007).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
        let b: Vec<f32> = (0..10_007).map(|i| (i as f32 * 0.11).cos() + 2.0).collect();
        let portable_sum = sum_f32_lanes(&a);
        let mut portable = vec![0f32; a.len()];
        binary_loops(Binary::Mul, &a, &b, &mut portable, false, false);
        let mut out = vec![f32::NAN; a.len()];
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has the feature the functions are compiled for.
            unsafe {
                assert_eq!(sum_f32_wide_avx2(&a).to_bits(), portable_sum.to_bits());
                binary_avx2(Binary::Mul, &a, &b, &mut out, false, false);
            }
            assert!(out
                .iter()
                .zip(&portable)
                .all(|(x, y)| x.to_bits() == y.to_bits()));
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            out.fill(f32::NAN);
            // SAFETY: as above.
            unsafe {
                assert_eq!(sum_f32_wide_avx512(&a).to_bits(), portable_sum.to_bits());
                binary_avx512(Binary::Mul, &a, &b, &mut out, false, false);
            }
            assert!(out
                .iter()
                .zip(&portable)
                .all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }

    #[test]
    fn binary_ops_broadcast_either_operand() {
        let (a, b) = ([1.0f32, 2.0, 3.0], [10.0f32, 20.0, 30.0]);
        let mut out = [0f32; 3];
        binary(Binary::Sub, &a, &b, &mut out, false, false);
        assert_eq!(out, [-9.0, -18.0, -27.0]);
        binary(Binary::Sub, &a, &b, &mut out, false, true);
        assert_eq!(out, [-9.0, -8.0, -7.0]);
        binary(Binary::Sub, &a, &b, &mut out, true, false);
        assert_eq!(out, [-9.0, -19.0, -29.0]);
        binary(Binary::Sub, &a, &b, &mut out, true, true);
        assert_eq!(out, [-9.0, -9.0, -9.0]);
    }
}

//! CPU twins of the CUDA kernels: the same operation on host slices, used on host and
//! simulated devices and as the reference the GPU is checked against. Every entry point
//! `{op}_{dtype}` of `kernels/*.cu` has one (a test compiles the sources and compares).

/// The kernels' element types: i32, i64, f32, f64.
///
/// Sealed: the kernels exist for these types only (`NAME` is part of their CUDA entry
/// points), so no other crate can implement it:
///
/// ```compile_fail
/// #[derive(Clone, Copy, PartialEq, PartialOrd)]
/// struct Meters(f64);
///
/// impl rask_kernels::cpu::Elem for Meters {
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
/// ```
///
/// not even with `unsafe impl`:
///
/// ```compile_fail
/// #[derive(Clone, Copy, PartialEq, PartialOrd)]
/// struct Meters(f64);
///
/// // SAFETY: a transparent f64 (which this example cannot make true: the trait is sealed).
/// unsafe impl rask_kernels::cpu::Elem for Meters {
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
/// ```
///
/// # Safety
///
/// Kernel buffers are byte buffers viewed as slices of elements, and elements as bytes.
/// An implementing type is plain data: no padding, no pointers, every bit pattern of its
/// size a valid value, and its size and alignment those of the dtype it stands for
/// (`NAME`).
pub unsafe trait Elem: sealed::Sealed + Copy + PartialOrd + Send + Sync + 'static {
    const NAME: &'static str;
    /// The identities of max and min (−∞ and +∞ for floats).
    const LOWEST: Self;
    const HIGHEST: Self;
    fn zero() -> Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn neg(self) -> Self;
}

/// What keeps [`Elem`] (and so [`crate::array::Pod`]) from being implemented elsewhere.
mod sealed {
    /// Implemented for the kernels' element types only.
    pub trait Sealed {}
    impl Sealed for i32 {}
    impl Sealed for i64 {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

macro_rules! elem_int {
    ($t:ty, $n:literal) => {
        // SAFETY: a primitive integer: no padding, every bit pattern a value, the size and
        // alignment of its dtype.
        unsafe impl Elem for $t {
            const NAME: &'static str = $n;
            const LOWEST: Self = <$t>::MIN;
            const HIGHEST: Self = <$t>::MAX;
            fn zero() -> Self {
                0
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            // Wrapping, as the GPU's integer arithmetic.
            fn add(self, o: Self) -> Self {
                self.wrapping_add(o)
            }
            fn sub(self, o: Self) -> Self {
                self.wrapping_sub(o)
            }
            fn mul(self, o: Self) -> Self {
                self.wrapping_mul(o)
            }
            fn neg(self) -> Self {
                self.wrapping_neg()
            }
        }
    };
}

macro_rules! elem_float {
    ($t:ty, $n:literal) => {
        // SAFETY: a primitive IEEE float: no padding, every bit pattern a value (NaNs
        // included), the size and alignment of its dtype.
        unsafe impl Elem for $t {
            const NAME: &'static str = $n;
            const LOWEST: Self = <$t>::NEG_INFINITY;
            const HIGHEST: Self = <$t>::INFINITY;
            fn zero() -> Self {
                0.0
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn add(self, o: Self) -> Self {
                self + o
            }
            fn sub(self, o: Self) -> Self {
                self - o
            }
            fn mul(self, o: Self) -> Self {
                self * o
            }
            fn neg(self) -> Self {
                -self
            }
        }
    };
}

elem_int!(i32, "i32");
elem_int!(i64, "i64");
elem_float!(f32, "f32");
elem_float!(f64, "f64");

/// Floating-point element types (the transcendental ops).
pub trait Float: Elem {
    fn map(self, f: fn(f64) -> f64) -> Self;
    fn powf(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
}

impl Float for f32 {
    fn map(self, f: fn(f64) -> f64) -> Self {
        // Computed in f64 and rounded once: at least as accurate as the GPU's f32 math.
        f(self as f64) as f32
    }
    fn powf(self, o: Self) -> Self {
        (self as f64).powf(o as f64) as f32
    }
    fn div(self, o: Self) -> Self {
        self / o
    }
}

impl Float for f64 {
    fn map(self, f: fn(f64) -> f64) -> Self {
        f(self)
    }
    fn powf(self, o: Self) -> Self {
        f64::powf(self, o)
    }
    fn div(self, o: Self) -> Self {
        self / o
    }
}

pub fn fill<T: Elem>(out: &mut [T], value: T) {
    out.fill(value);
}

pub fn arange<T: Elem>(out: &mut [T], start: T, step: T) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = start.add(T::from_f64(i as f64).mul(step));
    }
}

/// `out[i] = f(a[i], b[i])`, an operand flagged scalar read at index 0: the loop of every
/// binary kernel.
#[inline]
fn zip_broadcast<T: Copy, U>(
    a: &[T],
    b: &[T],
    out: &mut [U],
    a_scalar: bool,
    b_scalar: bool,
    f: impl Fn(T, T) -> U,
) {
    for (i, o) in out.iter_mut().enumerate() {
        let (x, y) = (
            a[if a_scalar { 0 } else { i }],
            b[if b_scalar { 0 } else { i }],
        );
        *o = f(x, y);
    }
}

/// Binary ops with scalar broadcast (an operand flagged scalar is read at index 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Max,
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
    // The op is chosen once: each arm is a loop of its own.
    match op {
        Binary::Add => zip_broadcast(a, b, out, a_scalar, b_scalar, T::add),
        Binary::Sub => zip_broadcast(a, b, out, a_scalar, b_scalar, T::sub),
        Binary::Mul => zip_broadcast(a, b, out, a_scalar, b_scalar, T::mul),
        Binary::Max => zip_broadcast(a, b, out, a_scalar, b_scalar, max),
        Binary::Min => zip_broadcast(a, b, out, a_scalar, b_scalar, min),
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
        zip_broadcast(a, b, out, a_scalar, b_scalar, T::powf);
    } else {
        zip_broadcast(a, b, out, a_scalar, b_scalar, T::div);
    }
}

pub fn neg<T: Elem>(a: &[T], out: &mut [T]) {
    for (o, &x) in out.iter_mut().zip(a) {
        *o = x.neg();
    }
}

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    Lt,
    Gt,
    Eq,
}

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

pub fn amax<T: Elem>(a: &[T]) -> Option<T> {
    a.iter().copied().fold(None, |m, x| match m {
        Some(m) if m >= x => Some(m),
        _ => Some(x),
    })
}

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

/// Philox4x32-10, as in `common.cuh`.
pub fn philox4x32_10(index: u64, seed: u64) -> [u32; 4] {
    let (mut c0, mut c1, mut c2, mut c3) = (index as u32, (index >> 32) as u32, 0u32, 0u32);
    let (mut k0, mut k1) = (seed as u32, (seed >> 32) as u32);
    for _ in 0..10 {
        let p0 = 0xD251_1F53u64 * c0 as u64;
        let p1 = 0xCD9E_8D57u64 * c2 as u64;
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        let n0 = hi1 ^ c1 ^ k0;
        let n2 = hi0 ^ c3 ^ k1;
        (c0, c1, c2, c3) = (n0, lo1, n2, lo0);
        k0 = k0.wrapping_add(0x9E37_79B9);
        k1 = k1.wrapping_add(0xBB67_AE85);
    }
    [c0, c1, c2, c3]
}

/// Element `index`'s uniform in [0, 1) with 24 bits: word `index % 4` of the Philox
/// block for counter `index / 4` (as `common.cuh`).
pub fn uniform_f32_at(index: u64, seed: u64) -> f32 {
    u24(philox4x32_10(index >> 2, seed)[(index & 3) as usize])
}

fn u24(w: u32) -> f32 {
    (w >> 8) as f32 * (1.0 / 16_777_216.0)
}

fn u53(hi: u32, lo: u32) -> f64 {
    (((hi as u64) << 21) ^ (lo >> 11) as u64) as f64 * (1.0 / 9_007_199_254_740_992.0)
}

/// Element `index`'s uniform in [0, 1) with 53 bits: word pair `index % 2` of counter
/// `index / 2`.
pub fn uniform_f64_at(index: u64, seed: u64) -> f64 {
    let p = philox4x32_10(index >> 1, seed);
    let k = 2 * (index & 1) as usize;
    u53(p[k], p[k + 1])
}

fn box_muller(p: [u32; 4]) -> (f64, f64) {
    let u1 = (p[0] as f64 + 1.0) * (1.0 / 4_294_967_296.0);
    let u2 = p[1] as f64 * (1.0 / 4_294_967_296.0);
    let r = (-2.0 * u1.ln()).sqrt();
    let t = std::f64::consts::TAU * u2;
    (r * t.cos(), r * t.sin())
}

/// Element `index`'s standard normal: Box-Muller on counter `index / 2`, the even element
/// the cosine, the odd the sine.
pub fn normal_at(index: u64, seed: u64) -> f64 {
    let (c, s) = box_muller(philox4x32_10(index >> 1, seed));
    if index & 1 == 1 {
        s
    } else {
        c
    }
}

/// `low + (high - low) * U[0,1)` for elements `offset..offset + out.len()`, one Philox
/// block per 4 (f32) or 2 (f64) elements.
pub fn random_uniform<T: Float>(out: &mut [T], seed: u64, offset: u64, low: f64, high: f64) {
    let scale = high - low;
    let f32s = T::NAME == "f32";
    let per = if f32s { 4 } else { 2 };
    let mut i = 0;
    while i < out.len() {
        let g = offset + i as u64;
        let block = philox4x32_10(g / per, seed);
        let first = (g % per) as usize;
        for w in first..per as usize {
            if i >= out.len() {
                break;
            }
            let u = if f32s {
                u24(block[w]) as f64
            } else {
                u53(block[2 * w], block[2 * w + 1])
            };
            out[i] = T::from_f64(low + scale * u);
            i += 1;
        }
    }
}

/// `mean + std * N(0,1)` for elements `offset..offset + out.len()`.
pub fn random_normal<T: Float>(out: &mut [T], seed: u64, offset: u64, mean: f64, std: f64) {
    let mut i = 0;
    while i < out.len() {
        let g = offset + i as u64;
        let (c, s) = box_muller(philox4x32_10(g >> 1, seed));
        for z in [c, s].into_iter().skip((g & 1) as usize) {
            if i >= out.len() {
                break;
            }
            out[i] = T::from_f64(mean + std * z);
            i += 1;
        }
    }
}

/// The twin of the `random_uniform_*` entry points: rows of `cols` elements, row `r`
/// starting at counter `offset + r * row_stride` (a chunk's rows in a larger array).
#[allow(clippy::too_many_arguments)]
pub fn random_rows<T: Float>(
    normal: bool,
    out: &mut [T],
    cols: usize,
    seed: u64,
    offset: u64,
    row_stride: u64,
    p0: f64,
    p1: f64,
) {
    for (r, row) in out.chunks_mut(cols.max(1)).enumerate() {
        let start = offset + r as u64 * row_stride;
        if normal {
            random_normal(row, seed, start, p0, p1);
        } else {
            random_uniform(row, seed, start, p0, p1);
        }
    }
}

/// Whole and per-axis reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    Sum,
    Max,
    Min,
}

impl Reduce {
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
    add(&["transpose"], &all);
    out.sort();
    out
}

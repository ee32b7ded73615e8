//! How closely each kernel's results on a GPU match its CPU twin's: the promise the GPU
//! conformance tests (tests/gpu.rs, run where a GPU is) hold each plan to.
//!
//! Rask's kernels are compiled without fused multiply-adds (`--fmad=false`, see
//! `rask_device::nvrtc::Options::EXACT`); additions, multiplications, divisions and
//! square roots are IEEE-rounded on both sides, and the twins reproduce the kernels'
//! order of operations (block trees and partials included), so most kernels give the
//! twin's bits exactly. Whole-array float sums are the exception in order (their twin
//! adds each block's share in sequence, not by the kernel's tree), and the others call
//! transcendental functions, whose CUDA
//! implementations have documented maximum errors (CUDA C++ Programming Guide, "Mathematical
//! Functions": `expf` 2 ulp, `logf` 1, `sinf`/`cosf` 2, `tanhf` 2, `powf` 4; double `exp`
//! and `log` 1, `sin`/`cos` 2, `tanh` 2, `pow` 2) while the host's libm is within 1 ulp:
//! the bound here is the sum. Matrix products go through cuBLAS, whose order of
//! summation and fusing is its own: they match within a tolerance, not in ulps.
//!
//! These bounds come from documentation; no GPU has measured them yet.

/// How a kernel's (or a plan's) result on a GPU compares with the CPU twin's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exactness {
    /// Bit for bit.
    Exact,
    /// Each element within this many units in the last place.
    Ulps(u32),
    /// Within a relative tolerance that grows with the length of the sums (cuBLAS).
    Tolerance,
}

impl Exactness {
    /// Whether results are bit for bit the twin's.
    pub fn is_exact(&self) -> bool {
        *self == Exactness::Exact
    }

    /// The looser of two (for a plan of several steps: ulps add up).
    pub fn then(self, other: Exactness) -> Exactness {
        use Exactness::*;
        match (self, other) {
            (Tolerance, _) | (_, Tolerance) => Tolerance,
            (Ulps(a), Ulps(b)) => Ulps(a + b),
            (Ulps(a), Exact) | (Exact, Ulps(a)) => Ulps(a),
            (Exact, Exact) => Exact,
        }
    }
}

/// The promise of kernel entry point `entry` (`exp_f32`, `sum_axis_f64`, …).
pub fn exactness(entry: &str) -> Exactness {
    let (op, dtype) = entry.rsplit_once('_').unwrap_or((entry, ""));
    let f32s = dtype == "f32";
    let ulps = match op {
        "exp" | "sin" | "cos" | "tanh" => {
            if f32s {
                3
            } else if op == "exp" {
                2
            } else {
                3
            }
        }
        "log" => 2,
        "pow" => {
            if f32s {
                5
            } else {
                3
            }
        }
        // log, sqrt, sin and cos in f64 (Box-Muller): 1 + 2 ulp on the normal's f64
        // value, plus the host's; f32 results round that away but for one ulp.
        "random_normal" => {
            if f32s {
                1
            } else {
                4
            }
        }
        // The whole-array sum's twin adds each block's elements in order, not by the
        // kernel's per-thread strides and tree: a float sum matches within a tolerance.
        // (Row and axis sums reproduce the kernels' order and are exact.)
        "sum" if f32s || dtype == "f64" => return Exactness::Tolerance,
        _ => return Exactness::Exact,
    };
    Exactness::Ulps(ulps)
}

/// The promise of a whole plan: its launches' combined, a GEMM's tolerance.
pub fn plan_exactness(plan: &crate::plan::Plan) -> Exactness {
    plan.steps.iter().fold(Exactness::Exact, |acc, s| match s {
        crate::plan::Step::Launch(l) => acc.then(exactness(&l.entry)),
        crate::plan::Step::Gemm { .. } => Exactness::Tolerance,
        crate::plan::Step::Copy { .. } => acc,
    })
}

/// The distance in units in the last place between two finite floats of one type given
/// as f64 (`f32s`: as f32), 0 for equal values (and both NaN), `u64::MAX` when one is NaN.
pub fn ulps_apart(a: f64, b: f64, f32s: bool) -> u64 {
    if a == b || (a.is_nan() && b.is_nan()) {
        return 0;
    }
    if a.is_nan() || b.is_nan() {
        return u64::MAX;
    }
    // Ordered integers: the bit patterns of floats, negatives mirrored.
    let key = |x: f64| -> i128 {
        if f32s {
            let b = (x as f32).to_bits() as i32;
            (if b < 0 { i32::MIN - b } else { b }) as i128
        } else {
            let b = x.to_bits() as i64;
            (if b < 0 { i64::MIN - b } else { b }) as i128
        }
    };
    (key(a) - key(b)).unsigned_abs().min(u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcendental_kernels_are_within_ulps_the_rest_exact() {
        assert_eq!(exactness("add_f32"), Exactness::Exact);
        assert_eq!(exactness("axpy_f64"), Exactness::Exact);
        assert_eq!(exactness("sum_axis_f32"), Exactness::Exact);
        assert_eq!(exactness("sum_rows_f64"), Exactness::Exact);
        assert_eq!(exactness("sum_f32"), Exactness::Tolerance);
        assert_eq!(exactness("sum_i64"), Exactness::Exact);
        assert_eq!(exactness("amax_f32"), Exactness::Exact);
        assert_eq!(exactness("random_uniform_f32"), Exactness::Exact);
        assert_eq!(exactness("sqrt_f32"), Exactness::Exact);
        assert_eq!(exactness("div_f64"), Exactness::Exact);
        assert_eq!(exactness("exp_f32"), Exactness::Ulps(3));
        assert_eq!(exactness("exp_f64"), Exactness::Ulps(2));
        assert_eq!(exactness("log_f64"), Exactness::Ulps(2));
        assert_eq!(exactness("sin_f64"), Exactness::Ulps(3));
        assert_eq!(exactness("pow_f32"), Exactness::Ulps(5));
        assert_eq!(exactness("random_normal_f64"), Exactness::Ulps(4));
        assert!(!exactness("tanh_f32").is_exact());
        assert!(exactness("add_f32").is_exact());
        assert!(!Exactness::Tolerance.is_exact());
    }

    #[test]
    fn a_plans_promise_is_its_loosest_step() {
        use Exactness::*;
        assert_eq!(Exact.then(Exact), Exact);
        assert_eq!(Exact.then(Ulps(2)), Ulps(2));
        assert_eq!(Ulps(2).then(Ulps(3)), Ulps(5));
        assert_eq!(Ulps(2).then(Tolerance), Tolerance);
        assert_eq!(Tolerance.then(Exact), Tolerance);
    }

    #[test]
    fn ulps_count_representable_values_between() {
        assert_eq!(ulps_apart(1.0, 1.0, false), 0);
        assert_eq!(ulps_apart(1.0, 1.0 + f64::EPSILON, false), 1);
        assert_eq!(ulps_apart(1.0, 1.0 + f32::EPSILON as f64, true), 1);
        assert_eq!(ulps_apart(1.0, 1.0 + 2.0 * f32::EPSILON as f64, true), 2);
        // Negative values, and across zero: the smallest values either side are 2 apart.
        assert_eq!(ulps_apart(-1.0, -1.0 - f64::EPSILON, false), 1);
        assert_eq!(ulps_apart(-1.0, -1.0 - 2.0 * f32::EPSILON as f64, true), 2);
        assert_eq!(ulps_apart(-3.0, 3.0, true), 2 * 3f32.to_bits() as u64);
        assert_eq!(ulps_apart(-3.0, 3.0, false), 2 * 3f64.to_bits());
        let tiny = f64::from_bits(1);
        assert_eq!(ulps_apart(-tiny, tiny, false), 2);
        let tiny32 = f32::from_bits(1) as f64;
        assert_eq!(ulps_apart(-tiny32, tiny32, true), 2);
        // Zero's neighbours are one step away.
        assert_eq!(ulps_apart(0.0, tiny, false), 1);
        assert_eq!(ulps_apart(tiny32, 0.0, true), 1);
        assert_eq!(ulps_apart(0.0, -0.0, false), 0);
        assert_eq!(ulps_apart(f64::NAN, 1.0, false), u64::MAX);
        assert_eq!(ulps_apart(f64::NAN, f64::NAN, false), 0);
    }
}

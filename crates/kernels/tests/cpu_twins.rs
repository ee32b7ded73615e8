//! The CPU twins against f64 references, with fresh random inputs each run and outputs
//! poisoned first (so an element left unwritten is caught). Bounds: f32 elementwise
//! within 1e-6 relative (well under 1e-5), f64 within 1e-13; reductions scaled by length.

mod common;

use common::Rng;
use rask_kernels::cpu::{self, Binary, Compare};

fn close(got: f64, want: f64, rel: f64, what: &str) {
    let err = (got - want).abs() / want.abs().max(1e-30);
    assert!(
        err <= rel || (got - want).abs() <= rel,
        "{what}: got {got}, want {want} (relative error {err:e} > {rel:e})"
    );
}

const N: usize = 1003;

#[test]
fn binary_ops_with_scalar_broadcast() {
    let mut r = Rng::new();
    let (a, b) = (r.vec(N, -100.0, 100.0), r.vec(N, 0.5, 100.0));
    let a32: Vec<f32> = a.iter().map(|&x| x as f32).collect();
    let b32: Vec<f32> = b.iter().map(|&x| x as f32).collect();
    for (op, f) in [
        (Binary::Add, (|x, y| x + y) as fn(f64, f64) -> f64),
        (Binary::Sub, |x, y| x - y),
        (Binary::Mul, |x, y| x * y),
        (Binary::Max, f64::max),
        (Binary::Min, f64::min),
    ] {
        for (a_s, b_s) in [(false, false), (true, false), (false, true)] {
            let mut out = vec![f64::NAN; N];
            cpu::binary(op, &a, &b, &mut out, a_s, b_s);
            let mut out32 = vec![f32::NAN; N];
            cpu::binary(op, &a32, &b32, &mut out32, a_s, b_s);
            for i in 0..N {
                let (x, y) = (a[if a_s { 0 } else { i }], b[if b_s { 0 } else { i }]);
                close(out[i], f(x, y), 1e-13, &format!("{op:?} f64 [{i}]"));
                let (x32, y32) = (a32[if a_s { 0 } else { i }], b32[if b_s { 0 } else { i }]);
                close(
                    out32[i] as f64,
                    f(x32 as f64, y32 as f64),
                    1e-6,
                    &format!("{op:?} f32 [{i}]"),
                );
            }
        }
    }
    // Integers wrap like the GPU's.
    let ai: Vec<i32> = (0..N as i32).map(|i| i * 7 - 3000).collect();
    let mut oi = vec![i32::MIN; N];
    cpu::binary(Binary::Mul, &ai, &[i32::MAX], &mut oi, false, true);
    for i in 0..N {
        assert_eq!(oi[i], ai[i].wrapping_mul(i32::MAX));
    }
    let mut out = vec![f64::NAN; N];
    cpu::binary_float(true, &b, &[1.5], &mut out, false, true);
    for i in 0..N {
        close(out[i], b[i].powf(1.5), 1e-13, "pow");
    }
    cpu::binary_float(false, &a, &b, &mut out, false, false);
    for i in 0..N {
        close(out[i], a[i] / b[i], 1e-13, "div");
    }
}

#[test]
fn unary_ops() {
    let mut r = Rng::new();
    let a = r.vec(N, 0.01, 10.0);
    let a32: Vec<f32> = a.iter().map(|&x| x as f32).collect();
    for (name, f) in cpu::UNARY_FLOAT {
        let mut out = vec![f64::NAN; N];
        cpu::unary_float(*f, &a, &mut out);
        let mut out32 = vec![f32::NAN; N];
        cpu::unary_float(*f, &a32, &mut out32);
        for i in 0..N {
            close(out[i], f(a[i]), 1e-13, name);
            close(out32[i] as f64, f(a32[i] as f64), 1e-6, name);
        }
    }
    let signed = r.vec(N, -5.0, 5.0);
    let mut out = vec![f64::NAN; N];
    cpu::abs(&signed, &mut out);
    assert!(out.iter().zip(&signed).all(|(o, x)| *o == x.abs()));
    cpu::neg(&signed, &mut out);
    assert!(out.iter().zip(&signed).all(|(o, x)| *o == -x));
}

#[test]
fn fill_arange_axpy_compare_where() {
    let mut r = Rng::new();
    let mut out = vec![0i64; N];
    cpu::fill(&mut out, 42);
    assert!(out.iter().all(|&v| v == 42));
    let mut ar = vec![f32::NAN; N];
    cpu::arange(&mut ar, 1.5, 0.25);
    for (i, v) in ar.iter().enumerate() {
        close(*v as f64, 1.5 + 0.25 * i as f64, 1e-6, "arange");
    }
    let (x, y0) = (r.vec(N, -1.0, 1.0), r.vec(N, -1.0, 1.0));
    let mut y = y0.clone();
    cpu::axpy(2.5, &x, &mut y);
    for i in 0..N {
        close(y[i], 2.5 * x[i] + y0[i], 1e-13, "axpy");
    }
    let mut mask = vec![7u8; N];
    cpu::compare(Compare::Lt, &x, &y0, &mut mask, false, false);
    for i in 0..N {
        assert_eq!(mask[i], (x[i] < y0[i]) as u8);
    }
    let mut picked = vec![f64::NAN; N];
    cpu::select(&mask, &x, &y0, &mut picked);
    for i in 0..N {
        assert_eq!(picked[i], x[i].min(y0[i]));
    }
}

#[test]
fn reductions() {
    let mut r = Rng::new();
    for n in [1usize, 2, 255, 256, 257, 100_003] {
        let a = r.vec(n, -1.0, 1.0);
        let a32: Vec<f32> = a.iter().map(|&x| x as f32).collect();
        let want: f64 = a32.iter().map(|&x| x as f64).sum();
        let scale: f64 = a32.iter().map(|&x| (x as f64).abs()).sum();
        // Pairwise sums err by about log2(n) roundings of the partial magnitudes.
        let got = cpu::sum(&a32) as f64;
        assert!(
            (got - want).abs() <= 1e-6 * scale * (n as f64).log2().max(1.0),
            "sum of {n}: {got} vs {want}"
        );
        let max = a.iter().cloned().fold(f64::MIN, f64::max);
        assert_eq!(cpu::amax(&a), Some(max));
        assert_eq!(
            cpu::amin(&a),
            Some(a.iter().cloned().fold(f64::MAX, f64::min))
        );
        let at = cpu::argmax(&a).unwrap();
        assert_eq!(a[at], max);
        assert!(a[..at].iter().all(|&v| v < max), "argmax is the first");
    }
    assert_eq!(cpu::argmax::<f32>(&[]), None);
    assert_eq!(cpu::sum(&[1i64, 2, 3]), 6);
}

#[test]
fn transpose_of_odd_shapes() {
    for (rows, cols) in [(1, 1), (3, 70), (33, 31), (64, 65)] {
        let a: Vec<i64> = (0..(rows * cols) as i64).collect();
        let mut out = vec![-1i64; rows * cols];
        cpu::transpose(&a, &mut out, rows, cols);
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(out[c * rows + r], a[r * cols + c]);
            }
        }
    }
}

#[test]
fn random_values_depend_only_on_seed_and_index() {
    let seed = Rng::new().next();
    let mut whole = vec![f32::NAN; 1000];
    cpu::random_uniform(&mut whole, seed, 0, -2.0, 3.0);
    // The same values from two chunks at their global offsets.
    let mut a = vec![f32::NAN; 333];
    let mut b = vec![f32::NAN; 667];
    cpu::random_uniform(&mut a, seed, 0, -2.0, 3.0);
    cpu::random_uniform(&mut b, seed, 333, -2.0, 3.0);
    assert_eq!(&whole[..333], &a[..]);
    assert_eq!(&whole[333..], &b[..]);
    assert!(whole.iter().all(|v| (-2.0..3.0).contains(v)));
    let mean = whole.iter().map(|&v| v as f64).sum::<f64>() / 1000.0;
    assert!((mean - 0.5).abs() < 0.25, "mean {mean}");
    let mut other = vec![0f32; 1000];
    cpu::random_uniform(&mut other, seed ^ 1, 0, -2.0, 3.0);
    assert_ne!(whole, other);
    let mut n = vec![f64::NAN; 20_000];
    cpu::random_normal(&mut n, seed, 0, 1.0, 2.0);
    let m = n.iter().sum::<f64>() / n.len() as f64;
    let sd = (n.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n.len() as f64).sqrt();
    assert!(
        (m - 1.0).abs() < 0.1 && (sd - 2.0).abs() < 0.1,
        "mean {m}, std {sd}"
    );
    // Philox4x32-10's published test vector (counter 0, key 0).
    assert_eq!(
        cpu::philox4x32_10(0, 0),
        [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
    );
}

/// The bulk generators (a Philox block per 4 or 2 elements) give exactly the per-element
/// values the CUDA kernels compute, from any starting offset.
#[test]
fn bulk_random_equals_the_per_element_scheme() {
    let seed = Rng::new().next();
    for offset in [0u64, 1, 3, 5, 1 << 33] {
        let mut f = vec![f32::NAN; 37];
        cpu::random_uniform(&mut f, seed, offset, 0.0, 1.0);
        for (i, v) in f.iter().enumerate() {
            assert_eq!(
                *v,
                cpu::uniform_f32_at(offset + i as u64, seed),
                "f32 {offset}+{i}"
            );
        }
        let mut d = vec![f64::NAN; 37];
        cpu::random_uniform(&mut d, seed, offset, 0.0, 1.0);
        for (i, v) in d.iter().enumerate() {
            assert_eq!(
                *v,
                cpu::uniform_f64_at(offset + i as u64, seed),
                "f64 {offset}+{i}"
            );
        }
        cpu::random_normal(&mut d, seed, offset, 0.0, 1.0);
        for (i, v) in d.iter().enumerate() {
            assert_eq!(
                *v,
                cpu::normal_at(offset + i as u64, seed),
                "normal {offset}+{i}"
            );
        }
    }
}

/// The rows twin adds as the kernel's block does: per-thread strides, then a tree. With
/// four threads, row [1, 1e16, 1, -1e16]: the tree adds (1 + 1) + (1e16 + -1e16) = 2,
/// where the sum in order gives 0 (1e16 + 1 loses the 1, twice).
#[test]
fn the_rows_twin_adds_in_the_kernels_order() {
    use rask_kernels::cpu::{reduce_axis, reduce_rows, Reduce};
    let row = [1.0, 1e16, 1.0, -1e16];
    let mut tree = [0.0f64];
    reduce_rows(Reduce::Sum, &row, &mut tree, 4, 4);
    assert_eq!(tree, [2.0]);
    let mut in_order = [0.0f64];
    reduce_axis(Reduce::Sum, &row, &mut in_order, 4, 1);
    assert_eq!(in_order, [0.0]);
    // Max and min do not depend on the order; several rows reduce on their own.
    let a: Vec<i64> = (0..3 * 700).map(|i| (i * 7919) % 1000 - 500).collect();
    for op in [Reduce::Max, Reduce::Min, Reduce::Sum] {
        let (mut rows, mut axis) = ([0i64; 3], [0i64; 3]);
        reduce_rows(op, &a, &mut rows, 700, 256);
        reduce_axis(op, &a, &mut axis, 700, 1);
        assert_eq!(rows, axis, "{op:?}");
    }
}

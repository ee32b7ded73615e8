//! Array graphs computed: the graphs `matmul` builds (general, transposed right
//! operand, symmetric `x @ x.T`) run task by task with the ops' CPU implementations, and
//! compared with the general blocked path; fused elementwise chains compared with the
//! same arithmetic element by element.

use std::collections::HashMap;

use rask_array::{Arg, Array, DType};
use rask_kernels::chunk::{Chunk, Pod};
use rask_kernels::Registry;
use rask_proto::Value;

/// Every task of `a`'s graph run in order; the whole array, row-major.
fn compute<T: Pod>(a: &Array) -> Vec<T> {
    let r = Registry::builtin();
    let mut done: HashMap<String, Value> = HashMap::new();
    fn resolve(a: &Arg, done: &HashMap<String, Value>) -> Value {
        match a {
            Arg::Value(v) => v.clone(),
            Arg::Key(k) => done[k].clone(),
            Arg::List(l) => Value::List(l.iter().map(|x| resolve(x, done)).collect()),
        }
    }
    for t in a.graph() {
        let args = t.args.iter().map(|x| resolve(x, &done)).collect();
        let v = r.call(&t.op, &Value::List(args)).unwrap();
        done.insert(t.key, v);
    }
    let cols = a.shape()[1] as usize;
    let mut out = vec![T::default(); a.len() as usize];
    for idx in a.chunk_indices() {
        let c = Chunk::from_value(&done[&a.chunk_key(&idx)]).unwrap();
        assert_eq!(c.shape, a.chunk_shape(&idx), "{}", a.chunk_key(&idx));
        let (o, w) = (a.chunk_origin(&idx), c.shape[1] as usize);
        for (n, v) in c.elems::<T>().unwrap().iter().enumerate() {
            let (i, j) = (o[0] as usize + n / w, o[1] as usize + n % w);
            out[i * cols + j] = *v;
        }
    }
    out
}

fn ints(rows: u64, cols: u64, chunk: &[u64], seed: i64) -> Array {
    let data: Vec<u8> = (0..(rows * cols) as i64)
        .flat_map(|i| ((i * 7919 + seed) % 23 - 11).to_le_bytes())
        .collect();
    Array::from_bytes(&[rows, cols], chunk, DType::I64, &data).unwrap()
}

/// Whether `m` (n × n) equals its transpose bit for bit.
fn symmetric(m: &[f64], n: usize) -> bool {
    (0..n).all(|i| (0..n).all(|j| m[i * n + j].to_bits() == m[j * n + i].to_bits()))
}

#[test]
fn integer_products_by_every_path_equal_the_general_one_exactly() {
    // 10 × 7 in 4 × 3 chunks: a 3 × 3 grid of output blocks with uneven edges, 3 chunks
    // along the inner dimension.
    let x = ints(10, 7, &[4, 3], 1);
    let z = ints(10, 7, &[4, 3], 5);
    let sym = compute::<i64>(&x.matmul(&x.t().unwrap()).unwrap());
    let general = compute::<i64>(&x.matmul_general(&x.t().unwrap()).unwrap());
    assert_eq!(sym, general);
    // Checked against the definition too.
    let xs = compute::<i64>(&x);
    for i in 0..10 {
        for j in 0..10 {
            let dot: i64 = (0..7).map(|k| xs[i * 7 + k] * xs[j * 7 + k]).sum();
            assert_eq!(sym[i * 10 + j], dot, "({i}, {j})");
        }
    }
    let nt = compute::<i64>(&x.matmul(&z.t().unwrap()).unwrap());
    let nt_general = compute::<i64>(&x.matmul_general(&z.t().unwrap()).unwrap());
    assert_eq!(nt, nt_general);
    assert_ne!(nt, sym);
}

#[test]
fn a_symmetric_float_product_is_exactly_symmetric_and_matches_the_general_path() {
    // 300 rows: a diagonal block of 300 × 300 is two row panels of the chunk kernel.
    for (rows, chunk) in [(10, [4, 3]), (300, [300, 64]), (700, [300, 200])] {
        let x = Array::random_uniform(&[rows, 130], &chunk, DType::F64, 3, -1.0, 1.0).unwrap();
        let s = compute::<f64>(&x.matmul(&x.t().unwrap()).unwrap());
        let g = compute::<f64>(&x.matmul_general(&x.t().unwrap()).unwrap());
        let n = rows as usize;
        // Mirrored blocks (and the mirrored half of each diagonal block) are bitwise
        // the transpose of their partners.
        assert!(symmetric(&s, n), "{rows} rows");
        // The general path sums the same products, possibly in another order inside
        // the GEMM: equal to rounding.
        for (i, (a, b)) in s.iter().zip(&g).enumerate() {
            assert!(
                (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                "{rows} rows, {i}: {a} {b}"
            );
        }
    }
}

#[test]
fn a_product_with_a_transpose_reads_it_in_place_and_matches_the_general_path() {
    let x = Array::random_uniform(&[50, 40], &[20, 15], DType::F32, 1, 0.0, 1.0).unwrap();
    let z = Array::random_uniform(&[30, 40], &[16, 15], DType::F32, 2, 0.0, 1.0).unwrap();
    let p = x.matmul(&z.t().unwrap()).unwrap();
    assert_eq!(p.shape(), &[50, 30]);
    assert!(p.graph().iter().all(|t| t.op != "array.transpose"));
    let (a, b) = (
        compute::<f32>(&p),
        compute::<f32>(&x.matmul_general(&z.t().unwrap()).unwrap()),
    );
    for (u, v) in a.iter().zip(&b) {
        assert!((u - v).abs() <= 1e-5 * (1.0 + v.abs()), "{u} {v}");
    }
}

/// The one value of a 0-d array, computed.
fn scalar(a: &Array) -> i64 {
    let r = Registry::builtin();
    let mut done: HashMap<String, Value> = HashMap::new();
    for t in a.graph() {
        let args = t
            .args
            .iter()
            .map(|x| match x {
                Arg::Key(k) => done[k].clone(),
                Arg::Value(v) => v.clone(),
                Arg::List(_) => unreachable!("no lists in these graphs"),
            })
            .collect();
        let v = r.call(&t.op, &Value::List(args)).unwrap();
        done.insert(t.key, v);
    }
    let c = Chunk::from_value(&done[&a.chunk_key(&[])]).unwrap();
    c.elems::<i64>().unwrap()[0]
}

#[test]
fn products_over_many_inner_chunks_and_their_sums_are_exact() {
    // 9 × 23 in 4 × 3 chunks: 8 chunks along the inner dimension, summed in two groups
    // of 4 and added; the symmetric sum reads the blocks above the diagonal for those
    // below.
    let x = ints(9, 23, &[4, 3], 2);
    let z = ints(9, 23, &[4, 3], 9);
    let xs = compute::<i64>(&x);
    let zs = compute::<i64>(&z);
    let dot = |a: &[i64], b: &[i64], i: usize, j: usize| -> i64 {
        (0..23).map(|k| a[i * 23 + k] * b[j * 23 + k]).sum()
    };
    let sym = x.matmul(&x.t().unwrap()).unwrap();
    let nt = x.matmul(&z.t().unwrap()).unwrap();
    for (p, b) in [(&sym, &xs), (&nt, &zs)] {
        let got = compute::<i64>(p);
        for i in 0..9 {
            for j in 0..9 {
                assert_eq!(got[i * 9 + j], dot(&xs, b, i, j), "({i}, {j})");
            }
        }
        let total: i64 = (0..9)
            .flat_map(|i| (0..9).map(move |j| (i, j)))
            .map(|(i, j)| dot(&xs, b, i, j))
            .sum();
        assert_eq!(scalar(&p.sum(3)), total);
    }
    let general = x.matmul_general(&x.t().unwrap()).unwrap();
    assert_eq!(scalar(&sym.sum(3)), scalar(&general.sum(3)));
}

#[test]
fn fused_elementwise_chains_compute_what_the_ops_compute_bit_for_bit() {
    // (x * 2 + x * z) - x / 3 in one task per chunk, against the same arithmetic element
    // by element: IEEE operations in the same order give the same bits.
    let x = Array::random_uniform(&[50, 40], &[20, 15], DType::F64, 4, -1.0, 1.0).unwrap();
    let z = Array::random_uniform(&[50, 40], &[20, 15], DType::F64, 5, -1.0, 1.0).unwrap();
    let e = &(&(&x * 2.0) + &(&x * &z)) - &(&x / 3.0);
    assert!(e.graph().iter().any(|t| t.op == "array.expr"));
    let (xs, zs, es) = (compute::<f64>(&x), compute::<f64>(&z), compute::<f64>(&e));
    for i in 0..xs.len() {
        let want = (xs[i] * 2.0 + xs[i] * zs[i]) - xs[i] / 3.0;
        assert_eq!(es[i].to_bits(), want.to_bits(), "{i}");
    }
    let x32 = Array::random_uniform(&[30, 20], &[16, 16], DType::F32, 6, 0.5, 2.0).unwrap();
    let p = &(&x32 * &x32) / 7.0;
    let q = p.binary("pow", &x32).unwrap();
    let (xs, qs) = (compute::<f32>(&x32), compute::<f32>(&q));
    for i in 0..xs.len() {
        let want = ((xs[i] * xs[i]) / 7.0).powf(xs[i]);
        assert_eq!(qs[i].to_bits(), want.to_bits(), "{i}");
    }
    // Integers: exact.
    let a = ints(10, 7, &[4, 3], 3);
    let m = a.binary("max", &(&(&a * &a) - 5.0)).unwrap();
    let (av, mv) = (compute::<i64>(&a), compute::<i64>(&m));
    for i in 0..av.len() {
        assert_eq!(mv[i], av[i].max(av[i] * av[i] - 5), "{i}");
    }
}

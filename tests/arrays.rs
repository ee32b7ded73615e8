//! Blocked arrays computed on a local cluster, checked against ndarray in this process.

mod common;

use common::{check_gram, seed, within, DEADLINE};
use rask::array::{Array, DType};
use rask::Client;

#[test]
fn matmul_of_a_transpose_summed_matches_ndarray() {
    let c = Client::new().unwrap();
    let s = seed();
    let x = Array::random_uniform(&[64, 48], &[16, 16], DType::F64, s, -1.0, 1.0).unwrap();
    let y = x.matmul(&x.t().unwrap()).unwrap();
    let total = y.sum(4);
    let xs = check_gram(&c, &x, &y);
    assert_eq!(y.shape(), &[64, 64]);
    let want = xs.dot(&xs.t());
    let t = c.compute_array::<f64>(&total).unwrap();
    assert_eq!(t.ndim(), 0);
    let t = t.into_iter().next().unwrap();
    assert!(
        (t - want.sum()).abs() <= 1e-9 * want.sum().abs().max(1.0),
        "{t}"
    );

    // Chunking does not change the values.
    let whole = Array::random_uniform(&[64, 48], &[64, 48], DType::F64, s, -1.0, 1.0).unwrap();
    assert_eq!(c.compute_array::<f64>(&whole).unwrap(), xs.into_dyn());
}

#[test]
fn elementwise_expressions_in_f32() {
    let c = Client::new().unwrap();
    let a = Array::random_normal(&[50, 30], &[20, 30], DType::F32, seed(), 0.0, 1.0).unwrap();
    let b = Array::full(&[50, 30], &[20, 30], DType::F32, 3.0).unwrap();
    let e = &(&(&a + 2.0) * &a) - &(&b / 2.0);
    let av = c.compute_array::<f32>(&a).unwrap();
    let ev = c.compute_array::<f32>(&e).unwrap();
    for (x, y) in av.iter().zip(ev.iter()) {
        let want = (x + 2.0) * x - 1.5;
        assert!(
            (y - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{y} vs {want}"
        );
    }
    // Asking for the wrong element type is an error, not garbage.
    assert!(c.compute_array::<f64>(&a).is_err());
}

/// The README's first command, small: `rask demo` runs both parts and checks its results.
#[test]
fn the_demo_runs_and_checks_its_results() {
    within(DEADLINE, || {
        let out = common::output(std::process::Command::new(common::RASK).args([
            "demo",
            "--n",
            "300",
            "--array-size",
            "64",
        ]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("= 8955050 (expected 8955050)"), "{text}");
        assert!(text.contains("(x @ x.T).sum()"), "{text}");
    });
}

#[test]
fn reductions_whole_and_along_each_axis_match_ndarray() {
    use ndarray::Axis;
    let c = Client::new().unwrap();
    let x = Array::random_uniform(&[30, 20], &[7, 6], DType::F64, seed(), -5.0, 5.0).unwrap();
    let xs = c.compute_array::<f64>(&x).unwrap();
    let one = |a: &Array| {
        c.compute_array::<f64>(a)
            .unwrap()
            .into_iter()
            .next()
            .unwrap()
    };
    let near = |a: f64, b: f64| assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} vs {b}");
    near(one(&x.sum(3)), xs.sum());
    near(one(&x.mean()), xs.mean().unwrap());
    near(one(&x.max()), xs.iter().cloned().fold(f64::MIN, f64::max));
    near(one(&x.min()), xs.iter().cloned().fold(f64::MAX, f64::min));
    for axis in 0..2 {
        let got = c
            .compute_array::<f64>(&x.sum_axis(axis, 2).unwrap())
            .unwrap();
        let want = xs.sum_axis(Axis(axis));
        assert_eq!(got.shape(), want.shape());
        got.iter().zip(want.iter()).for_each(|(a, b)| near(*a, *b));
        let got = c.compute_array::<f64>(&x.mean_axis(axis).unwrap()).unwrap();
        let want = xs.mean_axis(Axis(axis)).unwrap();
        got.iter().zip(want.iter()).for_each(|(a, b)| near(*a, *b));
        let got = c.compute_array::<f64>(&x.max_axis(axis).unwrap()).unwrap();
        let want = xs.fold_axis(Axis(axis), f64::MIN, |m, v| m.max(*v));
        got.iter().zip(want.iter()).for_each(|(a, b)| near(*a, *b));
        let got = c.compute_array::<f64>(&x.min_axis(axis).unwrap()).unwrap();
        let want = xs.fold_axis(Axis(axis), f64::MAX, |m, v| m.min(*v));
        got.iter().zip(want.iter()).for_each(|(a, b)| near(*a, *b));
    }
}

#[test]
fn arrays_from_ndarray_arange_and_persisted_arrays() {
    let c = Client::new().unwrap();
    let s = seed();
    let local = ndarray::Array2::<f64>::from_shape_fn((13, 11), |(i, j)| {
        ((i * 31 + j * 17) as u64 ^ s) as f64 % 97.0 - 48.0
    })
    .into_dyn();
    let x = rask::array::from_ndarray(&local, &[4, 5]).unwrap();
    assert_eq!(x.chunks(), &[vec![4, 4, 4, 1], vec![5, 5, 1]]);
    assert_eq!(c.compute_array::<f64>(&x).unwrap(), local);
    let doubled = c.compute_array::<f64>(&(&x * 2.0)).unwrap();
    assert_eq!(doubled, &local * 2.0);

    let r = Array::arange(10, 3, DType::F32, 1.5, 0.5).unwrap();
    let got = c.compute_array::<f32>(&r).unwrap();
    assert_eq!(
        got.as_slice().unwrap(),
        &(0..10).map(|i| 1.5 + 0.5 * i as f32).collect::<Vec<_>>()[..]
    );

    // A persisted array is computed once; expressions on it start from its chunks.
    let x = Array::random_uniform(&[48, 48], &[16, 16], DType::F64, s, 0.0, 1.0).unwrap();
    let p = c.persist_array(&x).unwrap();
    let y = p.matmul(&p.t().unwrap()).unwrap();
    assert!(
        y.graph().iter().all(|t| t.op != "array.random_uniform"),
        "the persisted chunks are not recomputed"
    );
    let xs = check_gram(&c, &x, &y);
    assert_eq!(c.compute_array::<f64>(p.array()).unwrap(), xs.into_dyn());
}

#[test]
fn slices_aligned_or_not_and_rechunks_keep_every_value() {
    use ndarray::s;
    let c = Client::new().unwrap();
    let base = seed();
    let local = ndarray::Array2::<f32>::from_shape_fn((13, 11), |(i, j)| {
        ((i as u64 * 131 + j as u64 * 7 + base) % 1000) as f32
    });
    let x = rask::array::from_ndarray(&local.clone().into_dyn(), &[4, 5]).unwrap();
    for (r, cl) in [
        (2..11, 3..10),
        (4..8, 5..10),
        (0..13, 0..11),
        (5..5, 0..3),
        (12..13, 10..11),
    ] {
        let sl = x
            .slice(&[r.start as u64..r.end as u64, cl.start as u64..cl.end as u64])
            .unwrap();
        let got = c.compute_array::<f32>(&sl).unwrap();
        let want = local.slice(s![r.clone(), cl.clone()]).to_owned().into_dyn();
        assert_eq!(got, want, "[{r:?}, {cl:?}]");
    }
    assert!(x.slice(&[0..14, 0..1]).is_err());
    for chunk in [[6u64, 4], [13, 11], [1, 11], [5, 2]] {
        let y = x.rechunk(&chunk).unwrap();
        assert_eq!(y.chunks()[0][0], chunk[0].min(13));
        assert_eq!(
            c.compute_array::<f32>(&y).unwrap(),
            local.clone().into_dyn(),
            "{chunk:?}"
        );
    }
    // After rechunking, arrays of other chunkings combine.
    let z = Array::ones(&[13, 11], &[6, 4], DType::F32).unwrap();
    let sum = &x.rechunk(&[6, 4]).unwrap() + &z;
    assert_eq!(
        c.compute_array::<f32>(&sum).unwrap(),
        (&local + 1.0).into_dyn()
    );
}

fn affine(args: &[rask::Value]) -> Result<rask::Value, String> {
    let [x, rask::Value::Float(a), rask::Value::Float(b)] = args else {
        return Err("affine(chunk, a, b)".into());
    };
    let x = rask::array::Chunk::from_value(x)?;
    let y: Vec<f64> = x.elems::<f64>()?.iter().map(|v| a * v + b).collect();
    Ok(rask::array::Chunk::from_elems(x.shape.clone(), &y)?.to_value())
}

const AFFINE: &str = "extern \"C\" __global__ void affine_f64(const double* x, double* y, unsigned long long n, double a, double b) { for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n; i += (unsigned long long)blockDim.x * gridDim.x) y[i] = a * x[i] + b; }";

#[test]
fn custom_kernels_run_by_their_cpu_twin_and_are_compile_checked() {
    use rask::Arg;
    use rask::{CudaKernel, LocalCluster, Registry};
    let kernel = |src: &str| CudaKernel {
        source: src.into(),
        entry: "affine_f64".into(),
    };
    let mut registry = Registry::builtin();
    registry.register_kernel("affine", 1, kernel(AFFINE), affine);
    // The source is part of the fingerprint the handshake compares.
    let mut other = Registry::builtin();
    other.register_kernel(
        "affine",
        1,
        kernel(&AFFINE.replace("a * x[i]", "a * x[i] * 1.0")),
        affine,
    );
    assert_ne!(registry.fingerprint(), other.fingerprint());

    let cluster = LocalCluster::builder()
        .registry(registry.clone())
        .build()
        .unwrap();
    let c = Client::for_cluster(cluster).unwrap();
    let x = Array::arange(10, 4, DType::F64, 0.0, 1.0).unwrap();
    let y = x.map_blocks("affine", vec![Arg::from(3.0), Arg::from(-1.0)]);
    let got = c.compute_array::<f64>(&y).unwrap();
    assert_eq!(
        got.as_slice().unwrap(),
        &(0..10).map(|i| 3.0 * i as f64 - 1.0).collect::<Vec<_>>()[..]
    );

    match registry.check_kernels("compute_80") {
        Ok(true) => {
            let mut broken = Registry::builtin();
            broken.register_kernel(
                "affine",
                1,
                kernel(&AFFINE.replace("a * x[i]", "a * z[i]")),
                affine,
            );
            match broken.check_kernels("compute_80") {
                Err(rask_kernels::KernelError::Compile { op, log }) => {
                    assert_eq!(op, "affine");
                    assert!(log.contains("\"z\" is undefined"), "{log}");
                }
                other => panic!("expected a compile error, got {other:?}"),
            }
        }
        Ok(false) => {
            assert!(
                std::env::var("RASK_REQUIRE_NVRTC").as_deref() != Ok("1"),
                "RASK_REQUIRE_NVRTC=1 but NVRTC is not available"
            );
            println!("SKIPPED (compile check): NVRTC is not available");
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn integer_arrays_are_exact() {
    let c = Client::new().unwrap();
    // Values from this process, in uneven chunks.
    let mut state = seed() | 1;
    let data: Vec<i64> = (0..37 * 23)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2001) as i64 - 1000
        })
        .collect();
    let nd = ndarray::Array2::from_shape_vec((37, 23), data)
        .unwrap()
        .into_dyn();
    let x = rask::array::from_ndarray(&nd, &[10, 8]).unwrap();
    let xs = nd.clone().into_dimensionality::<ndarray::Ix2>().unwrap();
    assert_eq!(c.compute_array::<i64>(&x).unwrap(), nd);

    // Elementwise with integer scalars, transpose, integer matmul, reductions.
    let e = &(&(&x * 3.0) - &x.t().unwrap().t().unwrap()) + 5.0;
    let want = xs.mapv(|v| v * 3 - v + 5);
    assert_eq!(c.compute_array::<i64>(&e).unwrap(), want.clone().into_dyn());
    let g = x.matmul(&x.t().unwrap()).unwrap();
    assert_eq!(
        c.compute_array::<i64>(&g).unwrap(),
        xs.dot(&xs.t()).into_dyn()
    );
    let total = c.compute_array::<i64>(&x.sum(3)).unwrap();
    assert_eq!(total.into_iter().next().unwrap(), xs.sum());
    let cols = c.compute_array::<i64>(&x.sum_axis(0, 2).unwrap()).unwrap();
    assert_eq!(cols, xs.sum_axis(ndarray::Axis(0)).into_dyn());
    let rows_max = c.compute_array::<i64>(&x.max_axis(1).unwrap()).unwrap();
    let want_max = xs.map_axis(ndarray::Axis(1), |r| *r.iter().max().unwrap());
    assert_eq!(rows_max, want_max.into_dyn());
    let lo = c.compute_array::<i64>(&x.min()).unwrap();
    assert_eq!(lo.into_iter().next().unwrap(), *xs.iter().min().unwrap());

    // i32 creation.
    let a = Array::arange(100, 30, DType::I32, -50.0, 2.0).unwrap();
    let av = c.compute_array::<i32>(&a).unwrap();
    assert_eq!(
        av.iter().copied().collect::<Vec<_>>(),
        (0..100).map(|i| -50 + 2 * i).collect::<Vec<i32>>()
    );
    let f = Array::full(&[4, 5], &[3, 3], DType::I32, 7.0).unwrap();
    assert!(c.compute_array::<i32>(&f).unwrap().iter().all(|&v| v == 7));

    // Division of integer arrays is refused with a clear error.
    let d = &x / 2.0;
    let err = c.compute_array::<i64>(&d).unwrap_err().to_string();
    assert!(err.contains("div is for f32 and f64"), "{err}");
}

#[test]
fn argmax_finds_the_first_largest_element() {
    let c = Client::new().unwrap();
    let x = Array::random_normal(&[57, 31], &[10, 9], DType::F64, seed(), 0.0, 1.0).unwrap();
    let xs = c.compute_array::<f64>(&x).unwrap();
    let want = xs
        .iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
        .0;
    for split_every in [2, 4, 100] {
        let got = c.compute_array::<i64>(&x.argmax(split_every)).unwrap();
        assert_eq!(got.ndim(), 0);
        assert_eq!(got.into_iter().next().unwrap(), want as i64);
    }
    // Ties across chunks: the earliest index wins, whatever the tree's order.
    let mut nd = ndarray::Array2::<i32>::zeros((6, 10));
    nd[[4, 1]] = 9;
    nd[[1, 7]] = 9;
    nd[[5, 9]] = 9;
    let t = rask::array::from_ndarray(&nd.into_dyn(), &[2, 3]).unwrap();
    let got = c.compute_array::<i64>(&t.argmax(2)).unwrap();
    assert_eq!(got.into_iter().next().unwrap(), 17);
}

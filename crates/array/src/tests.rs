//! Unit tests of the graphs arrays build.

use super::*;

#[test]
fn chunks_split_shapes_and_keys_are_per_chunk() {
    let x = Array::random_uniform(&[10, 7], &[4, 7], DType::F32, 1, 0.0, 1.0).unwrap();
    assert_eq!(x.chunks(), &[vec![4, 4, 2], vec![7]]);
    assert_eq!(x.chunk_keys().len(), 3);
    assert_eq!(x.chunk_origin(&[2, 0]), vec![8, 0]);
    assert_eq!(x.chunk_shape(&[2, 0]), vec![2, 7]);
    let g = x.graph();
    assert_eq!(g.len(), 3);
    assert_eq!(g[2].args[3], arg::ints(vec![8, 0]));
}

#[test]
fn argmax_is_a_pair_per_chunk_a_tree_and_an_index() {
    // 3 × 2 chunks: 6 chunk argmaxes, a tree of fan-in 4 (2 + 1), the index.
    let x = Array::ones(&[6, 4], &[2, 2], DType::I32).unwrap();
    let a = x.argmax(4);
    assert_eq!((a.shape(), a.dtype()), (&[][..], DType::I64));
    let g = a.graph();
    let count = |op: &str| g.iter().filter(|t| t.op == op).count();
    assert_eq!(count("array.argmax"), 6);
    assert_eq!(count("array.argmax_combine"), 3);
    assert_eq!(count("array.argmax_index"), 1);
    let last = g.last().unwrap();
    assert_eq!(last.key, a.chunk_key(&[]));
    let first = g.iter().find(|t| t.op == "array.argmax").unwrap();
    assert_eq!(first.args[1], arg::ints(vec![6, 4]));
    // Two levels of the tree, each keyed by its level.
    assert_ordered(&g);
    let level1 = format!("{}-t1-0", a.chunk_key(&[]));
    assert_eq!(last.args, vec![Arg::Key(level1)]);
}

#[test]
fn trees_of_several_levels_and_means_divide_by_the_count() {
    // 16 chunks summed 2 at a time: 8, 4 and 2 additions, then the last one; each level's
    // keys its own.
    let x = Array::ones(&[8, 8], &[2, 2], DType::F64).unwrap();
    let s = x.sum(2);
    let g = s.graph();
    assert_ordered(&g);
    assert_eq!(
        g.iter().filter(|t| t.op == "array.combine").count(),
        8 + 4 + 2 + 1
    );
    let out = s.chunk_key(&[]);
    for key in [
        format!("{out}-t0-7"),
        format!("{out}-t1-3"),
        format!("{out}-t2-1"),
    ] {
        assert!(g.iter().any(|t| t.key == key), "{key}");
    }
    // A mean is the sum divided by the count: of every element, or along the axis.
    let divisor = |a: &Array| a.graph().last().unwrap().args[2].clone();
    assert_eq!(divisor(&x.mean()), Arg::from(64.0));
    let y = Array::ones(&[8, 6], &[2, 2], DType::F64).unwrap();
    assert_eq!(divisor(&y.mean_axis(1).unwrap()), Arg::from(6.0));
    assert_eq!(divisor(&y.mean_axis(0).unwrap()), Arg::from(8.0));
}

/// Every dependency is defined earlier in the list, each key once.
fn assert_ordered(g: &[Task]) {
    let mut seen = HashSet::new();
    for t in g {
        for d in t.deps() {
            assert!(seen.contains(d), "{} needs {d} before it", t.key);
        }
        assert!(seen.insert(t.key.clone()), "{} twice", t.key);
    }
}

#[test]
fn matmul_of_a_transpose_then_sum_builds_the_expected_graph() {
    // 4 × 4 chunks, x @ x.T symmetric: each of the 10 blocks on and above the diagonal
    // is one task summing its 4 inner products in one output (syrk of x[i, 0..4] on the
    // diagonal, x[i, k] · x[j, k]ᵀ above it, read in place: no transpose of x); the 6
    // below are transposes of their mirrors. The sum: 16 chunk sums, those below the
    // diagonal reading their mirror (so nothing reads the transposes), and a tree of
    // fan-in 4 (4 + 1).
    let x = Array::random_uniform(&[8, 8], &[2, 2], DType::F64, 7, 0.0, 1.0).unwrap();
    let y = x.matmul(&x.t().unwrap()).unwrap();
    let s = y.sum(4);
    let g = s.graph();
    let count = |op: &str| g.iter().filter(|t| t.op == op).count();
    assert_eq!(count("array.random_uniform"), 16);
    assert_eq!(count("array.transpose"), 6);
    assert_eq!(count("array.syrk"), 4);
    assert_eq!(count("array.matmul"), 6);
    assert_eq!(count("array.reduce"), 16);
    assert_eq!(count("array.combine"), 5, "no partial products to add");
    for t in g.iter().filter(|t| t.op == "array.matmul") {
        assert_eq!(t.args.len(), 9);
        assert_eq!(t.args[8], arg::str("nt"));
    }
    // Block (i, j) below the diagonal is the transpose of block (j, i), and the sum reads
    // block (j, i) for it.
    let reads = |key: &str| {
        g.iter()
            .filter(|t| t.args.contains(&Arg::Key(key.to_string())))
            .count()
    };
    for i in 0..4 {
        for j in 0..i {
            let t = g.iter().find(|t| t.key == y.chunk_key(&[i, j])).unwrap();
            assert_eq!(t.op, "array.transpose");
            assert_eq!(t.args, vec![Arg::Key(y.chunk_key(&[j, i]))]);
            assert_eq!(
                reads(&y.chunk_key(&[i, j])),
                0,
                "({i}, {j}) is read by nothing"
            );
            // Read by its transpose and by two chunk sums: its own and its mirror's.
            assert_eq!(reads(&y.chunk_key(&[j, i])), 3, "({j}, {i})");
        }
    }
    // Above it, block (i, j) is Σₖ x[i, k] · x[j, k]ᵀ; on it, Σₖ syrk(x[i, k]).
    let p = g.iter().find(|t| t.key == y.chunk_key(&[1, 2])).unwrap();
    let mut want: Vec<Arg> = (0..4)
        .flat_map(|k| {
            [
                Arg::Key(x.chunk_key(&[1, k])),
                Arg::Key(x.chunk_key(&[2, k])),
            ]
        })
        .collect();
    want.push(arg::str("nt"));
    assert_eq!((p.op.as_str(), &p.args), ("array.matmul", &want));
    // Its dependencies: the keys among its arguments, in order.
    let deps: Vec<String> = (0..4)
        .flat_map(|k| [x.chunk_key(&[1, k]), x.chunk_key(&[2, k])])
        .collect();
    assert_eq!(p.deps().collect::<Vec<_>>(), deps);
    let d = g.iter().find(|t| t.key == y.chunk_key(&[3, 3])).unwrap();
    assert_eq!(d.op, "array.syrk");
    let want: Vec<Arg> = (0..4).map(|k| Arg::Key(x.chunk_key(&[3, k]))).collect();
    assert_eq!(d.args, want);
    assert_ordered(&g);
    assert_eq!(g.last().unwrap().key, s.name());
    assert_eq!(y.shape(), &[8, 8]);
    assert_eq!(y.chunks(), x.chunks());
    // Along one axis a transpose is no shortcut: the sums read y's own chunks.
    let rows = y.sum_axis(1, 4).unwrap().graph();
    for i in 0..4 {
        for j in 0..i {
            let key = Arg::Key(y.chunk_key(&[i, j]));
            assert!(rows
                .iter()
                .any(|t| t.op == "array.reduce" && t.args.contains(&key)));
        }
    }
}

#[test]
fn a_product_over_many_inner_chunks_sums_groups_by_a_tree() {
    // 10 inner chunks: groups of 4, 4 and 2 products, each one task, added by a binary
    // tree (2 additions).
    let a = Array::random_uniform(&[2, 20], &[2, 2], DType::F64, 1, 0.0, 1.0).unwrap();
    let b = Array::random_uniform(&[20, 2], &[2, 2], DType::F64, 2, 0.0, 1.0).unwrap();
    let p = a.matmul(&b).unwrap();
    let g = p.graph();
    let products: Vec<&Task> = g.iter().filter(|t| t.op == "array.matmul").collect();
    let sizes: Vec<usize> = products.iter().map(|t| t.args.len() / 2).collect();
    assert_eq!(sizes, [4, 4, 2]);
    let first: Vec<Arg> = (0..4)
        .flat_map(|k| {
            [
                Arg::Key(a.chunk_key(&[0, k])),
                Arg::Key(b.chunk_key(&[k, 0])),
            ]
        })
        .collect();
    assert_eq!(products[0].args, first);
    assert_eq!(g.iter().filter(|t| t.op == "array.combine").count(), 2);
    assert_eq!(g.last().unwrap().key, p.chunk_key(&[0, 0]));
    assert_ordered(&g);
}

#[test]
fn a_symmetric_product_computes_the_upper_triangle_of_blocks() {
    // n × n output blocks, one chunk along the inner dimension: n(n + 1)/2 GEMMs (n of
    // them syrk), n(n - 1)/2 mirrors.
    for n in 1..6u64 {
        let x = Array::random_uniform(&[2 * n, 3], &[2, 3], DType::F32, 1, 0.0, 1.0).unwrap();
        let g = x.matmul(&x.t().unwrap()).unwrap().graph();
        let count = |op: &str| g.iter().filter(|t| t.op == op).count() as u64;
        assert_eq!(count("array.matmul") + count("array.syrk"), n * (n + 1) / 2);
        assert_eq!(count("array.syrk"), n);
        assert_eq!(count("array.transpose"), n * (n - 1) / 2);
        assert_ordered(&g);
    }
}

#[test]
fn products_with_other_operands_keep_every_block() {
    let x = Array::random_uniform(&[6, 4], &[2, 2], DType::F32, 1, 0.0, 1.0).unwrap();
    let z = Array::random_uniform(&[6, 4], &[2, 2], DType::F32, 2, 0.0, 1.0).unwrap();
    let count = |a: &Array, op: &str| a.graph().iter().filter(|t| t.op == op).count();
    // x @ z.T: 3 × 3 blocks, each one task of 2 products, z read transposed in place.
    let nt = x.matmul(&z.t().unwrap()).unwrap();
    assert_eq!(
        (count(&nt, "array.matmul"), count(&nt, "array.transpose")),
        (9, 0)
    );
    let p = nt
        .graph()
        .into_iter()
        .find(|t| t.op == "array.matmul")
        .unwrap();
    let want = vec![
        Arg::Key(x.chunk_key(&[0, 0])),
        Arg::Key(z.chunk_key(&[0, 0])),
        Arg::Key(x.chunk_key(&[0, 1])),
        Arg::Key(z.chunk_key(&[0, 1])),
        arg::str("nt"),
    ];
    assert_eq!(p.args, want);
    // A transpose on the left, or a product forced general, is general: x.T @ x is
    // 2 × 2 blocks of 3 products, with x.T's 6 transposes.
    let tx = x.t().unwrap().matmul(&x).unwrap();
    assert_eq!(
        (count(&tx, "array.matmul"), count(&tx, "array.transpose")),
        (4, 6)
    );
    let g = x.matmul_general(&x.t().unwrap()).unwrap();
    assert_eq!(
        (count(&g, "array.matmul"), count(&g, "array.transpose")),
        (9, 6)
    );
    assert!(g
        .graph()
        .iter()
        .all(|t| t.args.len() == 4 || t.op != "array.matmul"));
    // A transpose of another array with x's shape and chunks is not symmetric.
    let w = x.matmul(&x.from_existing("other").t().unwrap()).unwrap();
    assert_eq!(count(&w, "array.syrk"), 0);
    assert_eq!(count(&w, "array.matmul"), 9);
    assert_eq!(x.t().unwrap().t().unwrap().shape(), x.shape());
}

#[test]
fn reductions_along_an_axis_keep_the_other_dimensions_chunks() {
    let x = Array::ones(&[4, 6], &[2, 3], DType::F64).unwrap();
    let s0 = x.sum_axis(0, 8).unwrap();
    assert_eq!(s0.shape(), &[6]);
    assert_eq!(s0.chunks(), &[vec![3, 3]]);
    let own: Vec<Task> = s0
        .graph()
        .into_iter()
        .filter(|t| t.key.starts_with(s0.name()))
        .collect();
    // Per output chunk: one reduction per chunk along axis 0 (2) and one combine.
    assert_eq!(own.iter().filter(|t| t.op == "array.reduce").count(), 4);
    assert_eq!(own.iter().filter(|t| t.op == "array.combine").count(), 2);
    let m = x.mean_axis(1).unwrap();
    assert_eq!(m.shape(), &[4]);
    assert_eq!(x.max().shape(), &[] as &[u64]);
    assert!(x.sum_axis(2, 8).is_err());
    assert!(x.reduce("median", None, 8).is_err());
}

#[test]
fn mismatches_are_errors() {
    let a = Array::ones(&[4, 4], &[2, 2], DType::F32).unwrap();
    let b = Array::ones(&[4, 4], &[4, 4], DType::F32).unwrap();
    let c = Array::ones(&[4, 3], &[2, 3], DType::F32).unwrap();
    assert!(matches!(a.binary("add", &b), Err(ArrayError::Chunks(..))));
    assert!(matches!(a.binary("add", &c), Err(ArrayError::Shape(..))));
    assert!(matches!(c.matmul(&c), Err(ArrayError::Shape(..))));
    // A product of a 2-d and a 1-d array (either way round) is refused, not built.
    let v = Array::ones(&[4], &[2], DType::F32).unwrap();
    assert!(matches!(a.matmul(&v), Err(ArrayError::Invalid(_))));
    assert!(matches!(v.matmul(&a), Err(ArrayError::Invalid(_))));
    assert!(matches!(a.matmul(&b), Err(ArrayError::Chunks(..))));
    let i = Array::ones(&[4, 4], &[2, 2], DType::I32).unwrap();
    assert!(matches!(a.matmul(&i), Err(ArrayError::DType(..))));
    assert!(Array::ones(&[4], &[2, 2], DType::F32).is_err());
    assert!(Array::ones(&[4], &[2], DType::U8).is_err());
    assert!(Array::random_uniform(&[4], &[2], DType::I32, 1, 0.0, 1.0).is_err());
    // (a + 1) * a: a's chunks and one fused task per chunk.
    let d = &(&a + 1.0) * &a;
    let g = d.graph();
    assert_eq!(g.len(), 4 + 4);
    assert_eq!(g[4].op, "array.expr");
    assert_eq!(g[4].args[0], arg::str("x0 add:1 x0 mul"));
}

#[test]
fn chains_of_elementwise_ops_are_one_task_per_chunk() {
    let x = Array::random_uniform(&[8, 8], &[4, 4], DType::F32, 1, 0.0, 1.0).unwrap();
    let z = Array::random_uniform(&[8, 8], &[4, 4], DType::F32, 2, 0.0, 1.0).unwrap();
    // dask-cuda's elementwise benchmark: five ops, one task per chunk, then the sum.
    let e = &(&(&x * 2.0) + &(&x * &x)) - &(&x / 3.0);
    let g = e.sum(4).graph();
    let count = |op: &str| g.iter().filter(|t| t.op == op).count();
    assert_eq!((count("array.expr"), count("array.binary")), (4, 0));
    let t = g.iter().find(|t| t.key == e.chunk_key(&[1, 0])).unwrap();
    assert_eq!(
        t.args,
        vec![
            arg::str("x0 mul:2 x0 x0 mul add x0 div:3 sub"),
            Arg::Key(x.chunk_key(&[1, 0]))
        ]
    );
    assert_ordered(&g);
    // Two arrays: each read once, numbered by first appearance.
    let w = &(&x + &z) * &x;
    let t = &w.graph()[8];
    assert_eq!(
        t.args,
        vec![
            arg::str("x0 x1 add x0 mul"),
            Arg::Key(x.chunk_key(&[0, 0])),
            Arg::Key(z.chunk_key(&[0, 0]))
        ]
    );
    // An intermediate is not computed for the chain; computed for itself, it is its
    // own tasks (one op: array.binary).
    let y = &x * 2.0;
    let y1 = &y + 1.0;
    assert!(y1.graph().iter().all(|t| !t.key.starts_with(y.name())));
    assert!(y.graph().iter().any(|t| t.op == "array.binary"));
    // A transpose (or a product, a reduction) is not elementwise: a chain reads its
    // chunks.
    let xt = x.t().unwrap();
    let s = &xt * 2.0;
    assert_eq!(s.graph().last().unwrap().op, "array.binary");
    let m = &(&s * 3.0) + 1.0;
    let last = m.graph().pop().unwrap();
    assert_eq!(last.args[0], arg::str("x0 mul:2 mul:3 add:1"));
    assert_eq!(last.args[1], Arg::Key(xt.chunk_key(&[1, 1])));
}

#[test]
fn a_chain_past_the_limits_reads_its_operand_as_it_is() {
    let x = Array::ones(&[4], &[2], DType::F64).unwrap();
    let mut y = x.clone();
    for _ in 0..fuse::MAX_OPS {
        y = &y + 1.0;
    }
    let g = y.graph();
    assert_eq!(g.len(), 2 + 2, "16 ops in one task per chunk");
    assert_eq!(g[2].args.len(), 2);
    // One more: a task of one op on the 16-op chunks, then a new chain.
    let over = &y + 1.0;
    let g = over.graph();
    assert_eq!(g.len(), 2 + 2 + 2);
    assert_eq!(g[4].op, "array.binary");
    assert_eq!(g[4].args[1], Arg::Key(y.chunk_key(&[0])));
    let again = &(&over * 2.0) - 1.0;
    let last = again.graph().pop().unwrap();
    assert_eq!(last.args[0], arg::str("x0 mul:2 sub:1"));
    assert_eq!(last.args[1], Arg::Key(over.chunk_key(&[1])));
    // Inputs: at most 8 arrays in one task.
    let arrays: Vec<Array> = (0..10)
        .map(|i| Array::full(&[4], &[2], DType::F64, i as f64).unwrap())
        .collect();
    let mut sum = arrays[0].clone();
    for a in &arrays[1..] {
        sum = &sum + a;
    }
    let inputs = |a: &Array| a.graph().last().unwrap().args.len() - 1;
    assert!(inputs(&sum) <= fuse::MAX_INPUTS, "{}", inputs(&sum));
    // Ops a program does not have are tasks of their own.
    let odd = x.scalar("mod", 2.0);
    assert_eq!(odd.graph().last().unwrap().op, "array.binary");
    let after = &(&odd * 2.0) + 1.0;
    assert_eq!(
        after.graph().last().unwrap().args[0],
        arg::str("x0 mul:2 add:1")
    );
}

/// The panic message of `op(a, b)`.
fn panic_message(op: impl FnOnce() -> Array) -> String {
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(op))
        .expect_err("the operator did not panic");
    match err.downcast::<String>() {
        Ok(s) => *s,
        Err(e) => e.downcast_ref::<&str>().unwrap().to_string(),
    }
}

#[test]
fn checked_operators_return_the_error_and_the_operators_panic_naming_both_shapes() {
    let a = Array::ones(&[4, 4], &[2, 2], DType::F32).unwrap();
    let c = Array::ones(&[4, 3], &[2, 3], DType::F32).unwrap();
    let shapes = ArrayError::Shape(vec![4, 4], vec![4, 3]);
    assert_eq!(a.try_add(&c).unwrap_err(), shapes);
    assert_eq!(a.try_sub(&c).unwrap_err(), shapes);
    assert_eq!(a.try_mul(&c).unwrap_err(), shapes);
    assert_eq!(a.try_div(&c).unwrap_err(), shapes);
    type Op = fn(&Array, &Array) -> Array;
    let cases: [(&str, &str, Op); 4] = [
        ("+", "try_add", |x, y| x + y),
        ("-", "try_sub", |x, y| x - y),
        ("*", "try_mul", |x, y| x * y),
        ("/", "try_div", |x, y| x / y),
    ];
    for (sym, checked, op) in cases {
        assert_eq!(
            panic_message(|| op(&a, &c)),
            format!(
                "`{sym}` of arrays of shapes [4, 4] and [4, 3]: shapes [4, 4] and [4, 3] \
                 differ; Array::{checked} returns this as an error"
            )
        );
    }

    // Same shapes, other chunks or dtype: the message still names both shapes.
    let b = Array::ones(&[4, 4], &[4, 4], DType::F32).unwrap();
    let msg = panic_message(|| &a + &b);
    assert!(
        msg.starts_with("`+` of arrays of shapes [4, 4] and [4, 4]: chunks"),
        "{msg}"
    );
    assert!(
        msg.ends_with("; Array::try_add returns this as an error"),
        "{msg}"
    );
    assert!(matches!(a.try_add(&b), Err(ArrayError::Chunks(..))));
    let i = Array::ones(&[4, 4], &[2, 2], DType::I32).unwrap();
    let msg = panic_message(|| &a * &i);
    assert!(
        msg.contains("shapes [4, 4] and [4, 4]: dtypes f32 and i32 differ"),
        "{msg}"
    );
    assert!(
        msg.ends_with("Array::try_mul returns this as an error"),
        "{msg}"
    );

    // On matching arrays the checked methods build what the operators build.
    let (x, y) = (a.try_sub(&a).unwrap(), &a - &a);
    let ops = |g: Vec<Task>| {
        g.into_iter()
            .map(|t| (t.op, t.args.len()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ops(x.graph()), ops(y.graph()));
    assert_eq!(x.graph().last().unwrap().args[0], arg::str("sub"));
}

#[test]
fn emptiness_and_the_debug_form_tell_the_array() {
    let x = Array::zeros(&[3, 0], &[2, 2], DType::F32).unwrap();
    assert!(x.is_empty());
    assert_eq!(x.len(), 0);
    let y = Array::ones(&[3, 2], &[2, 2], DType::F32).unwrap();
    assert!(!y.is_empty());
    let shown = format!("{y:?}");
    assert!(shown.starts_with("Array {"), "{shown}");
    for part in [y.name(), "[3, 2]", "[[2, 1], [2]]", "F32"] {
        assert!(shown.contains(part), "{part} in {shown}");
    }
}

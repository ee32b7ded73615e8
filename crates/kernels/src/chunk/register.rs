//! The `array.*` ops as the registry runs them: each parses its arguments into chunks and
//! numbers, picks the element type, and calls its implementation in `ops`.

use rask_proto::{DType, Value};

use super::expr::{expr, Program};
use super::ops::*;
use super::{dtype, float, int_list, make, Chunk};
use crate::{OpError, Registry};

macro_rules! by_dtype {
    ($dt:expr, $f:ident ( $($arg:expr),* )) => {
        match $dt {
            DType::F32 => $f::<f32>($($arg),*),
            DType::F64 => $f::<f64>($($arg),*),
            DType::I32 => $f::<i32>($($arg),*),
            DType::I64 => $f::<i64>($($arg),*),
            d => Err(OpError::UnsupportedDType(d)),
        }
    };
}

macro_rules! float_dtype {
    ($dt:expr, $f:ident ( $($arg:expr),* )) => {
        match $dt {
            DType::F32 => $f::<f32>($($arg),*),
            DType::F64 => $f::<f64>($($arg),*),
            d => Err(OpError::RandomDType(d)),
        }
    };
}

/// Registers the `array.*` ops.
pub(crate) fn register(r: &mut Registry) {
    r.register_typed("array.argmax", 1, |a| {
        let [x, global, origin] = a else {
            return Err(OpError::Args("argmax: (chunk, global shape, origin)"));
        };
        let x = Chunk::from_value(x)?;
        let (global, origin) = (
            int_list(global, "global shape")?,
            int_list(origin, "origin")?,
        );
        by_dtype!(x.dtype, argmax_chunk(&x, &global, &origin))
    });
    r.register_typed("array.argmax_combine", 1, |a| {
        let pairs = argmax_pairs(a)?;
        let Some((first, _)) = pairs.first() else {
            return Ok(Value::List(vec![Value::Null, Value::Null]));
        };
        let n = by_dtype!(first.dtype, argmax_pick(&pairs))?;
        let (c, at) = &pairs[n];
        Ok(Value::List(vec![c.to_value(), Value::Int(*at)]))
    });
    r.register_typed("array.argmax_index", 1, |a| {
        let pairs = argmax_pairs(a)?;
        let [(_, at)] = pairs[..] else {
            return Err(OpError::Args("argmax of an empty array"));
        };
        Ok(make::<i64>(vec![], |o| o[0] = at).to_value())
    });
    r.register_typed("array.random_uniform", 1, |a| {
        let dt = dtype(a.first().ok_or(OpError::Args("random: no dtype"))?)?;
        float_dtype!(dt, random(false, a)).map(|c| c.to_value())
    });
    r.register_typed("array.random_normal", 1, |a| {
        let dt = dtype(a.first().ok_or(OpError::Args("random: no dtype"))?)?;
        float_dtype!(dt, random(true, a)).map(|c| c.to_value())
    });
    r.register_typed("array.arange", 1, |a| {
        let [dt, start, step, Value::Int(n)] = a else {
            return Err(OpError::Args("arange: (dtype, start, step, n)"));
        };
        let (dt, start, step) = (dtype(dt)?, float(start)?, float(step)?);
        let n = (*n).max(0) as u64;
        by_dtype!(dt, arange_chunk(n, start, step)).map(|c| c.to_value())
    });
    r.register_typed("array.assemble", 1, |a| {
        let [shape, pieces @ ..] = a else {
            return Err(OpError::Args(
                "assemble: (shape, (chunk, src start, dst start, extent)…)",
            ));
        };
        let shape = int_list(shape, "shape")?;
        if pieces.is_empty() || pieces.len() % 4 != 0 {
            return Err(OpError::Args(
                "assemble: pieces are (chunk, src start, dst start, extent)",
            ));
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
    r.register_typed("array.full", 1, |a| {
        let [dt, shape, value] = a else {
            return Err(OpError::Args("full: (dtype, shape, value)"));
        };
        let (dt, shape, value) = (dtype(dt)?, int_list(shape, "shape")?, float(value)?);
        by_dtype!(dt, full(shape, value)).map(|c| c.to_value())
    });
    r.register_typed("array.binary", 1, |a| {
        let [Value::Str(op), x, y] = a else {
            return Err(OpError::Args("binary: (op, chunk, chunk or number)"));
        };
        let x = Chunk::from_value(x)?;
        let y = match y {
            Value::Float(_) | Value::Int(_) => Either::Scalar(float(y)?),
            v => Either::Chunk(Chunk::from_value(v)?),
        };
        if let Either::Chunk(c) = &y {
            if c.dtype != x.dtype {
                return Err(OpError::DTypes(x.dtype, c.dtype));
            }
        }
        by_dtype!(x.dtype, binary(op, &x, y)).map(|c| c.to_value())
    });
    r.register_typed("array.transpose", 1, |a| {
        let [x] = a else {
            return Err(OpError::Args("transpose: (chunk)"));
        };
        let x = Chunk::from_value(x)?;
        by_dtype!(x.dtype, transpose(&x)).map(|c| c.to_value())
    });
    // Σⱼ xⱼ · yⱼ: (x₀, y₀, x₁, y₁, …[, "nt"]).
    r.register_typed("array.matmul", 1, |a| {
        const USE: &str = "matmul: (chunk, chunk, …[, \"nt\"]), chunks in pairs";
        let (chunks, nt) = match a {
            [rest @ .., Value::Str(t)] if t == "nt" => (rest, true),
            _ => (a, false),
        };
        if chunks.is_empty() || chunks.len() % 2 != 0 {
            return Err(OpError::Args(USE));
        }
        let (chunks, dtype) = same_dtype(chunks)?;
        let mut it = chunks.into_iter();
        let mut pairs = Vec::new();
        while let (Some(x), Some(y)) = (it.next(), it.next()) {
            pairs.push((x, y));
        }
        by_dtype!(dtype, matmul(&pairs, nt)).map(|c| c.to_value())
    });
    // Σⱼ xⱼ · xⱼᵀ: (x₀, x₁, …).
    r.register_typed("array.syrk", 1, |a| {
        if a.is_empty() {
            return Err(OpError::Args("syrk: (chunk, …)"));
        }
        let (chunks, dtype) = same_dtype(a)?;
        by_dtype!(dtype, syrk(&chunks)).map(|c| c.to_value())
    });
    // A chain of elementwise ops in one pass: (program, chunks…), see `expr`.
    r.register_typed("array.expr", 1, |a| {
        let [Value::Str(program), chunks @ ..] = a else {
            return Err(OpError::Args("expr: (program, chunk, …)"));
        };
        let program = Program::parse(program)?;
        let (chunks, dtype) = same_dtype(chunks)?;
        by_dtype!(dtype, expr(&program, &chunks)).map(|c| c.to_value())
    });
    r.register_typed("array.reduce", 1, |a| {
        let [Value::Str(op), axis, x] = a else {
            return Err(OpError::Args("reduce: (op, axis or -1, chunk)"));
        };
        let axis = match axis {
            Value::Int(i) if *i >= 0 => Some(*i as usize),
            Value::Int(_) => None,
            _ => return Err(OpError::Args("reduce: the axis is an integer")),
        };
        let x = Chunk::from_value(x)?;
        by_dtype!(x.dtype, reduce(op, axis, &x)).map(|c| c.to_value())
    });
    r.register_typed("array.combine", 1, |a| {
        let [Value::Str(op), rest @ ..] = a else {
            return Err(OpError::Args("combine: (op, chunk, …)"));
        };
        let chunks = rest
            .iter()
            .map(Chunk::from_value)
            .collect::<Result<Vec<_>, _>>()?;
        let dt = chunks
            .first()
            .ok_or(OpError::Args("combine of nothing"))?
            .dtype;
        by_dtype!(dt, combine(op, &chunks)).map(|c| c.to_value())
    });
}

/// The chunks of `values` (at least one), and their one dtype: another is refused.
fn same_dtype(values: &[Value]) -> Result<(Vec<Chunk>, DType), OpError> {
    let chunks = values
        .iter()
        .map(Chunk::from_value)
        .collect::<Result<Vec<_>, _>>()?;
    let dtype = chunks.first().ok_or(OpError::Args("no chunk"))?.dtype;
    if let Some(c) = chunks.iter().find(|c| c.dtype != dtype) {
        return Err(OpError::DTypes(dtype, c.dtype));
    }
    Ok((chunks, dtype))
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
    fn transposed_and_symmetric_products_match_the_plain_one() {
        let r = Registry::builtin();
        let call = |op: &str, args: Vec<Value>| {
            let v = r.call(op, &Value::List(args)).unwrap();
            let c = Chunk::from_value(&v).unwrap();
            (c.shape.clone(), c.elems::<f32>().unwrap().into_owned())
        };
        // 300 rows: two row panels of the symmetric kernel, the second shorter.
        let (n, k) = (300u64, 70u64);
        let a: Vec<f32> = (0..n * k).map(|i| ((i * 31) % 17) as f32 - 8.0).collect();
        let x = Chunk::from_elems(vec![n, k], &a).unwrap().to_value();
        let (_, t) = call("array.transpose", vec![x.clone()]);
        let xt = Chunk::from_elems(vec![k, n], &t).unwrap().to_value();
        let (shape, plain) = call("array.matmul", vec![x.clone(), xt]);
        assert_eq!(shape, vec![n, n]);
        let nt = call(
            "array.matmul",
            vec![x.clone(), x.clone(), Value::Str("nt".into())],
        );
        let syrk = call("array.syrk", vec![x.clone()]);
        // Small integers: every product and sum is exact, whatever the order.
        assert_eq!(nt, (shape.clone(), plain.clone()));
        assert_eq!(syrk, (shape, plain.clone()));
        let dot = |i: usize, j: usize| -> f32 {
            (0..k as usize)
                .map(|p| a[i * k as usize + p] * a[j * k as usize + p])
                .sum()
        };
        for (i, j) in [(0, 299), (299, 0), (5, 260), (260, 5), (299, 299)] {
            assert_eq!(plain[i * n as usize + j], dot(i, j), "({i}, {j})");
        }
        let bad = r.call(
            "array.matmul",
            &Value::List(vec![x.clone(), x.clone(), Value::Str("tn".into())]),
        );
        assert!(bad.is_err());
        let y = Chunk::from_elems(vec![2, 70], &[1f32; 140])
            .unwrap()
            .to_value();
        let ok = call(
            "array.matmul",
            vec![x.clone(), y.clone(), Value::Str("nt".into())],
        );
        assert_eq!(ok.0, vec![n, 2]);
        let y = Chunk::from_elems(vec![2, 3], &[1f32; 6])
            .unwrap()
            .to_value();
        let wrong = r.call(
            "array.matmul",
            &Value::List(vec![x, y, Value::Str("nt".into())]),
        );
        assert!(wrong.is_err());
    }

    /// A sum of products in one call equals the products summed one by one: for every
    /// form (plain, transposed, symmetric), in floats (small integers: exact in any
    /// order) and integers, with inner extents that differ; mismatched terms are refused.
    /// Output buffers as a worker's arena gives them: not zeroed.
    struct Dirty;
    struct DirtyBuf(Vec<u8>);
    impl crate::output::OutputAlloc for Dirty {
        fn alloc(&self, len: usize) -> Option<Box<dyn crate::output::OutputBuf>> {
            Some(Box::new(DirtyBuf(vec![0x5a; len])))
        }
    }
    impl crate::output::OutputBuf for DirtyBuf {
        fn bytes_mut(&mut self) -> &mut [u8] {
            &mut self.0
        }
        fn freeze(self: Box<Self>) -> bytes::Bytes {
            self.0.into()
        }
    }

    #[test]
    fn sums_of_products_accumulate_in_one_output() {
        let alloc: std::sync::Arc<dyn crate::output::OutputAlloc> = std::sync::Arc::new(Dirty);
        let _dirty = crate::output::scoped(&alloc);
        let r = Registry::builtin();
        let call = |op: &str, args: Vec<Value>| {
            let v = r.call(op, &Value::List(args)).unwrap();
            Chunk::from_value(&v).unwrap()
        };
        let nt = || Value::Str("nt".into());
        fn as_f64(c: Chunk) -> Vec<f64> {
            match c.dtype {
                DType::F32 => c
                    .elems::<f32>()
                    .unwrap()
                    .iter()
                    .map(|&x| x as f64)
                    .collect(),
                _ => c
                    .elems::<i64>()
                    .unwrap()
                    .iter()
                    .map(|&x| x as f64)
                    .collect(),
            }
        }
        fn fill(n: u64, k: u64, seed: u64) -> Vec<i64> {
            (0..n * k)
                .map(|i| ((i * 31 + seed * 7) % 13) as i64 - 6)
                .collect()
        }
        // 300 rows: the symmetric kernel's two row panels; inner extents 70 and 45.
        let (m, n) = (300u64, 260u64);
        let terms: Vec<(Vec<i64>, Vec<i64>, u64)> = [(70u64, 1u64), (45, 2), (8, 3)]
            .iter()
            .map(|&(k, seed)| (fill(m, k, seed), fill(n, k, seed + 10), k))
            .collect();
        let f32s = |v: &[i64], shape: Vec<u64>| {
            let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            Chunk::from_elems(shape, &f).unwrap().to_value()
        };
        let i64s = |v: &[i64], shape: Vec<u64>| Chunk::from_elems(shape, v).unwrap().to_value();
        for (name, make) in [
            ("f32", &f32s as &dyn Fn(&[i64], Vec<u64>) -> Value),
            ("i64", &i64s),
        ] {
            // Each product alone, summed here in f64 (exact for these small integers).
            let one = |op: &str, args: Vec<Value>| as_f64(call(op, args));
            let add = |acc: &mut Vec<f64>, v: Vec<f64>| {
                if acc.is_empty() {
                    *acc = v;
                } else {
                    acc.iter_mut().zip(v).for_each(|(a, b)| *a += b);
                }
            };
            let (mut nt_sum, mut syrk_sum) = (Vec::new(), Vec::new());
            let (mut nt_args, mut syrk_args) = (Vec::new(), Vec::new());
            for (a, b, k) in &terms {
                let (a, b) = (make(a, vec![m, *k]), make(b, vec![n, *k]));
                add(
                    &mut nt_sum,
                    one("array.matmul", vec![a.clone(), b.clone(), nt()]),
                );
                add(&mut syrk_sum, one("array.syrk", vec![a.clone()]));
                nt_args.extend([a.clone(), b]);
                syrk_args.push(a);
            }
            // The sums by the definition: Σₚ a[i, p] · b[j, p] (b: a itself for syrk).
            let defined = |with_b: bool, cols: u64| -> Vec<f64> {
                let mut out = vec![0.0; (m * cols) as usize];
                for (a, b, k) in &terms {
                    let (b, k) = (if with_b { b } else { a }, *k as usize);
                    for i in 0..m as usize {
                        for j in 0..cols as usize {
                            let dot: i64 = (0..k).map(|p| a[i * k + p] * b[j * k + p]).sum();
                            out[i * cols as usize + j] += dot as f64;
                        }
                    }
                }
                out
            };
            assert_eq!(nt_sum, defined(true, n), "{name}: nt by the definition");
            assert_eq!(
                syrk_sum,
                defined(false, m),
                "{name}: syrk by the definition"
            );
            let mut args = nt_args.clone();
            args.push(nt());
            let fused = call("array.matmul", args);
            assert_eq!(fused.shape, vec![m, n], "{name}");
            assert_eq!(as_f64(fused), nt_sum, "{name}: nt");
            let fused = call("array.syrk", syrk_args.clone());
            assert_eq!(fused.shape, vec![m, m], "{name}");
            assert_eq!(as_f64(fused), syrk_sum, "{name}: syrk");
            // The plain form: b given as its transpose (k × n).
            let mut plain_args = Vec::new();
            for pair in nt_args.chunks(2) {
                let bt = call("array.transpose", vec![pair[1].clone()]).to_value();
                plain_args.extend([pair[0].clone(), bt]);
            }
            assert_eq!(
                as_f64(call("array.matmul", plain_args.clone())),
                nt_sum,
                "{name}: plain"
            );
            // An odd count, a product of another shape, another dtype: refused.
            assert!(r
                .call("array.matmul", &Value::List(plain_args[..3].to_vec()))
                .is_err());
            let short = make(&fill(299, 8, 1), vec![299, 8]);
            let mut wrong = syrk_args.clone();
            wrong.push(short.clone());
            assert!(r.call("array.syrk", &Value::List(wrong)).is_err());
            let mut wrong = nt_args.clone();
            wrong.extend([short, make(&fill(n, 8, 1), vec![n, 8]), nt()]);
            assert!(r.call("array.matmul", &Value::List(wrong)).is_err());
        }
        let mixed = vec![
            f32s(&terms[0].0, vec![m, 70]),
            i64s(&terms[0].1, vec![n, 70]),
            Value::Str("nt".into()),
        ];
        assert!(r.call("array.matmul", &Value::List(mixed)).is_err());
        assert!(r.call("array.syrk", &Value::List(vec![])).is_err());
        // Floats that round: the sum is still exactly symmetric, bit for bit (the part
        // below the diagonal is mirrored, not computed in another order).
        let (rows, k) = (300u64, 37u64);
        let x: Vec<f64> = (0..rows * k)
            .map(|i| ((i * 37) % 101) as f64 / 7.3)
            .collect();
        let x = Chunk::from_elems(vec![rows, k], &x).unwrap().to_value();
        let s = call("array.syrk", vec![x.clone(), x]);
        let v = s.elems::<f64>().unwrap();
        let n = rows as usize;
        for i in 0..n {
            for j in 0..i {
                assert_eq!(v[i * n + j].to_bits(), v[j * n + i].to_bits(), "({i}, {j})");
            }
        }
    }

    #[test]
    fn assembling_takes_pieces_of_four_and_binary_ops_one_dtype() {
        let r = Registry::builtin();
        let x = chunk(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let ints = |v: &[i64]| Value::List(v.iter().map(|&i| Value::Int(i)).collect());
        let piece = [x.clone(), ints(&[0, 0]), ints(&[0, 0]), ints(&[2, 2])];
        let mut args = vec![ints(&[2, 2])];
        args.extend(piece.iter().cloned());
        let whole = r
            .call("array.assemble", &Value::List(args.clone()))
            .unwrap();
        assert_eq!(whole, x);
        for cut in [1, 3] {
            let e = r.call(
                "array.assemble",
                &Value::List(args[..args.len() - cut].to_vec()),
            );
            assert!(e.unwrap_err().to_string().contains("pieces are"), "{cut}");
        }
        let e = r.call("array.assemble", &Value::List(vec![ints(&[2, 2])]));
        assert!(e.unwrap_err().to_string().contains("pieces are"));
        let y = Chunk::from_elems(vec![2, 2], &[1f32; 4])
            .unwrap()
            .to_value();
        let add = |b: Value| {
            r.call(
                "array.binary",
                &Value::List(vec![Value::Str("add".into()), x.clone(), b]),
            )
        };
        let e = add(y).unwrap_err().to_string();
        assert!(e.contains("f64") && e.contains("f32"), "{e}");
        assert!(add(x.clone()).is_ok());
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

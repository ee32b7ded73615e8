//! Random inputs and the `array.*` calls the plan tests run.

#![allow(dead_code)]

use rask_kernels::chunk::Chunk;
use rask_proto::{DType, Value};

pub struct Rng(pub u64);

impl Rng {
    /// Seeded from the clock (printed, so a failure can be replayed).
    pub fn new() -> Rng {
        let s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        println!("seed {s}");
        Rng(s | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [lo, hi).
    pub fn f64(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.f64(lo, hi)).collect()
    }

    /// A chunk of `shape` with values in [-2, 2) (integers for integer dtypes).
    pub fn chunk(&mut self, dtype: DType, shape: &[u64]) -> Value {
        let n: u64 = shape.iter().product();
        let vals: Vec<f64> = (0..n).map(|_| self.f64(-2.0, 2.0)).collect();
        let shape = shape.to_vec();
        let c = match dtype {
            DType::F32 => {
                let v: Vec<f32> = vals.iter().map(|&x| x as f32).collect();
                Chunk::from_elems(shape, &v).unwrap()
            }
            DType::F64 => Chunk::from_elems(shape, &vals).unwrap(),
            d => {
                let bytes: Vec<u8> = vals
                    .iter()
                    .flat_map(|&x| {
                        let i = (x * 1000.0) as i64;
                        if d == DType::I32 {
                            (i as i32).to_ne_bytes().to_vec()
                        } else {
                            i.to_ne_bytes().to_vec()
                        }
                    })
                    .collect();
                Chunk {
                    dtype: d,
                    shape,
                    bytes: bytes.into(),
                }
            }
        };
        c.to_value()
    }
}

fn s(x: &str) -> Value {
    Value::Str(x.into())
}

fn ints(v: &[u64]) -> Value {
    Value::List(v.iter().map(|&x| Value::Int(x as i64)).collect())
}

/// (op, arguments) of every `array.*` call that has a device plan, over awkward sizes
/// (empty, one element, not multiples of a block or a tile, several reduction blocks).
pub fn cases(rng: &mut Rng) -> Vec<(String, Vec<Value>)> {
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    let mut add = |op: &str, args: Vec<Value>| out.push((op.to_string(), args));
    for dt in [DType::F32, DType::F64] {
        let name = s(dt.name());
        add(
            "array.full",
            vec![name.clone(), ints(&[7, 33]), Value::Float(2.5)],
        );
        add(
            "array.full",
            vec![name.clone(), ints(&[0, 3]), Value::Float(1.0)],
        );
        add(
            "array.arange",
            vec![
                name.clone(),
                Value::Float(-3.0),
                Value::Float(0.5),
                Value::Int(1001),
            ],
        );
        for kind in ["array.random_uniform", "array.random_normal"] {
            // A 2-d chunk at (40, 30) of a 100×70 array, and a 1-d one at 5 of 600.
            add(
                kind,
                vec![
                    name.clone(),
                    Value::Int(rng.next() as i64 >> 1),
                    ints(&[100, 70]),
                    ints(&[40, 30]),
                    ints(&[33, 17]),
                    Value::Float(-1.0),
                    Value::Float(3.0),
                ],
            );
            add(
                kind,
                vec![
                    name.clone(),
                    Value::Int(42),
                    ints(&[600]),
                    ints(&[5]),
                    ints(&[513]),
                    Value::Float(0.0),
                    Value::Float(1.0),
                ],
            );
        }
        for shape in [&[1u64, 1][..], &[37, 71], &[1000]] {
            let (x, y) = (rng.chunk(dt, shape), rng.chunk(dt, shape));
            for op in ["add", "sub", "mul", "max", "min", "div", "pow"] {
                let (x, y) = if op == "pow" || op == "div" {
                    // Positive bases for pow, no zero divisors.
                    (rng_pos(rng, dt, shape), rng_pos(rng, dt, shape))
                } else {
                    (x.clone(), y.clone())
                };
                add("array.binary", vec![s(op), x.clone(), y]);
                add("array.binary", vec![s(op), x, Value::Float(1.5)]);
            }
            let parts: Vec<Value> = (0..5).map(|_| rng.chunk(dt, shape)).collect();
            for op in ["add", "max", "min"] {
                let mut args = vec![s(op)];
                args.extend(parts.iter().cloned());
                add("array.combine", args);
                add("array.combine", vec![s(op), parts[0].clone()]);
            }
        }
        // Chains of elementwise ops in one program (positive inputs: pow's bases); one
        // that is a single input; sizes below and past the CPU's block.
        for shape in [&[1u64][..], &[37, 71], &[5000]] {
            let (x, y) = (rng_pos(rng, dt, shape), rng_pos(rng, dt, shape));
            for program in [
                "x0 mul:2 x0 x0 mul add x0 div:3 sub",
                "x0 x1 sub x1 x0 max mul pow:0.5 min:3",
                "x1",
            ] {
                add("array.expr", vec![s(program), x.clone(), y.clone()]);
            }
        }
        for (r, c) in [(1, 1), (33, 70), (100, 3), (64, 64)] {
            add("array.transpose", vec![rng.chunk(dt, &[r, c])]);
        }
        for (m, k, n) in [(1, 1, 1), (17, 33, 9), (64, 128, 96), (5, 0, 4)] {
            add(
                "array.matmul",
                vec![rng.chunk(dt, &[m, k]), rng.chunk(dt, &[k, n])],
            );
        }
        // Sums of products: plain, with the right operands transposed, symmetric; inner
        // extents that differ, one of them empty.
        for (m, ks, n) in [(17u64, &[33u64, 5, 0][..], 9u64), (64, &[128, 64], 96)] {
            let (mut plain, mut nt, mut sym) = (Vec::new(), Vec::new(), Vec::new());
            for &k in ks {
                let x = rng.chunk(dt, &[m, k]);
                plain.extend([x.clone(), rng.chunk(dt, &[k, n])]);
                nt.extend([x.clone(), rng.chunk(dt, &[n, k])]);
                sym.push(x);
            }
            nt.push(s("nt"));
            add("array.matmul", plain);
            add("array.matmul", nt);
            add("array.syrk", sym);
        }
        for n in [0u64, 1, 255, 256, 257, 70_001, 300_000] {
            let x = rng.chunk(dt, &[n]);
            for op in ["sum", "max", "min"] {
                add("array.reduce", vec![s(op), Value::Int(-1), x.clone()]);
            }
        }
        for shape in [&[37u64, 41][..], &[3, 50, 7], &[1, 1]] {
            let x = rng.chunk(dt, shape);
            for axis in 0..shape.len() {
                for op in ["sum", "max", "min"] {
                    add(
                        "array.reduce",
                        vec![s(op), Value::Int(axis as i64), x.clone()],
                    );
                }
            }
        }
    }
    // Integer arrays: exact results.
    for dt in [DType::I32, DType::I64] {
        let name = s(dt.name());
        add(
            "array.full",
            vec![name.clone(), ints(&[5, 9]), Value::Int(-7)],
        );
        add(
            "array.arange",
            vec![
                name.clone(),
                Value::Int(-300),
                Value::Int(3),
                Value::Int(777),
            ],
        );
        for shape in [&[1u64][..], &[29, 41]] {
            let (x, y) = (rng.chunk(dt, shape), rng.chunk(dt, shape));
            for op in ["add", "sub", "mul", "max", "min"] {
                add("array.binary", vec![s(op), x.clone(), y.clone()]);
                add("array.binary", vec![s(op), x.clone(), Value::Int(-4)]);
            }
            let mut args = vec![s("add"), x.clone(), y.clone(), x];
            args.push(y);
            add("array.combine", args);
        }
        add("array.transpose", vec![rng.chunk(dt, &[45, 70])]);
        for n in [1u64, 257, 70_001] {
            let x = rng.chunk(dt, &[n]);
            for op in ["sum", "max", "min"] {
                add("array.reduce", vec![s(op), Value::Int(-1), x.clone()]);
            }
        }
        let x = rng.chunk(dt, &[6, 13, 5]);
        for axis in 0..3 {
            for op in ["sum", "max", "min"] {
                add("array.reduce", vec![s(op), Value::Int(axis), x.clone()]);
            }
        }
    }
    out
}

fn rng_pos(rng: &mut Rng, dt: DType, shape: &[u64]) -> Value {
    let n: u64 = shape.iter().product();
    let vals: Vec<f64> = (0..n).map(|_| rng.f64(0.25, 3.0)).collect();
    let c = if dt == DType::F32 {
        let v: Vec<f32> = vals.iter().map(|&x| x as f32).collect();
        Chunk::from_elems(shape.to_vec(), &v).unwrap()
    } else {
        Chunk::from_elems(shape.to_vec(), &vals).unwrap()
    };
    c.to_value()
}

/// The elements of a chunk as f64.
pub fn elems(c: &Chunk) -> Vec<f64> {
    match c.dtype {
        DType::F32 => c
            .elems::<f32>()
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect(),
        DType::F64 => c.elems::<f64>().unwrap().to_vec(),
        DType::I32 => c
            .elems::<i32>()
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect(),
        DType::I64 => c
            .elems::<i64>()
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect(),
        d => panic!("no test elements for {d}"),
    }
}

/// Compares a device result with the CPU op's: same dtype and shape, elements within a
/// relative bound that grows with the number of terms a reduction or GEMM sums.
pub fn assert_matches(op: &str, args: &[Value], got: &Chunk, want: &Chunk) {
    let what = format!("{op} {:?}", args.first());
    assert_eq!(got.dtype, want.dtype, "{what}: dtype");
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let eps = match got.dtype {
        DType::F32 => 1e-6,
        DType::F64 => 1e-14,
        _ => 0.0,
    };
    let terms = match op {
        "array.reduce" | "array.matmul" => 1e4,
        "array.combine" => 8.0,
        _ => 2.0,
    };
    let (g, w) = (elems(got), elems(want));
    let scale = w.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = a == b || (a - b).abs() <= eps * terms * scale;
        assert!(ok, "{what}: element {i}: got {a}, want {b}");
    }
}

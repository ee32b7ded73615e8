//! The `array.*` ops that have device plans, as typed values: [`ArrayOp::parse`] reads an
//! op's name and arguments once (chunk arguments keep their bytes where they are, on the
//! host or in a device's memory), and lowering ([`super::lower`]) matches on the result.
//!
//! Parsing checks the form of the arguments only; whether a plan exists for them (a
//! dtype the kernels have, shapes that fit, a rank they cover) is lowering's to decide.
//! Either way a `None` leaves the op to its CPU implementation, which reports what is
//! wrong with malformed arguments.

use rask_proto::{DType, Value};

use super::Input;
use crate::chunk::expr::Program;
use crate::chunk::{chunk_parts, float, int_list};
use crate::cpu::{Binary, Reduce};

/// A chunk argument: its dtype and shape, and its bytes wherever they are.
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkArg {
    /// The element type.
    pub dtype: DType,
    /// The extent of each dimension.
    pub shape: Vec<u64>,
    /// The bytes, as long as the shape and dtype say (checked when parsed).
    pub data: Input,
}

impl ChunkArg {
    /// A chunk value (host or device bytes), its length checked; `None` for anything else.
    pub fn parse(v: &Value) -> Option<ChunkArg> {
        let (dtype, shape, data) = chunk_parts(v).ok()?;
        let data = match data {
            Value::Bytes(b) => Input::Host(b.clone()),
            Value::Device(d) => Input::Device(d.clone()),
            _ => return None,
        };
        Some(ChunkArg { dtype, shape, data })
    }
}

/// The second operand of `array.binary`: a chunk, or a number broadcast to every element.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// A chunk of the first operand's dtype and shape.
    Chunk(ChunkArg),
    /// A number, passed as the first operand's dtype.
    Scalar(f64),
}

/// The elementwise op of `array.binary`: one the kernels have for every dtype, or a
/// floating-point one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `add`, `sub`, `mul`, `max` or `min`.
    Binary(Binary),
    /// `div`, f32 and f64 only.
    Div,
    /// `pow`, f32 and f64 only.
    Pow,
}

impl BinaryOp {
    /// `add`, `sub`, `mul`, `max`, `min`, `div` or `pow`.
    pub fn parse(name: &str) -> Option<BinaryOp> {
        match name {
            "div" => Some(BinaryOp::Div),
            "pow" => Some(BinaryOp::Pow),
            _ => Binary::parse(name).map(BinaryOp::Binary),
        }
    }

    /// The name, as in entry points (`div_f32`).
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Binary(b) => b.name(),
            BinaryOp::Div => "div",
            BinaryOp::Pow => "pow",
        }
    }

    /// Whether the kernels have it for floating-point dtypes only.
    pub fn float_only(self) -> bool {
        matches!(self, BinaryOp::Div | BinaryOp::Pow)
    }
}

/// The arguments of `array.random_uniform` and `array.random_normal`: the chunk at
/// `origin` (of `shape`) of an array of `global` shape, its values from counter-based
/// generators seeded by `seed`; `p0`, `p1` are low and high (uniform) or mean and
/// standard deviation (normal).
#[derive(Clone, Debug, PartialEq)]
pub struct Random {
    /// Normal values (else uniform).
    pub normal: bool,
    /// The element type, f32 or f64.
    pub dtype: DType,
    /// The array's seed; with an element's global position it fixes its value.
    pub seed: u64,
    /// The whole array's shape.
    pub global: Vec<u64>,
    /// Where this chunk starts in the array, per dimension.
    pub origin: Vec<u64>,
    /// The chunk's shape.
    pub shape: Vec<u64>,
    /// Low bound (uniform) or mean (normal).
    pub p0: f64,
    /// High bound (uniform) or standard deviation (normal).
    pub p1: f64,
}

/// An `array.*` op with a device plan, its arguments parsed.
#[derive(Clone, Debug, PartialEq)]
pub enum ArrayOp {
    /// `array.full(dtype, shape, value)`.
    Full {
        /// The element type.
        dtype: DType,
        /// The chunk's shape.
        shape: Vec<u64>,
        /// Every element's value, converted to `dtype`.
        value: f64,
    },
    /// `array.arange(dtype, start, step, n)`: `n` elements (a negative `n` is none).
    Arange {
        /// The element type.
        dtype: DType,
        /// The first element.
        start: f64,
        /// The difference between neighbours.
        step: f64,
        /// How many elements.
        n: u64,
    },
    /// `array.random_uniform` and `array.random_normal`.
    Random(Random),
    /// `array.binary(op, x, y)`.
    Binary {
        /// The elementwise op.
        op: BinaryOp,
        /// The first operand.
        x: ChunkArg,
        /// The second operand: a chunk like `x`, or a number.
        y: Operand,
    },
    /// `array.combine(op, chunks…)`: `op` is `add`, `max` or `min`.
    Combine {
        /// How the chunks are combined, element by element.
        op: Binary,
        /// The chunks, all of one dtype and shape.
        chunks: Vec<ChunkArg>,
    },
    /// `array.transpose(x)`.
    Transpose {
        /// The 2-d chunk to transpose.
        x: ChunkArg,
    },
    /// `array.matmul(x₀, y₀, x₁, y₁, …)`: Σⱼ xⱼ · yⱼ; with a last `"nt"`, Σⱼ xⱼ · yⱼᵀ with
    /// each y given untransposed.
    Matmul {
        /// The products' left and right matrices (the right one's transpose when `nt`).
        terms: Vec<(ChunkArg, ChunkArg)>,
        /// The products are x · yᵀ.
        nt: bool,
    },
    /// `array.syrk(x₀, x₁, …)`: Σⱼ xⱼ · xⱼᵀ, exactly symmetric.
    Syrk {
        /// The matrices.
        xs: Vec<ChunkArg>,
    },
    /// `array.expr(program, x₀, x₁, …)`: a chain of elementwise ops (see
    /// [`crate::chunk::expr`]).
    Expr {
        /// The checked program.
        program: Program,
        /// The chunks it reads, all of one dtype and shape.
        inputs: Vec<ChunkArg>,
    },
    /// `array.reduce(op, axis, x)`: along `axis`, or over the whole chunk (`None`, an
    /// axis of -1 on the wire).
    Reduce {
        /// The reduction.
        op: Reduce,
        /// The axis reduced, or `None` for all of them.
        axis: Option<usize>,
        /// The chunk reduced.
        x: ChunkArg,
    },
}

impl ArrayOp {
    /// The op named `op` on `args`, if it is an `array.*` op with a device plan and its
    /// arguments have the op's form; `None` otherwise.
    pub fn parse(op: &str, args: &[Value]) -> Option<ArrayOp> {
        Some(match (op, args) {
            ("array.full", [Value::Str(dt), shape, value]) => ArrayOp::Full {
                dtype: dt.parse().ok()?,
                shape: int_list(shape, "shape").ok()?,
                value: float(value).ok()?,
            },
            ("array.arange", [Value::Str(dt), start, step, Value::Int(n)]) => ArrayOp::Arange {
                dtype: dt.parse().ok()?,
                start: float(start).ok()?,
                step: float(step).ok()?,
                n: (*n).max(0) as u64,
            },
            (
                "array.random_uniform" | "array.random_normal",
                [Value::Str(dt), Value::Int(seed), global, origin, shape, p0, p1],
            ) => ArrayOp::Random(Random {
                normal: op == "array.random_normal",
                dtype: dt.parse().ok()?,
                seed: *seed as u64,
                global: int_list(global, "global shape").ok()?,
                origin: int_list(origin, "origin").ok()?,
                shape: int_list(shape, "shape").ok()?,
                p0: float(p0).ok()?,
                p1: float(p1).ok()?,
            }),
            ("array.binary", [Value::Str(name), x, y]) => ArrayOp::Binary {
                op: BinaryOp::parse(name)?,
                x: ChunkArg::parse(x)?,
                y: match y {
                    Value::Float(_) | Value::Int(_) => Operand::Scalar(float(y).ok()?),
                    v => Operand::Chunk(ChunkArg::parse(v)?),
                },
            },
            ("array.combine", [Value::Str(name), rest @ ..]) => ArrayOp::Combine {
                op: match Binary::parse(name)? {
                    op @ (Binary::Add | Binary::Max | Binary::Min) => op,
                    _ => return None,
                },
                chunks: rest.iter().map(ChunkArg::parse).collect::<Option<_>>()?,
            },
            ("array.transpose", [x]) => ArrayOp::Transpose {
                x: ChunkArg::parse(x)?,
            },
            ("array.matmul", _) => {
                let (chunks, nt) = match args {
                    [rest @ .., Value::Str(t)] if t == "nt" => (rest, true),
                    _ => (args, false),
                };
                if chunks.is_empty() || chunks.len() % 2 != 0 {
                    return None;
                }
                let terms = chunks
                    .chunks(2)
                    .map(|xy| Some((ChunkArg::parse(&xy[0])?, ChunkArg::parse(&xy[1])?)))
                    .collect::<Option<_>>()?;
                ArrayOp::Matmul { terms, nt }
            }
            ("array.syrk", [_, ..]) => ArrayOp::Syrk {
                xs: args.iter().map(ChunkArg::parse).collect::<Option<_>>()?,
            },
            ("array.expr", [Value::Str(program), inputs @ ..]) => ArrayOp::Expr {
                program: Program::parse(program).ok()?,
                inputs: inputs.iter().map(ChunkArg::parse).collect::<Option<_>>()?,
            },
            ("array.reduce", [Value::Str(name), Value::Int(axis), x]) => ArrayOp::Reduce {
                op: Reduce::parse(name)?,
                axis: usize::try_from(*axis).ok(),
                x: ChunkArg::parse(x)?,
            },
            _ => return None,
        })
    }

    /// The op's name, as tasks name it (`array.binary`).
    pub fn name(&self) -> &'static str {
        match self {
            ArrayOp::Full { .. } => "array.full",
            ArrayOp::Arange { .. } => "array.arange",
            ArrayOp::Random(r) if r.normal => "array.random_normal",
            ArrayOp::Random(_) => "array.random_uniform",
            ArrayOp::Binary { .. } => "array.binary",
            ArrayOp::Combine { .. } => "array.combine",
            ArrayOp::Transpose { .. } => "array.transpose",
            ArrayOp::Matmul { .. } => "array.matmul",
            ArrayOp::Syrk { .. } => "array.syrk",
            ArrayOp::Expr { .. } => "array.expr",
            ArrayOp::Reduce { .. } => "array.reduce",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::Chunk;

    fn ints(v: &[i64]) -> Value {
        Value::List(v.iter().map(|&x| Value::Int(x)).collect())
    }

    fn chunk(shape: &[u64]) -> Value {
        let n: u64 = shape.iter().product();
        let elems: Vec<f64> = (0..n).map(|i| i as f64).collect();
        Chunk::from_elems(shape.to_vec(), &elems)
            .unwrap()
            .to_value()
    }

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    /// One call of every op name the device plans cover.
    fn calls() -> Vec<(&'static str, Vec<Value>)> {
        let random = |kind| {
            (
                kind,
                vec![
                    s("f32"),
                    Value::Int(7),
                    ints(&[10, 10]),
                    ints(&[0, 5]),
                    ints(&[10, 5]),
                    Value::Float(0.0),
                    Value::Int(1),
                ],
            )
        };
        vec![
            (
                "array.full",
                vec![s("f64"), ints(&[2, 3]), Value::Float(1.5)],
            ),
            (
                "array.arange",
                vec![s("i32"), Value::Int(-3), Value::Float(0.5), Value::Int(9)],
            ),
            random("array.random_uniform"),
            random("array.random_normal"),
            (
                "array.binary",
                vec![s("pow"), chunk(&[4]), Value::Float(2.0)],
            ),
            (
                "array.combine",
                vec![s("max"), chunk(&[2, 2]), chunk(&[2, 2])],
            ),
            ("array.transpose", vec![chunk(&[2, 3])]),
            ("array.matmul", vec![chunk(&[2, 3]), chunk(&[3, 4])]),
            (
                "array.matmul",
                vec![chunk(&[2, 3]), chunk(&[4, 3]), s("nt")],
            ),
            ("array.syrk", vec![chunk(&[3, 2])]),
            (
                "array.expr",
                vec![s("x0 x1 add mul:2"), chunk(&[2, 2]), chunk(&[2, 2])],
            ),
            ("array.reduce", vec![s("sum"), Value::Int(-1), chunk(&[5])]),
        ]
    }

    #[test]
    fn every_op_name_with_a_plan_parses_and_names_itself_back() {
        let calls = calls();
        let names: std::collections::BTreeSet<&str> = calls.iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), 11, "every name once");
        for (name, args) in calls {
            let op = ArrayOp::parse(name, &args).unwrap_or_else(|| panic!("{name}: {args:?}"));
            assert_eq!(op.name(), name);
        }
    }

    #[test]
    fn arguments_come_out_typed() {
        let x = chunk(&[2, 3]);
        match ArrayOp::parse("array.binary", &[s("sub"), x.clone(), x.clone()]) {
            Some(ArrayOp::Binary {
                op: BinaryOp::Binary(Binary::Sub),
                x: a,
                y: Operand::Chunk(b),
            }) => {
                assert_eq!((a.dtype, &a.shape[..]), (DType::F64, &[2, 3][..]));
                assert_eq!(a, b);
                assert!(matches!(a.data, Input::Host(ref h) if h.len() == 48));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ArrayOp::parse(
                "array.arange",
                &[s("f32"), Value::Int(1), Value::Int(2), Value::Int(-4)]
            ),
            Some(ArrayOp::Arange {
                dtype: DType::F32,
                start: 1.0,
                step: 2.0,
                n: 0
            })
        );
        let reduce =
            |axis| ArrayOp::parse("array.reduce", &[s("amax"), Value::Int(axis), x.clone()]);
        assert!(matches!(
            reduce(1),
            Some(ArrayOp::Reduce {
                op: Reduce::Max,
                axis: Some(1),
                ..
            })
        ));
        assert!(matches!(
            reduce(-1),
            Some(ArrayOp::Reduce { axis: None, .. })
        ));
        let all_ops = ["add", "sub", "mul", "max", "min", "div", "pow"];
        for name in all_ops {
            assert_eq!(BinaryOp::parse(name).unwrap().name(), name);
        }
        assert!(BinaryOp::parse("div").unwrap().float_only());
        assert!(!BinaryOp::parse("max").unwrap().float_only());
    }

    #[test]
    fn other_ops_and_other_forms_do_not_parse() {
        let x = chunk(&[2, 2]);
        for (name, args) in [
            ("array.assemble", vec![ints(&[2, 2]), x.clone()]),
            (
                "array.argmax",
                vec![x.clone(), ints(&[2, 2]), ints(&[0, 0])],
            ),
            ("add", vec![Value::Int(1), Value::Int(2)]),
            ("array.binary", vec![s("mod"), x.clone(), x.clone()]),
            ("array.binary", vec![s("add"), x.clone(), s("y")]),
            ("array.combine", vec![s("sub"), x.clone(), x.clone()]),
            ("array.combine", vec![s("add"), x.clone(), Value::Int(1)]),
            ("array.transpose", vec![x.clone(), x.clone()]),
            ("array.matmul", vec![x.clone(), Value::Null]),
            ("array.matmul", vec![x.clone(), x.clone(), x.clone()]),
            ("array.matmul", vec![s("nt")]),
            ("array.matmul", vec![x.clone(), x.clone(), s("tn")]),
            ("array.syrk", vec![]),
            ("array.syrk", vec![x.clone(), Value::Null]),
            ("array.expr", vec![s("x0 mod:2"), x.clone()]),
            ("array.expr", vec![s("x0 add"), x.clone()]),
            ("array.expr", vec![s("x0"), Value::Null]),
            ("array.reduce", vec![s("mean"), Value::Int(0), x.clone()]),
            ("array.reduce", vec![s("sum"), Value::Float(0.0), x.clone()]),
            ("array.full", vec![s("f16"), ints(&[2]), Value::Float(0.0)]),
            ("array.full", vec![s("f32"), ints(&[-2]), Value::Float(0.0)]),
            (
                "array.arange",
                vec![s("f32"), Value::Int(0), Value::Int(1), Value::Float(3.0)],
            ),
        ] {
            assert_eq!(ArrayOp::parse(name, &args), None, "{name} {args:?}");
        }
    }
}

//! `array.expr`: a chain of elementwise ops over chunks of one shape and dtype, in one
//! task. An array expression such as `x * 2 + x * x - x / 3` is one pass per chunk
//! instead of five tasks each writing a chunk: the program runs over blocks of
//! [`BLOCK`] elements that stay in the cache, with the same loops as `array.binary`
//! (so the results are bit for bit those of the ops one by one).
//!
//! The program is postfix, its steps separated by spaces: `xN` pushes input chunk N;
//! `OP` pops b and a and pushes `a OP b`; `OP:V` pops a and pushes `a OP V` (V a number).
//! OP is `add`, `sub`, `mul`, `max`, `min`, `div` or `pow` (the last two for floats).
//! `x0 mul:2 x0 x0 mul add x0 div:3 sub` is `x * 2 + x * x - x / 3`.

use std::borrow::Cow;

use crate::cpu::{self, Binary};
use crate::OpError;

use super::{make, Chunk, Pod};

/// Elements per block of an evaluation: a few of them (one per stack level) stay in L1/L2.
pub const BLOCK: usize = 4096;

/// An elementwise op of a program.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ExprOp {
    /// add, sub, mul, max, min.
    Binary(Binary),
    /// a / b (floats).
    Div,
    /// a ** b (floats).
    Pow,
}

impl ExprOp {
    fn parse(name: &str) -> Option<ExprOp> {
        match name {
            "div" => Some(ExprOp::Div),
            "pow" => Some(ExprOp::Pow),
            other => Binary::parse(other).map(ExprOp::Binary),
        }
    }

    /// The op's name (`add`), as in programs and entry points.
    pub fn name(self) -> &'static str {
        match self {
            ExprOp::Binary(b) => b.name(),
            ExprOp::Div => "div",
            ExprOp::Pow => "pow",
        }
    }

    /// Only for floats (div, pow).
    pub fn float_only(self) -> bool {
        matches!(self, ExprOp::Div | ExprOp::Pow)
    }
}

/// A step of a program.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ExprStep {
    /// Push input chunk N.
    Input(usize),
    /// Pop b and a, push a op b.
    Op(ExprOp),
    /// Pop a, push a op the number.
    Scalar(ExprOp, f64),
}

/// A checked program: every step finds its operands, one value is left, and the deepest
/// stack it reaches is known.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    /// The steps, in order.
    pub steps: Vec<ExprStep>,
    /// How many inputs it reads (one past the highest N of `xN`).
    pub inputs: usize,
    /// The most values on the stack at once.
    pub depth: usize,
}

impl Program {
    /// Parses and checks a program (see the module docs).
    pub fn parse(text: &str) -> Result<Program, OpError> {
        let bad = |why: &str| OpError::Expr(format!("{why} in {text:?}"));
        let mut steps = Vec::new();
        let (mut stack, mut depth, mut inputs) = (0usize, 0usize, 0usize);
        for token in text.split_whitespace() {
            let step = if let Some(n) = token.strip_prefix('x') {
                let n: usize = n.parse().map_err(|_| bad(&format!("input {token:?}")))?;
                inputs = inputs.max(n + 1);
                ExprStep::Input(n)
            } else if let Some((op, v)) = token.split_once(':') {
                let op = ExprOp::parse(op).ok_or_else(|| bad(&format!("op {op:?}")))?;
                let v: f64 = v.parse().map_err(|_| bad(&format!("number {v:?}")))?;
                ExprStep::Scalar(op, v)
            } else {
                ExprStep::Op(ExprOp::parse(token).ok_or_else(|| bad(&format!("op {token:?}")))?)
            };
            stack = match step {
                ExprStep::Input(_) => stack + 1,
                ExprStep::Scalar(..) if stack >= 1 => stack,
                ExprStep::Op(_) if stack >= 2 => stack - 1,
                _ => return Err(bad(&format!("{token:?} without its operands"))),
            };
            depth = depth.max(stack);
            steps.push(step);
        }
        if stack != 1 {
            return Err(bad(&format!("{stack} values left, not one")));
        }
        Ok(Program {
            steps,
            inputs,
            depth,
        })
    }

    /// Whether any step is float only.
    pub fn float_only(&self) -> bool {
        self.steps.iter().any(|s| match s {
            ExprStep::Op(op) | ExprStep::Scalar(op, _) => op.float_only(),
            ExprStep::Input(_) => false,
        })
    }
}

/// Where a value on the stack is, for the block being computed.
#[derive(Clone, Copy)]
enum Slot {
    Input(usize),
    Temp(usize),
}

/// `program` over `inputs` (one shape; their dtype is T's), block by block.
pub(super) fn expr<T: Pod>(program: &Program, inputs: &[Chunk]) -> Result<Chunk, OpError> {
    let first = inputs.first().ok_or(OpError::Args("expr of no chunk"))?;
    if let Some(c) = inputs.iter().find(|c| c.shape != first.shape) {
        return Err(OpError::Shapes(first.shape.clone(), c.shape.clone()));
    }
    if program.inputs > inputs.len() {
        return Err(OpError::Expr(format!(
            "the program reads {} inputs, given {}",
            program.inputs,
            inputs.len()
        )));
    }
    if program.float_only() && !T::FLOAT {
        let op = if program.steps.iter().any(|s| {
            matches!(
                s,
                ExprStep::Op(ExprOp::Pow) | ExprStep::Scalar(ExprOp::Pow, _)
            )
        }) {
            "pow"
        } else {
            "div"
        };
        return Err(OpError::FloatOnly {
            op,
            dtype: T::DTYPE,
        });
    }
    let owned = inputs
        .iter()
        .map(|c| c.elems::<T>())
        .collect::<Result<Vec<Cow<'_, [T]>>, _>>()?;
    let xs: Vec<&[T]> = owned.iter().map(|c| &**c).collect();
    let n = xs[0].len();
    Ok(make::<T>(first.shape.clone(), |out| {
        // One buffer per stack level, and one an op writes into before it takes the
        // place of its left operand.
        let mut temps: Vec<Vec<T>> = vec![vec![T::default(); BLOCK.min(n)]; program.depth];
        let mut scratch = vec![T::default(); BLOCK.min(n)];
        let mut stack: Vec<Slot> = Vec::with_capacity(program.depth);
        for start in (0..n).step_by(BLOCK) {
            let len = BLOCK.min(n - start);
            stack.clear();
            for step in &program.steps {
                match *step {
                    ExprStep::Input(i) => stack.push(Slot::Input(i)),
                    ExprStep::Op(op) => {
                        let b = stack.pop().expect("invariant: checked program");
                        let a = stack.pop().expect("invariant: checked program");
                        let (a, b) = (
                            view(a, &xs, &temps, start, len),
                            view(b, &xs, &temps, start, len),
                        );
                        apply(op, a, b, &mut scratch[..len], false);
                    }
                    ExprStep::Scalar(op, v) => {
                        let a = stack.pop().expect("invariant: checked program");
                        let v = [T::from_f64(v)];
                        let a = view(a, &xs, &temps, start, len);
                        apply(op, a, &v, &mut scratch[..len], true);
                    }
                }
                if !matches!(step, ExprStep::Input(_)) {
                    let level = stack.len();
                    std::mem::swap(&mut temps[level], &mut scratch);
                    stack.push(Slot::Temp(level));
                }
            }
            let top = stack.pop().expect("invariant: one value left");
            out[start..start + len].copy_from_slice(view(top, &xs, &temps, start, len));
        }
    }))
}

/// The block `start..start + len` of the value in `slot`.
fn view<'a, T>(
    slot: Slot,
    xs: &[&'a [T]],
    temps: &'a [Vec<T>],
    start: usize,
    len: usize,
) -> &'a [T] {
    match slot {
        Slot::Input(i) => &xs[i][start..start + len],
        Slot::Temp(t) => &temps[t][..len],
    }
}

/// `a op b` (b one number when `scalar`) into `out`, by the loops of `array.binary`.
fn apply<T: Pod>(op: ExprOp, a: &[T], b: &[T], out: &mut [T], scalar: bool) {
    match op {
        ExprOp::Binary(op) => cpu::binary(op, a, b, out, false, scalar),
        ExprOp::Div => T::div_pow(false, a, b, out, scalar),
        ExprOp::Pow => T::div_pow(true, a, b, out, scalar),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Registry;
    use rask_proto::{DType, Value};

    #[test]
    fn programs_parse_and_bad_ones_are_named() {
        let p = Program::parse("x0 mul:2 x0 x0 mul add x0 div:3 sub").unwrap();
        assert_eq!((p.inputs, p.depth, p.steps.len()), (1, 3, 9));
        assert_eq!(
            p.steps[1],
            ExprStep::Scalar(ExprOp::Binary(Binary::Mul), 2.0)
        );
        assert_eq!(p.steps[8], ExprStep::Op(ExprOp::Binary(Binary::Sub)));
        assert!(p.float_only());
        let q = Program::parse("x1 x0 max min:-0.5").unwrap();
        assert_eq!((q.inputs, q.depth), (2, 2));
        assert!(!q.float_only());
        for (text, says) in [
            ("x0 mod:2", "op \"mod\""),
            ("x0 x0 mod", "op \"mod\""),
            ("x0 add", "\"add\" without its operands"),
            ("add:2", "\"add:2\" without its operands"),
            ("x0 x1", "2 values left"),
            ("", "0 values left"),
            ("xq", "input \"xq\""),
            ("x0 mul:two", "number \"two\""),
        ] {
            let e = Program::parse(text).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(&format!("{text:?}")), "{e}");
        }
    }

    fn chunk<T: Pod>(shape: &[u64], v: &[T]) -> Value {
        Chunk::from_elems(shape.to_vec(), v).unwrap().to_value()
    }

    /// `array.binary` op by op, as the unfused graph runs it.
    fn binary(r: &Registry, op: &str, a: Value, b: Value) -> Value {
        r.call(
            "array.binary",
            &Value::List(vec![Value::Str(op.into()), a, b]),
        )
        .unwrap()
    }

    #[test]
    fn a_program_computes_what_its_ops_compute_one_by_one_bit_for_bit() {
        let r = Registry::builtin();
        // Sizes below, at and past a block, and not a multiple of it.
        for n in [1usize, 5, BLOCK, BLOCK + 1, 2 * BLOCK + 777] {
            let xs: Vec<f64> = (0..n)
                .map(|i| ((i * 37) % 101) as f64 / 7.3 - 6.0)
                .collect();
            let ys: Vec<f64> = (0..n).map(|i| ((i * 11) % 17) as f64 / 3.1 + 0.5).collect();
            for dtype in [DType::F32, DType::F64] {
                let (x, y) = match dtype {
                    DType::F32 => {
                        let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<_>>();
                        (chunk(&[n as u64], &f(&xs)), chunk(&[n as u64], &f(&ys)))
                    }
                    _ => (chunk(&[n as u64], &xs), chunk(&[n as u64], &ys)),
                };
                // x * 2 + x * y - x / 3, then its power of y and the larger with -1.
                let two_x = binary(&r, "mul", x.clone(), Value::Float(2.0));
                let xy = binary(&r, "mul", x.clone(), y.clone());
                let third = binary(&r, "div", x.clone(), Value::Float(3.0));
                let sum = binary(&r, "add", two_x, xy);
                let d = binary(&r, "sub", sum, third);
                let p = binary(&r, "pow", d.clone(), y.clone());
                let want = binary(&r, "max", p, Value::Float(-1.0));
                let program = "x0 mul:2 x0 x1 mul add x0 div:3 sub x1 pow max:-1";
                let got = r
                    .call(
                        "array.expr",
                        &Value::List(vec![Value::Str(program.into()), x.clone(), y.clone()]),
                    )
                    .unwrap();
                assert_eq!(got, want, "{dtype} n={n}");
                // A program that is one input: a copy.
                let copy = r
                    .call(
                        "array.expr",
                        &Value::List(vec![Value::Str("x1".into()), x, y.clone()]),
                    )
                    .unwrap();
                assert_eq!(copy, y);
            }
        }
    }

    #[test]
    fn integers_take_exact_ops_and_refuse_float_ones() {
        let r = Registry::builtin();
        let n = BLOCK + 3;
        let a: Vec<i64> = (0..n as i64).map(|i| i * 7 - 900).collect();
        let x = chunk(&[n as u64], &a);
        let got = r
            .call(
                "array.expr",
                &Value::List(vec![Value::Str("x0 x0 mul sub:5 x0 max".into()), x.clone()]),
            )
            .unwrap();
        let want: Vec<i64> = a.iter().map(|&v| (v * v - 5).max(v)).collect();
        assert_eq!(got, chunk(&[n as u64], &want));
        for (program, op) in [("x0 div:2", "div"), ("x0 x0 pow", "pow")] {
            let e = r
                .call(
                    "array.expr",
                    &Value::List(vec![Value::Str(program.into()), x.clone()]),
                )
                .unwrap_err()
                .to_string();
            assert!(e.contains("i64") && e.contains(op), "{e}");
        }
    }

    #[test]
    fn inputs_must_fit_the_program() {
        let r = Registry::builtin();
        let x = chunk(&[3], &[1.0f64, 2.0, 3.0]);
        let call = |args: Vec<Value>| {
            r.call("array.expr", &Value::List(args))
                .unwrap_err()
                .to_string()
        };
        let e = call(vec![Value::Str("x0 x1 add".into()), x.clone()]);
        assert!(e.contains("reads 2 inputs, given 1"), "{e}");
        let y = chunk(&[4], &[1.0f64; 4]);
        let e = call(vec![Value::Str("x0 x1 add".into()), x.clone(), y]);
        assert!(e.contains("shapes [3] and [4] differ"), "{e}");
        let z = chunk(&[3], &[1.0f32; 3]);
        let e = call(vec![Value::Str("x0 x1 add".into()), x.clone(), z]);
        assert!(e.contains("f64") && e.contains("f32"), "{e}");
        let e = call(vec![Value::Str("x0".into())]);
        assert!(e.contains("no chunk"), "{e}");
        let e = call(vec![x]);
        assert!(e.contains("expr: (program, chunk, …)"), "{e}");
    }
}

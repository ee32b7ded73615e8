//! Chains of elementwise ops fused into one task per chunk (`array.expr`), as Dask fuses
//! blockwise layers: `x * 2 + x * x - x / 3` reads x's chunks once and writes one chunk
//! each, instead of five tasks writing five.
//!
//! Every elementwise array keeps its expression: the arrays it reads that are not
//! elementwise themselves (its inputs) and the postfix program computing it from them
//! (see `rask_kernels::chunk::expr`). An elementwise op on such arrays composes their
//! expressions; its tasks run the composed program on the inputs' chunks, so the
//! intermediate arrays' tasks are not in its graph (an intermediate computed for itself
//! as well runs its own tasks). A single op stays an `array.binary` task. Past
//! [`MAX_OPS`] ops or [`MAX_INPUTS`] inputs, the operands are read as they are.

use crate::*;

/// The most ops one fused task runs.
pub(crate) const MAX_OPS: usize = 16;
/// The most arrays one fused task reads.
pub(crate) const MAX_INPUTS: usize = 8;

/// How an elementwise array is computed from arrays that are not elementwise.
#[derive(Clone)]
pub(crate) struct Expr {
    /// The arrays read, `xN` in the program.
    pub(crate) inputs: Vec<Array>,
    /// The program's steps.
    pub(crate) program: Vec<String>,
    /// How many of them are ops.
    pub(crate) ops: usize,
}

impl Expr {
    /// An array read as it is.
    fn input(a: &Array) -> Expr {
        Expr {
            inputs: vec![a.clone()],
            program: vec!["x0".into()],
            ops: 0,
        }
    }

    /// `a op b`, or `a op v`: the composed expression, or `None` when it would be past
    /// the limits or the op is not one a program has.
    pub(crate) fn compose(op: &str, a: &Array, b: Operand<'_>) -> Option<Expr> {
        if !matches!(op, "add" | "sub" | "mul" | "div" | "pow" | "max" | "min") {
            return None;
        }
        let mut e = a.expr();
        match b {
            Operand::Array(b) => {
                let eb = b.expr();
                for step in eb.program {
                    match step.strip_prefix('x').and_then(|n| n.parse::<usize>().ok()) {
                        Some(n) => {
                            let input = &eb.inputs[n];
                            let at = match e.inputs.iter().position(|x| x.same(input)) {
                                Some(at) => at,
                                None => {
                                    e.inputs.push(input.clone());
                                    e.inputs.len() - 1
                                }
                            };
                            e.program.push(format!("x{at}"));
                        }
                        None => e.program.push(step),
                    }
                }
                e.program.push(op.into());
                e.ops += eb.ops + 1;
            }
            Operand::Scalar(v) => {
                e.program.push(format!("{op}:{v}"));
                e.ops += 1;
            }
        }
        (e.ops <= MAX_OPS && e.inputs.len() <= MAX_INPUTS).then_some(e)
    }
}

/// The right operand of an elementwise op.
pub(crate) enum Operand<'a> {
    Array(&'a Array),
    Scalar(f64),
}

impl Array {
    /// This array's expression: its own if elementwise, else itself read as it is.
    pub(crate) fn expr(&self) -> Expr {
        self.0.expr.clone().unwrap_or_else(|| Expr::input(self))
    }

    /// Whether `other` is this very array.
    pub(crate) fn same(&self, other: &Array) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// `self op b` elementwise, fused with the ops it is made of (see the module docs);
    /// `single` gives the task of one op on the operands as they are.
    pub(crate) fn elementwise(
        &self,
        op: &str,
        b: Operand<'_>,
        single: impl Fn(&[usize]) -> (String, Vec<Arg>),
        parents: Vec<Array>,
    ) -> Array {
        let Some(e) = Expr::compose(op, self, b) else {
            return self.each_chunk(op, parents, single);
        };
        let array = if e.ops == 1 {
            self.each_chunk(op, parents, single)
        } else {
            let program = e.program.join(" ");
            let inputs = e.inputs.clone();
            self.each_chunk(op, inputs.clone(), |i| {
                let mut args = vec![arg::str(program.clone())];
                args.extend(inputs.iter().map(|x| Arg::Key(x.chunk_key(i))));
                ("array.expr".into(), args)
            })
        };
        let node = Arc::into_inner(array.0).expect("invariant: a new array has one owner");
        Array(Arc::new(Node {
            expr: Some(e),
            ..node
        }))
    }
}

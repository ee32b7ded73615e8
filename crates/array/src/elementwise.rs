//! Elementwise arithmetic between arrays (of one shape and chunking) and with scalars,
//! checked (`try_add` …) and as operators; your own ops on every block.

use crate::fuse::Operand;
use crate::*;

/// Element types arrays have: f32, f64, i32, i64.
pub(crate) fn numeric(dtype: DType) -> Result<(), ArrayError> {
    match dtype {
        DType::U8 => Err(ArrayError::Invalid(
            "u8 arrays are not supported (f32, f64, i32, i64)".into(),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn float_only(dtype: DType) -> Result<(), ArrayError> {
    match dtype {
        DType::F32 | DType::F64 => Ok(()),
        d => Err(ArrayError::Invalid(format!(
            "{d} arrays are not supported yet (f32, f64)"
        ))),
    }
}

macro_rules! ops {
    ($($tr:ident $m:ident $name:literal $sym:literal $checked:ident),*) => {$(
        impl std::ops::$tr<&Array> for &Array {
            type Output = Array;
            #[doc = concat!(
                "Panics when shapes, chunks or dtypes differ, naming both shapes; [`Array::",
                stringify!($checked),
                "`] returns the error instead."
            )]
            fn $m(self, o: &Array) -> Array {
                self.$checked(o).unwrap_or_else(|e| {
                    panic!(
                        "`{}` of arrays of shapes {:?} and {:?}: {e}; Array::{} returns this as an error",
                        $sym,
                        self.shape(),
                        o.shape(),
                        stringify!($checked),
                    )
                })
            }
        }
        impl std::ops::$tr<f64> for &Array {
            type Output = Array;
            fn $m(self, v: f64) -> Array {
                self.scalar($name, v)
            }
        }
    )*};
}

ops!(
    Add add "add" "+" try_add,
    Sub sub "sub" "-" try_sub,
    Mul mul "mul" "*" try_mul,
    Div div "div" "/" try_div
);

impl Array {
    /// Elementwise `op` (add, sub, mul, div, max, min, pow) of two arrays with the same
    /// shape and chunks.
    pub fn binary(&self, op: &str, other: &Array) -> Result<Array, ArrayError> {
        if self.shape() != other.shape() {
            return Err(ArrayError::Shape(
                self.shape().to_vec(),
                other.shape().to_vec(),
            ));
        }
        if self.chunks() != other.chunks() {
            return Err(ArrayError::Chunks(
                self.chunks().to_vec(),
                other.chunks().to_vec(),
            ));
        }
        if self.dtype() != other.dtype() {
            return Err(ArrayError::DType(self.dtype(), other.dtype()));
        }
        let (a, b) = (self.clone(), other.clone());
        let parents = vec![a.clone(), b.clone()];
        let single = |i: &[usize]| {
            let args = vec![
                arg::str(op),
                Arg::Key(a.chunk_key(i)),
                Arg::Key(b.chunk_key(i)),
            ];
            ("array.binary".into(), args)
        };
        Ok(self.elementwise(op, Operand::Array(other), single, parents))
    }

    /// `self + other` elementwise, or an error where `&self + &other` would panic (shapes,
    /// chunks or dtypes differ).
    pub fn try_add(&self, other: &Array) -> Result<Array, ArrayError> {
        self.binary("add", other)
    }

    /// `self - other` elementwise, or an error where `&self - &other` would panic (shapes,
    /// chunks or dtypes differ).
    pub fn try_sub(&self, other: &Array) -> Result<Array, ArrayError> {
        self.binary("sub", other)
    }

    /// `self * other` elementwise, or an error where `&self * &other` would panic (shapes,
    /// chunks or dtypes differ).
    pub fn try_mul(&self, other: &Array) -> Result<Array, ArrayError> {
        self.binary("mul", other)
    }

    /// `self / other` elementwise, or an error where `&self / &other` would panic (shapes,
    /// chunks or dtypes differ).
    pub fn try_div(&self, other: &Array) -> Result<Array, ArrayError> {
        self.binary("div", other)
    }

    /// Elementwise `op` with a scalar on the right.
    pub fn scalar(&self, op: &str, value: f64) -> Array {
        let a = self.clone();
        let single = |i: &[usize]| {
            let args = vec![arg::str(op), Arg::Key(a.chunk_key(i)), Arg::from(value)];
            ("array.binary".into(), args)
        };
        self.elementwise(op, Operand::Scalar(value), single, vec![a.clone()])
    }

    /// `op(chunk, args…)` on every chunk, like dask's `map_blocks`: `op` (a registered
    /// op, e.g. a custom kernel with its CPU twin) must return a chunk of the same shape
    /// and dtype.
    pub fn map_blocks(&self, op: &str, args: Vec<Arg>) -> Array {
        let a = self.clone();
        self.each_chunk(op, vec![a.clone()], |i| {
            let mut all = vec![Arg::Key(a.chunk_key(i))];
            all.extend(args.iter().cloned());
            (op.into(), all)
        })
    }

    /// An array of this one's shape, chunks and dtype, one task per chunk.
    pub(crate) fn each_chunk(
        &self,
        name: &str,
        parents: Vec<Array>,
        task: impl Fn(&[usize]) -> (String, Vec<Arg>),
    ) -> Array {
        Array::blockwise(
            name,
            self.shape().to_vec(),
            self.chunks().to_vec(),
            self.dtype(),
            parents,
            |b| task(b.idx),
        )
    }
}

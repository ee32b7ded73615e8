//! Transpose and blocked matrix products (inner products accumulated in one task, a few
//! at a time; such sums added by a tree).
//!
//! A product whose right operand is a transpose (`x @ z.T`) reads z's chunks transposed
//! by the GEMM's strides (`array.matmul(a, b, "nt")`), so z.T's transpose tasks are not
//! needed. When z is the left operand itself (`x @ x.T`, symmetric), only the blocks on
//! and above the diagonal are products — the diagonal ones by `array.syrk`, which also
//! computes half of each block — and each block below is the transpose of its mirror, as
//! BLAS's SYRK does: about half the flops.

use crate::layout::*;
use crate::reduce::*;
use crate::*;

/// Inner products summed in one task (by a GEMM accumulating in its output): a block
/// of a product over at most this many inner chunks is one task, with no partial products
/// to add; more are summed in groups of this many, and the groups' sums added by a tree.
const INNER_FUSE: usize = 4;

/// How a product's output block (i, j) is made.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Form {
    /// Σₖ a[i, k] · b[k, j].
    General,
    /// Σₖ a[i, k] · z[j, k]ᵀ, b being z.T.
    Nt,
    /// a @ a.T: Σₖ a[i, k] · a[j, k]ᵀ above the diagonal, Σₖ syrk(a[i, k]) on it, and the
    /// transpose of block (j, i) below it.
    Symmetric,
}

impl Array {
    /// The transpose of a 2-d array.
    pub fn t(&self) -> Result<Array, ArrayError> {
        if self.shape().len() != 2 {
            return Err(ArrayError::Invalid("t() needs a 2-d array".into()));
        }
        let a = self.clone();
        let shape = vec![self.shape()[1], self.shape()[0]];
        let chunks = vec![self.chunks()[1].clone(), self.chunks()[0].clone()];
        let t = Array::blockwise(
            "transpose",
            shape,
            chunks,
            self.dtype(),
            vec![a.clone()],
            |b| {
                let src = a.chunk_key(&[b.idx[1], b.idx[0]]);
                ("array.transpose".into(), vec![Arg::Key(src)])
            },
        );
        let node = Arc::into_inner(t.0).expect("invariant: a new array has one owner");
        Ok(Array(Arc::new(Node {
            transpose_of: Some(self.clone()),
            ..node
        })))
    }

    /// Matrix product of 2-d arrays: each output chunk is the sum, by a binary tree, of
    /// the products of a row of `self`'s chunks with a column of `other`'s. A transposed
    /// right operand is read in place, and `x @ x.T` computes only the upper triangle of
    /// blocks (see the module docs).
    pub fn matmul(&self, other: &Array) -> Result<Array, ArrayError> {
        let form = match &other.0.transpose_of {
            Some(z) if Arc::ptr_eq(&z.0, &self.0) => Form::Symmetric,
            Some(_) => Form::Nt,
            None => Form::General,
        };
        self.product(other, form)
    }

    /// The matrix product by the general blocked path only: every block a sum of
    /// products of `self`'s and `other`'s chunks as given, whatever `other` is. The
    /// reference [`Array::matmul`]'s shortcuts are checked against.
    pub fn matmul_general(&self, other: &Array) -> Result<Array, ArrayError> {
        self.product(other, Form::General)
    }

    fn product(&self, other: &Array, form: Form) -> Result<Array, ArrayError> {
        if self.shape().len() != 2 || other.shape().len() != 2 {
            return Err(ArrayError::Invalid("matmul needs 2-d arrays".into()));
        }
        if self.shape()[1] != other.shape()[0] {
            return Err(ArrayError::Shape(
                self.shape().to_vec(),
                other.shape().to_vec(),
            ));
        }
        if self.chunks()[1] != other.chunks()[0] {
            return Err(ArrayError::Chunks(
                self.chunks().to_vec(),
                other.chunks().to_vec(),
            ));
        }
        if self.dtype() != other.dtype() {
            return Err(ArrayError::DType(self.dtype(), other.dtype()));
        }
        let a = self.clone();
        // The right operand's chunks as read: z's (b = z.T) unless general.
        let b = match (form, &other.0.transpose_of) {
            (Form::General, _) | (_, None) => other.clone(),
            (_, Some(z)) => z.clone(),
        };
        let inner_idx: Vec<usize> = (0..self.chunks()[1].len()).collect();
        let shape = vec![self.shape()[0], other.shape()[1]];
        let chunks = vec![self.chunks()[0].clone(), other.chunks()[1].clone()];
        Ok(Array::new(
            "matmul",
            shape,
            chunks,
            self.dtype(),
            vec![a.clone(), b.clone()],
            |name, idx| {
                let mut tasks = Vec::new();
                for i in idx {
                    let out = key_of(name, i);
                    let (r, c) = (i[0], i[1]);
                    if form == Form::Symmetric && r > c {
                        tasks.push(Task {
                            key: out,
                            op: "array.transpose".into(),
                            args: vec![Arg::Key(key_of(name, &[c, r]))],
                        });
                        continue;
                    }
                    // The inner products, INNER_FUSE to a task accumulating them in one
                    // output; several such sums are added by a tree.
                    let groups: Vec<&[usize]> = inner_idx.chunks(INNER_FUSE).collect();
                    let single = groups.len() == 1;
                    let partials: Vec<String> = groups
                        .iter()
                        .enumerate()
                        .map(|(g, js)| {
                            let key = if single {
                                out.clone()
                            } else {
                                format!("{out}-p{g}")
                            };
                            let x = |j: usize| Arg::Key(a.chunk_key(&[r, j]));
                            let (op, args): (&str, Vec<Arg>) = match form {
                                Form::General => (
                                    "array.matmul",
                                    js.iter()
                                        .flat_map(|&j| [x(j), Arg::Key(b.chunk_key(&[j, c]))])
                                        .collect(),
                                ),
                                Form::Symmetric if r == c => {
                                    ("array.syrk", js.iter().map(|&j| x(j)).collect())
                                }
                                _ => (
                                    "array.matmul",
                                    js.iter()
                                        .flat_map(|&j| [x(j), Arg::Key(b.chunk_key(&[c, j]))])
                                        .chain([arg::str("nt")])
                                        .collect(),
                                ),
                            };
                            tasks.push(Task {
                                key: key.clone(),
                                op: op.into(),
                                args,
                            });
                            key
                        })
                        .collect();
                    if !single {
                        tree_combine(&mut tasks, "add", &out, partials, 2);
                    }
                }
                tasks
            },
        ))
    }
}

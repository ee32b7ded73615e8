//! Transpose and blocked matrix products (partial products summed by a tree).

use crate::layout::*;
use crate::reduce::*;
use crate::*;

impl Array {
    /// The transpose of a 2-d array.
    pub fn t(&self) -> Result<Array, ArrayError> {
        if self.shape().len() != 2 {
            return Err(ArrayError::Invalid("t() needs a 2-d array".into()));
        }
        let a = self.clone();
        let shape = vec![self.shape()[1], self.shape()[0]];
        let chunks = vec![self.chunks()[1].clone(), self.chunks()[0].clone()];
        Ok(Array::blockwise(
            "transpose",
            shape,
            chunks,
            self.dtype(),
            vec![a.clone()],
            |b| {
                let src = a.chunk_key(&[b.idx[1], b.idx[0]]);
                ("array.transpose".into(), vec![Arg::Key(src)])
            },
        ))
    }

    /// Matrix product of 2-d arrays: each output chunk is the sum, by a binary tree, of
    /// the products of a row of `self`'s chunks with a column of `other`'s.
    pub fn matmul(&self, other: &Array) -> Result<Array, ArrayError> {
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
        let (a, b) = (self.clone(), other.clone());
        let inner = self.chunks()[1].len();
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
                    let partials: Vec<String> = (0..inner)
                        .map(|j| {
                            let key = format!("{out}-p{j}");
                            tasks.push(Task {
                                key: key.clone(),
                                op: "array.matmul".into(),
                                args: vec![
                                    Arg::Key(a.chunk_key(&[i[0], j])),
                                    Arg::Key(b.chunk_key(&[j, i[1]])),
                                ],
                            });
                            key
                        })
                        .collect();
                    tree_combine(&mut tasks, "add", &out, partials, 2);
                }
                tasks
            },
        ))
    }
}

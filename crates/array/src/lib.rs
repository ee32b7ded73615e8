//! Blocked n-d arrays, like dask.array: an [`Array`] is a grid of chunks, each chunk the
//! output of one task; expressions on arrays build task graphs. This crate only builds
//! graphs (pure, testable without a cluster); the ops it names (`array.*`) are in
//! rask-kernels, and the client submits the graph and assembles the result.
//!
//! Chunk values travel as `[dtype, shape, bytes]` lists, encoded and read by
//! `rask_kernels::chunk::Chunk` (the client's own chunks are [`TaskArg::Data`], with the
//! same three fields).

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use rask_proto::DType;

/// An argument of a task.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskArg {
    /// The output of the task with this key.
    Key(String),
    Int(i64),
    Float(f64),
    Str(String),
    Ints(Vec<i64>),
    /// A chunk given by the client: little-endian row-major bytes.
    Data {
        dtype: DType,
        shape: Vec<u64>,
        bytes: bytes::Bytes,
    },
}

/// One task of an array graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub key: String,
    pub op: String,
    pub args: Vec<TaskArg>,
}

impl Task {
    /// Keys this task depends on.
    pub fn deps(&self) -> impl Iterator<Item = &str> {
        self.args.iter().filter_map(|a| match a {
            TaskArg::Key(k) => Some(k.as_str()),
            _ => None,
        })
    }
}

/// Errors building array expressions.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArrayError {
    #[error("shapes {0:?} and {1:?} differ")]
    Shape(Vec<u64>, Vec<u64>),
    #[error("chunks {0:?} and {1:?} differ (rechunk one array to the other's chunks)")]
    Chunks(Vec<Vec<u64>>, Vec<Vec<u64>>),
    #[error("dtypes {0} and {1} differ")]
    DType(DType, DType),
    #[error("{0}")]
    Invalid(String),
}

struct Node {
    name: String,
    shape: Vec<u64>,
    chunks: Vec<Vec<u64>>,
    dtype: DType,
    /// One task per chunk (row-major over the chunk grid), plus helpers before them.
    tasks: Vec<Task>,
    parents: Vec<Array>,
}

/// A blocked array. Cheap to clone; expressions make new arrays.
#[derive(Clone)]
pub struct Array(Arc<Node>);

impl std::fmt::Debug for Array {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Array")
            .field("name", &self.0.name)
            .field("shape", &self.0.shape)
            .field("chunks", &self.0.chunks)
            .field("dtype", &self.0.dtype)
            .finish()
    }
}

fn fresh_name(op: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{op}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Splits `n` into chunks of `c` (the last one shorter).
fn split(n: u64, c: u64) -> Vec<u64> {
    let c = c.max(1);
    if n == 0 {
        return vec![0];
    }
    let mut v = vec![c; (n / c) as usize];
    if !n.is_multiple_of(c) {
        v.push(n % c);
    }
    v
}

fn ints(v: &[u64]) -> TaskArg {
    TaskArg::Ints(v.iter().map(|&x| x as i64).collect())
}

/// Every index of a grid, row-major.
fn grid(counts: &[usize]) -> Vec<Vec<usize>> {
    let mut out = vec![vec![]];
    for &n in counts {
        out = out
            .into_iter()
            .flat_map(|p| {
                (0..n).map(move |i| {
                    let mut q = p.clone();
                    q.push(i);
                    q
                })
            })
            .collect();
    }
    out
}

impl Array {
    fn new(
        op: &str,
        shape: Vec<u64>,
        chunks: Vec<Vec<u64>>,
        dtype: DType,
        parents: Vec<Array>,
        make: impl FnOnce(&str, &[Vec<usize>]) -> Vec<Task>,
    ) -> Array {
        let name = fresh_name(op);
        let counts: Vec<usize> = chunks.iter().map(Vec::len).collect();
        let tasks = make(&name, &grid(&counts));
        Array(Arc::new(Node {
            name,
            shape,
            chunks,
            dtype,
            tasks,
            parents,
        }))
    }

    /// An array of one task per chunk: `task(block)` gives each chunk's op and arguments.
    fn blockwise(
        op: &str,
        shape: Vec<u64>,
        chunks: Vec<Vec<u64>>,
        dtype: DType,
        parents: Vec<Array>,
        task: impl Fn(&Block) -> (String, Vec<TaskArg>),
    ) -> Array {
        let geometry = chunks.clone();
        Array::new(op, shape, chunks, dtype, parents, |name, idx| {
            idx.iter()
                .map(|i| {
                    let block = Block {
                        idx: i,
                        origin: origin_of(&geometry, i),
                        shape: shape_of(&geometry, i),
                    };
                    let (op, args) = task(&block);
                    Task {
                        key: key_of(name, i),
                        op,
                        args,
                    }
                })
                .collect()
        })
    }

    /// `shape` split into chunks of at most `chunk` along each dimension.
    fn regular(shape: &[u64], chunk: &[u64]) -> Result<Vec<Vec<u64>>, ArrayError> {
        if shape.len() != chunk.len() {
            return Err(ArrayError::Invalid(format!(
                "shape {shape:?} and chunk size {chunk:?} have different ranks"
            )));
        }
        Ok(shape
            .iter()
            .zip(chunk)
            .map(|(&n, &c)| split(n, c))
            .collect())
    }

    pub fn shape(&self) -> &[u64] {
        &self.0.shape
    }

    pub fn chunks(&self) -> &[Vec<u64>] {
        &self.0.chunks
    }

    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Number of elements.
    pub fn len(&self) -> u64 {
        self.0.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key of the chunk at a grid index.
    pub fn chunk_key(&self, idx: &[usize]) -> String {
        key_of(&self.0.name, idx)
    }

    /// The chunk grid's indices, row-major.
    pub fn chunk_indices(&self) -> Vec<Vec<usize>> {
        grid(&self.0.chunks.iter().map(Vec::len).collect::<Vec<_>>())
    }

    /// The keys of every chunk, row-major.
    pub fn chunk_keys(&self) -> Vec<String> {
        self.chunk_indices()
            .iter()
            .map(|i| self.chunk_key(i))
            .collect()
    }

    /// The origin (first element's index) of a chunk.
    pub fn chunk_origin(&self, idx: &[usize]) -> Vec<u64> {
        origin_of(&self.0.chunks, idx)
    }

    /// The shape of a chunk.
    pub fn chunk_shape(&self, idx: &[usize]) -> Vec<u64> {
        shape_of(&self.0.chunks, idx)
    }

    /// Every task this array needs, its ancestors' first, each once.
    pub fn graph(&self) -> Vec<Task> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        fn walk(a: &Array, seen: &mut HashSet<String>, out: &mut Vec<Task>) {
            if !seen.insert(a.0.name.clone()) {
                return;
            }
            for p in &a.0.parents {
                walk(p, seen, out);
            }
            out.extend(a.0.tasks.iter().cloned());
        }
        walk(self, &mut seen, &mut out);
        out
    }

    /// Uniform random values in [low, high) that depend only on the seed and each
    /// element's position (not on the chunking).
    pub fn random_uniform(
        shape: &[u64],
        chunk: &[u64],
        dtype: DType,
        seed: u64,
        low: f64,
        high: f64,
    ) -> Result<Array, ArrayError> {
        Self::random("random_uniform", shape, chunk, dtype, seed, low, high)
    }

    /// Normal random values (mean, std), position-determined like [`Array::random_uniform`].
    pub fn random_normal(
        shape: &[u64],
        chunk: &[u64],
        dtype: DType,
        seed: u64,
        mean: f64,
        std: f64,
    ) -> Result<Array, ArrayError> {
        Self::random("random_normal", shape, chunk, dtype, seed, mean, std)
    }

    fn random(
        op: &str,
        shape: &[u64],
        chunk: &[u64],
        dtype: DType,
        seed: u64,
        p0: f64,
        p1: f64,
    ) -> Result<Array, ArrayError> {
        float_only(dtype)?;
        let chunks = Self::regular(shape, chunk)?;
        let op = format!("array.{op}");
        Ok(Array::blockwise(
            &op,
            shape.to_vec(),
            chunks,
            dtype,
            vec![],
            |b| {
                let args = vec![
                    TaskArg::Str(dtype.name().into()),
                    TaskArg::Int(seed as i64),
                    ints(shape),
                    ints(&b.origin),
                    ints(&b.shape),
                    TaskArg::Float(p0),
                    TaskArg::Float(p1),
                ];
                (op.clone(), args)
            },
        ))
    }

    /// An array from row-major little-endian element bytes held here (each chunk is sent
    /// with the graph).
    pub fn from_bytes(
        shape: &[u64],
        chunk: &[u64],
        dtype: DType,
        data: &[u8],
    ) -> Result<Array, ArrayError> {
        let n: u64 = shape.iter().product();
        if n * dtype.size() != data.len() as u64 {
            return Err(ArrayError::Invalid(format!(
                "{} bytes for {n} elements of {dtype}",
                data.len()
            )));
        }
        let chunks = Self::regular(shape, chunk)?;
        let size = dtype.size() as usize;
        Ok(Array::blockwise(
            "data",
            shape.to_vec(),
            chunks,
            dtype,
            vec![],
            |b| {
                let count: u64 = b.shape.iter().product();
                let mut out = Vec::with_capacity(count as usize * size);
                // Copy runs along the last dimension.
                let cols = b.shape.last().copied().unwrap_or(1) as usize;
                let rows = (count as usize).checked_div(cols).unwrap_or(0);
                for r in 0..rows {
                    let start = global_offset(shape, &b.origin, &b.shape, (r * cols) as u64);
                    let at = start as usize * size;
                    out.extend_from_slice(&data[at..at + cols * size]);
                }
                let chunk = TaskArg::Data {
                    dtype,
                    shape: b.shape.clone(),
                    bytes: out.into(),
                };
                ("identity".into(), vec![chunk])
            },
        ))
    }

    /// `start, start + step, …` (n of them), 1-d.
    pub fn arange(
        n: u64,
        chunk: u64,
        dtype: DType,
        start: f64,
        step: f64,
    ) -> Result<Array, ArrayError> {
        numeric(dtype)?;
        let chunks = Self::regular(&[n], &[chunk])?;
        Ok(Array::blockwise(
            "arange",
            vec![n],
            chunks,
            dtype,
            vec![],
            |b| {
                let args = vec![
                    TaskArg::Str(dtype.name().into()),
                    TaskArg::Float(start + step * b.origin[0] as f64),
                    TaskArg::Float(step),
                    TaskArg::Int(b.shape[0] as i64),
                ];
                ("array.arange".into(), args)
            },
        ))
    }

    /// The elements in `ranges` (one half-open range per dimension). Each output chunk is
    /// cut from exactly one input chunk, so slicing moves only the selected bytes.
    pub fn slice(&self, ranges: &[std::ops::Range<u64>]) -> Result<Array, ArrayError> {
        if ranges.len() != self.shape().len() {
            return Err(ArrayError::Invalid(format!(
                "{} ranges for a {}-d array",
                ranges.len(),
                self.shape().len()
            )));
        }
        // Per dimension: (input chunk, offset within it, length) of each output chunk.
        let mut pieces: Vec<Vec<(usize, u64, u64)>> = Vec::new();
        for (d, r) in ranges.iter().enumerate() {
            if r.start > r.end || r.end > self.shape()[d] {
                return Err(ArrayError::Invalid(format!(
                    "range {r:?} outside dimension {d} of length {}",
                    self.shape()[d]
                )));
            }
            let mut v = overlaps(&self.chunks()[d], r.start, r.end);
            if v.is_empty() {
                v.push((0, 0, 0));
            }
            pieces.push(v);
        }
        let shape: Vec<u64> = ranges.iter().map(|r| r.end - r.start).collect();
        let chunks: Vec<Vec<u64>> = pieces
            .iter()
            .map(|p| p.iter().map(|x| x.2).collect())
            .collect();
        let a = self.clone();
        Ok(Array::blockwise(
            "slice",
            shape,
            chunks,
            self.dtype(),
            vec![a.clone()],
            |b| {
                let piece = |d: usize| pieces[d][b.idx[d]];
                let rank = b.idx.len();
                let src: Vec<usize> = (0..rank).map(|d| piece(d).0).collect();
                let start: Vec<u64> = (0..rank).map(|d| piece(d).1).collect();
                let args = vec![
                    ints(&b.shape),
                    TaskArg::Key(a.chunk_key(&src)),
                    ints(&start),
                    ints(&vec![0; rank]),
                    ints(&b.shape),
                ];
                ("array.assemble".into(), args)
            },
        ))
    }

    /// The same array in chunks of `chunk`: each output chunk is assembled from the parts
    /// of the input chunks it overlaps.
    pub fn rechunk(&self, chunk: &[u64]) -> Result<Array, ArrayError> {
        let chunks = Self::regular(self.shape(), chunk)?;
        let a = self.clone();
        Ok(Array::blockwise(
            "rechunk",
            self.shape().to_vec(),
            chunks,
            self.dtype(),
            vec![a.clone()],
            |b| {
                // Per dimension, the input chunks this block overlaps; every combination is
                // one piece.
                let per_dim: Vec<Vec<(usize, u64, u64)>> = (0..b.idx.len())
                    .map(|d| overlaps(&a.chunks()[d], b.origin[d], b.origin[d] + b.shape[d]))
                    .collect();
                let mut args = vec![ints(&b.shape)];
                for combo in grid(&per_dim.iter().map(Vec::len).collect::<Vec<_>>()) {
                    let part = |d: usize| per_dim[d][combo[d]];
                    let src: Vec<usize> = (0..combo.len()).map(|d| part(d).0).collect();
                    let src_origin = a.chunk_origin(&src);
                    let src_start: Vec<u64> = (0..combo.len()).map(|d| part(d).1).collect();
                    let dst_start: Vec<u64> = (0..combo.len())
                        .map(|d| src_origin[d] + part(d).1 - b.origin[d])
                        .collect();
                    let extent: Vec<u64> = (0..combo.len()).map(|d| part(d).2).collect();
                    args.extend([
                        TaskArg::Key(a.chunk_key(&src)),
                        ints(&src_start),
                        ints(&dst_start),
                        ints(&extent),
                    ]);
                }
                ("array.assemble".into(), args)
            },
        ))
    }

    /// An array whose chunks already exist under `name-i-j…` (a persisted array): it adds
    /// no tasks to graphs.
    pub fn from_existing(&self, name: &str) -> Array {
        Array(Arc::new(Node {
            name: name.to_string(),
            shape: self.shape().to_vec(),
            chunks: self.chunks().to_vec(),
            dtype: self.dtype(),
            tasks: Vec::new(),
            parents: Vec::new(),
        }))
    }

    /// Every element `value`.
    pub fn full(
        shape: &[u64],
        chunk: &[u64],
        dtype: DType,
        value: f64,
    ) -> Result<Array, ArrayError> {
        numeric(dtype)?;
        let chunks = Self::regular(shape, chunk)?;
        Ok(Array::blockwise(
            "full",
            shape.to_vec(),
            chunks,
            dtype,
            vec![],
            |b| {
                let args = vec![
                    TaskArg::Str(dtype.name().into()),
                    ints(&b.shape),
                    TaskArg::Float(value),
                ];
                ("array.full".into(), args)
            },
        ))
    }

    pub fn zeros(shape: &[u64], chunk: &[u64], dtype: DType) -> Result<Array, ArrayError> {
        Self::full(shape, chunk, dtype, 0.0)
    }

    pub fn ones(shape: &[u64], chunk: &[u64], dtype: DType) -> Result<Array, ArrayError> {
        Self::full(shape, chunk, dtype, 1.0)
    }

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
        Ok(self.each_chunk(op, parents, |i| {
            let args = vec![
                TaskArg::Str(op.into()),
                TaskArg::Key(a.chunk_key(i)),
                TaskArg::Key(b.chunk_key(i)),
            ];
            ("array.binary".into(), args)
        }))
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
        self.each_chunk(op, vec![a.clone()], |i| {
            let args = vec![
                TaskArg::Str(op.into()),
                TaskArg::Key(a.chunk_key(i)),
                TaskArg::Float(value),
            ];
            ("array.binary".into(), args)
        })
    }

    /// `op(chunk, args…)` on every chunk, like dask's `map_blocks`: `op` (a registered
    /// op, e.g. a custom kernel with its CPU twin) must return a chunk of the same shape
    /// and dtype.
    pub fn map_blocks(&self, op: &str, args: Vec<TaskArg>) -> Array {
        let a = self.clone();
        self.each_chunk(op, vec![a.clone()], |i| {
            let mut all = vec![TaskArg::Key(a.chunk_key(i))];
            all.extend(args.iter().cloned());
            (op.into(), all)
        })
    }

    /// An array of this one's shape, chunks and dtype, one task per chunk.
    fn each_chunk(
        &self,
        name: &str,
        parents: Vec<Array>,
        task: impl Fn(&[usize]) -> (String, Vec<TaskArg>),
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
                ("array.transpose".into(), vec![TaskArg::Key(src)])
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
                                    TaskArg::Key(a.chunk_key(&[i[0], j])),
                                    TaskArg::Key(b.chunk_key(&[j, i[1]])),
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

    /// The sum of every element (a 0-d array): a sum per chunk, then a tree of additions
    /// with fan-in `split_every`.
    pub fn sum(&self, split_every: usize) -> Array {
        self.reduce("sum", None, split_every)
            .expect("a whole-array reduction is always valid")
    }

    /// The largest element (a 0-d array).
    pub fn max(&self) -> Array {
        self.reduce("max", None, 8)
            .expect("a whole-array reduction is always valid")
    }

    /// The smallest element (a 0-d array).
    pub fn min(&self) -> Array {
        self.reduce("min", None, 8)
            .expect("a whole-array reduction is always valid")
    }

    /// The mean of every element (a 0-d array).
    pub fn mean(&self) -> Array {
        &self.sum(8) / self.len().max(1) as f64
    }

    /// Sum along `axis` (the result has one dimension fewer).
    pub fn sum_axis(&self, axis: usize, split_every: usize) -> Result<Array, ArrayError> {
        self.reduce("sum", Some(axis), split_every)
    }

    pub fn max_axis(&self, axis: usize) -> Result<Array, ArrayError> {
        self.reduce("max", Some(axis), 8)
    }

    pub fn min_axis(&self, axis: usize) -> Result<Array, ArrayError> {
        self.reduce("min", Some(axis), 8)
    }

    /// Mean along `axis`.
    pub fn mean_axis(&self, axis: usize) -> Result<Array, ArrayError> {
        let n = *self
            .shape()
            .get(axis)
            .ok_or_else(|| ArrayError::Invalid(format!("no axis {axis}")))?;
        Ok(&self.sum_axis(axis, 8)? / n.max(1) as f64)
    }

    /// `op` (sum, max, min) over every element (`axis` None, a 0-d result) or along one
    /// axis: a reduction per chunk, then a tree combining `split_every` at a time.
    pub fn reduce(
        &self,
        op: &str,
        axis: Option<usize>,
        split_every: usize,
    ) -> Result<Array, ArrayError> {
        if !matches!(op, "sum" | "max" | "min") {
            return Err(ArrayError::Invalid(format!("unknown reduction {op:?}")));
        }
        if let Some(ax) = axis {
            if ax >= self.shape().len() {
                return Err(ArrayError::Invalid(format!(
                    "axis {ax} of a {}-d array",
                    self.shape().len()
                )));
            }
        }
        let a = self.clone();
        let (shape, chunks) = match axis {
            None => (vec![], vec![]),
            Some(ax) => {
                let mut s = self.shape().to_vec();
                let mut c = self.chunks().to_vec();
                s.remove(ax);
                c.remove(ax);
                (s, c)
            }
        };
        let along = axis.map_or(0, |ax| self.chunks()[ax].len());
        let all = a.chunk_indices();
        let combine = if op == "sum" { "add" } else { op }.to_string();
        let op = op.to_string();
        Ok(Array::new(
            &format!("{op}-reduce"),
            shape,
            chunks,
            self.dtype(),
            vec![a.clone()],
            |name, idx| {
                let mut tasks = Vec::new();
                for out_idx in idx {
                    let out = key_of(name, out_idx);
                    // The input chunks that fold into this output chunk.
                    let inputs: Vec<Vec<usize>> = match axis {
                        None => all.clone(),
                        Some(ax) => (0..along)
                            .map(|j| {
                                let mut i = out_idx.clone();
                                i.insert(ax, j);
                                i
                            })
                            .collect(),
                    };
                    let partials: Vec<String> = inputs
                        .iter()
                        .map(|i| {
                            let key = format!("{out}-c{}", key_of("", i));
                            tasks.push(Task {
                                key: key.clone(),
                                op: "array.reduce".into(),
                                args: vec![
                                    TaskArg::Str(op.clone()),
                                    TaskArg::Int(axis.map_or(-1, |x| x as i64)),
                                    TaskArg::Key(a.chunk_key(i)),
                                ],
                            });
                            key
                        })
                        .collect();
                    tree_combine(&mut tasks, &combine, &out, partials, split_every.max(2));
                }
                tasks
            },
        ))
    }
}

impl Array {
    /// The flat (row-major) index of the first largest element, as a 0-d i64 array, like
    /// numpy's `argmax` without an axis. Each chunk finds its largest element and that
    /// element's global index; a tree (`split_every` at a time) keeps the larger, the
    /// earlier on ties.
    pub fn argmax(&self, split_every: usize) -> Array {
        let a = self.clone();
        let all = a.chunk_indices();
        let global = ints(self.shape());
        Array::new(
            "argmax",
            vec![],
            vec![],
            DType::I64,
            vec![a.clone()],
            |name, _| {
                let mut tasks = Vec::new();
                let out = key_of(name, &[]);
                let mut keys: Vec<String> = all
                    .iter()
                    .map(|i| {
                        let key = format!("{out}-c{}", key_of("", i));
                        tasks.push(Task {
                            key: key.clone(),
                            op: "array.argmax".into(),
                            args: vec![
                                TaskArg::Key(a.chunk_key(i)),
                                global.clone(),
                                ints(&a.chunk_origin(i)),
                            ],
                        });
                        key
                    })
                    .collect();
                let fan_in = split_every.max(2);
                let mut level = 0;
                while keys.len() > 1 {
                    keys = keys
                        .chunks(fan_in)
                        .enumerate()
                        .map(|(n, group)| {
                            let key = format!("{out}-t{level}-{n}");
                            tasks.push(Task {
                                key: key.clone(),
                                op: "array.argmax_combine".into(),
                                args: group.iter().map(|k| TaskArg::Key(k.clone())).collect(),
                            });
                            key
                        })
                        .collect();
                    level += 1;
                }
                tasks.push(Task {
                    key: out,
                    op: "array.argmax_index".into(),
                    args: vec![TaskArg::Key(keys.pop().expect("an array has a chunk"))],
                });
                tasks
            },
        )
    }
}

/// Adds tasks combining `keys` elementwise by `op` (add, max, min), `fan_in` at a time,
/// into `out`.
fn tree_combine(tasks: &mut Vec<Task>, op: &str, out: &str, mut keys: Vec<String>, fan_in: usize) {
    let mut level = 0;
    while keys.len() > fan_in {
        keys = keys
            .chunks(fan_in)
            .enumerate()
            .map(|(n, group)| {
                let key = format!("{out}-t{level}-{n}");
                let mut args = vec![TaskArg::Str(op.into())];
                args.extend(group.iter().map(|k| TaskArg::Key(k.clone())));
                tasks.push(Task {
                    key: key.clone(),
                    op: "array.combine".into(),
                    args,
                });
                key
            })
            .collect();
        level += 1;
    }
    let mut args = vec![TaskArg::Str(op.into())];
    args.extend(keys.into_iter().map(TaskArg::Key));
    tasks.push(Task {
        key: out.to_string(),
        op: "array.combine".into(),
        args,
    });
}

/// The global linear index of element `i` (row-major within the chunk) of the chunk at
/// `origin`.
fn global_offset(global: &[u64], origin: &[u64], local: &[u64], mut i: u64) -> u64 {
    let mut idx = 0;
    let mut stride = 1;
    for d in (0..global.len()).rev() {
        let pos = i % local[d].max(1);
        i /= local[d].max(1);
        idx += (origin[d] + pos) * stride;
        stride *= global[d];
    }
    idx
}

fn key_of(name: &str, idx: &[usize]) -> String {
    let mut k = name.to_string();
    for i in idx {
        k.push('-');
        k.push_str(&i.to_string());
    }
    k
}

/// Element types arrays have: f32, f64, i32, i64.
fn numeric(dtype: DType) -> Result<(), ArrayError> {
    match dtype {
        DType::U8 => Err(ArrayError::Invalid(
            "u8 arrays are not supported (f32, f64, i32, i64)".into(),
        )),
        _ => Ok(()),
    }
}

fn float_only(dtype: DType) -> Result<(), ArrayError> {
    match dtype {
        DType::F32 | DType::F64 => Ok(()),
        d => Err(ArrayError::Invalid(format!(
            "{d} arrays are not supported yet (f32, f64)"
        ))),
    }
}

/// The index of the first element of chunk `idx`.
fn origin_of(chunks: &[Vec<u64>], idx: &[usize]) -> Vec<u64> {
    idx.iter()
        .enumerate()
        .map(|(d, &i)| chunks[d][..i].iter().sum())
        .collect()
}

/// The shape of chunk `idx`.
fn shape_of(chunks: &[Vec<u64>], idx: &[usize]) -> Vec<u64> {
    idx.iter().enumerate().map(|(d, &i)| chunks[d][i]).collect()
}

/// The parts of the chunks of one dimension (`lengths`) inside `[lo, hi)`: (chunk, offset
/// within it, length), in order.
fn overlaps(lengths: &[u64], lo: u64, hi: u64) -> Vec<(usize, u64, u64)> {
    let mut out = Vec::new();
    let mut origin = 0;
    for (i, &len) in lengths.iter().enumerate() {
        let (a, b) = (lo.max(origin), hi.min(origin + len));
        if a < b {
            out.push((i, a - origin, b - a));
        }
        origin += len;
        if origin >= hi {
            break;
        }
    }
    out
}

/// One chunk of an array being built: its grid index, origin and shape.
struct Block<'a> {
    idx: &'a [usize],
    origin: Vec<u64>,
    shape: Vec<u64>,
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

#[cfg(test)]
mod tests {
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
        assert_eq!(g[2].args[3], TaskArg::Ints(vec![8, 0]));
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
        assert_eq!(first.args[1], TaskArg::Ints(vec![6, 4]));
    }

    #[test]
    fn matmul_of_a_transpose_then_sum_builds_the_expected_graph() {
        // 4 × 4 chunks: x.T is 16 transposes, x @ x.T 16 outputs of 4 partial products
        // each summed by a binary tree (2 + 1 additions), the sum 16 chunk sums and a
        // tree of fan-in 4 (4 + 1).
        let x = Array::random_uniform(&[8, 8], &[2, 2], DType::F64, 7, 0.0, 1.0).unwrap();
        let y = x.matmul(&x.t().unwrap()).unwrap();
        let s = y.sum(4);
        let g = s.graph();
        let count = |op: &str| g.iter().filter(|t| t.op == op).count();
        assert_eq!(count("array.random_uniform"), 16);
        assert_eq!(count("array.transpose"), 16);
        assert_eq!(count("array.matmul"), 64);
        assert_eq!(count("array.reduce"), 16);
        assert_eq!(count("array.combine"), 16 * 3 + 5);
        // Every dependency is defined earlier in the list, each key once.
        let mut seen = HashSet::new();
        for t in &g {
            for d in t.deps() {
                assert!(seen.contains(d), "{} needs {d} before it", t.key);
            }
            assert!(seen.insert(t.key.clone()), "{} twice", t.key);
        }
        assert_eq!(g.last().unwrap().key, s.name());
        assert_eq!(y.shape(), &[8, 8]);
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
        assert!(Array::ones(&[4], &[2, 2], DType::F32).is_err());
        assert!(Array::ones(&[4], &[2], DType::U8).is_err());
        assert!(Array::random_uniform(&[4], &[2], DType::I32, 1, 0.0, 1.0).is_err());
        let d = &(&a + 1.0) * &a;
        assert_eq!(d.graph().len(), 4 + 4 + 4);
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
        assert_eq!(
            x.graph().last().unwrap().args[0],
            TaskArg::Str("sub".into())
        );
    }
}

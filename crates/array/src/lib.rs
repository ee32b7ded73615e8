//! Blocked n-d arrays, like dask.array: an [`Array`] is a grid of chunks, each chunk the
//! output of one task; expressions on arrays build task graphs. This crate only builds
//! graphs (pure, testable without a cluster); the ops it names (`array.*`) are in
//! rask-kernels, and the client submits the graph and assembles the result.
//!
//! Chunk values travel as `[dtype, shape, bytes]` lists, encoded in one place,
//! `rask_proto::chunk` (the program's own chunks are [`arg::chunk`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod create;
mod elementwise;
mod fuse;
mod layout;
mod linalg;
mod reduce;

use crate::layout::{key_of, origin_of, shape_of, Block};
pub use rask_proto::DType;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// An argument of a task: the [`Arg`] programs use everywhere. Numbers, strings and
/// lists are values; [`arg::chunk`], [`arg::ints`] and friends build the ones arrays need.
pub use rask_proto::Arg;

/// Arguments of array tasks.
pub mod arg {
    use rask_proto::{Arg, DType, Value};

    /// A list of integers (a shape, an origin).
    pub fn ints(v: impl IntoIterator<Item = i64>) -> Arg {
        Arg::Value(Value::List(v.into_iter().map(Value::Int).collect()))
    }

    /// A string (an op's name, a dtype's).
    pub fn str(s: impl Into<String>) -> Arg {
        Arg::Value(Value::Str(s.into()))
    }

    /// A chunk given by the program: little-endian row-major bytes.
    pub fn chunk(dtype: DType, shape: &[u64], bytes: bytes::Bytes) -> Arg {
        Arg::Value(rask_proto::chunk::chunk_value(
            dtype,
            shape,
            Value::Bytes(bytes),
        ))
    }
}

/// One task of an array graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// The task's key: a chunk's (`name-i-j…`) or a helper's.
    pub key: String,
    /// The op it runs (`array.*`, or the user's op for `map_blocks`).
    pub op: String,
    /// Its arguments; [`Arg::Key`] names another task of the graph.
    pub args: Vec<Arg>,
}

impl Task {
    /// Keys this task depends on.
    pub fn deps(&self) -> impl Iterator<Item = &str> {
        self.args.iter().filter_map(|a| match a {
            Arg::Key(k) => Some(k.as_str()),
            _ => None,
        })
    }
}

/// Errors building array expressions.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArrayError {
    /// Two operands' shapes do not fit: they differ (elementwise ops do not broadcast),
    /// or a matmul's inner dimensions do.
    #[error("shapes {0:?} and {1:?} differ")]
    Shape(Vec<u64>, Vec<u64>),
    /// Two operands' chunks do not line up (along a matmul's inner dimension, or
    /// anywhere for an elementwise op).
    #[error("chunks {0:?} and {1:?} differ (rechunk one array to the other's chunks)")]
    Chunks(Vec<Vec<u64>>, Vec<Vec<u64>>),
    /// Two operands' dtypes differ (there is no implicit promotion).
    #[error("dtypes {0} and {1} differ")]
    DType(DType, DType),
    /// Any other misuse (ranks that differ, an axis out of range, a dtype an op does
    /// not take, data of the wrong length, …); the text says which.
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
    /// The array this one is the transpose of (set by [`Array::t`]): a product with it
    /// reads the source's chunks transposed instead (and is symmetric when the left
    /// operand is that source).
    transpose_of: Option<Array>,
    /// How it is computed from arrays that are not elementwise, if it is elementwise
    /// (see `fuse`).
    expr: Option<fuse::Expr>,
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

fn ints(v: &[u64]) -> Arg {
    arg::ints(v.iter().map(|&x| x as i64))
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
            transpose_of: None,
            expr: None,
        }))
    }

    /// This array's chunks that are transposes of another chunk, by key: the key each
    /// transposes.
    pub(crate) fn transposed_chunks(&self) -> HashMap<&str, &str> {
        self.0
            .tasks
            .iter()
            .filter_map(|t| match (t.op.as_str(), &t.args[..]) {
                ("array.transpose", [Arg::Key(src)]) => Some((t.key.as_str(), src.as_str())),
                _ => None,
            })
            .collect()
    }

    /// An array of one task per chunk: `task(block)` gives each chunk's op and arguments.
    fn blockwise(
        op: &str,
        shape: Vec<u64>,
        chunks: Vec<Vec<u64>>,
        dtype: DType,
        parents: Vec<Array>,
        task: impl Fn(&Block) -> (String, Vec<Arg>),
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

    /// Elements along each dimension.
    pub fn shape(&self) -> &[u64] {
        &self.0.shape
    }

    /// Per dimension, the lengths of the chunks along it (they sum to the shape's extent).
    pub fn chunks(&self) -> &[Vec<u64>] {
        &self.0.chunks
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    /// The array's unique name (`matmul-12`): its chunks' keys are `name-i-j…`.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Number of elements.
    pub fn len(&self) -> u64 {
        self.0.shape.iter().product()
    }

    /// Whether the array has no elements (a dimension of extent 0).
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
}

#[cfg(test)]
mod tests;

//! Blocked arrays on the cluster: build expressions with [`Array`] (from rask-array),
//! compute them with [`crate::Client::compute_array`] into an `ndarray::ArrayD`.

use rask_client::{ClientError, Graph};
use rask_proto::Value;

pub use rask_array::{arg, Array, ArrayError, DType, Task};
pub use rask_kernels::chunk::{Chunk, Pod};

/// The graph of an array, as the client submits it. With `gpu`, every task asks for a
/// GPU (`gpu = 1`), so chunks are made and kept on GPU workers.
pub(crate) fn to_graph(x: &Array, gpu: bool) -> Graph {
    let mut g = Graph::new();
    for t in x.graph() {
        g.task(&t.key, &t.op, t.args);
        if gpu {
            g.resources(&[("gpu", 1.0)]);
        }
    }
    g
}

/// Assembles computed chunks (in `x.chunk_keys()` order) into one array.
pub(crate) fn assemble<T: Pod>(
    x: &Array,
    chunks: Vec<Value>,
) -> Result<ndarray::ArrayD<T>, ClientError> {
    let bad = |m: String| ClientError::Other(format!("array {}: {m}", x.name()));
    if x.dtype() != T::DTYPE {
        return Err(bad(format!("is {}, asked for {}", x.dtype(), T::DTYPE)));
    }
    let shape: Vec<usize> = x.shape().iter().map(|&d| d as usize).collect();
    let mut out = ndarray::ArrayD::<T>::from_elem(shape, T::default());
    for (idx, v) in x.chunk_indices().iter().zip(chunks) {
        let c = Chunk::from_value(&v).map_err(|e| bad(e.to_string()))?;
        if c.shape != x.chunk_shape(idx) {
            return Err(bad(format!(
                "chunk {idx:?} has shape {:?}, expected {:?}",
                c.shape,
                x.chunk_shape(idx)
            )));
        }
        let elems = c.elems::<T>().map_err(|e| bad(e.to_string()))?;
        let local: Vec<usize> = c.shape.iter().map(|&d| d as usize).collect();
        let view =
            ndarray::ArrayViewD::from_shape(local, &elems).map_err(|e| bad(e.to_string()))?;
        let origin = x.chunk_origin(idx);
        let slices: Vec<ndarray::SliceInfoElem> = origin
            .iter()
            .zip(&c.shape)
            .map(|(&o, &n)| ndarray::SliceInfoElem::Slice {
                start: o as isize,
                end: Some((o + n) as isize),
                step: 1,
            })
            .collect();
        out.slice_mut(slices.as_slice()).assign(&view);
    }
    Ok(out)
}

/// An array from an ndarray held here, in chunks of `chunk` (sent with the graph).
pub fn from_ndarray<T: Pod>(a: &ndarray::ArrayD<T>, chunk: &[u64]) -> Result<Array, ArrayError> {
    let shape: Vec<u64> = a.shape().iter().map(|&d| d as u64).collect();
    let standard = a.as_standard_layout();
    let elems = standard.as_slice().expect("standard layout is contiguous");
    Array::from_bytes(&shape, chunk, T::DTYPE, rask_kernels::cpu::as_bytes(elems))
}

/// A computed array kept on the workers: usable in new expressions like any array; its
/// chunks are released when this is dropped.
pub struct Persisted {
    array: Array,
    _chunks: Vec<rask_client::Future>,
}

impl std::ops::Deref for Persisted {
    type Target = Array;
    fn deref(&self) -> &Array {
        &self.array
    }
}

impl Persisted {
    pub(crate) fn new(array: Array, chunks: Vec<rask_client::Future>) -> Persisted {
        Persisted {
            array,
            _chunks: chunks,
        }
    }

    /// The array (valid while this `Persisted` lives).
    pub fn array(&self) -> &Array {
        &self.array
    }
}

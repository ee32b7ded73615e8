//! Blocked arrays on the cluster: build expressions with [`Array`] (from rask-array),
//! compute them with [`crate::Client::compute_array`] into an `ndarray::ArrayD`.

use rask_client::{Arg, ClientError, Graph};
use rask_kernels::array::{Chunk, Pod};
use rask_proto::Value;

pub use rask_array::{Array, ArrayError, DType, Task, TaskArg};

/// The graph of an array, as the client submits it.
pub(crate) fn to_graph(x: &Array) -> Graph {
    let mut g = Graph::new();
    for t in x.graph() {
        let args: Vec<Arg> = t
            .args
            .into_iter()
            .map(|a| match a {
                TaskArg::Key(k) => Arg::key(k),
                TaskArg::Int(i) => Arg::from(i),
                TaskArg::Float(f) => Arg::from(f),
                TaskArg::Str(s) => Arg::Value(Value::Str(s)),
                TaskArg::Ints(v) => {
                    Arg::Value(Value::List(v.into_iter().map(Value::Int).collect()))
                }
            })
            .collect();
        g.task(&t.key, &t.op, args);
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
        let c = Chunk::from_value(&v).map_err(bad)?;
        if c.shape != x.chunk_shape(idx) {
            return Err(bad(format!(
                "chunk {idx:?} has shape {:?}, expected {:?}",
                c.shape,
                x.chunk_shape(idx)
            )));
        }
        let elems = c.elems::<T>().map_err(bad)?;
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

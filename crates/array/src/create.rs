//! Making arrays: from host data, random (fixed by seed and position), `arange`, filled
//! with one value, or from chunks already computed.

use std::sync::Arc;

use crate::elementwise::*;
use crate::layout::*;
use crate::*;

impl Array {
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

    pub(crate) fn random(
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
                    arg::str(dtype.name()),
                    Arg::from(seed as i64),
                    ints(shape),
                    ints(&b.origin),
                    ints(&b.shape),
                    Arg::from(p0),
                    Arg::from(p1),
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
                let chunk = arg::chunk(dtype, &b.shape.clone(), out.into());
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
                    arg::str(dtype.name()),
                    Arg::from(start + step * b.origin[0] as f64),
                    Arg::from(step),
                    Arg::from(b.shape[0] as i64),
                ];
                ("array.arange".into(), args)
            },
        ))
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
                let args = vec![arg::str(dtype.name()), ints(&b.shape), Arg::from(value)];
                ("array.full".into(), args)
            },
        ))
    }

    /// Every element 0 (see [`Array::full`]).
    pub fn zeros(shape: &[u64], chunk: &[u64], dtype: DType) -> Result<Array, ArrayError> {
        Self::full(shape, chunk, dtype, 0.0)
    }

    /// Every element 1 (see [`Array::full`]).
    pub fn ones(shape: &[u64], chunk: &[u64], dtype: DType) -> Result<Array, ArrayError> {
        Self::full(shape, chunk, dtype, 1.0)
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
            transpose_of: None,
            expr: None,
        }))
    }
}

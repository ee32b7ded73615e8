//! The value form of an array chunk, `[dtype, shape, bytes]`: written and read here only
//! (blocked arrays build chunks this way, the kernels read and write them, the client
//! assembles them).

use crate::{DType, Value};

/// Why a value is not a chunk.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChunkError {
    /// The value is not a list at all; carries the type it is ([`Value::type_name`]).
    #[error("not an array chunk: {0}")]
    NotAChunk(&'static str),
    /// A list, but not of the form `[dtype name, shape list, bytes or device bytes]`.
    #[error("not an array chunk: expected [dtype, shape, bytes]")]
    Form,
    /// The dtype name is not one of [`DType`]'s; carries the parse error.
    #[error("{0}")]
    DTypeName(String),
    /// A dimension of the shape is not a non-negative integer.
    #[error("bad chunk shape")]
    Shape,
    /// The byte length is not the shape's element count times the dtype's size.
    #[error("chunk of shape {shape:?} and dtype {dtype} has {len} bytes")]
    Length {
        /// The chunk's shape, in elements per dimension.
        shape: Vec<u64>,
        /// The chunk's element type.
        dtype: DType,
        /// The bytes the chunk actually carries.
        len: usize,
    },
}

/// A chunk value, `[dtype, shape, data]`: `data` is the bytes, in host memory
/// (`Value::Bytes`) or in a device's (`Value::Device`).
pub fn chunk_value(dtype: DType, shape: &[u64], data: Value) -> Value {
    Value::List(vec![
        Value::Str(dtype.name().into()),
        Value::List(shape.iter().map(|&d| Value::Int(d as i64)).collect()),
        data,
    ])
}

/// The dtype, shape and bytes (host or device) of a chunk value, the length checked.
pub fn chunk_parts(v: &Value) -> Result<(DType, Vec<u64>, &Value), ChunkError> {
    let Value::List(parts) = v else {
        return Err(ChunkError::NotAChunk(v.type_name()));
    };
    let [Value::Str(dtype), Value::List(shape), data] = parts.as_slice() else {
        return Err(ChunkError::Form);
    };
    let len = match data {
        Value::Bytes(b) => b.len(),
        Value::Device(d) => d.len(),
        _ => return Err(ChunkError::Form),
    };
    let dtype: DType = dtype.parse().map_err(ChunkError::DTypeName)?;
    let shape = shape
        .iter()
        .map(|d| match d {
            Value::Int(n) if *n >= 0 => Ok(*n as u64),
            _ => Err(ChunkError::Shape),
        })
        .collect::<Result<Vec<u64>, ChunkError>>()?;
    // Counted without overflow: a shape from a peer may claim more elements than a u64
    // counts, and a wrapped count could match a short payload.
    let bytes = shape
        .iter()
        .try_fold(dtype.size(), |n, &d| n.checked_mul(d));
    if bytes != Some(len as u64) {
        return Err(ChunkError::Length { shape, dtype, len });
    }
    Ok((dtype, shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (the value target): a shape whose element count overflows is
    /// refused; it panicked in checked builds, and in others wrapped to a count that an
    /// empty (or short) byte payload matched.
    #[test]
    fn a_shape_whose_element_count_overflows_is_refused() {
        let shape = [1u64 << 32, 1 << 32, 8];
        let v = chunk_value(DType::F64, &shape, Value::Bytes(bytes::Bytes::new()));
        assert!(
            matches!(chunk_parts(&v), Err(ChunkError::Length { len: 0, .. })),
            "{:?}",
            chunk_parts(&v)
        );
        // Elements fit, bytes do not: 2^61 elements of 8 bytes.
        let v = chunk_value(DType::F64, &[1 << 61], Value::Bytes(bytes::Bytes::new()));
        assert!(matches!(chunk_parts(&v), Err(ChunkError::Length { .. })));
        let ok = chunk_value(DType::F32, &[2, 3], Value::Bytes(vec![0u8; 24].into()));
        assert_eq!(chunk_parts(&ok).unwrap().1, vec![2, 3]);
    }
}

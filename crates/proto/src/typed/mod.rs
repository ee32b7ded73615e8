//! Typed values: any `serde` type to a [`Value`] and back, so that programs' own types
//! travel, are stored, spilled and gathered like every other value.
//!
//! The encoding is positional and compact: a struct, tuple or sequence is a
//! [`Value::List`] of its fields in order (field names are not stored: both ends know the
//! type), a map a list of `[key, value]` pairs, an `Option` an empty or one-item list, an
//! enum variant its index (unit variants) or `[index, payload]`. Every integer width is an
//! [`Value::Int`] (a `u64` above `i64::MAX` keeps its bits), both float widths a
//! [`Value::Float`], 128-bit integers a pair of words. A sequence of at least
//! [`RAW_MIN`] bytes of one primitive number type — `Vec<f32>`, `Vec<u8>`, `[i64; N]` …
//! — is one [`Value::Bytes`] of the numbers little-endian: raw bytes that travel as a
//! frame buffer (zero-copy between workers on one host), never inside a header; so do
//! byte strings (`serde_bytes`, `bytes::Bytes`). Small values have no byte payload and are
//! reported inline with their task's completion.
//!
//! Decoding is checked: a value that does not have the shape the type asks for is an
//! error naming what was expected and what was found. Values nest at most
//! [`crate::MAX_DEPTH`] levels on the wire (deeper ones are refused when sent).

mod decode;
mod encode;
mod op;
#[cfg(test)]
mod tests;

use serde::de::{self, DeserializeOwned};
use serde::ser::{self, Serialize};

use crate::Value;
use decode::{Args, Decoder};
pub use op::{registrations, Op, OpFn, Registration};

use encode::{Encoder, Out};
/// Re-exported for the code `#[rask::op]` generates.
#[doc(hidden)]
pub use inventory;

/// A sequence of one primitive number type of at least this many bytes travels raw (one
/// byte payload); a shorter one as a list of numbers, small enough to go inline.
pub const RAW_MIN: usize = 1024;

/// Why a value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct TypedError(pub String);

impl ser::Error for TypedError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        TypedError(msg.to_string())
    }
}

impl de::Error for TypedError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        TypedError(msg.to_string())
    }
}

/// Encodes a value of any `serde` type.
pub fn to_value<T: Serialize + ?Sized>(v: &T) -> Result<Value, TypedError> {
    match v.serialize(Encoder)? {
        Out::Value(v) => Ok(v),
        Out::Prim(p) => Ok(p.to_value()),
    }
}

/// Decodes a value as `T`, checking its shape.
pub fn from_value<T: DeserializeOwned>(v: &Value) -> Result<T, TypedError> {
    T::deserialize(Decoder(v))
}

/// Decodes a task's arguments (one value each) as the tuple `T` an op takes.
pub fn from_values<T: DeserializeOwned>(args: &[Value]) -> Result<T, TypedError> {
    T::deserialize(Args(args))
}

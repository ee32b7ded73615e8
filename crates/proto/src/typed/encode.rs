//! The serializer into [`Value`]s.

use serde::ser::{self, Serialize};

use super::decode::Raw;
use super::{to_value, TypedError, RAW_MIN};
use crate::Value;

/// A primitive number as serialized, with its width (so that a sequence of them can be
/// written raw).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Prim {
    I8(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    F32(f32),
    F64(f64),
}

impl Prim {
    pub(super) fn to_value(self) -> Value {
        match self {
            Prim::I8(x) => Value::Int(x.into()),
            Prim::I16(x) => Value::Int(x.into()),
            Prim::I32(x) => Value::Int(x.into()),
            Prim::I64(x) => Value::Int(x),
            Prim::U8(x) => Value::Int(x.into()),
            Prim::U16(x) => Value::Int(x.into()),
            Prim::U32(x) => Value::Int(x.into()),
            Prim::U64(x) => Value::Int(x as i64),
            Prim::F32(x) => Value::Float(x.into()),
            Prim::F64(x) => Value::Float(x),
        }
    }

    /// Which type, for a sequence to stay raw only while its items share one.
    fn kind(self) -> u8 {
        match self {
            Prim::I8(_) => 0,
            Prim::I16(_) => 1,
            Prim::I32(_) => 2,
            Prim::I64(_) => 3,
            Prim::U8(_) => 4,
            Prim::U16(_) => 5,
            Prim::U32(_) => 6,
            Prim::U64(_) => 7,
            Prim::F32(_) => 8,
            Prim::F64(_) => 9,
        }
    }

    fn write_le(self, out: &mut Vec<u8>) {
        match self {
            Prim::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
            Prim::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
            Prim::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
            Prim::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
            Prim::U8(x) => out.push(x),
            Prim::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
            Prim::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
            Prim::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
            Prim::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
            Prim::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        }
    }
}

/// What one item serialized to: a primitive number (kept apart so that sequences of them
/// can go raw), or anything else.
pub(super) enum Out {
    Prim(Prim),
    Value(Value),
}

impl Out {
    fn into_value(self) -> Value {
        match self {
            Out::Prim(p) => p.to_value(),
            Out::Value(v) => v,
        }
    }
}

/// The serializer into [`Value`]s.
pub(super) struct Encoder;

fn variant(index: u32, payload: Value) -> Value {
    Value::List(vec![Value::Int(index.into()), payload])
}

impl ser::Serializer for Encoder {
    type Ok = Out;
    type Error = TypedError;
    type SerializeSeq = SeqEncoder;
    type SerializeTuple = ListEncoder;
    type SerializeTupleStruct = ListEncoder;
    type SerializeTupleVariant = ListEncoder;
    type SerializeMap = MapEncoder;
    type SerializeStruct = ListEncoder;
    type SerializeStructVariant = ListEncoder;

    fn serialize_bool(self, v: bool) -> Result<Out, TypedError> {
        Ok(Out::Value(Value::Bool(v)))
    }
    fn serialize_i8(self, v: i8) -> Result<Out, TypedError> {
        Ok(Out::Prim(Prim::I8(v)))
    }
    fn serialize_i16(self, v: i16) -> Result<Out, TypedError> {
        Ok(Out::Prim(Prim::I16(v)))
    }
    fn serialize_i32(self, v: i32) -> Result<Out, TypedError> {
        Ok(Out::Prim(Prim::I32(v)))
    }
    fn serialize_i64(self, v: i64) -> Result<Out, TypedError> {
        Ok(Out::Prim(Prim::I64(v)))
    }
    fn serialize_i128(self, v: i128) -> Result<Out, TypedError> {
        let (lo, hi) = (v as u64 as i64, (v >> 64) as i64);
        Ok(Out::Value(Value::List(vec![
            Value::Int(lo),
            Value::Int(hi),
        ])))
    }
    fn serialize_u8(self, v: u8) -> Result<Out, TypedError> {
        Ok(Out::Prim(Prim::U8(v)))
    }
    fn serialize_u16(self, v: u16) -> Result<Out, TypedError> {
        Ok(Out::Prim(Prim::U16(v)))
    }
    fn serialize_u32(self, v: u32) -> Result<Out, TypedError> {
        Ok(Out::Prim(Prim::U32(v)))
    }
    fn serialize_u64(self, v: u64) -> Result<Out, TypedError> {
        Ok(Out::Prim(Prim::U64(v)))
    }
    fn serialize_u128(self, v: u128) -> Result<Out, TypedError> {
        let (lo, hi) = (v as u64 as i64, (v >> 64) as u64 as i64);
        Ok(Out::Value(Value::List(vec![
            Value::Int(lo),
            Value::Int(hi),
        ])))
    }
    fn serialize_f32(self, v: f32) -> Result<Out, TypedError> {
        Ok(Out::Prim(Prim::F32(v)))
    }
    fn serialize_f64(self, v: f64) -> Result<Out, TypedError> {
        Ok(Out::Prim(Prim::F64(v)))
    }
    fn serialize_char(self, v: char) -> Result<Out, TypedError> {
        Ok(Out::Value(Value::Int(u32::from(v).into())))
    }
    fn serialize_str(self, v: &str) -> Result<Out, TypedError> {
        Ok(Out::Value(Value::Str(v.to_owned())))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Out, TypedError> {
        Ok(Out::Value(Value::Bytes(bytes::Bytes::copy_from_slice(v))))
    }
    fn serialize_none(self) -> Result<Out, TypedError> {
        Ok(Out::Value(Value::List(Vec::new())))
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<Out, TypedError> {
        Ok(Out::Value(Value::List(vec![to_value(v)?])))
    }
    fn serialize_unit(self) -> Result<Out, TypedError> {
        Ok(Out::Value(Value::Null))
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Out, TypedError> {
        Ok(Out::Value(Value::Null))
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
    ) -> Result<Out, TypedError> {
        Ok(Out::Value(Value::Int(index.into())))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<Out, TypedError> {
        v.serialize(Encoder)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        v: &T,
    ) -> Result<Out, TypedError> {
        Ok(Out::Value(variant(index, to_value(v)?)))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqEncoder, TypedError> {
        Ok(SeqEncoder::new(len.unwrap_or(0)))
    }
    fn serialize_tuple(self, len: usize) -> Result<ListEncoder, TypedError> {
        Ok(ListEncoder::new(len, None))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        len: usize,
    ) -> Result<ListEncoder, TypedError> {
        Ok(ListEncoder::new(len, None))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        len: usize,
    ) -> Result<ListEncoder, TypedError> {
        Ok(ListEncoder::new(len, Some(index)))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapEncoder, TypedError> {
        Ok(MapEncoder {
            pairs: Vec::with_capacity(len.unwrap_or(0)),
            key: None,
        })
    }
    fn serialize_struct(self, _: &'static str, len: usize) -> Result<ListEncoder, TypedError> {
        Ok(ListEncoder::new(len, None))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        len: usize,
    ) -> Result<ListEncoder, TypedError> {
        Ok(ListEncoder::new(len, Some(index)))
    }
}

/// Fields of a tuple, struct or variant, in order.
pub(super) struct ListEncoder {
    items: Vec<Value>,
    variant: Option<u32>,
}

impl ListEncoder {
    fn new(len: usize, variant: Option<u32>) -> ListEncoder {
        ListEncoder {
            items: Vec::with_capacity(len),
            variant,
        }
    }

    fn push<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), TypedError> {
        self.items.push(to_value(v)?);
        Ok(())
    }

    fn finish(self) -> Result<Out, TypedError> {
        let list = Value::List(self.items);
        Ok(Out::Value(match self.variant {
            Some(index) => variant(index, list),
            None => list,
        }))
    }
}

/// The five serde traits `ListEncoder` takes: tuples (their elements or fields) and
/// structs (their fields, names dropped), every one an item of the list.
macro_rules! list_encoder_impls {
    ($($trait:ident :: $method:ident $(($name:ty))?),* $(,)?) => {$(
        impl ser::$trait for ListEncoder {
            type Ok = Out;
            type Error = TypedError;
            fn $method<T: Serialize + ?Sized>(
                &mut self,
                $(_: $name,)?
                v: &T,
            ) -> Result<(), TypedError> {
                self.push(v)
            }
            fn end(self) -> Result<Out, TypedError> {
                self.finish()
            }
        }
    )*};
}

list_encoder_impls!(
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
    SerializeStruct::serialize_field(&'static str),
    SerializeStructVariant::serialize_field(&'static str),
);

/// A sequence: raw little-endian bytes while its items are numbers of one type, else a
/// list.
pub(super) struct SeqEncoder {
    raw: Vec<u8>,
    /// The type of the numbers in `raw` (`None` before the first item).
    kind: Option<u8>,
    /// Items once the sequence is known not to be raw.
    items: Option<Vec<Value>>,
    len: usize,
}

impl SeqEncoder {
    fn new(len: usize) -> SeqEncoder {
        SeqEncoder {
            raw: Vec::new(),
            kind: None,
            items: None,
            len,
        }
    }

    /// The raw numbers so far as values (the sequence turned out not to be raw).
    fn unraw(&mut self) -> &mut Vec<Value> {
        if self.items.is_none() {
            let mut items = Vec::with_capacity(self.len);
            if let Some(kind) = self.kind {
                items.extend(decode_raw_values(kind, &self.raw));
            }
            self.raw = Vec::new();
            self.items = Some(items);
        }
        self.items.as_mut().expect("invariant: just set")
    }
}

/// Values of the raw numbers of type `kind` in `raw`.
pub(super) fn decode_raw_values(kind: u8, raw: &[u8]) -> Vec<Value> {
    let mut r = Raw { bytes: raw, pos: 0 };
    let mut out = Vec::new();
    while r.pos < raw.len() {
        let v = match kind {
            0 => Value::Int(
                r.take::<1>()
                    .map(|b| i8::from_le_bytes(b).into())
                    .unwrap_or(0),
            ),
            1 => Value::Int(
                r.take::<2>()
                    .map(|b| i16::from_le_bytes(b).into())
                    .unwrap_or(0),
            ),
            2 => Value::Int(
                r.take::<4>()
                    .map(|b| i32::from_le_bytes(b).into())
                    .unwrap_or(0),
            ),
            3 => Value::Int(r.take::<8>().map(i64::from_le_bytes).unwrap_or(0)),
            4 => Value::Int(r.take::<1>().map(|b| b[0].into()).unwrap_or(0)),
            5 => Value::Int(
                r.take::<2>()
                    .map(|b| u16::from_le_bytes(b).into())
                    .unwrap_or(0),
            ),
            6 => Value::Int(
                r.take::<4>()
                    .map(|b| u32::from_le_bytes(b).into())
                    .unwrap_or(0),
            ),
            7 => Value::Int(
                r.take::<8>()
                    .map(|b| u64::from_le_bytes(b) as i64)
                    .unwrap_or(0),
            ),
            8 => Value::Float(
                r.take::<4>()
                    .map(|b| f32::from_le_bytes(b).into())
                    .unwrap_or(0.0),
            ),
            _ => Value::Float(r.take::<8>().map(f64::from_le_bytes).unwrap_or(0.0)),
        };
        out.push(v);
    }
    out
}

impl ser::SerializeSeq for SeqEncoder {
    type Ok = Out;
    type Error = TypedError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), TypedError> {
        let out = v.serialize(Encoder)?;
        match out {
            Out::Prim(p) if self.items.is_none() && self.kind.is_none_or(|k| k == p.kind()) => {
                self.kind = Some(p.kind());
                if self.raw.is_empty() {
                    self.raw.reserve(self.len.saturating_mul(8).min(1 << 20));
                }
                p.write_le(&mut self.raw);
            }
            out => {
                let v = out.into_value();
                self.unraw().push(v);
            }
        }
        Ok(())
    }

    fn end(mut self) -> Result<Out, TypedError> {
        if self.items.is_none() && self.raw.len() >= RAW_MIN {
            return Ok(Out::Value(Value::Bytes(self.raw.into())));
        }
        Ok(Out::Value(Value::List(std::mem::take(self.unraw()))))
    }
}

/// A map, as `[key, value]` pairs.
pub(super) struct MapEncoder {
    pairs: Vec<Value>,
    key: Option<Value>,
}

impl ser::SerializeMap for MapEncoder {
    type Ok = Out;
    type Error = TypedError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), TypedError> {
        self.key = Some(to_value(k)?);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), TypedError> {
        let k = self
            .key
            .take()
            .ok_or_else(|| TypedError("a map value without its key".into()))?;
        self.pairs.push(Value::List(vec![k, to_value(v)?]));
        Ok(())
    }

    fn end(self) -> Result<Out, TypedError> {
        Ok(Out::Value(Value::List(self.pairs)))
    }
}

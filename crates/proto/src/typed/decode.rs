//! The deserializer from a [`Value`]: checked, every mismatch named.

use serde::de::{self, IntoDeserializer, Visitor};

use super::TypedError;
use crate::Value;

/// The deserializer from a [`Value`].
pub(super) struct Decoder<'a>(pub(super) &'a Value);

fn found(v: &Value) -> String {
    match v {
        Value::List(l) => format!("a list of {}", l.len()),
        Value::Bytes(b) => format!("{} raw bytes", b.len()),
        v => format!("a {}", v.type_name()),
    }
}

impl<'a> Decoder<'a> {
    fn expected<T>(&self, what: &str) -> Result<T, TypedError> {
        Err(TypedError(format!(
            "expected {what}, found {}",
            found(self.0)
        )))
    }

    fn int(&self, what: &str) -> Result<i64, TypedError> {
        match self.0 {
            Value::Int(i) => Ok(*i),
            _ => self.expected(what),
        }
    }

    fn list(&self, what: &str) -> Result<&'a [Value], TypedError> {
        match self.0 {
            Value::List(l) => Ok(l),
            _ => self.expected(what),
        }
    }

    fn wide(&self, what: &str) -> Result<(u64, u64), TypedError> {
        match self.list(what)? {
            [Value::Int(lo), Value::Int(hi)] => Ok((*lo as u64, *hi as u64)),
            _ => self.expected(what),
        }
    }
}

/// A narrower integer from an `Int`, refusing one out of its range.
macro_rules! narrow {
    ($($method:ident $visit:ident $t:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
            let i = self.int(stringify!($t))?;
            let x = <$t>::try_from(i)
                .map_err(|_| TypedError(format!("{i} does not fit in {}", stringify!($t))))?;
            v.$visit(x)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Decoder<'_> {
    type Error = TypedError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
        match self.0 {
            Value::Null => v.visit_unit(),
            Value::Bool(b) => v.visit_bool(*b),
            Value::Int(i) => v.visit_i64(*i),
            Value::Float(f) => v.visit_f64(*f),
            Value::Str(s) => v.visit_str(s),
            Value::Bytes(b) => v.visit_bytes(b),
            Value::List(l) => v.visit_seq(ListAccess(l.iter())),
            Value::Device(_) => self.expected("a value in host memory"),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
        match self.0 {
            Value::Bool(b) => v.visit_bool(*b),
            _ => self.expected("bool"),
        }
    }

    narrow!(deserialize_i8 visit_i8 i8, deserialize_i16 visit_i16 i16, deserialize_i32 visit_i32 i32,
        deserialize_u8 visit_u8 u8, deserialize_u16 visit_u16 u16, deserialize_u32 visit_u32 u32);

    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
        v.visit_i64(self.int("i64")?)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
        v.visit_u64(self.int("u64")? as u64)
    }

    fn deserialize_i128<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
        let (lo, hi) = self.wide("i128 (two words)")?;
        v.visit_i128(((hi as i128) << 64) | lo as i128)
    }

    fn deserialize_u128<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
        let (lo, hi) = self.wide("u128 (two words)")?;
        v.visit_u128(((hi as u128) << 64) | lo as u128)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
        match self.0 {
            Value::Float(f) => v.visit_f32(*f as f32),
            _ => self.expected("f32"),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
        match self.0 {
            Value::Float(f) => v.visit_f64(*f),
            _ => self.expected("f64"),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
        let i = self.int("char")?;
        let c = u32::try_from(i)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| TypedError(format!("{i} is not a char")))?;
        v.visit_char(c)
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
        match self.0 {
            Value::Str(s) => v.visit_str(s),
            _ => self.expected("a string"),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
        self.deserialize_str(v)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
        match self.0 {
            Value::Bytes(b) => v.visit_bytes(b),
            Value::List(l) => {
                let bytes = l
                    .iter()
                    .map(|x| match x {
                        Value::Int(i) => u8::try_from(*i).ok(),
                        _ => None,
                    })
                    .collect::<Option<Vec<u8>>>();
                match bytes {
                    Some(b) => v.visit_byte_buf(b),
                    None => self.expected("bytes"),
                }
            }
            _ => self.expected("bytes"),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
        self.deserialize_bytes(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
        match self.list("an option (a list of 0 or 1)")? {
            [] => v.visit_none(),
            [x] => v.visit_some(Decoder(x)),
            _ => self.expected("an option (a list of 0 or 1)"),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
        match self.0 {
            Value::Null => v.visit_unit(),
            _ => self.expected("()"),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, TypedError> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, TypedError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
        match self.0 {
            Value::List(l) => v.visit_seq(ListAccess(l.iter())),
            Value::Bytes(b) => v.visit_seq(RawAccess(Raw { bytes: b, pos: 0 })),
            _ => self.expected("a sequence"),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, TypedError> {
        match self.0 {
            Value::List(l) if l.len() == len => v.visit_seq(ListAccess(l.iter())),
            // A fixed-size array of numbers may have gone raw.
            Value::Bytes(b) => v.visit_seq(RawAccess(Raw { bytes: b, pos: 0 })),
            _ => self.expected(&format!("a tuple of {len}")),
        }
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        v: V,
    ) -> Result<V::Value, TypedError> {
        self.deserialize_tuple(len, v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
        let pairs = self.list("a map (a list of [key, value])")?;
        v.visit_map(PairAccess {
            pairs: pairs.iter(),
            value: None,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, TypedError> {
        match self.0 {
            Value::List(l) if l.len() == fields.len() => v.visit_seq(ListAccess(l.iter())),
            _ => self.expected(&format!("struct {name} ({} fields)", fields.len())),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, TypedError> {
        match self.0 {
            Value::Int(i) => v.visit_enum(VariantAccess {
                index: *i,
                payload: None,
            }),
            Value::List(l) => match l.as_slice() {
                [Value::Int(i), payload] => v.visit_enum(VariantAccess {
                    index: *i,
                    payload: Some(payload),
                }),
                _ => self.expected(&format!("enum {name} ([variant, payload])")),
            },
            _ => self.expected(&format!("enum {name}")),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
        match self.0 {
            Value::Int(i) => v.visit_u64(*i as u64),
            Value::Str(s) => v.visit_str(s),
            _ => self.expected("an identifier"),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
        v.visit_unit()
    }
}

pub(super) struct ListAccess<'a>(std::slice::Iter<'a, Value>);

impl<'de> de::SeqAccess<'de> for ListAccess<'_> {
    type Error = TypedError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, TypedError> {
        self.0
            .next()
            .map(|x| seed.deserialize(Decoder(x)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// Raw little-endian numbers, read as the element type asks.
pub(super) struct Raw<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
}

impl Raw<'_> {
    pub(super) fn take<const N: usize>(&mut self) -> Result<[u8; N], TypedError> {
        let end = self.pos + N;
        let b = self.bytes.get(self.pos..end).ok_or_else(|| {
            TypedError(format!(
                "raw numbers: {} bytes is not a whole number of {N}-byte items",
                self.bytes.len()
            ))
        })?;
        self.pos = end;
        Ok(b.try_into().expect("invariant: N bytes"))
    }
}

pub(super) struct RawAccess<'a>(Raw<'a>);

impl<'de> de::SeqAccess<'de> for RawAccess<'_> {
    type Error = TypedError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, TypedError> {
        if self.0.pos >= self.0.bytes.len() {
            return Ok(None);
        }
        seed.deserialize(RawItem(&mut self.0)).map(Some)
    }
}

/// One raw number; its width is the type the element asks for.
pub(super) struct RawItem<'r, 'a>(&'r mut Raw<'a>);

macro_rules! raw_number {
    ($($method:ident $visit:ident $t:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
            v.$visit(<$t>::from_le_bytes(self.0.take::<{ std::mem::size_of::<$t>() }>()?))
        }
    )*};
}

impl<'de> de::Deserializer<'de> for RawItem<'_, '_> {
    type Error = TypedError;

    raw_number!(deserialize_i8 visit_i8 i8, deserialize_i16 visit_i16 i16,
        deserialize_i32 visit_i32 i32, deserialize_i64 visit_i64 i64,
        deserialize_u8 visit_u8 u8, deserialize_u16 visit_u16 u16,
        deserialize_u32 visit_u32 u32, deserialize_u64 visit_u64 u64,
        deserialize_f32 visit_f32 f32, deserialize_f64 visit_f64 f64);

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, TypedError> {
        Err(TypedError(
            "raw numbers can only be read as numbers of a known width".into(),
        ))
    }

    serde::forward_to_deserialize_any! {
        bool i128 u128 char str string bytes byte_buf option unit unit_struct
        newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

pub(super) struct PairAccess<'a> {
    pairs: std::slice::Iter<'a, Value>,
    value: Option<&'a Value>,
}

impl<'de> de::MapAccess<'de> for PairAccess<'_> {
    type Error = TypedError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TypedError> {
        let Some(pair) = self.pairs.next() else {
            return Ok(None);
        };
        match pair {
            Value::List(kv) if kv.len() == 2 => {
                self.value = Some(&kv[1]);
                seed.deserialize(Decoder(&kv[0])).map(Some)
            }
            other => Err(TypedError(format!(
                "expected a [key, value] pair, found {}",
                found(other)
            ))),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, TypedError> {
        let v = self
            .value
            .take()
            .ok_or_else(|| TypedError("a map value without its key".into()))?;
        seed.deserialize(Decoder(v))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.pairs.len())
    }
}

pub(super) struct VariantAccess<'a> {
    index: i64,
    payload: Option<&'a Value>,
}

impl<'de, 'a> de::EnumAccess<'de> for VariantAccess<'a> {
    type Error = TypedError;
    type Variant = Payload<'a>;

    fn variant_seed<V: de::DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Payload<'a>), TypedError> {
        let index = u32::try_from(self.index)
            .map_err(|_| TypedError(format!("{} is not a variant index", self.index)))?;
        let de: de::value::U32Deserializer<TypedError> = index.into_deserializer();
        Ok((seed.deserialize(de)?, Payload(self.payload)))
    }
}

pub(super) struct Payload<'a>(Option<&'a Value>);

impl<'de> de::VariantAccess<'de> for Payload<'_> {
    type Error = TypedError;

    fn unit_variant(self) -> Result<(), TypedError> {
        match self.0 {
            None => Ok(()),
            Some(v) => Err(TypedError(format!(
                "expected a unit variant, found one with {}",
                found(v)
            ))),
        }
    }

    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, TypedError> {
        let v = self.0.ok_or_else(|| {
            TypedError("expected a variant with a value, found a unit one".into())
        })?;
        seed.deserialize(Decoder(v))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, TypedError> {
        match self.0 {
            Some(payload) => de::Deserializer::deserialize_tuple(Decoder(payload), len, v),
            None => Err(TypedError(
                "expected a tuple variant, found a unit one".into(),
            )),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, TypedError> {
        match self.0 {
            Some(payload) => de::Deserializer::deserialize_struct(Decoder(payload), "", fields, v),
            None => Err(TypedError(
                "expected a struct variant, found a unit one".into(),
            )),
        }
    }
}

/// A task's arguments, one value each, as the tuple the op takes.
pub(super) struct Args<'a>(pub(super) &'a [Value]);

impl<'de> de::Deserializer<'de> for Args<'_> {
    type Error = TypedError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
        v.visit_seq(ListAccess(self.0.iter()))
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TypedError> {
        match self.0 {
            [] => v.visit_unit(),
            args => Err(TypedError(format!(
                "expected no arguments, found {}",
                args.len()
            ))),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, TypedError> {
        if self.0.len() != len {
            return Err(TypedError(format!(
                "expected {len} arguments, found {}",
                self.0.len()
            )));
        }
        v.visit_seq(ListAccess(self.0.iter()))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit_struct newtype_struct seq tuple_struct map struct enum
        identifier ignored_any
    }
}

//! Typed values: [`Value`] in memory, [`Datum`] on the wire.
//!
//! A `Value` is what ops take and return. On the wire it becomes a `Datum`, in which byte
//! payloads are replaced by indices into the frame's raw buffers (so large payloads never
//! travel inside the rkyv header) and task arguments may refer to the task's dependencies.
//!
//! Bytes may also live in a device's memory ([`DeviceBytes`]: a GPU's, or a simulated
//! GPU's), where the device's kernels use them in place. They come to the host only when
//! something on the host needs them ([`Value::to_host`]): a CPU op, a peer, the client.

use bytes::Bytes;

use crate::payload::{device_to_host, host_bytes, AsPayload, DeviceBytes, Payload};
use crate::ProtoError;

/// How deep values may nest; deeper input from a peer is refused.
pub const MAX_DEPTH: usize = 64;

/// A typed value: an op's argument or result, held in a worker's store.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// No value (an op's result when it has nothing to return).
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// UTF-8 text.
    Str(String),
    /// Raw bytes; travel as a frame buffer, never inside a header.
    Bytes(Bytes),
    /// A list of values, nested at most [`MAX_DEPTH`] levels.
    List(Vec<Value>),
    /// Raw bytes in a device's memory; they go to the host (and onto the wire) as `Bytes`.
    Device(DeviceBytes),
}

/// The wire form of a [`Value`], or of a task's arguments.
///
/// On the wire a datum is not a tree but its nodes in pre-order (see [`crate::flat`]):
/// validating a frame then never recurses, however deep the value a peer claims to send,
/// and rebuilding the tree refuses more than [`MAX_DEPTH`] levels.
#[derive(Clone, Debug, PartialEq)]
pub enum Datum {
    /// [`Value::Null`].
    Null,
    /// [`Value::Bool`].
    Bool(bool),
    /// [`Value::Int`].
    Int(i64),
    /// [`Value::Float`].
    Float(f64),
    /// [`Value::Str`].
    Str(String),
    /// Index into the raw buffers that travel with this datum.
    Buf(u32),
    /// [`Value::List`].
    List(Vec<Datum>),
    /// The output of the task's `i`-th dependency (task arguments only).
    Ref(u32),
}

impl Value {
    /// Approximate size in memory, used for placement and memory accounting.
    pub fn nbytes(&self) -> u64 {
        match self {
            Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_) => 8,
            Value::Str(s) => 24 + s.len() as u64,
            Value::Bytes(b) => 24 + b.len() as u64,
            Value::Device(d) => 24 + d.len() as u64,
            Value::List(l) => 24 + l.iter().map(Value::nbytes).sum::<u64>(),
        }
    }

    /// Converts to wire form, appending byte payloads to `bufs` (no copy: `Bytes` is shared;
    /// bytes on a device are lent from its host view or copied to the host, which may
    /// fail).
    pub fn to_datum(&self, bufs: &mut Vec<Bytes>) -> Result<Datum, ProtoError> {
        self.to_datum_with(&mut |v| {
            bufs.push(match v {
                Value::Device(d) => host_bytes(d)?,
                Value::Bytes(b) => b.clone(),
                _ => unreachable!("only byte leaves are pushed"),
            });
            Ok((bufs.len() - 1) as u32)
        })
    }

    /// As [`Value::to_datum`], with bytes in a device's memory left there when
    /// `lend_device` (for a same-host peer that imports them into its own device), else
    /// brought to the host.
    pub fn to_datum_lent(
        &self,
        bufs: &mut Vec<Payload>,
        lend_device: bool,
    ) -> Result<Datum, ProtoError> {
        self.to_datum_with(&mut |v| {
            bufs.push(match v {
                Value::Device(d) if lend_device => Payload::Device(d.clone()),
                Value::Device(d) => Payload::Host(host_bytes(d)?),
                Value::Bytes(b) => Payload::Host(b.clone()),
                _ => unreachable!("only byte leaves are pushed"),
            });
            Ok((bufs.len() - 1) as u32)
        })
    }

    /// The wire form; `push` takes each byte leaf (bytes or device bytes) and returns the
    /// index of the buffer it became.
    fn to_datum_with(
        &self,
        push: &mut dyn FnMut(&Value) -> Result<u32, ProtoError>,
    ) -> Result<Datum, ProtoError> {
        self.to_datum_at(push, 0)
    }

    fn to_datum_at(
        &self,
        push: &mut dyn FnMut(&Value) -> Result<u32, ProtoError>,
        depth: usize,
    ) -> Result<Datum, ProtoError> {
        if depth > MAX_DEPTH {
            return Err(ProtoError::TooDeep(MAX_DEPTH));
        }
        Ok(match self {
            Value::Null => Datum::Null,
            Value::Bool(b) => Datum::Bool(*b),
            Value::Int(i) => Datum::Int(*i),
            Value::Float(f) => Datum::Float(*f),
            Value::Str(s) => Datum::Str(s.clone()),
            Value::Bytes(_) | Value::Device(_) => Datum::Buf(push(self)?),
            Value::List(l) => {
                let mut items = Vec::with_capacity(l.len());
                for v in l {
                    items.push(v.to_datum_at(push, depth + 1)?);
                }
                Datum::List(items)
            }
        })
    }

    /// Whether `f` holds for any leaf of the value (anything but a list).
    pub fn any_leaf(&self, f: &impl Fn(&Value) -> bool) -> bool {
        match self {
            Value::List(l) => l.iter().any(|x| x.any_leaf(f)),
            v => f(v),
        }
    }

    /// Whether any of the value's bytes are in a device's memory.
    pub fn on_device(&self) -> bool {
        self.any_leaf(&|v| matches!(v, Value::Device(_)))
    }

    /// The value with every byte payload in host memory (a clone when none is on a device).
    pub fn to_host(&self) -> Result<Value, ProtoError> {
        Ok(match self {
            Value::Device(d) => Value::Bytes(device_to_host(d)?),
            Value::List(l) if self.on_device() => {
                Value::List(l.iter().map(Value::to_host).collect::<Result<_, _>>()?)
            }
            v => v.clone(),
        })
    }

    /// Bytes of the value held in devices' memory.
    pub fn device_bytes(&self) -> u64 {
        match self {
            Value::Device(d) => d.len() as u64,
            Value::List(l) => l.iter().map(Value::device_bytes).sum(),
            _ => 0,
        }
    }

    /// A short human description of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Device(_) => "device bytes",
            Value::List(_) => "list",
        }
    }
}

impl Datum {
    /// Rebuilds a value from its wire form. `deps` resolves [`Datum::Ref`]; pass `&[]` where
    /// references are not allowed (they then fail with an error).
    pub fn to_value(&self, bufs: &[Bytes], deps: &[&Value]) -> Result<Value, ProtoError> {
        self.to_value_at(bufs, deps, 0)
    }

    /// As [`Datum::to_value`], from buffers that may be in a device's memory.
    pub fn to_value_from(&self, bufs: &[Payload], deps: &[&Value]) -> Result<Value, ProtoError> {
        self.to_value_at(bufs, deps, 0)
    }

    pub(crate) fn to_value_at<P: AsPayload>(
        &self,
        bufs: &[P],
        deps: &[&Value],
        depth: usize,
    ) -> Result<Value, ProtoError> {
        if depth > MAX_DEPTH {
            return Err(ProtoError::TooDeep(MAX_DEPTH));
        }
        Ok(match self {
            Datum::Null => Value::Null,
            Datum::Bool(b) => Value::Bool(*b),
            Datum::Int(i) => Value::Int(*i),
            Datum::Float(f) => Value::Float(*f),
            Datum::Str(s) => Value::Str(s.clone()),
            Datum::Buf(i) => bufs
                .get(*i as usize)
                .ok_or(ProtoError::MissingBuffer {
                    index: *i,
                    count: bufs.len(),
                })?
                .to_leaf(),
            Datum::List(l) => {
                // Made to size: a `collect` through `Result` cannot know the length.
                let mut items = Vec::with_capacity(l.len());
                for d in l {
                    items.push(d.to_value_at(bufs, deps, depth + 1)?);
                }
                Value::List(items)
            }
            Datum::Ref(i) => (*deps.get(*i as usize).ok_or(ProtoError::MissingDependency {
                index: *i,
                count: deps.len(),
            })?)
            .clone(),
        })
    }

    /// Moves the buffers this datum refers to out of a frame's buffer list into a list of its
    /// own, renumbering its indices from 0. Used when one frame carries many messages.
    pub fn localize(&mut self, frame_bufs: &[Bytes]) -> Result<Vec<Bytes>, ProtoError> {
        let mut own = Vec::new();
        self.walk_bufs(&mut |i| {
            let b = frame_bufs
                .get(*i as usize)
                .ok_or(ProtoError::MissingBuffer {
                    index: *i,
                    count: frame_bufs.len(),
                })?;
            own.push(b.clone());
            *i = (own.len() - 1) as u32;
            Ok(())
        })?;
        Ok(own)
    }

    /// The inverse of [`Datum::localize`]: appends this datum's own buffers to a frame's
    /// list, renumbering its indices to match.
    pub fn globalize(
        &mut self,
        own: &[Bytes],
        frame_bufs: &mut Vec<Bytes>,
    ) -> Result<(), ProtoError> {
        let base = frame_bufs.len() as u32;
        frame_bufs.extend(own.iter().cloned());
        self.walk_bufs(&mut |i| {
            if *i as usize >= own.len() {
                return Err(ProtoError::MissingBuffer {
                    index: *i,
                    count: own.len(),
                });
            }
            *i += base;
            Ok(())
        })
    }

    fn walk_bufs(
        &mut self,
        f: &mut dyn FnMut(&mut u32) -> Result<(), ProtoError>,
    ) -> Result<(), ProtoError> {
        match self {
            Datum::Buf(i) => f(i),
            Datum::List(l) => l.iter_mut().try_for_each(|d| d.walk_bufs(f)),
            _ => Ok(()),
        }
    }

    /// Adds `base` to every buffer index.
    pub fn shift_buffers(&mut self, base: u32) {
        if base == 0 {
            return;
        }
        let _ = self.walk_bufs(&mut |i| {
            *i += base;
            Ok(())
        });
    }

    /// The largest dependency index this datum refers to, plus one (0 if none); a `u64`,
    /// since the largest index a reference can carry is `u32::MAX`.
    pub fn max_ref(&self) -> u64 {
        match self {
            Datum::Ref(i) => u64::from(*i) + 1,
            Datum::List(l) => l.iter().map(Datum::max_ref).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// One past the largest buffer index in this datum (0 if none).
    pub fn max_buf(&self) -> u64 {
        match self {
            Datum::Buf(i) => u64::from(*i) + 1,
            Datum::List(l) => l.iter().map(Datum::max_buf).max().unwrap_or(0),
            _ => 0,
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $v:ident $(as $cast:ty)?),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(x: $t) -> Self {
                Value::$v((x $(as $cast)?).into())
            }
        }
    )*};
}
value_from!(bool => Bool, i64 => Int, i32 => Int as i64, u32 => Int as i64, f64 => Float,
    f32 => Float as f64, String => Str, &str => Str, Bytes => Bytes);

impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Value::List(v)
    }
}

impl From<()> for Value {
    fn from(_: ()) -> Self {
        Value::Null
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeviceData, DeviceLoc};
    use std::any::Any;
    use std::sync::Arc;

    /// Values and datums nested up to the limit convert both ways; one level more is
    /// refused by either conversion.
    #[test]
    fn conversions_refuse_nesting_past_the_limit() {
        let nested_value = |levels: usize| {
            let mut v = Value::Int(1);
            for _ in 0..levels {
                v = Value::List(vec![v]);
            }
            v
        };
        let nested_datum = |levels: usize| {
            let mut d = Datum::Int(1);
            for _ in 0..levels {
                d = Datum::List(vec![d]);
            }
            d
        };
        let mut bufs = Vec::new();
        assert_eq!(
            nested_value(MAX_DEPTH).to_datum(&mut bufs).unwrap(),
            nested_datum(MAX_DEPTH)
        );
        assert!(matches!(
            nested_value(MAX_DEPTH + 1).to_datum(&mut bufs),
            Err(ProtoError::TooDeep(MAX_DEPTH))
        ));
        assert_eq!(
            nested_datum(MAX_DEPTH).to_value(&[], &[]).unwrap(),
            nested_value(MAX_DEPTH)
        );
        assert!(matches!(
            nested_datum(MAX_DEPTH + 1).to_value(&[], &[]),
            Err(ProtoError::TooDeep(MAX_DEPTH))
        ));
    }

    #[test]
    fn round_trip_with_buffers() {
        let v = Value::List(vec![
            Value::Int(3),
            Value::Bytes(Bytes::from_static(b"abc")),
            Value::List(vec![
                Value::Str("x".into()),
                Value::Bytes(Bytes::from(vec![7u8; 1000])),
            ]),
        ]);
        let mut bufs = Vec::new();
        let d = v.to_datum(&mut bufs).unwrap();
        assert_eq!(bufs.len(), 2);
        assert_eq!(d.to_value(&bufs, &[]).unwrap(), v);
    }

    /// Device memory for the tests: host bytes that count their trips to the host, or fail.
    struct Fake {
        bytes: Option<Bytes>,
        trips: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl DeviceData for Fake {
        fn device(&self) -> DeviceLoc {
            DeviceLoc::sim(7)
        }
        fn len(&self) -> usize {
            self.bytes.as_ref().map_or(4, Bytes::len)
        }
        fn to_host(&self) -> Result<Bytes, String> {
            self.trips
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.bytes
                .clone()
                .ok_or_else(|| "the device is gone".into())
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    #[test]
    fn device_bytes_come_to_the_host_only_when_asked() {
        let trips = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let d = DeviceBytes::new(Fake {
            bytes: Some(Bytes::from_static(b"gpu!")),
            trips: trips.clone(),
        });
        let v = Value::List(vec![Value::Int(1), Value::Device(d.clone())]);
        assert!(v.on_device());
        assert_eq!(v.device_bytes(), 4);
        assert_eq!(v.nbytes(), 8 + 24 + 4 + 24);
        assert_eq!(v.clone(), v, "clones share the device memory");
        assert!(d.downcast::<Fake>().is_some());
        assert!(d.downcast::<String>().is_none());
        assert_eq!(trips.load(std::sync::atomic::Ordering::Relaxed), 0);
        let host = Value::List(vec![
            Value::Int(1),
            Value::Bytes(Bytes::from_static(b"gpu!")),
        ]);
        assert_eq!(v.to_host().unwrap(), host);
        assert!(!host.on_device());
        let mut bufs = Vec::new();
        let wire = v.to_datum(&mut bufs).unwrap();
        assert_eq!(wire.to_value(&bufs, &[]).unwrap(), host);
        assert_eq!(trips.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert!(d.data().host_view().is_none());

        let gone = Value::Device(DeviceBytes::new(Fake { bytes: None, trips }));
        let e = gone.to_host().unwrap_err().to_string();
        assert!(
            e.contains("sim:7") && e.contains("the device is gone"),
            "{e}"
        );
        assert!(gone.to_datum(&mut Vec::new()).is_err());
    }

    #[test]
    fn refs_resolve_and_missing_refs_fail() {
        let d = Datum::List(vec![Datum::Ref(1), Datum::Int(2)]);
        assert_eq!(d.max_ref(), 2);
        let a = Value::Int(10);
        let b = Value::Int(20);
        assert_eq!(
            d.to_value(&[], &[&a, &b]).unwrap(),
            Value::List(vec![Value::Int(20), Value::Int(2)])
        );
        assert!(matches!(
            d.to_value(&[], &[&a]),
            Err(ProtoError::MissingDependency { index: 1, count: 1 })
        ));
        assert!(matches!(
            Datum::Buf(0).to_value(&[], &[]),
            Err(ProtoError::MissingBuffer { index: 0, count: 0 })
        ));
    }

    /// Found by fuzzing: the largest index a reference can carry, plus one, is counted
    /// without overflowing.
    #[test]
    fn max_ref_of_the_largest_reference_does_not_overflow() {
        let d = Datum::List(vec![Datum::Ref(3), Datum::List(vec![Datum::Ref(u32::MAX)])]);
        assert_eq!(d.max_ref(), 1 << 32);
        assert_eq!(Datum::Int(1).max_ref(), 0);
    }

    #[test]
    fn localize_then_globalize() {
        let frame: Vec<Bytes> = (0..4u8).map(|i| Bytes::from(vec![i; 3])).collect();
        let mut d = Datum::List(vec![Datum::Buf(3), Datum::Buf(1)]);
        let own = d.localize(&frame).unwrap();
        assert_eq!(d, Datum::List(vec![Datum::Buf(0), Datum::Buf(1)]));
        assert_eq!(own, vec![frame[3].clone(), frame[1].clone()]);
        let mut out = vec![Bytes::new()];
        d.globalize(&own, &mut out).unwrap();
        assert_eq!(d, Datum::List(vec![Datum::Buf(1), Datum::Buf(2)]));
        assert!(Datum::Buf(9).localize(&frame).is_err());
    }
}

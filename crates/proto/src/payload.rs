//! Bytes a value holds, wherever they are: in host memory, or in a device's
//! ([`DeviceBytes`], over a [`DeviceData`] each kind of device implements), possibly
//! shared with another process ([`IpcExport`], [`IpcBuffer`]); [`Payload`] is either.

use std::any::Any;
use std::sync::Arc;

use bytes::Bytes;

use crate::{DeviceLoc, ProtoError, Value};

/// Memory of a device that holds a value's bytes. Implemented by each kind of device; the
/// device recognizes its own buffers through [`DeviceData::as_any`].
pub trait DeviceData: Send + Sync + 'static {
    /// The device holding the bytes (`sim:N`, `cuda:N`), as the process holding them
    /// numbers its devices.
    fn device(&self) -> DeviceLoc;
    /// How messages name where the bytes are: the device, unless the bytes are somewhere
    /// this process cannot reach directly (`cuda:0 of a peer`).
    fn label(&self) -> String {
        self.device().to_string()
    }
    /// Length in bytes.
    fn len(&self) -> usize;
    /// Whether the length is zero.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The bytes in host memory: a copy from the device (a simulated GPU's memory is host
    /// memory, so it may lend its bytes without a copy).
    fn to_host(&self) -> Result<Bytes, String>;
    /// The bytes where the host (and same-host peers, through shared memory) can read them
    /// in place, if the device's memory is host memory (a simulated GPU's): what goes on
    /// the wire without a download.
    fn host_view(&self) -> Option<Bytes> {
        None
    }
    /// A handle through which another process on this host can open the memory holding
    /// these bytes (CUDA IPC), if the device has one; `None` when it has not.
    fn ipc_export(&self) -> Option<Result<IpcExport, String>> {
        None
    }
    /// The implementation as `Any`, so a device can downcast to its own buffer type
    /// ([`DeviceBytes::downcast`]).
    fn as_any(&self) -> &dyn Any;
}

/// Where a device's bytes can be opened from another process: the handle of the
/// allocation holding them (a `cuIpcMemHandle`'s 64 bytes) and their offset in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpcExport {
    /// The opaque IPC handle of the allocation, as the driver returned it.
    pub handle: Vec<u8>,
    /// Where the bytes start in that allocation, in bytes.
    pub offset: u64,
}

/// Bytes still in a same-host peer's device memory, reachable through an IPC handle: what
/// a receiver holds until its device imports them (opens the handle, copies the bytes
/// into its own memory, closes it). The peer keeps the memory until `loan` is dropped.
pub struct IpcBuffer {
    /// The peer's device, as the peer numbers its devices (shown as `cuda:0 of a peer`).
    pub device: DeviceLoc,
    /// The handle and offset to open the bytes from.
    pub export: IpcExport,
    /// Length of the value in bytes.
    pub len: u64,
    /// Keeps the peer's loan open while held.
    pub loan: Option<Arc<dyn Any + Send + Sync>>,
}

impl DeviceData for IpcBuffer {
    fn device(&self) -> DeviceLoc {
        self.device
    }

    fn label(&self) -> String {
        format!("{} of a peer", self.device)
    }

    fn len(&self) -> usize {
        self.len as usize
    }

    fn to_host(&self) -> Result<Bytes, String> {
        Err("bytes in a peer's device memory are read by importing them into a device".into())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A payload as a holder lends it or a receiver gets it: bytes the host reads, or bytes in
/// a device's memory.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// Bytes in host memory.
    Host(Bytes),
    /// Bytes left in a device's memory (lent to a same-host peer).
    Device(DeviceBytes),
}

impl Payload {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Payload::Host(b) => b.len(),
            Payload::Device(d) => d.len(),
        }
    }

    /// Whether the length is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes in host memory (lent from the device's host view, or copied from it).
    pub fn to_host(&self) -> Result<Bytes, ProtoError> {
        match self {
            Payload::Host(b) => Ok(b.clone()),
            Payload::Device(d) => host_bytes(d),
        }
    }

    /// As [`Payload::to_host`], taking the host bytes as they are.
    pub fn into_host(self) -> Result<Bytes, ProtoError> {
        match self {
            Payload::Host(b) => Ok(b),
            Payload::Device(d) => host_bytes(&d),
        }
    }
}

/// A frame's buffers as [`Datum::to_value`](crate::Datum::to_value) reads them.
pub trait AsPayload {
    /// The buffer as a leaf value: [`Value::Bytes`], or [`Value::Device`] for bytes left in
    /// a device's memory. Shares the buffer, never copies it.
    fn to_leaf(&self) -> Value;
}

impl AsPayload for Bytes {
    fn to_leaf(&self) -> Value {
        Value::Bytes(self.clone())
    }
}

impl AsPayload for Payload {
    fn to_leaf(&self) -> Value {
        match self {
            Payload::Host(b) => Value::Bytes(b.clone()),
            Payload::Device(d) => Value::Device(d.clone()),
        }
    }
}

/// Bytes in a device's memory; cloning shares them.
#[derive(Clone)]
pub struct DeviceBytes(Arc<dyn DeviceData>);

impl DeviceBytes {
    /// Wraps a device's buffer; clones of the result share it.
    pub fn new(data: impl DeviceData) -> DeviceBytes {
        DeviceBytes(Arc::new(data))
    }

    /// The device's buffer behind these bytes.
    pub fn data(&self) -> &dyn DeviceData {
        &*self.0
    }

    /// The device holding the bytes (see [`DeviceData::device`]).
    pub fn device(&self) -> DeviceLoc {
        self.0.device()
    }

    /// Where the bytes are, for messages (see [`DeviceData::label`]).
    pub fn label(&self) -> String {
        self.0.label()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the length is zero.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The device's own type for these bytes, if it is `T`.
    pub fn downcast<T: 'static>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
    }
}

impl std::fmt::Debug for DeviceBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBytes({} bytes on {})", self.len(), self.label())
    }
}

/// The same memory (two copies of equal bytes are different buffers).
impl PartialEq for DeviceBytes {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A device's bytes in host memory: its host view where it has one, else a copy.
pub(crate) fn host_bytes(d: &DeviceBytes) -> Result<Bytes, ProtoError> {
    match d.data().host_view() {
        Some(b) => Ok(b),
        None => device_to_host(d),
    }
}

pub(crate) fn device_to_host(d: &DeviceBytes) -> Result<Bytes, ProtoError> {
    let b = d.data().to_host().map_err(|e| ProtoError::Device {
        device: d.label(),
        message: e,
    })?;
    if b.len() != d.len() {
        return Err(ProtoError::Device {
            device: d.label(),
            message: format!("{} bytes came back of {}", b.len(), d.len()),
        });
    }
    Ok(b)
}

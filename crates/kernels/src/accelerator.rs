//! Devices that run ops by device plans ([`Accelerator`]), and the helpers that move a
//! value's bytes onto one.

use rask_proto::{DeviceData, IpcBuffer, Value};

use crate::{OpError, Registry};

/// A device that runs ops by their device plans ([`crate::plan`]): a CUDA GPU
/// (`gpu::GpuThread`, feature `cuda`) or a simulated one ([`crate::plan::HostPlans`], the
/// plans run by the kernels' CPU twins).
pub trait Accelerator: Send + Sync {
    /// Runs `op` if this device has a plan for it; `None` leaves it to the CPU op.
    fn try_run(
        &self,
        registry: &Registry,
        op: &str,
        args: &[Value],
    ) -> Option<Result<Value, OpError>>;

    /// Why this device is unusable for good (a sticky CUDA error), once it is: no op runs
    /// on it again in this process, and the worker leaves so that a fresh process takes
    /// the device.
    fn lost(&self) -> Option<String> {
        None
    }

    /// Bytes copied from this device's memory to the host so far.
    fn downloaded(&self) -> u64 {
        0
    }

    /// Microseconds this device has had a command running so far ([`crate::busy::Busy`]),
    /// if it keeps count: its utilization is the share of time it grows.
    fn busy_us(&self) -> Option<u64> {
        None
    }

    /// Whether `op` on `args` would run by this device's kernels.
    fn runs(&self, _registry: &Registry, _op: &str, _args: &[Value]) -> bool {
        false
    }

    /// `v` with its bytes copied into this device's memory; `None` when the device cannot
    /// hold them.
    fn upload(&self, _v: &Value) -> Option<Result<Value, OpError>> {
        None
    }

    /// Whether this device imports bytes lent from a same-host peer's device by IPC handle
    /// ([`Accelerator::import`]); else such bytes come to it through the host.
    fn imports(&self) -> bool {
        false
    }

    /// Bytes lent from a peer's device: copied into this device's memory (or to the host
    /// when it is full). Blocks until done: call it off an event loop.
    fn import(&self, b: &IpcBuffer) -> Result<Value, OpError> {
        Err(OpError::Message(format!(
            "this device cannot import bytes from {}",
            b.label()
        )))
    }
}

/// `v` with every leaf lent from a peer's device ([`IpcBuffer`]) imported by `acc`.
pub fn import_lent(acc: &dyn Accelerator, v: &Value) -> Result<Value, OpError> {
    Ok(match v {
        Value::Device(d) => match d.downcast::<IpcBuffer>() {
            Some(b) => acc.import(b)?,
            None => v.clone(),
        },
        Value::List(l) if v.on_device() => Value::List(
            l.iter()
                .map(|x| import_lent(acc, x))
                .collect::<Result<_, _>>()?,
        ),
        v => v.clone(),
    })
}

/// `v` with each host byte payload replaced by what `f` makes of it (`None` from `f`:
/// none replaced).
pub fn map_host_bytes(
    v: &Value,
    f: &mut dyn FnMut(&bytes::Bytes) -> Option<Result<Value, OpError>>,
) -> Option<Result<Value, OpError>> {
    Some(Ok(match v {
        Value::Bytes(b) => return f(b),
        Value::List(l) => {
            let mut out = Vec::with_capacity(l.len());
            for x in l {
                match map_host_bytes(x, f)? {
                    Ok(x) => out.push(x),
                    Err(e) => return Some(Err(e)),
                }
            }
            Value::List(out)
        }
        v => v.clone(),
    }))
}

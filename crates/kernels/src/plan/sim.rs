//! The simulated GPU's executor: plans run by the CPU twins ([`super::host`]), outputs
//! left in the simulated GPU's memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rask_proto::{DeviceBytes, DeviceData, DeviceLoc, Value};

use super::host::{run_into, run_on_host};
use super::plan;
use crate::chunk::chunk_value;
use crate::{OpError, OutputAlloc};

/// A simulated GPU's executor: device plans run by the kernels' CPU twins, launch by
/// launch, as a GPU would run them, their outputs left in the GPU's memory
/// ([`SimBytes`]). Users' kernels run their CPU twin.
pub struct HostPlans {
    device: DeviceLoc,
    memory: Arc<dyn OutputAlloc>,
    downloaded: Arc<AtomicU64>,
}

impl HostPlans {
    /// The executor of simulated GPU `device` (`sim:N`), whose memory is `memory`: an
    /// allocation it refuses (the GPU is full) leaves that output on the host.
    pub fn new(device: DeviceLoc, memory: Arc<dyn OutputAlloc>) -> HostPlans {
        HostPlans {
            device,
            memory,
            downloaded: Arc::default(),
        }
    }

    /// Bytes of this GPU's memory as a device value's data.
    fn keep(&self, bytes: Bytes) -> DeviceBytes {
        DeviceBytes::new(SimBytes {
            bytes,
            device: self.device,
            downloaded: self.downloaded.clone(),
        })
    }
}

impl crate::Accelerator for HostPlans {
    fn try_run(
        &self,
        registry: &crate::Registry,
        op: &str,
        args: &[Value],
    ) -> Option<Result<Value, OpError>> {
        if registry.cuda_kernel(op).is_some() {
            return None;
        }
        let p = plan(op, args)?;
        let len = p.out_len() as usize;
        let Some(mut out) = (len > 0).then(|| self.memory.alloc(len)).flatten() else {
            return Some(run_on_host(&p).map(|c| c.to_value()).map_err(OpError::from));
        };
        if let Err(e) = run_into(&p, out.bytes_mut()) {
            return Some(Err(e.into()));
        }
        let data = Value::Device(self.keep(out.freeze()));
        Some(Ok(chunk_value(p.dtype, &p.shape, data)))
    }

    fn downloaded(&self) -> u64 {
        self.downloaded.load(Ordering::Relaxed)
    }

    fn runs(&self, registry: &crate::Registry, op: &str, args: &[Value]) -> bool {
        registry.cuda_kernel(op).is_none() && plan(op, args).is_some()
    }

    fn upload(&self, v: &Value) -> Option<Result<Value, OpError>> {
        crate::map_host_bytes(v, &mut |b| {
            let mut m = self.memory.alloc(b.len())?;
            m.bytes_mut().copy_from_slice(b);
            Some(Ok(Value::Device(self.keep(m.freeze()))))
        })
    }
}

/// Bytes in a simulated GPU's memory. That memory is host memory, so going to the host
/// lends the same bytes (counted as a download, as a GPU would copy them).
pub struct SimBytes {
    bytes: Bytes,
    device: DeviceLoc,
    downloaded: Arc<AtomicU64>,
}

impl SimBytes {
    /// The bytes in place (for the simulated GPUs' kernels).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

impl DeviceData for SimBytes {
    fn device(&self) -> DeviceLoc {
        self.device
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    fn to_host(&self) -> Result<Bytes, String> {
        self.downloaded
            .fetch_add(self.bytes.len() as u64, Ordering::Relaxed);
        Ok(self.bytes.clone())
    }

    /// Peers on the host map the simulated GPU's memory (the CUDA IPC analogue).
    fn host_view(&self) -> Option<Bytes> {
        Some(self.bytes.clone())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

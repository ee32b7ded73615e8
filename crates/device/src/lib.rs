//! Devices and their memory: the host, simulated GPUs and CUDA GPUs; [`Buffer`]s that know
//! where they live; one [`Devices::copy`] for every pair of kinds; per-device memory
//! accounting with a limit; discovery of real GPUs through NVML.
//!
//! **Simulated GPUs** stand in for GPUs on machines without one: each has its own
//! capacity, its memory is a memfd [`arena::Arena`] (so a same-host peer can map it, as
//! CUDA IPC maps device memory), kernels run on the CPU, and every byte moved is counted
//! by link class (same device, NVLink peer, PCIe through the host, …) under a configurable
//! topology. Everything they report says "simulated".
//!
//! **CUDA** (feature `cuda`, on by default): cudarc with the driver loaded at run time, so
//! this builds and starts on machines with no CUDA; without a driver every entry point
//! returns [`DeviceError::NoDriver`], never panics.

pub mod arena;
#[cfg(feature = "cuda")]
pub mod cuda;
/// The CUDA bindings the backend is built on (for the kernel launchers).
#[cfg(feature = "cuda")]
pub use cudarc;
pub mod discover;
#[cfg(feature = "cuda")]
pub mod nvrtc;
pub mod sim;
pub mod spill;
pub mod staging;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use rask_proto::DType;

/// Where a buffer lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Device {
    Host,
    /// A simulated GPU of this process.
    Sim(u32),
    Cuda(u32),
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Host => f.write_str("host"),
            Device::Sim(i) => write!(f, "sim:{i}"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("unknown device {s:?}: host, sim:N or cuda:N");
        if s == "host" || s == "cpu" {
            return Ok(Device::Host);
        }
        let (kind, n) = s.split_once(':').ok_or_else(bad)?;
        let n: u32 = n.parse().map_err(|_| bad())?;
        match kind {
            "sim" => Ok(Device::Sim(n)),
            "cuda" => Ok(Device::Cuda(n)),
            _ => Err(bad()),
        }
    }
}

/// Errors of devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("no CUDA driver found: {0}")]
    NoDriver(String),
    #[error("no GPUs: {0}")]
    NoGpus(String),
    #[error(
        "{device} is out of memory: {requested} bytes requested, {available} of {limit} available"
    )]
    OutOfMemory {
        device: Device,
        requested: u64,
        available: u64,
        limit: u64,
    },
    #[error("unknown device {0}")]
    UnknownDevice(Device),
    #[error("copy of {src} bytes into a buffer of {dst} bytes")]
    LengthMismatch { src: u64, dst: u64 },
    #[error("CUDA: {0}")]
    Cuda(String),
    #[error("NVRTC is not available: {0}")]
    NoNvrtc(String),
    #[error("{name} does not compile:\n{log}")]
    Compile { name: String, log: String },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Bytes in use on one device, against a limit.
#[derive(Debug)]
pub struct MemoryPool {
    device: Device,
    limit: u64,
    used: AtomicU64,
}

impl MemoryPool {
    pub fn new(device: Device, limit: u64) -> Arc<MemoryPool> {
        Arc::new(MemoryPool {
            device,
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Reserves `n` bytes, or says how much is left.
    pub fn reserve(self: &Arc<Self>, n: u64) -> Result<Reservation, DeviceError> {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let next = cur.checked_add(n).filter(|&v| v <= self.limit);
            let Some(next) = next else {
                return Err(DeviceError::OutOfMemory {
                    device: self.device,
                    requested: n,
                    available: self.limit.saturating_sub(cur),
                    limit: self.limit,
                });
            };
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Ok(Reservation {
                        pool: self.clone(),
                        bytes: n,
                    })
                }
                Err(actual) => cur = actual,
            }
        }
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn device(&self) -> Device {
        self.device
    }
}

/// Bytes reserved in a [`MemoryPool`], given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    pool: Arc<MemoryPool>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pool.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The memory behind a buffer.
enum Mem {
    /// Host memory, 8-byte aligned.
    Host(Vec<u64>),
    /// A region of a simulated GPU's arena.
    Sim(arena::Region),
    #[cfg(feature = "cuda")]
    Cuda(cuda::DeviceMem),
}

/// Bytes on a device, with their element type. Not `Clone`: a copy is an allocation on a
/// device with a limit, made explicitly with [`Devices::alloc`] and [`Devices::copy`].
pub struct Buffer {
    device: Device,
    dtype: DType,
    len: u64,
    mem: Mem,
    _reservation: Reservation,
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("device", &self.device)
            .field("dtype", &self.dtype)
            .field("len", &self.len)
            .finish()
    }
}

impl Buffer {
    pub fn device(&self) -> Device {
        self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes, where the CPU can read them in place (host and simulated GPUs).
    pub fn host_bytes(&self) -> Option<&[u8]> {
        match &self.mem {
            Mem::Host(v) => Some(&bytes_of(v)[..self.len as usize]),
            Mem::Sim(r) => Some(r.as_ref()),
            #[cfg(feature = "cuda")]
            Mem::Cuda(_) => None,
        }
    }

    /// The bytes, writable in place (host and simulated GPUs).
    pub fn host_bytes_mut(&mut self) -> Option<&mut [u8]> {
        match &mut self.mem {
            Mem::Host(v) => Some(&mut bytes_of_mut(v)[..self.len as usize]),
            Mem::Sim(r) => Some(r.as_mut_slice()),
            #[cfg(feature = "cuda")]
            Mem::Cuda(_) => None,
        }
    }
}

fn bytes_of(v: &[u64]) -> &[u8] {
    // SAFETY: u64 has no padding and any byte pattern is valid u8.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), v.len() * 8) }
}

fn bytes_of_mut(v: &mut [u64]) -> &mut [u8] {
    // SAFETY: as above; the borrow is exclusive.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), v.len() * 8) }
}

/// How bytes moved between two places (counted per class by [`Devices`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkClass {
    /// Within one device (or host to host).
    Local,
    /// Between two GPUs joined by NVLink.
    NvLink,
    /// Between a GPU and the host, or two GPUs through the host (PCIe).
    Pcie,
}

impl LinkClass {
    pub const ALL: [LinkClass; 3] = [LinkClass::Local, LinkClass::NvLink, LinkClass::Pcie];

    pub fn name(self) -> &'static str {
        match self {
            LinkClass::Local => "local",
            LinkClass::NvLink => "nvlink",
            LinkClass::Pcie => "pcie",
        }
    }
}

/// The devices of one process and the bytes moved between them.
pub struct Devices {
    host: Arc<MemoryPool>,
    sim: Option<sim::SimGpus>,
    #[cfg(feature = "cuda")]
    cuda: Vec<cuda::CudaDevice>,
    moved: [AtomicU64; 3],
}

impl Devices {
    /// The host only, with a memory limit.
    pub fn host(limit: u64) -> Devices {
        Devices {
            host: MemoryPool::new(Device::Host, limit),
            sim: None,
            #[cfg(feature = "cuda")]
            cuda: Vec::new(),
            moved: Default::default(),
        }
    }

    /// Adds simulated GPUs.
    pub fn with_sim(mut self, sim: sim::SimGpus) -> Devices {
        self.sim = Some(sim);
        self
    }

    /// Adds CUDA GPUs (opened by [`cuda::CudaDevice::open`]).
    #[cfg(feature = "cuda")]
    pub fn with_cuda(mut self, gpus: Vec<cuda::CudaDevice>) -> Devices {
        self.cuda = gpus;
        self
    }

    /// Every device, host first.
    pub fn list(&self) -> Vec<Device> {
        let mut out = vec![Device::Host];
        if let Some(s) = &self.sim {
            out.extend((0..s.len() as u32).map(Device::Sim));
        }
        #[cfg(feature = "cuda")]
        out.extend((0..self.cuda.len() as u32).map(Device::Cuda));
        out
    }

    /// The memory pool of a device.
    pub fn pool(&self, d: Device) -> Result<&Arc<MemoryPool>, DeviceError> {
        match d {
            Device::Host => Ok(&self.host),
            Device::Sim(i) => self
                .sim
                .as_ref()
                .and_then(|s| s.gpu(i))
                .map(|g| g.pool())
                .ok_or(DeviceError::UnknownDevice(d)),
            #[cfg(feature = "cuda")]
            Device::Cuda(i) => self
                .cuda
                .get(i as usize)
                .map(|g| g.pool())
                .ok_or(DeviceError::UnknownDevice(d)),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(DeviceError::UnknownDevice(d)),
        }
    }

    /// A buffer of `len` bytes on `device` (contents unspecified).
    pub fn alloc(&self, device: Device, dtype: DType, len: u64) -> Result<Buffer, DeviceError> {
        let reservation = self.pool(device)?.reserve(len)?;
        let mem = match device {
            Device::Host => Mem::Host(vec![0u64; len.div_ceil(8) as usize]),
            Device::Sim(i) => {
                let gpu = self
                    .sim
                    .as_ref()
                    .and_then(|s| s.gpu(i))
                    .ok_or(DeviceError::UnknownDevice(device))?;
                Mem::Sim(gpu.arena().alloc(len as usize)?)
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(i) => {
                let gpu = self
                    .cuda
                    .get(i as usize)
                    .ok_or(DeviceError::UnknownDevice(device))?;
                Mem::Cuda(gpu.alloc(len)?)
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => return Err(DeviceError::UnknownDevice(device)),
        };
        Ok(Buffer {
            device,
            dtype,
            len,
            mem,
            _reservation: reservation,
        })
    }

    /// A buffer on `device` holding `bytes`.
    pub fn from_host(
        &self,
        device: Device,
        dtype: DType,
        bytes: &[u8],
    ) -> Result<Buffer, DeviceError> {
        let mut b = self.alloc(device, dtype, bytes.len() as u64)?;
        self.write(&mut b, bytes)?;
        Ok(b)
    }

    /// Copies host bytes into a buffer on any device.
    pub fn write(&self, dst: &mut Buffer, bytes: &[u8]) -> Result<(), DeviceError> {
        if bytes.len() as u64 != dst.len {
            return Err(DeviceError::LengthMismatch {
                src: bytes.len() as u64,
                dst: dst.len,
            });
        }
        let class = self.class(Device::Host, dst.device);
        match &mut dst.mem {
            #[cfg(feature = "cuda")]
            Mem::Cuda(m) => m.write(bytes)?,
            _ => dst
                .host_bytes_mut()
                .expect("host-visible memory")
                .copy_from_slice(bytes),
        }
        self.count(class, bytes.len() as u64);
        Ok(())
    }

    /// The bytes of a buffer on any device, copied to the host.
    pub fn read(&self, src: &Buffer) -> Result<Vec<u8>, DeviceError> {
        let class = self.class(src.device, Device::Host);
        let out = match &src.mem {
            #[cfg(feature = "cuda")]
            Mem::Cuda(m) => m.read()?,
            _ => src.host_bytes().expect("host-visible memory").to_vec(),
        };
        self.count(class, src.len);
        Ok(out)
    }

    /// Copies `src` into `dst`, whatever devices they are on; returns the link used.
    pub fn copy(&self, src: &Buffer, dst: &mut Buffer) -> Result<LinkClass, DeviceError> {
        if src.len != dst.len {
            return Err(DeviceError::LengthMismatch {
                src: src.len,
                dst: dst.len,
            });
        }
        let class = self.class(src.device, dst.device);
        match (&src.mem, &mut dst.mem) {
            #[cfg(feature = "cuda")]
            (Mem::Cuda(s), Mem::Cuda(d)) => d.copy_from_device(s)?,
            #[cfg(feature = "cuda")]
            (Mem::Cuda(s), _) => s.read_into(dst.host_bytes_mut().expect("host-visible memory"))?,
            #[cfg(feature = "cuda")]
            (_, Mem::Cuda(d)) => d.write(src.host_bytes().expect("host-visible memory"))?,
            _ => {
                let s = src.host_bytes().expect("host-visible memory");
                dst.host_bytes_mut()
                    .expect("host-visible memory")
                    .copy_from_slice(s);
            }
        }
        self.count(class, src.len);
        Ok(class)
    }

    /// The link between two devices of this process.
    pub fn class(&self, a: Device, b: Device) -> LinkClass {
        match (a, b) {
            _ if a == b => LinkClass::Local,
            (Device::Host, Device::Host) => LinkClass::Local,
            (Device::Sim(x), Device::Sim(y)) => match &self.sim {
                Some(s) if s.topology().nvlink(x, y) => LinkClass::NvLink,
                _ => LinkClass::Pcie,
            },
            _ => LinkClass::Pcie,
        }
    }

    fn count(&self, class: LinkClass, n: u64) {
        let i = LinkClass::ALL
            .iter()
            .position(|c| *c == class)
            .expect("every class listed");
        self.moved[i].fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes moved so far by each link class.
    pub fn moved(&self) -> Vec<(LinkClass, u64)> {
        LinkClass::ALL
            .iter()
            .enumerate()
            .map(|(i, c)| (*c, self.moved[i].load(Ordering::Relaxed)))
            .collect()
    }

    /// The simulated GPUs, if any.
    pub fn sim(&self) -> Option<&sim::SimGpus> {
        self.sim.as_ref()
    }
}

#[cfg(test)]
mod tests;

//! Loaded kernels: a [`Module`] (a compiled image loaded into a context) and its entry
//! points ([`Function`]), launched with [`KernelArg`]s by [`super::CudaGpu::launch`].

use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaModule};

use super::{guarded, DeviceMem};
use crate::DeviceError;

/// A compiled image (PTX or CUBIN) loaded into a GPU's context.
#[derive(Clone)]
pub struct Module(pub(crate) Arc<CudaModule>);

impl Module {
    /// The entry point `entry` of this module.
    pub fn function(&self, entry: &str) -> Result<Function, DeviceError> {
        guarded(entry, || self.0.load_function(entry)).map(|f| Function {
            f,
            entry: entry.into(),
        })
    }
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Module")
    }
}

/// An entry point of a loaded [`Module`].
#[derive(Clone)]
pub struct Function {
    pub(crate) f: CudaFunction,
    /// Its name, for errors.
    pub(crate) entry: Arc<str>,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Function").field(&self.entry).finish()
    }
}

/// One argument of a kernel launch.
#[derive(Clone, Copy, Debug)]
pub enum KernelArg<'a> {
    /// Device memory, passed as its address.
    Mem(&'a DeviceMem),
    /// A null pointer.
    Null,
    /// An `unsigned long long`.
    U64(u64),
    /// An `int`.
    I32(i32),
    /// A `long long`.
    I64(i64),
    /// A `float`.
    F32(f32),
    /// A `double`.
    F64(f64),
}

impl KernelArg<'_> {
    /// The argument in an 8-byte slot. CUDA reads as many bytes as the parameter has (the
    /// low ones: x86_64 and aarch64 are little-endian).
    pub(crate) fn slot(&self) -> u64 {
        match *self {
            KernelArg::Mem(m) => m.ptr(),
            KernelArg::Null => 0,
            KernelArg::U64(v) => v,
            KernelArg::I32(v) => v as u32 as u64,
            KernelArg::I64(v) => v as u64,
            KernelArg::F32(v) => v.to_bits() as u64,
            KernelArg::F64(v) => v.to_bits(),
        }
    }
}

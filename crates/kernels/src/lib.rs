//! The op registry: named functions that tasks run, the built-in ones (scalar arithmetic,
//! `sum`, `sleep`, `fail`, …) and the user's own, registered in Rust and compiled into both
//! the client and the worker binaries.
//!
//! Rust cannot ship closures over the network, so a task names its op; the handshake
//! compares registry fingerprints so that a client never submits an op its workers lack.
//! This crate runs ops; it does no I/O.

pub mod chunk;
mod code;
pub mod cpu;
pub mod cuda_sources;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rask_proto::msg::{OpInfo, RegistryInfo};
use rask_proto::{DeviceData, IpcBuffer, Value};

/// Memory for ops' output bytes. A worker supplies one so that results land where its
/// same-host peers can map them (shared-memory arenas) instead of on the private heap.
pub trait OutputAlloc: Send + Sync {
    /// A writable buffer of `len` bytes (contents unspecified), or `None` for the heap.
    fn alloc(&self, len: usize) -> Option<Box<dyn OutputBuf>>;
}

/// A buffer from an [`OutputAlloc`].
pub trait OutputBuf: Send {
    fn bytes_mut(&mut self) -> &mut [u8];
    /// The finished, immutable bytes.
    fn freeze(self: Box<Self>) -> bytes::Bytes;
}

thread_local! {
    static OUTPUT_ALLOC: std::cell::RefCell<Option<Arc<dyn OutputAlloc>>> =
        const { std::cell::RefCell::new(None) };
}

/// An op's output of `len` bytes, written by `fill` (which must write every byte), in the
/// memory of the allocator of the call in progress (the heap outside one).
pub fn output_bytes(len: usize, fill: impl FnOnce(&mut [u8])) -> bytes::Bytes {
    let buf = OUTPUT_ALLOC.with(|a| a.borrow().as_ref().and_then(|a| a.alloc(len)));
    match buf {
        Some(mut b) => {
            fill(b.bytes_mut());
            b.freeze()
        }
        None => {
            let mut v = vec![0u8; len];
            fill(&mut v);
            v.into()
        }
    }
}

/// A device that runs ops by their device plans ([`plan`]): a CUDA GPU ([`gpu::Gpu`]) or
/// a simulated one ([`plan::HostPlans`], the plans run by the kernels' CPU twins).
pub trait Accelerator: Send + Sync {
    /// Runs `op` if this device has a plan for it; `None` leaves it to the CPU op.
    fn try_run(
        &self,
        registry: &Registry,
        op: &str,
        args: &[Value],
    ) -> Option<Result<Value, String>>;

    /// Bytes copied from this device's memory to the host so far.
    fn downloaded(&self) -> u64 {
        0
    }

    /// Whether `op` on `args` would run by this device's kernels.
    fn runs(&self, _registry: &Registry, _op: &str, _args: &[Value]) -> bool {
        false
    }

    /// `v` with its bytes copied into this device's memory; `None` when the device cannot
    /// hold them.
    fn upload(&self, _v: &Value) -> Option<Result<Value, String>> {
        None
    }

    /// Whether this device imports bytes lent from a same-host peer's device by IPC handle
    /// ([`Accelerator::import`]); else such bytes come to it through the host.
    fn imports(&self) -> bool {
        false
    }

    /// Bytes lent from a peer's device: copied into this device's memory (or to the host
    /// when it is full). Blocks until done: call it off an event loop.
    fn import(&self, b: &IpcBuffer) -> Result<Value, String> {
        Err(format!(
            "this device cannot import bytes from {}",
            b.label()
        ))
    }
}

/// `v` with every leaf lent from a peer's device ([`IpcBuffer`]) imported by `acc`.
pub fn import_lent(acc: &dyn Accelerator, v: &Value) -> Result<Value, String> {
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
    f: &mut dyn FnMut(&bytes::Bytes) -> Option<Result<Value, String>>,
) -> Option<Result<Value, String>> {
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

/// The signature of every op: positional arguments in, one value out.
pub type OpFn = dyn Fn(&[Value]) -> Result<Value, String> + Send + Sync;

/// Errors from running ops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("unknown op {0:?}")]
    UnknownOp(String),
    #[error("op {op:?} failed: {message}")]
    Failed { op: String, message: String },
    #[error("the CUDA kernel of op {op:?} does not compile:\n{log}")]
    Compile { op: String, log: String },
}

/// The CUDA side of a user's op: source text and the entry point to launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaKernel {
    pub source: String,
    pub entry: String,
}

#[derive(Clone)]
struct Op {
    version: u32,
    f: Arc<OpFn>,
    /// A CUDA kernel for GPU workers (the function `f` is its CPU twin).
    cuda: Option<CudaKernel>,
}

impl Op {
    /// A hash of the op's version and, for an op with a CUDA kernel, its source and entry
    /// point: what the handshake compares besides names and code.
    fn identity(&self) -> u64 {
        let mut text = self.version.to_string();
        if let Some(k) = &self.cuda {
            text.push_str(&format!(
                " cuda {:016x} {}",
                fnv1a(k.source.as_bytes()),
                k.entry
            ));
        }
        fnv1a(text.as_bytes())
    }
}

/// A set of named ops. Cheap to clone (ops are shared).
#[derive(Clone, Default)]
pub struct Registry {
    ops: BTreeMap<String, Op>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("ops", &self.ops.keys().collect::<Vec<_>>())
            .field("fingerprint", &format_args!("{:016x}", self.fingerprint()))
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Self {
        Registry::default()
    }

    /// The built-in ops.
    pub fn builtin() -> Self {
        let mut r = Registry::empty();
        r.register("add", 1, |a| {
            fold_numeric("add", a, |x, y| x.checked_add(y), |x, y| x + y)
        });
        r.register("mul", 1, |a| {
            fold_numeric("mul", a, |x, y| x.checked_mul(y), |x, y| x * y)
        });
        r.register("sub", 1, |a| {
            let [x, y] = two("sub", a)?;
            fold_numeric(
                "sub",
                &[x.clone(), y.clone()],
                |x, y| x.checked_sub(y),
                |x, y| x - y,
            )
        });
        r.register("div", 1, |a| {
            let [x, y] = two("div", a)?;
            let d = as_f64(y)?;
            if d == 0.0 {
                return Err("division by zero".into());
            }
            Ok(Value::Float(as_f64(x)? / d))
        });
        r.register("neg", 1, |a| match one("neg", a)? {
            Value::Int(i) => i
                .checked_neg()
                .map(Value::Int)
                .ok_or_else(|| "overflow".into()),
            v => Ok(Value::Float(-as_f64(v)?)),
        });
        r.register("inc", 1, |a| match one("inc", a)? {
            Value::Int(i) => i
                .checked_add(1)
                .map(Value::Int)
                .ok_or_else(|| "overflow".into()),
            v => Ok(Value::Float(as_f64(v)? + 1.0)),
        });
        r.register("sum", 1, |a| match a {
            [Value::List(items)] => {
                fold_numeric("sum", items, |x, y| x.checked_add(y), |x, y| x + y)
            }
            _ => fold_numeric("sum", a, |x, y| x.checked_add(y), |x, y| x + y),
        });
        r.register("identity", 1, |a| Ok(one("identity", a)?.clone()));
        r.register("sleep", 1, |a| {
            let secs = as_f64(a.first().ok_or("sleep needs a duration in seconds")?)?;
            if !(0.0..=3600.0).contains(&secs) {
                return Err(format!("sleep duration {secs} s out of range 0..=3600"));
            }
            std::thread::sleep(Duration::from_secs_f64(secs));
            Ok(a.get(1).cloned().unwrap_or(Value::Null))
        });
        r.register("fail", 1, |a| {
            Err(match a.first() {
                Some(Value::Str(s)) => s.clone(),
                Some(v) => format!("{v:?}"),
                None => "fail".into(),
            })
        });
        r.register("bytes", 1, |a| {
            // bytes(n, fill=0): a payload of n bytes, for data-movement tests.
            let n = as_i64(a.first().ok_or("bytes needs a length")?)?;
            let fill = a.get(1).map(as_i64).transpose()?.unwrap_or(0) as u8;
            if !(0..=(1 << 36)).contains(&n) {
                return Err(format!("length {n} out of range"));
            }
            Ok(Value::Bytes(output_bytes(n as usize, |b| b.fill(fill))))
        });
        r.register("len", 1, |a| match one("len", a)? {
            Value::Bytes(b) => Ok(Value::Int(b.len() as i64)),
            Value::List(l) => Ok(Value::Int(l.len() as i64)),
            Value::Str(s) => Ok(Value::Int(s.len() as i64)),
            v => Err(format!("len of {}", v.type_name())),
        });
        r.register("checksum", 1, |a| match one("checksum", a)? {
            // FNV-1a of a byte payload: lets tests check data integrity without moving it.
            Value::Bytes(b) => Ok(Value::Int(fnv1a(b) as i64)),
            v => Err(format!("checksum of {}", v.type_name())),
        });
        r.register("abort", 1, |_| {
            // Kills the worker process: for fault-tolerance tests and drills.
            std::process::abort()
        });
        r.register("list", 1, |a| Ok(Value::List(a.to_vec())));
        chunk::register(&mut r);
        r
    }

    /// Registers (or replaces) an op. Bump `version` when its behaviour changes: the
    /// version is part of the fingerprint the handshake compares.
    pub fn register<F>(&mut self, name: &str, version: u32, f: F) -> &mut Self
    where
        F: Fn(&[Value]) -> Result<Value, String> + Send + Sync + 'static,
    {
        self.ops.insert(
            name.to_string(),
            Op {
                version,
                f: Arc::new(f),
                cuda: None,
            },
        );
        self
    }

    /// Registers an op with a CUDA kernel: `source` (compiled by NVRTC on GPU workers at
    /// first use, and cached) with the entry point `entry`, and `cpu_twin`, which computes
    /// the same on the CPU (on host and simulated devices). The source is part of the
    /// registry's fingerprint, so client and workers must agree on it.
    pub fn register_kernel<F>(
        &mut self,
        name: &str,
        version: u32,
        kernel: CudaKernel,
        cpu_twin: F,
    ) -> &mut Self
    where
        F: Fn(&[Value]) -> Result<Value, String> + Send + Sync + 'static,
    {
        self.register(name, version, cpu_twin);
        if let Some(op) = self.ops.get_mut(name) {
            op.cuda = Some(kernel);
        }
        self
    }

    /// The CUDA kernel of an op, if it has one.
    pub fn cuda_kernel(&self, name: &str) -> Option<&CudaKernel> {
        self.ops.get(name)?.cuda.as_ref()
    }

    /// Compiles every op's CUDA kernel for `arch` (e.g. `compute_80`) with NVRTC, so a
    /// broken kernel is reported (with NVRTC's log) before anything runs. Without NVRTC
    /// nothing can be checked: `Ok(false)`.
    #[cfg(feature = "cuda")]
    pub fn check_kernels(&self, arch: &str) -> Result<bool, KernelError> {
        if rask_device::nvrtc::available().is_err() {
            return Ok(false);
        }
        for (name, op) in &self.ops {
            let Some(k) = &op.cuda else { continue };
            match rask_device::nvrtc::compile(&k.source, name, arch) {
                Ok(ptx) => {
                    if !arch.starts_with("sm_")
                        && !rask_device::nvrtc::ptx_entries(&ptx).contains(&k.entry)
                    {
                        return Err(KernelError::Compile {
                            op: name.clone(),
                            log: format!("no entry point {:?} in the compiled kernel", k.entry),
                        });
                    }
                }
                Err(rask_device::DeviceError::Compile { log, .. }) => {
                    return Err(KernelError::Compile {
                        op: name.clone(),
                        log,
                    })
                }
                Err(e) => {
                    return Err(KernelError::Compile {
                        op: name.clone(),
                        log: e.to_string(),
                    })
                }
            }
        }
        Ok(true)
    }

    /// Whether an op is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.ops.contains_key(name)
    }

    /// Op names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.ops.keys().cloned().collect()
    }

    /// Hash of the sorted op names and versions.
    pub fn fingerprint(&self) -> u64 {
        let mut text = String::new();
        for (name, op) in &self.ops {
            text.push_str(name);
            text.push('@');
            text.push_str(&format!("{:016x}", op.identity()));
            text.push('\n');
        }
        fnv1a(text.as_bytes())
    }

    /// The registry as the handshake sends it.
    pub fn info(&self) -> RegistryInfo {
        RegistryInfo {
            fingerprint: self.fingerprint(),
            ops: self
                .ops
                .iter()
                .map(|(name, op)| OpInfo {
                    name: name.clone(),
                    version: op.identity(),
                })
                .collect(),
        }
    }

    /// Runs an op. `args` is the task's argument value: a list is spread into positional
    /// arguments, anything else is the single argument. A panic inside the op becomes an
    /// error.
    pub fn call(&self, name: &str, args: &Value) -> Result<Value, KernelError> {
        self.call_with(name, args, None)
    }

    /// [`Registry::call`], with the op's output bytes ([`output_bytes`]) allocated by
    /// `alloc`.
    pub fn call_with(
        &self,
        name: &str,
        args: &Value,
        alloc: Option<&Arc<dyn OutputAlloc>>,
    ) -> Result<Value, KernelError> {
        self.call_on(name, args, alloc, None).map(|(v, _)| v)
    }

    /// [`Registry::call_with`] on a device: ops the device has a plan for run there (the
    /// flag says so), the others on the CPU.
    pub fn call_on(
        &self,
        name: &str,
        args: &Value,
        alloc: Option<&Arc<dyn OutputAlloc>>,
        device: Option<&dyn Accelerator>,
    ) -> Result<(Value, bool), KernelError> {
        struct Reset(Option<Arc<dyn OutputAlloc>>);
        impl Drop for Reset {
            fn drop(&mut self) {
                let prev = self.0.take();
                OUTPUT_ALLOC.with(|a| *a.borrow_mut() = prev);
            }
        }
        let _reset = alloc.map(|a| Reset(OUTPUT_ALLOC.with(|c| c.borrow_mut().replace(a.clone()))));
        let op = self
            .ops
            .get(name)
            .ok_or_else(|| KernelError::UnknownOp(name.into()))?;
        let single;
        let args: &[Value] = match args {
            Value::List(l) => l,
            v => {
                single = [v.clone()];
                &single
            }
        };
        let f = &op.f;
        let run = || match device.and_then(|d| d.try_run(self, name, args)) {
            Some(r) => r.map(|v| (v, true)),
            // An op on the CPU gets its arguments in host memory.
            None if args.iter().any(Value::on_device) => {
                let args = args
                    .iter()
                    .map(Value::to_host)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                f(&args).map(|v| (v, false))
            }
            None => f(args).map(|v| (v, false)),
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(message)) => Err(KernelError::Failed {
                op: name.into(),
                message,
            }),
            Err(panic) => Err(KernelError::Failed {
                op: name.into(),
                message: format!("op panicked: {}", panic_message(&panic)),
            }),
        }
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

pub use code::{code_identity, identity_of as code_identity_of};
pub use rask_proto::fnv1a;

fn one<'a>(op: &str, a: &'a [Value]) -> Result<&'a Value, String> {
    match a {
        [v] => Ok(v),
        _ => Err(format!("{op} takes 1 argument, got {}", a.len())),
    }
}

fn two<'a>(op: &str, a: &'a [Value]) -> Result<[&'a Value; 2], String> {
    match a {
        [x, y] => Ok([x, y]),
        _ => Err(format!("{op} takes 2 arguments, got {}", a.len())),
    }
}

fn as_f64(v: &Value) -> Result<f64, String> {
    match v {
        Value::Int(i) => Ok(*i as f64),
        Value::Float(f) => Ok(*f),
        Value::Bool(b) => Ok(*b as i64 as f64),
        v => Err(format!("expected a number, got {}", v.type_name())),
    }
}

fn as_i64(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Bool(b) => Ok(*b as i64),
        v => Err(format!("expected an integer, got {}", v.type_name())),
    }
}

/// Folds numbers: integers while all are integers (overflow is an error), floats otherwise.
fn fold_numeric(
    op: &str,
    a: &[Value],
    int: impl Fn(i64, i64) -> Option<i64>,
    float: impl Fn(f64, f64) -> f64,
) -> Result<Value, String> {
    let (first, rest) = a
        .split_first()
        .ok_or_else(|| format!("{op} needs at least one argument"))?;
    let mut acc = match first {
        Value::Int(i) => Value::Int(*i),
        v => Value::Float(as_f64(v)?),
    };
    for v in rest {
        acc = match (&acc, v) {
            (Value::Int(x), Value::Int(y)) => {
                Value::Int(int(*x, *y).ok_or_else(|| format!("integer overflow in {op}"))?)
            }
            (x, y) => Value::Float(float(as_f64(x)?, as_f64(y)?)),
        };
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(op: &str, args: Vec<Value>) -> Result<Value, KernelError> {
        Registry::builtin().call(op, &Value::List(args))
    }

    #[test]
    fn arithmetic() {
        assert_eq!(
            call("add", vec![1.into(), 2.into(), 3.into()]),
            Ok(Value::Int(6))
        );
        assert_eq!(
            call("add", vec![1.into(), 0.5.into()]),
            Ok(Value::Float(1.5))
        );
        assert_eq!(call("sub", vec![1.into(), 3.into()]), Ok(Value::Int(-2)));
        assert_eq!(call("mul", vec![4.into(), 3.into()]), Ok(Value::Int(12)));
        assert_eq!(call("div", vec![3.into(), 2.into()]), Ok(Value::Float(1.5)));
        assert_eq!(call("inc", vec![41.into()]), Ok(Value::Int(42)));
        assert_eq!(call("neg", vec![2.5.into()]), Ok(Value::Float(-2.5)));
        assert_eq!(
            call("sum", vec![Value::List(vec![1.into(), 2.into(), 3.into()])]),
            Ok(Value::Int(6))
        );
        assert!(matches!(
            call("div", vec![1.into(), 0.into()]),
            Err(KernelError::Failed { .. })
        ));
        assert!(matches!(
            call("add", vec![i64::MAX.into(), 1.into()]),
            Err(KernelError::Failed { .. })
        ));
        assert!(matches!(
            call("add", vec!["x".into()]),
            Err(KernelError::Failed { .. })
        ));
    }

    #[test]
    fn fail_unknown_and_panics_are_errors() {
        assert_eq!(
            call("fail", vec!["boom".into()]),
            Err(KernelError::Failed {
                op: "fail".into(),
                message: "boom".into()
            })
        );
        assert_eq!(
            call("nope", vec![]),
            Err(KernelError::UnknownOp("nope".into()))
        );
        let mut r = Registry::builtin();
        r.register("explode", 1, |_| panic!("kaboom"));
        let e = r.call("explode", &Value::Null).unwrap_err();
        assert!(e.to_string().contains("kaboom"), "{e}");
    }

    #[test]
    fn fingerprint_tracks_names_and_versions() {
        let a = Registry::builtin();
        let mut b = Registry::builtin();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.register("mine", 1, |_| Ok(Value::Null));
        assert_ne!(a.fingerprint(), b.fingerprint());
        let mut c = Registry::builtin();
        c.register("mine", 2, |_| Ok(Value::Null));
        assert_ne!(b.fingerprint(), c.fingerprint());
    }

    #[test]
    fn bytes_and_checksum() {
        let v = call("bytes", vec![1000.into(), 7.into()]).unwrap();
        assert_eq!(call("len", vec![v.clone()]), Ok(Value::Int(1000)));
        assert_eq!(v, Value::Bytes(vec![7u8; 1000].into()));
        // FNV-1a 64 of 1000 bytes of 7, computed independently of `fnv1a`.
        let expect = 0xd55b_06ce_89fd_a1ed_u64 as i64;
        assert_eq!(call("checksum", vec![v]), Ok(Value::Int(expect)));
    }
}

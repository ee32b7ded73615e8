//! The op registry: named ops with versions (and CUDA kernels), the fingerprint the
//! handshake compares, and calling an op (on a device when it has a plan there).

use std::sync::Arc;

use rask_proto::msg::{OpInfo, RegistryInfo};
use rask_proto::Value;
use rustc_hash::FxHashMap;

use crate::{fnv1a, Accelerator, KernelError, OpError, OutputAlloc};

/// The signature of a user's op: positional arguments in, one value out, or a message.
pub type OpFn = dyn Fn(&[Value]) -> Result<Value, String> + Send + Sync;

/// An op as the registry keeps it: a user's op's message becomes [`OpError::Message`].
type TypedOpFn = dyn Fn(&[Value]) -> Result<Value, OpError> + Send + Sync;

/// The CUDA side of a user's op: source text and the entry point to launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaKernel {
    /// The CUDA C source, compiled by NVRTC on GPU workers.
    pub source: String,
    /// The `extern "C"` entry point to launch.
    pub entry: String,
}

#[derive(Clone)]
struct Op {
    version: u32,
    f: Arc<TypedOpFn>,
    /// A CUDA kernel for GPU workers (the function `f` is its CPU twin).
    cuda: Option<CudaKernel>,
    /// A typed op of the program (`#[rask::op]`): identified by the program's code, not
    /// by a version; not part of the fingerprint.
    program: bool,
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
    /// Hashed: every task looks its op up (an ordered map of strings cost a few hundred
    /// instructions each time); listed in name order by [`Registry::sorted`].
    ops: FxHashMap<String, Op>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("ops", &self.names())
            .field("fingerprint", &format_args!("{:016x}", self.fingerprint()))
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Self {
        Registry::default()
    }

    /// The built-in ops and every typed op linked into this program (`#[rask::op]`
    /// functions, found where they are linked): what a program's workers and clients
    /// know.
    pub fn program() -> Self {
        let mut r = Registry::builtin();
        for op in rask_proto::typed::registrations() {
            r.register_typed(op.name, 1, move |a| (op.run)(a).map_err(OpError::Message));
            if let Some(o) = r.ops.get_mut(op.name) {
                o.program = true;
            }
        }
        r
    }

    /// The built-in ops.
    pub fn builtin() -> Self {
        let mut r = Registry::empty();
        crate::builtin::register(&mut r);
        crate::chunk::register(&mut r);
        r
    }

    /// Registers (or replaces) an op. Bump `version` when its behaviour changes: the
    /// version is part of the fingerprint the handshake compares.
    pub fn register<F>(&mut self, name: &str, version: u32, f: F) -> &mut Self
    where
        F: Fn(&[Value]) -> Result<Value, String> + Send + Sync + 'static,
    {
        self.register_typed(name, version, move |a| f(a).map_err(OpError::Message))
    }

    /// [`Registry::register`] for this crate's own ops, whose errors are typed.
    pub(crate) fn register_typed<F>(&mut self, name: &str, version: u32, f: F) -> &mut Self
    where
        F: Fn(&[Value]) -> Result<Value, OpError> + Send + Sync + 'static,
    {
        self.ops.insert(
            name.to_string(),
            Op {
                version,
                f: Arc::new(f),
                cuda: None,
                program: false,
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
        for (name, op) in self.sorted() {
            let Some(k) = &op.cuda else { continue };
            let opts = rask_device::nvrtc::Options::DEFAULT;
            match rask_device::nvrtc::compile_with(&k.source, name, arch, opts) {
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
        self.sorted().map(|(name, _)| name.clone()).collect()
    }

    /// The ops in name order.
    fn sorted(&self) -> impl Iterator<Item = (&String, &Op)> {
        let mut ops: Vec<(&String, &Op)> = self.ops.iter().collect();
        ops.sort_unstable_by(|a, b| a.0.cmp(b.0));
        ops.into_iter()
    }

    /// Whether the program has typed ops of its own (`#[rask::op]`).
    pub fn has_program_ops(&self) -> bool {
        self.ops.values().any(|o| o.program)
    }

    /// Hash of the sorted names and versions of the ops other than the program's typed
    /// ops (those are told apart by the program's code instead): what the workers serving
    /// the cluster's untyped ops must agree on.
    pub fn fingerprint(&self) -> u64 {
        let mut text = String::new();
        for (name, op) in self.sorted().filter(|(_, o)| !o.program) {
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
                .sorted()
                .map(|(name, op)| OpInfo {
                    name: name.clone(),
                    version: op.identity(),
                    program: op.program,
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

    /// [`Registry::call`], with the op's output bytes ([`crate::output_bytes`]) allocated by
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
        let _reset = alloc.map(crate::output::scoped);
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
                    .collect::<Result<Vec<_>, _>>()?;
                f(&args).map(|v| (v, false))
            }
            None => f(args).map(|v| (v, false)),
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(match e {
                OpError::DeviceFull { needed, .. } => KernelError::DeviceFull {
                    op: name.into(),
                    message: e.to_string(),
                    needed,
                },
                OpError::DeviceLost(message) => KernelError::DeviceLost {
                    op: name.into(),
                    message,
                },
                e => KernelError::Failed {
                    op: name.into(),
                    message: e.to_string(),
                },
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Names, the handshake's list and the fingerprint follow the names' order, whatever
    /// the order the ops were registered in.
    #[test]
    fn ops_are_listed_in_name_order_whatever_the_order_registered() {
        let names = ["zeta", "alpha", "mid", "beta", "omega", "gamma"];
        let mut a = Registry::default();
        let mut b = Registry::default();
        for n in names {
            a.register(n, 1, |_| Ok(Value::Null));
        }
        for n in names.iter().rev() {
            b.register(n, 1, |_| Ok(Value::Null));
        }
        let mut sorted: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        sorted.sort();
        assert_eq!(a.names(), sorted);
        assert_eq!(b.names(), sorted);
        let listed: Vec<String> = a.info().ops.into_iter().map(|o| o.name).collect();
        assert_eq!(listed, sorted);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.info(), b.info());
        let shown = format!("{b:?}");
        assert!(shown.contains(&format!("{sorted:?}")), "{shown}");
    }
}

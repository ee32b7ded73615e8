//! Errors of running ops, in two layers.
//!
//! Inside the crate (and on the [`crate::Accelerator`] trait) a failure is typed: an
//! [`OpError`] says what was wrong with an op's arguments or values (shapes, dtypes, the
//! form the op takes), a [`PlanError`] why a device plan could not run. At the boundary,
//! [`crate::Registry::call_on`] wraps it once with the op's name into a [`KernelError`],
//! whose message is what the user sees. A user's op reports a message (`String`); it
//! becomes [`OpError::Message`], shown as written.

use rask_proto::{DType, ProtoError};

use crate::plan::Buf;

/// Errors from running ops, as callers of the registry see them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// No op of that name is registered.
    #[error("unknown op {0:?}")]
    UnknownOp(String),
    /// The op ran and failed (or panicked); `message` is its [`OpError`]'s text.
    #[error("op {op:?} failed: {message}")]
    Failed {
        /// The op's registered name.
        op: String,
        /// What went wrong, as the user sees it.
        message: String,
    },
    /// The device had no room for the op: spilling its values and running it again may
    /// succeed (a worker does so before the task errs).
    #[error("op {op:?} failed: {message}")]
    DeviceFull {
        /// The op's registered name.
        op: String,
        /// What went wrong, as the user sees it.
        message: String,
        /// Bytes the op needs on the device.
        needed: u64,
    },
    /// The device failed for good while running the op (a sticky CUDA error): the worker
    /// leaves so that a fresh process takes the device, and its tasks run elsewhere.
    #[error("op {op:?} failed: {message}")]
    DeviceLost {
        /// The op's registered name.
        op: String,
        /// What failed, naming the kernels that were running.
        message: String,
    },
    /// The CUDA kernel of an op does not compile (NVRTC's log).
    #[error("the CUDA kernel of op {op:?} does not compile:\n{log}")]
    Compile {
        /// The op's registered name.
        op: String,
        /// NVRTC's compile log.
        log: String,
    },
}

/// Why an op failed: its arguments, its values, or the device that ran it.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The arguments are not of the form the op takes; the text says which form (`binary:
    /// (op, chunk, chunk or number)`) or what is missing.
    #[error("{0}")]
    Args(&'static str),
    /// A fixed number of arguments was expected.
    #[error("{op} takes {want} argument{}, got {got}", plural(.want))]
    Arity {
        /// The op.
        op: &'static str,
        /// Arguments it takes.
        want: usize,
        /// Arguments it was given.
        got: usize,
    },
    /// At least one argument was expected.
    #[error("{op} needs at least one argument")]
    NoArgs {
        /// The op.
        op: &'static str,
    },
    /// A value of another type was expected (`expected a number, got str`).
    #[error("expected {expected}, got {got}")]
    Type {
        /// What was expected, with its article (`a number`).
        expected: &'static str,
        /// The type given ([`rask_proto::Value::type_name`]).
        got: &'static str,
    },
    /// The op does not apply to a value of this type (`len of int`).
    #[error("{op} of {got}")]
    NotFor {
        /// The op.
        op: &'static str,
        /// The type given ([`rask_proto::Value::type_name`]).
        got: &'static str,
    },
    /// A list of non-negative integers (a shape, an origin, …) holds something else.
    #[error("{0}: expected non-negative integers")]
    NotNonNegative(&'static str),
    /// A list of integers was expected.
    #[error("{0}: expected a list of integers")]
    NotAList(&'static str),
    /// A number out of the range the op accepts.
    #[error("{0}")]
    Range(String),
    /// Integer arithmetic overflowed in `op`.
    #[error("integer overflow in {op}")]
    IntegerOverflow {
        /// The op.
        op: &'static str,
    },
    /// A negation or increment overflowed.
    #[error("overflow")]
    Overflow,
    /// Division by zero.
    #[error("division by zero")]
    DivisionByZero,
    /// An argument is not an array chunk (a value of another type).
    #[error("not an array chunk: {0}")]
    NotAChunk(&'static str),
    /// A list that is not `[dtype, shape, bytes]`.
    #[error("not an array chunk: expected [dtype, shape, bytes]")]
    ChunkForm,
    /// A chunk's shape holds something other than non-negative integers.
    #[error("bad chunk shape")]
    ChunkShape,
    /// A chunk's bytes do not match its shape and dtype.
    #[error("chunk of shape {shape:?} and dtype {dtype} has {len} bytes")]
    ChunkLength {
        /// The chunk's shape.
        shape: Vec<u64>,
        /// The chunk's dtype.
        dtype: DType,
        /// The bytes it carries.
        len: usize,
    },
    /// A chunk's bytes are in a device's memory where host bytes are needed.
    #[error("the chunk's bytes are in {device}'s memory, not the host's")]
    NotOnHost {
        /// Where the bytes are ([`rask_proto::DeviceBytes::label`]).
        device: String,
    },
    /// A dtype name that is not one (the text is [`DType`]'s parse error).
    #[error("{0}")]
    DTypeName(String),
    /// Elements of one dtype were asked of a chunk of another.
    #[error("expected {want} data, got {got}")]
    WrongDType {
        /// The dtype asked for.
        want: DType,
        /// The chunk's dtype.
        got: DType,
    },
    /// Two chunks' dtypes differ.
    #[error("dtypes {0} and {1} differ")]
    DTypes(DType, DType),
    /// Two chunks' shapes differ.
    #[error("shapes {0:?} and {1:?} differ")]
    Shapes(Vec<u64>, Vec<u64>),
    /// `n` elements do not fill `shape`.
    #[error("{n} elements for shape {shape:?}")]
    Elements {
        /// Elements given.
        n: usize,
        /// The shape they were to fill.
        shape: Vec<u64>,
    },
    /// The `array.*` ops have no implementation for this dtype.
    #[error("{0} arrays are not supported")]
    UnsupportedDType(DType),
    /// Random values of an integer dtype were asked for.
    #[error("random values are f32 or f64, not {0}")]
    RandomDType(DType),
    /// A floating-point op (`div`, `pow`) on an integer chunk.
    #[error("{op} is for f32 and f64 arrays, not {dtype}")]
    FloatOnly {
        /// The op.
        op: &'static str,
        /// The chunk's dtype.
        dtype: DType,
    },
    /// An op name (elementwise, reduction, combination) that is not one.
    #[error("unknown {kind} {name:?}")]
    UnknownName {
        /// What kind of name: `elementwise op`, `reduction` or `combination`.
        kind: &'static str,
        /// The name given.
        name: String,
    },
    /// The shapes of a matrix product do not fit.
    #[error("matmul of {0:?} and {1:?}")]
    Matmul(Vec<u64>, Vec<u64>),
    /// An `array.expr` program that is not one, or does not fit its inputs.
    #[error("elementwise program: {0}")]
    Expr(String),
    /// An axis past a chunk's rank.
    #[error("axis {axis} of a {rank}-d chunk")]
    Axis {
        /// The axis asked for.
        axis: usize,
        /// The chunk's number of dimensions.
        rank: usize,
    },
    /// A block of `array.assemble` reaches past its chunk or the result.
    #[error("assemble: block out of bounds in dimension {0}")]
    OutOfBounds(usize),
    /// A device plan could not run.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A value's bytes could not be brought to the host.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// A message as written: a user's op's, or a device's.
    #[error("{0}")]
    Message(String),
    /// The device has no room for what the op needs (its inputs, temporaries and output):
    /// spilling the device's values and running the op again may succeed.
    #[error("{device} is out of memory: {needed} bytes needed ({why})")]
    DeviceFull {
        /// The device (`cuda:0`, `sim:1`).
        device: String,
        /// Bytes the op needs on the device.
        needed: u64,
        /// What refused them (the pool's account, or the GPU itself).
        why: String,
    },
    /// The device failed for good (a sticky CUDA error): no op will run on it again in
    /// this process; the text names the kernels that were running.
    #[error("{0}")]
    DeviceLost(String),
}

/// `s` after a count other than one.
fn plural(n: &usize) -> &'static str {
    if *n == 1 {
        ""
    } else {
        "s"
    }
}

impl From<String> for OpError {
    fn from(message: String) -> Self {
        OpError::Message(message)
    }
}

impl From<&str> for OpError {
    fn from(message: &str) -> Self {
        OpError::Message(message.to_string())
    }
}

/// An op's error as the message a user's op returns, so that such an op can use `?` on
/// this crate's functions ([`crate::chunk::Chunk::from_value`], …).
impl From<OpError> for String {
    fn from(e: OpError) -> Self {
        e.to_string()
    }
}

/// Why a device plan could not run: the plan does not fit what its kernels take (the host
/// runner checks every launch), or the device failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The output buffer has another length than the plan's output.
    #[error("an output of {got} bytes for {want} bytes")]
    OutputLength {
        /// The output buffer's length.
        got: usize,
        /// The plan's output length.
        want: u64,
    },
    /// A step names a buffer the plan does not have.
    #[error("no buffer {0:?}")]
    NoBuffer(Buf),
    /// A GEMM of a dtype without one.
    #[error("no GEMM for {0}")]
    NoGemm(DType),
    /// A step the runner refuses (it would write an input, or read too little).
    #[error("{0}")]
    Step(&'static str),
    /// An entry point's name is not `{op}_{dtype}`.
    #[error("entry {0:?} is not op_dtype")]
    EntryName(String),
    /// An entry point's dtype suffix is not a kernel dtype.
    #[error("entry {0:?}: unknown dtype")]
    EntryDType(String),
    /// A launch that does not fit its kernel.
    #[error("{entry}: {problem}")]
    Launch {
        /// The kernel's entry point (`add_f32`).
        entry: String,
        /// What does not fit.
        problem: LaunchError,
    },
    /// A built-in kernel file that does not exist.
    #[error("no kernel file {0}")]
    NoKernelFile(&'static str),
    /// The GPU's thread has stopped (its context is gone).
    #[error("the GPU's thread has stopped")]
    GpuStopped,
    /// The device failed for good (a sticky CUDA error): the text says where.
    #[error("{0}")]
    Lost(String),
    /// The device's memory account cannot hold what the plan needs while it runs.
    #[error("{needed} bytes needed on the device: {why}")]
    Full {
        /// Bytes the plan needs (inputs brought to the device, temporaries, output).
        needed: u64,
        /// What refused them.
        why: String,
    },
    /// A copy between the host and a device failed.
    #[cfg(feature = "cuda")]
    #[error("{what}: {source}")]
    Transfer {
        /// Which copy (`uploading an input`, `downloading the output`, …).
        what: &'static str,
        /// The device's error.
        source: rask_device::DeviceError,
    },
    /// A device call failed.
    #[cfg(feature = "cuda")]
    #[error(transparent)]
    Device(#[from] rask_device::DeviceError),
    /// An input in another device's memory could not be brought to the host.
    #[error("{0}")]
    Input(String),
}

/// What is wrong with one launch (see [`PlanError::Launch`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    /// The kernel takes another number of arguments.
    #[error("{passed} arguments, the kernel takes {takes}")]
    ArgCount {
        /// Arguments the launch passes.
        passed: usize,
        /// Parameters the kernel declares.
        takes: usize,
    },
    /// An argument of another kind than the kernel's parameter (`kind` with its article:
    /// `a buffer`, `an int`).
    #[error("argument {index} is not {kind}")]
    ArgKind {
        /// The argument's position, from 0.
        index: usize,
        /// The kind the kernel's parameter takes.
        kind: String,
    },
    /// A buffer shorter than the launch reads or writes (`verb`).
    #[error("a buffer of {len} elements, {n} {verb}")]
    Short {
        /// The buffer's length in elements.
        len: usize,
        /// Elements the launch touches.
        n: usize,
        /// `read` or `written`.
        verb: &'static str,
    },
    /// A launch that writes one of the plan's inputs.
    #[error("writes an input")]
    WritesInput,
    /// A block reduction launched with another block size.
    #[error("block reductions launch {0} threads")]
    BlockSize(u32),
    /// Something else the host runner refuses (`the twin covers one-block launches`).
    #[error("{0}")]
    Refused(&'static str),
}

impl PlanError {
    /// A launch error of `entry`.
    pub(crate) fn launch(entry: &str, problem: LaunchError) -> PlanError {
        PlanError::Launch {
            entry: entry.to_string(),
            problem,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts users see are those the ops reported before their errors were typed.
    #[test]
    fn typed_errors_read_as_the_messages_they_replace() {
        let cases: Vec<(OpError, &str)> = vec![
            (
                OpError::Arity {
                    op: "neg",
                    want: 1,
                    got: 2,
                },
                "neg takes 1 argument, got 2",
            ),
            (
                OpError::Arity {
                    op: "sub",
                    want: 2,
                    got: 0,
                },
                "sub takes 2 arguments, got 0",
            ),
            (
                OpError::Type {
                    expected: "a number",
                    got: "str",
                },
                "expected a number, got str",
            ),
            (
                OpError::ChunkLength {
                    shape: vec![2, 3],
                    dtype: DType::F32,
                    len: 20,
                },
                "chunk of shape [2, 3] and dtype f32 has 20 bytes",
            ),
            (
                OpError::Shapes(vec![2], vec![3]),
                "shapes [2] and [3] differ",
            ),
            (
                OpError::Expr("op \"mod\" in \"x0 mod:2\"".into()),
                "elementwise program: op \"mod\" in \"x0 mod:2\"",
            ),
            (
                OpError::UnknownName {
                    kind: "reduction",
                    name: "mean".into(),
                },
                "unknown reduction \"mean\"",
            ),
            (
                OpError::Plan(PlanError::launch(
                    "add_f32",
                    LaunchError::ArgKind {
                        index: 5,
                        kind: "an int".into(),
                    },
                )),
                "add_f32: argument 5 is not an int",
            ),
            (OpError::from("boom"), "boom"),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
            assert_eq!(String::from(e), text);
        }
    }
}

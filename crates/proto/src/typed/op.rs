//! Typed ops: a program's own Rust functions as ops. `#[rask::op]` (rask-macros) turns
//! `fn hits(seed: u64, n: u64) -> u64` into an [`OpFn`] constant `hits` — still callable
//! as `hits(1, 2)`, and what `client.submit(hits, (seed, n))` takes — and registers the
//! op where the program is linked ([`registrations`]); no registry is built by hand.
//!
//! An op is named by its module path and function name (`pi::hits`); which code runs it
//! is the identity of the program that carries it (see the worker's code identity), so
//! two programs with a `pi::hits` of their own never serve each other's tasks.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{from_values, to_value, TypedError};
use crate::Value;

/// A typed op, as `#[rask::op]` describes a function. Implemented by a marker type the
/// macro generates; programs use the [`OpFn`] constant named like the function.
pub trait Op: 'static {
    /// The arguments, as a tuple (`(u64, u64)`; `(T,)` for one, `()` for none).
    type Args: Serialize + DeserializeOwned;
    /// What a task of the op yields (for a function returning `Result<T, E>`: `T`; an
    /// `Err` is the task's error, `E`'s `Display` its message).
    type Output: Serialize + DeserializeOwned;
    /// The function's own pointer type, so the constant can still be called.
    type Fn: 'static;
    /// The op's name: the function's module path and name.
    const NAME: &'static str;
    /// The function.
    fn func() -> &'static Self::Fn;
    /// Runs the function on decoded arguments.
    fn call(args: Self::Args) -> Result<Self::Output, String>;
}

/// A typed op as a value: pass it to `submit` or `map`; call it like the function it
/// stands for (`hits(1, 2)`: it dereferences to the function).
pub struct OpFn<M: Op>(PhantomData<M>);

impl<M: Op> OpFn<M> {
    /// The handle of the op `M` (what `#[rask::op]` defines).
    pub const fn new() -> OpFn<M> {
        OpFn(PhantomData)
    }

    /// The op's name.
    pub fn name(&self) -> &'static str {
        M::NAME
    }
}

impl<M: Op> Default for OpFn<M> {
    fn default() -> Self {
        OpFn::new()
    }
}

impl<M: Op> Clone for OpFn<M> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M: Op> Copy for OpFn<M> {}

impl<M: Op> std::ops::Deref for OpFn<M> {
    type Target = M::Fn;

    fn deref(&self) -> &M::Fn {
        M::func()
    }
}

impl<M: Op> std::fmt::Debug for OpFn<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "op {}", M::NAME)
    }
}

/// A typed op as registered where the program is linked: its name, how to run it on
/// values, and the Rust types it takes and yields (for error messages).
pub struct Registration {
    /// The op's name (`module::function`).
    pub name: &'static str,
    /// Runs the op on its arguments (one value per argument).
    pub run: fn(&[Value]) -> Result<Value, String>,
    /// The argument tuple's type and the output type, as Rust names them.
    pub types: fn() -> (&'static str, &'static str),
}

impl Registration {
    /// The registration of the op `M` (what `#[rask::op]` submits).
    pub const fn of<M: Op>() -> Registration {
        Registration {
            name: M::NAME,
            run: run::<M>,
            types: types::<M>,
        }
    }
}

inventory::collect!(Registration);

/// Every typed op linked into this program.
pub fn registrations() -> impl Iterator<Item = &'static Registration> {
    inventory::iter::<Registration>.into_iter()
}

fn types<M: Op>() -> (&'static str, &'static str) {
    (
        std::any::type_name::<M::Args>(),
        std::any::type_name::<M::Output>(),
    )
}

/// Decodes the arguments, runs the op, encodes what it returned. A mismatch names the
/// op, the types it takes, and what it was given.
fn run<M: Op>(args: &[Value]) -> Result<Value, String> {
    let args: M::Args = from_values(args).map_err(|TypedError(e)| {
        format!(
            "op {} takes {}: {e}",
            M::NAME,
            std::any::type_name::<M::Args>()
        )
    })?;
    let out = M::call(args)?;
    to_value(&out).map_err(|TypedError(e)| {
        format!(
            "op {}: its result ({}) cannot be encoded: {e}",
            M::NAME,
            std::any::type_name::<M::Output>()
        )
    })
}

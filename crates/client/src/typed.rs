//! Submitting typed ops: what `submit` and `map` accept as an op and its arguments.
//!
//! An op is a dynamic op's name (`"inc"`, its arguments [`Arg`]s, its future a
//! `Future<Value>`) or a typed op (`hits`, as `#[rask::op]` defines it: its arguments a
//! tuple of the function's argument types, its future a `Future` of its output type).
//! Wherever a typed op takes a `T`, a `Future<T>` (or `&Future<T>`) of an earlier task
//! may stand instead and becomes a dependency; a `Vec` of them stands for a `Vec<T>`.
//! Mismatched types are compile errors.

use rask_proto::typed::{to_value, Op, OpFn};
use rask_proto::{Arg, Value};
use serde::Serialize;

use crate::future::{as_is, typed};
use crate::{ClientError, Future};

/// Something `submit` and `map` run with arguments `A`: a dynamic op's name, or a typed
/// op.
pub trait Submit<A> {
    /// What a task of the op yields.
    type Output;
    /// What must stay alive until the task is sent (the futures among the arguments: a
    /// future dropped earlier would release its key first).
    type Keep;
    /// The op's name.
    fn name(&self) -> &str;
    /// The task's arguments, and what to keep until it is sent.
    fn prepare(&self, args: A) -> Result<(Vec<Arg>, Self::Keep), ClientError>;
    /// How the task's value becomes an `Output`.
    fn decoder(&self) -> fn(Value) -> Result<Self::Output, String>;
}

impl<A: IntoIterator<Item = Arg>> Submit<A> for &str {
    type Output = Value;
    type Keep = ();

    fn name(&self) -> &str {
        self
    }

    fn prepare(&self, args: A) -> Result<(Vec<Arg>, ()), ClientError> {
        Ok((args.into_iter().collect(), ()))
    }

    fn decoder(&self) -> fn(Value) -> Result<Value, String> {
        as_is
    }
}

impl<A: IntoIterator<Item = Arg>> Submit<A> for &String {
    type Output = Value;
    type Keep = ();

    fn name(&self) -> &str {
        self
    }

    fn prepare(&self, args: A) -> Result<(Vec<Arg>, ()), ClientError> {
        Ok((args.into_iter().collect(), ()))
    }

    fn decoder(&self) -> fn(Value) -> Result<Value, String> {
        as_is
    }
}

impl<M: Op, A: IntoArgs<M::Args>> Submit<A> for OpFn<M> {
    type Output = M::Output;
    type Keep = A;

    fn name(&self) -> &str {
        M::NAME
    }

    fn prepare(&self, args: A) -> Result<(Vec<Arg>, A), ClientError> {
        let list = args.args().map_err(|message| ClientError::Encode {
            op: M::NAME.to_string(),
            message,
        })?;
        Ok((list, args))
    }

    fn decoder(&self) -> fn(Value) -> Result<M::Output, String> {
        typed::<M::Output>
    }
}

/// A value or future standing for an argument of type `T`.
pub trait IntoArg<T> {
    /// The argument: the value encoded, or a reference to the future's key.
    fn arg(&self) -> Result<Arg, String>;
}

impl<T: Serialize> IntoArg<T> for T {
    fn arg(&self) -> Result<Arg, String> {
        to_value(self).map(Arg::Value).map_err(|e| e.to_string())
    }
}

impl<T> IntoArg<T> for Future<T> {
    fn arg(&self) -> Result<Arg, String> {
        Ok(Arg::Key(self.key().to_string()))
    }
}

impl<T> IntoArg<T> for &Future<T> {
    fn arg(&self) -> Result<Arg, String> {
        Ok(Arg::Key(self.key().to_string()))
    }
}

impl<T> IntoArg<Vec<T>> for Vec<Future<T>> {
    fn arg(&self) -> Result<Arg, String> {
        Ok(Arg::List(
            self.iter().map(|f| Arg::Key(f.key().to_string())).collect(),
        ))
    }
}

impl<T> IntoArg<Vec<T>> for &[Future<T>] {
    fn arg(&self) -> Result<Arg, String> {
        Ok(Arg::List(
            self.iter().map(|f| Arg::Key(f.key().to_string())).collect(),
        ))
    }
}

/// A tuple of arguments for an op taking the tuple `T`.
pub trait IntoArgs<T> {
    /// One argument per element.
    fn args(&self) -> Result<Vec<Arg>, String>;
}

impl IntoArgs<()> for () {
    fn args(&self) -> Result<Vec<Arg>, String> {
        Ok(Vec::new())
    }
}

macro_rules! into_args {
    ($(($($t:ident $a:ident $i:tt),+))*) => {$(
        impl<$($t, $a: IntoArg<$t>),+> IntoArgs<($($t,)+)> for ($($a,)+) {
            fn args(&self) -> Result<Vec<Arg>, String> {
                Ok(vec![$(self.$i.arg()?),+])
            }
        }
    )*};
}

into_args! {
    (T0 A0 0)
    (T0 A0 0, T1 A1 1)
    (T0 A0 0, T1 A1 1, T2 A2 2)
    (T0 A0 0, T1 A1 1, T2 A2 2, T3 A3 3)
    (T0 A0 0, T1 A1 1, T2 A2 2, T3 A3 3, T4 A4 4)
    (T0 A0 0, T1 A1 1, T2 A2 2, T3 A3 3, T4 A4 4, T5 A5 5)
    (T0 A0 0, T1 A1 1, T2 A2 2, T3 A3 3, T4 A4 4, T5 A5 5, T6 A6 6)
    (T0 A0 0, T1 A1 1, T2 A2 2, T3 A3 3, T4 A4 4, T5 A5 5, T6 A6 6, T7 A7 7)
}

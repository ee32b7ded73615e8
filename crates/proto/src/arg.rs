//! A task's argument as programs write it: a value, the result of another task (by key),
//! or a list of either. The client and blocked arrays build graphs from these alike; on
//! the wire an argument becomes a [`Datum`](crate::Datum) whose references index the
//! task's dependencies.

use bytes::Bytes;

use crate::value::MAX_DEPTH;
use crate::{Datum, ProtoError, Value};

/// A task argument: a value, a reference to another key's result, or a list of either.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// A literal value, sent with the task.
    Value(Value),
    /// The result of the task with this key (in the same graph, or held by the client).
    Key(String),
    /// A list of arguments; the op receives it as a [`Value::List`] once every key in it
    /// has been replaced by its result.
    List(Vec<Arg>),
}

impl Arg {
    /// A reference to a key's result.
    pub fn key(k: impl Into<String>) -> Arg {
        Arg::Key(k.into())
    }

    /// The wire form: keys referred to are appended to `deps` once each (a reference is
    /// its index there), byte payloads to `bufs`. Refuses arguments nested deeper than a
    /// receiver accepts.
    pub fn to_datum(
        &self,
        deps: &mut Vec<String>,
        bufs: &mut Vec<Bytes>,
    ) -> Result<Datum, ProtoError> {
        self.to_datum_at(deps, bufs, 0)
    }

    fn to_datum_at(
        &self,
        deps: &mut Vec<String>,
        bufs: &mut Vec<Bytes>,
        depth: usize,
    ) -> Result<Datum, ProtoError> {
        if depth > MAX_DEPTH {
            return Err(ProtoError::TooDeep(MAX_DEPTH));
        }
        Ok(match self {
            Arg::Value(v) => v.to_datum(bufs)?,
            Arg::Key(k) => Datum::Ref(dep_index(deps, k)),
            Arg::List(l) => Datum::List(
                l.iter()
                    .map(|a| a.to_datum_at(deps, bufs, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

/// The index of key `k` among a task's inputs `deps`, added there if it is not yet.
pub(crate) fn dep_index(deps: &mut Vec<String>, k: &str) -> u32 {
    let i = match deps.iter().position(|d| d == k) {
        Some(i) => i,
        None => {
            deps.push(k.to_string());
            deps.len() - 1
        }
    };
    i as u32
}

impl<T: Into<Value>> From<T> for Arg {
    fn from(v: T) -> Self {
        Arg::Value(v.into())
    }
}

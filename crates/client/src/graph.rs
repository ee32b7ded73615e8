//! Task graphs as the client builds them: named tasks whose arguments are values or
//! references to other keys (the dict form `{"x": 1, "y": (add, "x", 2)}`), and their
//! wire form: tasks as sent, in parts that fit the scheduler's frames.

use std::sync::Arc;

use bytes::Bytes;
use rask_proto::msg::{Resource, TaskSpec, UpdateGraphMsg};
pub use rask_proto::Arg;
use rask_proto::{Datum, Value};

use crate::Future;

impl<T> From<&Future<T>> for Arg {
    fn from(f: &Future<T>) -> Self {
        Arg::Key(f.key().to_string())
    }
}

#[derive(Clone, Debug, PartialEq)]
struct GraphTask {
    key: String,
    op: String,
    args: Vec<Arg>,
    resources: Vec<Resource>,
}

/// A graph of named tasks, submitted as one message.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    tasks: Vec<GraphTask>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Graph::default()
    }

    /// Adds `key = op(args…)`.
    pub fn task(&mut self, key: &str, op: &str, args: impl IntoIterator<Item = Arg>) -> &mut Self {
        self.tasks.push(GraphTask {
            key: key.into(),
            op: op.into(),
            args: args.into_iter().collect(),
            resources: Vec::new(),
        });
        self
    }

    /// Adds `key = value` (a literal, like `{"x": 1}`).
    pub fn value(&mut self, key: &str, v: impl Into<Value>) -> &mut Self {
        self.task(key, "identity", [Arg::Value(v.into())])
    }

    /// Requires resources (e.g. `gpu = 1`) for the most recently added task.
    pub fn resources(&mut self, resources: &[(&str, f64)]) -> &mut Self {
        if let Some(t) = self.tasks.last_mut() {
            t.resources = resources
                .iter()
                .map(|(n, a)| Resource {
                    name: n.to_string(),
                    amount: *a,
                })
                .collect();
        }
        self
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the graph has no tasks.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The ops the graph uses.
    pub fn ops(&self) -> impl Iterator<Item = &str> {
        self.tasks.iter().map(|t| t.op.as_str())
    }

    /// Wire form; byte payloads are appended to `bufs`.
    pub(crate) fn specs(
        &self,
        bufs: &mut Vec<Bytes>,
    ) -> Result<Vec<TaskSpec>, rask_proto::ProtoError> {
        self.tasks
            .iter()
            .map(|t| {
                let mut spec = spec(t.key.clone(), t.op.clone(), &t.args, bufs)?;
                spec.resources = t.resources.clone();
                Ok(spec)
            })
            .collect()
    }
}

/// The wire form of the task `key = op(args…)` (needing no resources); byte payloads
/// are appended to `bufs`.
pub(crate) fn spec(
    key: String,
    op: String,
    args: &[Arg],
    bufs: &mut Vec<Bytes>,
) -> Result<TaskSpec, rask_proto::ProtoError> {
    let mut deps = Vec::new();
    let args = Datum::List(
        args.iter()
            .map(|a| a.to_datum(&mut deps, bufs))
            .collect::<Result<_, _>>()?,
    );
    Ok(TaskSpec {
        key,
        op,
        args,
        deps,
        resources: Vec::new(),
    })
}

/// The largest part of a graph sent in one message (by its size estimate): a large graph
/// goes in several, well inside the scheduler's frame limit.
pub(crate) const PART_TARGET: usize = 4 << 20;

/// Splits a graph into messages of at most about [`PART_TARGET`] each (every one but the
/// last marked `more`), each with its own buffers.
pub(crate) fn split_graph(
    tasks: Vec<TaskSpec>,
    outputs: &[Arc<str>],
    bufs: &[Bytes],
) -> Result<Vec<(UpdateGraphMsg, Vec<Bytes>)>, rask_proto::ProtoError> {
    let mut parts = Vec::new();
    let mut part = UpdateGraphMsg {
        tasks: Vec::new(),
        wanted: Vec::new(),
        more: true,
    };
    let mut part_bufs = Vec::new();
    let mut size = 0;
    let flush = |part: &mut UpdateGraphMsg, part_bufs: &mut Vec<Bytes>, parts: &mut Vec<_>| {
        let full = std::mem::replace(
            part,
            UpdateGraphMsg {
                tasks: Vec::new(),
                wanted: Vec::new(),
                more: true,
            },
        );
        parts.push((full, std::mem::take(part_bufs)));
    };
    for mut t in tasks {
        let n = rask_proto::size::task_wire_size(&t);
        if size + n > PART_TARGET && size > 0 {
            flush(&mut part, &mut part_bufs, &mut parts);
            size = 0;
        }
        size += n;
        if !bufs.is_empty() {
            let own = t.args.localize(bufs)?;
            t.args.globalize(&own, &mut part_bufs)?;
        }
        part.tasks.push(t);
    }
    for k in outputs {
        let n = k.len() + 16;
        if size + n > PART_TARGET && size > 0 {
            flush(&mut part, &mut part_bufs, &mut parts);
            size = 0;
        }
        size += n;
        part.wanted.push(String::from(&**k));
    }
    part.more = false;
    parts.push((part, part_bufs));
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dict_form_becomes_specs_with_refs_and_buffers() {
        let mut g = Graph::new();
        g.value("x", 1)
            .task("y", "add", [Arg::key("x"), 2.into(), Arg::key("x")]);
        g.task(
            "z",
            "len",
            [Value::Bytes(Bytes::from_static(b"abcd")).into()],
        );
        let mut bufs = Vec::new();
        let specs = g.specs(&mut bufs).unwrap();
        assert_eq!(specs[1].deps, vec!["x".to_string()]);
        assert_eq!(
            specs[1].args,
            Datum::List(vec![Datum::Ref(0), Datum::Int(2), Datum::Ref(0)])
        );
        assert_eq!(specs[2].args, Datum::List(vec![Datum::Buf(0)]));
        assert_eq!(bufs, vec![Bytes::from_static(b"abcd")]);
        assert_eq!(g.ops().collect::<Vec<_>>(), vec!["identity", "add", "len"]);
    }
}

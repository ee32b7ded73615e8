//! Task graphs as the client builds them: named tasks whose arguments are values or
//! references to other keys (the dict form `{"x": 1, "y": (add, "x", 2)}`).

use bytes::Bytes;
use rask_proto::msg::{Resource, TaskSpec};
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

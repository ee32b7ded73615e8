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
    let args = args_datum(args, &mut deps, bufs)?;
    Ok(TaskSpec {
        key,
        op,
        args,
        deps,
        resources: Vec::new(),
    })
}

/// The wire form of a task's arguments: the keys of the futures among them are appended to
/// `deps`, byte payloads to `bufs`.
pub(crate) fn args_datum(
    args: &[Arg],
    deps: &mut Vec<String>,
    bufs: &mut Vec<Bytes>,
) -> Result<Datum, rask_proto::ProtoError> {
    let mut items = Vec::with_capacity(args.len());
    for a in args {
        items.push(a.to_datum(deps, bufs)?);
    }
    Ok(Datum::List(items))
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
    // Most graphs (a map's submission, a `submit`) fit in one part and carry no buffer:
    // their tasks go as they are, not moved one by one into a list grown as it fills.
    let size: usize = tasks
        .iter()
        .map(rask_proto::size::task_wire_size)
        .sum::<usize>()
        + outputs.iter().map(|k| k.len() + 16).sum::<usize>();
    if bufs.is_empty() && size <= PART_TARGET {
        let wanted = outputs.iter().map(|k| String::from(&**k)).collect();
        let whole = UpdateGraphMsg {
            tasks,
            wanted,
            more: false,
        };
        return Ok(vec![(whole, Vec::new())]);
    }
    let mut parts = Parts::default();
    for mut t in tasks {
        parts.make_room(rask_proto::size::task_wire_size(&t));
        if !bufs.is_empty() {
            let own = t.args.localize(bufs)?;
            t.args.globalize(&own, &mut parts.bufs)?;
        }
        parts.part.tasks.push(t);
    }
    for k in outputs {
        parts.make_room(k.len() + 16);
        parts.part.wanted.push(String::from(&**k));
    }
    parts.part.more = false;
    parts.done.push((parts.part, parts.bufs));
    Ok(parts.done)
}

/// The parts of a graph being split: those full, and the one being filled with its
/// buffers and estimated size.
struct Parts {
    done: Vec<(UpdateGraphMsg, Vec<Bytes>)>,
    part: UpdateGraphMsg,
    bufs: Vec<Bytes>,
    size: usize,
}

impl Default for Parts {
    fn default() -> Self {
        Parts {
            done: Vec::new(),
            part: empty_part(),
            bufs: Vec::new(),
            size: 0,
        }
    }
}

/// A part with nothing in it yet, not the last.
fn empty_part() -> UpdateGraphMsg {
    UpdateGraphMsg {
        tasks: Vec::new(),
        wanted: Vec::new(),
        more: true,
    }
}

impl Parts {
    /// Counts `n` more bytes into the part being filled, closing it first when they would
    /// take it past [`PART_TARGET`] (an empty part takes anything).
    fn make_room(&mut self, n: usize) {
        if self.size + n > PART_TARGET && self.size > 0 {
            let full = std::mem::replace(&mut self.part, empty_part());
            self.done.push((full, std::mem::take(&mut self.bufs)));
            self.size = 0;
        }
        self.size += n;
    }
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

    /// A graph larger than a part goes in parts of at most [`PART_TARGET`] (by estimate),
    /// every one but the last marked `more`, each with its own buffers renumbered from 0;
    /// the wanted keys follow the tasks.
    #[test]
    fn a_large_graph_splits_into_parts_each_with_its_buffers() {
        let mut g = Graph::new();
        let payload = Bytes::from(vec![7u8; PART_TARGET / 3 + 1]);
        for i in 0..7 {
            g.task(
                &format!("t{i}"),
                "len",
                [
                    Value::Str("s".repeat(PART_TARGET / 3)).into(),
                    Value::Bytes(payload.clone()).into(),
                ],
            );
        }
        let mut bufs = Vec::new();
        let specs = g.specs(&mut bufs).unwrap();
        let outputs: Vec<Arc<str>> = vec!["t0".into(), "t6".into()];
        let parts = split_graph(specs, &outputs, &bufs).unwrap();
        // Each task's estimate is a third of the target and more: two tasks per part.
        let sizes: Vec<usize> = parts.iter().map(|(p, _)| p.tasks.len()).collect();
        assert_eq!(sizes, vec![2, 2, 2, 1]);
        let more: Vec<bool> = parts.iter().map(|(p, _)| p.more).collect();
        assert_eq!(more, vec![true, true, true, false]);
        for (p, b) in &parts {
            assert_eq!(b.len(), p.tasks.len(), "one buffer per task, in its part");
            for (j, t) in p.tasks.iter().enumerate() {
                let Datum::List(args) = &t.args else {
                    panic!("args: {:?}", t.args)
                };
                assert_eq!(args[1], Datum::Buf(j as u32), "renumbered in its part");
            }
        }
        assert!(parts[..3].iter().all(|(p, _)| p.wanted.is_empty()));
        assert_eq!(parts[3].0.wanted, vec!["t0".to_string(), "t6".to_string()]);
    }

    #[test]
    fn a_graph_without_buffers_goes_whole_when_it_fits_and_in_parts_when_not() {
        let small = |n: usize, len: usize| {
            let mut g = Graph::new();
            for i in 0..n {
                g.task(
                    &format!("k{i}"),
                    "len",
                    [Value::Str("s".repeat(len)).into()],
                );
            }
            let mut bufs = Vec::new();
            (g.specs(&mut bufs).unwrap(), bufs)
        };
        let outputs: Vec<Arc<str>> = vec!["k0".into(), "k2".into()];
        let (specs, bufs) = small(3, 10);
        assert!(bufs.is_empty());
        let parts = split_graph(specs, &outputs, &bufs).unwrap();
        assert_eq!(parts.len(), 1);
        let (p, b) = &parts[0];
        assert!(b.is_empty() && !p.more);
        let keys: Vec<&str> = p.tasks.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["k0", "k1", "k2"]);
        assert_eq!(p.wanted, vec!["k0".to_string(), "k2".to_string()]);
        // Past the target, still in parts (of two tasks each, a third of it apiece).
        let (specs, bufs) = small(5, PART_TARGET / 3);
        let parts = split_graph(specs, &outputs, &bufs).unwrap();
        let sizes: Vec<usize> = parts.iter().map(|(p, _)| p.tasks.len()).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        let more: Vec<bool> = parts.iter().map(|(p, _)| p.more).collect();
        assert_eq!(more, vec![true, true, false]);
        assert_eq!(parts[2].0.wanted.len(), 2);
        // Without wanted keys, the same.
        let (specs, bufs) = small(5, PART_TARGET / 3);
        let parts = split_graph(specs, &[], &bufs).unwrap();
        assert_eq!(parts.len(), 3);
        // Tasks that fit, with wanted keys that do not: in parts too.
        let (specs, bufs) = small(1, PART_TARGET / 2);
        let long: Vec<Arc<str>> = (0..3)
            .map(|i| format!("{i}{}", "k".repeat(PART_TARGET / 4)).into())
            .collect();
        let parts = split_graph(specs, &long, &bufs).unwrap();
        assert_eq!(parts.len(), 2);
        let wanted: usize = parts.iter().map(|(p, _)| p.wanted.len()).sum();
        assert_eq!(wanted, 3);
    }
}

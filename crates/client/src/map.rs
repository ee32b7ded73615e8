//! [`Client::map`]: one op over many arguments, sent as task arrays ([`MapMsg`]): no key,
//! op name or wanted key travels for each task. A chunk whose arguments hold futures reads
//! other tasks' outputs and goes as a graph instead.

use std::sync::Arc;

use bytes::Bytes;
use rask_proto::msg::{push_map_key, MapMsg, TaskSpec, ToScheduler};
use rask_proto::packed::{Packed, TaskArgs};
use rask_proto::Value;

use crate::client::ENCODE_HERE_FROM;
use crate::graph::PART_TARGET;
use crate::typed::Submit;
use crate::{Client, ClientError, Future, MAP_CHUNK};

/// The tasks of a map being gathered for one submission.
struct Chunk<K> {
    /// Each task's arguments, packed as they travel and as the scheduler keeps them.
    args: Vec<TaskArgs>,
    /// The keys of the futures among the arguments, of all tasks: a map reads none unless
    /// some are given.
    deps: Vec<String>,
    /// Where each task's `deps` start (only when some task has any).
    deps_start: Vec<usize>,
    /// The byte payloads the arguments refer to.
    bufs: Vec<Bytes>,
    /// What the arguments keep alive until sent.
    keep: Vec<K>,
    /// The chunk's estimated size on the wire.
    size: usize,
}

impl<K> Chunk<K> {
    fn new(room: usize) -> Self {
        Chunk {
            args: Vec::with_capacity(room),
            deps: Vec::new(),
            deps_start: Vec::new(),
            bufs: Vec::new(),
            keep: Vec::new(),
            size: 0,
        }
    }

    /// Whether the chunk should go before another task joins it.
    fn full(&self) -> bool {
        self.args.len() >= MAP_CHUNK || self.size >= PART_TARGET
    }
}

impl Client {
    /// Runs `op` once per item (each item the arguments of one task, as for
    /// [`Client::submit`]). The tasks go in submissions of up to [`MAP_CHUNK`], each
    /// sent once built, so the first run while the rest are built. Items whose
    /// arguments cannot be prepared fail the call; tasks sent before are then released
    /// (their futures dropped).
    pub fn map<O, I, A>(&self, op: O, items: I) -> Result<Vec<Future<O::Output>>, ClientError>
    where
        O: Submit<A>,
        I: IntoIterator<Item = A>,
    {
        let name = op.name();
        let prefix = self.fresh_name(name);
        self.check_ops(std::iter::once(name))?;
        let mut items = items.into_iter().peekable();
        let mut futures = Vec::with_capacity(items.size_hint().0);
        let mut first = 0u64;
        let room = |left: usize| MAP_CHUNK.min(left + 1);
        let mut chunk = Chunk::new(room(items.size_hint().0));
        while let Some(item) = items.next() {
            let (args, keep) = op.prepare(item)?;
            // The task's own inputs: its `Datum::Ref`s count from its first.
            let mut deps = Vec::new();
            // Packed as they travel and as the scheduler keeps them, with no datum made.
            let packed = Packed::of_args(&args, &mut deps, &mut chunk.bufs)
                .map_err(|e| ClientError::Rejected(e.to_string()))?;
            if !deps.is_empty() && chunk.deps_start.is_empty() {
                // The first task with inputs: those before it had none.
                chunk.deps_start = vec![0; chunk.args.len()];
            }
            if !chunk.deps_start.is_empty() {
                chunk.deps_start.push(chunk.deps.len());
                chunk.deps.append(&mut deps);
            }
            let args = TaskArgs::Packed(packed);
            chunk.size += rask_proto::size::args_wire_size(&args);
            chunk.args.push(args);
            chunk.keep.push(keep);
            if chunk.full() && items.peek().is_some() {
                let next = Chunk::new(room(items.size_hint().0));
                let full = std::mem::replace(&mut chunk, next);
                futures.extend(self.submit_map_chunk(&prefix, &mut first, name, full, &op)?);
            }
        }
        futures.extend(self.submit_map_chunk(&prefix, &mut first, name, chunk, &op)?);
        Ok(futures)
    }

    /// Submits a chunk of a map (tasks numbered from `first`, which moves past them), then
    /// lets go of what their arguments kept.
    fn submit_map_chunk<O: Submit<A>, A>(
        &self,
        prefix: &str,
        first: &mut u64,
        op_name: &str,
        chunk: Chunk<O::Keep>,
        op: &O,
    ) -> Result<Vec<Future<O::Output>>, ClientError> {
        let mut key = String::with_capacity(prefix.len() + 21);
        let keys: Vec<Arc<str>> = (0..chunk.args.len() as u64)
            .map(|i| {
                key.clear();
                push_map_key(&mut key, prefix, *first + i);
                Arc::from(key.as_str())
            })
            .collect();
        let futures = match chunk.deps_start.is_empty() {
            true => self.submit_map(
                MapMsg {
                    prefix: prefix.to_string(),
                    first: *first,
                    op: op_name.to_string(),
                    args: chunk.args,
                    resources: Vec::new(),
                },
                chunk.bufs,
                &keys,
                op.decoder(),
            )?,
            false => {
                // Some tasks read futures' values: a graph names each task's inputs.
                let starts = chunk.deps_start;
                let total = chunk.deps.len();
                let mut deps = chunk.deps.into_iter();
                let tasks: Vec<TaskSpec> = chunk
                    .args
                    .into_iter()
                    .enumerate()
                    .map(|(i, args)| {
                        let n = starts.get(i + 1).copied().unwrap_or(total) - starts[i];
                        TaskSpec {
                            key: String::from(&*keys[i]),
                            op: op_name.to_string(),
                            args: args.into_datum(),
                            deps: deps.by_ref().take(n).collect(),
                            resources: Vec::new(),
                        }
                    })
                    .collect();
                self.submit_specs(tasks, &chunk.bufs, &keys, op.decoder())?
            }
        };
        *first += keys.len() as u64;
        // Only now may the futures among the arguments go (their keys were held).
        drop(chunk.keep);
        Ok(futures)
    }

    /// Sends a map's tasks (with their buffers) and returns futures for their `keys`.
    fn submit_map<T>(
        &self,
        map: MapMsg,
        bufs: Vec<Bytes>,
        keys: &[Arc<str>],
        decode: fn(Value) -> Result<T, String>,
    ) -> Result<Vec<Future<T>>, ClientError> {
        if map.args.is_empty() {
            return Ok(Vec::new());
        }
        let futures = self.hold_all(keys, Some((&map.prefix, map.first)), decode)?;
        let many = map.args.len() >= ENCODE_HERE_FROM;
        self.send_submission(ToScheduler::Map(Box::new(map)), bufs, many)?;
        Ok(futures)
    }
}

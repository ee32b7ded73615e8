//! What the core's tests build their scenarios from: a task of an op reading its inputs,
//! a worker on one host, keys.
#![allow(dead_code)]

use rask_proto::{ClientId, Datum};
use rask_scheduler_core::{NewTask, WorkerSpec};

/// The client of every scenario.
pub const C: ClientId = ClientId(1);

/// A task `key` of `op` whose arguments are its inputs `deps`, in order.
pub fn op_task(key: &str, op: &str, deps: &[&str]) -> NewTask {
    NewTask {
        key: key.into(),
        op: op.into(),
        args: Datum::List((0..deps.len() as u32).map(Datum::Ref).collect()),
        bufs: vec![],
        deps: deps.iter().map(|s| s.to_string()).collect(),
        resources: vec![],
        code: None,
    }
}

/// A base worker named `name` with `nthreads` threads, on host "h".
pub fn worker_with(name: &str, nthreads: u32) -> WorkerSpec {
    WorkerSpec {
        name: name.into(),
        addr: format!("tcp://127.0.0.1/{name}"),
        host_id: "h".into(),
        nthreads,
        memory_limit: 1 << 30,
        resources: vec![],
        gpu: None,
        nvlink: vec![],
        device_spill_at: 0,
        code: 0,
        base: true,
    }
}

/// Keys as the core takes them.
pub fn keys(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

//! Unit tests of the core's internals.

use rask_proto::msg::Resource;
use rask_proto::{ClientId, Datum};

use crate::api::CoreConfig;
use crate::api::NewTask;
use crate::core::SchedulerCore;

fn new_task(key: &str, deps: &[&str], resources: &[&str]) -> NewTask {
    NewTask {
        key: key.into(),
        op: "add".into(),
        args: Datum::Null,
        bufs: vec![],
        deps: deps.iter().map(|d| d.to_string()).collect(),
        resources: resources
            .iter()
            .map(|r| Resource {
                name: r.to_string(),
                amount: 1.0,
            })
            .collect(),
        code: None,
    }
}

#[test]
#[should_panic(expected = "y ready without its inputs")]
fn validate_finds_a_ready_task_whose_input_is_not_in_memory() {
    let c = ClientId(1);
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_client_joined(c);
    // No worker has a GPU: both wait in no-worker.
    s.on_update_graph(
        c,
        vec![new_task("w", &[], &["gpu"]), new_task("y", &[], &["gpu"])],
        &["w".to_string(), "y".to_string()],
    )
    .unwrap();
    s.validate();
    let w = s.task_id("w").unwrap();
    let y = s.task_id("y").unwrap();
    // Broken on purpose: y reads w, which is not in memory.
    s.tasks.get_mut(&y).unwrap().deps = vec![w].into();
    s.validate();
}

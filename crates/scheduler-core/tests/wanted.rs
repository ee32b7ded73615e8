//! Keys a client asks for must exist: in the graph it submits, or held on the cluster.
//! Asking for anything else is refused at once, so that no client waits forever.

mod common;

use common::{worker_with, C};
use rask_proto::{ClientId, Datum, WorkerId};
use rask_scheduler_core::{Action, CoreConfig, GraphError, NewTask, SchedulerCore};

fn task(key: &str) -> NewTask {
    NewTask {
        key: key.into(),
        op: "inc".into(),
        args: Datum::List(vec![Datum::Int(1)]),
        bufs: vec![],
        deps: vec![],
        resources: vec![],
        code: None,
    }
}

fn core_with_a_worker() -> SchedulerCore {
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_client_joined(C);
    s.on_worker_joined(WorkerId(0), worker_with("a", 1));
    s
}

#[test]
fn a_wanted_key_that_was_never_submitted_is_refused_and_nothing_changes() {
    let mut s = core_with_a_worker();
    let err = s
        .on_update_graph(C, vec![task("x")], &["x".into(), "nope".into()])
        .unwrap_err();
    assert!(
        matches!(&err, GraphError::UnknownKey { key } if key == "nope"),
        "{err}"
    );
    assert!(err.to_string().contains("neither in the graph nor held"));
    // The whole graph was refused: x does not exist either.
    assert!(s.take_actions().is_empty());
    s.validate();
    assert!(matches!(
        s.on_update_graph(C, vec![], &["x".into()]),
        Err(GraphError::UnknownKey { .. })
    ));
}

#[test]
fn a_released_key_asked_for_again_is_refused_and_a_held_one_is_answered() {
    let mut s = core_with_a_worker();
    s.on_update_graph(C, vec![task("x")], &["x".into()])
        .unwrap();
    let compute = s
        .take_actions()
        .into_iter()
        .find_map(|a| match a {
            Action::Compute { msg, .. } => Some(msg.task),
            _ => None,
        })
        .expect("x is computed");
    s.on_task_finished(WorkerId(0), compute, 8, 1, 0, None);
    s.take_actions();
    s.validate();
    // Held: asking again (by key only) is answered at once from memory.
    s.on_update_graph(C, vec![], &["x".into()]).unwrap();
    assert!(s.take_actions().is_empty(), "already wanted by this client");
    let other = ClientId(2);
    s.on_client_joined(other);
    s.on_update_graph(other, vec![], &["x".into()]).unwrap();
    assert!(matches!(
        &s.take_actions()[..],
        [Action::KeyInMemory { client, key, .. }] if *client == other && &**key == "x"
    ));
    // Released by both: asking again is refused, not left waiting.
    s.on_release_keys(C, &["x".into()]);
    s.on_release_keys(other, &["x".into()]);
    s.take_actions();
    s.validate();
    assert!(matches!(
        s.on_update_graph(C, vec![], &["x".into()]),
        Err(GraphError::UnknownKey { key }) if key == "x"
    ));
}

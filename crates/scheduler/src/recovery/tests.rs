//! What the journal's records add up to: graphs and the ids they got, failures, datasets.

use super::*;
use rask_proto::Datum;
use rask_scheduler_core::SchedulerCore;

fn task(key: &str, deps: &[&str]) -> JournalTask {
    JournalTask {
        key: key.into(),
        op: "inc".into(),
        args: Datum::Int(1),
        bufs: Vec::new(),
        deps: deps.iter().map(|d| d.to_string()).collect(),
        resources: Vec::new(),
        code: None,
    }
}

fn live(m: &Model) -> Vec<(u64, String)> {
    let mut tasks: Vec<_> = m.tasks.iter().collect();
    tasks.sort_by_key(|(_, (order, _))| *order);
    tasks
        .into_iter()
        .map(|(id, (_, t))| (*id, t.key.clone()))
        .collect()
}

#[test]
fn a_graph_record_gives_the_tasks_its_created_record_names_their_ids() {
    let mut m = Model::default();
    m.apply(Record::Graph(vec![task("b", &["a"]), task("a", &[])]));
    m.apply(Record::Created(vec![(1, 10), (0, 11)]));
    assert_eq!(live(&m), [(10, "a".into()), (11, "b".into())]);
    // Submitted again with a new task: only that one was created. An index out of
    // the graph, or named twice, is no task.
    m.apply(Record::Graph(vec![task("a", &[]), task("c", &["a"])]));
    m.apply(Record::Created(vec![(1, 12), (1, 13), (7, 14)]));
    m.apply(Record::Forgotten(vec![11]));
    assert_eq!(live(&m), [(10, "a".into()), (12, "c".into())]);
    // Failures of live tasks are kept until the task is forgotten; one of a task
    // forgotten already (recorded after it) is not.
    m.apply(Record::Erred(vec![
        (10, "boom".into()),
        (11, "late".into()),
    ]));
    m.apply(Record::Erred(vec![(12, "bang".into())]));
    assert_eq!(
        m.erred
            .iter()
            .map(|(id, e)| (*id, e.as_str()))
            .collect::<Vec<_>>(),
        [(10, "boom"), (12, "bang")]
    );
    m.apply(Record::Forgotten(vec![12]));
    assert_eq!(m.erred.keys().copied().collect::<Vec<_>>(), [10]);
    // Datasets: published (again, replacing), unpublished; their holders' ids are
    // never issued again.
    m.apply(Record::Published {
        name: "d".into(),
        client: 7,
        keys: vec!["a".into()],
    });
    m.apply(Record::Published {
        name: "d".into(),
        client: 9,
        keys: vec!["c".into()],
    });
    m.apply(Record::Published {
        name: "gone".into(),
        client: 8,
        keys: vec![],
    });
    m.apply(Record::Unpublished("gone".into()));
    assert_eq!(
        m.datasets.iter().collect::<Vec<_>>(),
        [(&"d".to_string(), &(9, vec!["c".to_string()]))]
    );
    assert_eq!(m.next_client, 10);
    // A created record with no graph before it adds nothing.
    let mut fresh = Model::default();
    fresh.apply(Record::Created(vec![(0, 1)]));
    assert!(fresh.tasks.is_empty());
}

/// A dataset published by a client that then left, the journal ending after the client's
/// `Releases` and before its `ClientLeft` (the scheduler killed in between): the client
/// is restored holding nothing, and the dataset's tasks must come back all the same. They
/// used to be restored with the client's graph and dropped at once as wanted by no one,
/// and the restart refused its journal: "key ... is neither in the graph nor held".
#[test]
fn a_dataset_keeps_its_tasks_when_a_client_restored_before_it_holds_none() {
    let path = crate::journal::tests::dir().join("j");
    let mut w = JournalWriter::open(&path, 0, crate::journal::Fsync::Never).unwrap();
    let both = vec!["x".to_string(), "y".to_string()];
    for r in [
        Record::ClientJoined {
            id: 1,
            name: "a".into(),
        },
        Record::Graph(vec![task("x", &[]), task("y", &["x"])]),
        Record::Created(vec![(0, 10), (1, 11)]),
        Record::Wants {
            client: 1,
            keys: both.clone(),
        },
        Record::Published {
            name: "answers".into(),
            client: 2,
            keys: both.clone(),
        },
        Record::Releases {
            client: 1,
            keys: both.clone(),
        },
    ] {
        w.append(&r).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let cfg = JournalConfig {
        path: path.clone(),
        fsync: crate::journal::Fsync::Never,
        grace: Duration::from_secs(60),
    };
    let restored = |server: &mut Server| {
        restore(server, &cfg).unwrap();
        server.core.validate();
        let ids: Vec<Option<TaskId>> = both.iter().map(|k| server.core.task_id(k)).collect();
        assert_eq!(ids, [Some(TaskId(10)), Some(TaskId(11))]);
        assert_eq!(
            server.datasets.keys().collect::<Vec<_>>(),
            [&"answers".to_string()]
        );
    };
    let new = || {
        Server::new(
            SchedulerCore::new(Default::default()),
            "tcp://127.0.0.1:1".into(),
            String::new(),
        )
    };
    restored(&mut new());
    // And again from the journal that restore compacted.
    restored(&mut new());
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

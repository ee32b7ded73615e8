//! What the journal's records add up to: graphs and the ids they got, failures, datasets.

use super::*;
use rask_proto::Datum;

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

//! `performance_report`: one self-contained HTML file of what a piece of work did.

mod common;

use common::{within, DEADLINE};
use rask::{Arg, Client, Graph, LocalCluster};

#[test]
fn a_report_shows_every_task_the_work_ran_and_needs_nothing_else() {
    within(DEADLINE, || {
        let cluster = LocalCluster::builder().n_workers(2).build().unwrap();
        let c = Client::for_cluster(cluster).unwrap();
        // Work before the report is not in it.
        let mut g = Graph::new();
        g.task("before-1", "inc", [Arg::from(1)]);
        c.compute(&g, &["before-1"]).unwrap()[0].wait().unwrap();
        let path = common::tmpfile("report.html");
        let sum = rask::performance_report(&c, &path, || {
            let mut g = Graph::new();
            let keys: Vec<String> = (0..20).map(|i| format!("work-{i}")).collect();
            for (i, k) in keys.iter().enumerate() {
                g.task(k, "inc", [Arg::from(i as i64)]);
            }
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            let fs = c.compute(&g, &refs).unwrap();
            c.gather(&fs)
                .unwrap()
                .iter()
                .map(|v| match v {
                    rask::Value::Int(i) => *i,
                    v => panic!("{v:?}"),
                })
                .sum::<i64>()
        })
        .unwrap();
        assert_eq!(
            sum,
            (1..=20).sum::<i64>(),
            "the work's own result comes back"
        );
        let html = std::fs::read_to_string(&path).unwrap();
        assert!(html.starts_with("<!doctype html>"), "{html}");
        for i in 0..20 {
            assert!(html.contains(&format!("data-key=\"work-{i}\"")), "work-{i}");
        }
        assert!(!html.contains("before-1"), "work from before the report");
        assert_eq!(html.matches("class=\"task\"").count(), 20);
        assert!(html.contains("<td>work</td><td>20</td>"), "the prefix row");
        assert_eq!(html.matches("class=\"worker\"").count(), 2);
        // Self-contained: nothing to fetch, nothing to run.
        for outside in ["http://", "https://", "<script", "<link"] {
            assert!(!html.contains(outside), "{outside} in the report");
        }
        assert!(html.contains("20 tasks in"), "{html}");
        let _ = std::fs::remove_file(&path);
    });
}

//! The logs of `rask scheduler`, `rask worker` and `cuda-worker` written to files: no
//! escape codes at the default level nor at debug; `RUST_LOG` and `RASK_LOG` both set the
//! level, and the start-up lines obey it; `--log-format json` (or its environment
//! variable) gives one JSON object per line, in a supervisor's workers too.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{eventually, tmpfile, within, Proc, DEADLINE, RASK};

const CUDA_WORKER: &str = env!("CARGO_BIN_EXE_cuda-worker");

/// The variables that would change what these tests look at, removed from a child's
/// environment so that the caller's own settings do not leak in.
const LOG_VARS: [&str; 5] = [
    "RUST_LOG",
    "RASK_LOG",
    "RASK_SCHEDULER_LOG_FORMAT",
    "RASK_WORKER_LOG_FORMAT",
    "RASK_CUDA_WORKER_LOG_FORMAT",
];

/// `program args…` with its standard error in `log`, the logging variables of this
/// process removed and `env` set.
fn logged(program: &str, args: &[&str], log: &Path, env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for v in LOG_VARS {
        cmd.env_remove(v);
    }
    let file = std::fs::File::create(log).expect("create a log file");
    Proc::new(
        cmd.envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}")),
    )
}

/// Starts `rask scheduler` on a free port with its standard error in `log`; returns it
/// and its address.
fn scheduler(log: &Path, args: &[&str], env: &[(&str, &str)]) -> (Proc, String) {
    let file = log.with_extension("address");
    let _ = std::fs::remove_file(&file);
    let path = file.to_str().unwrap();
    let mut all = vec!["scheduler", "--port", "0", "--scheduler-file", path];
    all.extend(args);
    let mut p = logged(RASK, &all, log, env);
    let mut addr = String::new();
    eventually("the scheduler writes its address", || {
        if let Ok(Some(status)) = p.0.try_wait() {
            panic!(
                "the scheduler exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        addr = std::fs::read_to_string(&file)
            .unwrap_or_default()
            .trim()
            .to_string();
        !addr.is_empty()
    });
    let _ = std::fs::remove_file(&file);
    (p, addr)
}

/// Runs a task on the cluster at `addr` with `workers` workers, shuts it down, and waits
/// for each of `procs` to end, successfully.
fn run_and_shut_down(addr: &str, workers: usize, procs: Vec<Proc>) {
    let c = common::connect_retrying(addr);
    c.wait_for_workers(workers).unwrap();
    let x = c.submit("inc", [rask::Arg::from(41)]).unwrap();
    assert_eq!(x.result_as::<i64>().unwrap(), 42);
    drop(x);
    c.shutdown().unwrap();
    for mut p in procs {
        let status = p.0.wait().expect("wait for a process");
        assert!(status.success(), "{status}");
    }
}

/// The logs of a scheduler and a worker, started with `env` and `args` (each's own), that
/// ran a task and were shut down: (the scheduler's, the worker's).
fn cluster_logs(
    name: &str,
    env: &[(&str, &str)],
    scheduler_args: &[&str],
    worker_args: &[&str],
) -> (String, String) {
    let (slog, wlog) = (
        tmpfile(&format!("{name}-s.log")),
        tmpfile(&format!("{name}-w.log")),
    );
    let (s, addr) = scheduler(&slog, scheduler_args, env);
    let mut args = vec!["worker", &addr, "--nthreads", "1", "--name", name];
    args.extend(worker_args);
    let w = logged(RASK, &args, &wlog, env);
    run_and_shut_down(&addr, 1, vec![w, s]);
    let read = |p: &Path| {
        let text = std::fs::read_to_string(p).expect("read a log");
        let _ = std::fs::remove_file(p);
        text
    };
    (read(&slog), read(&wlog))
}

fn assert_no_escape(what: &str, log: &str) {
    assert!(
        !log.contains('\x1b'),
        "escape codes in the {what}'s log:\n{log}"
    );
}

fn has_debug_lines(log: &str) -> bool {
    log.lines().any(|l| l.contains(" - DEBUG - "))
}

#[test]
fn text_logs_in_files_have_no_escape_codes_and_carry_the_start_up_lines() {
    within(DEADLINE, || {
        let (s, w) = cluster_logs("plain", &[], &[], &[]);
        assert_no_escape("scheduler", &s);
        assert_no_escape("worker", &w);
        // The start-up lines are log lines, as Dask's: `TIME - NAME - LEVEL - message`.
        let line = s
            .lines()
            .find(|l| l.contains("Scheduler at: tcp://127.0.0.1:"))
            .unwrap_or_else(|| panic!("no address line in:\n{s}"));
        assert!(
            line.contains(" - rask.scheduler - INFO -   Scheduler at: "),
            "{line}"
        );
        assert!(
            w.lines()
                .any(|l| l.contains(" - rask.worker - INFO -          Worker name: plain")),
            "{w}"
        );
        // Info is the default level.
        assert!(!has_debug_lines(&s), "{s}");
        assert!(!has_debug_lines(&w), "{w}");
    });
}

#[test]
fn rask_log_raises_the_level_and_debug_logs_have_no_escape_codes() {
    within(DEADLINE, || {
        let (s, w) = cluster_logs("raskdebug", &[("RASK_LOG", "debug")], &[], &[]);
        assert_no_escape("scheduler", &s);
        assert_no_escape("worker", &w);
        assert!(has_debug_lines(&s), "{s}");
        assert!(has_debug_lines(&w), "{w}");
    });
}

#[test]
fn rust_log_raises_the_level_and_wins_over_rask_log() {
    within(DEADLINE, || {
        let env = [("RUST_LOG", "debug"), ("RASK_LOG", "error")];
        let (s, w) = cluster_logs("rustdebug", &env, &[], &[]);
        assert_no_escape("scheduler", &s);
        assert!(has_debug_lines(&s), "{s}");
        assert!(has_debug_lines(&w), "{w}");
    });
}

#[test]
fn start_up_lines_obey_the_level() {
    within(DEADLINE, || {
        let (s, w) = cluster_logs("quietlevel", &[("RASK_LOG", "warn")], &[], &[]);
        assert!(!s.contains("Scheduler at"), "{s}");
        assert!(!w.contains("Worker name"), "{w}");
    });
}

/// The JSON object of each line of `log`, every one with a `level` and a `message`.
fn json_lines(what: &str, log: &str) -> Vec<serde_json::Value> {
    assert!(!log.trim().is_empty(), "the {what}'s log is empty");
    log.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("a line of the {what}'s log is not JSON ({e}): {l}"));
            assert!(v["level"].is_string(), "no level: {l}");
            assert!(v["message"].is_string(), "no message: {l}");
            v
        })
        .collect()
}

/// Whether one of `lines` is from `target` with a message containing `text`.
fn has(lines: &[serde_json::Value], target: &str, text: &str) -> bool {
    lines
        .iter()
        .any(|v| v["target"] == target && v["message"].as_str().is_some_and(|m| m.contains(text)))
}

#[test]
fn json_logs_are_one_object_per_line_by_option_or_environment() {
    within(DEADLINE, || {
        // The scheduler by its option, the worker by its environment variable; at debug
        // level, for lines inside spans and with fields.
        let env = [("RASK_LOG", "debug"), ("RASK_WORKER_LOG_FORMAT", "json")];
        let (s, w) = cluster_logs("json", &env, &["--log-format", "json"], &[]);
        let s = json_lines("scheduler", &s);
        let w = json_lines("worker", &w);
        assert!(has(&s, "rask.scheduler", "Scheduler at: tcp://"), "{s:?}");
        assert!(has(&w, "rask.worker", "Worker name: json"), "{w:?}");
        assert!(s.iter().any(|v| v["level"] == "DEBUG"), "{s:?}");
        assert!(w.iter().any(|v| v["level"] == "DEBUG"), "{w:?}");
    });
}

#[test]
fn cuda_worker_logs_json_and_so_do_its_workers() {
    within(DEADLINE, || {
        let (slog, clog) = (tmpfile("cw-s.log"), tmpfile("cw.log"));
        let (s, addr) = scheduler(&slog, &[], &[("RASK_LOG", "warn")]);
        let args = [
            addr.as_str(),
            "--sim-gpus",
            "2:64MiB",
            "--name",
            "cw",
            "--log-format",
            "json",
        ];
        let cw = logged(CUDA_WORKER, &args, &clog, &[]);
        run_and_shut_down(&addr, 2, vec![cw, s]);
        let log = std::fs::read_to_string(&clog).unwrap();
        let _ = std::fs::remove_file(&clog);
        let _ = std::fs::remove_file(&slog);
        let lines = json_lines("cuda-worker", &log);
        assert!(has(&lines, "rask.cuda-worker", "2 simulated GPUs"), "{log}");
        assert!(
            has(&lines, "rask.cuda-worker", "started the worker of"),
            "{log}"
        );
        // Its workers write to the same standard error, in the same format.
        for name in ["cw-gpu0", "cw-gpu1"] {
            assert!(
                has(&lines, "rask.worker", &format!("Worker name: {name}")),
                "{log}"
            );
        }
    });
}

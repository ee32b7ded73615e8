//! A GPU that fails for good (a sticky CUDA error, injected in simulated GPUs by
//! `RASK_SIM_FAULT`): its worker process leaves with an error naming the kernel, the task
//! runs again on another worker, and a task that kills `allowed_failures` workers errs
//! with the cause.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};

use common::{within, Proc, DEADLINE, RASK};
use rask::array::{Array, DType};
use rask::Client;

/// The op the faulty GPUs fail, and the fault.
const FAULT: &str = "array.matmul=illegal_address";

/// `rask worker` on a simulated GPU, its standard error captured (else discarded); with
/// the fault when `faulty`.
fn gpu_worker(addr: &str, name: &str, faulty: bool, capture: bool, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(RASK);
    cmd.args(["worker", addr, "--nthreads", "1", "--name", name])
        .args(["--device", "sim:0", "--device-memory-limit", "256MiB"])
        .args(extra)
        .env("RASK_LOG", "warn")
        .env_remove("RASK_SIM_FAULT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(if capture {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    if faulty {
        cmd.env("RASK_SIM_FAULT", FAULT);
    }
    Proc::new(cmd.spawn().expect("start rask worker"))
}

/// `x @ x` for a 128×128 array of 2.0: every element is 128 × 4.
fn product() -> Array {
    let x = Array::full(&[128, 128], &[128, 128], DType::F64, 2.0).unwrap();
    x.matmul(&x).unwrap()
}

#[test]
fn a_worker_whose_gpu_fails_for_good_leaves_and_its_task_runs_elsewhere() {
    within(DEADLINE, || {
        let (_s, addr) = common::scheduler(&[]);
        let mut bad = gpu_worker(&addr, "bad", true, true, &[]);
        let c = common::connect_retrying(&addr);
        common::eventually("the faulty worker joins", || {
            c.scheduler_info().unwrap().workers.len() == 1
        });
        // The product runs on the faulty worker (the only one): it fails for good there.
        let waiting = {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let c = Client::connect(&addr).unwrap();
                c.compute_array::<f64>(&product())
            })
        };
        let status = bad.0.wait().unwrap();
        let mut log = String::new();
        bad.0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        assert!(!status.success(), "the worker exited cleanly: {log}");
        assert!(log.contains("failed for good"), "{log}");
        assert!(log.contains("\"array.matmul\""), "{log}");
        assert!(log.contains("cuBLAS GEMM"), "the kernel is named: {log}");
        assert!(log.contains("ILLEGAL_ADDRESS"), "{log}");
        // A healthy worker joins: the task runs again there, and the result is exact.
        let _good = gpu_worker(&addr, "good", false, false, &[]);
        let got = waiting.join().unwrap().unwrap();
        assert_eq!(got.len(), 128 * 128);
        assert!(got.iter().all(|&v| v == 512.0), "{got:?}");
        common::eventually("the healthy worker reports the tasks it ran", || {
            common::tasks_run_by(&c, "good") >= 2
        });
    });
}

#[test]
fn a_task_that_kills_gpu_workers_errs_with_the_cause_and_their_supervisor_restarts_them() {
    within(DEADLINE, || {
        let (_s, addr) = common::scheduler(&[]);
        let _workers = gpu_worker(&addr, "w", true, false, &["--nworkers", "2"]);
        let c = common::connect_retrying(&addr);
        common::eventually("both workers join", || {
            c.scheduler_info().unwrap().workers.len() == 2
        });
        let err = c.compute_array::<f64>(&product()).unwrap_err().to_string();
        assert!(err.contains("killed worker"), "{err}");
        assert!(err.contains("3 workers"), "{err}");
        assert!(err.contains("the last: sim:0 failed for good"), "{err}");
        assert!(err.contains("\"array.matmul\""), "{err}");
        assert!(err.contains("ILLEGAL_ADDRESS"), "{err}");
        // The supervisor started fresh processes for the workers that failed.
        common::eventually("the workers are back", || {
            c.scheduler_info().unwrap().workers.len() == 2
        });
    });
}

//! Asking for a real GPU where there is none: `rask worker --device cuda:N` without a
//! CUDA driver, and `LocalCUDACluster::builder()` without GPUs. Each must end with an
//! error naming what is missing — never a panic, never a wait for ever. These run on
//! every machine without a GPU; where there is one they are skipped.

mod common;

use std::io::Read;

use common::{scheduler, within, DEADLINE};

#[test]
fn rask_worker_on_cuda_without_a_driver_names_it_and_exits_nonzero() {
    within(DEADLINE, || {
        if let Ok(n) = rask_device::cuda::device_count() {
            println!("SKIPPED: this machine has a CUDA driver ({n} devices)");
            return;
        }
        let (_s, addr) = scheduler(&[]);
        let mut worker = common::worker_reporting(&addr, "nogpu", &["--device", "cuda:0"]);
        let mut err = String::new();
        worker
            .0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = worker.0.wait().unwrap();
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(
            err.starts_with("Error: device cuda:0: no CUDA driver found: "),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");

        // It never joined: the scheduler has no worker to place GPU tasks on.
        let c = rask::Client::connect(&addr).unwrap();
        assert_eq!(c.scheduler_info().unwrap().workers.len(), 0);
    });
}

#[test]
fn a_local_cuda_cluster_without_gpus_is_refused_with_the_reason() {
    within(DEADLINE, || {
        if rask_device::discover::gpus().is_ok() {
            println!("SKIPPED: this machine has GPUs");
            return;
        }
        let built = rask::LocalCUDACluster::builder()
            .build()
            .map(drop)
            .map_err(|e| e.to_string());
        let err = built.expect_err("a LocalCUDACluster started without a GPU");
        assert!(err.starts_with("no GPUs: NVML is not available ("), "{err}");
        assert!(
            err.ends_with("; a LocalCUDACluster needs a GPU here, or simulated GPUs (sim_gpus)"),
            "{err}"
        );
    });
}

/// The way a cluster of real GPUs fails when NVML finds them but a worker cannot open
/// its GPU (a driver that does not match, a GPU another process holds exclusively): the
/// worker process exits before joining. `false` stands in for that worker here.
#[test]
fn a_gpu_worker_that_exits_before_joining_fails_the_build_instead_of_hanging() {
    within(DEADLINE, || {
        let built = rask::LocalCUDACluster::sim(1, 64 << 20)
            .worker_binary("false")
            .build()
            .map(drop)
            .map_err(|e| e.to_string());
        assert_eq!(
            built,
            Err(
                "worker process worker-0 (sim:0) exited before joining the scheduler \
                 (exit status: 1); its error is on standard error"
                    .to_string()
            )
        );
    });
}

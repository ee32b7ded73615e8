//! `cuda-worker`: one worker per (simulated) GPU, supervised; a clear refusal where there
//! is no GPU.

mod common;

use std::process::{Command, Stdio};

use common::{eventually, scheduler, within, Proc, DEADLINE};
use rask::Client;

const CUDA_WORKER: &str = env!("CARGO_BIN_EXE_cuda-worker");

#[test]
fn without_a_gpu_it_says_so_and_exits_nonzero() {
    within(DEADLINE, || {
        if rask_device::discover::gpus().is_ok() {
            println!("SKIPPED: this machine has GPUs");
            return;
        }
        let out = common::output(Command::new(CUDA_WORKER).arg("tcp://127.0.0.1:9"));
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no GPUs"), "{err}");
        assert!(err.contains("--sim-gpus"), "{err}");
    });
}

#[test]
fn simulated_gpus_get_a_worker_each_restarted_when_killed_and_stopped_on_sigterm() {
    within(DEADLINE, || {
        let (_s, addr) = scheduler(&[]);
        let mut cw = Proc::new(
            Command::new(CUDA_WORKER)
                .args([
                    &addr,
                    "--sim-gpus",
                    "2:64MiB",
                    "--nvlink",
                    "all",
                    "--name",
                    "t",
                ])
                .env("RASK_LOG", "warn")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let c = Client::connect(&addr).unwrap();
        c.wait_for_workers(2).unwrap();
        let info = c.scheduler_info().unwrap();
        // What is simulated says so.
        for w in &info.workers {
            assert!(
                w.device_name.starts_with("simulated GPU"),
                "{:?}",
                w.device_name
            );
        }
        let mut seen: Vec<(String, String, u64)> = info
            .workers
            .iter()
            .map(|w| (w.name.clone(), w.device.clone(), w.device_memory_limit))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                ("t-gpu0".to_string(), "sim:0".to_string(), 64 << 20),
                ("t-gpu1".to_string(), "sim:1".to_string(), 64 << 20)
            ]
        );

        // `rask info --scheduler` lists them, one line each, for scripts to read.
        let out = common::output(Command::new(common::RASK).args(["info", "--scheduler", &addr]));
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let tail: Vec<&str> = text.lines().rev().take(3).collect();
        let worker = |i: u32| {
            format!(
                "worker t-gpu{i} device=sim:{i} device_memory_limit=67108864 transport=auto \
                 ran=- spilled=- received=- device_name=\"simulated GPU (host memory, kernels \
                 run on the CPU)\""
            )
        };
        assert_eq!(
            tail,
            [worker(1), worker(0), format!("scheduler {addr}: 2 workers")],
            "{text}"
        );

        // A worker killed is replaced (a new worker with the same GPU).
        let victim = info.workers.iter().find(|w| w.device == "sim:1").unwrap();
        let (old_id, pid) = (victim.id, victim.pid);
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        eventually("the killed worker is replaced", || {
            let info = c.scheduler_info().unwrap();
            info.workers.len() == 2
                && info
                    .workers
                    .iter()
                    .any(|w| w.device == "sim:1" && w.id != old_id && w.pid != pid)
        });

        // SIGTERM stops every worker, and cuda-worker exits cleanly.
        let cw_pid = rustix::process::Pid::from_raw(cw.0.id() as i32).unwrap();
        rustix::process::kill_process(cw_pid, rustix::process::Signal::TERM).unwrap();
        let status = cw.0.wait().unwrap();
        assert!(status.success(), "{status}");
        eventually("the workers are gone", || {
            c.scheduler_info().unwrap().workers.is_empty()
        });
    });
}

//! Asking for a real GPU where there is none: `rask worker --device cuda:N` without a
//! CUDA driver, `LocalCUDACluster::builder()` without GPUs, and `ci/gpu-first-run.sh`.
//! Each must end with an error naming what is missing — never a panic, never a wait for
//! ever. These run on every machine without a GPU; where there is one they are skipped
//! (the script's, given a PATH without `nvidia-smi` or with a failing one, run anywhere).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// `ci/gpu-first-run.sh` run by bash with `path` as its PATH: exit code and every line it
/// printed, standard output and error together.
fn first_run_script(path: &Path) -> (Option<i32>, Vec<String>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/gpu-first-run.sh");
    let bash = which("bash").expect("bash on PATH");
    let out = common::output(Command::new(bash).arg(script).env("PATH", path));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (
        out.status.code(),
        text.lines().map(str::to_string).collect(),
    )
}

/// A program on this process's PATH.
fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// A directory to put on a script's PATH holding `dirname` (which the script needs to
/// find its directory) and the given programs, as shell scripts.
fn bin_dir(name: &str, programs: &[(&str, &str)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = common::tmpfile(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(
        which("dirname").expect("dirname on PATH"),
        dir.join("dirname"),
    )
    .unwrap();
    for (program, body) in programs {
        let p = dir.join(program);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

#[test]
fn the_gpu_first_run_script_says_in_one_line_that_there_is_no_gpu_and_fails() {
    within(DEADLINE, || {
        // No nvidia-smi at all: no driver installed.
        let dir = bin_dir("no-nvidia-smi", &[]);
        let (code, lines) = first_run_script(&dir);
        assert_eq!(code, Some(2), "{lines:?}");
        assert_eq!(
            lines,
            ["gpu-first-run: no NVIDIA GPU here (nvidia-smi not found); run this on a machine with one"]
        );

        // An nvidia-smi that cannot reach a driver, as where the kernel module is not
        // loaded: its first line is given as the reason.
        let dir = bin_dir(
            "failing-nvidia-smi",
            &[(
                "nvidia-smi",
                "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"; echo; exit 9",
            )],
        );
        let (code, lines) = first_run_script(&dir);
        assert_eq!(code, Some(2), "{lines:?}");
        assert_eq!(
            lines,
            ["gpu-first-run: no NVIDIA GPU here (nvidia-smi -L: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.); run this on a machine with one"]
        );
        let _ = std::fs::remove_dir_all(dir);
    });
}

#[test]
fn the_gpu_first_run_script_on_this_machine_stops_at_the_missing_gpu() {
    within(DEADLINE, || {
        if which("nvidia-smi").is_some() {
            println!("SKIPPED: this machine has nvidia-smi; the script would run in full");
            return;
        }
        // As a person would run it here, with this machine's PATH.
        let path = std::env::var_os("PATH").unwrap_or_default();
        let (code, lines) = first_run_script(Path::new(&path));
        assert_eq!(code, Some(2), "{lines:?}");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("no NVIDIA GPU here"), "{lines:?}");
        assert!(!lines[0].contains("panicked"), "{lines:?}");
    });
}

/// A step that fails stops the script with a `FAIL: <step>: <why>` line: here the first
/// step, given an nvidia-smi that reports one GPU and a driver too old for CUDA 13.
#[test]
fn a_failing_step_of_the_gpu_first_run_script_is_named_in_its_fail_line() {
    within(DEADLINE, || {
        let dir = bin_dir(
            "old-driver",
            &[(
                "nvidia-smi",
                r#"case "$1" in
-L) echo "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-3c1f4a2e-8d1b-4b9e-a2c7-0f5e6d7c8b9a)" ;;
--query-gpu=*) echo "0, NVIDIA A100-SXM4-40GB, GPU-3c1f4a2e-8d1b-4b9e-a2c7-0f5e6d7c8b9a, 40960 MiB, 00000000:07:00.0, 535.104.05, Disabled" ;;
*) exit 3 ;;
esac"#,
            )],
        );
        let mut path = std::ffi::OsString::from(&dir);
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        let (code, lines) = first_run_script(Path::new(&path));
        assert_eq!(code, Some(1), "{lines:?}");
        assert!(
            lines.contains(&"== nvidia-smi: the GPUs and the driver".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"1 GPUs, driver 535.104.05".to_string()),
            "{lines:?}"
        );
        assert_eq!(
            lines.last().map(String::as_str),
            Some(
                "FAIL: nvidia-smi: the GPUs and the driver: driver 535.104.05 is older than \
                 580: it refuses CUDA 13's PTX"
            ),
            "{lines:?}"
        );
        let _ = std::fs::remove_dir_all(dir);
    });
}

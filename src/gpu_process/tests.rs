//! The planning of `cuda-worker`'s workers, on a made-up two-socket machine with two
//! NVLinked GPUs: command lines, environments, CPUs and memory limits, checked whole.
//! Nothing here starts a process or asks NVML.

use super::*;

const GIB: u64 = 1 << 30;

fn args(extra: &[&str]) -> CudaWorkerArgs {
    let argv = ["cuda-worker", "tcp://10.0.0.1:8786"];
    CudaWorkerArgs::try_parse_from(argv.iter().chain(extra)).unwrap()
}

/// A two-socket machine of 128 CPUs with 256 GiB; this process may use every CPU.
fn host() -> Host {
    Host {
        name: "node7".into(),
        memory: 256 * GIB,
        cpus: Some((0..128).collect()),
        visible: None,
    }
}

/// Two NVLinked GPUs of different sizes, one per socket: NVML's view of them.
fn gpus() -> Vec<GpuInfo> {
    vec![
        GpuInfo {
            index: 0,
            name: "NVIDIA A100-SXM4-40GB".into(),
            uuid: "GPU-3c1f4a2e-8d1b-4b9e-a2c7-0f5e6d7c8b9a".into(),
            memory_total: 40 * GIB,
            pci_bus_id: "00000000:07:00.0".into(),
            nvlink_peers: vec![1],
            cpu_affinity: (0..64).collect(),
            mig: Vec::new(),
        },
        GpuInfo {
            index: 1,
            name: "NVIDIA A100-SXM4-80GB".into(),
            uuid: "GPU-b2d4e6f8-1a3c-4e5f-9b7d-2c4e6a8b0d1f".into(),
            memory_total: 80 * GIB,
            pci_bus_id: "00000000:87:00.0".into(),
            nvlink_peers: vec![0],
            cpu_affinity: (64..128).collect(),
            mig: Vec::new(),
        },
    ]
}

fn strs(p: &WorkerLaunch) -> Vec<&str> {
    p.args.iter().map(|a| a.to_str().unwrap()).collect()
}

fn gpu_env(uuid: &str) -> Vec<(String, String)> {
    vec![
        ("CUDA_VISIBLE_DEVICES".into(), uuid.into()),
        ("CUDA_DEVICE_ORDER".into(), "PCI_BUS_ID".into()),
    ]
}

#[test]
fn each_gpu_gets_a_worker_matched_by_uuid_near_its_cpus_with_80_percent_of_its_memory() {
    let gpus = gpus();
    let plans = gpu_plans(&args(&[]), &gpus, &host()).unwrap();
    let expected = |i: usize, name: &str, memory: u64, device_limit: u64, peer: &str| {
        let args: Vec<OsString> = [
            "worker",
            "tcp://10.0.0.1:8786",
            "--nthreads",
            "1",
            "--name",
            name,
            "--memory-limit",
            &memory.to_string(),
            "--device-memory-limit",
            &device_limit.to_string(),
            // Each worker sees only its own GPU, so it is always CUDA's device 0.
            "--device",
            "cuda:0",
            "--nvlink-peers",
            peer,
        ]
        .map(OsString::from)
        .into();
        WorkerLaunch {
            label: format!("cuda:{i} ({})", gpus[i].name),
            args,
            env: gpu_env(&gpus[i].uuid),
            cpus: gpus[i].cpu_affinity.clone(),
        }
    };
    // Host memory is shared out evenly; device memory is 80 % of each GPU's own.
    assert_eq!(
        plans,
        vec![
            expected(0, "node7-gpu0", 128 * GIB, 32 * GIB, "1"),
            expected(1, "node7-gpu1", 128 * GIB, 64 * GIB, "0"),
        ]
    );
}

#[test]
fn explicit_options_reach_every_worker() {
    let a = args(&[
        "--device-memory-limit",
        "30GiB",
        "--memory-limit",
        "64GiB",
        "--nthreads",
        "4",
        "--name",
        "gpunode",
        "--resources",
        "fast=2,disk=1",
        "--resources",
        "licence=1",
        "--transport",
        "tcp",
        "--auth-file",
        "/etc/rask/secret",
        "--host",
        "0.0.0.0",
        "--contact-address",
        "node7.example",
        "--death-timeout",
        "120",
    ]);
    let plans = gpu_plans(&a, &gpus(), &host()).unwrap();
    let tail = |name: &'static str, peer: &'static str| {
        vec![
            "worker",
            "tcp://10.0.0.1:8786",
            "--nthreads",
            "4",
            "--name",
            name,
            "--memory-limit",
            "68719476736",
            "--resources",
            "fast=2,disk=1",
            "--resources",
            "licence=1",
            "--transport",
            "tcp",
            "--host",
            "0.0.0.0",
            "--contact-address",
            "node7.example",
            "--death-timeout",
            "120",
            "--auth-file",
            "/etc/rask/secret",
            "--device-memory-limit",
            "32212254720",
            "--device",
            "cuda:0",
            "--nvlink-peers",
            peer,
        ]
    };
    assert_eq!(strs(&plans[0]), tail("gpunode-gpu0", "1"));
    assert_eq!(strs(&plans[1]), tail("gpunode-gpu1", "0"));
    assert_eq!(
        plans[1].env,
        gpu_env("GPU-b2d4e6f8-1a3c-4e5f-9b7d-2c4e6a8b0d1f")
    );
}

#[test]
fn a_fractional_limit_is_of_each_gpus_memory_and_of_the_hosts() {
    let a = args(&["--device-memory-limit", "0.5", "--memory-limit", "0.25"]);
    let plans = gpu_plans(&a, &gpus(), &host()).unwrap();
    let limits: Vec<(&str, &str)> = plans
        .iter()
        .map(|p| {
            let s = strs(p);
            let after = |k: &str| s[s.iter().position(|a| *a == k).unwrap() + 1];
            (after("--memory-limit"), after("--device-memory-limit"))
        })
        .collect();
    // 64 GiB of host memory each; 20 GiB of the 40 GiB GPU, 40 GiB of the 80 GiB one.
    assert_eq!(
        limits,
        [
            ("68719476736", "21474836480"),
            ("68719476736", "42949672960")
        ]
    );
}

#[test]
fn limits_are_bytes_or_fractions_up_to_one_and_never_zero() {
    let parse = |s: &str| s.parse::<Limit>().map_err(|e| e.to_string());
    assert_eq!(parse("0.8"), Ok(Limit::Fraction(0.8)));
    assert_eq!(parse("1"), Ok(Limit::Fraction(1.0)));
    assert_eq!(parse("2"), Ok(Limit::Bytes(2)));
    assert_eq!(parse("512MiB"), Ok(Limit::Bytes(512 << 20)));
    assert_eq!(parse("0.5GiB"), Ok(Limit::Bytes(512 << 20)));
    assert_eq!(parse("auto"), Ok(Limit::Auto));
    assert_eq!(Limit::Fraction(0.8).of(40 * GIB), 32 * GIB);
    assert_eq!(Limit::Bytes(7).of(40 * GIB), 7);
    assert!(parse("0").unwrap_err().contains("0 bytes"));
    assert!(parse("lots").is_err());
    // Refused by the command line, before anything starts.
    let argv = [
        "cuda-worker",
        "tcp://10.0.0.1:8786",
        "--device-memory-limit",
        "0",
    ];
    assert!(CudaWorkerArgs::try_parse_from(argv).is_err());
}

#[test]
fn workers_stay_inside_the_cpus_this_process_was_given() {
    // Started under `taskset -c 8-15,64-71`: each worker keeps to its GPU's CPUs
    // among those, never the ones outside.
    let h = Host {
        cpus: Some((8..16).chain(64..72).collect()),
        ..host()
    };
    let plans = gpu_plans(&args(&[]), &gpus(), &h).unwrap();
    assert_eq!(plans[0].cpus, (8..16).collect::<Vec<_>>());
    assert_eq!(plans[1].cpus, (64..72).collect::<Vec<_>>());

    // None of GPU 1's CPUs is allowed: its worker is not pinned (pinning it there
    // would be refused, and the worker never started).
    let h = Host {
        cpus: Some((0..8).collect()),
        ..host()
    };
    let plans = gpu_plans(&args(&[]), &gpus(), &h).unwrap();
    assert_eq!(plans[0].cpus, (0..8).collect::<Vec<_>>());
    assert_eq!(plans[1].cpus, Vec::<usize>::new());
}

#[test]
fn simulated_gpus_get_their_capacity_and_topology_without_cuda_settings() {
    let a = args(&["--sim-gpus", "2:64MiB", "--nvlink", "all", "--name", "t"]);
    let topology = Topology::parse("all", 2).unwrap();
    let plans = sim_plans(&a, 2, 64 << 20, &topology, &host()).unwrap();
    let expected = |i: &'static str, peer: &'static str| {
        let name = format!("t-gpu{i}");
        let device = format!("sim:{i}");
        let args: Vec<OsString> = [
            "worker",
            "tcp://10.0.0.1:8786",
            "--nthreads",
            "1",
            "--name",
            &name,
            "--memory-limit",
            "137438953472",
            "--device-memory-limit",
            "67108864",
            "--device",
            &device,
            "--nvlink-peers",
            peer,
        ]
        .map(OsString::from)
        .into();
        WorkerLaunch {
            label: device.clone(),
            args,
            env: Vec::new(),
            cpus: Vec::new(),
        }
    };
    assert_eq!(plans, vec![expected("0", "1"), expected("1", "0")]);

    let a = args(&["--sim-gpus", "2:64MiB", "--device-memory-limit", "0.5"]);
    let plans = sim_plans(&a, 2, 64 << 20, &Topology::none(), &host()).unwrap();
    assert_eq!(
        strs(&plans[1])[8..],
        ["--device-memory-limit", "33554432", "--device", "sim:1"]
    );
}

#[test]
fn a_bad_resource_fails_planning_not_every_worker() {
    let err = gpu_plans(&args(&["--resources", "fast"]), &gpus(), &host()).unwrap_err();
    assert_eq!(err.to_string(), "resource \"fast\": expected NAME=AMOUNT");
}

#[test]
fn cpu_lists_print_as_ranges() {
    assert_eq!(cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
    assert_eq!(cpu_list(&[5]), "5");
    assert_eq!(cpu_list(&[]), "");
}

#[test]
fn only_the_gpus_cuda_visible_devices_names_get_workers_in_its_order() {
    let a = args(&[]);
    let with = |visible: &str| Host {
        visible: Some(visible.into()),
        ..host()
    };
    let gpus = gpus();
    let labels =
        |plans: &[WorkerLaunch]| -> Vec<String> { plans.iter().map(|p| p.label.clone()).collect() };

    // An index: only that GPU, with all of the host's memory for its one worker.
    let plans = plans_of(&a, &with("1"), || Ok(gpus.clone())).unwrap();
    assert_eq!(labels(&plans), ["cuda:1 (NVIDIA A100-SXM4-80GB)"]);
    assert_eq!(plans[0].env, gpu_env(&gpus[1].uuid));
    let args = strs(&plans[0]);
    assert_eq!(args[5], "node7-gpu1");
    assert_eq!(args[7], (256 * GIB).to_string());

    // UUIDs (whole or a unique prefix) and indices mixed, in the order given.
    let plans = plans_of(&a, &with("GPU-b2d4, 0"), || Ok(gpus.clone())).unwrap();
    assert_eq!(
        labels(&plans),
        [
            "cuda:1 (NVIDIA A100-SXM4-80GB)",
            "cuda:0 (NVIDIA A100-SXM4-40GB)"
        ]
    );
    let plans = plans_of(&a, &with(&gpus[0].uuid), || Ok(gpus.clone())).unwrap();
    assert_eq!(labels(&plans), ["cuda:0 (NVIDIA A100-SXM4-40GB)"]);

    // Unset: every GPU.
    let plans = plans_of(&a, &host(), || Ok(gpus.clone())).unwrap();
    assert_eq!(plans.len(), 2);

    // What names no GPU, or one twice, or hides them all, is refused naming it.
    for (visible, why) in [
        ("2", "\"2\" names no GPU of this machine"),
        ("GPU-ffff", "\"GPU-ffff\" names no GPU"),
        ("GPU-", "more than one"),
        ("0,GPU-3c1f", "a second time"),
        ("", "hides every GPU"),
        ("-1", "hides every GPU"),
        ("MIG-1234", "MIG instances are not supported"),
    ] {
        let e = plans_of(&a, &with(visible), || Ok(gpus.clone()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(why) && e.contains("CUDA_VISIBLE_DEVICES"),
            "{visible:?}: {e}"
        );
    }
}

#[test]
fn auto_memory_is_shared_out_and_a_fraction_is_of_all_of_it() {
    let gpus = gpus();
    let mem = |extra: &[&str]| -> Vec<String> {
        gpu_plans(&args(extra), &gpus, &host())
            .unwrap()
            .iter()
            .map(|p| strs(p)[7].to_string())
            .collect()
    };
    let half = (128 * GIB).to_string();
    assert_eq!(mem(&[]), [half.clone(), half.clone()]);
    assert_eq!(mem(&["--memory-limit", "auto"]), [half.clone(), half]);
    let quarter = (64 * GIB).to_string();
    assert_eq!(mem(&["--memory-limit", "0.25"]), [quarter.clone(), quarter]);
    let four = (4u64 << 30).to_string();
    assert_eq!(mem(&["--memory-limit", "4GiB"]), [four.clone(), four]);
}

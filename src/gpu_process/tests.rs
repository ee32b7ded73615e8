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

/// The devices of `gpus` that get a worker when `CUDA_VISIBLE_DEVICES` is unset.
fn all(gpus: Vec<GpuInfo>) -> Vec<GpuTarget> {
    visible_devices(gpus, None).unwrap()
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
fn each_gpu_gets_a_worker_matched_by_uuid_near_its_cpus_with_its_host_memory_share() {
    let gpus = gpus();
    let plans = gpu_plans(&args(&[]), &all(gpus.clone()), &host()).unwrap();
    let expected = |i: usize, name: &str, memory: u64, peer: &str| {
        let args: Vec<OsString> = [
            "worker",
            "tcp://10.0.0.1:8786",
            "--nthreads",
            "1",
            "--name",
            name,
            "--memory-limit",
            &memory.to_string(),
            // No device memory limit: the worker takes 80 % of what is free when it
            // opens its GPU (another process's memory is not its to count on).
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
    // Host memory is shared out evenly.
    assert_eq!(
        plans,
        vec![
            expected(0, "node7-gpu0", 128 * GIB, "1"),
            expected(1, "node7-gpu1", 128 * GIB, "0"),
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
        "--log-format",
        "json",
    ]);
    let plans = gpu_plans(&a, &all(gpus()), &host()).unwrap();
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
            "--log-format",
            "json",
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
    let plans = gpu_plans(&a, &all(gpus()), &host()).unwrap();
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
    let plans = gpu_plans(&args(&[]), &all(gpus()), &h).unwrap();
    assert_eq!(plans[0].cpus, (8..16).collect::<Vec<_>>());
    assert_eq!(plans[1].cpus, (64..72).collect::<Vec<_>>());

    // None of GPU 1's CPUs is allowed: its worker is not pinned (pinning it there
    // would be refused, and the worker never started).
    let h = Host {
        cpus: Some((0..8).collect()),
        ..host()
    };
    let plans = gpu_plans(&args(&[]), &all(gpus()), &h).unwrap();
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
    let err = gpu_plans(&args(&["--resources", "fast"]), &all(gpus()), &host()).unwrap_err();
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
        (
            "MIG-1234",
            "\"MIG-1234\" names no MIG instance of this machine",
        ),
        (
            "nvidia0",
            "neither a GPU index, a GPU UUID (GPU-…) nor a MIG instance UUID",
        ),
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
        gpu_plans(&args(extra), &all(gpus.clone()), &host())
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

const MIB: u64 = 1 << 20;

/// The same machine with GPU 0 in MIG mode, split into a 3g.20gb and a 2g.10gb instance
/// (NVML's slots 1 and 2; their memory as an A100-40GB reports it).
fn mig_gpus() -> Vec<GpuInfo> {
    let mut gpus = gpus();
    gpus[0].mig = vec![
        MigInfo {
            index: 1,
            uuid: "MIG-5f0c1a7e-2b3d-5e8f-9a1b-3c5d7e9f1a2b".into(),
            memory_total: 19_968 * MIB,
        },
        MigInfo {
            index: 2,
            uuid: "MIG-a9b8c7d6-e5f4-5a3b-8c2d-1e0f9a8b7c6d".into(),
            memory_total: 9_856 * MIB,
        },
    ];
    gpus
}

use rask_device::discover::MigInfo;

fn labels(plans: &[WorkerLaunch]) -> Vec<String> {
    plans.iter().map(|p| p.label.clone()).collect()
}

#[test]
fn a_gpu_in_mig_mode_gets_a_worker_per_instance_with_its_memory_over_tcp_and_no_peers() {
    let gpus = mig_gpus();
    let plans = plans_of(&args(&[]), &host(), || Ok(gpus.clone())).unwrap();
    let mig = |i: usize| gpus[0].mig[i].clone();
    let expected_mig = |m: MigInfo, name: &str| {
        // The host's memory shared by three workers; the device limit is the worker's
        // (80 % of what its instance has free at open).
        let args: Vec<OsString> = [
            "worker",
            "tcp://10.0.0.1:8786",
            "--nthreads",
            "1",
            "--name",
            name,
            "--memory-limit",
            &(256 * GIB / 3).to_string(),
            // No CUDA IPC between MIG instances: through the host, over tcp.
            "--transport",
            "tcp",
            "--device",
            "cuda:0",
        ]
        .map(OsString::from)
        .into();
        WorkerLaunch {
            label: format!("cuda:0 MIG {} (NVIDIA A100-SXM4-40GB)", m.index),
            args,
            env: gpu_env(&m.uuid),
            // The parent GPU's CPUs.
            cpus: (0..64).collect(),
        }
    };
    assert_eq!(plans.len(), 3);
    assert_eq!(plans[0], expected_mig(mig(0), "node7-gpu0-mig1"));
    assert_eq!(plans[1], expected_mig(mig(1), "node7-gpu0-mig2"));
    // GPU 1 is whole, but its NVLink peer is in MIG mode: peer access is not supported
    // there, so it has no peers left; its transport is the default.
    assert_eq!(plans[2].label, "cuda:1 (NVIDIA A100-SXM4-80GB)");
    assert_eq!(plans[2].env, gpu_env(&gpus[1].uuid));
    assert_eq!(
        strs(&plans[2])[5..],
        [
            "node7-gpu1",
            "--memory-limit",
            &(256 * GIB / 3).to_string(),
            "--device",
            "cuda:0",
        ]
    );
}

#[test]
fn mig_instances_keep_tcp_and_their_own_fraction_whatever_the_options() {
    let a = args(&["--device-memory-limit", "0.5", "--transport", "shm"]);
    let plans = gpu_plans(&a, &all(mig_gpus()), &host()).unwrap();
    let after = |p: &WorkerLaunch, k: &str| -> String {
        let s = strs(p);
        s[s.iter().position(|a| *a == k).unwrap() + 1].to_string()
    };
    let got: Vec<(String, String)> = plans
        .iter()
        .map(|p| (after(p, "--transport"), after(p, "--device-memory-limit")))
        .collect();
    assert_eq!(
        got,
        [
            ("tcp".to_string(), (9_984 * MIB).to_string()),
            ("tcp".to_string(), (4_928 * MIB).to_string()),
            // The whole GPU keeps the transport asked for.
            ("shm".to_string(), (40 * GIB).to_string()),
        ]
    );
    // Asked once each: a worker refuses --transport given twice.
    for p in &plans {
        assert_eq!(strs(p).iter().filter(|a| **a == "--transport").count(), 1);
    }
}

#[test]
fn cuda_visible_devices_selects_mig_instances_by_uuid_or_all_of_a_gpus_by_index_or_uuid() {
    let gpus = mig_gpus();
    let select = |visible: &str| -> Result<Vec<String>, String> {
        visible_devices(gpus.clone(), Some(visible))
            .map(|ts| ts.iter().map(|t| t.uuid().to_string()).collect())
            .map_err(|e| e.to_string())
    };
    let (m1, m2) = (gpus[0].mig[0].uuid.clone(), gpus[0].mig[1].uuid.clone());
    let g1 = gpus[1].uuid.clone();
    // One instance by UUID or a unique prefix, in the order given.
    assert_eq!(select(&m2), Ok(vec![m2.clone()]));
    assert_eq!(select("MIG-a9b8, 1"), Ok(vec![m2.clone(), g1.clone()]));
    // GPU 0's index or UUID: all of its instances.
    assert_eq!(select("0"), Ok(vec![m1.clone(), m2.clone()]));
    assert_eq!(select("1,GPU-3c1f"), Ok(vec![g1, m1.clone(), m2.clone()]));

    // The plans of a selected instance.
    let h = Host {
        visible: Some(m1.clone()),
        ..host()
    };
    let plans = plans_of(&args(&[]), &h, || Ok(gpus.clone())).unwrap();
    assert_eq!(labels(&plans), ["cuda:0 MIG 1 (NVIDIA A100-SXM4-40GB)"]);
    assert_eq!(plans[0].env, gpu_env(&m1));
    assert_eq!(strs(&plans[0])[7], (256 * GIB).to_string());

    for (visible, why) in [
        (
            "0,MIG-5f0c",
            "\"MIG-5f0c\" names cuda:0 MIG 1 (NVIDIA A100-SXM4-40GB) a second time",
        ),
        (
            "MIG-ffff",
            "\"MIG-ffff\" names no MIG instance of this machine",
        ),
        (
            "MIG-",
            "\"MIG-\" is a prefix of more than one MIG instance's UUID",
        ),
        // A MIG UUID is not a GPU UUID.
        ("GPU-5f0c", "\"GPU-5f0c\" names no GPU of this machine"),
    ] {
        let e = select(visible).unwrap_err();
        assert!(
            e.starts_with(&format!("CUDA_VISIBLE_DEVICES={visible:?}: ")) && e.contains(why),
            "{visible:?}: {e}"
        );
        // What there is to choose from is listed, instances by UUID.
        if why.contains("names no") {
            assert!(
                e.contains(&format!("cuda:0 MIG 2 (NVIDIA A100-SXM4-40GB) {m2}")),
                "{e}"
            );
        }
    }
}

#[test]
fn without_mig_nvlink_peers_and_ipc_are_kept() {
    let ts = all(gpus());
    let got: Vec<(Vec<u32>, bool, String)> = ts
        .iter()
        .map(|t| (t.nvlink_peers().to_vec(), t.ipc(), t.name_suffix()))
        .collect();
    assert_eq!(
        got,
        [
            (vec![1], true, "gpu0".to_string()),
            (vec![0], true, "gpu1".to_string())
        ]
    );
    let p = GpuProcess::new(&ts[0], None, None);
    assert_eq!(p.transport(None), None);
    let mig = all(mig_gpus());
    let p = GpuProcess::new(&mig[0], None, None);
    assert_eq!(
        (p.nvlink.clone(), p.ipc, p.transport(None)),
        (Vec::new(), false, Some(rask_transport::TransportMode::Tcp))
    );
}

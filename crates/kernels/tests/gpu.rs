//! Every device plan on a real CUDA GPU against the CPU ops, with the same cases as the
//! host runner (tests/plans.rs), and a user's kernel by its calling convention.
//!
//! NEEDS A GPU: without a CUDA driver (or without NVRTC) these skip with the reason printed;
//! with RASK_REQUIRE_GPU=1 they fail instead.

mod common;

use common::{assert_matches, cases, elems, Rng};
use rask_kernels::chunk::Chunk;
use rask_kernels::gpu::Gpu;
use rask_kernels::{plan, plan_exactness, ulps_apart, Exactness, Registry};
use rask_proto::Value;

fn gpu() -> Option<Gpu> {
    match Gpu::open(0) {
        Ok(g) => {
            println!("running on {} ({})", g.name(), g.arch());
            Some(g)
        }
        Err(e) => {
            assert!(
                std::env::var("RASK_REQUIRE_GPU").as_deref() != Ok("1"),
                "RASK_REQUIRE_GPU=1 but no GPU to run on: {e}"
            );
            println!("SKIPPED (needs a CUDA GPU): {e}");
            None
        }
    }
}

#[test]
fn every_plan_on_the_gpu_computes_what_the_cpu_op_computes() {
    let Some(mut gpu) = gpu() else { return };
    println!("{}", gpu.kernels().describe());
    assert!(gpu.kernels().ready(), "{}", gpu.kernels().describe());
    let registry = Registry::builtin();
    let mut rng = Rng::new();
    for (op, args) in cases(&mut rng) {
        let p = plan::plan(&op, &args).unwrap();
        let got = gpu.run(&p).unwrap_or_else(|e| panic!("{op}: {e}"));
        let want = registry.call(&op, &Value::List(args.clone())).unwrap();
        assert_matches(&op, &args, &got, &Chunk::from_value(&want).unwrap());
    }
}

/// Each plan's result against its CPU twin's, held to what the kernels promise
/// (`rask_kernels::exactness`): bit for bit, within n ulp, or (cuBLAS) a tolerance.
#[test]
fn every_plan_on_the_gpu_keeps_its_exactness_promise() {
    let Some(mut gpu) = gpu() else { return };
    let mut rng = Rng::new();
    let mut exact = 0;
    for (op, args) in cases(&mut rng) {
        let p = plan::plan(&op, &args).unwrap();
        let got = gpu.run(&p).unwrap_or_else(|e| panic!("{op}: {e}"));
        let twin = plan::run_on_host(&p).unwrap_or_else(|e| panic!("{op}: {e}"));
        let promise = plan_exactness(&p);
        let what = format!("{op} ({}; {promise:?})", p.kernels());
        match promise {
            Exactness::Exact => {
                exact += 1;
                assert_eq!(got.bytes, twin.bytes, "{what}: not bit for bit the twin's");
            }
            Exactness::Ulps(n) => {
                let f32s = got.dtype == rask_proto::DType::F32;
                for (i, (a, b)) in elems(&got).iter().zip(elems(&twin)).enumerate() {
                    let d = ulps_apart(*a, b, f32s);
                    assert!(d <= n as u64, "{what}: element {i}: {a} vs {b}, {d} ulp");
                }
            }
            Exactness::Tolerance => assert_matches(&op, &args, &got, &twin),
        }
    }
    assert!(exact > 10, "{exact} exact plans");
}

#[test]
fn a_users_kernel_runs_on_the_gpu() {
    let Some(mut gpu) = gpu() else { return };
    let src = "extern \"C\" __global__ void scale_shift_f32(const float* x, float* y, \
               unsigned long long n, float a, float b) { \
               for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; \
               i < n; i += (unsigned long long)blockDim.x * gridDim.x) y[i] = a * x[i] + b; }";
    let mut rng = Rng::new();
    let x = rng.chunk(rask_proto::DType::F32, &[70, 33]);
    let p = plan::custom(
        src,
        "scale_shift_f32",
        &[x.clone(), Value::Float(2.0), Value::Float(-1.0)],
    )
    .unwrap();
    let got = gpu.run(&p).unwrap();
    let x = Chunk::from_value(&x).unwrap();
    let want: Vec<f32> = x
        .elems::<f32>()
        .unwrap()
        .iter()
        .map(|v| 2.0 * v - 1.0)
        .collect();
    assert_eq!(got.elems::<f32>().unwrap().as_ref(), &want[..]);
}

#[test]
fn a_kernel_that_does_not_compile_reports_nvrtcs_log_from_the_gpu() {
    let Some(mut gpu) = gpu() else { return };
    let src = "extern \"C\" __global__ void broken_f32(const float* x, float* y, unsigned long long n) { y[0] = nope; }";
    let mut rng = Rng::new();
    let x = rng.chunk(rask_proto::DType::F32, &[4]);
    let p = plan::custom(src, "broken_f32", &[x]).unwrap();
    let e = gpu.run(&p).unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
}

#[test]
fn without_a_driver_opening_a_gpu_is_an_error_not_a_panic() {
    if rask_device::cuda::driver().is_ok() {
        println!("SKIPPED: a CUDA driver is present");
        return;
    }
    let e = Gpu::open(0).unwrap_err().to_string();
    assert!(e.contains("driver"), "{e}");
}

#[test]
fn without_a_driver_a_gpu_thread_is_an_error_not_a_panic() {
    if rask_device::cuda::driver().is_ok() {
        println!("SKIPPED: a CUDA driver is present");
        return;
    }
    let pool = rask_device::MemoryPool::new(rask_proto::DeviceLoc::cuda(0), 1 << 30);
    let e = rask_kernels::gpu::GpuThread::spawn(0, pool)
        .unwrap_err()
        .to_string();
    assert!(e.contains("driver"), "{e}");
}

/// Outputs stay in the GPU's memory, accounted in its pool: a second op reads the first's
/// output in place, nothing is downloaded until asked, memory is given back when values are
/// dropped, and a plan the pool cannot hold is refused as the device being full.
#[test]
fn values_stay_in_gpu_memory_between_ops() {
    use rask_kernels::Accelerator;
    if gpu().is_none() {
        return;
    }
    let pool = rask_device::MemoryPool::new(rask_proto::DeviceLoc::cuda(0), 64 << 20);
    let gpu = rask_kernels::gpu::GpuThread::spawn(0, pool.clone()).unwrap();
    let registry = Registry::builtin();
    let n = 1 << 16;
    let x = Chunk::from_elems(vec![n], &(0..n).map(|i| i as f64).collect::<Vec<_>>())
        .unwrap()
        .to_value();
    let binary = |a: Value| vec![Value::Str("mul".into()), a, Value::Float(2.0)];
    let y = gpu
        .try_run(&registry, "array.binary", &binary(x.clone()))
        .unwrap()
        .unwrap();
    assert!(y.on_device(), "{y:?}");
    assert_eq!(pool.used(), n * 8);
    let z = gpu
        .try_run(&registry, "array.binary", &binary(y.clone()))
        .unwrap()
        .unwrap();
    assert_eq!(
        gpu.downloaded(),
        0,
        "the second op read the first's output in place"
    );
    let got = Chunk::from_value(&z.to_host().unwrap()).unwrap();
    let expect: Vec<f64> = (0..n).map(|i| i as f64 * 4.0).collect();
    assert_eq!(got.elems::<f64>().unwrap().as_ref(), &expect[..]);
    assert_eq!(gpu.downloaded(), n * 8);
    drop((y, z));
    assert_eq!(pool.used(), 0);

    // A plan that does not fit the device's account is refused before it allocates
    // anything (its worker spills and runs it again, or runs it on the CPU).
    let small = rask_device::MemoryPool::new(rask_proto::DeviceLoc::cuda(0), 1024);
    let tight = rask_kernels::gpu::GpuThread::spawn(0, small.clone()).unwrap();
    let want = plan::plan("array.binary", &binary(x.clone()))
        .unwrap()
        .device_bytes(|_| false);
    assert!(want > 2 * n * 8 - 1);
    let e = tight
        .try_run(&registry, "array.binary", &binary(x))
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(e, rask_kernels::OpError::DeviceFull { needed, .. } if needed == want),
        "{e}"
    );
    assert_eq!(small.used(), 0);
}

/// CUDA IPC between two processes (as between two GPU workers): this process keeps a value
/// in its GPU's memory and exports its handle; a child process (this test binary again)
/// imports it into its own GPU's memory and reports what it read. CUDA IPC needs two
/// processes: a handle cannot be opened by the process that exported it.
#[test]
fn values_cross_processes_by_cuda_ipc() {
    use rask_kernels::Accelerator;
    if gpu().is_none() {
        return;
    }
    let pool = rask_device::MemoryPool::new(rask_proto::DeviceLoc::cuda(0), 64 << 20);
    let gpu = rask_kernels::gpu::GpuThread::spawn(0, pool).unwrap();
    let n = 1 << 16;
    let x = Chunk::from_elems(vec![n], &(0..n).map(|i| i as f64).collect::<Vec<_>>())
        .unwrap()
        .to_value();
    let args = vec![Value::Str("mul".into()), x, Value::Float(3.0)];
    let y = gpu
        .try_run(&Registry::builtin(), "array.binary", &args)
        .unwrap()
        .unwrap();
    let (_, _, Value::Device(d)) = rask_kernels::chunk::chunk_parts(&y).unwrap() else {
        panic!("the output is not in the GPU's memory: {y:?}")
    };
    let e = d
        .data()
        .ipc_export()
        .expect("CUDA memory has IPC handles")
        .unwrap();
    assert_eq!(e.handle.len(), 64);
    let hex: String = e.handle.iter().map(|b| format!("{b:02x}")).collect();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args([
            "--exact",
            "ipc_importer_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RASK_IPC_IMPORT", format!("{hex}:{}:{}", e.offset, d.len()));
    // The child on another GPU (two workers of one host, each seeing its own GPU):
    // `RASK_IPC_CHILD_DEVICES=1` with this process on `CUDA_VISIBLE_DEVICES=0`.
    if let Ok(devices) = std::env::var("RASK_IPC_CHILD_DEVICES") {
        println!("the importing child sees CUDA_VISIBLE_DEVICES={devices}");
        child.env("CUDA_VISIBLE_DEVICES", devices);
    }
    let out = child.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expect: f64 = (0..n).map(|i| i as f64 * 3.0).sum();
    assert!(
        stdout.contains(&format!("IMPORTED on the device, sum {expect}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("IMPORTED to the host, sum {expect}")),
        "{stdout}"
    );
    assert_eq!(
        gpu.downloaded(),
        0,
        "the exporter's bytes never came to the host"
    );
    drop(y);
}

/// The importing side of `values_cross_processes_by_cuda_ipc`, which runs it in a child
/// process (`--ignored --exact`). Ignored in a normal run, so that it is not counted as a
/// test that passed: there it would have nothing to import.
#[test]
#[ignore = "the child process of values_cross_processes_by_cuda_ipc, which runs it"]
fn ipc_importer_child() {
    use rask_kernels::Accelerator;
    let Ok(spec) = std::env::var("RASK_IPC_IMPORT") else {
        println!(
            "SKIPPED: nothing to import (values_cross_processes_by_cuda_ipc runs this test \
             with RASK_IPC_IMPORT set)"
        );
        return;
    };
    let mut parts = spec.split(':');
    let hex = parts.next().unwrap();
    let handle: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let offset: u64 = parts.next().unwrap().parse().unwrap();
    let len: u64 = parts.next().unwrap().parse().unwrap();
    let buf = rask_proto::IpcBuffer {
        device: rask_proto::DeviceLoc::cuda(0),
        export: rask_proto::IpcExport { handle, offset },
        len,
        loan: None,
    };
    let sum = |v: &Value| -> f64 {
        let b = v.to_host().unwrap();
        let Value::Bytes(b) = b else { panic!("{b:?}") };
        b.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .sum()
    };
    for (pool, place) in [(64 << 20, "on the device"), (1024, "to the host")] {
        let pool = rask_device::MemoryPool::new(rask_proto::DeviceLoc::cuda(0), pool);
        let gpu = rask_kernels::gpu::GpuThread::spawn(0, pool.clone()).unwrap();
        let v = gpu.import(&buf).unwrap();
        assert_eq!(v.on_device(), place == "on the device");
        assert_eq!(pool.used(), v.device_bytes());
        println!("IMPORTED {place}, sum {}", sum(&v));
    }
}

/// The child-process helper is not a test of its own: a normal run leaves it out (it is
/// reported as ignored, not as passed).
#[test]
fn the_ipc_child_is_ignored_in_a_normal_run() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--list", "--ignored", "--format", "terse"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let ignored = String::from_utf8(out.stdout).unwrap();
    assert_eq!(ignored.trim(), "ipc_importer_child: test", "{ignored}");
}

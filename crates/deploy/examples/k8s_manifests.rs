//! Writes the Kubernetes manifests of a few example clusters into a directory, one file
//! per cluster, for offline validation (`crates/deploy/validate-k8s.sh`):
//!
//! - `cpu.yaml`: 3 CPU workers of 2 threads, 4 GiB and 2 cores each;
//! - `gpu.yaml`: 2 workers with 2 GPUs each, 1.5 GiB and 1.5 cores, in namespace `ml`;
//! - `secret.yaml`: authenticated with the Secret `rask-auth`, and a worker argument full
//!   of characters YAML treats specially.
//!
//! ```text
//! cargo run -p rask-deploy --example k8s_manifests -- OUT_DIR
//! ```

use std::path::PathBuf;

use rask_deploy::k8s::K8sSpec;

/// The awkward worker argument of `secret.yaml`; the validation script checks it reads
/// back unchanged.
const AWKWARD_ARG: &str = "--note=it's \"quoted\": #not-a-comment, yes, 0755, \\ tab\tnewline\n";

fn specs() -> Vec<(&'static str, K8sSpec)> {
    let cpu = K8sSpec {
        workers: 3,
        worker_nthreads: 2,
        worker_memory: 4 << 30,
        worker_cpu_millis: 2000,
        ..K8sSpec::new("rask-cpu", "registry.example.com/rask:0.1.0")
    };
    let gpu = K8sSpec {
        namespace: "ml".into(),
        workers: 2,
        worker_memory: 3 << 29,
        worker_cpu_millis: 1500,
        gpus_per_worker: 2,
        worker_extra_args: vec!["--device".into(), "cuda:0".into()],
        ..K8sSpec::new("rask-gpu", "registry.example.com/rask-cuda:0.1.0")
    };
    let secret = K8sSpec {
        secret_name: Some("rask-auth".into()),
        worker_extra_args: vec![AWKWARD_ARG.into()],
        ..K8sSpec::new("rask-auth", "registry.example.com/rask:0.1.0")
    };
    vec![("cpu", cpu), ("gpu", gpu), ("secret", secret)]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .ok_or("usage: k8s_manifests OUT_DIR")?
        .into();
    std::fs::create_dir_all(&dir)?;
    for (file, spec) in specs() {
        let path = dir.join(format!("{file}.yaml"));
        std::fs::write(&path, spec.manifests()?)?;
        println!("{}", path.display());
    }
    Ok(())
}

//! Every `cuda/*.cu` compiles with NVRTC, to PTX (compute_80) and to a CUBIN (sm_90,
//! which runs ptxas and checks resources), and every entry point has a CPU twin. CI
//! installs NVRTC from PyPI and sets RASK_REQUIRE_NVRTC=1, so there this fails instead of
//! skipping when NVRTC is missing.

use std::collections::BTreeSet;

mod common;

use rask_device::nvrtc;
use rask_kernels::plan::{self, Module, Step};
use rask_kernels::{cpu, cuda_sources};
use rask_proto::Value;

fn nvrtc_here() -> bool {
    match nvrtc::available() {
        Ok(()) => true,
        Err(e) => {
            assert!(
                std::env::var("RASK_REQUIRE_NVRTC").as_deref() != Ok("1"),
                "RASK_REQUIRE_NVRTC=1 but {e}"
            );
            println!("SKIPPED: {e}");
            false
        }
    }
}

#[test]
fn every_kernel_compiles_and_has_a_cpu_twin() {
    if !nvrtc_here() {
        return;
    }
    let mut entries = BTreeSet::new();
    for (file, _) in cuda_sources::FILES {
        let src = cuda_sources::source(file).unwrap();
        let ptx = nvrtc::compile(&src, file, "compute_80").unwrap_or_else(|e| panic!("{e}"));
        let found = nvrtc::ptx_entries(&ptx);
        assert!(!found.is_empty(), "{file} has no entry point");
        for e in found {
            assert!(entries.insert(e.clone()), "{e} is defined twice");
        }
        let cubin = nvrtc::compile(&src, file, "sm_90").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&cubin[..4], b"\x7fELF", "{file}: a CUBIN is an ELF file");
    }
    let twins: BTreeSet<String> = cpu::twins().into_iter().collect();
    let missing: Vec<_> = entries.difference(&twins).collect();
    assert!(
        missing.is_empty(),
        "entry points without a CPU twin: {missing:?}"
    );
    let orphans: Vec<_> = twins.difference(&entries).collect();
    assert!(
        orphans.is_empty(),
        "CPU twins without a kernel: {orphans:?}"
    );
}

#[test]
fn a_kernel_that_does_not_compile_reports_nvrtcs_log() {
    if !nvrtc_here() {
        return;
    }
    let bad = "extern \"C\" __global__ void broken(float* x) { x[0] = undefined_name; }";
    match nvrtc::compile(bad, "broken.cu", "compute_80") {
        Err(rask_device::DeviceError::Compile { name, log }) => {
            assert_eq!(name, "broken.cu");
            assert!(log.contains("undefined_name"), "{log}");
        }
        other => panic!("expected a compile error, got {:?}", other.map(|v| v.len())),
    }
}

#[test]
fn compiled_modules_are_cached_by_source_and_architecture() {
    if !nvrtc_here() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("rask-kcache-{}", std::process::id()));
    let cache = nvrtc::ModuleCache::new(&dir);
    let src = cuda_sources::source("fill.cu").unwrap();
    let path = cache.path(&src, "compute_80");
    assert!(!path.exists());
    let first = cache.get(&src, "fill.cu", "compute_80").unwrap();
    assert!(path.exists());
    // The cached copy is what a second call returns (even if the file was altered).
    std::fs::write(&path, b"cached").unwrap();
    assert_eq!(cache.get(&src, "fill.cu", "compute_80").unwrap(), b"cached");
    assert_ne!(cache.path(&src, "sm_90"), path);
    assert!(!first.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// PTX parameter types as a launch passes them (signedness and bit types aside).
fn normalized(ty: &str) -> &str {
    match ty {
        "s32" | "b32" => "u32",
        "s64" | "b64" => "u64",
        t => t,
    }
}

#[test]
fn every_plan_launch_passes_what_its_kernel_declares() {
    if !nvrtc_here() {
        return;
    }
    let mut params = std::collections::BTreeMap::new();
    for (file, _) in cuda_sources::FILES {
        let src = cuda_sources::source(file).unwrap();
        let ptx = nvrtc::compile(&src, file, "compute_80").unwrap_or_else(|e| panic!("{e}"));
        for (entry, types) in nvrtc::ptx_params(&ptx) {
            assert_eq!(plan::file_of(&entry), *file, "file_of({entry})");
            params.insert(entry, types);
        }
    }
    let mut rng = common::Rng::new();
    let mut launches = 0;
    for (op, args) in common::cases(&mut rng) {
        let p = plan::plan(&op, &args).unwrap();
        for step in &p.steps {
            let Step::Launch(l) = step else { continue };
            launches += 1;
            let Module::Builtin(file) = l.module else {
                panic!("{op}: a built-in op launches a custom kernel")
            };
            assert_eq!(file, plan::file_of(&l.entry));
            let declared = params
                .get(&l.entry)
                .unwrap_or_else(|| panic!("{op}: no entry point {} in {file}", l.entry));
            let passed: Vec<&str> = l.args.iter().map(|a| a.ptx_type()).collect();
            let declared: Vec<&str> = declared.iter().map(|t| normalized(t)).collect();
            assert_eq!(passed, declared, "{op}: arguments of {}", l.entry);
            let threads = l.block.0 * l.block.1 * l.block.2;
            assert!(
                (1..=1024).contains(&threads),
                "{}: {threads} threads",
                l.entry
            );
            assert!(l.grid.0 >= 1 && l.grid.1 >= 1 && l.grid.2 >= 1 && l.grid.1 <= 65_535);
        }
    }
    assert!(launches > 200, "{launches} launches checked");
}

#[test]
fn a_custom_kernel_is_launched_by_its_calling_convention() {
    if !nvrtc_here() {
        return;
    }
    let src = "extern \"C\" __global__ void scale_shift_f32(const float* x, float* y, \
               unsigned long long n, float a, float b) { }";
    let ptx = nvrtc::compile(src, "scale_shift.cu", "compute_80").unwrap();
    let declared = &nvrtc::ptx_params(&ptx)["scale_shift_f32"];
    let mut rng = common::Rng::new();
    let x = rng.chunk(rask_proto::DType::F32, &[10, 10]);
    let p = plan::custom(
        src,
        "scale_shift_f32",
        &[x, Value::Float(2.0), Value::Float(-1.0)],
    )
    .unwrap();
    let Step::Launch(l) = &p.steps[0] else {
        panic!()
    };
    let passed: Vec<&str> = l.args.iter().map(|a| a.ptx_type()).collect();
    let declared: Vec<&str> = declared.iter().map(|t| normalized(t)).collect();
    assert_eq!(passed, declared);
    assert_eq!(p.shape, vec![10, 10]);
}

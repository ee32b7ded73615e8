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
fn compiled_modules_are_cached_checked_and_recompiled_when_damaged() {
    if !nvrtc_here() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("rask-kcache-{}", std::process::id()));
    let opts = nvrtc::Options::EXACT;
    let src = cuda_sources::source("fill.cu").unwrap();
    let path = nvrtc::ModuleCache::new(Some(dir.clone())).path(&src, "compute_80", opts);
    assert!(!path.exists());
    let first = nvrtc::ModuleCache::new(Some(dir.clone()))
        .get(&src, "fill.cu", "compute_80", opts)
        .unwrap();
    assert!(nvrtc::ptx_entries(&first).contains(&"fill_f32".to_string()));
    assert!(path.exists());
    let (v0, v1) = nvrtc::version().unwrap();
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.contains(&format!("nvrtc{v0}.{v1}")), "{name}");
    // A fresh cache (another process) reads the file…
    let stored = std::fs::read(&path).unwrap();
    assert_eq!(
        nvrtc::ModuleCache::new(Some(dir.clone()))
            .get(&src, "fill.cu", "compute_80", opts)
            .unwrap(),
        first
    );
    // …and a damaged one (one byte flipped, or cut short) is compiled again and replaced.
    for damaged in [
        {
            let mut d = stored.clone();
            *d.last_mut().unwrap() ^= 0x20;
            d
        },
        stored[..stored.len() / 2].to_vec(),
        b"cached".to_vec(),
    ] {
        std::fs::write(&path, &damaged).unwrap();
        let got = nvrtc::ModuleCache::new(Some(dir.clone()))
            .get(&src, "fill.cu", "compute_80", opts)
            .unwrap();
        assert_eq!(got, first);
        assert_eq!(std::fs::read(&path).unwrap(), stored, "rewritten");
    }
    // Other options or architectures are other modules.
    assert_ne!(
        nvrtc::ModuleCache::new(Some(dir.clone())).path(
            &src,
            "compute_80",
            nvrtc::Options::DEFAULT
        ),
        path
    );
    assert_ne!(
        nvrtc::ModuleCache::new(Some(dir.clone())).path(&src, "sm_90", opts),
        path
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unwritable_cache_keeps_modules_in_memory() {
    if !nvrtc_here() {
        return;
    }
    // A regular file where the directory should be: nothing can be created under it
    // (as in a read-only home), whoever runs the test.
    let blocker = std::env::temp_dir().join(format!("rask-kcache-ro-{}", std::process::id()));
    std::fs::write(&blocker, b"not a directory").unwrap();
    let cache = nvrtc::ModuleCache::new(Some(blocker.join("kernels")));
    let src = cuda_sources::source("transpose.cu").unwrap();
    let opts = nvrtc::Options::EXACT;
    let a = cache.get(&src, "transpose.cu", "compute_80", opts).unwrap();
    assert!(!nvrtc::ptx_entries(&a).is_empty());
    // Served again from memory: the same bytes, no file anywhere.
    assert_eq!(
        cache.get(&src, "transpose.cu", "compute_80", opts).unwrap(),
        a
    );
    assert!(std::fs::metadata(&blocker).unwrap().is_file());
    std::fs::remove_file(&blocker).unwrap();
    // Memory only, as `RASK_KERNEL_CACHE=off` asks.
    let mem = nvrtc::ModuleCache::new(None);
    assert_eq!(
        mem.get(&src, "transpose.cu", "compute_80", opts).unwrap(),
        a
    );
    assert!(mem.path(&src, "compute_80", opts).is_relative());
}

/// The kernels that promise their CPU twin's exact results: compiled without fused
/// multiply-adds, so no `fma` instruction in their PTX (an `fma` rounds once where the
/// twin rounds twice). `random_normal_*` calls `log`, `sin` and `cos`, whose library
/// code uses fma by design (its results are within ulps, not exact), and is left out.
#[test]
fn kernels_that_promise_exact_results_have_no_fused_multiply_add() {
    if !nvrtc_here() {
        return;
    }
    let mut checked = 0;
    for (file, _) in cuda_sources::FILES {
        let src = cuda_sources::source(file).unwrap();
        let ptx = nvrtc::compile(&src, file, "compute_80").unwrap();
        let text = String::from_utf8_lossy(&ptx);
        for (entry, body) in entry_bodies(&text) {
            if !rask_kernels::exactness(&entry).is_exact() {
                continue;
            }
            checked += 1;
            assert!(
                !body.lines().any(|l| l.trim_start().starts_with("fma.")),
                "{file}: {entry} promises exact results but its PTX fuses a multiply-add"
            );
        }
    }
    assert!(checked > 50, "only {checked} exact entry points checked");
    // The check can fail: NVRTC's default (fused) compile of axpy has an fma.
    let src = cuda_sources::source("elementwise.cu").unwrap();
    let fused = nvrtc::compile_with(
        &src,
        "elementwise.cu",
        "compute_80",
        nvrtc::Options::DEFAULT,
    )
    .unwrap();
    let fused = String::from_utf8_lossy(&fused);
    let (_, axpy) = entry_bodies(&fused)
        .into_iter()
        .find(|(e, _)| e == "axpy_f32")
        .unwrap();
    assert!(axpy.contains("fma."), "axpy_f32 fused by default");
}

/// Each entry point of PTX text and its body (up to the next entry or function).
fn entry_bodies(ptx: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut inside = false;
    for line in ptx.lines() {
        let l = line.trim();
        if l.starts_with(".func") || l.starts_with(".visible .func") || l.starts_with(".weak .func")
        {
            inside = false;
            continue;
        }
        if let Some(rest) = l
            .strip_prefix(".visible .entry ")
            .or_else(|| l.strip_prefix(".entry "))
        {
            let name = rest.split('(').next().unwrap_or("").trim().to_string();
            out.push((name, String::new()));
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
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

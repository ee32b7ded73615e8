//! Compiling CUDA sources at run time with NVRTC (loaded dynamically, like the driver),
//! and a disk cache of the results keyed by source hash and architecture.
//!
//! `compute_XY` targets give PTX (JIT-compiled by the driver); `sm_XY` targets give a
//! CUBIN, for which NVRTC runs ptxas and so catches resource errors (shared memory,
//! registers) that PTX alone would not.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use crate::DeviceError;

/// Whether NVRTC can be loaded here.
pub fn available() -> Result<(), DeviceError> {
    // SAFETY: only tries to open the library by its usual names.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(DeviceError::NoNvrtc(
            "libnvrtc cannot be loaded (install it, e.g. `pip install nvidia-cuda-nvrtc`, and put its lib directory on LD_LIBRARY_PATH)".into(),
        ))
    }
}

/// Compiles `source` (named `name` in messages) for `arch` (`compute_80`, `sm_90`, …):
/// PTX for `compute_*`, CUBIN for `sm_*`. A compile error carries NVRTC's log.
pub fn compile(source: &str, name: &str, arch: &str) -> Result<Vec<u8>, DeviceError> {
    available()?;
    let cubin = arch.starts_with("sm_");
    let src = CString::new(source).map_err(|_| DeviceError::Compile {
        name: name.into(),
        log: "the source contains a NUL byte".into(),
    })?;
    let cname = CString::new(name).unwrap_or_default();
    let guarded = |what: &str, r: Result<(), cudarc::nvrtc::result::NvrtcError>| {
        r.map_err(|e| DeviceError::Compile {
            name: name.into(),
            log: format!("{what}: {e:?}"),
        })
    };
    let prog =
        std::panic::catch_unwind(|| cudarc::nvrtc::result::create_program(&src, Some(&cname)))
            .map_err(|_| DeviceError::NoNvrtc("NVRTC failed to start".into()))?
            .map_err(|e| DeviceError::Compile {
                name: name.into(),
                log: format!("creating the program: {e:?}"),
            })?;
    let options = [
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
        "-default-device".to_string(),
    ];
    // SAFETY: `prog` was created above and is destroyed once, below.
    let compiled = unsafe { cudarc::nvrtc::result::compile_program(prog, &options) };
    let out = if compiled.is_err() {
        // SAFETY: as above.
        let log = unsafe { cudarc::nvrtc::result::get_program_log(prog) }
            .map(|l| {
                let bytes: Vec<u8> = l.iter().map(|&c| c as u8).take_while(|&c| c != 0).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .unwrap_or_default();
        Err(DeviceError::Compile {
            name: name.into(),
            log,
        })
    } else if cubin {
        let mut size = 0usize;
        // SAFETY: as above; the buffer is `size` bytes.
        unsafe {
            guarded(
                "reading the CUBIN size",
                cudarc::nvrtc::sys::nvrtcGetCUBINSize(prog, &mut size).result(),
            )
            .and_then(|_| {
                let mut buf = vec![0u8; size];
                guarded(
                    "reading the CUBIN",
                    cudarc::nvrtc::sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr().cast()).result(),
                )
                .map(|_| buf)
            })
        }
    } else {
        // SAFETY: as above.
        unsafe { cudarc::nvrtc::result::get_ptx(prog) }
            .map(|p| p.iter().map(|&c| c as u8).take_while(|&c| c != 0).collect())
            .map_err(|e| DeviceError::Compile {
                name: name.into(),
                log: format!("reading the PTX: {e:?}"),
            })
    };
    // SAFETY: created above, not destroyed before.
    let _ = unsafe { cudarc::nvrtc::result::destroy_program(prog) };
    out
}

/// The entry points (`.entry NAME(`) of PTX text.
pub fn ptx_entries(ptx: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(ptx)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l
                .strip_prefix(".visible .entry ")
                .or_else(|| l.strip_prefix(".entry "))?;
            Some(rest.split('(').next()?.trim().to_string())
        })
        .collect()
}

/// The parameter types of each entry point of PTX text, in order (`u64`, `u32`, `f32`,
/// `f64`, …, without the dot): what a launch must pass.
pub fn ptx_params(ptx: &[u8]) -> std::collections::BTreeMap<String, Vec<String>> {
    let text = String::from_utf8_lossy(ptx);
    let mut out = std::collections::BTreeMap::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l
            .strip_prefix(".visible .entry ")
            .or_else(|| l.strip_prefix(".entry "))
        {
            let name = rest.split('(').next().unwrap_or("").trim().to_string();
            current = Some((name, Vec::new()));
            if rest.contains(')') {
                if let Some((n, p)) = current.take() {
                    out.insert(n, p);
                }
            }
            continue;
        }
        let Some((_, params)) = current.as_mut() else {
            continue;
        };
        if let Some(rest) = l.strip_prefix(".param ") {
            // `.param .u64 name,` or `.param .align 8 .b8 name[16]`
            let ty = rest
                .split_whitespace()
                .find(|w| w.starts_with('.') && *w != ".align" && *w != ".ptr")
                .unwrap_or("")
                .trim_start_matches('.');
            params.push(ty.to_string());
        }
        if l.starts_with(')') {
            if let Some((n, p)) = current.take() {
                out.insert(n, p);
            }
        }
    }
    out
}

/// Compiled modules on disk, keyed by source hash and architecture: a source is compiled
/// once per architecture, at first use.
#[derive(Clone, Debug)]
pub struct ModuleCache {
    dir: PathBuf,
}

impl ModuleCache {
    /// A cache in `dir` (created when the first module is stored).
    pub fn new(dir: impl Into<PathBuf>) -> ModuleCache {
        ModuleCache { dir: dir.into() }
    }

    /// `$XDG_CACHE_HOME/rask/kernels` or `~/.cache/rask/kernels`.
    pub fn default_dir() -> PathBuf {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("rask")
            .join("kernels")
    }

    /// The path a module would be cached at.
    pub fn path(&self, source: &str, arch: &str) -> PathBuf {
        let ext = if arch.starts_with("sm_") {
            "cubin"
        } else {
            "ptx"
        };
        self.dir.join(format!(
            "{:016x}-{arch}.{ext}",
            rask_proto::fnv1a(source.as_bytes())
        ))
    }

    /// The compiled module, from the cache or compiled now (and cached).
    pub fn get(&self, source: &str, name: &str, arch: &str) -> Result<Vec<u8>, DeviceError> {
        let path = self.path(source, arch);
        if let Ok(b) = std::fs::read(&path) {
            return Ok(b);
        }
        let out = compile(source, name, arch)?;
        std::fs::create_dir_all(&self.dir)?;
        // Write then rename, so a concurrent reader never sees half a module.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &out)?;
        std::fs::rename(&tmp, &path)?;
        Ok(out)
    }
}

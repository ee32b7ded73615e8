//! Compiling CUDA sources at run time with NVRTC (loaded dynamically, like the driver),
//! and a cache of the results keyed by source hash, architecture, NVRTC version and options.
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

/// How a source is compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Options {
    /// No fused multiply-adds (`--fmad=false`): what Rask's own kernels are compiled
    /// with, so that their results are those of their CPU twins (which never fuse). A
    /// user's kernel is compiled with NVRTC's defaults (fused).
    pub exact: bool,
}

impl Options {
    /// Rask's own kernels: results identical to the CPU twins where they promise it.
    pub const EXACT: Options = Options { exact: true };
    /// NVRTC's defaults (users' kernels).
    pub const DEFAULT: Options = Options { exact: false };

    /// NVRTC's command line for `arch` (`compute_XY` for PTX, `sm_XY` for a CUBIN).
    pub fn flags(&self, arch: &str) -> Vec<String> {
        let mut f = vec![
            format!("--gpu-architecture={arch}"),
            "--std=c++17".to_string(),
            "-default-device".to_string(),
        ];
        if self.exact {
            // Division and square roots are IEEE-rounded by default (`--prec-div`,
            // `--prec-sqrt`); only the fusing of a * b + c differs from the host.
            f.push("--fmad=false".to_string());
        }
        f
    }
}

/// NVRTC's version (`(13, 0)`).
pub fn version() -> Result<(i32, i32), DeviceError> {
    available()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two out-parameters of the declared types.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
        cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor).result()
    }));
    match r {
        Ok(Ok(())) => Ok((major, minor)),
        _ => Err(DeviceError::NoNvrtc("nvrtcVersion failed".into())),
    }
}

/// The GPU architectures NVRTC compiles for (`[75, 80, 86, 89, 90, 100, 120]`), lowest
/// first.
pub fn supported_archs() -> Result<Vec<u32>, DeviceError> {
    available()?;
    let failed = || DeviceError::NoNvrtc("nvrtcGetSupportedArchs failed".into());
    let mut n = 0;
    // SAFETY: an out-parameter.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
        cudarc::nvrtc::sys::nvrtcGetNumSupportedArchs(&mut n).result()
    }));
    if !matches!(r, Ok(Ok(()))) || n < 0 {
        return Err(failed());
    }
    let mut archs = vec![0i32; n as usize];
    // SAFETY: the buffer holds the `n` entries NVRTC said it has.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
        cudarc::nvrtc::sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()).result()
    }));
    if !matches!(r, Ok(Ok(()))) {
        return Err(failed());
    }
    let mut out: Vec<u32> = archs.into_iter().map(|a| a.max(0) as u32).collect();
    out.sort_unstable();
    Ok(out)
}

/// Compiles `source` (named `name` in messages) for `arch` (`compute_80`, `sm_90`, …)
/// with Rask's kernels' options ([`Options::EXACT`]): PTX for `compute_*`, CUBIN for
/// `sm_*`. A compile error carries NVRTC's log.
pub fn compile(source: &str, name: &str, arch: &str) -> Result<Vec<u8>, DeviceError> {
    compile_with(source, name, arch, Options::EXACT)
}

/// [`compile`] with the given options.
pub fn compile_with(
    source: &str,
    name: &str,
    arch: &str,
    opts: Options,
) -> Result<Vec<u8>, DeviceError> {
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
    let options = opts.flags(arch);
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

/// Compiled modules, kept on disk between runs and in memory: a source is compiled once
/// per architecture, NVRTC version and options. What is read from disk is checked (a
/// header with the length and a checksum) and recompiled when it does not check; a cache
/// directory that cannot be written (a read-only home in a container) leaves the modules
/// in memory, said once.
#[derive(Debug)]
pub struct ModuleCache {
    /// `None`: memory only.
    dir: Option<PathBuf>,
    memory: std::sync::Mutex<std::collections::HashMap<PathBuf, Vec<u8>>>,
    /// Whether an unwritable directory was reported.
    warned: std::sync::atomic::AtomicBool,
}

/// The start of a cached module file; a little-endian length and checksum follow.
const MAGIC: &[u8; 8] = b"RASKMOD1";

impl ModuleCache {
    /// A cache in `dir` (created when the first module is stored); `None`: in memory
    /// only.
    pub fn new(dir: Option<PathBuf>) -> ModuleCache {
        ModuleCache {
            dir,
            memory: Default::default(),
            warned: Default::default(),
        }
    }

    /// The cache `RASK_KERNEL_CACHE` names (a directory, or `off` for memory only), else
    /// [`ModuleCache::default_dir`].
    pub fn from_env() -> ModuleCache {
        match std::env::var_os("RASK_KERNEL_CACHE") {
            Some(v) if v == "off" => ModuleCache::new(None),
            Some(v) if !v.is_empty() => ModuleCache::new(Some(PathBuf::from(v))),
            _ => ModuleCache::new(Some(ModuleCache::default_dir())),
        }
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

    /// The name a module is kept under: the source's hash, the architecture, NVRTC's
    /// version and a hash of the compile options.
    pub fn key(source: &str, arch: &str, nvrtc: (i32, i32), opts: Options) -> String {
        let ext = if arch.starts_with("sm_") {
            "cubin"
        } else {
            "ptx"
        };
        let flags = opts.flags(arch).join(" ");
        format!(
            "{:016x}-{arch}-nvrtc{}.{}-{:08x}.{ext}",
            rask_proto::fnv1a(source.as_bytes()),
            nvrtc.0,
            nvrtc.1,
            rask_proto::fnv1a(flags.as_bytes()) as u32
        )
    }

    /// The path a module would be cached at (under the directory, or a name in memory).
    pub fn path(&self, source: &str, arch: &str, opts: Options) -> PathBuf {
        let v = version().unwrap_or((0, 0));
        let key = Self::key(source, arch, v, opts);
        match &self.dir {
            Some(d) => d.join(key),
            None => PathBuf::from(key),
        }
    }

    /// The compiled module, from the cache or compiled now (and cached).
    pub fn get(
        &self,
        source: &str,
        name: &str,
        arch: &str,
        opts: Options,
    ) -> Result<Vec<u8>, DeviceError> {
        let path = self.path(source, arch, opts);
        if let Some(m) = self.memory.lock().expect("cache lock").get(&path) {
            return Ok(m.clone());
        }
        if self.dir.is_some() {
            match std::fs::read(&path) {
                Ok(b) => match unwrap_module(&b) {
                    Some(m) => {
                        let m = m.to_vec();
                        self.keep(path, &m);
                        return Ok(m);
                    }
                    None => tracing::warn!(
                        "the cached kernel {} is damaged; compiling it again",
                        path.display()
                    ),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("cannot read {}: {e}; compiling", path.display()),
            }
        }
        let out = compile_with(source, name, arch, opts)?;
        if self.dir.is_some() {
            if let Err(e) = store(&path, &out) {
                if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        "the kernel cache {} cannot be written ({e}); compiled kernels are kept in memory (set RASK_KERNEL_CACHE to a writable directory)",
                        path.parent().unwrap_or(&path).display()
                    );
                }
            }
        }
        self.keep(path, &out);
        Ok(out)
    }

    fn keep(&self, path: PathBuf, module: &[u8]) {
        self.memory
            .lock()
            .expect("cache lock")
            .insert(path, module.to_vec());
    }
}

/// A module as stored: [`MAGIC`], its length and checksum, the bytes.
fn wrap_module(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len() + 24);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(m.len() as u64).to_le_bytes());
    out.extend_from_slice(&rask_proto::fnv1a(m).to_le_bytes());
    out.extend_from_slice(m);
    out
}

/// The module in a stored file, if it checks.
fn unwrap_module(b: &[u8]) -> Option<&[u8]> {
    let rest = b.strip_prefix(MAGIC.as_slice())?;
    let (len, rest) = rest.split_first_chunk::<8>()?;
    let (sum, m) = rest.split_first_chunk::<8>()?;
    (u64::from_le_bytes(*len) == m.len() as u64 && u64::from_le_bytes(*sum) == rask_proto::fnv1a(m))
        .then_some(m)
}

/// Writes a module then renames it into place, so a concurrent reader never sees half.
fn store(path: &Path, m: &[u8]) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, wrap_module(m))?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_modules_check_their_length_and_sum() {
        let m = b"//\n.version 9.0\n.target sm_90".to_vec();
        let w = wrap_module(&m);
        assert_eq!(unwrap_module(&w), Some(m.as_slice()));
        let mut flipped = w.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(unwrap_module(&flipped), None);
        assert_eq!(unwrap_module(&w[..w.len() - 1]), None);
        assert_eq!(unwrap_module(&m), None, "a file of an older cache");
        assert_eq!(unwrap_module(b""), None);
    }

    #[test]
    fn the_key_names_source_arch_nvrtc_version_and_options() {
        let k = |src: &str, arch: &str, v, o| ModuleCache::key(src, arch, v, o);
        let base = k("a", "sm_90", (13, 0), Options::EXACT);
        assert!(base.ends_with(".cubin"), "{base}");
        assert!(k("a", "compute_90", (13, 0), Options::EXACT).ends_with(".ptx"));
        for other in [
            k("b", "sm_90", (13, 0), Options::EXACT),
            k("a", "sm_80", (13, 0), Options::EXACT),
            k("a", "sm_90", (13, 1), Options::EXACT),
            k("a", "sm_90", (12, 9), Options::EXACT),
            k("a", "sm_90", (13, 0), Options::DEFAULT),
        ] {
            assert_ne!(other, base);
        }
    }

    #[test]
    fn modules_are_kept_under_the_cache_directory_by_their_key() {
        assert!(ModuleCache::default_dir().ends_with("rask/kernels"));
        let dir = PathBuf::from("/var/cache/rask-test");
        let p = ModuleCache::new(Some(dir.clone())).path("src", "sm_90", Options::EXACT);
        assert_eq!(p.parent(), Some(dir.as_path()));
        let name = p.file_name().unwrap().to_str().unwrap();
        let hash = format!("{:016x}-sm_90-nvrtc", rask_proto::fnv1a(b"src"));
        assert!(name.starts_with(&hash), "{name}");
        assert!(name.ends_with(".cubin"), "{name}");
        let mem = ModuleCache::new(None).path("src", "sm_90", Options::EXACT);
        assert_eq!(mem.file_name(), p.file_name());
        assert_eq!(mem.parent(), Some(Path::new("")));
    }

    #[test]
    fn rasks_kernels_compile_without_fused_multiply_adds() {
        assert!(Options::EXACT
            .flags("sm_90")
            .contains(&"--fmad=false".to_string()));
        assert!(!Options::DEFAULT
            .flags("sm_90")
            .iter()
            .any(|f| f.contains("fmad")));
        assert!(Options::EXACT
            .flags("sm_90")
            .contains(&"--gpu-architecture=sm_90".to_string()));
    }
}

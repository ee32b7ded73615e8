//! A program as its own worker: [`worker_entry`], and what a client tells the cluster of
//! its program (for its typed ops).

use std::sync::atomic::{AtomicBool, Ordering};

use rask_client::ProgramSource;
use rask_kernels::Registry;
use rask_proto::msg::ProgramInfo;

/// The first argument that makes a program a worker: `PROGRAM rask-worker SCHEDULER
/// [worker options]` (the options of `rask worker`).
pub const WORKER_ENTRY_ARG: &str = "rask-worker";

/// Whether this program called [`worker_entry`].
static ENTRY: AtomicBool = AtomicBool::new(false);

/// Makes this program able to serve its own typed ops as a worker: call it first thing in
/// `main`. When the program was started as a worker (`PROGRAM rask-worker SCHEDULER
/// [options]`, as the cluster's workers start it), it runs that worker until the
/// scheduler closes or the worker is stopped, and then exits the process; otherwise it
/// returns at once and the program goes on.
///
/// With it, the program's typed ops run anywhere: a cluster of stock `rask worker`s
/// receives the program from its client and starts workers of it, and
/// `LocalCluster::builder().processes(true)` starts the program itself as its workers.
/// Without it, typed ops run only in the program's own process (`Client::new()`'s
/// default cluster) or on workers already running the program.
pub fn worker_entry() {
    ENTRY.store(true, Ordering::Relaxed);
    let mut args = std::env::args_os();
    let program = args.next().unwrap_or_default();
    if args.next().as_deref() != Some(std::ffi::OsStr::new(WORKER_ENTRY_ARG)) {
        return;
    }
    #[derive(clap::Parser)]
    struct Entry {
        #[command(flatten)]
        worker: crate::cli::WorkerArgs,
    }
    let name = format!("{} {WORKER_ENTRY_ARG}", program.to_string_lossy());
    let parsed: Entry =
        clap::Parser::parse_from(std::iter::once(std::ffi::OsString::from(name)).chain(args));
    // A worker started by a cluster manager (`--quiet`) says only what goes wrong.
    crate::cli::init_logging(
        if parsed.worker.quiet { "warn" } else { "info" },
        parsed.worker.log_format,
    );
    let code = match crate::cli::run_worker(parsed.worker, Registry::program()) {
        Ok(()) => 0,
        Err(e) => {
            crate::errln!("{}: worker: {e}", program.to_string_lossy());
            1
        }
    };
    std::process::exit(code);
}

/// Whether [`worker_entry`] was called: the program can be started as a worker.
pub fn is_worker_entry_called() -> bool {
    ENTRY.load(Ordering::Relaxed)
}

/// What a client tells the cluster of this program: `None` without typed ops.
pub(crate) fn program_source(registry: &Registry) -> Option<ProgramSource> {
    if !registry.has_program_ops() {
        return None;
    }
    let code = rask_kernels::code_identity();
    if code == 0 {
        // Unknown code could not be told apart from another program's: its typed ops run
        // nowhere rather than on the wrong code (the reason was logged).
        return None;
    }
    let path = std::path::PathBuf::from("/proc/self/exe");
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let name = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "program".into());
    Some(ProgramSource {
        info: ProgramInfo {
            code,
            size,
            name,
            platform: rask_worker::this_platform(),
            shippable: is_worker_entry_called() && size > 0,
        },
        path,
    })
}

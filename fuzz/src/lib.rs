//! Fuzz harnesses for everything Rask reads from the network, and for the state machines
//! those messages drive. Each harness is a plain function of the input bytes, called by
//! its libFuzzer target (`fuzz_targets/`) and by the replay tests, which run every input
//! kept under `corpus/` through the same functions without a fuzzer.
//!
//! A harness panics (the fuzzer's finding) when a decoder panics, when what a decoder
//! accepted cannot be encoded and decoded again, when a state machine breaks an
//! invariant, or when memory grows beyond what the input's size explains
//! ([`alloc::guarded`]: an allocation sized by an announced length).

pub mod alloc;
pub mod decode;
pub mod input;
pub mod net;
pub mod sched;
pub mod wcore;

/// Every byte this process allocates is counted against the bound of the harness
/// running on that thread.
#[global_allocator]
static ALLOC: alloc::Bounded = alloc::Bounded;

/// A harness: the input is untrusted bytes from the network.
pub type Harness = fn(&[u8]);

/// The fuzz targets, by name (the name of their `fuzz_targets/` file and corpus folder).
pub const TARGETS: &[(&str, Harness)] = &[
    ("frame_header", decode::frame_header),
    ("hello", decode::hello),
    ("to_scheduler", decode::to_scheduler),
    ("to_worker", decode::to_worker),
    ("to_client", decode::to_client),
    ("peer_msg", decode::peer_msg),
    ("value", decode::value),
    ("frame_reader", net::frame_reader),
    ("handshake", net::handshake),
    ("shm_reply", net::shm_reply),
    ("peer_serve", net::peer_serve),
    ("scheduler_core", sched::scheduler_core),
    ("worker_core", wcore::worker_core),
];

/// Prints what `line` says when `RASK_FUZZ_TRACE` is set (reading an input step by
/// step while finding out why it fails).
pub fn trace(line: impl FnOnce() -> String) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("RASK_FUZZ_TRACE").is_some()) {
        eprintln!("{}", line());
    }
}

/// Runs the harness `name` on `data` under the allocation bound; what a fuzz target does
/// for each input.
pub fn run(name: &str, data: &[u8]) {
    let (_, f) = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"));
    alloc::guarded(data.len(), || f(data));
}

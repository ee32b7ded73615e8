//! The handshake: what a connecting peer says of itself ([`Hello`], [`WorkerHello`]), the
//! answer ([`HelloReply`]) and the shared-secret proof ([`AuthProof`]).

use super::*;

wire! {
    /// What a connecting peer is.
    pub enum Role {
        /// A client's connection to the scheduler.
        Client,
        /// A worker's connection to the scheduler ([`Hello::worker`] describes it).
        Worker,
        /// A worker or client opening a data connection to a worker.
        Peer,
    }

    /// The ops a process knows. Workers of one cluster must have the same registry (and
    /// code, [`WorkerHello::code`]); a client may know fewer or more ops, but those it
    /// shares with the workers must be the same versions.
    pub struct RegistryInfo {
        /// Hash of the sorted op names and their versions.
        pub fingerprint: u64,
        /// The ops, sorted by name (for error messages and submit-time checks).
        pub ops: Vec<OpInfo>,
    }

    /// One op of a [`RegistryInfo`].
    pub struct OpInfo {
        /// The name tasks call the op by.
        pub name: String,
        /// A hash of what defines the op's behaviour besides its code: its version
        /// number and, for an op with a CUDA kernel, the kernel's source and entry point.
        pub version: u64,
        /// An op of the program itself (a typed op, `#[rask::op]`): identified by its
        /// name and the program's code ([`ProgramInfo::code`]), run only by workers of
        /// that very program. Other ops are identified by name and version.
        pub program: bool,
    }

    /// The program a client runs, for its typed ops: the workers that run them must run
    /// this very program (its code), started by the cluster's workers if none does.
    pub struct ProgramInfo {
        /// The program's code identity (as a worker's [`WorkerHello::code`]): what its
        /// tasks are placed by, and what names it in the workers' caches.
        pub code: u64,
        /// The executable's size in bytes.
        pub size: u64,
        /// The executable's file name, for messages.
        pub name: String,
        /// The operating system and CPU it was built for (`linux-x86_64`).
        pub platform: String,
        /// Whether it can be started as a worker (its `main` begins with
        /// `rask::worker_entry()`); if not, only workers already running it serve it.
        pub shippable: bool,
    }

    /// A named amount of a resource a worker offers or a task needs (e.g. `gpu = 1`).
    pub struct Resource {
        /// The resource's name (`gpu`, `memory`, a device name such as `sim:2`, or any
        /// name a worker offers).
        pub name: String,
        /// How much; amounts are consumed while a task runs and returned after.
        pub amount: f64,
    }

    /// The first frame on every connection, from the connecting side.
    pub struct Hello {
        /// [`crate::PROTOCOL_VERSION`] of the sender's build.
        pub protocol: u16,
        /// [`crate::PROTOCOL_SCHEMA`] of the sender's build.
        pub schema: u64,
        /// [`crate::RASK_VERSION`] of the sender's build; must equal the receiver's.
        pub rask_version: String,
        /// What the connecting side is; decides which messages it may send after.
        pub role: Role,
        /// Human name (worker name, client name).
        pub name: String,
        /// Identity of the host (not an IP): same host ⇔ same id.
        pub host_id: String,
        /// The sender's process id: with `host_id`, tells a peer in the same process
        /// (served in process) from one on the same host (served by shared memory).
        pub pid: u32,
        /// The ops the sender knows, checked against the cluster's (workers and clients;
        /// `None` for data connections).
        pub registry: Option<RegistryInfo>,
        /// Present when `role` is `Worker`.
        pub worker: Option<WorkerHello>,
        /// A client's program, when it has typed ops.
        pub program: Option<ProgramInfo>,
        /// Fresh random bytes: the server's authentication proof covers them.
        pub nonce: [u8; 32],
        /// A client connecting again (after a lost connection or a scheduler restart):
        /// the id it had, which it keeps if the scheduler still has its keys.
        pub resume: Option<u32>,
    }

    /// What a worker tells the scheduler about itself.
    pub struct WorkerHello {
        /// Where peers and clients fetch data from, `tcp://host:port`.
        pub listen_addr: String,
        /// Where same-host peers fetch data through shared memory (`unix:@name`, an
        /// abstract unix socket); empty when the worker offers no shared memory.
        pub shm_addr: String,
        /// The worker's transport setting (`auto`, `tcp` or `shm`).
        pub transport: String,
        /// The device the worker drives: `host`, `sim:N` (simulated GPU) or `cuda:N` (a
        /// [`crate::DeviceLoc`] in its text form).
        pub device: String,
        /// What the device is: a GPU's product name, `simulated GPU (…)`, or empty.
        pub device_name: String,
        /// Its GPU index on this host, if it drives a GPU.
        pub gpu: Option<u32>,
        /// GPUs of this host reached from `gpu` over NVLink.
        pub nvlink: Vec<u32>,
        /// Bytes of device memory the worker may use (0 without a GPU).
        pub device_memory_limit: u64,
        /// Device memory use past which the worker spills from its device (0 without a
        /// GPU).
        pub device_spill_at: u64,
        /// Tasks the worker runs at once (its executor threads).
        pub nthreads: u32,
        /// Bytes of host memory the worker may use; spilling and pausing thresholds are
        /// fractions of it.
        pub memory_limit: u64,
        /// What the worker offers to tasks that declare needs (`gpu = 1`, `memory`, …).
        pub resources: Vec<Resource>,
        /// The identity of the code the worker runs ops with (a hash of its executable's
        /// code and read-only data): workers whose code differs never serve one cluster,
        /// even with equal op names and versions.
        pub code: u64,
        /// Whether the worker starts programs' workers when asked (`RunProgram`): a
        /// stock worker does; a program's worker, started so, does not.
        pub runs_programs: bool,
        /// Where the worker serves its own `/metrics` and `/health`, `http://host:port`
        /// (empty: it serves none).
        pub dashboard: String,
        /// The worker joins again holding values (after a partition or a scheduler
        /// restart): it tells which in [`ToScheduler::Holding`] before it gets tasks.
        pub holds: bool,
    }

    /// The answer to a [`Hello`]. A refusal is not a reply but a refusal frame (see
    /// [`crate::frame`]), which every protocol version reads.
    pub enum HelloReply {
        /// The peer is admitted; the connection carries its role's messages from now on.
        Welcome {
            /// The id given to the connecting client or worker (0 for peers).
            id: u32,
            /// The server's [`crate::RASK_VERSION`].
            rask_version: String,
            /// With a shared secret: the server's proof of it over both nonces, given only
            /// to a peer that proved it first.
            proof: Option<[u8; 32]>,
        },
        /// The server requires the shared secret: the client proves it first, over both
        /// nonces ([`AuthProof`]); the server proves it back in its `Welcome`.
        Challenge {
            /// The server's fresh random bytes, covered by both sides' proofs.
            nonce: [u8; 32],
        },
    }

    /// The client's answer to a [`HelloReply::Challenge`].
    pub struct AuthProof {
        /// HMAC-SHA256 keyed by the shared secret over both nonces; the secret itself
        /// never travels.
        pub proof: [u8; 32],
    }
}

impl Hello {
    /// The hello of this build and process in `role`, named `name` (on `host_id`, this
    /// host's identity as the transport computes it), with no registry and no worker
    /// description; the handshake fills in the nonce.
    pub fn new(role: Role, name: impl Into<String>, host_id: impl Into<String>) -> Hello {
        Hello {
            protocol: crate::PROTOCOL_VERSION,
            schema: crate::PROTOCOL_SCHEMA,
            rask_version: crate::RASK_VERSION.into(),
            role,
            name: name.into(),
            host_id: host_id.into(),
            pid: std::process::id(),
            registry: None,
            worker: None,
            program: None,
            nonce: [0; 32],
            resume: None,
        }
    }
}

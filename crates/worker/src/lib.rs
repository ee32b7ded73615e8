//! The worker server: connects to the scheduler, runs tasks on executor threads, keeps
//! their outputs in a data store, serves that data to peers and clients, and fetches
//! dependencies directly from the peers that hold them.
//!
//! One task owns the [`WorkerCore`] and the store's bookkeeping; executor threads only
//! run ops; connection tasks only read, decode and forward. Decisions (what to fetch, what
//! to run next, what to drop) belong in the core.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod activity;
mod config;
mod device;
mod error;
mod event_loop;
mod events;
mod executor;
mod heartbeat;
mod memory;
mod outputs;
mod peers;
mod programs;
mod rejoin;
mod store;
mod sysmem;

pub use config::{HeartbeatHook, WorkerConfig, WorkerDevice};
pub use error::WorkerError;
pub use peers::peer_hello;
pub use programs::{this_platform, LaunchFn, ProgramLauncher};
pub use sysmem::{
    available_memory, cgroup_memory_limit, private_heap_bytes, rss_bytes, total_memory,
};

use crate::config::{spill_limits, Joining};
use crate::event_loop::State;
use crate::events::Event;
use crate::executor::executor_loop;
use crate::executor::Exec;
use crate::executor::Job;
use crate::outputs::open_accelerator;
use crate::outputs::ArenaAlloc;
use crate::store::lookup_data;
use crate::store::stored;
use crate::store::Store;
use rask_kernels::{Accelerator, OutputAlloc};
use rask_proto::msg::ToScheduler;
use rask_proto::WorkerId;
use rask_transport::shm::Arena;
use rask_transport::{connect, spawn_writer, FrameReader, Sender, TransportMode};
use rask_worker_core::spill::{Spill, SpillLimits};
use rask_worker_core::WorkerCore;
use rustc_hash::FxHashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::info;
use tracing::warn;
use tracing::Instrument;

/// How long a worker whose device failed waits for the scheduler to have heard why.
const LEAVE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Where same-host peers reach a worker's shared memory.
struct ShmServer {
    listener: tokio::net::UnixListener,
    addr: String,
}

/// A worker connected to its scheduler, ready to run.
pub struct Worker {
    cfg: WorkerConfig,
    id: WorkerId,
    listen_addr: String,
    listener: TcpListener,
    shm: Option<ShmServer>,
    /// Where ops' outputs and received payloads live (memfd segments, mapped once).
    arena: Arena,
    /// Device memory accounting (a GPU worker's).
    device_pool: Option<Arc<rask_device::MemoryPool>>,
    /// The CUDA GPU, kept open while the worker runs.
    _cuda: Option<rask_device::cuda::CudaDevice>,
    /// Runs ops that have device plans (GPU workers).
    accel: Option<Arc<dyn Accelerator>>,
    /// The GPU's index on its host.
    host_gpu: Option<u32>,
    /// Spilling thresholds.
    limits: SpillLimits,
    reader: FrameReader,
    to_scheduler: Sender<ToScheduler>,
    hello: rask_proto::msg::Hello,
}

impl Worker {
    /// Binds the data listener and joins the scheduler (handshake included).
    pub async fn connect(cfg: WorkerConfig) -> Result<Worker, WorkerError> {
        let listener = rask_transport::listen(&cfg.listen).await?;
        // What peers are told: never 0.0.0.0, which no peer can reach.
        let listen_addr = rask_transport::addr::contact_addr(
            listener
                .local_addr()
                .map_err(rask_transport::TransportError::from)?,
            cfg.contact.as_deref(),
            rask_transport::addr::resolve(&cfg.scheduler).ok(),
        )?;
        let shm = match cfg.transport {
            TransportMode::Tcp => None,
            _ => match rask_transport::listen_unix() {
                Ok((listener, addr)) => Some(ShmServer { listener, addr }),
                Err(e) => {
                    warn!("no shared memory for peers ({e}); data goes over tcp");
                    None
                }
            },
        };
        let shm_addr = shm.as_ref().map(|s| s.addr.clone()).unwrap_or_default();
        let device_err = |source| WorkerError::Device {
            device: cfg.device.label(),
            source,
        };
        let (device_pool, cuda) = match &cfg.device {
            WorkerDevice::Host => (None, None),
            WorkerDevice::Sim { index, memory } => (
                Some(rask_device::MemoryPool::new(
                    rask_proto::DeviceLoc::sim(*index),
                    *memory,
                )),
                None,
            ),
            WorkerDevice::Cuda {
                index,
                memory_limit,
            } => {
                let d = rask_device::cuda::CudaDevice::open(*index, *memory_limit)
                    .map_err(device_err)?;
                (Some(d.pool().clone()), Some(d))
            }
        };
        let arena = Arena::new(rask_transport::shm::DEFAULT_SEGMENT);
        let accel = open_accelerator(&cfg.device, &arena, device_pool.as_ref());
        let host_gpu = cfg.device.host_gpu();
        let limits = spill_limits(
            &cfg.device,
            device_pool.as_ref().map(|p| p.limit()),
            cfg.memory_limit,
        );
        let code = tokio::task::spawn_blocking(rask_kernels::code_identity)
            .await
            .unwrap_or(0);
        let hello = cfg.hello(Joining {
            listen_addr: listen_addr.clone(),
            shm_addr,
            host_gpu,
            device_limit: device_pool.as_ref().map(|p| p.limit()),
            device_product: cuda.as_ref().map(|c| c.name().to_string()),
            limits: &limits,
            code,
            holds: false,
        });
        let (reader, w, id) = connect(&cfg.scheduler, &hello, cfg.conn.clone())
            .await
            .map_err(|source| WorkerError::Connect {
                addr: cfg.scheduler.clone(),
                source,
            })?;
        Ok(Worker {
            id: WorkerId(id),
            listen_addr,
            listener,
            shm,
            arena,
            device_pool,
            _cuda: cuda,
            accel,
            host_gpu,
            limits,
            reader,
            to_scheduler: spawn_writer(w),
            hello,
            cfg,
        })
    }

    /// The id the scheduler gave this worker.
    pub fn id(&self) -> WorkerId {
        self.id
    }

    /// Where this worker serves data.
    pub fn listen_addr(&self) -> &str {
        &self.listen_addr
    }

    /// Where same-host peers reach this worker's shared memory, if it offers it.
    pub fn shm_addr(&self) -> Option<&str> {
        self.shm.as_ref().map(|s| s.addr.as_str())
    }

    /// Runs until the scheduler closes the connection or `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
        let span = tracing::info_span!("worker", name = %self.cfg.name, id = self.id.0);
        tracing::Instrument::instrument(self.run_in_span(shutdown), span).await
    }

    async fn run_in_span(self, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
        let Worker {
            cfg,
            id,
            listen_addr,
            listener,
            shm,
            arena,
            device_pool,
            _cuda,
            accel,
            host_gpu,
            limits,
            mut reader,
            to_scheduler,
            hello,
        } = self;
        // Large task arguments from the scheduler arrive in the arena too, so they can be
        // lent to same-host peers without a copy.
        reader.set_arena(Some(arena.clone()));
        let store: Store = Arc::default();
        // Peers in this process take the store's values directly.
        let endpoint = {
            let store = store.clone();
            Arc::new(rask_transport::inproc::DataEndpoint::new(move |tasks| {
                stored(&store, tasks)
            }))
        };
        let _inproc = (cfg.transport == TransportMode::Auto)
            .then(|| rask_transport::inproc::register(&listen_addr, &endpoint));
        let (retire_tx, _) = tokio::sync::broadcast::channel::<Vec<u32>>(1024);
        // What peers and clients are answered: one lookup for every data connection.
        let lookup: rask_transport::data::LookupFn = {
            let store = store.clone();
            Arc::new(move |tasks, into_device| lookup_data(&store, tasks, into_device))
        };
        let shm_server = shm.map(|s| {
            tokio::spawn(tracing::Instrument::in_current_span(
                rask_transport::data::serve_unix(
                    s.listener,
                    cfg.conn.clone(),
                    arena.clone(),
                    retire_tx.clone(),
                    lookup.clone(),
                ),
            ))
        });
        // Ops on the CPU write their outputs to the arena: on a simulated GPU that is the
        // GPU's memory; a CUDA GPU's memory holds only its kernels' outputs.
        let alloc: Option<Arc<dyn OutputAlloc>> = Some(Arc::new(ArenaAlloc {
            arena: arena.clone(),
            device: match cfg.device {
                WorkerDevice::Sim { .. } => device_pool.clone(),
                _ => None,
            },
            min_len: rask_transport::shm::INLINE_MAX,
        }));
        let exec = Exec {
            registry: cfg.registry.clone(),
            alloc,
            device: accel,
        };
        let (events, mut rx) = mpsc::unbounded_channel::<Event>();

        // Scheduler reader.
        crate::rejoin::spawn_reader(reader, events.clone());

        // Data server.
        let data_server = tokio::spawn(tracing::Instrument::in_current_span(
            rask_transport::data::serve_tcp(listener, cfg.conn.clone(), lookup),
        ));

        // Executor threads.
        let (jobs, job_rx) = crossbeam_channel::unbounded::<Job>();
        let mut threads = Vec::new();
        for i in 0..cfg.nthreads.max(1) {
            let job_rx = job_rx.clone();
            let ev = events.clone();
            let exec = exec.clone();
            // The executor's tasks are told in the worker's span.
            let span = tracing::Span::current();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("rask-exec-{i}"))
                    .spawn(move || {
                        let _worker = span.entered();
                        executor_loop(&exec, &job_rx, &ev)
                    })
                    .expect("spawning an executor thread"),
            );
        }

        // The spill thread: copies values down a tier, off the event loop.
        let (spiller, spill_rx) = crossbeam_channel::unbounded::<memory::SpillJob>();
        let host_arena = Arena::new(rask_transport::shm::DEFAULT_SEGMENT);
        let spill_to = memory::SpillTo {
            host_arena: host_arena.clone(),
            dir: std::env::temp_dir(),
            worker: id.0 as u64,
        };
        {
            let ev = events.clone();
            let span = tracing::Span::current();
            threads.push(
                std::thread::Builder::new()
                    .name("rask-spill".into())
                    .spawn(move || {
                        let _worker = span.entered();
                        memory::spill_loop(&spill_to, &spill_rx, &ev)
                    })
                    .expect("spawning the spill thread"),
            );
        }

        let mut state = State {
            id,
            cfg: cfg.clone(),
            core: WorkerCore::new(cfg.nthreads as usize),
            store,
            specs: Default::default(),
            peers: FxHashMap::default(),
            links: FxHashMap::default(),
            no_ipc: Default::default(),
            outstanding: FxHashMap::default(),
            next_req: 0,
            to_scheduler,
            jobs,
            events: events.clone(),
            inline_until: Instant::now(),
            deferred: Vec::new(),
            clock: Instant::now(),
            instructions: Vec::new(),
            epoch: Instant::now(),
            exec,
            arena,
            retire_tx,
            host_id: rask_transport::host_id(),
            device_label: cfg.device.label(),
            host_gpu,
            spill: Spill::new(limits),
            spilled: Default::default(),
            host_arena,
            spiller,
            spilling: Default::default(),
            next_spill: 0,
            parked: Vec::new(),
            device_full_runs: Default::default(),
            lost: None,
            private_heap: 0,
            programs: FxHashMap::default(),
            device_pool,
            received: Default::default(),
            activity: Default::default(),
            hello,
            rejoining: false,
        };
        let interval = cfg.heartbeat_interval;
        let lifetime = cfg.lifetime;
        // The main loop runs as a spawned task (see the scheduler for why: waking a task
        // is cheaper than waking the runtime's `block_on` future).
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let main = tokio::spawn(
            async move {
                let mut heartbeat = tokio::time::interval(interval);
                heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                // At the end of its lifetime the worker asks to retire, once; the
                // scheduler closes it when its data has moved.
                let end_of_life = async {
                    match lifetime {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::pin!(end_of_life);
                let mut retiring = false;
                let mut batch = Vec::new();
                let result = loop {
                    tokio::select! {
                        biased;
                        n = rx.recv_many(&mut batch, 4096) => {
                            if n == 0 {
                                break Ok(());
                            }
                            let mut stop = None;
                            for ev in batch.drain(..) {
                                if let Some(r) = state.on_event(ev) {
                                    stop = Some(r);
                                    break;
                                }
                            }
                            state.drive();
                            if let Some(e) = state.stop_if_lost() {
                                break Err(e);
                            }
                            if let Some(r) = stop {
                                break r;
                            }
                        }
                        // Tasks wait for the next slice: they run once the loop's other
                        // tasks (the writer of the results so far) had their turn.
                        _ = tokio::task::yield_now(), if state.has_deferred() => {
                            state.drive();
                            if let Some(e) = state.stop_if_lost() {
                                break Err(e);
                            }
                        }
                        _ = heartbeat.tick() => {
                            if let Some(e) = state.heartbeat() {
                                break Err(e);
                            }
                        }
                        _ = &mut end_of_life, if !retiring => {
                            retiring = true;
                            info!("lifetime over: asking the scheduler to retire this worker");
                            let _ = state.to_scheduler.send(ToScheduler::CloseGracefully {
                                reason: "its lifetime is over".into(),
                            });
                        }
                        _ = &mut stop_rx => break Ok(()),
                    }
                };
                // Dropping the state closes the job queue: executor threads finish their
                // current op and exit (a long op is not interrupted).
                drop(state);
                if matches!(result, Err(WorkerError::DeviceLost { .. })) {
                    // What the scheduler was told goes out before the worker leaves: its
                    // connection is closed from this side once written, and the scheduler
                    // closes its side in turn.
                    let closed = async {
                        while let Some(ev) = rx.recv().await {
                            if let Event::SchedulerGone(_) = ev {
                                return;
                            }
                        }
                    };
                    let _ = tokio::time::timeout(LEAVE_GRACE, closed).await;
                }
                result
            }
            .in_current_span(),
        );
        drop(events);
        tokio::pin!(main);
        let result = tokio::select! {
            r = &mut main => r,
            _ = shutdown => {
                let _ = stop_tx.send(());
                main.await
            }
        };
        data_server.abort();
        if let Some(s) = shm_server {
            s.abort();
        }
        drop(threads);
        result.unwrap_or_else(|e| {
            Err(WorkerError::SchedulerLost(format!(
                "worker loop failed: {e}"
            )))
        })
    }
}

#[cfg(test)]
mod tests;

//! Workers as Slurm batch jobs, as dask-jobqueue's `SLURMCluster`: the scheduler runs in
//! this process; each job runs `rask worker` processes that dial back to it. The job
//! script is [`rask_deploy::slurm::SlurmJob`]'s (printable with
//! [`SlurmCluster::job_script`]); jobs are submitted with `sbatch`, counted as started
//! when their workers join, and cancelled with `scancel` when the cluster scales down or
//! closes.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use rask_deploy::slurm::{SlurmJob, Walltime};

use crate::{Client, ClusterError, LocalCluster};

/// The batch system jobs go to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BatchSystem {
    /// Slurm: `#SBATCH` scripts, `sbatch` and `scancel`.
    #[default]
    Slurm,
    /// PBS (PBS Pro, OpenPBS, Torque): `#PBS` scripts in dask-jobqueue's `PBSCluster`
    /// shape, `qsub` and `qdel`.
    Pbs,
}

/// A cluster of Slurm (or PBS) jobs: see [`SlurmCluster::builder`].
pub struct SlurmClusterBuilder {
    job: SlurmJob,
    system: BatchSystem,
    dir: Option<PathBuf>,
    scheduler_host: String,
    scheduler_contact: Option<String>,
    sbatch: PathBuf,
    scancel: PathBuf,
    env: Vec<(String, String)>,
}

impl SlurmClusterBuilder {
    /// Where the scheduler (in this process) listens: default 0.0.0.0, announcing this
    /// host's address, so that jobs on compute nodes reach it.
    pub fn scheduler_host(mut self, host: impl Into<String>) -> Self {
        self.scheduler_host = host.into();
        self
    }

    /// The address jobs are told to reach the scheduler at, HOST or HOST:PORT.
    pub fn scheduler_contact(mut self, addr: impl Into<String>) -> Self {
        self.scheduler_contact = Some(addr.into());
        self
    }

    /// Submit to PBS instead of Slurm (`qsub`, `qdel` and a `#PBS` script); set the
    /// programs with [`SlurmClusterBuilder::commands`] after this.
    pub fn pbs(mut self) -> Self {
        self.system = BatchSystem::Pbs;
        self.sbatch = "qsub".into();
        self.scancel = "qdel".into();
        self
    }

    /// The programs that submit and cancel jobs (default: `sbatch` and `scancel`, or
    /// `qsub` and `qdel`, from the PATH).
    pub fn commands(mut self, sbatch: impl Into<PathBuf>, scancel: impl Into<PathBuf>) -> Self {
        self.sbatch = sbatch.into();
        self.scancel = scancel.into();
        self
    }

    /// The directory jobs are submitted from, where a job's output goes unless the
    /// script's log directory says otherwise (default: this process's).
    pub fn submit_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// An environment variable for `sbatch` and `scancel` (e.g. `SLURM_CONF`); jobs
    /// inherit the submitter's environment, as `sbatch` does by default.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts the scheduler; no job is submitted until [`SlurmCluster::scale`].
    pub fn build(self) -> Result<SlurmCluster, ClusterError> {
        let mut b = LocalCluster::builder()
            .n_workers(0)
            .scheduler_host(self.scheduler_host.clone());
        if let Some(c) = &self.scheduler_contact {
            b = b.scheduler_contact(c.clone());
        }
        let cluster = b.build()?;
        let mut job = self.job;
        job.scheduler = cluster.scheduler_address().to_string();
        // A script that does not render fails here, before anything is submitted.
        render(&job, self.system).map_err(|e| ClusterError::Remote {
            what: "the job script".into(),
            reason: e.to_string(),
        })?;
        Ok(SlurmCluster {
            cluster,
            job,
            system: self.system,
            dir: self.dir,
            jobs: Vec::new(),
            sbatch: self.sbatch,
            scancel: self.scancel,
            env: self.env,
        })
    }
}

/// The script of `job` for `system`.
fn render(job: &SlurmJob, system: BatchSystem) -> Result<String, rask_deploy::DeployError> {
    match system {
        BatchSystem::Slurm => job.job_script(),
        BatchSystem::Pbs => job.pbs_script(),
    }
}

/// A scheduler here and workers in Slurm (or PBS) jobs; every job is cancelled when
/// dropped.
pub struct SlurmCluster {
    cluster: LocalCluster,
    job: SlurmJob,
    system: BatchSystem,
    dir: Option<PathBuf>,
    jobs: Vec<u64>,
    sbatch: PathBuf,
    scancel: PathBuf,
    env: Vec<(String, String)>,
}

impl SlurmCluster {
    /// A cluster whose jobs are like `job` (its `scheduler` is filled in).
    pub fn builder(job: SlurmJob) -> SlurmClusterBuilder {
        SlurmClusterBuilder {
            job,
            system: BatchSystem::Slurm,
            dir: None,
            scheduler_host: "0.0.0.0".into(),
            scheduler_contact: None,
            sbatch: "sbatch".into(),
            scancel: "scancel".into(),
            env: Vec::new(),
        }
    }

    /// The script each job runs.
    pub fn job_script(&self) -> String {
        render(&self.job, self.system)
            .expect("invariant: the script rendered when the cluster was built")
    }

    /// The scheduler's address.
    pub fn scheduler_address(&self) -> &str {
        self.cluster.scheduler_address()
    }

    /// A client of this cluster.
    pub fn client(&self) -> Result<Client, crate::ClientError> {
        Client::connect(self.cluster.scheduler_address())
    }

    /// The jobs submitted and not cancelled, by id.
    pub fn jobs(&self) -> &[u64] {
        &self.jobs
    }

    /// Worker processes per job.
    pub fn processes_per_job(&self) -> usize {
        self.job.layout().map_or(1, |l| l.processes as usize)
    }

    /// Asks for `workers` workers: submits jobs, or retires the workers of the newest
    /// jobs gracefully and cancels them, so that there are `ceil(workers / processes per
    /// job)` of them. Returns when the jobs are
    /// submitted or cancelled; workers join as their jobs start (see
    /// [`SlurmCluster::wait_for_workers`]).
    pub fn scale(&mut self, workers: usize) -> Result<(), ClusterError> {
        let want = workers.div_ceil(self.processes_per_job());
        while self.jobs.len() < want {
            let id = self.submit()?;
            self.jobs.push(id);
        }
        if self.jobs.len() > want {
            let gone = self.jobs.split_off(want);
            // Their workers are retired first: what only they hold moves to others.
            let client = self.client()?;
            let names: Vec<String> = client
                .scheduler_info()?
                .workers
                .iter()
                .filter(|w| self.job_of(&w.name).is_some_and(|id| gone.contains(&id)))
                .map(|w| w.name.clone())
                .collect();
            if !names.is_empty() {
                client.retire_workers(&names)?;
            }
            self.cancel(&gone)?;
        }
        Ok(())
    }

    /// Waits until `n` workers have joined, or `timeout` has passed.
    pub fn wait_for_workers(&self, n: usize, timeout: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + timeout;
        let client = self.client()?;
        loop {
            let joined = client.scheduler_info()?.workers.len();
            if joined >= n {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Remote {
                    what: format!("jobs {:?}", self.jobs),
                    reason: format!("{joined} of {n} workers joined within {timeout:?}"),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn command(&self, program: &PathBuf) -> Command {
        let mut c = Command::new(program);
        c.envs(self.env.iter().cloned());
        if let Some(d) = &self.dir {
            c.current_dir(d);
        }
        c
    }

    /// Submits one job; its id.
    fn submit(&self) -> Result<u64, ClusterError> {
        use std::io::Write;
        let script = self.job_script();
        let program = self.sbatch.display().to_string();
        let err = |reason: String| ClusterError::Remote {
            what: program.clone(),
            reason,
        };
        let out = match self.system {
            BatchSystem::Slurm => {
                let mut child = self
                    .command(&self.sbatch)
                    .arg("--parsable")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| err(format!("cannot run it: {e}")))?;
                child
                    .stdin
                    .take()
                    .expect("piped")
                    .write_all(script.as_bytes())
                    .map_err(|e| err(format!("writing the script: {e}")))?;
                child.wait_with_output().map_err(|e| err(e.to_string()))?
            }
            BatchSystem::Pbs => {
                // qsub takes a file (Torque's and Slurm's PBS compatibility both do).
                static NEXT: std::sync::atomic::AtomicUsize =
                    std::sync::atomic::AtomicUsize::new(0);
                let file = std::env::temp_dir().join(format!(
                    "rask-job-{}-{}.pbs",
                    std::process::id(),
                    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ));
                std::fs::write(&file, &script)
                    .map_err(|e| err(format!("writing {}: {e}", file.display())))?;
                let out = self
                    .command(&self.sbatch)
                    .arg(&file)
                    .output()
                    .map_err(|e| err(format!("cannot run it: {e}")));
                let _ = std::fs::remove_file(&file);
                out?
            }
        };
        if !out.status.success() {
            return Err(err(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        match self.system {
            BatchSystem::Slurm => SlurmJob::parse_job_id(&stdout),
            BatchSystem::Pbs => SlurmJob::parse_pbs_job_id(&stdout),
        }
        .map_err(|e| err(e.to_string()))
    }

    fn cancel(&self, jobs: &[u64]) -> Result<(), ClusterError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let out = self
            .command(&self.scancel)
            .args(jobs.iter().map(u64::to_string))
            .output()
            .map_err(|e| ClusterError::Remote {
                what: self.scancel.display().to_string(),
                reason: format!("cannot run {}: {e}", self.scancel.display()),
            })?;
        if !out.status.success() {
            return Err(ClusterError::Remote {
                what: format!("scancel {jobs:?}"),
                reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    /// Cancels every job and stops the scheduler.
    pub fn close(mut self) -> Result<(), ClusterError> {
        let jobs = std::mem::take(&mut self.jobs);
        self.cancel(&jobs)
    }
}

impl SlurmCluster {
    /// The job a worker belongs to, from its name (`NAME-JOBID` or `NAME-JOBID-I`).
    fn job_of(&self, worker: &str) -> Option<u64> {
        let rest = worker.strip_prefix(&self.job.name)?.strip_prefix('-')?;
        rest.split('-').next()?.parse().ok()
    }

    /// Retires the named workers gracefully, then cancels the jobs left without workers;
    /// returns the workers retired.
    pub fn retire_workers(&mut self, names: &[String]) -> Result<Vec<String>, ClusterError> {
        let client = self.client()?;
        let retired = client.retire_workers(names)?;
        let remaining: Vec<String> = client
            .scheduler_info()?
            .workers
            .iter()
            .map(|w| w.name.clone())
            .collect();
        let empty: Vec<u64> = self
            .jobs
            .iter()
            .copied()
            .filter(|id| !remaining.iter().any(|w| self.job_of(w) == Some(*id)))
            .filter(|id| retired.iter().any(|w| self.job_of(w) == Some(*id)))
            .collect();
        self.jobs.retain(|id| !empty.contains(id));
        self.cancel(&empty)?;
        Ok(retired)
    }
}

impl crate::adapt::Scalable for SlurmCluster {
    fn address(&self) -> String {
        self.cluster.scheduler_address().to_string()
    }
    fn planned(&self) -> usize {
        self.jobs.len() * self.processes_per_job()
    }
    fn scale_up(&mut self, n: usize) -> Result<(), ClusterError> {
        self.scale(n)
    }
    fn scale_down(&mut self, names: &[String]) -> Result<(), ClusterError> {
        self.retire_workers(names).map(drop)
    }
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        let jobs = std::mem::take(&mut self.jobs);
        let _ = self.cancel(&jobs);
    }
}

/// A whole cluster in one Slurm job step, as dask-jobqueue's `SLURMRunner`: the program,
/// started on every rank by `srun`, calls [`SlurmRunner::start`] first. Rank 0 becomes the
/// scheduler and rank 2 and up workers (of this program: its typed ops run there); they
/// never return from `start`, and their processes end when the cluster shuts down. Rank 1
/// goes on as the client, and [`SlurmRunner::close`] shuts the whole cluster down.
///
/// The ranks meet through a scheduler file on a file system they share:
/// `$RASK_SCHEDULER_FILE`, else `rask-scheduler-$SLURM_JOB_ID` in `$SLURM_SUBMIT_DIR`.
///
/// ```sh
/// sbatch -n 6 --wrap 'srun ./my-program'    # a scheduler, the client, 4 workers
/// ```
pub struct SlurmRunner {
    client: Client,
    file: PathBuf,
}

/// One rank's part, from Slurm's environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rank {
    /// The scheduler (rank 0).
    Scheduler,
    /// The client: the program itself (rank 1).
    Client,
    /// A worker (rank 2 and up), by its rank.
    Worker(u32),
}

impl Rank {
    /// The part of `SLURM_PROCID` = `procid` in a step of `ntasks` ranks.
    pub fn of(procid: &str, ntasks: &str) -> Result<Rank, String> {
        let rank: u32 = procid
            .trim()
            .parse()
            .map_err(|_| format!("SLURM_PROCID={procid:?} is not a rank"))?;
        let n: u32 = ntasks
            .trim()
            .parse()
            .map_err(|_| format!("SLURM_NTASKS={ntasks:?} is not a number of tasks"))?;
        if n < 3 {
            return Err(format!(
                "a step of {n} tasks: a scheduler, a client and at least one worker need 3 (srun -n 3 or more)"
            ));
        }
        Ok(match rank {
            0 => Rank::Scheduler,
            1 => Rank::Client,
            r => Rank::Worker(r),
        })
    }
}

/// Where the ranks meet.
fn runner_file() -> Result<PathBuf, ClusterError> {
    if let Some(f) = std::env::var_os(crate::SCHEDULER_FILE_ENV).filter(|f| !f.is_empty()) {
        return Ok(PathBuf::from(f));
    }
    let job = std::env::var("SLURM_JOB_ID").map_err(|_| ClusterError::Remote {
        what: "SlurmRunner".into(),
        reason: "SLURM_JOB_ID is not set: run the program with srun inside a job".into(),
    })?;
    let dir = std::env::var_os("SLURM_SUBMIT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    Ok(dir.join(format!("rask-scheduler-{job}")))
}

impl SlurmRunner {
    /// Plays this rank's part (see [`SlurmRunner`]); returns only on rank 1.
    pub fn start() -> Result<SlurmRunner, ClusterError> {
        let env = |k: &str| std::env::var(k).unwrap_or_default();
        let rank = Rank::of(&env("SLURM_PROCID"), &env("SLURM_NTASKS")).map_err(|reason| {
            ClusterError::Remote {
                what: "SlurmRunner".into(),
                reason,
            }
        })?;
        let file = runner_file()?;
        let remote = |reason: String| ClusterError::Remote {
            what: format!("SlurmRunner rank {}", env("SLURM_PROCID")),
            reason,
        };
        if rank != Rank::Client {
            crate::cli::init_logging("warn", crate::cli::LogFormat::Text);
        }
        match rank {
            Rank::Scheduler => {
                crate::cli::run_scheduler_until_shutdown(&file)
                    .map_err(|e| remote(e.to_string()))?;
                std::process::exit(0);
            }
            Rank::Worker(r) => {
                let mut args = crate::cli::WorkerArgs::new("");
                args.scheduler = None;
                args.scheduler_file = Some(file);
                args.name = Some(format!("rank-{r}"));
                args.host = Some("0.0.0.0".into());
                if let Ok(c) = env("SLURM_CPUS_PER_TASK").parse::<u32>() {
                    args.nthreads = Some(c.max(1));
                }
                let code = match crate::cli::run_worker(args, rask_kernels::Registry::program()) {
                    Ok(()) => 0,
                    Err(e) => {
                        crate::errln!("rask worker (rank {r}): {e}");
                        1
                    }
                };
                std::process::exit(code);
            }
            Rank::Client => {
                let deadline = Instant::now() + Duration::from_secs(120);
                let addr = loop {
                    match crate::cli::read_scheduler_file(&file) {
                        Ok(a) => break a,
                        Err(e) if Instant::now() >= deadline => return Err(remote(e)),
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                };
                let client = loop {
                    match Client::connect(&addr) {
                        Ok(c) => break c,
                        Err(e) if Instant::now() >= deadline => return Err(e.into()),
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                };
                Ok(SlurmRunner { client, file })
            }
        }
    }

    /// The client of the job's cluster.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The workers the step was started with (ranks 2 and up).
    pub fn expected_workers() -> usize {
        std::env::var("SLURM_NTASKS")
            .ok()
            .and_then(|n| n.trim().parse::<usize>().ok())
            .map_or(0, |n| n.saturating_sub(2))
    }

    /// Shuts the cluster down: the scheduler and every worker end, and with them the
    /// step's other ranks.
    pub fn close(self) -> Result<(), ClusterError> {
        self.client.shutdown()?;
        let _ = std::fs::remove_file(&self.file);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_are_scheduler_client_and_workers_and_a_step_needs_three() {
        assert_eq!(Rank::of("0", "4"), Ok(Rank::Scheduler));
        assert_eq!(Rank::of("1", "4"), Ok(Rank::Client));
        assert_eq!(Rank::of("3", "4"), Ok(Rank::Worker(3)));
        assert!(Rank::of("0", "2")
            .unwrap_err()
            .contains("at least one worker"));
        assert!(Rank::of("", "4").unwrap_err().contains("SLURM_PROCID"));
        assert!(Rank::of("1", "x").unwrap_err().contains("SLURM_NTASKS"));
    }
}

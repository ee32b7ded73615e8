//! Slurm job scripts that start Rask workers, in the shape of dask-jobqueue's
//! `SLURMCluster` scripts: a shebang, `#SBATCH` directives, prologue lines, one
//! `rask worker` command line and epilogue lines.
//!
//! The scheduler runs elsewhere (usually beside the client); each job started with
//! `sbatch` runs `rask worker`, which dials back to it, and gives up after
//! `--death-timeout` when the scheduler is gone. A job of `cores` cores and `memory`
//! bytes runs `processes` worker processes of `cores / processes` threads and
//! `memory / processes` bytes each ([`SlurmJob::layout`]).
//!
//! ```
//! use rask_deploy::slurm::SlurmJob;
//!
//! let mut job = SlurmJob::new("tcp://login1:8786", 2, 3 << 29);
//! job.account = Some("proj42".into());
//! job.walltime = "2:00:00".parse().unwrap();
//! assert_eq!(
//!     job.job_script().unwrap(),
//!     "#!/usr/bin/env bash\n\
//!      \n\
//!      #SBATCH -J rask-worker\n\
//!      #SBATCH -A proj42\n\
//!      #SBATCH -n 1\n\
//!      #SBATCH -N 1\n\
//!      #SBATCH --cpus-per-task=2\n\
//!      #SBATCH --mem=1536M\n\
//!      #SBATCH -t 02:00:00\n\
//!      rask worker tcp://login1:8786 --name rask-worker-$SLURM_JOB_ID --nthreads 1 \
//!      --memory-limit 805306368 --nworkers 2 --death-timeout 60\n"
//! );
//! assert_eq!(SlurmJob::parse_job_id("Submitted batch job 4711\n"), Ok(4711));
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::shell::{sbatch_quote, shell_quote};
use crate::DeployError;

/// The first line of a job script unless [`SlurmJob::shebang`] says otherwise.
pub const DEFAULT_SHEBANG: &str = "#!/usr/bin/env bash";

/// The forms [`Walltime::parse`] accepts, for error messages.
const WALLTIME_FORMS: &str = "MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS";

/// A job's time limit (`#SBATCH -t`), at least one second.
///
/// Parsed from the forms `sbatch --time` takes: `MINUTES`, `MM:SS`, `HH:MM:SS`, `D-HH`,
/// `D-HH:MM` and `D-HH:MM:SS`; displayed as `HH:MM:SS`, or `D-HH:MM:SS` from one day on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Walltime {
    secs: u64,
}

impl Walltime {
    /// A time limit of `secs` seconds; zero is refused (Slurm reads `-t 0` as no limit).
    pub fn from_secs(secs: u64) -> Result<Walltime, DeployError> {
        if secs == 0 {
            return Err(DeployError::invalid(
                "walltime",
                "0 s",
                "a job's time limit must be longer than zero",
            ));
        }
        Ok(Walltime { secs })
    }

    /// Parses a time limit in one of Slurm's forms (see [`Walltime`]). Minutes and
    /// seconds after a `:` must be below 60 and hours after a `D-` below 24; the leading
    /// field may be as large as it likes (`90` is 90 minutes, `100:00:00` 100 hours).
    /// No spaces, signs or fractions.
    pub fn parse(s: &str) -> Result<Walltime, DeployError> {
        let bad = |reason: String| {
            DeployError::invalid(
                "walltime",
                s,
                format!("{reason}; expected {WALLTIME_FORMS}"),
            )
        };
        let num = |part: &str| -> Result<u64, DeployError> {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!("{part:?} is not a whole number")));
            }
            part.parse::<u64>()
                .map_err(|_| bad(format!("{part} is too large")))
        };
        let below = |v: u64, limit: u64, what: &str| -> Result<u64, DeployError> {
            if v < limit {
                Ok(v)
            } else {
                Err(bad(format!("{what} {v} is not below {limit}")))
            }
        };
        let (days, clock) = match s.split_once('-') {
            Some((d, rest)) => (Some(num(d)?), rest),
            None => (None, s),
        };
        let fields = clock.split(':').map(num).collect::<Result<Vec<_>, _>>()?;
        let (d, h, m, sec) = match (days, fields.as_slice()) {
            (None, &[m]) => (0, 0, m, 0),
            (None, &[m, s]) => (0, 0, m, below(s, 60, "seconds")?),
            (None, &[h, m, s]) => (0, h, below(m, 60, "minutes")?, below(s, 60, "seconds")?),
            (Some(d), &[h]) => (d, below(h, 24, "hours")?, 0, 0),
            (Some(d), &[h, m]) => (d, below(h, 24, "hours")?, below(m, 60, "minutes")?, 0),
            (Some(d), &[h, m, s]) => (
                d,
                below(h, 24, "hours")?,
                below(m, 60, "minutes")?,
                below(s, 60, "seconds")?,
            ),
            _ => return Err(bad("too many fields".into())),
        };
        let total = d
            .checked_mul(86_400)
            .and_then(|t| t.checked_add(h.checked_mul(3600)?))
            .and_then(|t| t.checked_add(m.checked_mul(60)?))
            .and_then(|t| t.checked_add(sec))
            .ok_or_else(|| bad("too long".into()))?;
        if total == 0 {
            return Err(bad("a job's time limit must be longer than zero".into()));
        }
        Ok(Walltime { secs: total })
    }

    /// The limit in seconds.
    pub fn as_secs(self) -> u64 {
        self.secs
    }
}

impl Default for Walltime {
    /// 30 minutes, dask-jobqueue's default.
    fn default() -> Walltime {
        Walltime { secs: 30 * 60 }
    }
}

impl FromStr for Walltime {
    type Err = DeployError;

    fn from_str(s: &str) -> Result<Walltime, DeployError> {
        Walltime::parse(s)
    }
}

impl fmt::Display for Walltime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (d, rest) = (self.secs / 86_400, self.secs % 86_400);
        let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
        if d > 0 {
            write!(f, "{d}-{h:02}:{m:02}:{s:02}")
        } else {
            write!(f, "{h:02}:{m:02}:{s:02}")
        }
    }
}

/// How a job's cores and memory are split among its worker processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerLayout {
    /// Worker processes in the job (`--nworkers`).
    pub processes: u32,
    /// Threads of each process (`--nthreads`): the job's cores divided by the processes.
    pub threads: u32,
    /// Memory limit of each process in bytes (`--memory-limit`): the job's memory
    /// divided by the processes.
    pub memory: u64,
}

/// dask-jobqueue's default number of worker processes for a job of `cores` cores:
/// one process per core up to 4 cores, else the smallest factor of `cores` that is at
/// least √`cores` (8 → 4 processes of 2 threads, 12 → 4 of 3, 7 → 7 of 1).
pub fn default_processes(cores: u32) -> u32 {
    if cores <= 4 {
        return cores;
    }
    // The smallest factor ≥ √n is n divided by the largest factor ≤ √n.
    let small = (1..=cores.isqrt())
        .rev()
        .find(|f| cores.is_multiple_of(*f))
        .unwrap_or(1);
    cores / small
}

/// `bytes` as a value of `sbatch --mem`, rounded up to whole KiB and written in the
/// largest of Slurm's units `K`, `M`, `G` (which mean KiB, MiB and GiB) that represents
/// it exactly: 4 GiB → `4G`, 1.5 GiB → `1536M`, 1000 bytes → `1K`. Zero is `0`, which
/// Slurm reads as all of a node's memory.
pub fn slurm_memory(bytes: u64) -> String {
    let kib = bytes.div_ceil(1024);
    if kib == 0 {
        "0".into()
    } else if kib.is_multiple_of(1024 * 1024) {
        format!("{}G", kib / (1024 * 1024))
    } else if kib.is_multiple_of(1024) {
        format!("{}M", kib / 1024)
    } else {
        format!("{kib}K")
    }
}

/// A Slurm job that runs Rask workers: what dask-jobqueue's `SLURMCluster` takes, with
/// its defaults. Build one with [`SlurmJob::new`] (or `..Default::default()`, then set
/// at least [`scheduler`](SlurmJob::scheduler) and [`memory`](SlurmJob::memory)) and
/// render it with [`SlurmJob::job_script`].
///
/// Values are validated when rendered. Fields written into `#SBATCH` lines must hold no
/// newline; every value written into the worker command is shell-quoted unless it is a
/// plain token, so it reaches `rask worker` as one argument, unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmJob {
    /// The scheduler the workers join, e.g. `tcp://10.0.0.1:8786`.
    pub scheduler: String,
    /// The job's name (`#SBATCH -J`), also the prefix of the workers' names
    /// (`NAME-$SLURM_JOB_ID`) and of the log files. Default `rask-worker`.
    pub name: String,
    /// Cores of the job (`--cpus-per-task`), shared by all its worker processes.
    pub cores: u32,
    /// Memory of the job in bytes (`--mem`), shared by all its worker processes.
    pub memory: u64,
    /// Worker processes per job; `None` means [`default_processes`]`(cores)`.
    pub processes: Option<u32>,
    /// The job's time limit (`-t`). Default 30 minutes.
    pub walltime: Walltime,
    /// The partition (`-p`), dask-jobqueue's `queue`.
    pub partition: Option<String>,
    /// The account charged (`-A`).
    pub account: Option<String>,
    /// A directory for the job's stderr and stdout (`-e`/`-o DIR/NAME-%J.err|out`);
    /// `None` leaves Slurm's default (`slurm-%j.out` in the submit directory).
    pub log_directory: Option<String>,
    /// More `#SBATCH` lines, each written as given after `#SBATCH ` (e.g.
    /// `--gres=gpu:1`, `--exclusive`). They are never skipped.
    pub extra_directives: Vec<String>,
    /// Generated directives to leave out: a line is dropped when any of these strings
    /// occurs in it, `#SBATCH ` included (e.g. `--mem` to let the partition decide), as
    /// dask-jobqueue's `job_directives_skip`. Put a replacement in `extra_directives`.
    pub directives_skip: Vec<String>,
    /// Shell lines run before the workers start (e.g. `module load cuda`), as given.
    pub prologue: Vec<String>,
    /// Shell lines run after the workers stopped, as given.
    pub epilogue: Vec<String>,
    /// The script's first line. Default [`DEFAULT_SHEBANG`].
    pub shebang: String,
    /// The `rask` program on the compute nodes, a name looked up in `PATH` or a path
    /// (written quoted, so not expanded: set `PATH` in the prologue). Default `rask`.
    pub rask_bin: String,
    /// How long workers wait for a scheduler they lost before exiting
    /// (`--death-timeout`, in seconds). Default 60 s.
    pub death_timeout: Duration,
    /// When set, each worker retires itself after about this long (`--lifetime`), so
    /// the walltime does not kill it with tasks in flight; pair it with `adapt` to have
    /// new jobs replace old ones. Make it shorter than the walltime.
    pub lifetime: Option<Duration>,
    /// Spread of the workers' lifetimes (`--lifetime-stagger`), so the workers of a
    /// job do not all leave at once; written only with a `lifetime`.
    pub lifetime_stagger: Duration,
    /// More `rask worker` arguments, each shell-quoted as one argument.
    pub worker_extra_args: Vec<String>,
}

impl Default for SlurmJob {
    fn default() -> SlurmJob {
        SlurmJob {
            scheduler: String::new(),
            name: "rask-worker".into(),
            cores: 1,
            memory: 0,
            processes: None,
            walltime: Walltime::default(),
            partition: None,
            account: None,
            log_directory: None,
            extra_directives: Vec::new(),
            directives_skip: Vec::new(),
            prologue: Vec::new(),
            epilogue: Vec::new(),
            shebang: DEFAULT_SHEBANG.into(),
            rask_bin: "rask".into(),
            death_timeout: Duration::from_secs(60),
            lifetime: None,
            lifetime_stagger: Duration::ZERO,
            worker_extra_args: Vec::new(),
        }
    }
}

/// Refuses an empty value.
fn non_empty(field: &'static str, value: &str) -> Result<(), DeployError> {
    if value.is_empty() {
        return Err(DeployError::invalid(field, value, "must not be empty"));
    }
    Ok(())
}

/// Refuses a NUL (bash drops it silently, changing the value).
fn no_nul(field: &'static str, value: &str) -> Result<(), DeployError> {
    if value.contains('\0') {
        return Err(DeployError::invalid(field, value, "must not contain a NUL"));
    }
    Ok(())
}

/// Refuses a value that would not stay on its line (or would be cut short).
fn one_line(field: &'static str, value: &str) -> Result<(), DeployError> {
    if value.contains(['\n', '\r']) {
        return Err(DeployError::invalid(
            field,
            value,
            "must not contain a newline (it is written on one line)",
        ));
    }
    no_nul(field, value)
}

/// Seconds as `rask worker` takes them: a whole number when whole.
fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        d.as_secs_f64().to_string()
    }
}

/// Escapes `%` for a Slurm file name pattern, where `%%` is a literal `%`.
fn escape_percent(s: &str) -> String {
    s.replace('%', "%%")
}

impl SlurmJob {
    /// A job of `cores` cores and `memory` bytes whose workers join `scheduler`, with
    /// every other field at its default.
    pub fn new(scheduler: impl Into<String>, cores: u32, memory: u64) -> SlurmJob {
        SlurmJob {
            scheduler: scheduler.into(),
            cores,
            memory,
            ..SlurmJob::default()
        }
    }

    /// The job's worker processes, threads per process and memory per process.
    pub fn layout(&self) -> Result<WorkerLayout, DeployError> {
        let cores = self.cores;
        if cores == 0 {
            return Err(DeployError::invalid(
                "cores",
                0,
                "a job needs at least one core",
            ));
        }
        let processes = self.processes.unwrap_or_else(|| default_processes(cores));
        if processes == 0 {
            return Err(DeployError::invalid(
                "processes",
                0,
                "a job needs at least one worker process",
            ));
        }
        if processes > cores {
            return Err(DeployError::invalid(
                "processes",
                processes,
                format!("more worker processes than the job's {cores} cores"),
            ));
        }
        if self.memory == 0 {
            return Err(DeployError::invalid(
                "memory",
                0,
                "a job needs memory (bytes per job)",
            ));
        }
        let memory = self.memory / u64::from(processes);
        if memory == 0 {
            return Err(DeployError::invalid(
                "memory",
                self.memory,
                format!("less than one byte for each of {processes} worker processes"),
            ));
        }
        Ok(WorkerLayout {
            processes,
            threads: cores / processes,
            memory,
        })
    }

    /// The line that starts the job's workers:
    /// `RASK_BIN worker SCHEDULER --name NAME-$SLURM_JOB_ID --nthreads T --memory-limit M
    /// --nworkers P --death-timeout S [--lifetime L --lifetime-stagger S] [extra args]`,
    /// every value shell-quoted unless a plain token, and the job id left to the shell.
    pub fn worker_command(&self) -> Result<String, DeployError> {
        self.worker_command_with("$SLURM_JOB_ID")
    }

    /// [`SlurmJob::worker_command`] with the job id read from `job_id` (a shell
    /// expansion).
    pub(crate) fn worker_command_with(&self, job_id: &str) -> Result<String, DeployError> {
        let layout = self.layout()?;
        non_empty("rask_bin", &self.rask_bin)?;
        no_nul("rask_bin", &self.rask_bin)?;
        non_empty("scheduler", &self.scheduler)?;
        one_line("scheduler", &self.scheduler)?;
        non_empty("name", &self.name)?;
        one_line("name", &self.name)?;
        let mut words: Vec<String> = vec![
            shell_quote(&self.rask_bin).into_owned(),
            "worker".into(),
            shell_quote(&self.scheduler).into_owned(),
            "--name".into(),
            format!("{}-{job_id}", shell_quote(&self.name)),
            "--nthreads".into(),
            layout.threads.to_string(),
            "--memory-limit".into(),
            layout.memory.to_string(),
            "--nworkers".into(),
            layout.processes.to_string(),
            "--death-timeout".into(),
            seconds(self.death_timeout),
        ];
        if let Some(lifetime) = self.lifetime {
            words.extend([
                "--lifetime".into(),
                seconds(lifetime),
                "--lifetime-stagger".into(),
                seconds(self.lifetime_stagger),
            ]);
        }
        for arg in &self.worker_extra_args {
            no_nul("worker_extra_args", arg)?;
            words.push(shell_quote(arg).into_owned());
        }
        Ok(words.join(" "))
    }

    /// The generated `#SBATCH` lines before `directives_skip` and the extra ones.
    fn directives(&self) -> Result<Vec<String>, DeployError> {
        let mut lines = vec![format!("-J {}", sbatch_quote(&self.name))];
        if let Some(dir) = &self.log_directory {
            non_empty("log_directory", dir)?;
            one_line("log_directory", dir)?;
            // `logs/` and `logs` alike; `/` becomes `` and then `/NAME-%J`.
            let dir = dir.trim_end_matches('/');
            let stem = format!("{}/{}-%J", escape_percent(dir), escape_percent(&self.name));
            lines.push(format!("-e {}", sbatch_quote(&format!("{stem}.err"))));
            lines.push(format!("-o {}", sbatch_quote(&format!("{stem}.out"))));
        }
        if let Some(partition) = &self.partition {
            non_empty("partition", partition)?;
            one_line("partition", partition)?;
            lines.push(format!("-p {}", sbatch_quote(partition)));
        }
        if let Some(account) = &self.account {
            non_empty("account", account)?;
            one_line("account", account)?;
            lines.push(format!("-A {}", sbatch_quote(account)));
        }
        lines.extend([
            "-n 1".into(),
            "-N 1".into(),
            format!("--cpus-per-task={}", self.cores),
            format!("--mem={}", slurm_memory(self.memory)),
            format!("-t {}", self.walltime),
        ]);
        Ok(lines)
    }

    /// The whole job script, to be given to `sbatch`: the shebang, an empty line, the
    /// `#SBATCH` directives (`-J`, `-e`/`-o`, `-p`, `-A`, `-n 1`, `-N 1`,
    /// `--cpus-per-task`, `--mem`, `-t`, less those matching `directives_skip`, then the
    /// extra ones), the prologue, the [worker command](SlurmJob::worker_command) and the
    /// epilogue, one per line.
    pub fn job_script(&self) -> Result<String, DeployError> {
        self.render(
            ("#SBATCH", "sbatch"),
            self.directives()?,
            &[],
            self.worker_command()?,
        )
    }

    /// A job script for a batch system whose directives start with `prefix`, read by
    /// `reader`: the shebang, an empty line, `directives` (less those matching
    /// `directives_skip`), the extra directives, the prologue, `setup` lines, `command`
    /// and the epilogue.
    fn render(
        &self,
        (prefix, reader): (&str, &str),
        directives: Vec<String>,
        setup: &[&str],
        command: String,
    ) -> Result<String, DeployError> {
        one_line("shebang", &self.shebang)?;
        if !self.shebang.starts_with("#!") {
            return Err(DeployError::invalid(
                "shebang",
                &self.shebang,
                "must start with #!",
            ));
        }
        for skip in &self.directives_skip {
            if skip.is_empty() {
                return Err(DeployError::invalid(
                    "directives_skip",
                    skip,
                    "an empty string would skip every directive",
                ));
            }
        }
        let mut script = format!("{}\n\n", self.shebang);
        for directive in directives {
            let line = format!("{prefix} {directive}");
            if !self
                .directives_skip
                .iter()
                .any(|s| line.contains(s.as_str()))
            {
                script.push_str(&line);
                script.push('\n');
            }
        }
        for directive in &self.extra_directives {
            non_empty("extra_directives", directive)?;
            one_line("extra_directives", directive)?;
            if directive.starts_with('#') {
                return Err(DeployError::invalid(
                    "extra_directives",
                    directive,
                    format!("write the directive without `{prefix}` ({reader} would read it as a comment)"),
                ));
            }
            script.push_str(&format!("{prefix} {directive}\n"));
        }
        for line in &self.prologue {
            no_nul("prologue", line)?;
            script.push_str(line);
            script.push('\n');
        }
        for line in setup {
            script.push_str(line);
            script.push('\n');
        }
        script.push_str(&command);
        script.push('\n');
        for line in &self.epilogue {
            no_nul("epilogue", line)?;
            script.push_str(line);
            script.push('\n');
        }
        Ok(script)
    }

    /// The job id in what `sbatch` printed on stdout: `Submitted batch job 123`
    /// (optionally followed by ` on cluster NAME`), or with `--parsable` `123` or
    /// `123;cluster`. The first line of one of these forms counts.
    pub fn parse_job_id(sbatch_stdout: &str) -> Result<u64, DeployError> {
        let no_id = || DeployError::NoJobId {
            output: sbatch_stdout.to_string(),
        };
        let number = |s: &str| -> Option<u64> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        for line in sbatch_stdout.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("Submitted batch job ") {
                let mut words = rest.split_whitespace();
                let id = words.next().and_then(number).ok_or_else(no_id)?;
                return match (words.next(), words.next(), words.next()) {
                    (None, ..) | (Some("on"), Some("cluster"), Some(_)) => Ok(id),
                    _ => Err(no_id()),
                };
            }
            let id = line.split_once(';').map_or(line, |(id, _cluster)| id);
            if let Some(id) = number(id) {
                return Ok(id);
            }
        }
        Err(no_id())
    }
}

mod pbs;
#[cfg(test)]
mod tests;

pub use pbs::pbs_memory;

//! The same job for PBS (PBS Pro, OpenPBS, Torque), in dask-jobqueue's `PBSCluster`
//! shape.

use super::*;

/// `bytes` as a PBS memory request: rounded up to whole KiB, in the largest binary unit
/// that is exact (PBS's `gb`, `mb` and `kb` are 1024-based): 4 GiB → `4gb`, 1.5 GiB →
/// `1536mb`.
pub fn pbs_memory(bytes: u64) -> String {
    let kib = bytes.div_ceil(1024).max(1);
    if kib.is_multiple_of(1024 * 1024) {
        format!("{}gb", kib / (1024 * 1024))
    } else if kib.is_multiple_of(1024) {
        format!("{}mb", kib / 1024)
    } else {
        format!("{kib}kb")
    }
}

impl Walltime {
    /// `HH:MM:SS` with the hours counting past a day (PBS's form).
    pub fn hms(secs: u64) -> String {
        format!(
            "{:02}:{:02}:{:02}",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        )
    }
}

impl SlurmJob {
    /// The job's script for PBS, to be given to `qsub`: `#PBS -N`, `-q` (the partition),
    /// `-A`, `-l select=1:ncpus=C:mem=M`, `-l walltime=`, `-e`/`-o` (the log directory),
    /// the extra directives, the prologue, the worker command (the job id from
    /// `$PBS_JOBID` without its server part, or `$SLURM_JOB_ID` under Slurm's PBS
    /// compatibility) and the epilogue. `directives_skip` applies as for Slurm.
    pub fn pbs_script(&self) -> Result<String, DeployError> {
        let mut lines = vec![format!("-N {}", sbatch_quote(&self.name))];
        if let Some(q) = &self.partition {
            non_empty("partition", q)?;
            one_line("partition", q)?;
            lines.push(format!("-q {}", sbatch_quote(q)));
        }
        if let Some(a) = &self.account {
            non_empty("account", a)?;
            one_line("account", a)?;
            lines.push(format!("-A {}", sbatch_quote(a)));
        }
        lines.push(format!(
            "-l select=1:ncpus={}:mem={}",
            self.cores,
            pbs_memory(self.memory)
        ));
        lines.push(format!(
            "-l walltime={}",
            Walltime::hms(self.walltime.as_secs())
        ));
        if let Some(dir) = &self.log_directory {
            non_empty("log_directory", dir)?;
            one_line("log_directory", dir)?;
            let dir = format!("{}/", dir.trim_end_matches('/'));
            lines.push(format!("-e {}", sbatch_quote(&dir)));
            lines.push(format!("-o {}", sbatch_quote(&dir)));
        }
        self.render(
            ("#PBS", "qsub"),
            lines,
            &[
                "RASK_JOB_ID=${PBS_JOBID%%.*}",
                "RASK_JOB_ID=${RASK_JOB_ID:-$SLURM_JOB_ID}",
            ],
            self.worker_command_with("$RASK_JOB_ID")?,
        )
    }

    /// The job id in what `qsub` printed: `123.server` or `123` (the number).
    pub fn parse_pbs_job_id(qsub_stdout: &str) -> Result<u64, DeployError> {
        let line = qsub_stdout.lines().map(str::trim).find(|l| !l.is_empty());
        line.and_then(|l| {
            let id = l.split('.').next()?;
            (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
                .then(|| id.parse().ok())
                .flatten()
        })
        .ok_or_else(|| DeployError::NoJobId {
            output: qsub_stdout.to_string(),
        })
    }
}

#[cfg(test)]
mod tests;

//! PBS scripts: their shape, memory units, job ids, and the job id in a real shell.

use super::*;

#[test]
fn the_pbs_script_has_dask_jobqueues_pbs_shape() {
    let mut job = SlurmJob::new("tcp://10.0.0.1:8786", 8, 3 << 29);
    job.name = "rask-w".into();
    job.partition = Some("workq".into());
    job.account = Some("proj".into());
    job.walltime = "1-02:00:00".parse().unwrap();
    job.log_directory = Some("/logs/".into());
    job.extra_directives = vec!["-l place=scatter".into()];
    job.prologue = vec!["module load rask".into()];
    let script = job.pbs_script().unwrap();
    let lines: Vec<&str> = script.lines().collect();
    assert_eq!(
        &lines[..10],
        [
            "#!/usr/bin/env bash",
            "",
            "#PBS -N rask-w",
            "#PBS -q workq",
            "#PBS -A proj",
            "#PBS -l select=1:ncpus=8:mem=1536mb",
            "#PBS -l walltime=26:00:00",
            "#PBS -e /logs/",
            "#PBS -o /logs/",
            "#PBS -l place=scatter",
        ]
    );
    assert_eq!(lines[10], "module load rask");
    assert_eq!(lines[11], "RASK_JOB_ID=${PBS_JOBID%%.*}");
    assert_eq!(lines[12], "RASK_JOB_ID=${RASK_JOB_ID:-$SLURM_JOB_ID}");
    assert!(
        lines[13].starts_with(
            "rask worker tcp://10.0.0.1:8786 --name rask-w-$RASK_JOB_ID --nthreads 2 "
        ),
        "{}",
        lines[13]
    );
    job.directives_skip = vec!["-A".into()];
    assert!(!job.pbs_script().unwrap().contains("#PBS -A"));
    job.extra_directives = vec!["#PBS -l x".into()];
    assert!(job.pbs_script().is_err());
}

#[test]
fn pbs_memory_is_in_binary_units_and_job_ids_drop_the_server() {
    assert_eq!(pbs_memory(4 << 30), "4gb");
    assert_eq!(pbs_memory(3 << 29), "1536mb");
    assert_eq!(pbs_memory(1000), "1kb");
    assert_eq!(pbs_memory(0), "1kb");
    assert_eq!(SlurmJob::parse_pbs_job_id("123.pbs-server\n"), Ok(123));
    assert_eq!(SlurmJob::parse_pbs_job_id("\n77\n"), Ok(77));
    assert!(SlurmJob::parse_pbs_job_id("qsub: error").is_err());
    assert!(SlurmJob::parse_pbs_job_id("+5.server").is_err());
    assert!(SlurmJob::parse_pbs_job_id(".server").is_err());
    assert!(SlurmJob::parse_job_id("+5").is_err());
    assert!(SlurmJob::parse_job_id("Submitted batch job +5").is_err());
    assert!(SlurmJob::parse_pbs_job_id("").is_err());
    assert_eq!(Walltime::hms(93_600), "26:00:00");
}

#[test]
fn the_pbs_script_finds_the_job_id_in_a_real_shell() {
    // The two id lines, run by bash as the job would: PBS's id loses its server part,
    // and Slurm's PBS compatibility gives SLURM_JOB_ID instead.
    let job = SlurmJob::new("tcp://h:1", 1, 1 << 30);
    let script = job.pbs_script().unwrap();
    let ids: String = script
        .lines()
        .filter(|l| l.starts_with("RASK_JOB_ID="))
        .collect::<Vec<_>>()
        .join("; ");
    for (env, want) in [
        (("PBS_JOBID", "4242.server"), "4242"),
        (("SLURM_JOB_ID", "17"), "17"),
    ] {
        let out = std::process::Command::new("bash")
            .args(["-c", &format!("{ids}; printf %s \"$RASK_JOB_ID\"")])
            .env_remove("PBS_JOBID")
            .env_remove("SLURM_JOB_ID")
            .env(env.0, env.1)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    }
}

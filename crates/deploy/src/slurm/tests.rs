use super::*;

const GIB: u64 = 1 << 30;

fn err_text(r: Result<impl fmt::Debug, DeployError>) -> String {
    r.expect_err("must be refused").to_string()
}

#[test]
fn default_processes_follow_dask_jobqueue() {
    let cases = [
        (1, 1),
        (2, 2),
        (3, 3),
        (4, 4),
        (5, 5),
        (6, 3),
        (7, 7),
        (8, 4),
        (9, 3),
        (10, 5),
        (12, 4),
        (16, 4),
        (24, 6),
        (36, 6),
        (48, 8),
        (64, 8),
        (97, 97),
        (128, 16),
    ];
    for (cores, processes) in cases {
        assert_eq!(default_processes(cores), processes, "{cores} cores");
    }
}

#[test]
fn layout_divides_cores_and_memory_among_processes() {
    let job = SlurmJob::new("tcp://s:8786", 8, 16 * GIB);
    assert_eq!(
        job.layout(),
        Ok(WorkerLayout {
            processes: 4,
            threads: 2,
            memory: 4 * GIB
        })
    );
    let mut job = SlurmJob::new("tcp://s:8786", 6, 10);
    job.processes = Some(4);
    assert_eq!(
        job.layout(),
        Ok(WorkerLayout {
            processes: 4,
            threads: 1,
            memory: 2
        })
    );
}

#[test]
fn layout_refuses_impossible_splits() {
    let job = |cores, memory, processes| SlurmJob {
        processes,
        ..SlurmJob::new("tcp://s:8786", cores, memory)
    };
    assert_eq!(
        err_text(job(0, GIB, None).layout()),
        "invalid cores \"0\": a job needs at least one core"
    );
    assert_eq!(
        err_text(job(4, GIB, Some(0)).layout()),
        "invalid processes \"0\": a job needs at least one worker process"
    );
    assert_eq!(
        err_text(job(4, GIB, Some(5)).layout()),
        "invalid processes \"5\": more worker processes than the job's 4 cores"
    );
    assert_eq!(
        err_text(job(4, 0, None).layout()),
        "invalid memory \"0\": a job needs memory (bytes per job)"
    );
    assert_eq!(
        err_text(job(4, 3, None).layout()),
        "invalid memory \"3\": less than one byte for each of 4 worker processes"
    );
}

#[test]
fn memory_is_rounded_up_in_slurm_units() {
    assert_eq!(slurm_memory(4 * GIB), "4G");
    assert_eq!(slurm_memory(3 * GIB / 2), "1536M");
    assert_eq!(slurm_memory(GIB + 1), "1048577K");
    assert_eq!(slurm_memory(GIB - 1), "1G");
    assert_eq!(slurm_memory(GIB - 1024), "1048575K");
    assert_eq!(slurm_memory(1 << 20), "1M");
    assert_eq!(slurm_memory(1000), "1K");
    assert_eq!(slurm_memory(1), "1K");
    assert_eq!(slurm_memory(1024), "1K");
    assert_eq!(slurm_memory(1025), "2K");
    assert_eq!(slurm_memory(3 << 40), "3072G");
    assert_eq!(slurm_memory(0), "0");
    assert_eq!(slurm_memory(u64::MAX), "17179869184G");
}

#[test]
fn walltime_parses_slurm_forms() {
    let cases = [
        ("30", 1800, "00:30:00"),
        ("90", 5400, "01:30:00"),
        ("5:30", 330, "00:05:30"),
        ("05:30", 330, "00:05:30"),
        ("120:00", 7200, "02:00:00"),
        ("00:30:00", 1800, "00:30:00"),
        ("1:2:3", 3723, "01:02:03"),
        ("100:00:00", 360_000, "4-04:00:00"),
        ("0:0:1", 1, "00:00:01"),
        ("2-00:00:00", 172_800, "2-00:00:00"),
        ("1-12", 129_600, "1-12:00:00"),
        ("1-2:03", 93_780, "1-02:03:00"),
        ("0-23:59:59", 86_399, "23:59:59"),
        ("7-0:0:0", 604_800, "7-00:00:00"),
    ];
    for (text, secs, shown) in cases {
        let w = Walltime::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(w.as_secs(), secs, "{text}");
        assert_eq!(w.to_string(), shown, "{text}");
        assert_eq!(text.parse::<Walltime>(), Ok(w));
    }
    assert_eq!(Walltime::default().to_string(), "00:30:00");
    assert_eq!(Walltime::from_secs(59).unwrap().to_string(), "00:00:59");
}

#[test]
fn walltime_rejects_garbage_naming_the_value() {
    let cases = [
        ("", "\"\" is not a whole number"),
        ("abc", "\"abc\" is not a whole number"),
        ("1h", "\"1h\" is not a whole number"),
        ("1.5", "\"1.5\" is not a whole number"),
        (" 30", "\" 30\" is not a whole number"),
        ("-30", "\"\" is not a whole number"),
        ("+30", "\"+30\" is not a whole number"),
        ("1-", "\"\" is not a whole number"),
        (":30", "\"\" is not a whole number"),
        ("1--2", "\"-2\" is not a whole number"),
        ("1:2:3:4", "too many fields"),
        ("1-2:3:4:5", "too many fields"),
        ("00:60:00", "minutes 60 is not below 60"),
        ("00:00:60", "seconds 60 is not below 60"),
        ("10:75", "seconds 75 is not below 60"),
        ("1-24", "hours 24 is not below 24"),
        ("1-24:00:00", "hours 24 is not below 24"),
        ("0", "a job's time limit must be longer than zero"),
        ("00:00:00", "a job's time limit must be longer than zero"),
        ("0-0", "a job's time limit must be longer than zero"),
        ("99999999999999999999", "99999999999999999999 is too large"),
        ("999999999999999-0", "too long"),
    ];
    for (text, reason) in cases {
        let msg = err_text(Walltime::parse(text));
        assert_eq!(
            msg,
            format!(
                "invalid walltime {text:?}: {reason}; expected MINUTES, MM:SS, HH:MM:SS, \
                 D-HH, D-HH:MM or D-HH:MM:SS"
            )
        );
    }
    assert_eq!(
        err_text(Walltime::from_secs(0)),
        "invalid walltime \"0 s\": a job's time limit must be longer than zero"
    );
}

#[test]
fn job_script_has_dask_jobqueue_shape() {
    let job = SlurmJob {
        name: "rask-gpu".into(),
        partition: Some("gpu".into()),
        account: Some("proj42".into()),
        log_directory: Some("/scratch/logs/".into()),
        walltime: "1-00:00:00".parse().unwrap(),
        extra_directives: vec!["--gres=gpu:1".into(), "--exclusive".into()],
        prologue: vec!["module load cuda".into(), "export RASK_LOG=info".into()],
        epilogue: vec!["echo done".into()],
        lifetime: Some(Duration::from_secs(55 * 60)),
        lifetime_stagger: Duration::from_secs(4 * 60),
        worker_extra_args: vec!["--resources".into(), "gpu=1".into()],
        ..SlurmJob::new("tcp://10.0.0.1:8786", 8, 16 * GIB)
    };
    assert_eq!(
        job.job_script().unwrap(),
        "#!/usr/bin/env bash

#SBATCH -J rask-gpu
#SBATCH -e /scratch/logs/rask-gpu-%J.err
#SBATCH -o /scratch/logs/rask-gpu-%J.out
#SBATCH -p gpu
#SBATCH -A proj42
#SBATCH -n 1
#SBATCH -N 1
#SBATCH --cpus-per-task=8
#SBATCH --mem=16G
#SBATCH -t 1-00:00:00
#SBATCH --gres=gpu:1
#SBATCH --exclusive
module load cuda
export RASK_LOG=info
rask worker tcp://10.0.0.1:8786 --name rask-gpu-$SLURM_JOB_ID --nthreads 2 \
--memory-limit 4294967296 --nworkers 4 --death-timeout 60 --lifetime 3300 \
--lifetime-stagger 240 --resources gpu=1
echo done
"
    );
}

#[test]
fn defaults_give_the_minimal_script() {
    let job = SlurmJob::new("tcp://s:8786", 2, 4 * GIB);
    assert_eq!(
        job.job_script().unwrap(),
        "#!/usr/bin/env bash

#SBATCH -J rask-worker
#SBATCH -n 1
#SBATCH -N 1
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH -t 00:30:00
rask worker tcp://s:8786 --name rask-worker-$SLURM_JOB_ID --nthreads 1 \
--memory-limit 2147483648 --nworkers 2 --death-timeout 60
"
    );
    let other = SlurmJob {
        shebang: "#!/bin/bash -l".into(),
        rask_bin: "/opt/rask/bin/rask".into(),
        death_timeout: Duration::from_millis(2500),
        ..job
    };
    let script = other.job_script().unwrap();
    assert!(script.starts_with("#!/bin/bash -l\n\n#SBATCH -J rask-worker\n"));
    assert!(script.contains(
        "\n/opt/rask/bin/rask worker tcp://s:8786 --name rask-worker-$SLURM_JOB_ID \
         --nthreads 1 --memory-limit 2147483648 --nworkers 2 --death-timeout 2.5\n"
    ));
}

#[test]
fn skipped_directives_are_dropped_but_extra_ones_kept() {
    let job = SlurmJob {
        partition: Some("batch".into()),
        directives_skip: vec!["--mem".into(), "-p batch".into()],
        extra_directives: vec!["--mem=0".into()],
        ..SlurmJob::new("tcp://s:8786", 1, GIB)
    };
    let script = job.job_script().unwrap();
    let directives: Vec<&str> = script
        .lines()
        .filter(|l| l.starts_with("#SBATCH"))
        .collect();
    assert_eq!(
        directives,
        [
            "#SBATCH -J rask-worker",
            "#SBATCH -n 1",
            "#SBATCH -N 1",
            "#SBATCH --cpus-per-task=1",
            "#SBATCH -t 00:30:00",
            "#SBATCH --mem=0",
        ]
    );
    let everything = SlurmJob {
        directives_skip: vec![String::new()],
        ..job
    };
    assert_eq!(
        err_text(everything.job_script()),
        "invalid directives_skip \"\": an empty string would skip every directive"
    );
}

#[test]
fn values_are_quoted_in_directives_and_in_the_command() {
    let job = SlurmJob {
        name: "my job".into(),
        partition: Some("a\"b".into()),
        account: Some("x#y".into()),
        log_directory: Some("/home/me/rask logs/50%".into()),
        rask_bin: "/opt/my rask/rask".into(),
        worker_extra_args: vec![
            "--note".into(),
            "it's $HOME `id` $(id)".into(),
            "two\nlines".into(),
            String::new(),
        ],
        ..SlurmJob::new("tcp://[::1]:8786", 1, GIB)
    };
    let script = job.job_script().unwrap();
    let lines: Vec<&str> = script.lines().collect();
    assert_eq!(lines[2], "#SBATCH -J \"my job\"");
    assert_eq!(
        lines[3],
        "#SBATCH -e \"/home/me/rask logs/50%%/my job-%J.err\""
    );
    assert_eq!(
        lines[4],
        "#SBATCH -o \"/home/me/rask logs/50%%/my job-%J.out\""
    );
    assert_eq!(lines[5], "#SBATCH -p \"a\\\"b\"");
    assert_eq!(lines[6], "#SBATCH -A \"x\\#y\"");
    assert!(script.ends_with(
        "\n'/opt/my rask/rask' worker 'tcp://[::1]:8786' --name 'my job'-$SLURM_JOB_ID \
         --nthreads 1 --memory-limit 1073741824 --nworkers 1 --death-timeout 60 \
         --note 'it'\\''s $HOME `id` $(id)' 'two\nlines' ''\n"
    ));
}

#[test]
fn newlines_are_refused_in_one_line_fields() {
    let base = SlurmJob::new("tcp://s:8786", 1, GIB);
    let cases: [(SlurmJob, &str); 8] = [
        (
            SlurmJob {
                name: "a\nb".into(),
                ..base.clone()
            },
            "name \"a\\nb\"",
        ),
        (
            SlurmJob {
                partition: Some("gpu\n#SBATCH --exclusive".into()),
                ..base.clone()
            },
            "partition \"gpu\\n#SBATCH --exclusive\"",
        ),
        (
            SlurmJob {
                account: Some("p\r".into()),
                ..base.clone()
            },
            "account \"p\\r\"",
        ),
        (
            SlurmJob {
                log_directory: Some("logs\n".into()),
                ..base.clone()
            },
            "log_directory \"logs\\n\"",
        ),
        (
            SlurmJob {
                extra_directives: vec!["--gres=gpu:1\nrm -rf /".into()],
                ..base.clone()
            },
            "extra_directives \"--gres=gpu:1\\nrm -rf /\"",
        ),
        (
            SlurmJob {
                scheduler: "tcp://s:1\nx".into(),
                ..base.clone()
            },
            "scheduler \"tcp://s:1\\nx\"",
        ),
        (
            SlurmJob {
                shebang: "#!/bin/sh\nx".into(),
                ..base.clone()
            },
            "shebang \"#!/bin/sh\\nx\"",
        ),
        (
            SlurmJob {
                name: "nul\0".into(),
                ..base.clone()
            },
            "name \"nul\\0\"",
        ),
    ];
    for (job, named) in cases {
        let msg = err_text(job.job_script());
        assert!(
            msg.starts_with(&format!("invalid {named}: must not contain a ")),
            "{msg}"
        );
    }
}

#[test]
fn other_bad_fields_are_refused() {
    let base = SlurmJob::new("tcp://s:8786", 1, GIB);
    let msg = |job: SlurmJob| err_text(job.job_script());
    assert_eq!(
        msg(SlurmJob::default()),
        "invalid memory \"0\": a job needs memory (bytes per job)"
    );
    assert_eq!(
        msg(SlurmJob {
            scheduler: String::new(),
            ..base.clone()
        }),
        "invalid scheduler \"\": must not be empty"
    );
    assert_eq!(
        msg(SlurmJob {
            partition: Some(String::new()),
            ..base.clone()
        }),
        "invalid partition \"\": must not be empty"
    );
    assert_eq!(
        msg(SlurmJob {
            shebang: "/bin/bash".into(),
            ..base.clone()
        }),
        "invalid shebang \"/bin/bash\": must start with #!"
    );
    assert_eq!(
        msg(SlurmJob {
            extra_directives: vec!["#SBATCH --exclusive".into()],
            ..base.clone()
        }),
        "invalid extra_directives \"#SBATCH --exclusive\": write the directive without \
         `#SBATCH` (sbatch would read it as a comment)"
    );
    assert_eq!(
        msg(SlurmJob {
            worker_extra_args: vec!["a\0".into()],
            ..base
        }),
        "invalid worker_extra_args \"a\\0\": must not contain a NUL"
    );
}

/// The script really runs: bash reads the directives as comments, runs the prologue,
/// and `rask worker` receives exactly the intended arguments (here `rask` is a shell
/// function, defined by the prologue, that prints them).
#[cfg(unix)]
#[test]
fn script_runs_in_bash_and_passes_each_argument_intact() {
    let job = SlurmJob {
        name: "my 'job'".into(),
        log_directory: Some("logs dir".into()),
        prologue: vec![r#"rask() { printf '<%s>\n' "$@"; }"#.into()],
        epilogue: vec!["echo \"epilogue $SLURM_JOB_ID\"".into()],
        lifetime: Some(Duration::from_secs(3300)),
        worker_extra_args: vec![
            "two words".into(),
            "it's".into(),
            "$HOME".into(),
            "a\nb".into(),
            "`id`".into(),
            "*".into(),
            String::new(),
        ],
        ..SlurmJob::new("tcp://10.1.2.3:8786", 3, 3 * GIB)
    };
    let script = job.job_script().unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("SLURM_JOB_ID", "4242")
        .env("HOME", "/should/not/expand")
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "<worker>
<tcp://10.1.2.3:8786>
<--name>
<my 'job'-4242>
<--nthreads>
<1>
<--memory-limit>
<1073741824>
<--nworkers>
<3>
<--death-timeout>
<60>
<--lifetime>
<3300>
<--lifetime-stagger>
<0>
<two words>
<it's>
<$HOME>
<a
b>
<`id`>
<*>
<>
epilogue 4242
"
    );
}

#[test]
fn job_ids_are_parsed_from_sbatch_output() {
    let ok = [
        ("Submitted batch job 123\n", 123),
        ("Submitted batch job 123", 123),
        ("  Submitted batch job 9  \r\n", 9),
        ("Submitted batch job 77 on cluster c2\n", 77),
        ("123\n", 123),
        ("123;cluster2\n", 123),
        ("\n456\n", 456),
        ("18446744073709551615", u64::MAX),
    ];
    for (output, id) in ok {
        assert_eq!(SlurmJob::parse_job_id(output), Ok(id), "{output:?}");
    }
    let bad = [
        "",
        "\n",
        "Submitted batch job\n",
        "Submitted batch job x\n",
        "Submitted batch job 12a\n",
        "Submitted batch job 12 and more\n",
        "sbatch: error: Batch job submission failed: Invalid account\n",
        "12a\n",
        "-12\n",
        ";cluster\n",
        "18446744073709551616\n",
    ];
    for output in bad {
        assert_eq!(
            SlurmJob::parse_job_id(output),
            Err(DeployError::NoJobId {
                output: output.into()
            }),
            "{output:?}"
        );
    }
    assert_eq!(
        SlurmJob::parse_job_id("oops").unwrap_err().to_string(),
        "no job id in sbatch's output \"oops\""
    );
}

//! `SlurmCluster` against a real single-node Slurm (slurmctld, slurmd and munged started
//! by the test with a configuration of its own, stopped when it ends): jobs submitted
//! with sbatch start workers that dial back, the cluster computes, scaling to 0 cancels
//! them with scancel. Needs root, slurm-wlm and munge (ci/test.sh installs them).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rask::{Arg, Client};

mod common;

use common::{eventually, tmpfile, within, Proc, DEADLINE, RASK};

/// munged, slurmctld and slurmd, for this test only.
struct Slurm {
    dir: PathBuf,
    conf: PathBuf,
    daemons: Vec<Proc>,
}

impl Drop for Slurm {
    fn drop(&mut self) {
        // Jobs first (a test that failed may have left some), then the daemons.
        let _ = Command::new("scancel")
            .args(["--full", "-u", "root"])
            .env("SLURM_CONF", &self.conf)
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.queue().trim().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // slurmd first: its jobs' processes go with it.
        while let Some(p) = self.daemons.pop() {
            drop(p);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Slurm {
    fn start() -> Result<Slurm, String> {
        for p in [
            "/usr/sbin/munged",
            "/usr/sbin/slurmctld",
            "/usr/sbin/slurmd",
        ] {
            if !Path::new(p).exists() {
                return Err(format!("no {p} (slurm-wlm and munge)"));
            }
        }
        let dir = tmpfile("slurm");
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["state", "spool", "logs"] {
            std::fs::create_dir_all(dir.join(d)).map_err(|e| e.to_string())?;
        }
        let mut s = Slurm {
            conf: dir.join("slurm.conf"),
            dir,
            daemons: Vec::new(),
        };
        std::fs::create_dir_all("/run/munge").map_err(|e| format!("/run/munge: {e}"))?;
        run(Command::new("chown").args(["munge:munge", "/run/munge"]))?;
        s.daemons.push(Proc::new(
            Command::new("setpriv")
                .args(["--reuid", "munge", "--regid", "munge", "--init-groups"])
                .args(["/usr/sbin/munged", "-F", "--force"])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("munged: {e}"))?,
        ));
        eventually("munged answers", || {
            Command::new("munge")
                .arg("-n")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        let d = s.dir.display();
        std::fs::write(
            &s.conf,
            format!(
                "ClusterName=raskci\nSlurmctldHost=localhost\nSlurmUser=root\nAuthType=auth/munge\n\
                 StateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\n\
                 SlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd.pid\n\
                 SlurmctldLogFile={d}/slurmctld.log\nSlurmdLogFile={d}/slurmd.log\n\
                 ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n\
                 JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\n\
                 SchedulerType=sched/backfill\nSelectType=select/cons_tres\n\
                 SelectTypeParameters=CR_Core_Memory\nDefMemPerCPU=1000\nReturnToService=2\n\
                 MpiDefault=none\nMailProg=/bin/true\n\
                 NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 RealMemory=8000 State=UNKNOWN\n\
                 PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        for (program, extra) in [
            ("/usr/sbin/slurmctld", &[][..]),
            ("/usr/sbin/slurmd", &["-N", "localhost"][..]),
        ] {
            s.daemons.push(Proc::new(
                Command::new(program)
                    .arg("-D")
                    .args(extra)
                    .arg("-f")
                    .arg(&s.conf)
                    .env("SLURM_CONF", &s.conf)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("{program}: {e}"))?,
            ));
        }
        let conf = s.conf.clone();
        eventually("the Slurm node is idle", || {
            Command::new("sinfo")
                .args(["-h", "-o", "%T"])
                .env("SLURM_CONF", &conf)
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("idle"))
        });
        Ok(s)
    }

    fn queue(&self) -> String {
        run(Command::new("squeue")
            .args(["-h", "-o", "%i %T"])
            .env("SLURM_CONF", &self.conf))
        .unwrap_or_default()
    }
}

#[test]
fn slurm_jobs_start_workers_that_compute_and_scaling_to_zero_cancels_them() {
    within(DEADLINE, || {
        let slurm = match Slurm::start() {
            Ok(s) => s,
            Err(e) => return common::cannot_run(&format!("cannot start Slurm here: {e}")),
        };
        let mut job = rask::slurm::SlurmJob::new("", 1, 1 << 30);
        job.name = "rask-ci".into();
        job.rask_bin = RASK.into();
        job.log_directory = Some(slurm.dir.join("logs").display().to_string());
        job.walltime = "00:10:00".parse().unwrap();
        let mut cluster = rask::slurm::SlurmCluster::builder(job)
            .scheduler_host("127.0.0.1")
            .env("SLURM_CONF", slurm.conf.display().to_string())
            .build()
            .unwrap();
        let script = cluster.job_script();
        assert!(script.contains("#SBATCH --cpus-per-task=1\n"), "{script}");
        assert!(
            script.contains(&format!(" worker {} ", cluster.scheduler_address())),
            "{script}"
        );

        let t0 = Instant::now();
        cluster.scale(2).unwrap();
        assert_eq!(cluster.jobs().len(), 2);
        cluster
            .wait_for_workers(2, Duration::from_secs(90))
            .unwrap_or_else(|e| {
                panic!(
                    "{e}; queue: {}; logs: {:?}",
                    slurm.queue(),
                    std::fs::read_dir(slurm.dir.join("logs"))
                        .map(|d| d
                            .flatten()
                            .map(|f| std::fs::read_to_string(f.path()).unwrap_or_default())
                            .collect::<Vec<_>>())
                        .unwrap_or_default()
                )
            });
        println!(
            "SlurmCluster.scale(2) to 2 workers joined: {:.2} s",
            t0.elapsed().as_secs_f64()
        );
        let c: Client = cluster.client().unwrap();
        // Each worker is named after its job.
        let info = c.scheduler_info().unwrap();
        for id in cluster.jobs() {
            assert!(
                info.workers
                    .iter()
                    .any(|w| w.name == format!("rask-ci-{id}")),
                "no worker of job {id}: {:?}",
                info.workers.iter().map(|w| &w.name).collect::<Vec<_>>()
            );
        }
        let squares = c
            .map("mul", (0..100i64).map(|i| [Arg::from(i), Arg::from(i)]))
            .unwrap();
        let args: Vec<Arg> = squares.iter().map(Arg::from).collect();
        assert_eq!(
            c.submit("sum", args).unwrap().result_as::<i64>().unwrap(),
            328_350
        );

        // Down to one job, then none: scancel.
        cluster.scale(1).unwrap();
        assert_eq!(cluster.jobs().len(), 1);
        eventually("one worker is left", || {
            c.scheduler_info().unwrap().workers.len() == 1
        });
        cluster.scale(0).unwrap();
        eventually("every job has left the queue", || {
            slurm.queue().trim().is_empty()
        });
        eventually("every worker has left", || {
            c.scheduler_info().unwrap().workers.is_empty()
        });
        drop(c);
        cluster.close().unwrap();

        // A job whose worker retires before its walltime (--lifetime): what it holds
        // moves to another worker, nothing is computed again, and the job ends.
        let mut job = rask::slurm::SlurmJob::new("", 1, 1 << 30);
        job.name = "rask-ci-lifetime".into();
        job.rask_bin = RASK.into();
        job.log_directory = Some(slurm.dir.join("logs").display().to_string());
        job.lifetime = Some(Duration::from_secs(15));
        // Its data can be made only there: were it lost, it could not be made again and
        // the test would stall to its deadline instead of passing.
        job.worker_extra_args = vec!["--resources".into(), "slurm=1".into()];
        let mut cluster = rask::slurm::SlurmCluster::builder(job)
            .scheduler_host("127.0.0.1")
            .env("SLURM_CONF", slurm.conf.display().to_string())
            .build()
            .unwrap();
        assert!(cluster.job_script().contains(" --lifetime 15 "));
        cluster.scale(1).unwrap();
        cluster
            .wait_for_workers(1, Duration::from_secs(90))
            .unwrap();
        let c = cluster.client().unwrap();
        let mut g = rask::Graph::new();
        let keys: Vec<String> = (1..=4i64).map(|i| format!("held-{i}")).collect();
        for (i, k) in keys.iter().enumerate() {
            g.task(k, "bytes", [Arg::from(100_000i64), Arg::from(i as i64 + 1)])
                .resources(&[("slurm", 1.0)]);
        }
        let outputs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let kept = c.compute(&g, &outputs).unwrap();
        for f in &kept {
            f.wait().unwrap();
        }
        // Another worker, outside Slurm, to hand the data to.
        let _receiver = common::worker_with(&[], cluster.scheduler_address(), "receiver", &[]);
        c.wait_for_workers(2).unwrap();
        eventually("the job's worker retires and its job ends", || {
            let names: Vec<String> = c
                .scheduler_info()
                .unwrap()
                .workers
                .iter()
                .map(|w| w.name.clone())
                .collect();
            names == ["receiver"] && slurm.queue().trim().is_empty()
        });
        for (i, f) in kept.iter().enumerate() {
            assert_eq!(
                f.result().unwrap(),
                rask::Value::Bytes(vec![i as u8 + 1; 100_000].into())
            );
        }
        assert_eq!(common::tasks_run_by(&c, "receiver"), 0, "recomputed");
        drop(c);
        cluster.close().unwrap();

        // The same with a PBS script, through Slurm's PBS compatibility (qsub and qdel
        // wrappers; sbatch reads the #PBS lines): no PBS server runs here.
        if Path::new("/usr/bin/qsub").exists() || std::env::var_os("RASK_REQUIRE_DAEMONS").is_some()
        {
            let mut job = rask::slurm::SlurmJob::new("", 1, 1 << 30);
            job.name = "rask-ci-pbs".into();
            job.rask_bin = RASK.into();
            job.walltime = "00:10:00".parse().unwrap();
            let mut cluster = rask::slurm::SlurmCluster::builder(job)
                .pbs()
                .submit_dir(&slurm.dir)
                .scheduler_host("127.0.0.1")
                .env("SLURM_CONF", slurm.conf.display().to_string())
                .build()
                .unwrap();
            assert!(cluster
                .job_script()
                .contains("#PBS -l select=1:ncpus=1:mem=1gb\n"));
            cluster.scale(1).unwrap();
            cluster
                .wait_for_workers(1, Duration::from_secs(90))
                .unwrap_or_else(|e| panic!("{e}; queue: {}", slurm.queue()));
            let c = cluster.client().unwrap();
            let id = cluster.jobs()[0];
            assert_eq!(
                c.scheduler_info().unwrap().workers[0].name,
                format!("rask-ci-pbs-{id}")
            );
            let f = c
                .submit("add", [Arg::from(40i64), Arg::from(2i64)])
                .unwrap();
            assert_eq!(f.result_as::<i64>().unwrap(), 42);
            cluster.scale(0).unwrap();
            eventually("the PBS job has left the queue", || {
                slurm.queue().trim().is_empty()
            });
            drop(c);
            cluster.close().unwrap();
        } else {
            println!("(no qsub here: the PBS part did not run)");
        }

        // One job step of 4 ranks (srun): a scheduler, the client, two workers of the
        // program itself; the client shuts the cluster down and the step ends.
        let runner = common::example("slurm_runner");
        let out = slurm.dir.join("runner.out");
        let done = common::output(
            Command::new("sbatch")
                .args(["--wait", "-n", "4", "--overcommit", "-o"])
                .arg(&out)
                .arg("--wrap")
                .arg(format!("srun --overcommit {}", runner.display()))
                .env("SLURM_CONF", &slurm.conf)
                .env("RASK_LOG", "warn")
                .current_dir(&slurm.dir),
        );
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        assert!(done.status.success(), "the step failed: {text}");
        assert!(
            text.contains("workers = 2, sum of squares = 328350"),
            "{text}"
        );
        assert!(slurm.queue().trim().is_empty());
        drop(slurm);
    });
}

#[test]
fn rask_slurm_prints_the_job_script_it_would_submit() {
    let out = common::output(Command::new(RASK).args([
        "slurm",
        "--print-script",
        "--cores",
        "8",
        "--memory",
        "16GiB",
        "--partition",
        "gpu",
        "--job-extra=--gres=gpu:2",
        "--walltime",
        "1:00:00",
        "--remote-rask",
        "/opt/rask/bin/rask",
    ]));
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    for line in [
        "#!/usr/bin/env bash",
        "#SBATCH -p gpu",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=16G",
        "#SBATCH -t 01:00:00",
        "#SBATCH --gres=gpu:2",
    ] {
        assert!(script.lines().any(|l| l == line), "no {line:?} in {script}");
    }
    // Eight cores: four processes of two threads and 4 GiB each, as dask-jobqueue.
    assert!(
        script.contains("/opt/rask/bin/rask worker tcp://SCHEDULER:8786 --name rask-worker-$SLURM_JOB_ID --nthreads 2 --memory-limit 4294967296 --nworkers 4 "),
        "{script}"
    );
    let bad =
        common::output(Command::new(RASK).args(["slurm", "--print-script", "--walltime", "soon"]));
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("soon"));
}

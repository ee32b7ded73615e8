//! `rask-bench p2p --sim-gpus`: the device-to-device bandwidth matrix of simulated GPUs
//! (one worker process each), and spill throughput beside its ceilings. Simulated device
//! memory is host memory shared between processes: these are same-host figures labelled
//! by the simulated link, and the output says so; they must never pass for a real GPU's.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rask::Client;
use serde_json::json;

use super::{human, parse_size, transfer_runs};
use crate::procs::{scheduler_process, sibling, KillOnDrop};
use crate::stats::{check, median, percentile};
use crate::P2pArgs;

/// The device-to-device matrix of simulated GPUs (one worker process each), and how fast
/// values spill to the host and to disk, with memcpy and a plain file write beside them.
pub(super) fn p2p_sim(a: &P2pArgs, spec: &str) -> Result<()> {
    use rask_device::sim::{SimGpus, Topology};
    let (n, memory) = SimGpus::parse_spec(spec).map_err(anyhow::Error::msg)?;
    let topology = Topology::parse(&a.nvlink, n).map_err(anyhow::Error::msg)?;
    let sizes: Vec<u64> = a
        .sizes
        .iter()
        .map(|s| parse_size(s))
        .collect::<Result<_>>()?;
    if let Some(&big) = sizes.iter().find(|&&s| s > memory) {
        bail!(
            "size {} does not fit a simulated GPU of {}",
            human(big),
            human(memory)
        );
    }
    let bin = sibling("rask")?;
    let (sched, addr) = scheduler_process()?;
    let mut procs = Vec::new();
    for i in 0..n {
        let device = rask::cli::WorkerDevice::Sim { index: i, memory };
        let mut cmd = Command::new(&bin);
        cmd.args(["worker", &addr, "--nthreads", "1", "--quiet"])
            .args(["--name", &format!("gpu{i}")])
            .args(rask::cli::device_args(&device, &topology.peers(i, n)))
            .env("RASK_LOG", "error")
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        procs.push(KillOnDrop(cmd.spawn()?));
    }
    procs.push(sched);
    let client = Client::connect(&addr)?;
    client.wait_for_workers(n as usize)?;
    println!(
        "Rask p2p benchmark, {n} simulated GPUs ({} each, one worker process each, NVLink: {}); SIMULATED: device memory is host memory shared between processes, so these are same-host shared-memory figures labelled by the simulated link",
        human(memory),
        topology.label()
    );
    let mut json_rows = Vec::new();
    for &size in &sizes {
        println!(
            "\n{} — GB/s, median of {} runs (row: source GPU, column: destination; link in brackets)",
            human(size),
            a.runs
        );
        let header: Vec<String> = (0..n).map(|j| format!("sim:{j}")).collect();
        if a.out.markdown {
            println!("| from \\ to | {} |", header.join(" | "));
            println!(
                "|---|{}",
                header.iter().map(|_| "---:|").collect::<String>()
            );
        }
        for i in 0..n {
            let mut cells = Vec::new();
            for j in 0..n {
                if i == j {
                    cells.push("—".to_string());
                    continue;
                }
                let (src, dst) = (format!("sim:{i}"), format!("sim:{j}"));
                let tag = format!("p-{size}-{i}-{j}");
                let mut bws: Vec<f64> = transfer_runs(&client, size, a.runs, &src, &dst, &tag)?
                    .into_iter()
                    .map(|(transfer, _)| size as f64 / transfer / 1e9)
                    .collect();
                let (p25, p50, p75) = (
                    percentile(&mut bws, 0.25),
                    median(&mut bws),
                    percentile(&mut bws, 0.75),
                );
                let link = if topology.nvlink(i, j) {
                    "nvlink"
                } else {
                    "pcie"
                };
                cells.push(format!("{p50:.1} [{link}]"));
                json_rows.push(json!({"size": size, "from": i, "to": j, "link": link,
                    "gb_per_s_p25": p25, "gb_per_s_p50": p50, "gb_per_s_p75": p75,
                    "gb_per_s_runs": bws}));
            }
            if a.out.markdown {
                println!("| sim:{i} | {} |", cells.join(" | "));
            } else {
                println!(
                    "sim:{i}  {}",
                    cells.iter().map(|c| format!("{c:>16}")).collect::<String>()
                );
            }
        }
    }
    // The workers report what they received with their heartbeats (every second): wait
    // until two reports a heartbeat apart agree.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last: Vec<(String, Vec<(String, u64)>)> = Vec::new();
    let received = loop {
        let mut r: Vec<_> = client
            .scheduler_info()?
            .workers
            .into_iter()
            .map(|w| (w.device, w.received))
            .collect();
        r.sort();
        if (r == last && r.iter().all(|(_, v)| !v.is_empty())) || Instant::now() > deadline {
            break r;
        }
        last = r;
        std::thread::sleep(Duration::from_millis(1200));
    };
    println!("\nbytes received by link, as the workers count them: {received:?}");
    drop(client);
    drop(procs);

    // Spilling, measured on the mechanism the worker uses, next to its ceilings.
    let size = *sizes.iter().max().expect("at least one size");
    let spill = spill_throughput(size, a.runs)?;
    println!(
        "\nspill throughput, {} (GB/s, median of {} runs):",
        human(size),
        a.runs
    );
    for (name, v) in &spill {
        println!("  {name:<40} {v:>8.2}");
    }
    if let Some(path) = &a.out.json {
        let doc = json!({
            "config": {"sim_gpus": n, "memory": memory, "nvlink": topology.describe(),
                       "sizes": sizes, "runs": a.runs, "simulated": true},
            "matrix": json_rows,
            "spill": spill.iter().map(|(k, v)| json!({"what": k, "gb_per_s": v})).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}

/// GB/s of: device → host spill (a copy of a simulated GPU's buffer into the worker's
/// reused host pool, as the worker spills; warm after the first run), host → disk spill (written, mapped, unlinked), memcpy into a
/// buffer already touched, and a plain write of a file of the same size.
fn spill_throughput(size: u64, runs: usize) -> Result<Vec<(&'static str, f64)>> {
    use rask_device::sim::{SimGpus, Topology};
    let sim = SimGpus::new(1, size.max(1 << 20), Topology::none());
    let gpu = sim.gpu(0).context("one simulated GPU")?;
    let _reserved = gpu.pool().reserve(size)?;
    let mut on_gpu = gpu.arena().alloc(size as usize)?;
    on_gpu.as_mut_slice().fill(7);
    let gpu_bytes = on_gpu.as_ref();
    let dir = std::env::temp_dir().join(format!("rask-bench-spill-{}", std::process::id()));
    let mut out: Vec<(&'static str, Vec<f64>)> = vec![
        ("device -> host (spill into the host pool)", vec![]),
        ("host -> disk (spill: write, map, unlink)", vec![]),
        ("memcpy into touched memory (ceiling)", vec![]),
        ("plain file write, no fsync (ceiling)", vec![]),
    ];
    let mut target = vec![1u8; size as usize];
    let pool = rask_device::arena::Arena::new(rask_device::arena::DEFAULT_SEGMENT);
    for run in 0..=runs {
        let t = Instant::now();
        let host = pool.copy_in(gpu_bytes)?;
        let a = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let disk = rask_device::spill::to_file(&dir, "bench.bin", &host)?;
        let b = t.elapsed().as_secs_f64();
        drop(disk);
        let t = Instant::now();
        target.copy_from_slice(gpu_bytes);
        let c = t.elapsed().as_secs_f64();
        let path = dir.join("plain.bin");
        let t = Instant::now();
        std::fs::write(&path, &host)?;
        let d = t.elapsed().as_secs_f64();
        std::fs::remove_file(&path)?;
        check(target[size as usize / 2] == 7, "memcpy result")?;
        if run > 0 {
            for (i, secs) in [a, b, c, d].into_iter().enumerate() {
                out[i].1.push(size as f64 / secs / 1e9);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out
        .into_iter()
        .map(|(k, mut v)| (k, median(&mut v)))
        .collect())
}

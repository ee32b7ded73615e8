//! The peers measured beside Rask in the same invocation, each run by its script under
//! `benches/compare`: Dask on the task workloads, dask.array and numpy on the array
//! expressions, memcpy, UCX, iperf3 and Dask on the transfers. Each runner returns its
//! script's JSON as it is; reading it is the reports' business, and nothing here
//! measures Rask.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value as Json;

use crate::procs::repo_root;
use crate::ArrayArgs;

/// The python of the comparison venv (created by benches/compare/setup_venv.sh if needed).
pub(crate) fn compare_python() -> Result<String> {
    let setup = Command::new("bash")
        .arg(repo_root().join("benches/compare/setup_venv.sh"))
        .stderr(Stdio::inherit())
        .output()
        .context("running setup_venv.sh")?;
    if !setup.status.success() {
        bail!("setup_venv.sh failed");
    }
    Ok(String::from_utf8(setup.stdout)?
        .lines()
        .last()
        .context("venv python path")?
        .trim()
        .to_string())
}

/// The workloads benches/compare/dask_tasks.py runs, by the names `rask-bench tasks` gives
/// them.
const DASK_WORKLOADS: [(&str, &str); 8] = [
    ("cluster_start", "cluster_start"),
    ("scheduler_memory_1000000", "scheduler_memory_100000"),
    ("round_trip_1000", "round_trip_1000"),
    ("independent_10000", "independent_10000"),
    ("independent_100000", "independent_100000"),
    ("chain_5000", "chain_5000"),
    ("tree_10000", "tree_10000"),
    ("skewed_20", "skewed_20"),
];

/// Runs benches/compare/dask_tasks.py in the compare venv, only the workloads among
/// `only` (all if empty); returns its JSON.
pub(crate) fn run_dask(runs: usize, full: bool, only: &[String]) -> Result<Json> {
    let dask_only: Vec<&str> = DASK_WORKLOADS
        .iter()
        .filter(|(ours, _)| only.iter().any(|o| o == ours))
        .map(|(_, theirs)| *theirs)
        .collect();
    if !only.is_empty() && dask_only.is_empty() {
        bail!("none of these workloads has a Dask counterpart");
    }
    let root = repo_root();
    let py = compare_python()?;
    let out = std::env::temp_dir().join(format!("rask-bench-dask-{}.json", std::process::id()));
    let mut cmd = Command::new(&py);
    cmd.arg(root.join("benches/compare/dask_tasks.py"))
        .args(["--runs", &runs.to_string(), "--json"])
        .arg(&out);
    if full {
        cmd.arg("--full");
    }
    if !dask_only.is_empty() {
        cmd.args(["--only", &dask_only.join(",")]);
    }
    eprintln!("running the same workloads on Dask ({} run(s))…", runs);
    let status = cmd.status().context("running dask_tasks.py")?;
    if !status.success() {
        bail!("dask_tasks.py failed");
    }
    let doc: Json = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    let _ = std::fs::remove_file(&out);
    Ok(doc)
}

/// Runs benches/compare/dask_array.py in the compare venv; returns its JSON.
pub(crate) fn run_dask_array(a: &ArrayArgs) -> Result<Json> {
    let root = repo_root();
    let py = compare_python()?;
    let out = std::env::temp_dir().join(format!("rask-bench-array-{}.json", std::process::id()));
    eprintln!("running the same on dask.array and numpy…");
    let status = Command::new(&py)
        .arg(root.join("benches/compare/dask_array.py"))
        .args([
            "--op",
            &a.op,
            "--size",
            &a.size.to_string(),
            "--chunk",
            &a.chunk.to_string(),
        ])
        .args(["--dtype", &a.dtype, "--runs", &a.runs.to_string(), "--json"])
        .arg(&out)
        .status()
        .context("running dask_array.py")?;
    if !status.success() {
        bail!("dask_array.py failed");
    }
    let doc: Json = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    let _ = std::fs::remove_file(&out);
    Ok(doc)
}

/// Runs benches/compare/p2p_peers.py for the same sizes; returns its JSON.
pub(crate) fn run_p2p_peers(sizes: &[String], runs: usize) -> Result<Json> {
    let root = repo_root();
    let out =
        std::env::temp_dir().join(format!("rask-bench-p2p-peers-{}.json", std::process::id()));
    eprintln!("running the peers (memcpy, UCX, iperf3, Dask) on the same sizes…");
    let status = Command::new("python3")
        .arg(root.join("benches/compare/p2p_peers.py"))
        .args([
            "--sizes",
            &sizes.join(","),
            "--runs",
            &runs.to_string(),
            "--json",
        ])
        .arg(&out)
        .status()
        .context("running p2p_peers.py")?;
    if !status.success() {
        bail!("p2p_peers.py failed");
    }
    let doc: Json = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    let _ = std::fs::remove_file(&out);
    Ok(doc)
}

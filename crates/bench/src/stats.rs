//! Figures, and the arithmetic that turns runs into them: medians, percentiles, mean and
//! spread, plus the check that a run computed the right thing. Pure: no clock, no
//! process, no printing — the benchmarks measure, the reports print.

use anyhow::{bail, Result};

/// One workload's figures: name → value, plus every run's main value.
pub(crate) struct Figure {
    pub(crate) workload: &'static str,
    pub(crate) fields: Vec<(&'static str, f64)>,
    pub(crate) runs: Vec<f64>,
}

/// The median of `v` (of an even count, the upper of the middle two); sorts `v`.
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

/// The value at fraction `p` (0 to 1) of the way through `v` once sorted, nearest rank;
/// sorts `v`.
pub(crate) fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Mean and (population) standard deviation.
pub(crate) fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    (mean, std)
}

/// A figure whose value is the median of its runs.
pub(crate) fn rate_figure(workload: &'static str, field: &'static str, runs: Vec<f64>) -> Figure {
    let mut r = runs.clone();
    Figure {
        workload,
        fields: vec![(field, median(&mut r))],
        runs,
    }
}

/// Fails the benchmark when a run computed the wrong thing: the figure of a wrong result
/// is no figure.
pub(crate) fn check(ok: bool, what: &str) -> Result<()> {
    if !ok {
        bail!("wrong result: {what}");
    }
    Ok(())
}

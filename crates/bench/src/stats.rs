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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_upper_of_the_middle_two() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 3.0);
        assert_eq!(median(&mut [7.0]), 7.0);
    }

    #[test]
    fn percentiles_take_the_nearest_rank_from_first_to_last() {
        let mut v: Vec<f64> = (0..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.0), 0.0);
        assert_eq!(percentile(&mut v, 0.25), 25.0);
        assert_eq!(percentile(&mut v, 0.99), 99.0);
        assert_eq!(percentile(&mut v, 1.0), 100.0);
        // Five runs: the quartiles are the second and the fourth.
        let mut five = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(percentile(&mut five, 0.25), 2.0);
        assert_eq!(percentile(&mut five, 0.75), 4.0);
    }

    #[test]
    fn the_spread_is_the_population_standard_deviation() {
        assert_eq!(
            mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]),
            (5.0, 2.0)
        );
        assert_eq!(mean_std(&[3.0]), (3.0, 0.0));
    }

    #[test]
    fn a_rate_figure_reports_the_median_and_keeps_every_run_in_order() {
        let f = rate_figure("chain_5000", "tasks_per_s", vec![30.0, 10.0, 20.0]);
        assert_eq!(f.workload, "chain_5000");
        assert_eq!(f.fields, vec![("tasks_per_s", 20.0)]);
        assert_eq!(f.runs, vec![30.0, 10.0, 20.0]);
    }

    #[test]
    fn a_wrong_result_fails_the_benchmark_and_names_what_was_wrong() {
        assert!(check(true, "chain result").is_ok());
        let err = check(false, "chain result").unwrap_err();
        assert_eq!(err.to_string(), "wrong result: chain result");
    }
}

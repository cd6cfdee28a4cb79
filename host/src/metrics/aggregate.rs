//! Aggregation of histogram and summary observations into exportable series.
//! A `histogram` or `summary` report is one observation; this module folds
//! observations into cumulative buckets, sums, counts and sliding-window quantiles.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Prometheus client libraries' default histogram buckets.
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Default summary quantiles.
pub const DEFAULT_QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];
/// Sliding window over which summary quantiles are computed.
pub const SUMMARY_WINDOW_MS: i64 = 10 * 60 * 1000;
/// Most observations kept in a summary window (oldest dropped first).
pub const SUMMARY_WINDOW_MAX: usize = 4096;

/// Cumulative histogram: per-bucket counts (non-cumulative storage), sum and count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistogramState {
    pub bounds: Vec<f64>,
    /// `counts[i]` observations fell in bucket `i` (`<= bounds[i]`); the last entry is `+Inf`.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl HistogramState {
    pub fn new(bounds: Vec<f64>) -> Self {
        let counts = vec![0; bounds.len() + 1];
        HistogramState {
            bounds,
            counts,
            sum: 0.0,
            count: 0,
        }
    }

    fn slot(&self, value: f64) -> usize {
        self.bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len())
    }

    pub fn observe(&mut self, value: f64) {
        let slot = self.slot(value);
        self.counts[slot] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// Takes back one observation of `value` (to go from a later state to an
    /// earlier one). Taking back every observation gives the empty state
    /// exactly, not a sum left with rounding residue.
    pub fn unobserve(&mut self, value: f64) {
        let slot = self.slot(value);
        self.counts[slot] = self.counts[slot].saturating_sub(1);
        self.count = self.count.saturating_sub(1);
        self.sum -= value;
        if self.count == 0 {
            self.counts.iter_mut().for_each(|c| *c = 0);
            self.sum = 0.0;
        }
    }

    /// `(upper bound, cumulative count)` pairs ending with `+Inf`.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let mut running = 0;
        self.bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter())
            .map(move |(bound, n)| {
                running += n;
                (bound, running)
            })
    }
}

/// Summary: lifetime sum and count, and a sliding window for quantiles.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryState {
    pub quantiles: Vec<f64>,
    pub sum: f64,
    pub count: u64,
    /// `(timestamp ms, value)`; not persisted, rebuilt from stored samples.
    #[serde(skip)]
    pub window: VecDeque<(i64, f64)>,
}

impl SummaryState {
    pub fn new(quantiles: Vec<f64>) -> Self {
        SummaryState {
            quantiles,
            sum: 0.0,
            count: 0,
            window: VecDeque::new(),
        }
    }

    pub fn observe(&mut self, ts_ms: i64, value: f64) {
        self.sum += value;
        self.count += 1;
        self.push_window(ts_ms, value);
    }

    /// Takes back one observation from the sum and count (the window is
    /// rebuilt separately); all of them give exactly the empty state.
    pub fn unobserve(&mut self, value: f64) {
        self.count = self.count.saturating_sub(1);
        self.sum -= value;
        if self.count == 0 {
            self.sum = 0.0;
        }
    }

    /// Adds to the window only (used when rebuilding from stored samples).
    pub fn push_window(&mut self, ts_ms: i64, value: f64) {
        self.window.push_back((ts_ms, value));
        while self.window.len() > SUMMARY_WINDOW_MAX {
            self.window.pop_front();
        }
    }

    /// Quantile values over observations newer than `now - window`; NaN when empty
    /// (as Prometheus client libraries export an empty summary).
    pub fn quantile_values(&self, now_ms: i64) -> Vec<(f64, f64)> {
        let cutoff = now_ms - SUMMARY_WINDOW_MS;
        let mut values: Vec<f64> = self
            .window
            .iter()
            .filter(|(ts, _)| *ts >= cutoff)
            .map(|(_, v)| *v)
            .collect();
        values.sort_by(f64::total_cmp);
        self.quantiles
            .iter()
            .map(|&q| {
                if values.is_empty() {
                    (q, f64::NAN)
                } else {
                    let rank = (q * (values.len() - 1) as f64).round() as usize;
                    (q, values[rank.min(values.len() - 1)])
                }
            })
            .collect()
    }
}

/// The aggregate kept for a histogram or summary series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Aggregate {
    Histogram(HistogramState),
    Summary(SummaryState),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        let mut h = HistogramState::new(vec![1.0, 5.0]);
        for v in [0.5, 1.0, 3.0, 9.0] {
            h.observe(v);
        }
        let c: Vec<_> = h.cumulative().collect();
        assert_eq!(c, vec![(1.0, 2), (5.0, 3), (f64::INFINITY, 4)]);
        assert_eq!(h.sum, 13.5);
        assert_eq!(h.count, 4);
    }

    #[test]
    fn unobserving_goes_back_to_the_earlier_state() {
        let mut h = HistogramState::new(vec![1.0, 5.0]);
        h.observe(0.1);
        let earlier = h.clone();
        for v in [0.2, 3.0, 9.0] {
            h.observe(v);
        }
        for v in [9.0, 3.0, 0.2] {
            h.unobserve(v);
        }
        assert_eq!(h.counts, earlier.counts);
        assert_eq!(h.count, 1);
        assert!((h.sum - 0.1).abs() < 1e-12);
        h.unobserve(0.1);
        assert_eq!(h, HistogramState::new(vec![1.0, 5.0]), "exactly empty");
        let mut s = SummaryState::new(vec![0.5]);
        s.observe(0, 0.1);
        s.observe(0, 0.7);
        s.unobserve(0.7);
        s.unobserve(0.1);
        assert_eq!((s.count, s.sum), (0, 0.0));
    }

    #[test]
    fn summary_quantiles_use_only_the_window() {
        let mut s = SummaryState::new(vec![0.5]);
        s.observe(0, 1000.0);
        for v in 1..=5 {
            s.observe(SUMMARY_WINDOW_MS + 10, v as f64);
        }
        assert_eq!(s.quantile_values(SUMMARY_WINDOW_MS + 20), vec![(0.5, 3.0)]);
        assert_eq!(s.count, 6);
    }
}

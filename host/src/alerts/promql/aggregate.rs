//! Aggregation operators (`sum`, `avg`, `min`, `max`, `count`, `group`,
//! `stddev`, `stdvar`) with `by`/`without` grouping, following
//! Prometheus's `aggregation` (v3.9): groups in the order their first
//! element appears, Kahan summation for `sum` and `avg`, NaN handling of
//! `min`/`max`. Parameterised aggregations (`topk`, `quantile`, ...) are
//! refused before evaluation and have no code here.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::functions::kahan_inc;
use super::sample::{signature_on, signature_without, Sample};
use super::{Labels, METRIC_NAME};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AggOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Group,
    Stddev,
    Stdvar,
}

/// `by (names)` or `without (names)`; no clause is `by ()`.
#[derive(Clone, Debug)]
pub(super) struct Grouping {
    pub without: bool,
    /// Sorted, without repeats.
    pub names: Vec<String>,
}

/// The running state of one group (Prometheus's `groupedAggregation`).
struct Accumulator {
    value: f64,
    mean: f64,
    kahan_c: f64,
    count: f64,
    incremental_mean: bool,
}

impl Accumulator {
    fn new(op: AggOp, f: f64) -> Self {
        let value = match op {
            AggOp::Group => 1.0,
            AggOp::Stddev | AggOp::Stdvar if f.is_nan() || f.is_infinite() => f64::NAN,
            AggOp::Stddev | AggOp::Stdvar => 0.0,
            _ => f,
        };
        Self {
            value,
            mean: f,
            kahan_c: 0.0,
            count: 1.0,
            incremental_mean: false,
        }
    }

    fn add(&mut self, op: AggOp, f: f64) {
        match op {
            AggOp::Sum => (self.value, self.kahan_c) = kahan_inc(f, self.value, self.kahan_c),
            AggOp::Avg => {
                self.count += 1.0;
                if !self.incremental_mean {
                    let (value, c) = kahan_inc(f, self.value, self.kahan_c);
                    if !value.is_infinite() {
                        (self.value, self.kahan_c) = (value, c);
                        return;
                    }
                    // The sum would overflow: continue with an incremental mean.
                    self.incremental_mean = true;
                    self.mean = self.value / (self.count - 1.0);
                    self.kahan_c /= self.count - 1.0;
                }
                let q = (self.count - 1.0) / self.count;
                (self.mean, self.kahan_c) =
                    kahan_inc(f / self.count, q * self.mean, q * self.kahan_c);
            }
            AggOp::Max => {
                if self.value < f || self.value.is_nan() {
                    self.value = f;
                }
            }
            AggOp::Min => {
                if self.value > f || self.value.is_nan() {
                    self.value = f;
                }
            }
            AggOp::Count => self.count += 1.0,
            AggOp::Group => {}
            AggOp::Stddev | AggOp::Stdvar => {
                self.count += 1.0;
                let delta = f - self.mean;
                self.mean += delta / self.count;
                self.value += delta * (f - self.mean);
            }
        }
    }

    fn finish(&self, op: AggOp) -> f64 {
        match op {
            AggOp::Sum => self.value + self.kahan_c,
            AggOp::Avg if self.incremental_mean => self.mean + self.kahan_c,
            AggOp::Avg => self.value / self.count + self.kahan_c / self.count,
            AggOp::Count => self.count,
            AggOp::Stdvar => self.value / self.count,
            AggOp::Stddev => (self.value / self.count).sqrt(),
            AggOp::Min | AggOp::Max | AggOp::Group => self.value,
        }
    }
}

/// The labels of the group an element falls into.
fn group_labels(s: &Sample, grouping: &Grouping) -> Labels {
    if grouping.without {
        s.iter()
            .filter(|(name, _)| {
                *name != METRIC_NAME
                    && grouping
                        .names
                        .binary_search_by(|n| n.as_str().cmp(name))
                        .is_err()
            })
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    } else {
        grouping
            .names
            .iter()
            .filter_map(|name| s.get(name).map(|v| (name.clone(), v.to_owned())))
            .collect()
    }
}

pub(super) fn aggregate(op: AggOp, grouping: &Grouping, input: &[Sample]) -> Vec<Sample> {
    let mut index: FxHashMap<Vec<u8>, usize> = FxHashMap::default();
    let mut groups: Vec<(Labels, Accumulator)> = Vec::new();
    let mut key = Vec::new();
    for s in input {
        if grouping.without {
            signature_without(s, &grouping.names, &mut key);
        } else {
            signature_on(s, &grouping.names, &mut key);
        }
        match index.get(key.as_slice()) {
            Some(&i) => groups[i].1.add(op, s.value),
            None => {
                index.insert(key.clone(), groups.len());
                groups.push((group_labels(s, grouping), Accumulator::new(op, s.value)));
            }
        }
    }
    groups
        .into_iter()
        .map(|(labels, acc)| Sample::new(Arc::new(labels), acc.finish(op)))
        .collect()
}

//! Evaluation of a compiled query at one instant: selecting samples from
//! the caller's series (binary search for the lookback and range windows,
//! which the slices may exceed; stale markers ignored as Prometheus does),
//! then walking the plan bottom-up. The operators' arithmetic lives in
//! `functions`, `aggregate` and `binary`.

use std::sync::Arc;

use super::aggregate::aggregate;
use super::binary::{set_op, vector_scalar, vector_vector};
use super::compile::{Root, ScalarNode, VectorNode};
use super::functions::{go_max, go_min, round, RangeFn, Window};
use super::sample::{ensure_unique, is_stale, same_visible_name, Sample};
use super::{Data, EvalError, Labels, Selector, SeriesData, Value, METRIC_NAME};

pub(super) struct Evaluator<'a> {
    t_ms: i64,
    selectors: &'a [Selector],
    data: &'a Data,
}

/// The samples with `start < t <= end`.
fn clip(samples: &[(i64, f64)], start: i64, end: i64) -> &[(i64, f64)] {
    let lo = samples.partition_point(|s| s.0 <= start);
    let hi = samples.partition_point(|s| s.0 <= end);
    samples.get(lo..hi).unwrap_or(&[])
}

/// Marks every element as without metric name and checks the result for
/// duplicate label sets.
fn drop_names(mut v: Vec<Sample>) -> Result<Vec<Sample>, EvalError> {
    let unique = same_visible_name(&v);
    for s in &mut v {
        s.drop_name = true;
    }
    if !unique {
        ensure_unique(&v)?;
    }
    Ok(v)
}

impl<'a> Evaluator<'a> {
    pub fn new(t_ms: i64, selectors: &'a [Selector], data: &'a Data) -> Self {
        Self {
            t_ms,
            selectors,
            data,
        }
    }

    pub fn root(&self, root: &Root) -> Result<Value, EvalError> {
        Ok(match root {
            Root::Scalar(s) => Value::Scalar(self.scalar(s)?),
            Root::Vector(v) => Value::Vector(
                self.vector(v)?
                    .into_iter()
                    .map(Sample::into_element)
                    .collect(),
            ),
        })
    }

    fn series(&self, selector: usize) -> (&'a [SeriesData], Window) {
        let series = self
            .data
            .series
            .get(selector)
            .map_or(&[][..], Vec::as_slice);
        let (range_ms, offset_ms) = self
            .selectors
            .get(selector)
            .map_or((0, 0), |s| (s.range_ms, s.offset_ms));
        let end = self.t_ms - offset_ms;
        let window = Window {
            start: end - range_ms,
            end,
            range_ms,
        };
        (series, window)
    }

    fn scalar(&self, node: &ScalarNode) -> Result<f64, EvalError> {
        Ok(match node {
            ScalarNode::Number(v) => *v,
            ScalarNode::Time => self.t_ms as f64 / 1000.0,
            ScalarNode::FromVector(v) => match self.vector(v)?.as_slice() {
                [only] => only.value,
                _ => f64::NAN,
            },
            ScalarNode::Negate(s) => -self.scalar(s)?,
            ScalarNode::Binary { op, lhs, rhs } => op.scalar(self.scalar(lhs)?, self.scalar(rhs)?),
        })
    }

    fn vector(&self, node: &VectorNode) -> Result<Vec<Sample>, EvalError> {
        match node {
            VectorNode::Selector(i) => Ok(self.instant(*i)),
            VectorNode::Range { func, selector } => self.range(*func, *selector),
            VectorNode::AbsentOverTime { selector, labels } => {
                let (series, w) = self.series(*selector);
                let present = series.iter().any(|s| {
                    clip(&s.samples, w.start, w.end)
                        .iter()
                        .any(|p| !is_stale(p.1))
                });
                Ok(absent(present, labels))
            }
            VectorNode::Absent { arg, labels } => {
                let present = !self.vector(arg)?.is_empty();
                Ok(absent(present, labels))
            }
            VectorNode::Math { func, arg } => {
                let mut v = self.vector(arg)?;
                for s in &mut v {
                    s.value = func.apply(s.value);
                }
                drop_names(v)
            }
            VectorNode::Round { arg, to_nearest } => {
                let to_nearest = match to_nearest {
                    Some(s) => self.scalar(s)?,
                    None => 1.0,
                };
                let mut v = self.vector(arg)?;
                for s in &mut v {
                    s.value = round(s.value, to_nearest);
                }
                drop_names(v)
            }
            VectorNode::Clamp { arg, min, max } => {
                let v = self.vector(arg)?;
                let min = match min {
                    Some(s) => self.scalar(s)?,
                    None => f64::NEG_INFINITY,
                };
                let max = match max {
                    Some(s) => self.scalar(s)?,
                    None => f64::INFINITY,
                };
                if max < min {
                    return Ok(Vec::new());
                }
                let mut v = v;
                for s in &mut v {
                    s.value = go_max(min, go_min(max, s.value));
                }
                drop_names(v)
            }
            VectorNode::FromScalar(s) => {
                Ok(vec![Sample::new(Arc::new(Labels::new()), self.scalar(s)?)])
            }
            VectorNode::Negate(arg) => {
                let mut v = self.vector(arg)?;
                for s in &mut v {
                    s.value = -s.value;
                }
                drop_names(v)
            }
            VectorNode::Aggregate { op, grouping, arg } => {
                Ok(aggregate(*op, grouping, &self.vector(arg)?))
            }
            VectorNode::VectorScalar {
                op,
                vector,
                scalar,
                scalar_on_left,
                return_bool,
            } => {
                // Prometheus evaluates the operands left to right.
                let (v, s) = if *scalar_on_left {
                    let s = self.scalar(scalar)?;
                    (self.vector(vector)?, s)
                } else {
                    (self.vector(vector)?, self.scalar(scalar)?)
                };
                vector_scalar(*op, v, s, *scalar_on_left, *return_bool)
            }
            VectorNode::VectorVector {
                op,
                lhs,
                rhs,
                return_bool,
                matching,
            } => {
                let lhs = self.vector(lhs)?;
                vector_vector(*op, lhs, self.vector(rhs)?, *return_bool, matching)
            }
            VectorNode::Set {
                op,
                lhs,
                rhs,
                matching,
            } => {
                let lhs = self.vector(lhs)?;
                Ok(set_op(*op, lhs, self.vector(rhs)?, matching))
            }
        }
    }

    /// The latest sample of each series in `(t - offset - 5m, t - offset]`,
    /// unless that sample is a staleness marker.
    fn instant(&self, selector: usize) -> Vec<Sample> {
        let (series, w) = self.series(selector);
        series
            .iter()
            .filter_map(|s| {
                let &(_, value) = clip(&s.samples, w.start, w.end).last()?;
                (!is_stale(value)).then(|| Sample::new(Arc::clone(&s.labels), value))
            })
            .collect()
    }

    /// A range function over each series' window; series with no sample in
    /// the window give no element.
    fn range(&self, func: RangeFn, selector: usize) -> Result<Vec<Sample>, EvalError> {
        let (series, w) = self.series(selector);
        let mut out = Vec::new();
        let mut without_stale = Vec::new();
        for s in series {
            let window = clip(&s.samples, w.start, w.end);
            let points = if window.iter().any(|p| is_stale(p.1)) {
                without_stale.clear();
                without_stale.extend(window.iter().filter(|p| !is_stale(p.1)));
                without_stale.as_slice()
            } else {
                window
            };
            if points.is_empty() {
                continue;
            }
            if let Some(value) = func.apply(points, w) {
                out.push(Sample {
                    labels: Arc::clone(&s.labels),
                    drop_name: !func.keeps_name(),
                    value,
                });
            }
        }
        // The series are distinct, so only different names can collide.
        let same_name = out
            .first()
            .map(|first| first.labels.get(METRIC_NAME))
            .is_none_or(|name| out.iter().all(|s| s.labels.get(METRIC_NAME) == name));
        if !func.keeps_name() && !same_name {
            ensure_unique(&out)?;
        }
        Ok(out)
    }
}

fn absent(present: bool, labels: &Arc<Labels>) -> Vec<Sample> {
    if present {
        Vec::new()
    } else {
        vec![Sample::new(Arc::clone(labels), 1.0)]
    }
}

//! The arithmetic of the supported PromQL functions, ported from
//! Prometheus's `promql/functions.go` (v3.9) so results agree to the bit:
//! range functions over one series' window of samples (`extrapolatedRate`,
//! `instantValue`, the `*_over_time` family, `changes`, `resets`),
//! element-wise functions, Kahan summation and Go's `math.Min`/`math.Max`.
//! Selecting the window and the labels of the result is the evaluator's job.

/// A function of one series' samples inside a range selector's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RangeFn {
    Rate,
    Increase,
    Delta,
    Irate,
    Idelta,
    AvgOverTime,
    MinOverTime,
    MaxOverTime,
    SumOverTime,
    CountOverTime,
    LastOverTime,
    PresentOverTime,
    Changes,
    Resets,
}

/// The window a range selector reads: samples with `start < t <= end`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Window {
    pub start: i64,
    pub end: i64,
    pub range_ms: i64,
}

impl RangeFn {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "rate" => Self::Rate,
            "increase" => Self::Increase,
            "delta" => Self::Delta,
            "irate" => Self::Irate,
            "idelta" => Self::Idelta,
            "avg_over_time" => Self::AvgOverTime,
            "min_over_time" => Self::MinOverTime,
            "max_over_time" => Self::MaxOverTime,
            "sum_over_time" => Self::SumOverTime,
            "count_over_time" => Self::CountOverTime,
            "last_over_time" => Self::LastOverTime,
            "present_over_time" => Self::PresentOverTime,
            "changes" => Self::Changes,
            "resets" => Self::Resets,
            _ => return None,
        })
    }

    /// `last_over_time` acts like an offset and keeps the metric name; all
    /// other range functions drop it.
    pub fn keeps_name(self) -> bool {
        self == Self::LastOverTime
    }

    /// The function's value for one series, `None` when Prometheus gives no
    /// element (for instance `rate` over fewer than two samples). `points`
    /// is the non-empty window, sorted by time, without stale markers.
    pub fn apply(self, points: &[(i64, f64)], w: Window) -> Option<f64> {
        let last = points.last()?.1;
        match self {
            Self::Rate => extrapolated_rate(points, w, true, true),
            Self::Increase => extrapolated_rate(points, w, true, false),
            Self::Delta => extrapolated_rate(points, w, false, false),
            Self::Irate => instant_value(points, true),
            Self::Idelta => instant_value(points, false),
            Self::AvgOverTime => Some(avg_over_time(points)),
            Self::MinOverTime => Some(compare_over_time(points, |cur, best| cur < best)),
            Self::MaxOverTime => Some(compare_over_time(points, |cur, best| cur > best)),
            Self::SumOverTime => Some(sum_over_time(points)),
            Self::CountOverTime => Some(points.len() as f64),
            Self::LastOverTime => Some(last),
            Self::PresentOverTime => Some(1.0),
            Self::Changes => Some(
                points
                    .windows(2)
                    .filter(|p| p[1].1 != p[0].1 && !(p[1].1.is_nan() && p[0].1.is_nan()))
                    .count() as f64,
            ),
            Self::Resets => Some(points.windows(2).filter(|p| p[1].1 < p[0].1).count() as f64),
        }
    }
}

/// Go's `time.Duration.Seconds()` for a whole number of milliseconds.
fn duration_seconds(ms: i64) -> f64 {
    let sec = ms / 1000;
    let nsec = (ms % 1000) * 1_000_000;
    sec as f64 + nsec as f64 / 1e9
}

/// `extrapolatedRate`: the increase between the first and last sample
/// (corrected for counter resets), extrapolated towards the window's
/// edges, per second for `rate`.
fn extrapolated_rate(
    points: &[(i64, f64)],
    w: Window,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let samples_minus_one = points.len() - 1;
    let (first_t, first_v) = points[0];
    let (last_t, last_v) = points[samples_minus_one];
    let mut result = last_v - first_v;
    if is_counter {
        for pair in points.windows(2) {
            if pair[1].1 < pair[0].1 {
                result += pair[0].1;
            }
        }
    }

    let mut duration_to_start = (first_t - w.start) as f64 / 1000.0;
    let mut duration_to_end = (w.end - last_t) as f64 / 1000.0;
    let sampled_interval = (last_t - first_t) as f64 / 1000.0;
    let average_between_samples = sampled_interval / samples_minus_one as f64;

    // Extrapolate to an edge only when a sample there is missing by no more
    // than 10 % of the average spacing; otherwise by half a spacing.
    let threshold = average_between_samples * 1.1;
    if duration_to_start >= threshold {
        duration_to_start = average_between_samples / 2.0;
    }
    if is_counter {
        // A counter does not go below zero: stop the extrapolation where
        // the slope would reach it.
        let mut duration_to_zero = duration_to_start;
        if result > 0.0 && first_v >= 0.0 {
            duration_to_zero = sampled_interval * (first_v / result);
        }
        if duration_to_zero < duration_to_start {
            duration_to_start = duration_to_zero;
        }
    }
    if duration_to_end >= threshold {
        duration_to_end = average_between_samples / 2.0;
    }

    let mut factor = (sampled_interval + duration_to_start + duration_to_end) / sampled_interval;
    if is_rate {
        factor /= duration_seconds(w.range_ms);
    }
    Some(result * factor)
}

/// `instantValue`: `irate`/`idelta` from the last two samples.
fn instant_value(points: &[(i64, f64)], is_rate: bool) -> Option<f64> {
    let [(t0, v0), (t1, v1)] = points.get(points.len().checked_sub(2)?..)? else {
        return None;
    };
    let sampled_interval = t1 - t0;
    if sampled_interval == 0 {
        return None;
    }
    // A counter reset makes `irate` the last value itself.
    let reset = is_rate && v1 < v0;
    let mut value = if reset { *v1 } else { v1 - v0 };
    if is_rate {
        value /= sampled_interval as f64 / 1000.0;
    }
    Some(value)
}

/// Kahan–Neumaier summation step (`kahansum.Inc`).
pub(super) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Direct mean with Kahan summation, switching to an incremental mean once
/// the running sum would overflow (`funcAvgOverTime`).
fn avg_over_time(points: &[(i64, f64)]) -> f64 {
    let mut sum = points[0].1;
    let mut count = 1.0;
    let mut mean = 0.0;
    let mut c = 0.0;
    let mut incremental = false;
    for (i, &(_, f)) in points[1..].iter().enumerate() {
        count = (i + 2) as f64;
        if !incremental {
            let (new_sum, new_c) = kahan_inc(f, sum, c);
            if !new_sum.is_infinite() {
                (sum, c) = (new_sum, new_c);
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, c) = kahan_inc(f / count, q * mean, q * c);
    }
    if incremental {
        mean + c
    } else {
        sum / count + c / count
    }
}

fn sum_over_time(points: &[(i64, f64)]) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    for &(_, f) in points {
        (sum, c) = kahan_inc(f, sum, c);
    }
    if sum.is_infinite() {
        sum
    } else {
        sum + c
    }
}

/// `compareOverTime`: a NaN is replaced by any later value.
fn compare_over_time(points: &[(i64, f64)], better: impl Fn(f64, f64) -> bool) -> f64 {
    let mut best = points[0].1;
    for &(_, f) in points {
        if better(f, best) || best.is_nan() {
            best = f;
        }
    }
    best
}

/// An element-wise function of an instant vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MathFn {
    Abs,
    Ceil,
    Floor,
    Sqrt,
    Sgn,
}

impl MathFn {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "abs" => Self::Abs,
            "ceil" => Self::Ceil,
            "floor" => Self::Floor,
            "sqrt" => Self::Sqrt,
            "sgn" => Self::Sgn,
            _ => return None,
        })
    }

    pub fn apply(self, v: f64) -> f64 {
        match self {
            Self::Abs => v.abs(),
            Self::Ceil => v.ceil(),
            Self::Floor => v.floor(),
            Self::Sqrt => v.sqrt(),
            Self::Sgn if v < 0.0 => -1.0,
            Self::Sgn if v > 0.0 => 1.0,
            Self::Sgn => v,
        }
    }
}

/// `round(v, to_nearest)`: ties round up.
pub(super) fn round(v: f64, to_nearest: f64) -> f64 {
    let inverse = 1.0 / to_nearest;
    (v * inverse + 0.5).floor() / inverse
}

/// Go's `math.Max`: +Inf wins over NaN, NaN over everything else.
pub(super) fn go_max(x: f64, y: f64) -> f64 {
    if x == f64::INFINITY || y == f64::INFINITY {
        f64::INFINITY
    } else if x.is_nan() || y.is_nan() {
        f64::NAN
    } else if x == 0.0 && x == y {
        if x.is_sign_negative() {
            y
        } else {
            x
        }
    } else if x > y {
        x
    } else {
        y
    }
}

/// Go's `math.Min`: -Inf wins over NaN, NaN over everything else.
pub(super) fn go_min(x: f64, y: f64) -> f64 {
    if x == f64::NEG_INFINITY || y == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else if x.is_nan() || y.is_nan() {
        f64::NAN
    } else if x == 0.0 && x == y {
        if x.is_sign_negative() {
            x
        } else {
            y
        }
    } else if x < y {
        x
    } else {
        y
    }
}

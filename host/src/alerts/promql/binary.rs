//! Binary operators between scalars and instant vectors, following
//! Prometheus's `scalarBinop`, `VectorscalarBinop`, `VectorBinop`,
//! `resultMetric` and the set operators (v3.9): comparisons filter (or give
//! 0/1 with `bool`), arithmetic and `bool` drop the metric name, vectors
//! match one-to-one on their signature (all labels but `__name__`, or the
//! `on`/`ignoring` list) unless `group_left`/`group_right` make the
//! matching many-to-one, and matching errors carry Prometheus's messages.

use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use super::sample::{
    ensure_unique, format_labels, same_visible_name, signature_all, signature_on,
    signature_without, Sample,
};
use super::{EvalError, Labels, METRIC_NAME};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

impl BinOp {
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            Self::Eq | Self::Ne | Self::Gt | Self::Lt | Self::Ge | Self::Le
        )
    }

    /// `vectorElemBinop` for floats: the value and whether a comparison
    /// holds (always true for arithmetic). A comparison's value is its left
    /// operand.
    pub fn apply(self, l: f64, r: f64) -> (f64, bool) {
        match self {
            Self::Add => (l + r, true),
            Self::Sub => (l - r, true),
            Self::Mul => (l * r, true),
            Self::Div => (l / r, true),
            Self::Mod => (l % r, true),
            Self::Pow => (l.powf(r), true),
            Self::Atan2 => (l.atan2(r), true),
            Self::Eq => (l, l == r),
            Self::Ne => (l, l != r),
            Self::Gt => (l, l > r),
            Self::Lt => (l, l < r),
            Self::Ge => (l, l >= r),
            Self::Le => (l, l <= r),
        }
    }

    /// `scalarBinop`: comparisons between scalars always give 0 or 1 (the
    /// parser insists on `bool`).
    pub fn scalar(self, l: f64, r: f64) -> f64 {
        let (value, holds) = self.apply(l, r);
        match (self.is_comparison(), holds) {
            (false, _) => value,
            (true, true) => 1.0,
            (true, false) => 0.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SetOp {
    And,
    Or,
    Unless,
}

/// Which side may hold several elements per match group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Card {
    OneToOne,
    /// `group_left`: the left side is the "many" side.
    ManyToOne,
    /// `group_right`: the right side is the "many" side.
    OneToMany,
}

/// The vector matching of a binary operation between two vectors.
#[derive(Clone, Debug)]
pub(super) struct Matching {
    pub card: Card,
    /// `on (...)` rather than `ignoring (...)` (no clause is `ignoring ()`).
    pub on: bool,
    /// The `on`/`ignoring` labels, sorted, without repeats.
    pub names: Vec<String>,
    /// The `group_left (...)`/`group_right (...)` labels copied from the
    /// "one" side.
    pub include: Vec<String>,
}

impl Matching {
    fn signature(&self, s: &Sample, buf: &mut Vec<u8>) {
        if self.on {
            signature_on(s, &self.names, buf);
        } else {
            signature_without(s, &self.names, buf);
        }
    }

    /// The labels a match group is named by in error messages
    /// (`MatchLabels`).
    fn match_labels(&self, s: &Sample) -> String {
        let listed = |name: &str| self.names.iter().any(|n| n == name);
        format_labels(
            s.iter()
                .filter(|(name, _)| listed(name) == self.on && (self.on || *name != METRIC_NAME)),
        )
    }
}

/// Vector–scalar operation; `scalar_on_left` for `1 - x`.
pub(super) fn vector_scalar(
    op: BinOp,
    vector: Vec<Sample>,
    scalar: f64,
    scalar_on_left: bool,
    return_bool: bool,
) -> Result<Vec<Sample>, EvalError> {
    let drop_name = !op.is_comparison() || return_bool;
    let unique = !drop_name || same_visible_name(&vector);
    let mut out = Vec::with_capacity(vector.len());
    for mut s in vector {
        let (l, r) = if scalar_on_left {
            (scalar, s.value)
        } else {
            (s.value, scalar)
        };
        let (mut value, mut keep) = op.apply(l, r);
        if op.is_comparison() && scalar_on_left {
            // A filter keeps the vector's value, whichever side it is on.
            value = r;
        }
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if keep {
            s.value = value;
            s.drop_name |= drop_name;
            out.push(s);
        }
    }
    if !unique {
        ensure_unique(&out)?;
    }
    Ok(out)
}

/// The labels of a result element (`resultMetric`); shares the "many"
/// side's label set when nothing but the name changes.
fn result_labels(ls: &Sample, rs: &Sample, op: BinOp, m: &Matching, return_bool: bool) -> Sample {
    let drop_name = return_bool || !op.is_comparison();
    let visible = |s: &Sample| {
        s.iter()
            .filter(|(name, _)| !(drop_name && *name == METRIC_NAME))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect::<Labels>()
    };
    let labels = match m.card {
        Card::OneToOne if m.on => Arc::new(
            m.names
                .iter()
                .filter(|name| !(drop_name && name.as_str() == METRIC_NAME))
                .filter_map(|name| ls.get(name).map(|v| (name.clone(), v.to_owned())))
                .collect::<Labels>(),
        ),
        Card::OneToOne if !m.names.is_empty() => {
            let mut labels = visible(ls);
            for name in &m.names {
                labels.remove(name);
            }
            Arc::new(labels)
        }
        Card::ManyToOne | Card::OneToMany if !m.include.is_empty() => {
            let mut labels = visible(ls);
            for name in &m.include {
                match rs.get(name) {
                    Some(v) => labels.insert(name.clone(), v.to_owned()),
                    None => labels.remove(name),
                };
            }
            Arc::new(labels)
        }
        _ => {
            return Sample {
                labels: Arc::clone(&ls.labels),
                drop_name: ls.drop_name || drop_name,
                value: 0.0,
            }
        }
    };
    Sample::new(labels, 0.0)
}

/// Vector–vector operation other than the set operators (`VectorBinop`).
pub(super) fn vector_vector(
    op: BinOp,
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    return_bool: bool,
    m: &Matching,
) -> Result<Vec<Sample>, EvalError> {
    if lhs.is_empty() || rhs.is_empty() {
        return Ok(Vec::new());
    }
    // Match the "many" side against the "one" side.
    let swapped = m.card == Card::OneToMany;
    let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };

    let mut buf = Vec::new();
    let mut one_by_sig: FxHashMap<Vec<u8>, usize> =
        FxHashMap::with_capacity_and_hasher(one.len(), Default::default());
    for (i, rs) in one.iter().enumerate() {
        m.signature(rs, &mut buf);
        if let Some(&first) = one_by_sig.get(buf.as_slice()) {
            let mut pair = [format_labels(rs.iter()), format_labels(one[first].iter())];
            pair.sort();
            let [first, second] = pair;
            return Err(EvalError::ManyToMany {
                group: m.match_labels(rs),
                side: if swapped { "left" } else { "right" },
                first,
                second,
            });
        }
        one_by_sig.insert(buf.clone(), i);
    }

    let mut matched = vec![false; one.len()];
    let mut grouped: FxHashMap<usize, FxHashSet<Vec<u8>>> = FxHashMap::default();
    let mut out = Vec::new();
    for ls in &many {
        m.signature(ls, &mut buf);
        let Some(&ri) = one_by_sig.get(buf.as_slice()) else {
            continue;
        };
        let rs = &one[ri];
        let (fl, fr) = if swapped {
            (rs.value, ls.value)
        } else {
            (ls.value, rs.value)
        };
        let (mut value, keep) = op.apply(fl, fr);
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
        }
        let mut result = if m.card == Card::OneToOne {
            if matched[ri] {
                return Err(EvalError::MultipleMatches);
            }
            matched[ri] = true;
            if !keep && !return_bool {
                continue;
            }
            result_labels(ls, rs, op, m, return_bool)
        } else {
            let result = result_labels(ls, rs, op, m, return_bool);
            signature_all(&result, &mut buf);
            if !grouped.entry(ri).or_default().insert(buf.clone()) {
                return Err(EvalError::AmbiguousGroupMatch);
            }
            if !keep && !return_bool {
                continue;
            }
            result
        };
        result.value = value;
        out.push(result);
    }
    ensure_unique(&out)?;
    Ok(out)
}

/// `and`, `or`, `unless`: elements keep their labels.
pub(super) fn set_op(op: SetOp, lhs: Vec<Sample>, rhs: Vec<Sample>, m: &Matching) -> Vec<Sample> {
    let signatures = |side: &[Sample]| {
        let mut buf = Vec::new();
        side.iter()
            .map(|s| {
                m.signature(s, &mut buf);
                buf.clone()
            })
            .collect::<FxHashSet<Vec<u8>>>()
    };
    let mut buf = Vec::new();
    match op {
        SetOp::And if lhs.is_empty() || rhs.is_empty() => Vec::new(),
        SetOp::And => {
            let right = signatures(&rhs);
            lhs.into_iter()
                .filter(|s| {
                    m.signature(s, &mut buf);
                    right.contains(buf.as_slice())
                })
                .collect()
        }
        SetOp::Or if lhs.is_empty() => rhs,
        SetOp::Or if rhs.is_empty() => lhs,
        SetOp::Or => {
            let left = signatures(&lhs);
            let mut out = lhs;
            out.extend(rhs.into_iter().filter(|s| {
                m.signature(s, &mut buf);
                !left.contains(buf.as_slice())
            }));
            out
        }
        SetOp::Unless if lhs.is_empty() || rhs.is_empty() => lhs,
        SetOp::Unless => {
            let right = signatures(&rhs);
            lhs.into_iter()
                .filter(|s| {
                    m.signature(s, &mut buf);
                    !right.contains(buf.as_slice())
                })
                .collect()
        }
    }
}

//! Tests of the PromQL evaluator against hand-computed Prometheus results;
//! shared helpers here, one file per area.

mod operators;
mod range_functions;
mod refusals;
mod selectors;

use std::sync::Arc;

use super::{
    check_alerting, parse, Data, EvalError, LabelMatcher, Labels, MatchOp, SeriesData, Value,
    LOOKBACK_DELTA_MS,
};

const SECOND: i64 = 1000;
const MINUTE: i64 = 60 * SECOND;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A series; `samples` are (seconds, value).
fn series(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> SeriesData {
    SeriesData {
        labels: Arc::new(labels(pairs)),
        samples: samples.iter().map(|&(s, v)| (s * SECOND, v)).collect(),
    }
}

/// Evaluates `text` at `t_s` seconds, resolving every selector against
/// `universe` the way a caller does.
fn eval(text: &str, t_s: i64, universe: &[SeriesData]) -> Result<Value, EvalError> {
    let q = parse(text).expect("the expression parses");
    let data = Data {
        series: q
            .selectors()
            .iter()
            .map(|sel| {
                universe
                    .iter()
                    .filter(|s| sel.matches(&s.labels))
                    .cloned()
                    .collect()
            })
            .collect(),
    };
    q.eval(t_s * SECOND, &data)
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

/// Asserts a vector result, in any order; values agree to 1e-12 relative.
fn assert_vector(value: Value, expected: &[(&[(&str, &str)], f64)]) {
    let Value::Vector(mut got) = value else {
        panic!("expected a vector, got {value:?}");
    };
    got.sort_by(|a, b| a.labels.cmp(&b.labels));
    let mut want: Vec<(Labels, f64)> = expected.iter().map(|(l, v)| (labels(l), *v)).collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
    for (g, (labels, value)) in got.iter().zip(&want) {
        assert_eq!(&g.labels, labels, "got {got:?}, want {want:?}");
        assert!(
            same(g.value, *value),
            "{labels:?}: got {}, want {value}",
            g.value
        );
    }
}

fn assert_scalar(value: Value, expected: f64) {
    match value {
        Value::Scalar(v) => assert!(same(v, expected), "got {v}, want {expected}"),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// The single value of a one-element vector.
fn only_value(value: Value) -> f64 {
    match value {
        Value::Vector(v) if v.len() == 1 => v[0].value,
        other => panic!("expected one element, got {other:?}"),
    }
}

fn parse_error(text: &str) -> String {
    match parse(text) {
        Ok(q) => panic!("`{text}` parsed: {q:?}"),
        Err(e) => e.to_string(),
    }
}

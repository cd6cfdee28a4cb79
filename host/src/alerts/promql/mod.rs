//! PromQL for alert rules: parsing a rule's expression into a [`Query`]
//! (with the `promql-parser` crate; nothing here parses text itself),
//! refusing what lies outside the supported subset with a message that
//! names the construct, and evaluating a query at one instant over samples
//! the caller has already fetched, with Prometheus 3 semantics (lookback,
//! left-open ranges, `extrapolatedRate`, Kahan sums, name dropping, vector
//! matching and its errors).
//!
//! This module is pure and synchronous. It does not resolve label matchers
//! against a store, fetch samples, schedule rule evaluations or keep alert
//! state: the caller reads [`Query::selectors`], resolves each selector's
//! matchers to series, fetches their samples for
//! `(t - offset - range_ms, t - offset]` (any wider window is fine) and
//! hands them back index-aligned in a [`Data`].
//!
//! Supported: number literals, parentheses, unary minus; the binary
//! operators `+ - * / % ^ atan2`, the comparisons (with or without `bool`)
//! and `and`/`or`/`unless` between scalars and vectors with `on`,
//! `ignoring`, `group_left` and `group_right`; the aggregations `sum`,
//! `avg`, `min`, `max`, `count`, `group`, `stddev`, `stdvar` with `by` or
//! `without`; the functions listed in [`SUPPORTED_FUNCTIONS`]; `offset`
//! (also negative). Refused when parsed: every other function or
//! aggregation, subqueries, the `@` modifier, `or` inside label matchers,
//! the `fill` modifiers, string results and range vectors outside a
//! function argument.

mod aggregate;
mod binary;
mod compile;
mod eval;
mod functions;
mod sample;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use compile::SUPPORTED_FUNCTIONS;

/// A series' label set; the metric name is the `__name__` label.
pub type Labels = BTreeMap<String, String>;

/// The label holding the metric name.
pub const METRIC_NAME: &str = "__name__";

/// How far back an instant vector selector looks for a sample (Prometheus's
/// default `--query.lookback-delta`).
pub const LOOKBACK_DELTA_MS: i64 = 5 * 60 * 1000;

/// An expression that cannot be used as an alert rule.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    pub message: String,
}

impl QueryError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// A failure while evaluating a query; the messages are Prometheus's own.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("vector cannot contain metrics with the same labelset")]
    DuplicateLabelset,
    #[error(
        "found duplicate series for the match group {group} on the {side} hand-side of the \
         operation: [{first}, {second}];many-to-many matching not allowed: matching labels \
         must be unique on one side"
    )]
    ManyToMany {
        group: String,
        side: &'static str,
        first: String,
        second: String,
    },
    #[error(
        "multiple matches for labels: many-to-one matching must be explicit \
         (group_left/group_right)"
    )]
    MultipleMatches,
    #[error("multiple matches for labels: grouping labels must ensure unique matches")]
    AmbiguousGroupMatch,
    #[error("the data holds series for {got} selectors but the query has {expected}")]
    DataMismatch { expected: usize, got: usize },
}

/// How a [`LabelMatcher`] compares a label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

/// One `name op "value"` of a selector.
#[derive(Clone, Debug)]
pub struct LabelMatcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    /// `^(?s:value)$` for the regex operators (Prometheus 3: fully
    /// anchored, `.` also matches a newline).
    regex: Option<regex::Regex>,
}

impl LabelMatcher {
    /// An `=` or `!=` matcher.
    pub fn literal(name: impl Into<String>, equal: bool, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            op: if equal {
                MatchOp::Equal
            } else {
                MatchOp::NotEqual
            },
            value: value.into(),
            regex: None,
        }
    }

    pub(crate) fn with_regex(name: String, negated: bool, value: String, re: regex::Regex) -> Self {
        Self {
            name,
            op: if negated {
                MatchOp::NotRegex
            } else {
                MatchOp::Regex
            },
            value,
            regex: Some(re),
        }
    }

    /// Whether a label value satisfies the matcher; a missing label matches
    /// as the empty string, as in Prometheus.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let value = value.unwrap_or("");
        match self.op {
            MatchOp::Equal => value == self.value,
            MatchOp::NotEqual => value != self.value,
            MatchOp::Regex => self.regex.as_ref().is_some_and(|re| re.is_match(value)),
            MatchOp::NotRegex => !self.regex.as_ref().is_some_and(|re| re.is_match(value)),
        }
    }
}

impl PartialEq for LabelMatcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Eq for LabelMatcher {}

/// A vector selector the query reads, instant (`x`) or inside a range
/// (`x[5m]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    /// Includes the metric name as a `__name__` `=` matcher when the
    /// selector was written `name{...}`.
    pub matchers: Vec<LabelMatcher>,
    /// How far before `t - offset` this selector reads: the range for
    /// `x[5m]`, [`LOOKBACK_DELTA_MS`] for an instant selector.
    pub range_ms: i64,
    /// `offset 1m` is 60 000; negative offsets read after `t`.
    pub offset_ms: i64,
}

impl Selector {
    /// Whether a series with these labels is selected.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matchers
            .iter()
            .all(|m| m.matches(labels.get(&m.name).map(String::as_str)))
    }
}

/// One series matched by a selector, its samples sorted by time ascending.
#[derive(Clone, Debug)]
pub struct SeriesData {
    pub labels: Arc<Labels>,
    pub samples: Vec<(i64, f64)>,
}

/// The series of every selector, index-aligned with [`Query::selectors`].
#[derive(Clone, Debug, Default)]
pub struct Data {
    pub series: Vec<Vec<SeriesData>>,
}

/// The result of an evaluation.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(f64),
    Vector(Vec<Element>),
}

/// One element of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Element {
    pub labels: Labels,
    pub value: f64,
}

/// A parsed expression in the supported subset.
#[derive(Clone, Debug)]
pub struct Query {
    text: String,
    selectors: Vec<Selector>,
    root: Arc<compile::Root>,
}

/// Parses an alert rule's expression.
pub fn parse(text: &str) -> Result<Query, QueryError> {
    if text.trim().is_empty() {
        return Err(QueryError::new("the expression is empty"));
    }
    let expr = promql_parser::parser::parse(text).map_err(QueryError::new)?;
    let (root, selectors) = compile::compile(&expr)?;
    Ok(Query {
        text: text.to_owned(),
        selectors,
        root: Arc::new(root),
    })
}

/// Refuses an expression whose result is a scalar, as Prometheus does for
/// alerting rules.
pub fn check_alerting(q: &Query) -> Result<(), QueryError> {
    match q.root.as_ref() {
        compile::Root::Vector(_) => Ok(()),
        compile::Root::Scalar(_) => Err(QueryError::new(
            "alerting expression must be a vector, not a scalar",
        )),
    }
}

impl Query {
    /// The expression as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Every vector selector the expression reads (instant or inside a
    /// range), each once, in the order they first appear in the text.
    pub fn selectors(&self) -> &[Selector] {
        &self.selectors
    }

    /// Evaluates the expression at `t_ms` (milliseconds since the epoch).
    /// `data.series[i]` holds the series matched by `selectors()[i]`; their
    /// samples may cover more than the window a selector reads.
    pub fn eval(&self, t_ms: i64, data: &Data) -> Result<Value, EvalError> {
        if data.series.len() != self.selectors.len() {
            return Err(EvalError::DataMismatch {
                expected: self.selectors.len(),
                got: data.series.len(),
            });
        }
        eval::Evaluator::new(t_ms, &self.selectors, data).root(&self.root)
    }
}

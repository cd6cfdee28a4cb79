//! Turns the AST of `promql-parser` into the evaluator's typed plan: scalar
//! and vector nodes, the selectors the expression reads (numbered, each
//! once) and the labels `absent` would give. Everything outside the
//! supported subset is refused here, with a message naming the construct,
//! so evaluation never meets it. Type errors are the parser's business.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use promql_parser::label::{MatchOp as ParsedOp, Matcher};
use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_AVG, T_COUNT, T_DIV, T_EQLC, T_GROUP, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS,
    T_LTE, T_LUNLESS, T_MAX, T_MIN, T_MOD, T_MUL, T_NEQ, T_POW, T_STDDEV, T_STDVAR, T_SUB, T_SUM,
};
use promql_parser::parser::{
    AggregateExpr, BinaryExpr, Call, Expr, LabelModifier, Offset, VectorMatchCardinality,
    VectorSelector,
};

use super::aggregate::{AggOp, Grouping};
use super::binary::{BinOp, Card, Matching, SetOp};
use super::functions::{MathFn, RangeFn};
use super::{LabelMatcher, Labels, QueryError, Selector, LOOKBACK_DELTA_MS, METRIC_NAME};

/// The functions an alert rule may call.
pub const SUPPORTED_FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count_over_time",
    "delta",
    "floor",
    "idelta",
    "increase",
    "irate",
    "last_over_time",
    "max_over_time",
    "min_over_time",
    "present_over_time",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sqrt",
    "sum_over_time",
    "time",
    "vector",
];

const SUPPORTED_AGGREGATIONS: &str = "sum, avg, min, max, count, group, stddev, stdvar";

/// The plan of a whole expression.
#[derive(Debug)]
pub(super) enum Root {
    Scalar(ScalarNode),
    Vector(VectorNode),
}

#[derive(Debug)]
pub(super) enum ScalarNode {
    Number(f64),
    /// `time()`.
    Time,
    /// `scalar(v)`.
    FromVector(Box<VectorNode>),
    Negate(Box<ScalarNode>),
    Binary {
        op: BinOp,
        lhs: Box<ScalarNode>,
        rhs: Box<ScalarNode>,
    },
}

#[derive(Debug)]
pub(super) enum VectorNode {
    /// An instant selector, by its index in the query's selectors.
    Selector(usize),
    Range {
        func: RangeFn,
        selector: usize,
    },
    AbsentOverTime {
        selector: usize,
        labels: Arc<Labels>,
    },
    Absent {
        arg: Box<VectorNode>,
        labels: Arc<Labels>,
    },
    Math {
        func: MathFn,
        arg: Box<VectorNode>,
    },
    Round {
        arg: Box<VectorNode>,
        to_nearest: Option<ScalarNode>,
    },
    Clamp {
        arg: Box<VectorNode>,
        min: Option<ScalarNode>,
        max: Option<ScalarNode>,
    },
    /// `vector(s)`.
    FromScalar(ScalarNode),
    Negate(Box<VectorNode>),
    Aggregate {
        op: AggOp,
        grouping: Grouping,
        arg: Box<VectorNode>,
    },
    VectorScalar {
        op: BinOp,
        vector: Box<VectorNode>,
        scalar: ScalarNode,
        scalar_on_left: bool,
        return_bool: bool,
    },
    VectorVector {
        op: BinOp,
        lhs: Box<VectorNode>,
        rhs: Box<VectorNode>,
        return_bool: bool,
        matching: Matching,
    },
    Set {
        op: SetOp,
        lhs: Box<VectorNode>,
        rhs: Box<VectorNode>,
        matching: Matching,
    },
}

enum Typed {
    Scalar(ScalarNode),
    Vector(VectorNode),
}

pub(super) fn compile(expr: &Expr) -> Result<(Root, Vec<Selector>), QueryError> {
    let mut compiler = Compiler::default();
    let root = match compiler.expr(expr)? {
        Typed::Scalar(s) => Root::Scalar(s),
        Typed::Vector(v) => Root::Vector(v),
    };
    Ok((root, compiler.selectors))
}

fn unwrap_parens(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

fn millis(d: &Duration) -> Result<i64, QueryError> {
    i64::try_from(d.as_millis())
        .map_err(|_| QueryError::new(format!("the duration {d:?} is too long")))
}

/// A regex matcher compiled the way Prometheus 3 does: `^(?s:re)$`. The
/// parser has already compiled `^(?:re)$` (escaping Go-only literal
/// braces), so only the flag changes.
fn label_matcher(m: &Matcher) -> LabelMatcher {
    let regex = |re: &regex::Regex| {
        re.as_str()
            .strip_prefix("^(?:")
            .and_then(|rest| regex::Regex::new(&format!("^(?s:{rest}")).ok())
            .unwrap_or_else(|| re.clone())
    };
    match &m.op {
        ParsedOp::Equal => LabelMatcher::literal(&m.name, true, &m.value),
        ParsedOp::NotEqual => LabelMatcher::literal(&m.name, false, &m.value),
        ParsedOp::Re(re) => {
            LabelMatcher::with_regex(m.name.clone(), false, m.value.clone(), regex(re))
        }
        ParsedOp::NotRe(re) => {
            LabelMatcher::with_regex(m.name.clone(), true, m.value.clone(), regex(re))
        }
    }
}

/// `createLabelsForAbsentFunction`: the `=` matchers' labels, except a name
/// matched more than once.
fn absent_labels(vs: &VectorSelector) -> Arc<Labels> {
    let mut labels = Labels::new();
    let mut has = HashSet::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        if m.op == ParsedOp::Equal && !has.contains(m.name.as_str()) {
            has.insert(m.name.as_str());
            if m.value.is_empty() {
                labels.remove(&m.name);
            } else {
                labels.insert(m.name.clone(), m.value.clone());
            }
        } else {
            labels.remove(&m.name);
        }
    }
    Arc::new(labels)
}

fn sorted_names(labels: &[String]) -> Vec<String> {
    let mut names = labels.to_vec();
    names.sort();
    names.dedup();
    names
}

#[derive(Default)]
struct Compiler {
    selectors: Vec<Selector>,
}

impl Compiler {
    fn expr(&mut self, e: &Expr) -> Result<Typed, QueryError> {
        Ok(match e {
            Expr::NumberLiteral(n) => Typed::Scalar(ScalarNode::Number(n.val)),
            Expr::Paren(p) => self.expr(&p.expr)?,
            Expr::Unary(u) => match self.expr(&u.expr)? {
                Typed::Scalar(s) => Typed::Scalar(ScalarNode::Negate(Box::new(s))),
                Typed::Vector(v) => Typed::Vector(VectorNode::Negate(Box::new(v))),
            },
            Expr::VectorSelector(vs) => {
                Typed::Vector(VectorNode::Selector(self.selector(vs, None)?))
            }
            Expr::MatrixSelector(_) => {
                return Err(QueryError::new(
                    "a range vector such as `x[5m]` is only supported as the argument of a \
                     range function (rate, increase, avg_over_time, ...)",
                ))
            }
            Expr::Subquery(_) => return Err(QueryError::new("subqueries are not supported")),
            Expr::StringLiteral(_) => {
                return Err(QueryError::new(
                    "string expressions are not supported: an alert rule needs a vector",
                ))
            }
            Expr::Extension(_) => {
                return Err(QueryError::new("extension expressions are not supported"))
            }
            Expr::Aggregate(a) => self.aggregate(a)?,
            Expr::Call(c) => self.call(c)?,
            Expr::Binary(b) => self.binary(b)?,
        })
    }

    fn vector(&mut self, e: &Expr) -> Result<VectorNode, QueryError> {
        match self.expr(e)? {
            Typed::Vector(v) => Ok(v),
            Typed::Scalar(_) => Err(QueryError::new(format!(
                "expected an instant vector, got the scalar `{e}`"
            ))),
        }
    }

    fn scalar(&mut self, e: &Expr) -> Result<ScalarNode, QueryError> {
        match self.expr(e)? {
            Typed::Scalar(s) => Ok(s),
            Typed::Vector(_) => Err(QueryError::new(format!(
                "expected a scalar, got the instant vector `{e}`"
            ))),
        }
    }

    /// Numbers a selector, reusing the number of an identical one.
    fn selector(
        &mut self,
        vs: &VectorSelector,
        range_ms: Option<i64>,
    ) -> Result<usize, QueryError> {
        if vs.at.is_some() {
            return Err(QueryError::new("the @ modifier is not supported"));
        }
        if !vs.matchers.or_matchers.is_empty() {
            return Err(QueryError::new(
                "`or` between label matchers is not supported",
            ));
        }
        let mut matchers = Vec::with_capacity(vs.matchers.matchers.len() + 1);
        if let Some(name) = &vs.name {
            matchers.push(LabelMatcher::literal(METRIC_NAME, true, name));
        }
        matchers.extend(vs.matchers.matchers.iter().map(label_matcher));
        let offset_ms = match &vs.offset {
            None => 0,
            Some(Offset::Pos(d)) => millis(d)?,
            Some(Offset::Neg(d)) => -millis(d)?,
        };
        let selector = Selector {
            matchers,
            range_ms: range_ms.unwrap_or(LOOKBACK_DELTA_MS),
            offset_ms,
        };
        if let Some(i) = self.selectors.iter().position(|s| *s == selector) {
            return Ok(i);
        }
        self.selectors.push(selector);
        Ok(self.selectors.len() - 1)
    }

    /// The `x[5m]` argument of a range function, numbered.
    fn range_selector(&mut self, e: &Expr) -> Result<usize, QueryError> {
        match unwrap_parens(e) {
            Expr::MatrixSelector(ms) => self.selector(&ms.vs, Some(millis(&ms.range)?)),
            Expr::Subquery(_) => Err(QueryError::new("subqueries are not supported")),
            other => Err(QueryError::new(format!(
                "expected a range vector such as `x[5m]`, got `{other}`"
            ))),
        }
    }

    fn call(&mut self, call: &Call) -> Result<Typed, QueryError> {
        let name = call.func.name;
        let args: Vec<&Expr> = call.args.args.iter().map(|a| unwrap_parens(a)).collect();
        let arg = |i: usize| {
            args.get(i).copied().ok_or_else(|| {
                QueryError::new(format!("`{name}` needs at least {} argument(s)", i + 1))
            })
        };
        if let Some(func) = RangeFn::from_name(name) {
            let selector = self.range_selector(arg(0)?)?;
            return Ok(Typed::Vector(VectorNode::Range { func, selector }));
        }
        if let Some(func) = MathFn::from_name(name) {
            let arg = Box::new(self.vector(arg(0)?)?);
            return Ok(Typed::Vector(VectorNode::Math { func, arg }));
        }
        let node = match name {
            "absent_over_time" => {
                let labels = match arg(0)? {
                    Expr::MatrixSelector(ms) => absent_labels(&ms.vs),
                    _ => Arc::new(Labels::new()),
                };
                let selector = self.range_selector(arg(0)?)?;
                VectorNode::AbsentOverTime { selector, labels }
            }
            "absent" => {
                let labels = match arg(0)? {
                    Expr::VectorSelector(vs) => absent_labels(vs),
                    _ => Arc::new(Labels::new()),
                };
                let arg = Box::new(self.vector(arg(0)?)?);
                VectorNode::Absent { arg, labels }
            }
            "round" => VectorNode::Round {
                arg: Box::new(self.vector(arg(0)?)?),
                to_nearest: args.get(1).map(|e| self.scalar(e)).transpose()?,
            },
            "clamp" => VectorNode::Clamp {
                arg: Box::new(self.vector(arg(0)?)?),
                min: Some(self.scalar(arg(1)?)?),
                max: Some(self.scalar(arg(2)?)?),
            },
            "clamp_min" => VectorNode::Clamp {
                arg: Box::new(self.vector(arg(0)?)?),
                min: Some(self.scalar(arg(1)?)?),
                max: None,
            },
            "clamp_max" => VectorNode::Clamp {
                arg: Box::new(self.vector(arg(0)?)?),
                min: None,
                max: Some(self.scalar(arg(1)?)?),
            },
            "vector" => VectorNode::FromScalar(self.scalar(arg(0)?)?),
            "time" => return Ok(Typed::Scalar(ScalarNode::Time)),
            "scalar" => {
                let v = self.vector(arg(0)?)?;
                return Ok(Typed::Scalar(ScalarNode::FromVector(Box::new(v))));
            }
            _ => {
                return Err(QueryError::new(format!(
                    "`{name}` is not supported in alert rules; supported functions: {}",
                    SUPPORTED_FUNCTIONS.join(", ")
                )))
            }
        };
        Ok(Typed::Vector(node))
    }

    fn aggregate(&mut self, a: &AggregateExpr) -> Result<Typed, QueryError> {
        let op = match a.op.id() {
            T_SUM => AggOp::Sum,
            T_AVG => AggOp::Avg,
            T_MIN => AggOp::Min,
            T_MAX => AggOp::Max,
            T_COUNT => AggOp::Count,
            T_GROUP => AggOp::Group,
            T_STDDEV => AggOp::Stddev,
            T_STDVAR => AggOp::Stdvar,
            _ => {
                return Err(QueryError::new(format!(
                    "`{}` is not supported in alert rules; supported aggregations: \
                     {SUPPORTED_AGGREGATIONS}",
                    a.op
                )))
            }
        };
        let grouping = match &a.modifier {
            None => Grouping {
                without: false,
                names: Vec::new(),
            },
            Some(LabelModifier::Include(l)) => Grouping {
                without: false,
                names: sorted_names(&l.labels),
            },
            Some(LabelModifier::Exclude(l)) => Grouping {
                without: true,
                names: sorted_names(&l.labels),
            },
        };
        let arg = Box::new(self.vector(unwrap_parens(&a.expr))?);
        Ok(Typed::Vector(VectorNode::Aggregate { op, grouping, arg }))
    }

    fn binary(&mut self, b: &BinaryExpr) -> Result<Typed, QueryError> {
        enum Op {
            Bin(BinOp),
            Set(SetOp),
        }
        let op = match b.op.id() {
            T_ADD => Op::Bin(BinOp::Add),
            T_SUB => Op::Bin(BinOp::Sub),
            T_MUL => Op::Bin(BinOp::Mul),
            T_DIV => Op::Bin(BinOp::Div),
            T_MOD => Op::Bin(BinOp::Mod),
            T_POW => Op::Bin(BinOp::Pow),
            T_ATAN2 => Op::Bin(BinOp::Atan2),
            T_EQLC => Op::Bin(BinOp::Eq),
            T_NEQ => Op::Bin(BinOp::Ne),
            T_GTR => Op::Bin(BinOp::Gt),
            T_LSS => Op::Bin(BinOp::Lt),
            T_GTE => Op::Bin(BinOp::Ge),
            T_LTE => Op::Bin(BinOp::Le),
            T_LAND => Op::Set(SetOp::And),
            T_LOR => Op::Set(SetOp::Or),
            T_LUNLESS => Op::Set(SetOp::Unless),
            _ => {
                return Err(QueryError::new(format!(
                    "the operator `{}` is not supported in alert rules",
                    b.op
                )))
            }
        };
        let modifier = b.modifier.as_ref();
        if modifier.is_some_and(|m| m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some()) {
            return Err(QueryError::new(
                "the fill modifiers (fill, fill_left, fill_right) are not supported",
            ));
        }
        let return_bool = modifier.is_some_and(|m| m.return_bool);
        let lhs = self.expr(&b.lhs)?;
        let rhs = self.expr(&b.rhs)?;
        let node = match (op, lhs, rhs) {
            (Op::Bin(op), Typed::Scalar(lhs), Typed::Scalar(rhs)) => {
                return Ok(Typed::Scalar(ScalarNode::Binary {
                    op,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                }))
            }
            (Op::Bin(op), Typed::Vector(v), Typed::Scalar(s)) => VectorNode::VectorScalar {
                op,
                vector: Box::new(v),
                scalar: s,
                scalar_on_left: false,
                return_bool,
            },
            (Op::Bin(op), Typed::Scalar(s), Typed::Vector(v)) => VectorNode::VectorScalar {
                op,
                vector: Box::new(v),
                scalar: s,
                scalar_on_left: true,
                return_bool,
            },
            (op, Typed::Vector(lhs), Typed::Vector(rhs)) => {
                let (card, include) = match modifier.map(|m| &m.card) {
                    Some(VectorMatchCardinality::ManyToOne(l)) => {
                        (Card::ManyToOne, l.labels.clone())
                    }
                    Some(VectorMatchCardinality::OneToMany(l)) => {
                        (Card::OneToMany, l.labels.clone())
                    }
                    _ => (Card::OneToOne, Vec::new()),
                };
                let (on, names) = match modifier.and_then(|m| m.matching.as_ref()) {
                    Some(LabelModifier::Include(l)) => (true, sorted_names(&l.labels)),
                    Some(LabelModifier::Exclude(l)) => (false, sorted_names(&l.labels)),
                    None => (false, Vec::new()),
                };
                let matching = Matching {
                    card,
                    on,
                    names,
                    include,
                };
                let (lhs, rhs) = (Box::new(lhs), Box::new(rhs));
                match op {
                    Op::Bin(op) => VectorNode::VectorVector {
                        op,
                        lhs,
                        rhs,
                        return_bool,
                        matching,
                    },
                    Op::Set(op) => VectorNode::Set {
                        op,
                        lhs,
                        rhs,
                        matching,
                    },
                }
            }
            (Op::Set(_), _, _) => {
                return Err(QueryError::new(
                    "set operators (and, or, unless) need vectors on both sides",
                ))
            }
        };
        Ok(Typed::Vector(node))
    }
}

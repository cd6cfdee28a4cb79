//! Aggregations, binary operators, vector matching, `absent` and the
//! instant-vector functions.

use super::*;

fn http() -> Vec<SeriesData> {
    vec![
        series(
            &[("__name__", "http"), ("job", "a"), ("instance", "1")],
            &[(10, 1.0)],
        ),
        series(
            &[("__name__", "http"), ("job", "a"), ("instance", "2")],
            &[(10, 2.0)],
        ),
        series(
            &[("__name__", "http"), ("job", "b"), ("instance", "1")],
            &[(10, 4.0)],
        ),
    ]
}

/// a and b share `job` but not `instance`; c has two series for job x.
fn matching() -> Vec<SeriesData> {
    vec![
        series(
            &[("__name__", "a"), ("job", "x"), ("instance", "1")],
            &[(10, 10.0)],
        ),
        series(
            &[("__name__", "a"), ("job", "y"), ("instance", "1")],
            &[(10, 20.0)],
        ),
        series(
            &[("__name__", "b"), ("job", "x"), ("instance", "2")],
            &[(10, 2.0)],
        ),
        series(
            &[("__name__", "b"), ("job", "y"), ("instance", "2")],
            &[(10, 5.0)],
        ),
        series(
            &[("__name__", "c"), ("job", "x"), ("instance", "1")],
            &[(10, 1.0)],
        ),
        series(
            &[("__name__", "c"), ("job", "x"), ("instance", "2")],
            &[(10, 2.0)],
        ),
        series(
            &[("__name__", "info"), ("job", "x"), ("team", "t1")],
            &[(10, 1.0)],
        ),
        series(
            &[("__name__", "d"), ("job", "x"), ("instance", "1")],
            &[(10, 3.0)],
        ),
    ]
}

#[test]
fn sum_by_keeps_only_the_listed_labels() {
    let v = eval("sum by (job) (http)", 20, &http()).expect("evaluates");
    // a: 1 + 2 = 3; b: 4.
    assert_vector(v, &[(&[("job", "a")], 3.0), (&[("job", "b")], 4.0)]);
    let v = eval("sum by (__name__) (http)", 20, &http()).expect("evaluates");
    assert_vector(v, &[(&[("__name__", "http")], 7.0)]);
    assert_vector(
        eval("sum(http)", 20, &http()).expect("evaluates"),
        &[(&[], 7.0)],
    );
}

#[test]
fn sum_without_drops_the_listed_labels_and_the_metric_name() {
    let v = eval("sum without (instance) (http)", 20, &http()).expect("evaluates");
    assert_vector(v, &[(&[("job", "a")], 3.0), (&[("job", "b")], 4.0)]);
    let v = eval("sum without (job, instance) (http)", 20, &http()).expect("evaluates");
    assert_vector(v, &[(&[], 7.0)]);
}

#[test]
fn other_aggregations_compute_per_group() {
    let by_job = |op: &str| eval(&format!("{op} by (job) (http)"), 20, &http()).expect("evaluates");
    // a holds 1 and 2, b holds 4.
    assert_vector(
        by_job("avg"),
        &[(&[("job", "a")], 1.5), (&[("job", "b")], 4.0)],
    );
    assert_vector(
        by_job("count"),
        &[(&[("job", "a")], 2.0), (&[("job", "b")], 1.0)],
    );
    assert_vector(
        by_job("min"),
        &[(&[("job", "a")], 1.0), (&[("job", "b")], 4.0)],
    );
    assert_vector(
        by_job("max"),
        &[(&[("job", "a")], 2.0), (&[("job", "b")], 4.0)],
    );
    assert_vector(
        by_job("group"),
        &[(&[("job", "a")], 1.0), (&[("job", "b")], 1.0)],
    );
    // Mean 1.5, squared deviations 0.25 + 0.25 over 2 = 0.25; sqrt 0.5.
    assert_vector(
        by_job("stdvar"),
        &[(&[("job", "a")], 0.25), (&[("job", "b")], 0.0)],
    );
    assert_vector(
        by_job("stddev"),
        &[(&[("job", "a")], 0.5), (&[("job", "b")], 0.0)],
    );
}

#[test]
fn aggregating_nothing_gives_nothing_and_max_replaces_a_nan() {
    assert_vector(eval("sum(missing)", 20, &http()).expect("evaluates"), &[]);
    let s = [
        series(&[("__name__", "x"), ("i", "1")], &[(10, f64::NAN)]),
        series(&[("__name__", "x"), ("i", "2")], &[(10, 1.0)]),
    ];
    assert_vector(eval("max(x)", 20, &s).expect("evaluates"), &[(&[], 1.0)]);
}

#[test]
fn a_comparison_with_a_scalar_filters_and_keeps_the_left_labels() {
    let v = eval("http > 1", 20, &http()).expect("evaluates");
    assert_vector(
        v,
        &[
            (
                &[("__name__", "http"), ("job", "a"), ("instance", "2")],
                2.0,
            ),
            (
                &[("__name__", "http"), ("job", "b"), ("instance", "1")],
                4.0,
            ),
        ],
    );
    // With the scalar on the left the vector's values are kept too.
    let v = eval("1 < http", 20, &http()).expect("evaluates");
    assert_vector(
        v,
        &[
            (
                &[("__name__", "http"), ("job", "a"), ("instance", "2")],
                2.0,
            ),
            (
                &[("__name__", "http"), ("job", "b"), ("instance", "1")],
                4.0,
            ),
        ],
    );
}

#[test]
fn a_bool_comparison_gives_zero_or_one_and_drops_the_metric_name() {
    let v = eval("http > bool 1", 20, &http()).expect("evaluates");
    assert_vector(
        v,
        &[
            (&[("job", "a"), ("instance", "1")], 0.0),
            (&[("job", "a"), ("instance", "2")], 1.0),
            (&[("job", "b"), ("instance", "1")], 1.0),
        ],
    );
}

#[test]
fn arithmetic_with_a_scalar_drops_the_metric_name() {
    let v = eval("2 - http", 20, &http()).expect("evaluates");
    assert_vector(
        v,
        &[
            (&[("job", "a"), ("instance", "1")], 1.0),
            (&[("job", "a"), ("instance", "2")], 0.0),
            (&[("job", "b"), ("instance", "1")], -2.0),
        ],
    );
}

#[test]
fn comparisons_with_nan_are_false_except_not_equal() {
    let s = [series(&[("__name__", "x")], &[(10, f64::NAN)])];
    assert_vector(eval("x > 1", 20, &s).expect("evaluates"), &[]);
    assert_vector(eval("x == 1", 20, &s).expect("evaluates"), &[]);
    assert_vector(
        eval("x != 1", 20, &s).expect("evaluates"),
        &[(&[("__name__", "x")], f64::NAN)],
    );
    assert_vector(
        eval("x == bool x", 20, &s).expect("evaluates"),
        &[(&[], 0.0)],
    );
}

#[test]
fn vectors_match_on_all_labels_but_the_name_by_default() {
    // a and b differ in `instance`, so nothing matches.
    assert_vector(eval("a / b", 20, &matching()).expect("evaluates"), &[]);
}

#[test]
fn ignoring_and_on_choose_the_matching_labels() {
    // 10 / 2 = 5 and 20 / 5 = 4; the result drops the name and `instance`.
    let want: &[(&[(&str, &str)], f64)] = &[(&[("job", "x")], 5.0), (&[("job", "y")], 4.0)];
    assert_vector(
        eval("a / ignoring(instance) b", 20, &matching()).expect("evaluates"),
        want,
    );
    // `on` keeps only the listed labels.
    assert_vector(
        eval("a / on(job) b", 20, &matching()).expect("evaluates"),
        want,
    );
}

#[test]
fn a_vector_comparison_filters_and_keeps_the_left_name() {
    let v = eval("a > ignoring(instance) b", 20, &matching()).expect("evaluates");
    assert_vector(
        v,
        &[
            (&[("__name__", "a"), ("job", "x")], 10.0),
            (&[("__name__", "a"), ("job", "y")], 20.0),
        ],
    );
    let v = eval("a < bool ignoring(instance) b", 20, &matching()).expect("evaluates");
    assert_vector(v, &[(&[("job", "x")], 0.0), (&[("job", "y")], 0.0)]);
}

#[test]
fn duplicate_series_on_the_one_side_are_a_many_to_many_error() {
    let err = eval("a + on(job) c", 20, &matching()).expect_err("c has two series for job x");
    assert_eq!(
        err.to_string(),
        "found duplicate series for the match group {job=\"x\"} on the right hand-side of the \
         operation: [{__name__=\"c\", instance=\"1\", job=\"x\"}, {__name__=\"c\", \
         instance=\"2\", job=\"x\"}];many-to-many matching not allowed: matching labels must \
         be unique on one side"
    );
}

#[test]
fn two_left_elements_for_one_right_element_need_group_left() {
    let err = eval("c + on(job) a", 20, &matching()).expect_err("one-to-one");
    assert_eq!(
        err.to_string(),
        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
    );
    // With group_left: c's labels without the name; 1 + 10 and 2 + 10.
    let v = eval(r#"c + on(job) group_left a{job="x"}"#, 20, &matching()).expect("evaluates");
    assert_vector(
        v,
        &[
            (&[("job", "x"), ("instance", "1")], 11.0),
            (&[("job", "x"), ("instance", "2")], 12.0),
        ],
    );
}

#[test]
fn group_left_and_group_right_copy_the_listed_labels_from_the_one_side() {
    let want: &[(&[(&str, &str)], f64)] = &[
        (&[("job", "x"), ("instance", "1"), ("team", "t1")], 1.0),
        (&[("job", "x"), ("instance", "2"), ("team", "t1")], 2.0),
    ];
    let v = eval("c * on(job) group_left(team) info", 20, &matching()).expect("evaluates");
    assert_vector(v, want);
    let v = eval("info * on(job) group_right(team) c", 20, &matching()).expect("evaluates");
    assert_vector(v, want);
}

#[test]
fn dropping_the_name_of_two_metrics_with_equal_labels_is_a_duplicate_labelset() {
    for text in [
        r#"{__name__=~"a|d"} + 1"#,
        r#"-{__name__=~"a|d"}"#,
        r#"abs({__name__=~"a|d"})"#,
    ] {
        let err = eval(text, 20, &matching()).expect_err(text);
        assert!(matches!(err, EvalError::DuplicateLabelset), "{text}: {err}");
    }
    // A filtering comparison keeps the names, so there is no clash.
    let v = eval(r#"{__name__=~"a|d"} > 0"#, 20, &matching()).expect("evaluates");
    assert_eq!(only_len(v), 3);
}

fn only_len(v: Value) -> usize {
    match v {
        Value::Vector(v) => v.len(),
        other => panic!("expected a vector, got {other:?}"),
    }
}

#[test]
fn set_operators_match_like_the_arithmetic_ones() {
    let m = matching();
    assert_vector(eval("a and b", 20, &m).expect("evaluates"), &[]);
    assert_eq!(
        only_len(eval("a and ignoring(instance) b", 20, &m).expect("evaluates")),
        2
    );
    assert_vector(
        eval(r#"a unless on(job) b{job="x"}"#, 20, &m).expect("evaluates"),
        &[(&[("__name__", "a"), ("job", "y"), ("instance", "1")], 20.0)],
    );
    // No signature is shared, so `or` keeps all four; with on(job) b adds nothing.
    assert_eq!(only_len(eval("a or b", 20, &m).expect("evaluates")), 4);
    assert_eq!(
        only_len(eval("a or on(job) b", 20, &m).expect("evaluates")),
        2
    );
    assert_eq!(
        only_len(eval("missing or b", 20, &m).expect("evaluates")),
        2
    );
}

#[test]
fn absent_gives_the_equality_labels_only_when_the_input_is_empty() {
    let m = matching();
    let v = eval(r#"absent(nonexistent{job="x", env=~"p.*"})"#, 20, &m).expect("evaluates");
    assert_vector(v, &[(&[("job", "x")], 1.0)]);
    assert_vector(
        eval(r#"absent(a{job="x"})"#, 20, &m).expect("evaluates"),
        &[],
    );
    // A label matched twice is left out, and a non-selector argument gives {}.
    let v = eval(r#"absent(nonexistent{job="x", job="y"})"#, 20, &m).expect("evaluates");
    assert_vector(v, &[(&[], 1.0)]);
    assert_vector(
        eval("absent(sum(nonexistent))", 20, &m).expect("evaluates"),
        &[(&[], 1.0)],
    );
}

#[test]
fn scalar_vector_and_time_convert_between_types() {
    let h = http();
    assert!(eval("scalar(http)", 20, &h)
        .map(|v| matches!(v, Value::Scalar(x) if x.is_nan()))
        .expect("evaluates"));
    assert_scalar(eval("scalar(sum(http))", 20, &h).expect("evaluates"), 7.0);
    assert_vector(eval("vector(1)", 20, &h).expect("evaluates"), &[(&[], 1.0)]);
    assert_scalar(eval("time()", 20, &h).expect("evaluates"), 20.0);
    // sum 7 > 5: the filter keeps the element.
    assert_vector(
        eval("sum(http) > scalar(vector(5))", 20, &h).expect("evaluates"),
        &[(&[], 7.0)],
    );
}

#[test]
fn scalar_arithmetic_follows_precedence_and_bool_comparisons() {
    assert_scalar(eval("1 + 2 * 3", 0, &[]).expect("evaluates"), 7.0);
    assert_scalar(eval("2 ^ 3 ^ 2", 0, &[]).expect("evaluates"), 512.0); // 2 ^ 9
    assert_scalar(eval("-(5 % 3)", 0, &[]).expect("evaluates"), -2.0);
    assert_scalar(eval("1 > bool 2", 0, &[]).expect("evaluates"), 0.0);
}

#[test]
fn element_wise_functions_drop_the_name_and_clamp_like_go() {
    let s = [series(&[("__name__", "x"), ("i", "1")], &[(10, -2.25)])];
    let at = |f: &str| only_value(eval(f, 20, &s).expect("evaluates"));
    assert_eq!(at("abs(x)"), 2.25);
    assert_eq!(at("ceil(x)"), -2.0);
    assert_eq!(at("floor(x)"), -3.0);
    assert_eq!(at("sgn(x)"), -1.0);
    assert_eq!(at("clamp_min(x, 0)"), 0.0);
    assert_eq!(at("clamp_max(x, -3)"), -3.0);
    assert_eq!(at("clamp(x, -1, 1)"), -1.0);
    // round to 0.5: floor(-2.25 × 2 + 0.5) / 2 = -4 / 2 = -2.
    assert_eq!(at("round(x, 0.5)"), -2.0);
    assert!(at("clamp_max(x, NaN)").is_nan());
    assert_vector(eval("clamp(x, 1, -1)", 20, &s).expect("evaluates"), &[]);
    assert_vector(
        eval("abs(x)", 20, &s).expect("evaluates"),
        &[(&[("i", "1")], 2.25)],
    );
}

//! Selectors: what a query reports it reads, the instant lookback, the
//! left-open range, offsets, staleness markers and label matching.

use super::*;

#[test]
fn selectors_list_the_metric_name_first_then_the_written_matchers() {
    let q = parse(r#"rate(http_requests_total{job="api", code=~"5.."}[5m] offset 1m) > 0"#)
        .expect("parses");
    let [sel] = q.selectors() else {
        panic!("one selector expected: {:?}", q.selectors());
    };
    let ops: Vec<(&str, MatchOp, &str)> = sel
        .matchers
        .iter()
        .map(|m| (m.name.as_str(), m.op, m.value.as_str()))
        .collect();
    assert_eq!(
        ops,
        [
            ("__name__", MatchOp::Equal, "http_requests_total"),
            ("job", MatchOp::Equal, "api"),
            ("code", MatchOp::Regex, "5.."),
        ]
    );
    assert_eq!(sel.range_ms, 5 * MINUTE);
    assert_eq!(sel.offset_ms, MINUTE);
}

#[test]
fn an_instant_selector_reads_the_lookback_window_and_offsets_may_be_negative() {
    let q = parse("up offset -30s").expect("parses");
    assert_eq!(q.selectors()[0].range_ms, LOOKBACK_DELTA_MS);
    assert_eq!(q.selectors()[0].offset_ms, -30 * SECOND);
}

#[test]
fn selectors_are_listed_in_order_of_appearance_and_identical_ones_once() {
    let q = parse("a + b + a + a offset 1m").expect("parses");
    let names: Vec<(&str, i64)> = q
        .selectors()
        .iter()
        .map(|s| (s.matchers[0].value.as_str(), s.offset_ms))
        .collect();
    assert_eq!(names, [("a", 0), ("b", 0), ("a", MINUTE)]);
    assert_eq!(q.text(), "a + b + a + a offset 1m");
}

#[test]
fn instant_selector_finds_a_sample_4m59s_old_but_not_one_5m_old() {
    let s = [
        series(&[("__name__", "up"), ("job", "a")], &[(1, 1.0)]),
        series(&[("__name__", "up"), ("job", "b")], &[(0, 2.0)]),
    ];
    // At t = 300 s: job a's sample is 299 s old (inside (0, 300]); job b's
    // is exactly 300 s old, on the open edge.
    assert_vector(
        eval("up", 300, &s).expect("evaluates"),
        &[(&[("__name__", "up"), ("job", "a")], 1.0)],
    );
}

#[test]
fn instant_selector_takes_the_latest_sample_not_after_t_from_a_wider_slice() {
    let s = [series(
        &[("__name__", "up")],
        &[(10, 1.0), (20, 2.0), (30, 3.0), (40, 4.0)],
    )];
    // The caller fetched up to 40 s; at t = 30 s the sample at 30 s counts,
    // the one at 40 s is in the future.
    assert_eq!(only_value(eval("up", 30, &s).expect("evaluates")), 3.0);
    assert_eq!(only_value(eval("up", 35, &s).expect("evaluates")), 3.0);
}

#[test]
fn offset_shifts_the_lookback_back_and_a_negative_offset_forward() {
    let s = [series(&[("__name__", "x")], &[(240, 1.0), (300, 2.0)])];
    assert_eq!(
        only_value(eval("x offset 1m", 300, &s).expect("evaluates")),
        1.0
    );
    assert_eq!(
        only_value(eval("x offset -1m", 240, &s).expect("evaluates")),
        2.0
    );
}

#[test]
fn range_selector_excludes_a_sample_exactly_at_the_window_start() {
    let s = [series(
        &[("__name__", "x")],
        &[(0, 1.0), (60, 1.0), (90, 1.0), (120, 1.0), (150, 1.0)],
    )];
    // x[1m] at 120 s is (60 s, 120 s]: the samples at 90 s and 120 s.
    assert_vector(
        eval("count_over_time(x[1m])", 120, &s).expect("evaluates"),
        &[(&[], 2.0)],
    );
}

#[test]
fn a_staleness_marker_hides_the_series_from_an_instant_selector_and_a_range() {
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    let s = [series(
        &[("__name__", "x")],
        &[(10, 1.0), (20, 2.0), (30, stale)],
    )];
    assert_vector(eval("x", 40, &s).expect("evaluates"), &[]);
    // The marker is not a sample of the range: 1 + 2 = 3.
    assert_vector(
        eval("sum_over_time(x[1m])", 40, &s).expect("evaluates"),
        &[(&[], 3.0)],
    );
}

#[test]
fn a_missing_label_matches_as_the_empty_string() {
    let m = |op: &str| {
        let q = parse(&format!(r#"x{{env{op}""}}"#)).expect("parses");
        q.selectors()[0].matchers[1].clone()
    };
    assert!(m("=").matches(None));
    assert!(!m("!=").matches(None));
    assert!(m("=~").matches(None));
    assert!(!m("!~").matches(None));
    assert!(!LabelMatcher::literal("env", true, "prod").matches(None));
}

#[test]
fn regex_matchers_are_fully_anchored_and_dot_matches_a_newline() {
    let q = parse(r#"x{job=~"api|web", path!~"/a.c"}"#).expect("parses");
    let (job, path) = (&q.selectors()[0].matchers[1], &q.selectors()[0].matchers[2]);
    assert!(job.matches(Some("api")));
    assert!(!job.matches(Some("api2")));
    assert!(!job.matches(Some("xweb")));
    assert!(
        !path.matches(Some("/a\nc")),
        "`.` matches `\\n` as in Prometheus 3"
    );
    assert!(path.matches(Some("/abcd")));
}

#[test]
fn go_style_literal_braces_in_a_regex_are_accepted() {
    let q = parse(r#"x{path=~"a{b}c"}"#).expect("parses");
    assert!(q.selectors()[0].matchers[1].matches(Some("a{b}c")));
}

#[test]
fn the_data_must_hold_one_entry_per_selector() {
    let q = parse("a + b").expect("parses");
    let err = q
        .eval(
            0,
            &Data {
                series: vec![Vec::new()],
            },
        )
        .expect_err("one entry is missing");
    assert!(
        matches!(
            err,
            EvalError::DataMismatch {
                expected: 2,
                got: 1
            }
        ),
        "{err}"
    );
}

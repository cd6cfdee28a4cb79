//! What `parse` and `check_alerting` refuse, and with which message.

use super::*;

#[test]
fn an_unsupported_function_is_named_with_the_supported_list() {
    let msg = parse_error("histogram_quantile(0.9, rate(x_bucket[5m]))");
    assert!(
        msg.starts_with("`histogram_quantile` is not supported in alert rules; supported functions: abs, absent,"),
        "{msg}"
    );
    assert!(msg.contains("rate"), "{msg}");
    assert!(parse_error(r#"label_replace(up, "a", "$1", "b", "(.*)")"#)
        .starts_with("`label_replace` is not supported"));
}

#[test]
fn an_unsupported_aggregation_is_named_with_the_supported_list() {
    let msg = parse_error("topk(3, up)");
    assert_eq!(
        msg,
        "`topk` is not supported in alert rules; supported aggregations: sum, avg, min, max, count, group, stddev, stdvar"
    );
    assert!(parse_error("quantile(0.9, up)").starts_with("`quantile` is not supported"));
    assert!(parse_error(r#"count_values("v", up)"#).starts_with("`count_values` is not supported"));
}

#[test]
fn subqueries_the_at_modifier_and_fill_are_refused() {
    assert_eq!(
        parse_error("max_over_time(rate(x[5m])[1h:1m])"),
        "subqueries are not supported"
    );
    assert_eq!(
        parse_error("rate(x[5m:1m])"),
        "subqueries are not supported"
    );
    assert_eq!(
        parse_error("up @ 1700000000"),
        "the @ modifier is not supported"
    );
    assert_eq!(
        parse_error("rate(x[5m] @ end())"),
        "the @ modifier is not supported"
    );
    assert_eq!(
        parse_error("a + fill(0) b"),
        "the fill modifiers (fill, fill_left, fill_right) are not supported"
    );
    assert_eq!(
        parse_error(r#"up{job="a" or job="b"}"#),
        "`or` between label matchers is not supported"
    );
}

#[test]
fn a_string_result_and_a_bare_range_vector_are_refused() {
    assert!(parse_error(r#""text""#).starts_with("string expressions are not supported"));
    assert!(parse_error("up[5m]").starts_with("a range vector such as `x[5m]` is only supported"));
}

#[test]
fn an_empty_expression_is_refused() {
    assert_eq!(parse_error(""), "the expression is empty");
    assert_eq!(parse_error("  \n"), "the expression is empty");
}

#[test]
fn parse_errors_carry_the_parser_message() {
    assert_eq!(parse_error("up{"), "unexpected end of input inside braces");
    assert_eq!(parse_error("sum(rate(x[5m])"), "unclosed left parenthesis");
    assert_eq!(
        parse_error("1 > 2"),
        "comparisons between scalars must use BOOL modifier"
    );
    assert_eq!(
        parse_error("rate(x)"),
        "expected type matrix in call to function 'rate', got vector"
    );
    assert_eq!(parse_error(r#"x{a=~"("}"#), "illegal regex for (");
    // The grammar's own errors come without a position from promql-parser.
    assert_eq!(parse_error("rate(x[5m]) >"), "invalid promql query");
}

#[test]
fn check_alerting_refuses_a_scalar_expression_and_accepts_a_vector() {
    for text in ["1 + 1", "scalar(up)", "time()"] {
        let q = parse(text).expect("parses");
        let err = check_alerting(&q).expect_err(text);
        assert!(
            err.message
                .starts_with("alerting expression must be a vector"),
            "{text}: {err}"
        );
    }
    for text in ["up == 0", "vector(1)", "absent(up)"] {
        check_alerting(&parse(text).expect("parses")).expect(text);
    }
}

//! Range functions: `rate`/`increase`/`delta` extrapolation, `irate`, the
//! `*_over_time` family, `changes`/`resets`, name handling and windows
//! narrower than the fetched slice.

use super::*;

/// A counter sampled every 60 s at 30, 90, ..., 270 s.
fn counter(values: [f64; 5]) -> Vec<SeriesData> {
    let t = [30, 90, 150, 210, 270];
    vec![series(
        &[("__name__", "c_total"), ("job", "a")],
        &t.iter().copied().zip(values).collect::<Vec<_>>(),
    )]
}

#[test]
fn rate_extrapolates_regular_samples_to_both_window_edges() {
    let s = counter([100.0, 160.0, 220.0, 280.0, 340.0]);
    // Window (0, 300 s]. Increase 340 - 100 = 240 over 240 s; 30 s to each
    // edge is below 1.1 × 60 s, so extrapolate fully: 240 × 300/240 = 300.
    // Zero point: 240 × 100/240 = 100 s before the first sample, not a limit.
    assert_vector(
        eval("increase(c_total[5m])", 300, &s).expect("evaluates"),
        &[(&[("job", "a")], 300.0)],
    );
    // rate = 300 / 300 s = 1.
    assert_vector(
        eval("rate(c_total[5m])", 300, &s).expect("evaluates"),
        &[(&[("job", "a")], 1.0)],
    );
}

#[test]
fn rate_extrapolates_only_half_an_interval_past_a_gap_at_the_start() {
    let s = vec![series(
        &[("__name__", "c_total")],
        &[(150, 100.0), (210, 160.0), (270, 220.0)],
    )];
    // Window (0, 300 s]: 150 s to the start ≥ 1.1 × 60 s, so only 30 s;
    // 30 s to the end. Increase 120 over 120 s: 120 × (120+30+30)/120 = 180.
    assert_eq!(
        only_value(eval("increase(c_total[5m])", 300, &s).expect("evaluates")),
        180.0
    );
    // 180 / 300 s = 0.6.
    assert!(same(
        only_value(eval("rate(c_total[5m])", 300, &s).expect("evaluates")),
        0.6
    ));
}

#[test]
fn rate_adds_the_value_before_a_counter_reset() {
    let s = counter([100.0, 160.0, 20.0, 80.0, 140.0]);
    // 140 - 100 = 40, plus 160 lost at the reset = 200 over 240 s; full
    // extrapolation (zero point 240 × 100/200 = 120 s away): 200 × 1.25 = 250.
    assert_eq!(
        only_value(eval("increase(c_total[5m])", 300, &s).expect("evaluates")),
        250.0
    );
    // 250 / 300 s.
    assert!(same(
        only_value(eval("rate(c_total[5m])", 300, &s).expect("evaluates")),
        250.0 / 300.0
    ));
}

#[test]
fn counter_extrapolation_stops_where_the_counter_would_reach_zero() {
    let s = counter([5.0, 65.0, 125.0, 185.0, 245.0]);
    // Slope 1/s from 5 at 30 s: zero 240 × 5/240 = 5 s before the first
    // sample, closer than the 30 s to the start. 240 × (240+5+30)/240 = 275.
    assert!(same(
        only_value(eval("increase(c_total[5m])", 300, &s).expect("evaluates")),
        275.0
    ));
}

#[test]
fn delta_extrapolates_a_gauge_without_reset_or_zero_handling() {
    let s = vec![series(
        &[("__name__", "g")],
        &[(30, 10.0), (90, 30.0), (150, 4.0)],
    )];
    // 4 - 10 = -6 over 120 s; 30 s to the start; 150 s to the end ≥ 66 s, so
    // 30 s: -6 × (120+30+30)/120 = -9.
    assert_eq!(
        only_value(eval("delta(g[5m])", 300, &s).expect("evaluates")),
        -9.0
    );
}

#[test]
fn rate_of_a_single_sample_gives_no_element() {
    let s = vec![series(&[("__name__", "c_total")], &[(100, 5.0)])];
    assert_vector(eval("rate(c_total[5m])", 300, &s).expect("evaluates"), &[]);
}

#[test]
fn rate_clips_a_wider_slice_to_its_window() {
    // Fetched 0..600 s, evaluated at 300 s: only (0, 300 s] counts, i.e.
    // the same samples as the regular case, so the rate is 1 again.
    let t: Vec<(i64, f64)> = (0..10)
        .map(|i| (30 + 60 * i, 100.0 + 60.0 * i as f64))
        .collect();
    let s = vec![series(&[("__name__", "c_total")], &t)];
    assert!(same(
        only_value(eval("rate(c_total[5m])", 300, &s).expect("evaluates")),
        1.0
    ));
    // One minute later the window (60, 360 s] holds 90..330 s: same spacing.
    assert!(same(
        only_value(eval("rate(c_total[5m])", 360, &s).expect("evaluates")),
        1.0
    ));
}

#[test]
fn rate_with_offset_reads_the_shifted_window() {
    let s = counter([100.0, 160.0, 220.0, 280.0, 340.0]);
    // At 360 s with offset 1m the window is (0, 300 s] again: rate 1.
    assert!(same(
        only_value(eval("rate(c_total[5m] offset 1m)", 360, &s).expect("evaluates")),
        1.0
    ));
}

#[test]
fn irate_and_idelta_use_the_last_two_samples() {
    let s = vec![series(
        &[("__name__", "c")],
        &[(0, 1.0), (50, 10.0), (60, 40.0)],
    )];
    // (40 - 10) / 10 s = 3; idelta 40 - 10 = 30.
    assert_eq!(
        only_value(eval("irate(c[5m])", 60, &s).expect("evaluates")),
        3.0
    );
    assert_eq!(
        only_value(eval("idelta(c[5m])", 60, &s).expect("evaluates")),
        30.0
    );
    // After a reset irate takes the last value: 5 / 10 s = 0.5.
    let reset = vec![series(&[("__name__", "c")], &[(50, 10.0), (60, 5.0)])];
    assert_eq!(
        only_value(eval("irate(c[5m])", 60, &reset).expect("evaluates")),
        0.5
    );
}

#[test]
fn over_time_functions_aggregate_the_window() {
    let s = vec![series(
        &[("__name__", "g"), ("job", "a")],
        &[(10, 4.0), (20, 1.0), (30, 7.0), (40, 2.0)],
    )];
    let at = |f: &str| only_value(eval(&format!("{f}(g[1m])"), 40, &s).expect("evaluates"));
    assert_eq!(at("sum_over_time"), 14.0); // 4 + 1 + 7 + 2
    assert_eq!(at("avg_over_time"), 3.5); // 14 / 4
    assert_eq!(at("min_over_time"), 1.0);
    assert_eq!(at("max_over_time"), 7.0);
    assert_eq!(at("count_over_time"), 4.0);
    assert_eq!(at("last_over_time"), 2.0);
    assert_eq!(at("present_over_time"), 1.0);
    assert_eq!(at("changes"), 3.0);
    assert_eq!(at("resets"), 2.0); // 4 → 1 and 7 → 2
}

#[test]
fn range_functions_drop_the_metric_name_except_last_over_time() {
    let s = vec![series(&[("__name__", "g"), ("job", "a")], &[(10, 4.0)])];
    assert_vector(
        eval("max_over_time(g[1m])", 20, &s).expect("evaluates"),
        &[(&[("job", "a")], 4.0)],
    );
    assert_vector(
        eval("last_over_time(g[1m])", 20, &s).expect("evaluates"),
        &[(&[("__name__", "g"), ("job", "a")], 4.0)],
    );
}

#[test]
fn max_over_time_skips_a_leading_nan_and_min_over_time_keeps_later_values() {
    let s = vec![series(
        &[("__name__", "g")],
        &[(10, f64::NAN), (20, 3.0), (30, 1.0)],
    )];
    assert_eq!(
        only_value(eval("max_over_time(g[1m])", 30, &s).expect("evaluates")),
        3.0
    );
    assert_eq!(
        only_value(eval("min_over_time(g[1m])", 30, &s).expect("evaluates")),
        1.0
    );
}

#[test]
fn avg_over_time_switches_to_an_incremental_mean_instead_of_overflowing() {
    let s = vec![series(
        &[("__name__", "g")],
        &[(10, 1e308), (20, 1e308), (30, 1e308)],
    )];
    // 1e308 + 1e308 overflows, so the mean continues incrementally:
    // 1e308 × 1/2 + 1e308/2 = 1e308, then 1e308 × 2/3 + 1e308/3 ≈ 1e308.
    assert!(same(
        only_value(eval("avg_over_time(g[1m])", 30, &s).expect("evaluates")),
        1e308
    ));
}

#[test]
fn a_range_function_over_two_names_with_equal_labels_is_a_duplicate_labelset() {
    let s = vec![
        series(
            &[("__name__", "a_total"), ("job", "x")],
            &[(10, 1.0), (20, 2.0)],
        ),
        series(
            &[("__name__", "b_total"), ("job", "x")],
            &[(10, 1.0), (20, 2.0)],
        ),
    ];
    let err = eval(r#"rate({__name__=~"a_total|b_total"}[1m])"#, 30, &s).expect_err("duplicate");
    assert_eq!(
        err.to_string(),
        "vector cannot contain metrics with the same labelset"
    );
    // last_over_time keeps the names, so the two elements differ.
    let v = eval(
        r#"last_over_time({__name__=~"a_total|b_total"}[1m])"#,
        30,
        &s,
    )
    .expect("evaluates");
    assert_vector(
        v,
        &[
            (&[("__name__", "a_total"), ("job", "x")], 2.0),
            (&[("__name__", "b_total"), ("job", "x")], 2.0),
        ],
    );
}

#[test]
fn absent_over_time_is_one_only_when_no_series_has_a_sample_in_the_range() {
    let s = vec![series(&[("__name__", "up"), ("job", "a")], &[(10, 1.0)])];
    assert_vector(
        eval(r#"absent_over_time(up{job="a"}[1m])"#, 60, &s).expect("evaluates"),
        &[],
    );
    // At 70 s the window (10, 70 s] is empty.
    assert_vector(
        eval(r#"absent_over_time(up{job="a"}[1m])"#, 70, &s).expect("evaluates"),
        &[(&[("job", "a")], 1.0)],
    );
}

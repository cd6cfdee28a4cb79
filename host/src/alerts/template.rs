//! The part of Prometheus's rule templating that alert labels and
//! annotations use: `{{ $labels.name }}` (also `{{ .Labels.name }}`),
//! `{{ $value }}` (also `{{ .Value }}`), `{{ humanize $value }}` /
//! `{{ $value | humanize }}`, and `{{ printf "%.2f" $value }}`. Values print
//! as Go prints a float64 (`1e+06`, `0.25`), so a rule moved from Prometheus
//! renders the same text. Anything else between `{{ }}` is refused when the
//! rule is written, not when it fires.

use std::collections::BTreeMap;

/// One piece of a template.
#[derive(Debug, PartialEq)]
enum Part<'a> {
    Text(&'a str),
    Label(&'a str),
    Value(Format<'a>),
}

#[derive(Debug, PartialEq)]
enum Format<'a> {
    Plain,
    Humanize,
    Printf(&'a str),
}

fn action(inner: &str) -> Result<Part<'_>, String> {
    let words: Vec<&str> = inner.split_whitespace().collect();
    fn label(w: &str) -> Option<&str> {
        w.strip_prefix("$labels.")
            .or_else(|| w.strip_prefix(".Labels."))
            .filter(|n| crate::metrics::model::is_valid_label_name(n))
    }
    let is_value = |w: &str| w == "$value" || w == ".Value";
    match words.as_slice() {
        [w] if is_value(w) => Ok(Part::Value(Format::Plain)),
        [w] => label(w).map(Part::Label).ok_or_else(|| unknown(inner)),
        ["humanize", w] | [w, "|", "humanize"] if is_value(w) => Ok(Part::Value(Format::Humanize)),
        ["printf", f, w]
            if is_value(w) && f.len() >= 2 && f.starts_with('"') && f.ends_with('"') =>
        {
            let f = &f[1..f.len() - 1];
            printf_spec(f).map(|_| Part::Value(Format::Printf(f)))
        }
        _ => Err(unknown(inner)),
    }
}

fn unknown(inner: &str) -> String {
    format!(
        "`{{{{{}}}}}` is not supported; use {{{{ $labels.name }}}}, {{{{ $value }}}}, \
         {{{{ humanize $value }}}} or {{{{ printf \"%.2f\" $value }}}}",
        inner.escape_debug()
    )
}

/// Checks a printf format of one float verb (`%f`, `%.2f`, `%g`, `%e`, `%d`, `%v`).
fn printf_spec(f: &str) -> Result<(Option<usize>, char), String> {
    let bad = || {
        format!(
            "printf format `{}` must hold one verb like %.2f",
            f.escape_debug()
        )
    };
    let start = f.find('%').ok_or_else(bad)?;
    let rest = &f[start + 1..];
    let verb_at = rest
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(bad)?;
    let (prec, verb) = (
        &rest[..verb_at],
        rest[verb_at..].chars().next().ok_or_else(bad)?,
    );
    if !matches!(verb, 'f' | 'g' | 'e' | 'd' | 'v') || rest[verb_at + 1..].contains('%') {
        return Err(bad());
    }
    let prec = match prec {
        "" => None,
        p => Some(
            p.strip_prefix('.')
                .and_then(|d| d.parse::<usize>().ok())
                .filter(|d| *d <= 20)
                .ok_or_else(bad)?,
        ),
    };
    Ok((prec, verb))
}

fn parts(template: &str) -> Result<Vec<Part<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            out.push(Part::Text(&rest[..open]));
        }
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| "`{{` is not closed by `}}`".to_string())?;
        let inner = after[..close].trim_start_matches('-').trim_end_matches('-');
        out.push(action(inner.trim())?);
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        out.push(Part::Text(rest));
    }
    Ok(out)
}

/// Whether `template` is one this module can render.
pub fn check(template: &str) -> Result<(), String> {
    parts(template).map(|_| ())
}

/// Renders `template` for an alert with `labels` and `value`; a template
/// that does not check renders as written.
pub fn render(template: &str, labels: &BTreeMap<String, String>, value: f64) -> String {
    let Ok(parts) = parts(template) else {
        return template.to_string();
    };
    let mut out = String::new();
    for p in parts {
        match p {
            Part::Text(t) => out.push_str(t),
            Part::Label(name) => out.push_str(labels.get(name).map_or("", String::as_str)),
            Part::Value(Format::Plain) => out.push_str(&go_float(value)),
            Part::Value(Format::Humanize) => out.push_str(&humanize(value)),
            Part::Value(Format::Printf(f)) => out.push_str(&printf(f, value)),
        }
    }
    out
}

/// A float64 as Go's `%v` writes it (`strconv.FormatFloat(v, 'g', -1, 64)`):
/// shortest digits, exponent form when the exponent is below -4 or at least 6.
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let e = format!("{v:e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{v}")
    }
}

/// Prometheus's `humanize`: SI prefixes for large and small magnitudes,
/// four significant digits.
fn humanize(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return go_float(v);
    }
    let a = v.abs();
    if a >= 1.0 {
        let prefixes = ["", "k", "M", "G", "T", "P", "E", "Z", "Y"];
        let mut x = v;
        let mut i = 0;
        while x.abs() >= 1000.0 && i + 1 < prefixes.len() {
            x /= 1000.0;
            i += 1;
        }
        format!("{}{}", sig4(x), prefixes[i])
    } else {
        let prefixes = ["", "m", "u", "n", "p", "f", "a", "z", "y"];
        let mut x = v;
        let mut i = 0;
        while x.abs() < 1.0 && i + 1 < prefixes.len() {
            x *= 1000.0;
            i += 1;
        }
        format!("{}{}", sig4(x), prefixes[i])
    }
}

/// Go's `%.4g`: four significant digits, no trailing zeros.
fn sig4(x: f64) -> String {
    let digits = if x == 0.0 {
        0
    } else {
        x.abs().log10().floor() as i32
    };
    let decimals = (3 - digits).max(0) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn printf(f: &str, v: f64) -> String {
    let Ok((prec, verb)) = printf_spec(f) else {
        return f.to_string();
    };
    let start = f.find('%').unwrap_or(0);
    let verb_end = f[start + 1..]
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or(f.len(), |i| start + 1 + i + 1);
    let formatted = match (verb, prec) {
        ('f', p) => format!("{v:.*}", p.unwrap_or(6)),
        ('e', p) => {
            let s = format!("{v:.*e}", p.unwrap_or(6));
            match s.split_once('e') {
                Some((m, e)) => {
                    let e: i32 = e.parse().unwrap_or(0);
                    format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
                }
                None => s,
            }
        }
        ('d', _) => format!("%!d(float64={})", go_float(v)),
        _ => go_float(v),
    };
    format!("{}{formatted}{}", &f[..start], &f[verb_end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_values_render_as_prometheus_renders_them() {
        let labels = BTreeMap::from([("component".to_string(), "w1".to_string())]);
        assert_eq!(
            render(
                "{{ $labels.component }} queue at {{ $value }}",
                &labels,
                150.0
            ),
            "w1 queue at 150"
        );
        assert_eq!(
            render("{{.Labels.missing}}|{{ .Value }}", &labels, 0.25),
            "|0.25"
        );
        assert_eq!(
            render("{{ printf \"%.2f\" $value }}s", &labels, 1.0 / 3.0),
            "0.33s"
        );
        assert_eq!(
            render("{{ humanize $value }}", &labels, 1_234_567.0),
            "1.235M"
        );
        assert_eq!(render("{{ $value | humanize }}", &labels, 0.0012), "1.2m");
    }

    #[test]
    fn floats_print_as_go_prints_them() {
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(123456789.0), "1.23456789e+08");
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(0.0001), "0.0001");
        assert_eq!(go_float(f64::INFINITY), "+Inf");
        assert_eq!(go_float(-2.5), "-2.5");
    }

    #[test]
    fn what_cannot_render_is_refused_when_written() {
        for bad in [
            "{{ $labels.x ",
            "{{ .Foo }}",
            "{{ range . }}",
            "{{ printf \"%s %s\" $value }}",
            "{{ $labels.9x }}",
        ] {
            assert!(check(bad).is_err(), "{bad} was accepted");
        }
        assert!(check("no templates at all").is_ok());
    }
}

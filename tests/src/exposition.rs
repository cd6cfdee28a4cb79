//! Exposition format checks: promtool, the strict Python OpenMetrics parser,
//! and a small parser of sample lines for assertions.

use crate::skip_or_fail;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

// ---------------------------------------------------------------------------
// Exposition format checks
// ---------------------------------------------------------------------------

fn tool_missing(tool: &str) -> Result<(), String> {
    skip_or_fail(
        &format!("exposition check: {tool} is not available"),
        &format!("{tool} required (VIGIL_TEST_REQUIRE_SERVICES=1) but not available"),
    );
    Ok(())
}

fn run_with_stdin(cmd: &mut Command, input: &str) -> std::io::Result<std::process::Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output();
    let _ = writer.join();
    out
}

/// Runs `promtool check metrics` (parser and linter) on `text`. `Err` carries
/// promtool's complaints. When promtool is not installed: loud skip (`Ok`), or a
/// panic under `VIGIL_TEST_REQUIRE_SERVICES=1`.
///
/// Note: promtool 2.x reads only the Prometheus text format; it treats OpenMetrics
/// `# EOF`/`# UNIT` as comments and would misreport OpenMetrics counter families,
/// so use [`openmetrics_check`] for OpenMetrics.
pub fn promtool_check(text: &str) -> Result<(), String> {
    let out = match run_with_stdin(Command::new("promtool").args(["check", "metrics"]), text) {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return tool_missing("promtool"),
        Err(e) => return Err(format!("could not run promtool: {e}")),
    };
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "promtool check metrics failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

const OPENMETRICS_CHECK_PY: &str = r#"
import sys
try:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
except ImportError as e:
    print("prometheus_client missing: %s" % e)
    sys.exit(3)
text = sys.stdin.read()
try:
    for _ in text_string_to_metric_families(text):
        pass
except Exception as e:
    print("invalid OpenMetrics: %s" % e)
    sys.exit(1)
"#;

/// Parses `text` with the strict OpenMetrics 1.0 parser of the Python
/// `prometheus_client` package (`python3 -m pip install prometheus-client`).
/// `Err` carries the parser's complaint. When python3 or the package is missing:
/// loud skip (`Ok`), or a panic under `VIGIL_TEST_REQUIRE_SERVICES=1`.
pub fn openmetrics_check(text: &str) -> Result<(), String> {
    let out = match run_with_stdin(
        Command::new(crate::python()).args(["-c", OPENMETRICS_CHECK_PY]),
        text,
    ) {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return tool_missing("python3"),
        Err(e) => return Err(format!("could not run python3: {e}")),
    };
    match out.status.code() {
        Some(0) => Ok(()),
        Some(3) => tool_missing("python3 module prometheus_client (pip install prometheus-client)"),
        _ => Err(format!(
            "OpenMetrics parse failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// One sample line of a text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpoSample {
    /// Sample name (e.g. `foo_bucket`).
    pub name: String,
    /// Labels with unescaped values.
    pub labels: BTreeMap<String, String>,
    /// The value (`+Inf`, `-Inf`, `NaN` parsed too).
    pub value: f64,
}

impl ExpoSample {
    /// Label value by name.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// Parses the sample lines of a Prometheus text / OpenMetrics exposition
/// (comments skipped, label values unescaped). Panics on a line it cannot parse,
/// quoting the line.
pub fn parse_exposition(text: &str) -> Vec<ExpoSample> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            parse_sample_line(l)
                .unwrap_or_else(|e| panic!("cannot parse exposition line {l:?}: {e}"))
        })
        .collect()
}

fn parse_sample_line(line: &str) -> Result<ExpoSample, String> {
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    let mut name = String::new();
    while i < chars.len()
        && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
    {
        name.push(chars[i]);
        i += 1;
    }
    if name.is_empty() {
        return Err("no metric name".into());
    }
    let mut labels = BTreeMap::new();
    if i < chars.len() && chars[i] == '{' {
        i += 1;
        loop {
            while i < chars.len() && (chars[i] == ' ' || chars[i] == ',') {
                i += 1;
            }
            if i >= chars.len() {
                return Err("unterminated label set".into());
            }
            if chars[i] == '}' {
                i += 1;
                break;
            }
            let mut lname = String::new();
            while i < chars.len() && chars[i] != '=' {
                lname.push(chars[i]);
                i += 1;
            }
            if i + 1 >= chars.len() || chars[i + 1] != '"' {
                return Err(format!("label {lname}: expected =\""));
            }
            i += 2;
            let mut val = String::new();
            loop {
                match chars.get(i) {
                    None => return Err("unterminated label value".into()),
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        match chars.get(i + 1) {
                            Some('n') => val.push('\n'),
                            Some('\\') => val.push('\\'),
                            Some('"') => val.push('"'),
                            other => return Err(format!("bad escape \\{other:?}")),
                        }
                        i += 2;
                    }
                    Some(c) => {
                        val.push(*c);
                        i += 1;
                    }
                }
            }
            labels.insert(lname.trim().to_string(), val);
        }
    }
    let rest: String = chars[i..].iter().collect();
    let value_str = rest.split_whitespace().next().ok_or("no value")?;
    let value = match value_str {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|e| format!("value {v:?}: {e}"))?,
    };
    Ok(ExpoSample {
        name,
        labels,
        value,
    })
}

/// Samples named `name` whose labels include every `(name, value)` in `labels`.
pub fn find_samples<'a>(
    samples: &'a [ExpoSample],
    name: &str,
    labels: &[(&str, &str)],
) -> Vec<&'a ExpoSample> {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .collect()
}

/// The single sample named `name` with `labels` (subset match); panics with the
/// exposition when there is none or more than one.
pub fn expo_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let samples = parse_exposition(text);
    let found = find_samples(&samples, name, labels);
    match found.as_slice() {
        [one] => one.value,
        [] => panic!("no sample {name}{labels:?} in export:\n{text}"),
        many => panic!(
            "{} samples {name}{labels:?} in export: {many:?}",
            many.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lines_are_parsed_and_unescaped() {
        let text = "# HELP x y\n# TYPE x gauge\nx{a=\"q\\\"b\\\\c\\nd\",b=\"ü\"} 1.5 1700000000\nx_total 3\nh_bucket{le=\"+Inf\"} +Inf\n# EOF\n";
        let s = parse_exposition(text);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].label("a"), Some("q\"b\\c\nd"));
        assert_eq!(s[0].label("b"), Some("ü"));
        assert_eq!(s[0].value, 1.5);
        assert_eq!(s[1].name, "x_total");
        assert!(s[2].value.is_infinite());
        assert_eq!(expo_value(text, "x", &[("b", "ü")]), 1.5);
    }

    #[test]
    fn exposition_checkers_reject_broken_input() {
        let good = "# HELP up_total Ups.\n# TYPE up_total counter\nup_total 1\n";
        assert_eq!(promtool_check(good), Ok(()));
        if Command::new("promtool").arg("--version").output().is_ok() {
            assert!(promtool_check("garbage{{ 1\n").is_err());
            assert!(
                promtool_check("# TYPE c counter\nc 1\n").is_err(),
                "lint problems count"
            );
        }
        let om = "# TYPE up counter\n# HELP up Ups.\nup_total 1\n# EOF\n";
        assert_eq!(openmetrics_check(om), Ok(()));
        let python_ok = Command::new(crate::python())
            .args(["-c", "import prometheus_client"])
            .output()
            .is_ok_and(|o| o.status.success());
        if python_ok {
            assert!(
                openmetrics_check("# TYPE up counter\nup_total 1\n").is_err(),
                "missing # EOF"
            );
            assert!(openmetrics_check("# TYPE h histogram\nh_bucket{le=\"1.0\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_count 2\nh_sum 1\n# EOF\n").is_err());
        }
    }
}

//! The combined scrape answer: reported series from the latest-value index
//! followed by the host's own metrics, in Prometheus text 0.0.4 or OpenMetrics 1.0.

use crate::metrics::index::{ExpositionFormat, SeriesIndex};

use super::SelfMetrics;

/// Renders everything a scrape of `/metrics` returns.
pub fn render_export(
    index: &SeriesIndex,
    own: &SelfMetrics,
    format: ExpositionFormat,
    now_ms: i64,
    ttl_ms: i64,
) -> String {
    let mut out = String::with_capacity(64 * 1024);
    index.render(&mut out, format, now_ms, ttl_ms);
    let own_text = own.encode_openmetrics();
    match format {
        ExpositionFormat::OpenMetrics => out.push_str(&own_text),
        ExpositionFormat::Text => out.push_str(&openmetrics_to_text(&own_text)),
    }
    out
}

/// Converts prometheus-client's OpenMetrics output to text format 0.0.4:
/// counter families take their `_total` sample name, `# UNIT` and `# EOF` go.
pub fn openmetrics_to_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut pending_help: Option<(&str, &str)> = None;
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            pending_help = Some((name, help));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let exported = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            if let Some((help_name, help)) = pending_help.take() {
                if help_name == name {
                    out.push_str(&format!(
                        "# HELP {exported} {}\n",
                        help.replace("\\\"", "\"")
                    ));
                }
            }
            out.push_str(&format!("# TYPE {exported} {kind}\n"));
            continue;
        }
        if line.contains("_created{") || line.contains("_created ") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_take_their_total_name_in_text_format() {
        let om = "# HELP vigil_x Things.\n# TYPE vigil_x counter\nvigil_x_total 3\n# HELP vigil_d Dur.\n# TYPE vigil_d_seconds histogram\n# UNIT vigil_d_seconds seconds\nvigil_d_seconds_sum 1.0\n# EOF\n";
        let text = openmetrics_to_text(om);
        assert!(
            text.contains(
                "# HELP vigil_x_total Things.\n# TYPE vigil_x_total counter\nvigil_x_total 3\n"
            ),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        assert!(!text.contains("# UNIT"));
    }
}

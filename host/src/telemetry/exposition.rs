//! The combined scrape answer: reported series from the latest-value index
//! followed by the host's own metrics, in Prometheus text 0.0.4 or OpenMetrics 1.0.

use std::sync::atomic::Ordering;

use crate::metrics::index::{
    escape_label_value, write_value, ExportScope, ExpositionFormat, SeriesIndex,
};
use crate::plugins::{PluginCondition, PluginRegistry};

use super::SelfMetrics;

/// Renders everything a scrape of `/metrics` returns: the reported series
/// the scope selects and, unless the scope is one component's, the host's own.
pub fn render_export(
    index: &SeriesIndex,
    own: &SelfMetrics,
    plugins: Option<&PluginRegistry>,
    format: ExpositionFormat,
    now_ms: i64,
    ttl_ms: i64,
    scope: &ExportScope<'_>,
) -> String {
    let mut out = String::with_capacity(64 * 1024);
    index.render_scoped(&mut out, format, now_ms, ttl_ms, scope);
    if scope.component.is_none() {
        render_host_metrics(&mut out, own, plugins, format);
    } else if format == ExpositionFormat::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

/// Renders the host's own metrics (`vigil_*`: process, HTTP, ingest and the
/// per-plugin families), what `GET /api/v2/metrics` answers and what follows
/// the reported series on `/metrics`.
pub fn render_host_metrics(
    out: &mut String,
    own: &SelfMetrics,
    plugins: Option<&PluginRegistry>,
    format: ExpositionFormat,
) {
    if let Some(plugins) = plugins {
        render_plugin_metrics(out, plugins, format);
    }
    let own_text = own.encode_openmetrics();
    match format {
        ExpositionFormat::OpenMetrics => out.push_str(&own_text),
        ExpositionFormat::Text => out.push_str(&openmetrics_to_text(&own_text)),
    }
}

/// OpenMetrics names and types of the per-plugin families.
pub const PLUGIN_FAMILIES: &[(&str, &str)] = &[
    ("vigil_plugin_up", "gauge"),
    ("vigil_plugin_calls", "counter"),
    ("vigil_plugin_errors", "counter"),
    ("vigil_plugin_traps", "counter"),
    ("vigil_plugin_invalid_answers", "counter"),
    ("vigil_plugin_restarts", "counter"),
    ("vigil_plugin_denied_requests", "counter"),
    ("vigil_plugin_call_seconds", "counter"),
    ("vigil_plugin_memory_bytes", "gauge"),
];

/// The host family that exports `name` (a family name or one of its sample
/// names), if any: what a reported metric of that name would collide with.
pub fn host_family_of(name: &str) -> Option<String> {
    static FAMILIES: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    let families = FAMILIES.get_or_init(|| {
        let mut all: Vec<(String, String)> = PLUGIN_FAMILIES
            .iter()
            .map(|(n, k)| (n.to_string(), k.to_string()))
            .collect();
        // A throwaway registry with one sample in every labelled family (a
        // family without samples is not encoded at all).
        let probe = SelfMetrics::new();
        probe.observe_request("GET", "/", 200, std::time::Duration::ZERO);
        for line in probe.encode_openmetrics().lines() {
            if let Some((family, kind)) = line
                .strip_prefix("# TYPE ")
                .and_then(|rest| rest.split_once(' '))
            {
                all.push((family.to_string(), kind.to_string()));
            }
        }
        all
    });
    families.iter().find_map(|(family, kind)| {
        let suffixes: &[&str] = match kind.as_str() {
            "counter" => &["", "_total", "_created"],
            "histogram" => &["", "_bucket", "_sum", "_count", "_created"],
            "summary" => &["", "_sum", "_count", "_created"],
            _ => &[""],
        };
        suffixes
            .iter()
            .any(|s| name.strip_prefix(family.as_str()) == Some(*s))
            .then(|| family.clone())
    })
}

/// Per-plugin families: state, calls, errors, traps, restarts, denied
/// outbound requests, call time and memory.
pub fn render_plugin_metrics(out: &mut String, plugins: &PluginRegistry, format: ExpositionFormat) {
    let snapshot = plugins.snapshot();
    if snapshot.is_empty() {
        return;
    }
    type Read = fn(&crate::plugins::Plugin) -> f64;
    let families: [(&str, &str, bool, Read); 8] = [
        ("vigil_plugin_calls", "Calls into the plugin", true, |p| {
            p.stats.calls.load(Ordering::Relaxed) as f64
        }),
        (
            "vigil_plugin_errors",
            "Calls that failed or returned an error",
            true,
            |p| p.stats.errors.load(Ordering::Relaxed) as f64,
        ),
        (
            "vigil_plugin_traps",
            "Traps and blown deadlines (the instance was dropped)",
            true,
            |p| p.stats.traps.load(Ordering::Relaxed) as f64,
        ),
        (
            "vigil_plugin_invalid_answers",
            "Answers that contradicted their call (counted towards quarantine like traps)",
            true,
            |p| p.stats.invalid_answers.load(Ordering::Relaxed) as f64,
        ),
        (
            "vigil_plugin_restarts",
            "Instances re-created after a fault",
            true,
            |p| p.stats.restarts.load(Ordering::Relaxed) as f64,
        ),
        (
            "vigil_plugin_denied_requests",
            "Outbound HTTP requests denied by the allow-list",
            true,
            |p| p.stats.sandbox.denied_requests.load(Ordering::Relaxed) as f64,
        ),
        (
            "vigil_plugin_call_seconds",
            "Time spent in plugin calls",
            true,
            |p| p.stats.call_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        ),
        (
            "vigil_plugin_memory_bytes",
            "Linear memory of the live instance",
            false,
            |p| p.stats.memory_bytes.load(Ordering::Relaxed) as f64,
        ),
    ];
    let label = |out: &mut String, name: &str| {
        out.push_str("{plugin=\"");
        escape_label_value(out, name);
        out.push_str("\"}");
    };
    out.push_str("# HELP vigil_plugin_up Whether the plugin is loaded and serving (0: failed or quarantined)\n# TYPE vigil_plugin_up gauge\n");
    for (name, plugin, _) in &snapshot {
        out.push_str("vigil_plugin_up");
        label(out, name);
        let up = plugin
            .as_ref()
            .is_some_and(|p| p.condition().0 == PluginCondition::Loaded);
        out.push_str(if up { " 1\n" } else { " 0\n" });
    }
    for (family, help, counter, read) in families {
        let sample = if counter {
            format!("{family}_total")
        } else {
            family.to_string()
        };
        let header = if counter && format == ExpositionFormat::Text {
            &sample
        } else {
            family
        };
        let kind = if counter { "counter" } else { "gauge" };
        out.push_str(&format!("# HELP {header} {help}\n# TYPE {header} {kind}\n"));
        for (name, plugin, _) in &snapshot {
            if let Some(p) = plugin {
                out.push_str(&sample);
                label(out, name);
                out.push(' ');
                write_value(out, read(p));
                out.push('\n');
            }
        }
    }
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

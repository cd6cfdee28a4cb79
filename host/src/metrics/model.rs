//! The NoETL report format: parsing, validation and the prepared form the ingest
//! writer consumes. Owns every rule about what a valid metric report is; does not
//! touch storage or the latest-value index.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longest accepted metric name.
pub const MAX_METRIC_NAME_LEN: usize = 200;
/// Longest accepted label value, in bytes.
pub const MAX_LABEL_VALUE_LEN: usize = 2048;
/// Most labels on one metric.
pub const MAX_LABELS: usize = 32;
/// Longest accepted help text, in bytes.
pub const MAX_HELP_LEN: usize = 1024;
/// Longest accepted unit.
pub const MAX_UNIT_LEN: usize = 64;
/// Longest accepted component name or type.
pub const MAX_COMPONENT_LEN: usize = 200;
/// Prefix of the host's own metric families; reported names may not use it.
pub const HOST_PREFIX: &str = "vigil_";

/// The four metric types of the report format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
            MetricKind::Summary => "summary",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "counter" => Some(MetricKind::Counter),
            "gauge" => Some(MetricKind::Gauge),
            "histogram" => Some(MetricKind::Histogram),
            "summary" => Some(MetricKind::Summary),
            _ => None,
        }
    }
}

/// One reason a report was refused, pointing at the item and field.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ItemError {
    /// Index into `metrics[]`, or null for a top-level field.
    pub index: Option<usize>,
    pub field: String,
    pub reason: String,
}

impl ItemError {
    /// A problem with a top-level field (no item index).
    pub fn top(field: &str, reason: impl Into<String>) -> Self {
        ItemError {
            index: None,
            field: field.to_string(),
            reason: reason.into(),
        }
    }
    fn item(index: usize, field: &str, reason: impl Into<String>) -> Self {
        ItemError {
            index: Some(index),
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

/// `runtime_id` as NoETL's clients send it: a number, or (v1.0.0) a string of one.
fn runtime_id_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n
            .as_i64()
            .filter(|id| *id > 0)
            .map(Some)
            .ok_or_else(|| D::Error::custom("runtime_id must be a positive whole number")),
        Some(serde_json::Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(Some)
            .ok_or_else(|| D::Error::custom("runtime_id must be a positive whole number")),
        Some(_) => Err(D::Error::custom(
            "runtime_id must be a positive whole number",
        )),
    }
}

/// Why a report body was refused as a whole.
#[derive(Debug)]
pub enum ReportError {
    /// The report names its component by a `runtime_id` no component has.
    UnknownRuntimeId(i64),
    /// The body is not JSON at all.
    MalformedJson(String),
    /// JSON, but at least one item or field is invalid.
    Invalid(Vec<ItemError>),
    /// More metrics than the configured limit.
    TooManyItems { count: usize, limit: usize },
}

/// A metric report as sent by workers (NoETL format).
#[derive(Debug, Deserialize, ToSchema)]
pub struct MetricReport {
    /// Numeric id of a registered component (NoETL's; a number or a numeric
    /// string). Wins over `component_name`; one of the two is required.
    #[serde(default, deserialize_with = "runtime_id_value")]
    #[schema(value_type = Option<i64>)]
    pub runtime_id: Option<i64>,
    /// Name of the reporting component, e.g. `worker-cpu-01`.
    #[serde(default)]
    pub component_name: Option<String>,
    /// Kind of component, e.g. `worker_pool` (NoETL v1.0.0 servers send it as `kind`).
    #[serde(default, alias = "kind")]
    pub component_type: Option<String>,
    pub metrics: Vec<ReportedMetric>,
}

/// One metric in a report.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReportedMetric {
    pub metric_name: String,
    /// counter, gauge, histogram or summary.
    pub metric_type: String,
    /// A number; a gauge may also be `NaN`, `Infinity` or `-Infinity` as
    /// Python's `json.dumps` writes them.
    #[serde(deserialize_with = "crate::events::json::deserialize_f64")]
    pub metric_value: f64,
    /// RFC 3339; a timestamp without offset is taken as UTC; unix seconds also accepted. Default: now.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub timestamp: Option<serde_json::Value>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub help_text: Option<String>,
    #[serde(default)]
    pub unit: Option<String>,
}

/// A validated metric, ready for the writer.
#[derive(Clone, Debug)]
pub struct PreparedMetric {
    pub name: String,
    pub kind: MetricKind,
    pub value: f64,
    pub ts_ms: i64,
    /// Series labels, sorted, without the reserved `le`/`quantile` definitions.
    pub labels: BTreeMap<String, String>,
    pub help: String,
    pub unit: String,
    /// Histogram bucket bounds or summary quantiles given with this observation.
    pub bounds: Option<Vec<f64>>,
    /// Canonical JSON of `labels` (the stored series identity); set by [`PreparedReport::new`].
    pub labels_key: String,
    /// Hash of component, name and `labels_key`; set by [`PreparedReport::new`].
    pub fingerprint: u64,
}

/// A validated report.
#[derive(Clone, Debug)]
pub struct PreparedReport {
    pub component_name: String,
    pub component_type: String,
    pub metrics: Vec<PreparedMetric>,
}

impl PreparedReport {
    /// Assembles a report and computes each metric's series identity, so the
    /// single ingest writer does not have to.
    pub fn new(
        component_name: String,
        component_type: String,
        mut metrics: Vec<PreparedMetric>,
    ) -> Self {
        for m in &mut metrics {
            // A `component` label naming the reporting component itself says
            // nothing more: it is the same series as without it.
            if m.labels.get("component") == Some(&component_name) {
                m.labels.remove("component");
            }
            m.labels_key = serde_json::to_string(&m.labels).unwrap_or_default();
            m.fingerprint = series_fingerprint(&component_name, &m.name, &m.labels_key);
        }
        PreparedReport {
            component_name,
            component_type,
            metrics,
        }
    }
}

/// Hash identifying a series (component, metric name, canonical labels).
pub fn series_fingerprint(component: &str, name: &str, labels_key: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    component.hash(&mut h);
    name.hash(&mut h);
    labels_key.hash(&mut h);
    h.finish()
}

/// Prometheus metric-name rule: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Prometheus label-name rule: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The valid name closest to `name`: every character Prometheus does not
/// allow becomes `_` (`.` and `-` included), and a leading digit gets a `_`
/// before it. Metric names may keep `:`, label names may not.
pub fn valid_name_for(name: &str, metric: bool) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || (metric && c == ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.chars().next().is_none_or(|c| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Checks a component name or type: non-empty, bounded, no control characters.
pub fn check_component_field(value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > MAX_COMPONENT_LEN {
        return Err(format!("longer than {MAX_COMPONENT_LEN} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// Checks free text (help text): no NUL (neither backend can store one) and
/// no control characters but tab and newline.
pub fn check_text(value: &str) -> Result<(), String> {
    if value.contains('\0') {
        return Err("must not contain NUL characters".into());
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err("must not contain control characters other than tab and newline".into());
    }
    Ok(())
}

/// Why a metric name would collide with the host's own families, if it would.
pub fn host_prefix_conflict(name: &str) -> Option<String> {
    if !name.starts_with(HOST_PREFIX) {
        return None;
    }
    let family = crate::telemetry::host_family_of(name);
    Some(match family {
        Some(family) => format!(
            "`{name}` collides with the host's own family `{family}`; names starting with `{HOST_PREFIX}` are reserved for the host's metrics"
        ),
        None => format!(
            "names starting with `{HOST_PREFIX}` are reserved for the host's own metric families"
        ),
    })
}

/// Parses a timestamp: RFC 3339, ISO 8601 without offset (UTC), or unix seconds.
pub fn parse_timestamp(value: &serde_json::Value) -> Result<i64, String> {
    let ms = match value {
        serde_json::Value::String(s) => parse_time_str(s)?,
        serde_json::Value::Number(n) => {
            let secs = n.as_f64().ok_or("not a finite number")?;
            unix_seconds_to_ms(secs)?
        }
        _ => return Err("expected an RFC 3339 string or unix seconds".into()),
    };
    // 1970 .. 2200: anything else is almost surely a unit mistake.
    if !(0..=7_258_118_400_000).contains(&ms) {
        return Err("outside the years 1970 to 2200".into());
    }
    Ok(ms)
}

/// Parses a time given as RFC 3339 (offset optional, UTC assumed; a space
/// instead of the `T`, as Python's `str(datetime)` writes it, is accepted)
/// or unix seconds.
pub fn parse_time_str(s: &str) -> Result<i64, String> {
    if s.len() > 10 && s.as_bytes()[10] == b' ' && s.is_char_boundary(11) {
        let with_t = format!("{}T{}", &s[..10], &s[11..]);
        if let Some(ms) = parse_iso(&with_t) {
            return Ok(ms);
        }
    }
    if let Some(ms) = parse_iso(s) {
        return Ok(ms);
    }
    if let Ok(secs) = s.parse::<f64>() {
        return unix_seconds_to_ms(secs);
    }
    Err(format!("`{s}` is neither RFC 3339 nor unix seconds"))
}

fn parse_iso(s: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

fn unix_seconds_to_ms(secs: f64) -> Result<i64, String> {
    if !secs.is_finite() || !(0.0..=1e11).contains(&secs) {
        return Err("unix seconds out of range".into());
    }
    Ok((secs * 1000.0).round() as i64)
}

/// Formats milliseconds since the epoch as RFC 3339 with millisecond precision.
pub fn format_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses and validates a report body. Every bad item is listed; nothing is partial.
///
/// `name_of` names the component of a `runtime_id` (the registry's lookup).
pub fn parse_report(
    body: &[u8],
    max_items: usize,
    now_ms: i64,
    name_of: &dyn Fn(i64) -> Option<String>,
) -> Result<PreparedReport, ReportError> {
    // `NaN`, `Infinity` and `-Infinity` as Python writes them (a gauge may be one).
    let body = crate::events::json::mark_non_finite(body);
    let body: &[u8] = &body;
    match serde_json::from_slice::<MetricReport>(body) {
        Ok(report) => {
            if report.metrics.len() > max_items {
                return Err(ReportError::TooManyItems {
                    count: report.metrics.len(),
                    limit: max_items,
                });
            }
            let component = match (report.runtime_id, &report.component_name) {
                (Some(id), _) => Some(name_of(id).ok_or(ReportError::UnknownRuntimeId(id))?),
                (None, Some(name)) => Some(name.clone()),
                (None, None) => None,
            };
            prepare(component, report, now_ms).map_err(ReportError::Invalid)
        }
        Err(typed_err) => {
            // Slow path, only for bad bodies: find every offending item and field.
            let value: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| ReportError::MalformedJson(e.to_string()))?;
            if let Some(n) = value
                .get("metrics")
                .and_then(|m| m.as_array())
                .map(Vec::len)
            {
                if n > max_items {
                    return Err(ReportError::TooManyItems {
                        count: n,
                        limit: max_items,
                    });
                }
            }
            Err(ReportError::Invalid(diagnose(&value, now_ms, &typed_err)))
        }
    }
}

fn prepare(
    component: Option<String>,
    report: MetricReport,
    now_ms: i64,
) -> Result<PreparedReport, Vec<ItemError>> {
    let mut errors = Vec::new();
    let component = match component {
        Some(name) => {
            if let Err(reason) = check_component_field(&name) {
                errors.push(ItemError::top("component_name", reason));
            }
            name
        }
        None => {
            errors.push(ItemError::top(
                "component_name",
                "missing: give component_name (or the runtime_id of a registered component)",
            ));
            String::new()
        }
    };
    let component_type = report
        .component_type
        .unwrap_or_else(|| "unknown".to_string());
    if let Err(reason) = check_component_field(&component_type) {
        errors.push(ItemError::top("component_type", reason));
    }
    let mut metrics = Vec::with_capacity(report.metrics.len());
    for (index, metric) in report.metrics.into_iter().enumerate() {
        match prepare_metric(index, metric, now_ms) {
            Ok(m) => metrics.push(m),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(PreparedReport::new(component, component_type, metrics))
    } else {
        Err(errors)
    }
}

fn prepare_metric(
    index: usize,
    m: ReportedMetric,
    now_ms: i64,
) -> Result<PreparedMetric, Vec<ItemError>> {
    let mut errors = Vec::new();
    if m.metric_name.is_empty() {
        errors.push(ItemError::item(index, "metric_name", "must not be empty"));
    } else if m.metric_name.len() > MAX_METRIC_NAME_LEN {
        errors.push(ItemError::item(
            index,
            "metric_name",
            format!("longer than {MAX_METRIC_NAME_LEN} characters"),
        ));
    } else if !is_valid_metric_name(&m.metric_name) {
        errors.push(ItemError::item(
            index,
            "metric_name",
            format!(
                "`{}` is not a valid Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*); rename it to `{}`",
                m.metric_name,
                valid_name_for(&m.metric_name, true)
            ),
        ));
    } else if let Some(reason) = host_prefix_conflict(&m.metric_name) {
        errors.push(ItemError::item(index, "metric_name", reason));
    }
    let kind = MetricKind::parse(&m.metric_type);
    if kind.is_none() {
        errors.push(ItemError::item(
            index,
            "metric_type",
            format!(
                "`{}` is not one of counter, gauge, histogram, summary",
                m.metric_type
            ),
        ));
    }
    if !m.metric_value.is_finite() && kind != Some(MetricKind::Gauge) {
        errors.push(ItemError::item(
            index,
            "metric_value",
            "must be a finite number (only a gauge may be NaN or ±Infinity)",
        ));
    } else if kind == Some(MetricKind::Counter) && m.metric_value < 0.0 {
        errors.push(ItemError::item(
            index,
            "metric_value",
            "a counter must not be negative; report the running total (it only grows), or report the value as a gauge",
        ));
    }
    let ts_ms = match &m.timestamp {
        None | Some(serde_json::Value::Null) => now_ms,
        Some(v) => match parse_timestamp(v) {
            Ok(ms) => ms,
            Err(reason) => {
                errors.push(ItemError::item(index, "timestamp", reason));
                0
            }
        },
    };
    let mut labels = m.labels.unwrap_or_default();
    if labels.len() > MAX_LABELS {
        errors.push(ItemError::item(
            index,
            "labels",
            format!("more than {MAX_LABELS} labels"),
        ));
    }
    for (name, value) in &labels {
        if !is_valid_label_name(name) {
            errors.push(ItemError::item(
                index,
                &format!("labels.{name}"),
                format!(
                    "`{name}` is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*); rename it to `{}`",
                    valid_name_for(name, false)
                ),
            ));
        } else if name.starts_with("__") {
            errors.push(ItemError::item(
                index,
                &format!("labels.{name}"),
                "label names starting with `__` are reserved",
            ));
        }
        if value.len() > MAX_LABEL_VALUE_LEN {
            errors.push(ItemError::item(
                index,
                &format!("labels.{name}"),
                format!("value longer than {MAX_LABEL_VALUE_LEN} bytes"),
            ));
        } else if value.contains('\0') {
            errors.push(ItemError::item(
                index,
                &format!("labels.{name}"),
                "value must not contain NUL characters",
            ));
        }
    }
    let bounds = match kind {
        Some(MetricKind::Histogram) => take_bounds(&mut labels, "le", index, &mut errors),
        Some(MetricKind::Summary) => take_bounds(&mut labels, "quantile", index, &mut errors),
        _ => {
            for reserved in ["le", "quantile"] {
                if labels.contains_key(reserved) {
                    errors.push(ItemError::item(
                        index,
                        &format!("labels.{reserved}"),
                        format!("`{reserved}` is reserved for histograms and summaries"),
                    ));
                }
            }
            None
        }
    };
    let help = m.help_text.unwrap_or_default();
    if help.len() > MAX_HELP_LEN {
        errors.push(ItemError::item(
            index,
            "help_text",
            format!("longer than {MAX_HELP_LEN} bytes"),
        ));
    } else if let Err(reason) = check_text(&help) {
        errors.push(ItemError::item(index, "help_text", reason));
    }
    let unit = m.unit.unwrap_or_default();
    if unit.len() > MAX_UNIT_LEN {
        errors.push(ItemError::item(
            index,
            "unit",
            format!("longer than {MAX_UNIT_LEN} bytes"),
        ));
    } else if !unit.is_empty() && !unit.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        errors.push(ItemError::item(
            index,
            "unit",
            "only letters, digits and `_` are allowed",
        ));
    }
    match kind {
        Some(kind) if errors.is_empty() => Ok(PreparedMetric {
            name: m.metric_name,
            kind,
            value: m.metric_value,
            ts_ms,
            labels,
            help,
            unit,
            bounds,
            labels_key: String::new(),
            fingerprint: 0,
        }),
        _ => Err(errors),
    }
}

/// Removes a `le`/`quantile` definition label and parses its comma-separated bounds.
fn take_bounds(
    labels: &mut BTreeMap<String, String>,
    key: &str,
    index: usize,
    errors: &mut Vec<ItemError>,
) -> Option<Vec<f64>> {
    let raw = labels.remove(key)?;
    let field = format!("labels.{key}");
    let mut bounds = Vec::new();
    for part in raw.split(',') {
        let part = part.trim();
        let parsed = match part {
            "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
            _ => part.parse::<f64>().ok().filter(|v| v.is_finite()),
        };
        match parsed {
            Some(v) => bounds.push(v),
            None => {
                errors.push(ItemError::item(
                    index,
                    &field,
                    format!("`{part}` is not a number"),
                ));
                return None;
            }
        }
    }
    if key == "quantile" && bounds.iter().any(|q| !(0.0..=1.0).contains(q)) {
        errors.push(ItemError::item(
            index,
            &field,
            "quantiles must lie between 0 and 1",
        ));
        return None;
    }
    bounds.retain(|b| !(key == "le" && b.is_infinite()));
    if bounds.windows(2).any(|w| w[0] >= w[1]) {
        errors.push(ItemError::item(
            index,
            &field,
            "values must be strictly increasing",
        ));
        return None;
    }
    if bounds.len() > 64 {
        errors.push(ItemError::item(index, &field, "more than 64 values"));
        return None;
    }
    Some(bounds)
}

/// Explains a body that failed typed parsing, item by item.
fn diagnose(
    value: &serde_json::Value,
    now_ms: i64,
    typed_err: &serde_json::Error,
) -> Vec<ItemError> {
    use serde_json::Value;
    let mut errors = Vec::new();
    let Some(obj) = value.as_object() else {
        return vec![ItemError::top("body", "expected a JSON object")];
    };
    match obj.get("component_name") {
        Some(Value::String(s)) => {
            if let Err(reason) = check_component_field(s) {
                errors.push(ItemError::top("component_name", reason));
            }
        }
        Some(_) => errors.push(ItemError::top("component_name", "expected a string")),
        None if obj.get("runtime_id").is_some_and(|v| !v.is_null()) => {}
        None => errors.push(ItemError::top(
            "component_name",
            "missing: give component_name (or the runtime_id of a registered component)",
        )),
    }
    match obj.get("runtime_id") {
        None | Some(Value::Null) => {}
        Some(v) => {
            if let Err(e) = runtime_id_value(v.clone()) {
                errors.push(ItemError::top("runtime_id", e.to_string()));
            }
        }
    }
    match obj.get("component_type") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(_) => errors.push(ItemError::top("component_type", "expected a string")),
    }
    match obj.get("metrics") {
        Some(Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                diagnose_item(index, item, now_ms, &mut errors);
            }
        }
        Some(_) => errors.push(ItemError::top("metrics", "expected an array")),
        None => errors.push(ItemError::top("metrics", "missing")),
    }
    if errors.is_empty() {
        errors.push(ItemError::top("body", typed_err.to_string()));
    }
    errors
}

fn diagnose_item(index: usize, item: &serde_json::Value, now_ms: i64, errors: &mut Vec<ItemError>) {
    use serde_json::Value;
    let Some(obj) = item.as_object() else {
        errors.push(ItemError::item(index, "metrics", "expected an object"));
        return;
    };
    let before = errors.len();
    let expect_string =
        |field: &str, required: bool, errors: &mut Vec<ItemError>| match obj.get(field) {
            Some(Value::String(_)) => {}
            None | Some(Value::Null) if !required => {}
            None => errors.push(ItemError::item(index, field, "missing")),
            Some(_) => errors.push(ItemError::item(index, field, "expected a string")),
        };
    expect_string("metric_name", true, errors);
    expect_string("metric_type", true, errors);
    expect_string("help_text", false, errors);
    expect_string("unit", false, errors);
    match obj.get("metric_value") {
        Some(Value::Number(_)) => {}
        Some(Value::String(s)) if crate::events::json::marker_value(s).is_some() => {}
        Some(Value::String(s)) => errors.push(ItemError::item(
            index,
            "metric_value",
            format!("expected a finite number, got the string `{s}`"),
        )),
        None => errors.push(ItemError::item(index, "metric_value", "missing")),
        Some(_) => errors.push(ItemError::item(
            index,
            "metric_value",
            "expected a finite number",
        )),
    }
    match obj.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                if !v.is_string() {
                    errors.push(ItemError::item(
                        index,
                        &format!("labels.{k}"),
                        "label values must be strings",
                    ));
                }
            }
        }
        Some(_) => errors.push(ItemError::item(index, "labels", "expected an object")),
    }
    if errors.len() > before {
        return;
    }
    // Types are right: run the semantic checks too, so every problem is listed.
    match serde_json::from_value::<ReportedMetric>(item.clone()) {
        Ok(m) => {
            if let Err(mut e) = prepare_metric(index, m, now_ms) {
                errors.append(&mut e);
            }
        }
        Err(e) => errors.push(ItemError::item(index, "metrics", e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_follow_prometheus_rules() {
        for ok in ["a", "_a", ":a", "a_b:c9", "noetl_system_cpu_usage_percent"] {
            assert!(is_valid_metric_name(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a b", "é", "a.b"] {
            assert!(!is_valid_metric_name(bad), "{bad}");
        }
        assert!(is_valid_label_name("host_1"));
        assert!(!is_valid_label_name("a:b"));
        assert!(!is_valid_label_name("9"));
    }

    #[test]
    fn refused_names_get_a_valid_name_to_rename_to() {
        assert_eq!(
            valid_name_for("worker.queue-size", true),
            "worker_queue_size"
        );
        assert_eq!(valid_name_for("ns:rate", true), "ns:rate");
        assert_eq!(valid_name_for("ns:rate", false), "ns_rate");
        assert_eq!(valid_name_for("1abc", true), "_1abc");
        assert_eq!(valid_name_for("", false), "_");
        assert_eq!(valid_name_for("é", false), "_");
        for name in ["a-b", "1x", "k8s.pod", "a b", "é:"] {
            assert!(is_valid_metric_name(&valid_name_for(name, true)), "{name}");
            assert!(is_valid_label_name(&valid_name_for(name, false)), "{name}");
        }
    }

    #[test]
    fn pythons_str_datetime_with_a_space_is_a_timestamp() {
        let t = parse_time_str("2024-01-01T12:00:00.5+00:00").unwrap();
        assert_eq!(
            parse_time_str("2024-01-01 12:00:00.500000+00:00").unwrap(),
            t
        );
        assert_eq!(parse_time_str("2024-01-01 12:00:00.5").unwrap(), t);
        assert!(parse_time_str("2024-01-01 noon").is_err());
    }

    #[test]
    fn naive_timestamps_are_utc_and_unix_seconds_are_accepted() {
        let a = parse_time_str("2024-01-01T12:00:00Z").unwrap();
        let b = parse_time_str("2024-01-01T12:00:00").unwrap();
        let c = parse_time_str("1704110400").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert!(parse_time_str("yesterday").is_err());
    }

    #[test]
    fn every_bad_item_is_listed_with_index_and_field() {
        let body = br#"{"component_name":"w","metrics":[
            {"metric_name":"ok","metric_type":"gauge","metric_value":1},
            {"metric_name":"1bad","metric_type":"gauge","metric_value":1},
            {"metric_name":"x","metric_type":"meter","metric_value":"NaN"},
            {"metric_name":"c","metric_type":"counter","metric_value":-1}]}"#;
        let Err(ReportError::Invalid(errors)) = parse_report(body, 100, 0, &|_| None) else {
            panic!("expected invalid");
        };
        let got: Vec<_> = errors.iter().map(|e| (e.index, e.field.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (Some(1), "metric_name"),
                (Some(2), "metric_value"),
                (Some(3), "metric_value")
            ]
        );
    }

    #[test]
    fn histogram_bucket_label_becomes_bounds() {
        let body = br#"{"component_name":"w","metrics":[
            {"metric_name":"lat","metric_type":"histogram","metric_value":0.3,"labels":{"le":"0.1,0.5,1,+Inf","path":"/"}}]}"#;
        let report = parse_report(body, 100, 0, &|_| None).unwrap();
        let m = &report.metrics[0];
        assert_eq!(m.bounds.as_deref(), Some(&[0.1, 0.5, 1.0][..]));
        assert_eq!(m.labels.len(), 1);
    }
}

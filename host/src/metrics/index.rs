//! The in-memory latest-value index: every live series with its latest value or
//! aggregate, grouped into metric families. Kept up to date by the ingest writer
//! after each commit and rebuilt from the store at start; scrapes render from it
//! and never scan the samples table. Does not persist anything itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::aggregate::{Aggregate, HistogramState, SummaryState};
use super::model::MetricKind;

/// Identity of a series: component, metric name and canonical label JSON.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub component: Arc<str>,
    pub name: Arc<str>,
    pub labels: String,
}

/// What a series currently exports.
#[derive(Clone, Debug)]
pub enum SeriesValue {
    Scalar(f64),
    Aggregate(Aggregate),
}

/// One live series.
#[derive(Clone, Debug)]
pub struct SeriesEntry {
    pub key: SeriesKey,
    pub fingerprint: u64,
    /// Escaped `name="value"` pairs, `component` first.
    pub rendered_labels: String,
    pub value: SeriesValue,
    /// Wall-clock time of the last report (ms), for `--series-ttl`.
    pub updated_ms: i64,
}

/// A metric family: one name, one type, its series in id order.
#[derive(Clone, Debug)]
pub struct Family {
    pub kind: MetricKind,
    pub help: String,
    pub unit: String,
    pub ids: BTreeSet<i64>,
    /// Hash of each series' exported label set → its id, so no two series of
    /// a family ever export the same label set.
    label_sets: IdMap<u64, i64>,
}

/// How counters are named on export (`--counter-names`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CounterNames {
    /// As the Prometheus client libraries do: every counter sample ends in
    /// `_total` (appended when the reported name lacks it) in both formats;
    /// the OpenMetrics family is the name without `_total`.
    #[default]
    Total,
    /// NoETL's reported names: a counter is exported under the name it was
    /// reported with. In OpenMetrics, where a counter sample must end in
    /// `_total`, a counter whose name does not is typed `unknown`, so the
    /// series keeps one name in both formats.
    Reported,
}

/// The names under which a family appears in the exposition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportNames {
    /// `# TYPE` name in text format 0.0.4.
    pub text_family: String,
    /// `# TYPE` name in OpenMetrics.
    pub om_family: String,
    /// OpenMetrics type (`counter`, `gauge`, `histogram`, `summary`, `unknown`).
    pub om_type: &'static str,
    /// Name of the counter or gauge sample (histograms and summaries append
    /// `_bucket`, `_sum`, `_count` to the family name).
    pub sample: String,
}

/// The exported names of a family reported as `name` of `kind`.
pub fn export_names(name: &str, kind: MetricKind, mode: CounterNames) -> ExportNames {
    match kind {
        MetricKind::Counter => {
            let base = name.strip_suffix("_total").filter(|b| !b.is_empty());
            match (base, mode) {
                (Some(base), _) => ExportNames {
                    text_family: name.to_string(),
                    om_family: base.to_string(),
                    om_type: "counter",
                    sample: name.to_string(),
                },
                (None, CounterNames::Total) => {
                    let sample = format!("{name}_total");
                    ExportNames {
                        text_family: sample.clone(),
                        om_family: name.to_string(),
                        om_type: "counter",
                        sample,
                    }
                }
                (None, CounterNames::Reported) => ExportNames {
                    text_family: name.to_string(),
                    om_family: name.to_string(),
                    om_type: "unknown",
                    sample: name.to_string(),
                },
            }
        }
        other => ExportNames {
            text_family: name.to_string(),
            om_family: name.to_string(),
            om_type: other.as_str(),
            sample: name.to_string(),
        },
    }
}

/// Every sample or family name a family reported as `name` of `kind` may
/// take in either format: its OpenMetrics family name plus the suffixes of
/// its type (the rule strict OpenMetrics parsers apply to find clashes). Two
/// families must never share one.
pub fn claimed_names(name: &str, kind: MetricKind, mode: CounterNames) -> Vec<String> {
    let names = export_names(name, kind, mode);
    let suffixes: &[&str] = match names.om_type {
        "counter" => &["", "_total", "_created"],
        "histogram" => &["", "_bucket", "_sum", "_count", "_created"],
        "summary" => &["", "_sum", "_count", "_created"],
        _ => &[""],
    };
    let mut claimed: Vec<String> = suffixes
        .iter()
        .map(|s| format!("{}{s}", names.om_family))
        .collect();
    for extra in [&names.text_family, &names.sample] {
        if !claimed.contains(extra) {
            claimed.push(extra.clone());
        }
    }
    claimed
}

/// Hash of an exported label set (its rendered, canonical text).
fn label_set_hash(rendered: &str) -> u64 {
    use std::hash::BuildHasher;
    BuildHasherDefault::<rustc_hash::FxHasher>::default().hash_one(rendered)
}

/// Hasher for keys that are already well mixed (fingerprints) or small integers (ids).
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
}

/// A map keyed by ids or fingerprints.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[derive(Default)]
struct Inner {
    families: BTreeMap<Arc<str>, Family>,
    series: IdMap<i64, SeriesEntry>,
    by_fingerprint: IdMap<u64, i64>,
    /// Every name a family claims on export (see [`claimed_names`]) → that family.
    claims: HashMap<String, Arc<str>>,
}

/// Exposition formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpositionFormat {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl ExpositionFormat {
    /// Chooses the format from a scraper's `Accept` header.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => ExpositionFormat::OpenMetrics,
            _ => ExpositionFormat::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExpositionFormat::Text => "text/plain; version=0.0.4; charset=utf-8",
            ExpositionFormat::OpenMetrics => {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            }
        }
    }
}

/// A series the index does not hold yet.
pub struct NewEntry {
    pub id: i64,
    pub key: SeriesKey,
    pub fingerprint: u64,
    pub kind: MetricKind,
    pub labels: BTreeMap<String, String>,
    pub help: String,
    pub unit: String,
    pub value: SeriesValue,
}

/// A change the writer applies after a successful commit.
pub enum SeriesUpdate {
    /// A known series has a new value or aggregate.
    Value { id: i64, value: SeriesValue },
    /// A series enters the index.
    New(Box<NewEntry>),
    /// A family's help text changed.
    Help { name: Arc<str>, help: String },
}

/// The latest-value index, shared by the writer (updates) and scrapes (renders).
#[derive(Default)]
pub struct SeriesIndex {
    inner: RwLock<Inner>,
    counter_names: CounterNames,
    /// Bumped whenever a series enters or leaves the index.
    membership: AtomicU64,
    /// The recent samples the alert evaluator holds (`metrics::recent`).
    pub recent: super::recent::RecentSamples,
}

impl SeriesIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// An index exporting counters under the given naming.
    pub fn with_counter_names(counter_names: CounterNames) -> Self {
        SeriesIndex {
            counter_names,
            ..SeriesIndex::default()
        }
    }

    pub fn counter_names(&self) -> CounterNames {
        self.counter_names
    }

    /// Changes whenever a series enters or leaves the index.
    pub fn membership(&self) -> u64 {
        self.membership.load(Ordering::Acquire)
    }

    /// Runs `f` with read access to the lookups the writer needs.
    pub fn with_view<R>(&self, f: impl FnOnce(&IndexView<'_>) -> R) -> R {
        let inner = self.inner.read();
        f(&IndexView {
            inner: &inner,
            counter_names: self.counter_names,
        })
    }

    /// Applies committed updates; every touched series counts as reported at
    /// `updated_ms`. A new series that would export a name or label set
    /// another series exports already is left out (the writer refuses such
    /// reports; this only happens with data stored before that check) and
    /// counted in the result.
    pub fn apply(&self, updates: impl IntoIterator<Item = SeriesUpdate>, updated_ms: i64) -> usize {
        let mut inner = self.inner.write();
        let Inner {
            families,
            series,
            by_fingerprint,
            claims,
        } = &mut *inner;
        let mut skipped = 0;
        for update in updates {
            match update {
                SeriesUpdate::Value { id, value } => {
                    if let Some(entry) = series.get_mut(&id) {
                        entry.value = value;
                        entry.updated_ms = updated_ms;
                    }
                }
                SeriesUpdate::Help { name, help } => {
                    if let Some(f) = families.get_mut(&name) {
                        f.help = help;
                    }
                }
                SeriesUpdate::New(new) => {
                    let NewEntry {
                        id,
                        key,
                        fingerprint,
                        kind,
                        labels,
                        help,
                        unit,
                        value,
                    } = *new;
                    let rendered_labels = render_labels(&key.component, &labels);
                    if !families.contains_key(&key.name) {
                        let wanted = claimed_names(&key.name, kind, self.counter_names);
                        if let Some(owner) = wanted.iter().find_map(|c| claims.get(c)) {
                            tracing::warn!(series = id, family = %key.name, collides_with = %owner, "stored series left out of the export: its names collide with another family");
                            skipped += 1;
                            continue;
                        }
                        for c in wanted {
                            claims.insert(c, key.name.clone());
                        }
                        families.insert(
                            key.name.clone(),
                            Family {
                                kind,
                                help: String::new(),
                                unit: String::new(),
                                ids: BTreeSet::new(),
                                label_sets: IdMap::default(),
                            },
                        );
                    }
                    let Some(family) = families.get_mut(&key.name) else {
                        continue;
                    };
                    if family.kind != kind {
                        tracing::warn!(series = id, family = %key.name, "stored series left out of the export: its type differs from its family's");
                        skipped += 1;
                        continue;
                    }
                    let set_hash = label_set_hash(&rendered_labels);
                    if let Some(other) = family.label_sets.get(&set_hash) {
                        let same_set = series
                            .get(other)
                            .is_some_and(|e| e.rendered_labels == rendered_labels);
                        if *other != id && same_set {
                            tracing::warn!(series = id, family = %key.name, other = *other, "stored series left out of the export: another series exports the same label set");
                            skipped += 1;
                            continue;
                        }
                    }
                    family.label_sets.insert(set_hash, id);
                    if !help.is_empty() {
                        family.help = help;
                    }
                    if !unit.is_empty() {
                        family.unit = unit;
                    }
                    family.ids.insert(id);
                    self.membership.fetch_add(1, Ordering::AcqRel);
                    by_fingerprint.insert(fingerprint, id);
                    series.insert(
                        id,
                        SeriesEntry {
                            key,
                            fingerprint,
                            rendered_labels,
                            value,
                            updated_ms,
                        },
                    );
                }
            }
        }
        skipped
    }

    /// Removes every series of a component; returns how many were held.
    pub fn remove_component(&self, component: &str) -> usize {
        self.remove_where(|e| &*e.key.component == component)
    }

    /// Drops series not updated since `cutoff_ms` from memory.
    pub fn remove_stale(&self, cutoff_ms: i64) -> usize {
        self.remove_where(|e| e.updated_ms < cutoff_ms)
    }

    fn remove_where(&self, pred: impl Fn(&SeriesEntry) -> bool) -> usize {
        let mut inner = self.inner.write();
        let Inner {
            families,
            series,
            by_fingerprint,
            claims,
        } = &mut *inner;
        let doomed: Vec<i64> = series
            .iter()
            .filter(|(_, e)| pred(e))
            .map(|(id, _)| *id)
            .collect();
        for id in &doomed {
            if let Some(e) = series.remove(id) {
                if by_fingerprint.get(&e.fingerprint) == Some(id) {
                    by_fingerprint.remove(&e.fingerprint);
                }
                if let Some(f) = families.get_mut(&e.key.name) {
                    f.ids.remove(id);
                    let set_hash = label_set_hash(&e.rendered_labels);
                    if f.label_sets.get(&set_hash) == Some(id) {
                        f.label_sets.remove(&set_hash);
                    }
                }
            }
        }
        families.retain(|name, f| {
            let keep = !f.ids.is_empty();
            if !keep {
                claims.retain(|_, owner| owner != name);
            }
            keep
        });
        if !doomed.is_empty() {
            self.membership.fetch_add(1, Ordering::AcqRel);
        }
        doomed.len()
    }

    /// Calls `f` with every held series (id, key, family type), the
    /// families in name order; for readers that need every series, such as
    /// the alert evaluator's series catalog.
    pub fn for_each_series(&self, mut f: impl FnMut(i64, &SeriesKey, MetricKind)) {
        let inner = self.inner.read();
        for family in inner.families.values() {
            for id in &family.ids {
                if let Some(e) = inner.series.get(id) {
                    f(*id, &e.key, family.kind);
                }
            }
        }
    }

    /// Whether any of `ids` was reported at or after `since_ms` (wall clock).
    pub fn updated_since(&self, ids: impl IntoIterator<Item = i64>, since_ms: i64) -> bool {
        let inner = self.inner.read();
        ids.into_iter().any(|id| {
            inner
                .series
                .get(&id)
                .is_some_and(|e| e.updated_ms >= since_ms)
        })
    }

    /// Number of series exported at `now_ms` under `ttl_ms` (0 = no expiry).
    pub fn live_series(&self, now_ms: i64, ttl_ms: i64) -> usize {
        let inner = self.inner.read();
        inner
            .series
            .values()
            .filter(|e| is_live(e, now_ms, ttl_ms))
            .count()
    }

    /// Renders every live series in the given format (without a trailing `# EOF`).
    pub fn render(&self, out: &mut String, format: ExpositionFormat, now_ms: i64, ttl_ms: i64) {
        self.render_scoped(out, format, now_ms, ttl_ms, &ExportScope::default());
    }

    /// Renders the live series a scope selects, each with its component's
    /// `component_type` label when the scope knows it.
    pub fn render_scoped(
        &self,
        out: &mut String,
        format: ExpositionFormat,
        now_ms: i64,
        ttl_ms: i64,
        scope: &ExportScope<'_>,
    ) {
        let inner = self.inner.read();
        let mut live = Vec::new();
        for (name, family) in &inner.families {
            live.clear();
            live.extend(
                family
                    .ids
                    .iter()
                    .filter_map(|id| inner.series.get(id))
                    .filter(|e| is_live(e, now_ms, ttl_ms))
                    .filter(|e| scope.component.is_none_or(|c| &*e.key.component == c)),
            );
            if !live.is_empty() {
                let names = export_names(name, family.kind, self.counter_names);
                render_family(out, &names, family, &live, format, now_ms, scope);
            }
        }
    }
}

/// Which series an export shows and what it adds to them.
#[derive(Default)]
pub struct ExportScope<'a> {
    /// Only this component's series (NoETL's `?component_name=`, `?runtime_id=`).
    pub component: Option<&'a str>,
    /// Each component's type, exported as `component_type` beside `component`.
    pub component_types: Option<&'a HashMap<String, String>>,
}

/// Where the leading `component="…"` pair of rendered labels ends.
fn component_pair_end(rendered: &str) -> usize {
    let bytes = rendered.as_bytes();
    let mut i = "component=\"".len();
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The labels of a series as exported: `component`, then `component_type`
/// when known, then the reported labels.
fn exported_labels<'e>(
    entry: &'e SeriesEntry,
    scope: &ExportScope<'_>,
) -> std::borrow::Cow<'e, str> {
    let rendered = entry.rendered_labels.as_str();
    let Some(kind) = scope
        .component_types
        .and_then(|t| t.get(&*entry.key.component))
        .filter(|t| !t.is_empty())
    else {
        return rendered.into();
    };
    let end = component_pair_end(rendered);
    let mut out = String::with_capacity(rendered.len() + kind.len() + 20);
    out.push_str(&rendered[..end]);
    out.push_str(",component_type=\"");
    escape_label_value(&mut out, kind);
    out.push('"');
    out.push_str(&rendered[end..]);
    out.into()
}

/// Read access used by the writer while planning a commit.
pub struct IndexView<'a> {
    inner: &'a Inner,
    counter_names: CounterNames,
}

impl IndexView<'_> {
    pub fn counter_names(&self) -> CounterNames {
        self.counter_names
    }

    /// The family, other than `name` itself, that already exports one of
    /// the names a family `name` of `kind` would claim, with that name.
    pub fn claim_conflict(&self, name: &str, kind: MetricKind) -> Option<(String, String)> {
        claimed_names(name, kind, self.counter_names)
            .into_iter()
            .find_map(|c| {
                let owner = self.inner.claims.get(&c)?;
                (&**owner != name).then(|| (owner.to_string(), c))
            })
    }

    /// The id of the series of family `name` that exports exactly the label
    /// set `rendered` (as [`render_labels`] writes it), if any.
    pub fn label_set_owner(&self, name: &str, rendered: &str) -> Option<i64> {
        let family = self.inner.families.get(name)?;
        let id = *family.label_sets.get(&label_set_hash(rendered))?;
        let e = self.inner.series.get(&id)?;
        (e.rendered_labels == rendered).then_some(id)
    }

    /// The id of a held series, verified against the full identity.
    pub fn id_of(
        &self,
        fingerprint: u64,
        component: &str,
        name: &str,
        labels: &str,
    ) -> Option<i64> {
        let id = *self.inner.by_fingerprint.get(&fingerprint)?;
        let e = self.inner.series.get(&id)?;
        (&*e.key.component == component && &*e.key.name == name && e.key.labels == labels)
            .then_some(id)
    }

    pub fn kind_of(&self, name: &str) -> Option<MetricKind> {
        self.inner.families.get(name).map(|f| f.kind)
    }

    pub fn help_of(&self, name: &str) -> Option<&str> {
        self.inner.families.get(name).map(|f| f.help.as_str())
    }

    /// The current aggregate of a held series.
    pub fn aggregate(&self, id: i64) -> Option<Aggregate> {
        match &self.inner.series.get(&id)?.value {
            SeriesValue::Aggregate(a) => Some(a.clone()),
            SeriesValue::Scalar(_) => None,
        }
    }
}

fn is_live(e: &SeriesEntry, now_ms: i64, ttl_ms: i64) -> bool {
    ttl_ms <= 0 || now_ms - e.updated_ms <= ttl_ms
}

/// Escapes a label value (both formats): backslash, double quote, newline.
pub fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(out: &mut String, help: &str, format: ExpositionFormat) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if format == ExpositionFormat::OpenMetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// The exported label set of a series: `component="…"` first, then the
/// reported labels sorted by name. A reported `component` label that differs
/// from the reporting component is renamed as Prometheus does with
/// `honor_labels: false`: `exported_component`, or, when the series has a
/// label of that name too, `exported_exported_component`, and so on, so the
/// renaming never produces a duplicate name. A reported `component_type`
/// label is renamed the same way (`exported_component_type`): the export
/// adds the registry's `component_type`. The text is canonical: two
/// series render the same text exactly when they export the same label set.
pub fn render_labels(component: &str, labels: &BTreeMap<String, String>) -> String {
    let mut pairs: Vec<(std::borrow::Cow<'_, str>, &str)> = Vec::with_capacity(labels.len());
    for (name, value) in labels {
        if name == "component" || name == "component_type" {
            if name == "component" && value == component {
                continue;
            }
            let mut renamed = format!("exported_{name}");
            while labels.contains_key(&renamed) {
                renamed.insert_str(0, "exported_");
            }
            pairs.push((renamed.into(), value));
        } else {
            pairs.push((name.as_str().into(), value));
        }
    }
    pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::from("component=\"");
    escape_label_value(&mut out, component);
    out.push('"');
    for (name, value) in pairs {
        out.push(',');
        out.push_str(&name);
        out.push_str("=\"");
        escape_label_value(&mut out, value);
        out.push('"');
    }
    out
}

/// Formats a float the way Prometheus parsers accept it.
pub fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

fn write_sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &str,
    extra: Option<(&str, f64)>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    out.push('{');
    out.push_str(labels);
    if let Some((label, bound)) = extra {
        out.push(',');
        out.push_str(label);
        out.push_str("=\"");
        write_value(out, bound);
        out.push('"');
    }
    out.push_str("} ");
    write_value(out, value);
    out.push('\n');
}

fn render_family(
    out: &mut String,
    names: &ExportNames,
    family: &Family,
    live: &[&SeriesEntry],
    format: ExpositionFormat,
    now_ms: i64,
    scope: &ExportScope<'_>,
) {
    let (family_name, type_name) = match format {
        ExpositionFormat::Text => (names.text_family.as_str(), family.kind.as_str()),
        ExpositionFormat::OpenMetrics => (names.om_family.as_str(), names.om_type),
    };
    // A family reported without help text still gets a HELP line (as NoETL
    // writes it), so linters have nothing to complain about.
    out.push_str("# HELP ");
    out.push_str(family_name);
    out.push(' ');
    if family.help.is_empty() {
        out.push_str("NoETL metric: ");
        out.push_str(family_name);
    } else {
        escape_help(out, &family.help, format);
    }
    out.push('\n');
    out.push_str("# TYPE ");
    out.push_str(family_name);
    out.push(' ');
    out.push_str(type_name);
    out.push('\n');
    if format == ExpositionFormat::OpenMetrics
        && !family.unit.is_empty()
        && family_name.ends_with(&format!("_{}", family.unit))
    {
        out.push_str("# UNIT ");
        out.push_str(family_name);
        out.push(' ');
        out.push_str(&family.unit);
        out.push('\n');
    }
    for entry in live {
        let labels = exported_labels(entry, scope);
        let labels = labels.as_ref();
        match &entry.value {
            SeriesValue::Scalar(v) => write_sample(out, &names.sample, "", labels, None, *v),
            SeriesValue::Aggregate(Aggregate::Histogram(h)) => {
                render_histogram(out, family_name, labels, h)
            }
            SeriesValue::Aggregate(Aggregate::Summary(s)) => {
                render_summary(out, family_name, labels, s, now_ms)
            }
        }
    }
}

fn render_histogram(out: &mut String, name: &str, labels: &str, h: &HistogramState) {
    for (bound, count) in h.cumulative() {
        write_sample(
            out,
            name,
            "_bucket",
            labels,
            Some(("le", bound)),
            count as f64,
        );
    }
    write_sample(out, name, "_sum", labels, None, h.sum);
    write_sample(out, name, "_count", labels, None, h.count as f64);
}

fn render_summary(out: &mut String, name: &str, labels: &str, s: &SummaryState, now_ms: i64) {
    for (q, v) in s.quantile_values(now_ms) {
        write_sample(out, name, "", labels, Some(("quantile", q)), v);
    }
    write_sample(out, name, "_sum", labels, None, s.sum);
    write_sample(out, name, "_count", labels, None, s.count as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_series(
        id: i64,
        component: &str,
        name: &str,
        kind: MetricKind,
        labels: &[(&str, &str)],
        value: SeriesValue,
    ) -> SeriesUpdate {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let key = SeriesKey {
            component: component.into(),
            name: name.into(),
            labels: serde_json::to_string(&labels).unwrap(),
        };
        SeriesUpdate::New(Box::new(NewEntry {
            id,
            fingerprint: crate::metrics::model::series_fingerprint(component, name, &key.labels),
            key,
            kind,
            labels,
            help: "Help with \\ and\nnewline".into(),
            unit: String::new(),
            value,
        }))
    }

    #[test]
    fn label_values_are_escaped_and_component_comes_first() {
        let index = SeriesIndex::new();
        index.apply(
            vec![new_series(
                1,
                "w1",
                "jobs_total",
                MetricKind::Counter,
                &[("path", "a\"b\\c\nd"), ("component", "other")],
                SeriesValue::Scalar(3.0),
            )],
            1_000,
        );
        let mut text = String::new();
        index.render(&mut text, ExpositionFormat::Text, 1_000, 0);
        assert!(
            text.contains("# HELP jobs_total Help with \\\\ and\\nnewline\n"),
            "{text}"
        );
        assert!(
            text.contains("jobs_total{component=\"w1\",exported_component=\"other\",path=\"a\\\"b\\\\c\\nd\"} 3\n"),
            "{text}"
        );
        let mut om = String::new();
        index.render(&mut om, ExpositionFormat::OpenMetrics, 1_000, 0);
        assert!(om.contains("# TYPE jobs counter\n"), "{om}");
        assert!(om.contains("jobs_total{component=\"w1\""), "{om}");
    }

    #[test]
    fn expired_series_leave_the_export_but_stay_in_the_index() {
        let index = SeriesIndex::new();
        index.apply(
            vec![new_series(
                1,
                "w1",
                "g",
                MetricKind::Gauge,
                &[],
                SeriesValue::Scalar(1.0),
            )],
            1_000,
        );
        let mut text = String::new();
        index.render(&mut text, ExpositionFormat::Text, 10_000, 5_000);
        assert!(text.is_empty(), "{text}");
        assert_eq!(index.live_series(10_000, 0), 1);
        assert_eq!(index.remove_stale(2_000), 1);
        assert_eq!(index.live_series(10_000, 0), 0);
    }

    #[test]
    fn value_updates_replace_the_exported_value() {
        let index = SeriesIndex::new();
        index.apply(
            vec![new_series(
                7,
                "w1",
                "g",
                MetricKind::Gauge,
                &[],
                SeriesValue::Scalar(1.0),
            )],
            1_000,
        );
        index.apply(
            vec![SeriesUpdate::Value {
                id: 7,
                value: SeriesValue::Scalar(2.5),
            }],
            2_000,
        );
        let mut text = String::new();
        index.render(&mut text, ExpositionFormat::Text, 2_000, 0);
        assert!(text.ends_with("g{component=\"w1\"} 2.5\n"), "{text}");
    }
}

//! The evaluator's instant-vector element and the label work shared by the
//! operators: the view of a series' labels with the metric name dropped
//! (without copying them), match and grouping signatures, the duplicate
//! labelset check and Prometheus's label formatting for error messages.
//! Converting to the public [`Element`] happens once, at the end.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustc_hash::{FxHashSet, FxHasher};

use super::{Element, EvalError, Labels, METRIC_NAME};

/// The separator in signatures; never part of a UTF-8 string.
const SEP: u8 = 0xff;

/// Prometheus's staleness marker, a NaN with a fixed bit pattern.
const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

pub(super) fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// One element of an instant vector during evaluation. The labels are
/// shared with the input series; `drop_name` hides `__name__` instead of
/// copying the set without it.
#[derive(Clone, Debug)]
pub(super) struct Sample {
    pub labels: Arc<Labels>,
    pub drop_name: bool,
    pub value: f64,
}

impl Sample {
    pub fn new(labels: Arc<Labels>, value: f64) -> Self {
        Self {
            labels,
            drop_name: false,
            value,
        }
    }

    /// Whether `drop_name` hides this label.
    fn hides(&self, name: &str) -> bool {
        self.drop_name && name == METRIC_NAME
    }

    /// A label's value as Prometheus sees it (an empty value is no label).
    pub fn get(&self, name: &str) -> Option<&str> {
        if self.hides(name) {
            return None;
        }
        self.labels
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The labels as Prometheus sees them, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.labels
            .iter()
            .filter(move |(k, v)| !v.is_empty() && !self.hides(k))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn into_element(self) -> Element {
        let hidden = self
            .labels
            .iter()
            .any(|(k, v)| v.is_empty() || self.hides(k));
        let labels = if hidden {
            self.iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        } else {
            Arc::unwrap_or_clone(self.labels)
        };
        Element {
            labels,
            value: self.value,
        }
    }
}

/// Appends `name SEP value SEP` to a signature.
fn push_pair(buf: &mut Vec<u8>, name: &str, value: &str) {
    buf.extend_from_slice(name.as_bytes());
    buf.push(SEP);
    buf.extend_from_slice(value.as_bytes());
    buf.push(SEP);
}

/// The signature of the listed labels (`on (...)`, `by (...)`); `names`
/// sorted and without repeats.
pub(super) fn signature_on(s: &Sample, names: &[String], buf: &mut Vec<u8>) {
    buf.clear();
    for name in names {
        if let Some(value) = s.get(name) {
            push_pair(buf, name, value);
        }
    }
}

/// The signature of every label but the listed ones and the metric name
/// (`ignoring (...)`, `without (...)`); `names` sorted.
pub(super) fn signature_without(s: &Sample, names: &[String], buf: &mut Vec<u8>) {
    buf.clear();
    for (name, value) in s.iter() {
        if name != METRIC_NAME && names.binary_search_by(|n| n.as_str().cmp(name)).is_err() {
            push_pair(buf, name, value);
        }
    }
}

/// The signature of the whole (visible) label set.
pub(super) fn signature_all(s: &Sample, buf: &mut Vec<u8>) {
    buf.clear();
    for (name, value) in s.iter() {
        push_pair(buf, name, value);
    }
}

fn hash_labels(s: &Sample) -> u64 {
    let mut h = FxHasher::default();
    for (name, value) in s.iter() {
        name.hash(&mut h);
        value.hash(&mut h);
    }
    h.finish()
}

/// Whether every element shows the same metric name (or none). Dropping
/// the name of such a vector cannot make two distinct label sets equal, so
/// the duplicate check can be skipped.
pub(super) fn same_visible_name(v: &[Sample]) -> bool {
    let first = v.first().map(|s| s.get(METRIC_NAME));
    v.iter().all(|s| Some(s.get(METRIC_NAME)) == first)
}

/// Prometheus's check after an operation that changed labels: no two
/// elements may share a label set.
pub(super) fn ensure_unique(v: &[Sample]) -> Result<(), EvalError> {
    if v.len() < 2 {
        return Ok(());
    }
    let mut hashes = FxHashSet::with_capacity_and_hasher(v.len(), Default::default());
    if v.iter().all(|s| hashes.insert(hash_labels(s))) {
        return Ok(());
    }
    // Two hashes collided: compare the label sets themselves.
    let mut keys = FxHashSet::with_capacity_and_hasher(v.len(), Default::default());
    let mut buf = Vec::new();
    for s in v {
        signature_all(s, &mut buf);
        if !keys.insert(std::mem::take(&mut buf)) {
            return Err(EvalError::DuplicateLabelset);
        }
    }
    Ok(())
}

/// Labels as Prometheus prints them: `{__name__="up", job="node"}`.
pub(super) fn format_labels<'a>(labels: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in labels.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        if is_legacy_label_name(name) {
            out.push_str(name);
        } else {
            push_quoted(&mut out, name);
        }
        out.push('=');
        push_quoted(&mut out, value);
    }
    out.push('}');
    out
}

fn is_legacy_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Go's `strconv.Quote` for the characters label values contain in practice.
fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

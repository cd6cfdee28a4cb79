//! [`Batch`]: a read-only view over the columnar batch a publisher receives.
//!
//! The host sends samples as columns (`sample-columns` in `wit/plugin.wit`: one
//! blob of interned strings plus offsets, and numeric lists). This module turns
//! them back into [`Sample`]s without copying anything. Offsets and ids are
//! checked as they are read, never trusted: a malformed batch yields empty
//! strings, `NaN` values or fewer labels, never a panic (a panic would trap the
//! instance). [`Batch::validate`] checks everything up front for plugins that
//! prefer to refuse such a batch. Building batches ([`BatchBuilder`]) is for tests.

use std::collections::HashMap;
use std::fmt;

pub use crate::bindings::publisher::vigil::plugin::types::{Event, SampleColumns};

/// Samples and events to publish, in sequence order.
#[derive(Clone)]
pub struct Batch {
    columns: SampleColumns,
    events: Vec<Event>,
}

impl Batch {
    /// A batch of the given columns and events.
    pub fn new(columns: SampleColumns, events: Vec<Event>) -> Batch {
        Batch { columns, events }
    }

    /// The samples, in order.
    pub fn samples(&self) -> Samples<'_> {
        Samples {
            columns: &self.columns,
            next: 0,
            end: self.columns.seqs.len(),
        }
    }

    /// The events, in order.
    pub fn events(&self) -> std::slice::Iter<'_, Event> {
        self.events.iter()
    }

    /// Number of samples (the length of the `seqs` column).
    pub fn sample_count(&self) -> usize {
        self.columns.seqs.len()
    }

    /// Number of events.
    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    /// Number of items: samples plus events.
    pub fn len(&self) -> usize {
        self.sample_count() + self.event_count()
    }

    /// True when there is neither a sample nor an event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lowest and highest sequence number of any item, `None` when empty.
    /// Stable across retries of the same delivery: a good idempotency key.
    pub fn seq_range(&self) -> Option<(u64, u64)> {
        let seqs = self
            .columns
            .seqs
            .iter()
            .copied()
            .chain(self.events.iter().map(|e| e.seq));
        seqs.fold(None, |acc, s| match acc {
            None => Some((s, s)),
            Some((lo, hi)) => Some((lo.min(s), hi.max(s))),
        })
    }

    /// Interned string `id`; `""` when the id or its offsets are out of range.
    pub fn string(&self, id: u32) -> &str {
        string_at(&self.columns, id)
    }

    /// The raw columns, for plugins that want to process them in bulk.
    pub fn columns(&self) -> &SampleColumns {
        &self.columns
    }

    /// Checks every column length, offset and id. The accessors never need this
    /// (they tolerate malformed input); call it to refuse a malformed batch.
    pub fn validate(&self) -> Result<(), String> {
        let c = &self.columns;
        let n = c.seqs.len();
        let lengths = [
            ("components", c.components.len()),
            ("names", c.names.len()),
            ("kinds", c.kinds.len()),
            ("values", c.values.len()),
            ("timestamps", c.timestamps.len()),
        ];
        for (column, len) in lengths {
            if len != n {
                return Err(format!(
                    "column `{column}` has {len} entries for {n} samples"
                ));
            }
        }
        let offsets = &c.string_offsets;
        if offsets.is_empty() && !c.strings.is_empty() {
            return Err("`string-offsets` is empty but `strings` is not".into());
        }
        for pair in offsets.windows(2) {
            if pair[0] > pair[1] {
                return Err(format!(
                    "`string-offsets` decreases: {} > {}",
                    pair[0], pair[1]
                ));
            }
        }
        for &offset in offsets {
            if !c.strings.is_char_boundary(offset as usize) {
                return Err(format!(
                    "string offset {offset} is not a char boundary of the blob"
                ));
            }
        }
        let string_count = offsets.len().saturating_sub(1);
        let ids = c.components.iter().chain(&c.names).chain(&c.label_ids);
        if let Some(bad) = ids.copied().find(|&id| id as usize >= string_count) {
            return Err(format!(
                "string id {bad} out of range ({string_count} strings)"
            ));
        }
        if let Some(kind) = c.kinds.iter().find(|&&k| k > 3) {
            return Err(format!("unknown metric kind {kind}"));
        }
        if c.label_ids.len() % 2 != 0 {
            return Err("`label-ids` has an odd length".into());
        }
        let pairs = c.label_ids.len() / 2;
        let starts = &c.label_starts;
        if n > 0 || !starts.is_empty() {
            if starts.len() != n + 1 {
                return Err(format!(
                    "`label-starts` has {} entries for {n} samples",
                    starts.len()
                ));
            }
            if starts.windows(2).any(|w| w[0] > w[1]) {
                return Err("`label-starts` decreases".into());
            }
            let last = starts.last().copied().unwrap_or(0) as usize;
            if last > pairs {
                return Err(format!(
                    "`label-starts` ends at {last} but there are {pairs} labels"
                ));
            }
        }
        Ok(())
    }
}

impl From<crate::bindings::publisher::Batch> for Batch {
    fn from(batch: crate::bindings::publisher::Batch) -> Batch {
        Batch::new(batch.samples, batch.events)
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("samples", &self.sample_count())
            .field("events", &self.event_count())
            .field("seq_range", &self.seq_range())
            .finish()
    }
}

fn string_at(columns: &SampleColumns, id: u32) -> &str {
    let id = id as usize;
    match (
        columns.string_offsets.get(id),
        columns.string_offsets.get(id + 1),
    ) {
        (Some(&start), Some(&end)) => columns
            .strings
            .get(start as usize..end as usize)
            .unwrap_or(""),
        _ => "",
    }
}

/// Iterator over the samples of a [`Batch`].
#[derive(Clone)]
pub struct Samples<'a> {
    columns: &'a SampleColumns,
    next: usize,
    end: usize,
}

impl<'a> Iterator for Samples<'a> {
    type Item = Sample<'a>;

    fn next(&mut self) -> Option<Sample<'a>> {
        if self.next >= self.end {
            return None;
        }
        let sample = Sample {
            columns: self.columns,
            index: self.next,
        };
        self.next += 1;
        Some(sample)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.end - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Samples<'_> {}

/// One sample of a [`Batch`]; every accessor reads the columns in place.
#[derive(Clone, Copy)]
pub struct Sample<'a> {
    columns: &'a SampleColumns,
    index: usize,
}

impl<'a> Sample<'a> {
    /// Position in the batch.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Sequence number in the host's log.
    pub fn seq(&self) -> u64 {
        self.columns.seqs.get(self.index).copied().unwrap_or(0)
    }

    /// The reporting component.
    pub fn component(&self) -> &'a str {
        self.string_column(&self.columns.components)
    }

    /// The metric name.
    pub fn name(&self) -> &'a str {
        self.string_column(&self.columns.names)
    }

    /// The metric kind.
    pub fn kind(&self) -> MetricKind {
        let raw = self
            .columns
            .kinds
            .get(self.index)
            .copied()
            .unwrap_or(u8::MAX);
        MetricKind::from_u8(raw)
    }

    /// The value; `NaN` when the column is short.
    pub fn value(&self) -> f64 {
        self.columns
            .values
            .get(self.index)
            .copied()
            .unwrap_or(f64::NAN)
    }

    /// Milliseconds since the Unix epoch.
    pub fn timestamp_ms(&self) -> i64 {
        self.columns
            .timestamps
            .get(self.index)
            .copied()
            .unwrap_or(0)
    }

    /// The labels as `(name, value)` pairs.
    pub fn labels(&self) -> Labels<'a> {
        let starts = &self.columns.label_starts;
        let pairs = self.columns.label_ids.len() / 2;
        let start = starts.get(self.index).copied().unwrap_or(0) as usize;
        let end = (starts.get(self.index + 1).copied().unwrap_or(0) as usize).min(pairs);
        Labels {
            columns: self.columns,
            next: start.min(end),
            end,
        }
    }

    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&'a str> {
        self.labels().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    fn string_column(&self, column: &[u32]) -> &'a str {
        match column.get(self.index) {
            Some(&id) => string_at(self.columns, id),
            None => "",
        }
    }
}

impl fmt::Debug for Sample<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sample")
            .field("seq", &self.seq())
            .field("component", &self.component())
            .field("name", &self.name())
            .field("kind", &self.kind())
            .field("value", &self.value())
            .field("timestamp_ms", &self.timestamp_ms())
            .field("labels", &self.labels().collect::<Vec<_>>())
            .finish()
    }
}

/// Iterator over a sample's `(name, value)` labels.
#[derive(Clone)]
pub struct Labels<'a> {
    columns: &'a SampleColumns,
    next: usize,
    end: usize,
}

impl<'a> Iterator for Labels<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        if self.next >= self.end {
            return None;
        }
        let k = self.next;
        self.next += 1;
        let ids = &self.columns.label_ids;
        let name = ids.get(2 * k).map_or("", |&id| string_at(self.columns, id));
        let value = ids
            .get(2 * k + 1)
            .map_or("", |&id| string_at(self.columns, id));
        Some((name, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.end - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Labels<'_> {}

/// Metric types, as in the report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// `0`
    Counter,
    /// `1`
    Gauge,
    /// `2`
    Histogram,
    /// `3`
    Summary,
    /// A code this SDK does not know (a newer host, or a malformed batch).
    Unknown(u8),
}

impl MetricKind {
    /// The kind of wire code `code` (`kinds` column).
    pub fn from_u8(code: u8) -> MetricKind {
        match code {
            0 => MetricKind::Counter,
            1 => MetricKind::Gauge,
            2 => MetricKind::Histogram,
            3 => MetricKind::Summary,
            other => MetricKind::Unknown(other),
        }
    }

    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            MetricKind::Counter => 0,
            MetricKind::Gauge => 1,
            MetricKind::Histogram => 2,
            MetricKind::Summary => 3,
            MetricKind::Unknown(code) => code,
        }
    }

    /// `counter`, `gauge`, `histogram`, `summary` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
            MetricKind::Summary => "summary",
            MetricKind::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for MetricKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds a well-formed [`Batch`] the way the host does (interned strings), for
/// tests of plugins.
#[derive(Default)]
pub struct BatchBuilder {
    columns: Option<SampleColumns>,
    ids: HashMap<String, u32>,
    events: Vec<Event>,
}

impl BatchBuilder {
    /// An empty builder.
    pub fn new() -> BatchBuilder {
        BatchBuilder::default()
    }

    /// Adds a sample.
    #[allow(clippy::too_many_arguments)]
    pub fn sample(
        mut self,
        seq: u64,
        component: &str,
        name: &str,
        kind: MetricKind,
        value: f64,
        timestamp_ms: i64,
        labels: &[(&str, &str)],
    ) -> BatchBuilder {
        let component = self.intern(component);
        let name = self.intern(name);
        let label_ids: Vec<u32> = labels
            .iter()
            .flat_map(|(n, v)| [*n, *v])
            .map(|s| self.intern(s))
            .collect();
        let c = self.columns_mut();
        if c.label_starts.is_empty() {
            c.label_starts.push(0);
        }
        c.seqs.push(seq);
        c.components.push(component);
        c.names.push(name);
        c.kinds.push(kind.code());
        c.values.push(value);
        c.timestamps.push(timestamp_ms);
        c.label_ids.extend(label_ids);
        c.label_starts.push((c.label_ids.len() / 2) as u32);
        self
    }

    /// Adds an event.
    pub fn event(
        mut self,
        seq: u64,
        timestamp_ms: i64,
        event_type: &str,
        source: &str,
        attributes: &str,
    ) -> BatchBuilder {
        self.events.push(Event {
            seq,
            timestamp: timestamp_ms,
            event_type: event_type.to_string(),
            source: source.to_string(),
            attributes: attributes.to_string(),
        });
        self
    }

    /// The batch.
    pub fn build(mut self) -> Batch {
        let columns = self.columns.take().unwrap_or_else(empty_columns);
        Batch::new(columns, self.events)
    }

    fn columns_mut(&mut self) -> &mut SampleColumns {
        self.columns.get_or_insert_with(empty_columns)
    }

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let c = self.columns_mut();
        let id = (c.string_offsets.len() - 1) as u32;
        c.strings.push_str(s);
        c.string_offsets.push(c.strings.len() as u32);
        self.ids.insert(s.to_string(), id);
        id
    }
}

fn empty_columns() -> SampleColumns {
    SampleColumns {
        strings: String::new(),
        string_offsets: vec![0],
        seqs: Vec::new(),
        components: Vec::new(),
        names: Vec::new(),
        kinds: Vec::new(),
        values: Vec::new(),
        timestamps: Vec::new(),
        label_starts: Vec::new(),
        label_ids: Vec::new(),
    }
}

#[cfg(test)]
mod tests;

//! The JSON body, serialised straight from the batch's columns (no copies):
//!
//! ```json
//! {"samples":[{"seq":1,"component":"svc","name":"up","kind":"gauge","value":1.0,
//!              "timestamp_ms":1700000000000,"labels":{"host":"a"}}],
//!  "events":[{"seq":2,"timestamp_ms":1700000000000,"event_type":"TaskCreated",
//!             "source":"exec-1","attributes":{"k":"v"}}]}
//! ```
//!
//! Event `attributes` are embedded as JSON when they parse, else as a string.
//! Non-finite values become `null` (JSON has no NaN).

use serde::ser::{Serialize, SerializeMap, SerializeSeq, SerializeStruct, Serializer};
use vigil_plugin::publisher::{Batch, Event, Labels, Sample};

/// The whole body.
pub(crate) struct BatchBody<'a>(pub &'a Batch);

impl Serialize for BatchBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut body = s.serialize_struct("Batch", 2)?;
        body.serialize_field("samples", &SampleList(self.0))?;
        body.serialize_field("events", &EventList(self.0))?;
        body.end()
    }
}

struct SampleList<'a>(&'a Batch);

impl Serialize for SampleList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut list = s.serialize_seq(Some(self.0.sample_count()))?;
        for sample in self.0.samples() {
            list.serialize_element(&SampleBody(sample))?;
        }
        list.end()
    }
}

struct SampleBody<'a>(Sample<'a>);

impl Serialize for SampleBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let x = &self.0;
        let mut m = s.serialize_struct("Sample", 7)?;
        m.serialize_field("seq", &x.seq())?;
        m.serialize_field("component", x.component())?;
        m.serialize_field("name", x.name())?;
        m.serialize_field("kind", x.kind().as_str())?;
        m.serialize_field("value", &Some(x.value()).filter(|v| v.is_finite()))?;
        m.serialize_field("timestamp_ms", &x.timestamp_ms())?;
        m.serialize_field("labels", &LabelMap(x.labels()))?;
        m.end()
    }
}

struct LabelMap<'a>(Labels<'a>);

impl Serialize for LabelMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let labels = self.0.clone();
        let mut m = s.serialize_map(Some(labels.len()))?;
        for (name, value) in labels {
            m.serialize_entry(name, value)?;
        }
        m.end()
    }
}

struct EventList<'a>(&'a Batch);

impl Serialize for EventList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut list = s.serialize_seq(Some(self.0.event_count()))?;
        for event in self.0.events() {
            list.serialize_element(&EventBody(event))?;
        }
        list.end()
    }
}

struct EventBody<'a>(&'a Event);

impl Serialize for EventBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut m = s.serialize_struct("Event", 5)?;
        m.serialize_field("seq", &e.seq)?;
        m.serialize_field("timestamp_ms", &e.timestamp)?;
        m.serialize_field("event_type", &e.event_type)?;
        m.serialize_field("source", &e.source)?;
        match serde_json::from_str::<&serde_json::value::RawValue>(&e.attributes) {
            Ok(raw) => m.serialize_field("attributes", raw)?,
            Err(_) => m.serialize_field("attributes", &e.attributes)?,
        }
        m.end()
    }
}

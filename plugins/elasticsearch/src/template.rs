//! The index template installed by `manage_template = true`: `labels` and
//! `attributes` are `flattened` (one field each however many keys they hold),
//! `@timestamp` a date, `value` a double, the rest keywords.

use serde_json::{json, Value};

use crate::settings::Mode;

/// The mappings every Vigil index or data stream gets.
pub(crate) fn mappings() -> Value {
    json!({
        "dynamic": false,
        "properties": {
            "@timestamp": {"type": "date"},
            "name": {"type": "keyword"},
            "type": {"type": "keyword"},
            "value": {"type": "double"},
            "labels": {"type": "flattened"},
            "component": {"type": "keyword"},
            "seq": {"type": "long"},
            "id": {"type": "keyword"},
            "session": {"type": "keyword"},
            "workflow": {"type": "keyword"},
            "task": {"type": "keyword"},
            "backend": {"type": "keyword"},
            "source": {"type": "keyword"},
            "attributes": {"type": "flattened"}
        }
    })
}

/// `(path, body)` of each request to send, in order.
pub(crate) fn requests(mode: &Mode) -> Vec<(String, Value)> {
    match mode {
        Mode::Indices { prefix } => vec![(
            format!("/_index_template/{prefix}"),
            json!({
                "index_patterns": [format!("{prefix}-metrics-*"), format!("{prefix}-events-*")],
                "priority": 200,
                "template": {"mappings": mappings()},
                "_meta": {"managed_by": "vigil"}
            }),
        )],
        Mode::DataStream { .. } => vec![
            (
                "/_component_template/vigil-mappings".to_string(),
                json!({"template": {"mappings": mappings()}, "_meta": {"managed_by": "vigil"}}),
            ),
            (
                "/_index_template/vigil-data-streams".to_string(),
                json!({
                    "index_patterns": ["metrics-vigil-*", "logs-vigil-*"],
                    "data_stream": {},
                    "priority": 200,
                    "composed_of": ["vigil-mappings"],
                    "_meta": {"managed_by": "vigil"}
                }),
            ),
        ],
    }
}

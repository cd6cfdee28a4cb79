//! Debug-field provider for DIM (the DALiuGE Island Manager) executions.
//!
//! Fields, for an execution of backend `dim`:
//!
//! - `dim_session_status_url` = `{base}/api/sessions/{session}/status`
//! - `dim_graph_status_url` = `{base}/api/sessions/{session}/graph/status`
//!
//! `{session}` is the execution's scheduler id `session_id`
//! (attribute `scheduler.session_id`), percent-encoded as one URL path
//! segment. `{base}` is the profile's manager URL (`profile.manager_url`)
//! without trailing slashes when the profile has one; otherwise
//! `http(s)://host:port` from `profile.host`, `profile.port` (default 8001)
//! and `profile.https` (`true` for https), the port left out when it is the
//! scheme's default (80 for http, 443 for https) and an IPv6 host put in
//! brackets. Without a session id, or without a manager URL and a host,
//! both fields are left out.

use vigil_plugin::debug_fields::{Config, DebugFields, Execution};

/// The DIM manager's default port.
pub const DEFAULT_PORT: u16 = 8001;

struct Dim;

fn attribute<'a>(execution: &'a Execution, key: &str) -> Option<&'a str> {
    execution
        .attributes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The manager's base URL, from the profile attributes; `None` when it has
/// neither a manager URL nor a host, or a port that is not a port.
fn base_url(execution: &Execution) -> Option<String> {
    if let Some(url) = attribute(execution, "profile.manager_url") {
        let trimmed = url.trim_end_matches('/');
        return (!trimmed.is_empty()).then(|| trimmed.to_string());
    }
    let host = attribute(execution, "profile.host")?;
    let https = attribute(execution, "profile.https") == Some("true");
    let port = match attribute(execution, "profile.port") {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
        None => DEFAULT_PORT,
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let (scheme, default) = if https { ("https", 443) } else { ("http", 80) };
    Some(if port == default {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:{port}")
    })
}

/// The DIM fields of one execution.
fn dim_fields(execution: &Execution) -> Vec<(String, String)> {
    let (Some(base), Some(session)) = (
        base_url(execution),
        attribute(execution, "scheduler.session_id"),
    ) else {
        return Vec::new();
    };
    let session = encode_segment(session);
    vec![
        (
            "dim_session_status_url".to_string(),
            format!("{base}/api/sessions/{session}/status"),
        ),
        (
            "dim_graph_status_url".to_string(),
            format!("{base}/api/sessions/{session}/graph/status"),
        ),
    ]
}

impl DebugFields for Dim {
    fn configure(_config: &Config) -> Result<Self, String> {
        Ok(Dim)
    }

    fn backends() -> Vec<String> {
        vec!["dim".to_string()]
    }

    fn fields(&mut self, execution: &Execution) -> Result<Vec<(String, String)>, String> {
        Ok(dim_fields(execution))
    }
}

vigil_plugin::export_debug_fields!(Dim);

#[cfg(test)]
mod tests {
    //! The table in `tests/cases.json`, run natively through the SDK's
    //! trait (the host runs the same table through the built component:
    //! `tests/tests/debug_fields.rs`).

    use super::*;
    use serde_json::Value;

    /// The attributes the host passes for a profile and scheduler ids
    /// (`scheduler.<key>`, `profile.<key>`, numbers in decimal).
    pub fn execution(case: &Value) -> Execution {
        let mut attributes = Vec::new();
        for (prefix, key) in [("scheduler.", "scheduler_ids"), ("profile.", "profile")] {
            if let Some(obj) = case[key].as_object() {
                for (k, v) in obj {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    attributes.push((format!("{prefix}{k}"), v));
                }
            }
        }
        Execution {
            id: case["name"].as_str().unwrap_or("e").to_string(),
            backend: "dim".into(),
            status: "running".into(),
            attributes,
        }
    }

    #[test]
    fn every_case_of_the_table_gives_exactly_its_fields() {
        let cases: Value = serde_json::from_str(include_str!("../tests/cases.json")).unwrap();
        let cases = cases.as_array().unwrap();
        assert!(cases.len() >= 10);
        for case in cases {
            let got = Dim.fields(&execution(case)).unwrap();
            let want: Vec<(String, String)> = case["expect"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let mut got_sorted = got.clone();
            got_sorted.sort();
            assert_eq!(got_sorted, want, "case {}", case["name"]);
        }
    }

    #[test]
    fn a_port_that_is_not_a_port_leaves_the_fields_out() {
        for port in ["0", "65536", "80a", "-1"] {
            let e = Execution {
                id: "e".into(),
                backend: "dim".into(),
                status: "running".into(),
                attributes: vec![
                    ("scheduler.session_id".into(), "s".into()),
                    ("profile.host".into(), "h".into()),
                    ("profile.port".into(), port.into()),
                ],
            };
            assert!(dim_fields(&e).is_empty(), "port {port}");
        }
        assert_eq!(Dim::backends(), vec!["dim"]);
    }
}

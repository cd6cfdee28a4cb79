//! The backend profile of an execution and how an execution is handed to
//! debug-field providers.
//!
//! Profiles are JSON objects. For `dim` and `slurm` the keys are fixed and
//! typed (anything else is refused, so a typo never silently drops a field):
//!
//! | backend | key | type |
//! |---|---|---|
//! | `dim` | `manager_url` | string, an `http://` or `https://` URL |
//! | `dim` | `host` | string (a name, an IPv4 address, or an IPv6 address with or without brackets) |
//! | `dim` | `port` | integer 1–65535 (providers default to 8001) |
//! | `dim` | `https` | boolean |
//! | `slurm` | `login_node`, `remote_user`, `session_dir`, `job_id` | strings |
//!
//! Other backends take any object of strings, numbers and booleans.
//!
//! A provider's `fields(execution-record)` gets `id`, `backend`, `status`
//! (the state) and these `attributes` (the SDK documents the same keys):
//! `project_module`, `source_id`, `scheduler.<key>` for each scheduler id
//! (`scheduler.session_id`, `scheduler.job_id`), `profile.<key>` for each
//! profile key (numbers in decimal, booleans `true`/`false`) and
//! `attr.<key>` for each free attribute (strings as they are, other JSON
//! values as JSON text). Absent values are left out, never sent empty.

use serde_json::{Map, Value};

use crate::metrics::model::ItemError;
use crate::store::ExecutionRow;

/// Longest string accepted in a profile, scheduler id or attribute.
pub const MAX_VALUE_BYTES: usize = 2048;
/// Most keys in a profile, scheduler ids or attributes object.
pub const MAX_KEYS: usize = 64;

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Url,
    Host,
    Port,
    Flag,
}

fn known_keys(backend: &str) -> Option<&'static [(&'static str, Kind)]> {
    match backend {
        "dim" => Some(&[
            ("manager_url", Kind::Url),
            ("host", Kind::Host),
            ("port", Kind::Port),
            ("https", Kind::Flag),
        ]),
        "slurm" => Some(&[
            ("login_node", Kind::Host),
            ("remote_user", Kind::Text),
            ("session_dir", Kind::Text),
            ("job_id", Kind::Text),
        ]),
        _ => None,
    }
}

/// Checks a string from outside: not empty, bounded, no control characters.
pub fn check_text(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > MAX_VALUE_BYTES {
        return Err(format!("longer than {MAX_VALUE_BYTES} bytes"));
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// Checks an object key: 1 to 128 bytes of letters, digits, `_`, `-`, `.`.
pub fn check_key(k: &str) -> Result<(), String> {
    if k.is_empty() || k.len() > 128 {
        return Err("keys are 1 to 128 bytes".into());
    }
    if !k
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(format!(
            "key `{}` may hold only letters, digits, `_`, `-` and `.`",
            k.escape_debug()
        ));
    }
    Ok(())
}

fn check_value(kind: Kind, v: &Value) -> Result<(), String> {
    match (kind, v) {
        (Kind::Port, Value::Number(n)) => match n.as_u64() {
            Some(1..=65535) => Ok(()),
            _ => Err("a port is a whole number from 1 to 65535".into()),
        },
        (Kind::Port, _) => Err("a port is a whole number from 1 to 65535".into()),
        (Kind::Flag, Value::Bool(_)) => Ok(()),
        (Kind::Flag, _) => Err("expected true or false".into()),
        (Kind::Url, Value::String(s)) => {
            check_text(s)?;
            let rest = s
                .strip_prefix("http://")
                .or_else(|| s.strip_prefix("https://"))
                .ok_or("a manager URL starts with http:// or https://")?;
            if rest.is_empty() || rest.starts_with('/') {
                return Err("a manager URL names a host".into());
            }
            if s.contains(char::is_whitespace) {
                return Err("a URL must not contain spaces".into());
            }
            Ok(())
        }
        (Kind::Host, Value::String(s)) => {
            check_text(s)?;
            if s.contains(|c: char| c.is_whitespace() || matches!(c, '/' | '?' | '#' | '@')) {
                return Err("a host name must not contain spaces, `/`, `?`, `#` or `@`".into());
            }
            Ok(())
        }
        (Kind::Text, Value::String(s)) => check_text(s),
        (_, _) => Err("expected a string".into()),
    }
}

/// Validates a whole profile for `backend` (as given at creation, or after
/// an update was merged). Every problem becomes one error entry.
pub fn check_profile(backend: &str, profile: &Map<String, Value>, errors: &mut Vec<ItemError>) {
    let err = |field: String, reason: String| ItemError {
        index: None,
        field,
        reason,
    };
    if profile.len() > MAX_KEYS {
        errors.push(err("profile".into(), format!("more than {MAX_KEYS} keys")));
        return;
    }
    match known_keys(backend) {
        Some(keys) => {
            for (k, v) in profile {
                match keys.iter().find(|(name, _)| name == k) {
                    Some((_, kind)) => {
                        if let Err(e) = check_value(*kind, v) {
                            errors.push(err(format!("profile.{k}"), e));
                        }
                    }
                    None => errors.push(err(
                        format!("profile.{}", k.escape_debug()),
                        format!(
                            "not a `{backend}` profile key; use {}",
                            keys.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                        ),
                    )),
                }
            }
        }
        None => {
            for (k, v) in profile {
                let r = check_key(k).and_then(|()| match v {
                    Value::String(s) => check_text(s),
                    Value::Number(_) | Value::Bool(_) => Ok(()),
                    _ => Err("profile values are strings, numbers or booleans".into()),
                });
                if let Err(e) = r {
                    errors.push(err(format!("profile.{}", k.escape_debug()), e));
                }
            }
        }
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn object(json: &str) -> Map<String, Value> {
    match serde_json::from_str(json) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// The `attributes` a debug-field provider receives for `row` (see the
/// module documentation for the keys).
pub fn provider_attributes(row: &ExecutionRow) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(m) = &row.project_module {
        out.push(("project_module".to_string(), m.clone()));
    }
    if let Some(s) = &row.source_id {
        out.push(("source_id".to_string(), s.clone()));
    }
    for (prefix, json) in [
        ("scheduler.", &row.scheduler_ids),
        ("profile.", &row.profile),
        ("attr.", &row.attributes),
    ] {
        for (k, v) in object(json) {
            if v.is_null() {
                continue;
            }
            out.push((format!("{prefix}{k}"), plain(&v)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(backend: &str, profile: Value) -> Vec<String> {
        let mut e = Vec::new();
        check_profile(backend, profile.as_object().unwrap(), &mut e);
        let mut fields: Vec<String> = e.into_iter().map(|e| e.field).collect();
        fields.sort();
        fields
    }

    #[test]
    fn dim_and_slurm_profiles_are_typed_and_closed() {
        assert!(errors(
            "dim",
            json!({"manager_url": "https://dim.example:8443/", "host": "::1", "port": 8001, "https": true})
        )
        .is_empty());
        assert_eq!(
            errors(
                "dim",
                json!({"manager_url": "ftp://x", "port": 0, "https": "yes", "hots": "x"})
            ),
            vec![
                "profile.hots",
                "profile.https",
                "profile.manager_url",
                "profile.port"
            ]
        );
        assert_eq!(
            errors(
                "slurm",
                json!({"login_node": "a b", "remote_user": "u\u{0}", "session_dir": "/s", "job_id": 7})
            ),
            vec![
                "profile.job_id",
                "profile.login_node",
                "profile.remote_user"
            ]
        );
        assert!(errors("k8s", json!({"namespace": "ml", "gpus": 2, "spot": false})).is_empty());
        assert_eq!(
            errors("k8s", json!({"nested": {"a": 1}})),
            vec!["profile.nested"]
        );
    }

    #[test]
    fn providers_get_documented_keys_and_no_empty_values() {
        let row = ExecutionRow {
            n: 1,
            id: "e1".into(),
            backend: "dim".into(),
            project_module: Some("proj.mod".into()),
            source_id: None,
            state: "running".into(),
            scheduler_ids: r#"{"session_id":"s 1"}"#.into(),
            profile: r#"{"host":"h","port":8001,"https":false}"#.into(),
            attributes: r#"{"note":"x","n":3,"gone":null}"#.into(),
            state_times: "{}".into(),
            run_record: "{}".into(),
            created_ms: 0,
            updated_ms: 0,
            version: 1,
        };
        assert_eq!(
            provider_attributes(&row),
            vec![
                ("project_module".to_string(), "proj.mod".to_string()),
                ("scheduler.session_id".into(), "s 1".into()),
                // In the order the execution gave them.
                ("profile.host".into(), "h".into()),
                ("profile.port".into(), "8001".into()),
                ("profile.https".into(), "false".into()),
                ("attr.note".into(), "x".into()),
                ("attr.n".into(), "3".into()),
            ]
        );
    }
}

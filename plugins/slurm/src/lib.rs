//! Debug-field provider for Slurm executions.
//!
//! Fields, for an execution of backend `slurm`, each only when its source is
//! there (never empty):
//!
//! - `slurm_session_dir`: the profile's remote session directory
//!   (`profile.session_dir`); else the part after `|` of a scheduler job id
//!   of the form `<session_id>:<job_id>|<session_dir>`, taken from
//!   `scheduler.job_id`, else from `profile.job_id`.
//! - `slurm_login_node`: `profile.login_node`.
//! - `slurm_remote_user`: `profile.remote_user`.

use vigil_plugin::debug_fields::{Config, DebugFields, Execution};

struct Slurm;

fn attribute<'a>(execution: &'a Execution, key: &str) -> Option<&'a str> {
    execution
        .attributes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.trim().is_empty())
}

/// The session dir of a job id `<session_id>:<job_id>|<session_dir>`:
/// both ids non-empty, the dir non-empty; anything else is not that form.
fn session_dir_of(job_id: &str) -> Option<&str> {
    let (ids, dir) = job_id.split_once('|')?;
    let (session, job) = ids.split_once(':')?;
    (!session.is_empty() && !job.is_empty() && !dir.trim().is_empty()).then_some(dir)
}

fn slurm_fields(execution: &Execution) -> Vec<(String, String)> {
    let session_dir = attribute(execution, "profile.session_dir").or_else(|| {
        ["scheduler.job_id", "profile.job_id"]
            .into_iter()
            .filter_map(|k| attribute(execution, k))
            .find_map(session_dir_of)
    });
    [
        ("slurm_session_dir", session_dir),
        (
            "slurm_login_node",
            attribute(execution, "profile.login_node"),
        ),
        (
            "slurm_remote_user",
            attribute(execution, "profile.remote_user"),
        ),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|v| (name.to_string(), v.to_string())))
    .collect()
}

impl DebugFields for Slurm {
    fn configure(_config: &Config) -> Result<Self, String> {
        Ok(Slurm)
    }

    fn backends() -> Vec<String> {
        vec!["slurm".to_string()]
    }

    fn fields(&mut self, execution: &Execution) -> Result<Vec<(String, String)>, String> {
        Ok(slurm_fields(execution))
    }
}

vigil_plugin::export_debug_fields!(Slurm);

#[cfg(test)]
mod tests {
    //! The table in `tests/cases.json`, run natively through the SDK's
    //! trait (the host runs the same table through the built component:
    //! `tests/tests/debug_fields.rs`).

    use super::*;
    use serde_json::Value;

    fn execution(case: &Value) -> Execution {
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
            id: "e".into(),
            backend: "slurm".into(),
            status: "running".into(),
            attributes,
        }
    }

    #[test]
    fn every_case_of_the_table_gives_exactly_its_fields() {
        let cases: Value = serde_json::from_str(include_str!("../tests/cases.json")).unwrap();
        let cases = cases.as_array().unwrap();
        assert!(cases.len() >= 8);
        for case in cases {
            let mut got = Slurm.fields(&execution(case)).unwrap();
            got.sort();
            let want: Vec<(String, String)> = case["expect"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            assert_eq!(got, want, "case {}", case["name"]);
        }
        assert_eq!(Slurm::backends(), vec!["slurm"]);
    }

    #[test]
    fn only_the_documented_job_id_form_yields_a_session_dir() {
        for (id, dir) in [
            ("s1:42|/scratch/s1", Some("/scratch/s1")),
            ("s1:42|dir|with|bars", Some("dir|with|bars")),
            (":42|/d", None),
            ("s1:|/d", None),
            ("s1:42|", None),
            ("s1-42|/d", None),
            ("42", None),
        ] {
            assert_eq!(session_dir_of(id), dir, "{id}");
        }
    }
}

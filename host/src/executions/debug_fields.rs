//! Debug fields from debug-field provider plugins, for
//! `GET /api/v2/executions/{id}`.
//!
//! Every loaded provider whose `backends()` names the execution's backend
//! (case-insensitively) is asked for `fields(execution)`, all of them
//! concurrently, through [`Plugin::fields`] (supervised and sandboxed like
//! every plugin call). The answer waits for them at most the budget
//! (`--debug-fields-budget`, 250 ms by default) from the start of the
//! request, all providers together. A provider that returns an error,
//! traps, is quarantined, runs past the budget or returns fields that break
//! the rules below leaves all of its fields out and adds a
//! `{"plugin", "reason"}` entry to `debug_errors`; the answer itself never
//! fails because of a provider.
//!
//! Rules for the fields a provider returns: at most [`MAX_FIELDS`]; names of
//! 1 to 64 bytes, a lower-case letter then lower-case letters, digits or `_`;
//! values of at most [`MAX_VALUE_BYTES`] bytes without control characters;
//! no name twice. When two providers give the same name, the first by plugin
//! name keeps it and the other gets a `debug_errors` entry.
//!
//! A call that is still running when the budget ends is not abandoned
//! mid-flight (a wasm call is never dropped half-way): it runs on in the
//! background until its own call deadline (`call_timeout_ms`) and its
//! answer is discarded. At most [`MAX_PENDING`] such calls per provider;
//! past that the provider is reported `busy` without being called.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::profile::provider_attributes;
use crate::plugins::bindings::types;
use crate::plugins::{Plugin, PluginKind, PluginRegistry};
use crate::store::ExecutionRow;

/// Most fields one provider may return.
pub const MAX_FIELDS: usize = 64;
/// Longest field value.
pub const MAX_VALUE_BYTES: usize = 4096;
/// Calls per provider still running from earlier requests, at most.
pub const MAX_PENDING: usize = 8;
/// Longest reason kept in a `debug_errors` entry.
const MAX_REASON_BYTES: usize = 1024;

/// One provider that did not contribute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DebugError {
    pub plugin: String,
    pub reason: String,
}

/// What the providers added.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DebugOutcome {
    pub fields: BTreeMap<String, String>,
    pub errors: Vec<DebugError>,
}

#[derive(Clone)]
struct KnownBackends {
    sha256: String,
    loaded_at_ms: i64,
    backends: Arc<[String]>,
}

/// The providers' calls for one host: a cache of what each provider's
/// `backends()` said (per loaded version) and the count of its calls still
/// running.
#[derive(Default)]
pub struct DebugFieldProviders {
    budget: Duration,
    known: parking_lot::Mutex<HashMap<String, KnownBackends>>,
    pending: Arc<parking_lot::Mutex<HashMap<String, usize>>>,
}

impl std::fmt::Debug for DebugFieldProviders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugFieldProviders")
            .field("budget", &self.budget)
            .finish()
    }
}

/// Decrements a provider's pending count when its call ends.
struct PendingGuard {
    pending: Arc<parking_lot::Mutex<HashMap<String, usize>>>,
    name: String,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut p = self.pending.lock();
        if let Some(n) = p.get_mut(&self.name) {
            *n = n.saturating_sub(1);
        }
    }
}

fn clip(mut s: String) -> String {
    s = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

fn check_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Checks what a provider returned; the first problems found, or the fields.
pub fn check_fields(fields: Vec<types::DebugField>) -> Result<Vec<(String, String)>, String> {
    if fields.len() > MAX_FIELDS {
        return Err(format!(
            "returned {} fields; at most {MAX_FIELDS}",
            fields.len()
        ));
    }
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for f in &fields {
        let shown: String = f
            .name
            .chars()
            .take(64)
            .collect::<String>()
            .escape_debug()
            .to_string();
        if !check_name(&f.name) {
            problems.push(format!(
                "invalid field name `{shown}` (a lower-case letter, then lower-case letters, digits or `_`, at most 64)"
            ));
        } else if !seen.insert(f.name.as_str()) {
            problems.push(format!("field `{shown}` given twice"));
        }
        if f.value.len() > MAX_VALUE_BYTES {
            problems.push(format!(
                "field `{shown}` is {} bytes; at most {MAX_VALUE_BYTES}",
                f.value.len()
            ));
        } else if f.value.chars().any(char::is_control) {
            problems.push(format!("field `{shown}` holds control characters"));
        }
        if problems.len() >= 3 {
            break;
        }
    }
    if problems.is_empty() {
        Ok(fields.into_iter().map(|f| (f.name, f.value)).collect())
    } else {
        Err(format!("returned invalid fields: {}", problems.join("; ")))
    }
}

enum Answer {
    NotServed,
    Fields(Vec<(String, String)>),
    Failed(String),
}

impl DebugFieldProviders {
    pub fn new(budget: Duration) -> DebugFieldProviders {
        DebugFieldProviders {
            budget,
            ..DebugFieldProviders::default()
        }
    }

    /// The budget for all providers of one request.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    fn cached(&self, p: &Plugin) -> Option<Arc<[String]>> {
        self.known
            .lock()
            .get(&p.name)
            .filter(|k| k.sha256 == p.sha256 && k.loaded_at_ms == p.loaded_at_ms)
            .map(|k| k.backends.clone())
    }

    /// Asks every provider serving `row.backend`, within the budget.
    pub async fn collect(
        self: &Arc<Self>,
        plugins: &PluginRegistry,
        row: &ExecutionRow,
    ) -> DebugOutcome {
        let deadline = Instant::now() + self.budget;
        let mut providers: Vec<Arc<Plugin>> = plugins
            .running()
            .into_iter()
            .filter(|p| p.kind == PluginKind::DebugFields)
            .collect();
        providers.sort_by(|a, b| a.name.cmp(&b.name));
        let record = Arc::new(types::ExecutionRecord {
            id: row.id.clone(),
            backend: row.backend.clone(),
            status: row.state.clone(),
            attributes: provider_attributes(row),
        });
        let mut calls = Vec::with_capacity(providers.len());
        let mut outcome = DebugOutcome::default();
        for p in providers {
            let known = self.cached(&p);
            if let Some(b) = &known {
                if !b.iter().any(|b| b.eq_ignore_ascii_case(&row.backend)) {
                    continue;
                }
            }
            {
                let mut pending = self.pending.lock();
                let n = pending.entry(p.name.clone()).or_insert(0);
                if *n >= MAX_PENDING {
                    outcome.errors.push(DebugError {
                        plugin: p.name.clone(),
                        reason: format!(
                            "busy: {MAX_PENDING} earlier calls are still running past their budget"
                        ),
                    });
                    continue;
                }
                *n += 1;
            }
            let guard = PendingGuard {
                pending: self.pending.clone(),
                name: p.name.clone(),
            };
            let this = self.clone();
            let record = record.clone();
            let name = p.name.clone();
            let task = tokio::spawn(async move {
                let _guard = guard;
                let backends = match known {
                    Some(b) => b,
                    None => match p.backends().await {
                        Ok(b) => {
                            let b: Arc<[String]> = b.into_iter().take(64).collect();
                            this.known.lock().insert(
                                p.name.clone(),
                                KnownBackends {
                                    sha256: p.sha256.clone(),
                                    loaded_at_ms: p.loaded_at_ms,
                                    backends: b.clone(),
                                },
                            );
                            b
                        }
                        Err(e) => {
                            return Answer::Failed(format!(
                                "could not tell which backends it serves: {e}"
                            ))
                        }
                    },
                };
                if !backends
                    .iter()
                    .any(|b| b.eq_ignore_ascii_case(&record.backend))
                {
                    return Answer::NotServed;
                }
                match p.fields(&record).await {
                    Ok(Ok(fields)) => match check_fields(fields) {
                        Ok(f) => Answer::Fields(f),
                        Err(e) => Answer::Failed(e),
                    },
                    Ok(Err(e)) => Answer::Failed(format!("fields() returned an error: {e}")),
                    Err(e) => Answer::Failed(e.to_string()),
                }
            });
            calls.push((name, task));
        }
        let budget_ms = self.budget.as_millis();
        for (name, task) in calls {
            let answer = match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(a)) => a,
                Ok(Err(e)) => Answer::Failed(format!("the call ended abnormally: {e}")),
                Err(_) => Answer::Failed(format!(
                    "no answer within the {budget_ms} ms debug-fields budget"
                )),
            };
            match answer {
                Answer::NotServed => {}
                Answer::Failed(reason) => outcome.errors.push(DebugError {
                    plugin: name,
                    reason: clip(reason),
                }),
                Answer::Fields(fields) => {
                    for (k, v) in fields {
                        match outcome.fields.entry(k) {
                            std::collections::btree_map::Entry::Occupied(e) => {
                                outcome.errors.push(DebugError {
                                    plugin: name.clone(),
                                    reason: format!(
                                        "field `{}` was already given by another provider; kept the first",
                                        e.key()
                                    ),
                                });
                            }
                            std::collections::btree_map::Entry::Vacant(e) => {
                                e.insert(v);
                            }
                        }
                    }
                }
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, value: &str) -> types::DebugField {
        types::DebugField {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn garbage_fields_are_refused_with_the_reason() {
        assert!(check_fields(vec![f("dim_session_status_url", "http://h:8001/x")]).is_ok());
        for (fields, needle) in [
            (vec![f("Bad Name", "x")], "invalid field name"),
            (vec![f("", "x")], "invalid field name"),
            (vec![f("a", "x"), f("a", "y")], "given twice"),
            (vec![f("a", "line\nbreak")], "control characters"),
            (vec![f("a", "\u{0}")], "control characters"),
            (
                vec![f("a", &"x".repeat(MAX_VALUE_BYTES + 1))],
                "bytes; at most",
            ),
            (
                (0..=MAX_FIELDS).map(|i| f(&format!("f{i}"), "v")).collect(),
                "fields; at most",
            ),
        ] {
            let e = check_fields(fields).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn reasons_are_clipped_and_printable() {
        let r = clip(format!("a\nb{}", "x".repeat(5000)));
        assert!(r.starts_with("a b"));
        assert!(r.len() <= MAX_REASON_BYTES + 3);
    }
}

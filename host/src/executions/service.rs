//! Creating and changing executions. Every change reads the stored row,
//! decides on it (the state machine, merge patches, the run record's bound)
//! and writes it back as a compare-and-swap on its version, retried a few
//! times when another writer got there first; a state change carries its
//! `vigil.ExecutionStateChanged` event into the same transaction and bumps
//! the [`LogHead`] after the commit.

use serde_json::{json, Map, Value};

use super::input::{merge, ExecutionPatch, NewExecution};
use super::profile::check_profile;
use super::{ExecutionError, ExecutionState, STATE_CHANGED_EVENT};
use crate::bus::LogHead;
use crate::events::NewEvent;
use crate::metrics::model::format_ms;
use crate::store::{ExecutionRow, ExecutionUpdate, Store};

/// The run record keeps at most this many bytes of entries…
pub const MAX_RECORD_BYTES: usize = 256 * 1024;
/// …and at most this many entries: the first one (usually the submit) and
/// the newest; older ones are dropped and counted in `dropped`.
pub const MAX_RECORD_ENTRIES: usize = 200;
/// Compare-and-swap attempts before giving up with `409`.
const CAS_ATTEMPTS: usize = 8;

fn object(json: &str) -> Map<String, Value> {
    match serde_json::from_str(json) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

fn state_of(row: &ExecutionRow) -> ExecutionState {
    ExecutionState::parse(&row.state).unwrap_or(ExecutionState::Pending)
}

fn state_event(
    row: &ExecutionRow,
    from: Option<ExecutionState>,
    to: ExecutionState,
    now_ms: i64,
) -> NewEvent {
    let mut attrs = Map::new();
    attrs.insert("execution_id".into(), row.id.clone().into());
    if let Some(s) = &row.source_id {
        attrs.insert("source_id".into(), s.clone().into());
    }
    if let Some(p) = &row.project_module {
        attrs.insert("project_module".into(), p.clone().into());
    }
    attrs.insert(
        "from_state".into(),
        from.map_or(Value::Null, |f| f.as_str().into()),
    );
    attrs.insert("to_state".into(), to.as_str().into());
    let ids = object(&row.scheduler_ids);
    if !ids.is_empty() {
        attrs.insert("scheduler_ids".into(), Value::Object(ids));
    }
    let event_id = uuid::Uuid::new_v4().simple().to_string();
    let event_ts = now_ms as f64 / 1000.0;
    let mut body = Map::new();
    body.insert("event_id".into(), event_id.clone().into());
    body.insert("event_type".into(), STATE_CHANGED_EVENT.into());
    body.insert("event_time".into(), event_ts.into());
    body.insert("backend".into(), row.backend.clone().into());
    body.extend(attrs);
    NewEvent {
        event_id,
        event_type: STATE_CHANGED_EVENT.to_string(),
        event_ts,
        session_id: None,
        workflow_id: None,
        task_id: None,
        backend: Some(row.backend.clone()),
        execution_id: Some(row.id.clone()),
        source_id: row.source_id.clone(),
        project_module: row.project_module.clone(),
        body: Value::Object(body).to_string(),
    }
}

/// Creates an execution (state `pending` unless the body says otherwise)
/// and logs its first state.
pub async fn create(
    store: &dyn Store,
    head: &LogHead,
    new: NewExecution,
    now_ms: i64,
) -> Result<ExecutionRow, ExecutionError> {
    let id = new.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut times = Map::new();
    times.insert(new.state.as_str().into(), format_ms(now_ms).into());
    let row = ExecutionRow {
        n: 0,
        id: id.clone(),
        backend: new.backend,
        project_module: new.project_module,
        source_id: new.source_id,
        state: new.state.as_str().to_string(),
        scheduler_ids: Value::Object(new.scheduler_ids).to_string(),
        profile: Value::Object(new.profile).to_string(),
        attributes: Value::Object(new.attributes).to_string(),
        state_times: Value::Object(times).to_string(),
        run_record: json!({"entries": [], "dropped": 0, "bytes": 0}).to_string(),
        created_ms: now_ms,
        updated_ms: now_ms,
        version: 1,
    };
    let event = state_event(&row, None, new.state, now_ms);
    match store.insert_execution(&row, &event).await? {
        Some(seq) => {
            head.bump(seq);
            Ok(store.get_execution(&id).await?.unwrap_or(row))
        }
        None => Err(ExecutionError::Exists(id)),
    }
}

/// Reads, changes and writes back one execution; `change` returns the
/// state it moves to (for the event) or `None` when the state stays.
async fn compare_and_swap(
    store: &dyn Store,
    head: &LogHead,
    id: &str,
    now_ms: i64,
    mut change: impl FnMut(
        &mut ExecutionRow,
    ) -> Result<Option<(ExecutionState, ExecutionState)>, ExecutionError>,
) -> Result<ExecutionRow, ExecutionError> {
    for _ in 0..CAS_ATTEMPTS {
        let Some(current) = store.get_execution(id).await? else {
            return Err(ExecutionError::NotFound(id.to_string()));
        };
        let mut row = current.clone();
        let moved = change(&mut row)?;
        if row == current {
            return Ok(current);
        }
        row.updated_ms = now_ms;
        let event = moved.map(|(from, to)| state_event(&row, Some(from), to, now_ms));
        match store
            .update_execution(&row, current.version, event.as_ref())
            .await?
        {
            ExecutionUpdate::Updated { event_seq } => {
                if let Some(seq) = event_seq {
                    head.bump(seq);
                }
                row.version = current.version + 1;
                return Ok(row);
            }
            ExecutionUpdate::Stale => continue,
            ExecutionUpdate::NotFound => return Err(ExecutionError::NotFound(id.to_string())),
        }
    }
    Err(ExecutionError::Contended(id.to_string()))
}

/// Applies an update: a state change (checked against the state machine;
/// the same state again is a no-op) and merge patches.
pub async fn update(
    store: &dyn Store,
    head: &LogHead,
    id: &str,
    patch: &ExecutionPatch,
    now_ms: i64,
) -> Result<ExecutionRow, ExecutionError> {
    compare_and_swap(store, head, id, now_ms, |row| {
        let mut moved = None;
        if let Some(next) = patch.state {
            let from = state_of(row);
            if next != from {
                if !from.can_become(next) {
                    return Err(ExecutionError::transition(&row.id, from, next));
                }
                row.state = next.as_str().to_string();
                let mut times = object(&row.state_times);
                times.insert(next.as_str().into(), format_ms(now_ms).into());
                row.state_times = Value::Object(times).to_string();
                moved = Some((from, next));
            }
        }
        if let Some(p) = &patch.scheduler_ids {
            let mut ids = object(&row.scheduler_ids);
            merge(&mut ids, p);
            row.scheduler_ids = Value::Object(ids).to_string();
        }
        if let Some(p) = &patch.profile {
            let mut profile = object(&row.profile);
            merge(&mut profile, p);
            let mut errors = Vec::new();
            check_profile(&row.backend, &profile, &mut errors);
            if !errors.is_empty() {
                return Err(ExecutionError::Invalid(errors));
            }
            row.profile = Value::Object(profile).to_string();
        }
        if let Some(p) = &patch.attributes {
            let mut attrs = object(&row.attributes);
            merge(&mut attrs, p);
            let merged = Value::Object(attrs).to_string();
            if merged.len() > super::input::MAX_ATTRIBUTES_BYTES {
                return Err(ExecutionError::TooLarge(format!(
                    "the merged attributes would be {} bytes; at most {}",
                    merged.len(),
                    super::input::MAX_ATTRIBUTES_BYTES
                )));
            }
            row.attributes = merged;
        }
        Ok(moved)
    })
    .await
}

/// Appends entries to the run record, keeping it within
/// [`MAX_RECORD_BYTES`] and [`MAX_RECORD_ENTRIES`]: the first entry stays,
/// the oldest of the others go first, and `dropped` counts them.
pub fn bounded_record(record: &str, new: &[Value]) -> String {
    let mut rec = object(record);
    let mut entries: Vec<Value> = match rec.remove("entries") {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    let mut dropped = rec.get("dropped").and_then(Value::as_u64).unwrap_or(0);
    entries.extend(new.iter().cloned());
    let sizes: Vec<usize> = entries.iter().map(|e| e.to_string().len() + 1).collect();
    let mut bytes: usize = sizes.iter().sum();
    let mut keep = vec![true; entries.len()];
    let mut count = entries.len();
    let mut next = 1;
    while (bytes > MAX_RECORD_BYTES || count > MAX_RECORD_ENTRIES) && next < entries.len() {
        keep[next] = false;
        bytes -= sizes[next];
        count -= 1;
        dropped += 1;
        next += 1;
    }
    let entries: Vec<Value> = entries
        .into_iter()
        .zip(keep)
        .filter_map(|(e, k)| k.then_some(e))
        .collect();
    json!({"entries": entries, "dropped": dropped, "bytes": bytes}).to_string()
}

/// Appends run-record entries a worker reports.
pub async fn append_run_record(
    store: &dyn Store,
    head: &LogHead,
    id: &str,
    entries: &[Value],
    now_ms: i64,
) -> Result<ExecutionRow, ExecutionError> {
    compare_and_swap(store, head, id, now_ms, |row| {
        row.run_record = bounded_record(&row.run_record, entries);
        Ok(None)
    })
    .await
}

/// The API shape of an execution (without debug fields).
pub fn to_json(row: &ExecutionRow) -> Value {
    let times: Map<String, Value> = object(&row.state_times);
    json!({
        "id": row.id,
        "backend": row.backend,
        "project_module": row.project_module,
        "source_id": row.source_id,
        "state": row.state,
        "scheduler_ids": Value::Object(object(&row.scheduler_ids)),
        "profile": Value::Object(object(&row.profile)),
        "attributes": Value::Object(object(&row.attributes)),
        "state_times": Value::Object(times),
        "run_record": Value::Object(object(&row.run_record)),
        "created_at": format_ms(row.created_ms),
        "updated_at": format_ms(row.updated_ms),
        "version": row.version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_record_keeps_its_first_entry_and_the_newest_within_bounds() {
        let entry = |i: usize| json!({"phase": "poll", "attempt": i, "answer": "x".repeat(1000)});
        let mut record = json!({"entries": [], "dropped": 0, "bytes": 0}).to_string();
        for i in 0..400 {
            record = bounded_record(&record, &[entry(i)]);
        }
        let rec: Value = serde_json::from_str(&record).unwrap();
        let entries = rec["entries"].as_array().unwrap();
        assert!(record.len() <= MAX_RECORD_BYTES + 200, "{}", record.len());
        assert!(entries.len() <= MAX_RECORD_ENTRIES);
        assert_eq!(entries[0]["attempt"], 0, "the first entry stays");
        assert_eq!(entries.last().unwrap()["attempt"], 399, "the newest stays");
        assert_eq!(
            rec["dropped"].as_u64().unwrap() as usize + entries.len(),
            400
        );
        let attempts: Vec<u64> = entries[1..]
            .iter()
            .map(|e| e["attempt"].as_u64().unwrap())
            .collect();
        assert!(
            attempts.windows(2).all(|w| w[1] == w[0] + 1),
            "no holes among the newest"
        );
    }
}

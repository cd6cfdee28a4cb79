//! The runtime registry of components (workers, pools, servers): who is known,
//! when each was last heard from, and whether it is alive or stale. Persisted in
//! the store; this module keeps the in-memory view used on the hot path.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::RwLock;
use serde::Serialize;
use utoipa::ToSchema;

use crate::metrics::model::format_ms;
use crate::store::{Component, Store, StoreError};

/// Known component names and when each was last heard from (ms).
#[derive(Default)]
pub struct ComponentDirectory {
    last_seen: RwLock<HashMap<String, i64>>,
    /// Stable numeric ids (NoETL's `runtime_id`) of the components stored.
    runtime_ids: RwLock<HashMap<String, i64>>,
    /// Each component's type, as the registry holds it.
    types: RwLock<HashMap<String, String>>,
}

/// A component as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ComponentStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub component_type: String,
    pub capabilities: Vec<String>,
    pub capacity: Option<i64>,
    /// RFC 3339.
    pub registered_at: String,
    /// RFC 3339.
    pub last_heartbeat: String,
    /// `alive` or `stale`.
    pub status: &'static str,
}

impl ComponentDirectory {
    /// Loads every registered component from the store.
    pub async fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let known = store.list_components().await?;
        let dir = ComponentDirectory::default();
        for c in &known {
            dir.stored(c);
        }
        Ok(dir)
    }

    /// Records a component as the store answered it (registration, heartbeat).
    pub fn stored(&self, c: &Component) {
        self.seen(&c.name, c.last_heartbeat_ms);
        self.types
            .write()
            .insert(c.name.clone(), c.component_type.clone());
        if c.runtime_id > 0 {
            self.runtime_ids
                .write()
                .insert(c.name.clone(), c.runtime_id);
        }
    }

    /// Records the type a report gave a component the registry did not know
    /// yet (the store keeps the first type too).
    pub fn reported(&self, name: &str, component_type: &str) {
        if !self.types.read().contains_key(name) {
            self.types
                .write()
                .entry(name.to_string())
                .or_insert_with(|| component_type.to_string());
        }
    }

    /// Every known component's type (for the export's `component_type` label).
    pub fn types(&self) -> HashMap<String, String> {
        self.types.read().clone()
    }

    /// The stored numeric id of a component, if known here.
    pub fn runtime_id(&self, name: &str) -> Option<i64> {
        self.runtime_ids.read().get(name).copied()
    }

    /// The numeric id of a component, read from the store when not known
    /// here yet (a component first seen in a report).
    pub async fn resolve_runtime_id(
        &self,
        store: &dyn Store,
        name: &str,
    ) -> Result<Option<i64>, StoreError> {
        if let Some(id) = self.runtime_id(name) {
            return Ok(Some(id));
        }
        let found = store.find_component(name).await?;
        if let Some(c) = &found {
            self.stored(c);
        }
        Ok(found.map(|c| c.runtime_id).filter(|id| *id > 0))
    }

    /// The name of the component with this numeric id, if known here.
    pub fn name_of(&self, runtime_id: i64) -> Option<String> {
        self.runtime_ids
            .read()
            .iter()
            .find(|(_, id)| **id == runtime_id)
            .map(|(name, _)| name.clone())
    }

    pub fn is_known(&self, name: &str) -> bool {
        self.last_seen.read().contains_key(name)
    }

    /// Records that a component was heard from at `now_ms`.
    pub fn seen(&self, name: &str, now_ms: i64) {
        let mut map = self.last_seen.write();
        match map.get_mut(name) {
            Some(t) => *t = (*t).max(now_ms),
            None => {
                map.insert(name.to_string(), now_ms);
            }
        }
    }

    /// Components heard from within `stale_after` of `now_ms`.
    pub fn alive(&self, now_ms: i64, stale_after: Duration) -> usize {
        let limit = stale_after.as_millis() as i64;
        self.last_seen
            .read()
            .values()
            .filter(|t| now_ms - **t <= limit)
            .count()
    }
}

/// The API view of a stored component at `now_ms`.
pub fn status_of(c: &Component, now_ms: i64, stale_after: Duration) -> ComponentStatus {
    let alive = now_ms - c.last_heartbeat_ms <= stale_after.as_millis() as i64;
    ComponentStatus {
        name: c.name.clone(),
        component_type: c.component_type.clone(),
        capabilities: c.capabilities.clone(),
        capacity: c.capacity,
        registered_at: format_ms(c.registered_at_ms),
        last_heartbeat: format_ms(c.last_heartbeat_ms),
        status: if alive { "alive" } else { "stale" },
    }
}

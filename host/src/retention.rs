//! Retention: which samples and events are old enough to go. `--retention`
//! for everything, except metric names and components with a rule of their
//! own (NoETL's `ttl/set` and `ttl/extend-component`); a metric name's rule
//! wins over its component's. Runs on a timer and on `POST /api/metrics/cleanup`.
//! Does not own the deletes themselves (the store does).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::store::{RuleScope, Store, StoreError};

/// Most samples or events one delete statement removes.
pub const RETENTION_BATCH: u32 = 10_000;

/// What one retention run removed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Removed {
    pub samples: u64,
    pub events: u64,
}

/// Deletes in bounded batches until fewer than a batch are left, or `stop` says so.
async fn drain<F, Fut>(mut delete: F, stop: &(dyn Fn() -> bool + Sync)) -> Result<u64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    let mut total = 0;
    loop {
        let n = delete().await?;
        total += n;
        if n < u64::from(RETENTION_BATCH) || stop() {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

/// Removes every sample and event past its retention at `now_ms`.
pub async fn run(
    store: &dyn Store,
    retention: Duration,
    now_ms: i64,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<Removed, StoreError> {
    let global_cutoff = now_ms - retention.as_millis() as i64;
    let rules = store.retention_rules().await?;
    let samples = if rules.is_empty() {
        drain(
            || store.delete_samples_before(global_cutoff, RETENTION_BATCH),
            stop,
        )
        .await?
    } else {
        // Each ruled series' own retention: its metric name's rule, else its component's.
        let mut ttl_of: HashMap<i64, (bool, i64)> = HashMap::new();
        for rule in &rules {
            let series = match rule.scope {
                RuleScope::Metric => store.find_series(None, Some(&rule.name), None).await?,
                RuleScope::Component => store.find_series(Some(&rule.name), None, None).await?,
            };
            let by_metric = rule.scope == RuleScope::Metric;
            for s in series {
                let entry = ttl_of.entry(s.id).or_insert((by_metric, rule.ttl_ms));
                if by_metric && !entry.0 {
                    *entry = (true, rule.ttl_ms);
                }
            }
        }
        let ruled: Vec<i64> = ttl_of.keys().copied().collect();
        let mut total = drain(
            || store.delete_series_samples_before(global_cutoff, None, &ruled, RETENTION_BATCH),
            stop,
        )
        .await?;
        let mut groups: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for (id, (_, ttl)) in ttl_of {
            groups.entry(ttl).or_default().push(id);
        }
        for (ttl, ids) in groups {
            let cutoff = now_ms - ttl;
            total += drain(
                || store.delete_series_samples_before(cutoff, Some(&ids), &[], RETENTION_BATCH),
                stop,
            )
            .await?;
        }
        total
    };
    let events = drain(
        || store.delete_events_before(global_cutoff, RETENTION_BATCH),
        stop,
    )
    .await?;
    Ok(Removed { samples, events })
}

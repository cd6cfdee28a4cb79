//! Durable delivery from the stored log to publisher plugins, and live
//! following of the log. Each publisher has a cursor in the store; its
//! delivery loop reads the samples after the cursor, batches them (max items,
//! max bytes, max wait), hands the batch to the plugin, retries retryable
//! failures with exponential backoff and jitter (honouring retry-after),
//! sends per-item rejections to the dead letters and moves the cursor forward
//! only after that. Delivery is at-least-once: a crash between a successful
//! publish and the cursor update re-sends that batch. A removed publisher
//! keeps its cursor for when it comes back.
//!
//! [`LogHead`] is the one wake-up point every commit to the log bumps;
//! [`LiveHub`] and [`Follower`] serve the provenance streams from it;
//! `pg_notify` carries heads between PostgreSQL replicas.

mod batch;
mod delivery;
mod derived;
pub mod live;
mod log_head;
pub mod pg_notify;

pub use batch::{build_batch, build_log_batch, wit_event};
pub use delivery::{DeliveryManager, DeliverySettings, PublisherStatus};
pub use live::{FollowItem, Follower, LiveHub};
pub use log_head::LogHead;

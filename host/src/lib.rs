//! Vigil host: ingest, storage, export and (later) alerting and the WebAssembly
//! plugin runtime. `vigil serve` runs [`server::run`] with a [`config::Config`].

pub mod alerts;
pub mod api;
pub mod bus;
pub mod components;
pub mod config;
pub mod events;
pub mod executions;
pub mod import;
pub mod metrics;
pub mod plugins;
pub mod retention;
pub mod server;
pub mod store;
pub mod telemetry;

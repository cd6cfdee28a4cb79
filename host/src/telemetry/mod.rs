//! The host's own telemetry: self metrics (prometheus-client), the combined
//! exposition of reported and own metrics, and sampling of the host's CPU and
//! memory for self-reports. Does not own reported series (see `metrics`).

mod exposition;
pub mod operations;
mod self_metrics;
mod system;

pub use exposition::{openmetrics_to_text, render_export};
pub use self_metrics::SelfMetrics;
pub use system::{SystemSample, SystemSampler};

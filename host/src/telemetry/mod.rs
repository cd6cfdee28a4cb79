//! The host's own telemetry: self metrics (prometheus-client), the combined
//! exposition of reported and own metrics, and sampling of the host's CPU and
//! memory for self-reports. Does not own reported series (see `metrics`).

mod exposition;
pub mod operations;
mod self_metrics;
mod system;

pub use exposition::{
    host_family_of, openmetrics_to_text, render_export, render_host_metrics, PLUGIN_FAMILIES,
};
pub use self_metrics::SelfMetrics;
pub use system::{SystemSample, SystemSampler};

//! Stand-ins for the services Vigil delivers to, one file per service. Each
//! checks the real wire format strictly and can answer with the service's real
//! errors.

pub mod elasticsearch;
pub mod loki;
pub mod pagerduty;
pub mod slack;
pub mod webhook;

//! Reported metrics: the NoETL report model and its validation, histogram and
//! summary aggregation, the in-memory latest-value index that scrapes render
//! from, and the ingest writer that group-commits reports to the store.

pub mod aggregate;
pub mod index;
pub mod ingest;
pub mod model;
pub mod recent;

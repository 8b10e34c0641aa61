//! Logging, access logs and Prometheus metrics.
pub mod access;
pub mod metrics;

pub use metrics::metrics;

//! Logging, access logs and Prometheus metrics.
pub mod access;
pub mod metrics;
pub mod route_stats;

pub use metrics::metrics;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Install the process-wide tracing subscriber writing to stderr (stdout carries the
/// access log). `RUST_LOG` overrides the default `info` level. A second call is a no-op,
/// so tests and embedders may call it freely.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

//! Command-line interface, shared by `main` and tests.
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "airgate",
    version,
    about = "Kubernetes ingress controller and reverse proxy for AI APIs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Cluster mode: watch the API server, serve traffic, write status.
    Controller(ControllerArgs),
    /// File mode: serve the manifests in PATH (a YAML file or a directory), reloading on change.
    Serve(ServeArgs),
    /// Validate manifests offline and print every problem; exit non-zero on errors.
    Check(CheckArgs),
    /// Print the AIRoute CustomResourceDefinition YAML.
    Crd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Flags common to the serving commands.
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// Plain HTTP listener (HTTP/1.1 and prior-knowledge h2c).
    #[arg(long, env = "AIRGATE_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// TLS listener (HTTP/1.1 and HTTP/2 by ALPN).
    #[arg(long, env = "AIRGATE_HTTPS_ADDR", default_value = "0.0.0.0:8443")]
    pub https_addr: SocketAddr,
    /// Admin listener: /metrics, /healthz, /readyz.
    #[arg(long, env = "AIRGATE_ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    pub admin_addr: SocketAddr,
    /// IngressClass name this instance serves.
    #[arg(long, env = "AIRGATE_INGRESS_CLASS", default_value = "airgate")]
    pub ingress_class: String,
    /// Format of logs (stderr) and access-log lines (stdout): text or json.
    #[arg(long, env = "AIRGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Networks whose X-Forwarded-For / X-Real-IP are trusted (comma separated CIDRs).
    #[arg(long, env = "AIRGATE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long SIGTERM waits for in-flight requests and streams before closing them.
    #[arg(long, env = "AIRGATE_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration_arg)]
    pub shutdown_grace: std::time::Duration,
    /// Number of worker threads for the data plane (0 = one per core).
    #[arg(long, env = "AIRGATE_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
    /// Where access-log lines go: `stdout`, `off`, or a file path (appended to).
    #[arg(long, env = "AIRGATE_ACCESS_LOG", default_value = "stdout")]
    pub access_log: crate::telemetry::access::AccessLogTarget,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A YAML file or a directory of them holding the manifests to serve.
    #[arg(long, env = "AIRGATE_CONFIG")]
    pub config: PathBuf,
    #[command(flatten)]
    pub proxy: ProxyArgs,
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// A YAML file or a directory of them.
    #[arg(long, env = "AIRGATE_CONFIG")]
    pub config: PathBuf,
    #[arg(long, env = "AIRGATE_INGRESS_CLASS", default_value = "airgate")]
    pub ingress_class: String,
}

#[derive(Debug, Clone, Args)]
pub struct ControllerArgs {
    #[command(flatten)]
    pub proxy: ProxyArgs,
    /// Namespaces to watch (comma separated); all when empty.
    #[arg(long, env = "AIRGATE_WATCH_NAMESPACE", value_delimiter = ',')]
    pub watch_namespace: Vec<String>,
    /// `namespace/name` of the Service whose load-balancer address is written to Ingress status.
    #[arg(long, env = "AIRGATE_PUBLISH_SERVICE")]
    pub publish_service: Option<String>,
    /// Address(es) written to Ingress status (comma separated IPs or host names).
    #[arg(long, env = "AIRGATE_PUBLISH_ADDRESS", value_delimiter = ',')]
    pub publish_address: Vec<String>,
    /// Name of the Lease used for leader election of the status writer.
    #[arg(long, env = "AIRGATE_ELECTION_ID", default_value = "airgate-leader")]
    pub election_id: String,
    /// Namespace of the Lease (defaults to the pod's namespace, else `default`).
    #[arg(long, env = "AIRGATE_ELECTION_NAMESPACE")]
    pub election_namespace: Option<String>,
}

/// Parse a Go/Kubernetes duration such as `500ms`, `60s`, `5m`, `1h30m`.
pub fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    crate::translate::units::parse_duration(s)
}

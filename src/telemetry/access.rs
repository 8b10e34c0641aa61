//! Access log: one line per request. OWNER: file mode/ops (format and writer);
//! the proxy builds an [`AccessRecord`] and calls [`log`].
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Everything an access-log line says about one request.
#[derive(Debug)]
pub struct AccessRecord<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub protocol: &'a str,
    pub status: u16,
    /// Response body bytes sent to the client.
    pub bytes_sent: u64,
    pub request_time: Duration,
    /// Until the upstream's response headers; `None` when no upstream was contacted.
    pub upstream_time: Option<Duration>,
    pub upstream_addr: Option<SocketAddr>,
    pub route: Option<&'a str>,
    pub client_ip: IpAddr,
    pub request_id: &'a str,
    pub user_agent: Option<&'a str>,
}

/// Write one access-log line.
pub fn log(record: &AccessRecord<'_>) {
    let _ = record;
}

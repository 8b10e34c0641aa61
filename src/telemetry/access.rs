//! Access log: one line per request, nginx-like text or JSON.
//!
//! The proxy builds an [`AccessRecord`] and calls [`log`]. Lines are formatted on the
//! request path but written by a dedicated thread behind a bounded queue, so a slow
//! terminal or disk never stalls a request; when the queue is full the line is dropped
//! and `airgate_access_log_dropped_total` counts it.
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::cli::LogFormat;

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

/// Where access-log lines go (`--access-log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    /// Appended to; created if missing.
    File(PathBuf),
    Off,
}

impl FromStr for AccessLogTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" => Err("empty access-log target; use stdout, off or a file path".into()),
            "stdout" | "-" => Ok(AccessLogTarget::Stdout),
            "off" | "none" => Ok(AccessLogTarget::Off),
            path => Ok(AccessLogTarget::File(PathBuf::from(path))),
        }
    }
}

/// Lines queued before the request path starts dropping them.
const QUEUE_LINES: usize = 16 * 1024;

enum Msg {
    Line(String),
    Flush(SyncSender<()>),
}

struct Writer {
    tx: SyncSender<Msg>,
    format: LogFormat,
}

static WRITER: OnceLock<Writer> = OnceLock::new();

/// Flushes queued lines when dropped (at the end of `serve`).
#[must_use = "dropping the guard flushes the access log; keep it until shutdown"]
pub struct AccessLogGuard {
    active: bool,
}

impl AccessLogGuard {
    /// Wait (up to a second) until every line queued so far is written.
    pub fn flush(&self) {
        if !self.active {
            return;
        }
        if let Some(w) = WRITER.get() {
            let (ack_tx, ack_rx) = sync_channel(1);
            if w.tx.send(Msg::Flush(ack_tx)).is_ok() {
                let _ = ack_rx.recv_timeout(Duration::from_secs(1));
            }
        }
    }
}

impl Drop for AccessLogGuard {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Start the access-log writer. Only the first call in a process takes effect (the
/// writer is process-wide, like the metrics registry).
pub fn init(target: &AccessLogTarget, format: LogFormat) -> std::io::Result<AccessLogGuard> {
    let sink: Box<dyn std::io::Write + Send> = match target {
        AccessLogTarget::Off => return Ok(AccessLogGuard { active: false }),
        AccessLogTarget::Stdout => Box::new(std::io::stdout()),
        AccessLogTarget::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("access log {}: {e}", path.display()))
                })?,
        ),
    };
    if WRITER.get().is_some() {
        return Ok(AccessLogGuard { active: true });
    }
    let (tx, rx) = sync_channel(QUEUE_LINES);
    std::thread::Builder::new()
        .name("airgate-access-log".into())
        .spawn(move || write_loop(rx, sink))?;
    let _ = WRITER.set(Writer { tx, format });
    Ok(AccessLogGuard { active: true })
}

fn write_loop(rx: Receiver<Msg>, sink: Box<dyn std::io::Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, sink);
    let handle = |msg: Msg, out: &mut std::io::BufWriter<_>| match msg {
        Msg::Line(line) => {
            let _ = out.write_all(line.as_bytes());
        }
        Msg::Flush(ack) => {
            let _ = out.flush();
            let _ = ack.try_send(());
        }
    };
    while let Ok(msg) = rx.recv() {
        handle(msg, &mut out);
        // Batch whatever queued meanwhile, then flush once: cheap under load, and a
        // line is visible as soon as the queue is idle.
        for _ in 0..QUEUE_LINES {
            match rx.try_recv() {
                Ok(msg) => handle(msg, &mut out),
                Err(_) => break,
            }
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}

/// True once [`init`] started a writer: the proxy keeps what a line needs only then.
pub fn enabled() -> bool {
    WRITER.get().is_some()
}

/// Write one access-log line (no-op until [`init`] ran, e.g. in library tests).
pub fn log(record: &AccessRecord<'_>) {
    let Some(w) = WRITER.get() else {
        return;
    };
    let line = format_line(record, w.format, SystemTime::now());
    match w.tx.try_send(Msg::Line(line)) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => crate::telemetry::metrics().access_log_dropped.inc(),
        Err(TrySendError::Disconnected(_)) => {}
    }
}

/// Render one line, newline included.
pub fn format_line(r: &AccessRecord<'_>, format: LogFormat, now: SystemTime) -> String {
    match format {
        LogFormat::Text => format_text(r, now),
        LogFormat::Json => format_json(r, now),
    }
}

/// nginx's `combined` format followed by what AI routing needs, as `key=value`:
/// `1.2.3.4 - - [22/Nov/2026:01:03:58 +0000] "GET /llm/x HTTP/1.1" 200 512 "-" "curl/8.5"
/// host=ai.example.com route=airroute/ai/stack/llm upstream=127.0.0.1:9000 rt=0.012 urt=0.010 rid=...`
fn format_text(r: &AccessRecord<'_>, now: SystemTime) -> String {
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "{} - - [{}] \"{} {} {}\" {} {} \"-\" \"{}\" host={} route={} upstream={} rt={:.3} urt=",
        r.client_ip,
        nginx_time(now),
        Escaped(r.method),
        Escaped(r.path),
        Escaped(r.protocol),
        r.status,
        r.bytes_sent,
        Escaped(r.user_agent.unwrap_or("-")),
        Escaped(or_dash(r.host)),
        Escaped(r.route.unwrap_or("-")),
        r.upstream_addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into()),
        r.request_time.as_secs_f64(),
    );
    match r.upstream_time {
        Some(t) => {
            let _ = write!(s, "{:.3}", t.as_secs_f64());
        }
        None => s.push('-'),
    }
    let _ = writeln!(s, " rid={}", Escaped(or_dash(r.request_id)));
    s
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// Escapes like nginx: `"`, `\`, spaces in key=value fields and control bytes become
/// `\xHH`, so one request is always one line and fields split on spaces.
struct Escaped<'a>(&'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let clean = |b: u8| b >= 0x20 && b != 0x7f && b != b'"' && b != b'\\' && b < 0x80;
        if self.0.bytes().all(clean) {
            return f.write_str(self.0);
        }
        for c in self.0.chars() {
            if c == '"' || c == '\\' || c.is_control() {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    write!(f, "\\x{b:02X}")?;
                }
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    time: String,
    client_ip: IpAddr,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    protocol: &'a str,
    status: u16,
    bytes_sent: u64,
    request_time: f64,
    upstream_time: Option<f64>,
    upstream_addr: Option<SocketAddr>,
    route: Option<&'a str>,
    request_id: &'a str,
    user_agent: Option<&'a str>,
}

fn format_json(r: &AccessRecord<'_>, now: SystemTime) -> String {
    let line = JsonLine {
        time: rfc3339(now),
        client_ip: r.client_ip,
        method: r.method,
        host: r.host,
        path: r.path,
        protocol: r.protocol,
        status: r.status,
        bytes_sent: r.bytes_sent,
        request_time: r.request_time.as_secs_f64(),
        upstream_time: r.upstream_time.map(|t| t.as_secs_f64()),
        upstream_addr: r.upstream_addr,
        route: r.route,
        request_id: r.request_id,
        user_agent: r.user_agent,
    };
    let mut s = serde_json::to_string(&line).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}

/// (year, month 1-12, day, hour, minute, second, millisecond) in UTC.
fn civil(now: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
        d.subsec_millis(),
    )
}

fn rfc3339(now: SystemTime) -> String {
    let (y, mo, d, h, mi, s, ms) = civil(now);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

fn nginx_time(now: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, _) = civil(now);
    let month = MONTHS[(mo as usize).saturating_sub(1) % 12];
    format!("{d:02}/{month}/{y:04}:{h:02}:{mi:02}:{s:02} +0000")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>() -> AccessRecord<'a> {
        AccessRecord {
            method: "POST",
            host: "ai.example.com",
            path: "/llm/v1/chat/completions?x=\"1\"",
            protocol: "HTTP/2.0",
            status: 200,
            bytes_sent: 512,
            request_time: Duration::from_millis(1234),
            upstream_time: Some(Duration::from_millis(12)),
            upstream_addr: Some("127.0.0.1:9000".parse().expect("addr")),
            route: Some("airroute/ai/stack/llm"),
            client_ip: "10.0.0.7".parse().expect("ip"),
            request_id: "abc-123",
            user_agent: Some("curl/8.5\nInjected"),
        }
    }

    // 2026-11-22T01:03:58.250Z
    fn when() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_795_309_438_250)
    }

    #[test]
    fn text_line_is_nginx_combined_plus_fields() {
        let line = format_line(&record(), LogFormat::Text, when());
        assert_eq!(
            line,
            "10.0.0.7 - - [22/Nov/2026:01:03:58 +0000] \"POST /llm/v1/chat/completions?x=\\x221\\x22 HTTP/2.0\" 200 512 \"-\" \"curl/8.5\\x0AInjected\" host=ai.example.com route=airroute/ai/stack/llm upstream=127.0.0.1:9000 rt=1.234 urt=0.012 rid=abc-123\n"
        );
    }

    #[test]
    fn text_line_without_upstream_uses_dashes() {
        let mut r = record();
        r.upstream_time = None;
        r.upstream_addr = None;
        r.route = None;
        r.user_agent = None;
        let line = format_line(&r, LogFormat::Text, when());
        assert!(line.contains("\"-\" \"-\" host="), "{line}");
        assert!(
            line.contains("route=- upstream=- rt=1.234 urt=- "),
            "{line}"
        );
    }

    #[test]
    fn json_line_has_every_field() {
        let line = format_line(&record(), LogFormat::Json, when());
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(v["time"], "2026-11-22T01:03:58.250Z");
        assert_eq!(v["status"], 200);
        assert_eq!(v["path"], "/llm/v1/chat/completions?x=\"1\"");
        assert_eq!(v["upstream_addr"], "127.0.0.1:9000");
        assert_eq!(v["route"], "airroute/ai/stack/llm");
        assert_eq!(v["request_id"], "abc-123");
        assert_eq!(v["request_time"], 1.234);
        assert_eq!(v["client_ip"], "10.0.0.7");
    }

    #[test]
    fn calendar_dates_are_right_across_leap_years() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(4_107_542_399)),
            "2100-02-28T23:59:59.000Z"
        );
    }

    #[test]
    fn target_parsing() {
        assert_eq!("stdout".parse(), Ok(AccessLogTarget::Stdout));
        assert_eq!("off".parse(), Ok(AccessLogTarget::Off));
        assert_eq!(
            "/var/log/a.log".parse(),
            Ok(AccessLogTarget::File("/var/log/a.log".into()))
        );
        assert!("".parse::<AccessLogTarget>().is_err());
    }
}

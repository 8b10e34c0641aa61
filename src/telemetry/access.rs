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
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
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

/// Bytes waiting to be written before the request path starts dropping lines.
const MAX_PENDING_BYTES: usize = 4 << 20;
/// Pending bytes at which the writer is woken before its batch interval is over.
const WAKE_BYTES: usize = 64 << 10;
/// How long the writer gathers lines after the first one of a batch: a line reaches
/// the file or stdout at most this late (nginx's `access_log ... flush=` idea).
const BATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Lines handed over by the request path, and what the writer thread is doing.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    /// The writer sleeps until a line arrives; only then does a line need to wake it.
    writer_idle: bool,
    /// Woken early for a full buffer during this batch already.
    nudged: bool,
    /// Flush requests made and flushes completed (`flush` waits for its number).
    flush_requested: u64,
    flush_done: u64,
}

struct Writer {
    pending: Mutex<Pending>,
    /// The writer waits on this for lines or flush requests.
    wake: Condvar,
    /// Flushers wait on this for `flush_done`.
    flushed: Condvar,
    format: LogFormat,
}

static WRITER: OnceLock<Writer> = OnceLock::new();

impl Writer {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Every critical section leaves `Pending` consistent; a panic elsewhere must
        // not silence the access log.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

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
        let Some(w) = WRITER.get() else { return };
        let mut p = w.lock();
        p.flush_requested += 1;
        let wanted = p.flush_requested;
        w.wake.notify_one();
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while p.flush_done < wanted {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            p = w
                .flushed
                .wait_timeout(p, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
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
    let _ = WRITER.set(Writer {
        pending: Mutex::new(Pending::default()),
        wake: Condvar::new(),
        flushed: Condvar::new(),
        format,
    });
    let writer = WRITER.get().expect("set above");
    std::thread::Builder::new()
        .name("airgate-access-log".into())
        .spawn(move || write_loop(writer, sink))?;
    Ok(AccessLogGuard { active: true })
}

/// The writer thread: sleep until a line arrives, gather lines for a batch interval
/// (or until enough bytes or a flush request), write them with one call, repeat. The
/// request path then costs a lock and a copy per line, and the thread wakes a few
/// times a second under load instead of once per line.
fn write_loop(w: &Writer, mut sink: Box<dyn std::io::Write + Send>) {
    let mut batch = Vec::new();
    loop {
        let mut p = w.lock();
        while p.buf.is_empty() && p.flush_requested == p.flush_done {
            p.writer_idle = true;
            p = w.wake.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        p.writer_idle = false;
        if p.flush_requested == p.flush_done && p.buf.len() < WAKE_BYTES {
            p = w
                .wake
                .wait_timeout(p, BATCH_INTERVAL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        std::mem::swap(&mut batch, &mut p.buf);
        p.nudged = false;
        let flushing = p.flush_requested;
        drop(p);
        if !batch.is_empty() {
            let _ = sink.write_all(&batch);
            batch.clear();
        }
        let _ = sink.flush();
        let mut p = w.lock();
        p.flush_done = flushing;
        drop(p);
        w.flushed.notify_all();
    }
}

/// True once [`init`] started a writer: the proxy keeps what a line needs only then.
pub fn enabled() -> bool {
    WRITER.get().is_some()
}

thread_local! {
    /// Each request thread formats its lines here, so a line costs no allocation.
    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Queue one access-log line (no-op until [`init`] ran, e.g. in library tests).
pub fn log(record: &AccessRecord<'_>) {
    let Some(w) = WRITER.get() else {
        return;
    };
    LINE.with_borrow_mut(|line| {
        line.clear();
        write_line(line, record, w.format, SystemTime::now());
        let mut p = w.lock();
        if p.buf.len() + line.len() > MAX_PENDING_BYTES {
            drop(p);
            crate::telemetry::metrics().access_log_dropped.inc();
            return;
        }
        p.buf.extend_from_slice(line.as_bytes());
        // Wake the writer only when it sleeps with nothing to do, or once per batch
        // when the buffer is getting big: notifying costs a system call.
        let wake = if p.writer_idle {
            p.writer_idle = false;
            true
        } else if p.buf.len() >= WAKE_BYTES && !p.nudged {
            p.nudged = true;
            true
        } else {
            false
        };
        drop(p);
        if wake {
            w.wake.notify_one();
        }
    });
}

/// Render one line, newline included.
pub fn format_line(r: &AccessRecord<'_>, format: LogFormat, now: SystemTime) -> String {
    let mut s = String::with_capacity(256);
    write_line(&mut s, r, format, now);
    s
}

fn write_line(out: &mut String, r: &AccessRecord<'_>, format: LogFormat, now: SystemTime) {
    match format {
        LogFormat::Text => write_text(out, r, now),
        LogFormat::Json => write_json(out, r, now),
    }
}

/// nginx's `combined` format followed by what AI routing needs, as `key=value`:
/// `1.2.3.4 - - [22/Nov/2026:01:03:58 +0000] "GET /llm/x HTTP/1.1" 200 512 "-" "curl/8.5"
/// host=ai.example.com route=airroute/ai/stack/llm upstream=127.0.0.1:9000 rt=0.012 urt=0.010 rid=...`
fn write_text(s: &mut String, r: &AccessRecord<'_>, now: SystemTime) {
    // Written piece by piece rather than with one `write!`: `fmt`'s machinery was most
    // of what a line cost (a tenth of a policy route's request path, by callgrind).
    push_ip(s, r.client_ip);
    s.push_str(" - - [");
    push_nginx_time(s, now);
    s.push_str("] \"");
    push_escaped(s, r.method);
    s.push(' ');
    push_escaped(s, r.path);
    s.push(' ');
    push_escaped(s, r.protocol);
    s.push_str("\" ");
    s.push_str(itoa::Buffer::new().format(r.status));
    s.push(' ');
    s.push_str(itoa::Buffer::new().format(r.bytes_sent));
    s.push_str(" \"-\" \"");
    push_escaped(s, r.user_agent.unwrap_or("-"));
    s.push_str("\" host=");
    push_escaped(s, or_dash(r.host));
    s.push_str(" route=");
    push_escaped(s, r.route.unwrap_or("-"));
    s.push_str(" upstream=");
    match r.upstream_addr {
        Some(SocketAddr::V4(a)) => {
            push_ip(s, IpAddr::V4(*a.ip()));
            s.push(':');
            s.push_str(itoa::Buffer::new().format(a.port()));
        }
        Some(a) => {
            let _ = write!(s, "{a}");
        }
        None => s.push('-'),
    }
    s.push_str(" rt=");
    push_seconds(s, r.request_time);
    s.push_str(" urt=");
    match r.upstream_time {
        Some(t) => push_seconds(s, t),
        None => s.push('-'),
    }
    s.push_str(" rid=");
    push_escaped(s, or_dash(r.request_id));
    s.push('\n');
}

fn push_ip(s: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                s.push_str(itoa::Buffer::new().format(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(s, "{v6}");
        }
    }
}

/// Seconds with millisecond resolution, like nginx's `$request_time`: `1.234`.
fn push_seconds(s: &mut String, d: Duration) {
    let millis = (d.as_micros() + 500) / 1000;
    s.push_str(itoa::Buffer::new().format(millis / 1000));
    s.push('.');
    push_padded(s, (millis % 1000) as u32, 3);
}

/// `n` with leading zeros to `width` digits.
fn push_padded(s: &mut String, n: u32, width: usize) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n);
    for _ in digits.len()..width {
        s.push('0');
    }
    s.push_str(digits);
}

/// `22/Nov/2026:01:03:58 +0000`.
fn push_nginx_time(s: &mut String, now: SystemTime) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, sec, _) = civil(now);
    push_padded(s, d, 2);
    s.push('/');
    s.push_str(MONTHS[(mo as usize).saturating_sub(1) % 12]);
    s.push('/');
    s.push_str(itoa::Buffer::new().format(y));
    for part in [h, mi, sec] {
        s.push(':');
        push_padded(s, part, 2);
    }
    s.push_str(" +0000");
}

/// Escapes like nginx: `"`, `\`, and control or non-ASCII-safe bytes become `\xHH`, so
/// one request is always one line and fields split on spaces.
/// Bytes written as they are: printable ASCII except `"` and `\\`.
static VERBATIM: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        table[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    table
};

fn push_escaped(s: &mut String, value: &str) {
    // A table lookup per byte: most values (paths, agents, IDs) need no escaping.
    if value.bytes().all(|b| VERBATIM[usize::from(b)]) {
        s.push_str(value);
        return;
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for c in value.chars() {
        if c == '"' || c == '\\' || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                s.push_str("\\x");
                s.push(char::from(HEX[usize::from(b >> 4)]));
                s.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        } else {
            s.push(c);
        }
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
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

fn write_json(out: &mut String, r: &AccessRecord<'_>, now: SystemTime) {
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
    match serde_json::to_string(&line) {
        Ok(json) => out.push_str(&json),
        Err(_) => out.push_str("{}"),
    }
    out.push('\n');
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

//! Parsers for the value formats users write: Go durations, Kubernetes quantities,
//! nginx rates.
use std::time::Duration;

/// Parse a Go/Kubernetes duration: a sequence of `<number><unit>` with units
/// `ns`, `us`, `ms`, `s`, `m`, `h` (`500ms`, `60s`, `1h30m`, `1.5s`). `0` alone is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration; write e.g. 500ms, 60s or 5m".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {s:?} lacks a unit; write e.g. {s}s"))?;
        if num_len == 0 {
            return Err(format!(
                "invalid duration {s:?}; write e.g. 500ms, 60s or 5m"
            ));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid number in duration {s:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            unit => {
                return Err(format!(
                    "unknown unit {unit:?} in duration {s:?}; use ms, s, m or h"
                ));
            }
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| format!("duration {s:?} is out of range"))
}

/// Parse a Kubernetes quantity as a byte count: `10Mi`, `1Gi`, `512Ki`, `8M`, `100k`,
/// `1000`. Fractions are allowed (`1.5Gi`).
pub fn parse_quantity(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() {
        return Err(format!("invalid size {s:?}; write e.g. 10Mi, 512Ki or 1Gi"));
    }
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}; write e.g. 10Mi, 512Ki or 1Gi"))?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "unknown size suffix {suffix:?} in {s:?}; use Ki, Mi, Gi (or k, M, G)"
            ));
        }
    };
    Ok((value * mult).round() as u64)
}

/// Parse an nginx-style rate: `10r/s` or `4r/m` -> (requests, period).
pub fn parse_rate(s: &str) -> Result<(u32, Duration), String> {
    let s = s.trim();
    let err = || format!("invalid rate {s:?}; write N r/s or N r/m, e.g. 10r/s or 4r/m");
    let (n, unit) = s.split_once("r/").ok_or_else(err)?;
    let n: u32 = n.trim().parse().map_err(|_| err())?;
    if n == 0 {
        return Err(format!("rate {s:?} must be at least 1 request"));
    }
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        _ => return Err(err()),
    };
    Ok((n, per))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("60").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("10Mi").unwrap(), 10 * 1024 * 1024);
        assert_eq!(parse_quantity("8M").unwrap(), 8_000_000);
        assert_eq!(parse_quantity("0").unwrap(), 0);
        assert_eq!(parse_quantity("1.5Ki").unwrap(), 1536);
        assert!(parse_quantity("10MB").is_err());
        assert!(parse_quantity("Mi").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10r/s").unwrap(), (10, Duration::from_secs(1)));
        assert_eq!(parse_rate("4r/m").unwrap(), (4, Duration::from_secs(60)));
        assert!(parse_rate("0r/s").is_err());
        assert!(parse_rate("10/s").is_err());
        assert!(parse_rate("10r/h").is_err());
    }
}

//! ingress-nginx and airgate.dev annotations on Ingress objects.
//!
//! Every supported annotation is read under `airgate.dev/` and, for migration, under
//! `nginx.ingress.kubernetes.io/` with ingress-nginx's value format and defaults; when
//! both are set the `airgate.dev/` one wins. Annotations are grouped by the policy they
//! build (rate limiting, CORS, body size, timeouts, redirects, rewrite, auth, source
//! ranges, backend protocol): one invalid value leaves its whole group out, never half of
//! it, and an invalid *access-control* group (auth, source ranges) or a refused annotation
//! (snippets, unsupported auth schemes) makes every route of the Ingress answer 403 rather
//! than serve traffic unprotected. `docs/annotations.md` is the user-facing table.
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Uri};
use ipnet::IpNet;
use k8s_openapi::api::networking::v1::Ingress;
use regex::Regex;

use super::units;
use super::{Diagnostic, ObjectRef, Problem, Severity};
use crate::config::{
    AuthCachePolicy, AuthHookPolicy, CorsPolicy, Endpoints, HookTarget, PathRewrite, RateLimit,
    RoutePolicy, Upstream, UpstreamProtocol, ZoneKey, ZoneSpec,
};

/// airgate's own annotation prefix; wins over the ingress-nginx one.
pub const AIRGATE_PREFIX: &str = "airgate.dev/";
/// ingress-nginx's annotation prefix, honoured for migration.
pub const NGINX_PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// Memory bound of the per-Ingress zones that `limit-rps`/`limit-rpm` create; ingress-nginx
/// declares its zones with `10m` too.
const ZONE_SIZE_BYTES: u64 = 10 * 1024 * 1024;
const DEFAULT_BURST_MULTIPLIER: u32 = 5;
/// ingress-nginx's `limit-req-status-code` default.
const DEFAULT_LIMIT_STATUS: u16 = 503;
/// ingress-nginx's `http-redirect-code` default, used for ssl-redirect.
const SSL_REDIRECT_CODE: u16 = 308;
const DEFAULT_CORS_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
const DEFAULT_CORS_HEADERS: &str = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";
const DEFAULT_CORS_MAX_AGE: u64 = 1_728_000;
const DEFAULT_AUTH_CACHE_DURATION: &str = "200 202 401 5m";
/// ingress-nginx sends every request header to the auth service; airgate sends a named
/// list (never the body), defaulting to the headers that carry credentials.
const DEFAULT_AUTH_FORWARD_HEADERS: &[&str] = &["authorization", "cookie", "x-api-key"];
const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest accepted timeout or cache TTL: users write minutes or hours; a bound keeps
/// `Instant + duration` arithmetic on the request path far from overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// nginx answers 500 when the auth_request sub-request fails.
const DEFAULT_AUTH_FAILURE_STATUS: u16 = 500;

/// Annotations this module implements (under both prefixes).
const SUPPORTED: &[&str] = &[
    "limit-rps",
    "limit-rpm",
    "limit-burst-multiplier",
    "limit-whitelist",
    "limit-allowlist",
    "enable-cors",
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-expose-headers",
    "cors-allow-credentials",
    "cors-max-age",
    "proxy-body-size",
    "proxy-buffering",
    "proxy-connect-timeout",
    "proxy-send-timeout",
    "proxy-read-timeout",
    "ssl-redirect",
    "force-ssl-redirect",
    "rewrite-target",
    "use-regex",
    "auth-url",
    "auth-method",
    "auth-response-headers",
    "auth-cache-key",
    "auth-cache-duration",
    "whitelist-source-range",
    "allowlist-source-range",
    "backend-protocol",
];

/// airgate-only annotations (no ingress-nginx equivalent).
const AIRGATE_ONLY: &[&str] = &[
    "limit-status-code",
    "auth-forward-headers",
    "auth-timeout",
    "auth-failure-status",
    "security-headers",
];

/// ingress-nginx annotations that restrict who may reach a backend and that airgate
/// cannot enforce. Ignoring them would open the backend, so the Ingress is refused.
const UNSUPPORTED_ACCESS_CONTROL: &[&str] = &[
    "auth-type",
    "auth-secret",
    "auth-secret-type",
    "auth-realm",
    "auth-tls-secret",
    "auth-tls-verify-client",
    "auth-tls-match-cn",
    "denylist-source-range",
];

/// Annotations of one Ingress, parsed and validated. A policy whose annotations are
/// invalid is absent here (and a diagnostic says why); [`apply`] never half-applies one.
#[derive(Debug, Clone, Default)]
pub struct IngressAnnotations {
    /// Paths are case-insensitive regexes anchored at the start (ingress-nginx `~*`):
    /// `use-regex: "true"`, or implied by `rewrite-target` as in ingress-nginx.
    pub use_regex: bool,
    pub backend_protocol: UpstreamProtocol,
    /// Something on the Ingress must not be served as written: every route answers 403.
    deny_all: bool,
    /// A snippet annotation was refused; the Ingress should be left out entirely.
    refused: bool,
    rate_limit: Option<RateAnnotation>,
    cors: Option<Arc<CorsPolicy>>,
    /// `Some(None)` = unlimited (`proxy-body-size: 0`).
    max_body_size: Option<Option<u64>>,
    timeouts: TimeoutAnnotations,
    ssl_redirect: Option<bool>,
    force_ssl_redirect: bool,
    /// Replacement in `regex` crate syntax (`$1` already turned into `${1}`).
    rewrite_target: Option<String>,
    auth: Option<Arc<AuthHookPolicy>>,
    allow_sources: Option<Arc<[IpNet]>>,
    security_headers: Option<bool>,
}

#[derive(Debug, Clone)]
struct RateAnnotation {
    zone: ZoneSpec,
    burst: u32,
    reject_status: u16,
    exempt: Option<Arc<[IpNet]>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct TimeoutAnnotations {
    connect: Option<Duration>,
    send: Option<Duration>,
    read: Option<Duration>,
}

impl IngressAnnotations {
    /// True when the Ingress carries an annotation airgate refuses (a `*-snippet`, or
    /// `canary: "true"`). The caller should leave the whole Ingress out; if it does not,
    /// [`apply`] makes every route answer 403, so the Ingress never serves without what
    /// the annotation promised.
    pub fn refused(&self) -> bool {
        self.refused
    }
}

/// Parse every annotation of `ingress` we know. Snippets, canaries and access control we
/// cannot enforce are refused (errors); other unknown keys under our two prefixes are
/// reported as warnings and ignored; keys under other prefixes are not ours.
pub fn parse(ingress: &Ingress) -> (IngressAnnotations, Vec<Diagnostic>) {
    let empty = BTreeMap::new();
    let annotations = ingress.metadata.annotations.as_ref().unwrap_or(&empty);
    let mut r = Reader {
        annotations,
        ours: Reader::index(annotations),
        object: ObjectRef {
            kind: "Ingress".into(),
            // As the API server does (and translate's `namespace_of`): no namespace is `default`.
            namespace: ingress
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: ingress.metadata.name.clone().unwrap_or_default(),
        },
        diags: Vec::new(),
    };
    let mut ann = IngressAnnotations::default();

    check_keys(&mut r, &mut ann);
    ann.rate_limit = parse_rate_limit(&mut r);
    ann.cors = parse_cors(&mut r);
    parse_body_and_buffering(&mut r, &mut ann);
    ann.timeouts = parse_timeouts(&mut r);
    parse_redirects(&mut r, &mut ann);
    parse_rewrite(&mut r, &mut ann);
    match parse_auth(&mut r) {
        Group::Unset => {}
        Group::Set(hook) => ann.auth = Some(hook),
        Group::Invalid => ann.deny_all = true,
    }
    match parse_source_range(&mut r) {
        Group::Unset => {}
        Group::Set(nets) => ann.allow_sources = Some(nets),
        Group::Invalid => ann.deny_all = true,
    }
    ann.backend_protocol = parse_backend_protocol(&mut r);
    ann.security_headers = r.field_airgate("security-headers", &mut true, parse_bool);

    (ann, r.diags)
}

/// Fill `policy` (a fresh [`RoutePolicy::default`] for one path of the Ingress) from the
/// annotations; rate-limit zones are appended to `zones` once per Ingress and shared by
/// its paths. `host_has_tls` decides the default `ssl-redirect`.
pub fn apply(
    ann: &IngressAnnotations,
    policy: &mut RoutePolicy,
    zones: &mut Vec<ZoneSpec>,
    host_has_tls: bool,
) {
    if let Some(rl) = &ann.rate_limit {
        let zone = match zones.iter().position(|z| z.id == rl.zone.id) {
            Some(i) => i,
            None => {
                zones.push(rl.zone.clone());
                zones.len() - 1
            }
        };
        policy.rate_limit = Some(RateLimit {
            zone,
            burst: rl.burst,
            nodelay: true,
            reject_status: rl.reject_status,
            exempt: rl.exempt.clone(),
        });
    }
    if let Some(cors) = &ann.cors {
        policy.cors = Some(cors.clone());
    }
    if let Some(size) = ann.max_body_size {
        policy.max_body_size = size;
    }
    if let Some(d) = ann.timeouts.connect {
        policy.timeouts.connect = d;
    }
    if let Some(d) = ann.timeouts.send {
        policy.timeouts.send = d;
    }
    if let Some(d) = ann.timeouts.read {
        policy.timeouts.read = d;
    }
    let redirect = ann.force_ssl_redirect || (host_has_tls && ann.ssl_redirect.unwrap_or(true));
    policy.https_redirect = redirect.then_some(SSL_REDIRECT_CODE);
    if let Some(hook) = &ann.auth {
        policy.auth = Some(hook.clone());
    }
    if let Some(nets) = &ann.allow_sources {
        policy.allow_sources = Some(nets.clone());
    }
    if let Some(on) = ann.security_headers {
        policy.security_headers = on;
    }
    if ann.deny_all || ann.refused {
        // Fail closed: an empty allow list matches no client, so every request gets 403.
        policy.allow_sources = Some(Arc::from(Vec::new()));
    }
}

/// The rewrite for one Ingress path: with `rewrite-target`, the path (a case-insensitive
/// regex anchored at the start, as ingress-nginx treats it) replaces the *whole* request
/// path by the target, like nginx `rewrite`; `$1`... are the path's capture groups.
/// Returns `PathRewrite::None` without `rewrite-target`, or when the path is not a valid
/// regex (the caller rejects such a path when it builds the regex match).
pub fn rewrite_for_path(ann: &IngressAnnotations, path: &str) -> PathRewrite {
    let Some(target) = &ann.rewrite_target else {
        return PathRewrite::None;
    };
    // `(?s:.*)` consumes the rest so the replacement covers the whole path, as nginx's
    // rewrite replaces the whole URI and not only the matched part.
    match build_regex(&format!("^(?:{path})(?s:.*)")) {
        Ok(regex) => PathRewrite::Regex {
            regex,
            replacement: target.clone(),
        },
        Err(_) => PathRewrite::None,
    }
}

/// The regex ingress-nginx builds for a path when `use-regex` is on (`location ~* "^path"`):
/// case-insensitive, anchored at the start only. Shared so matching and rewriting agree.
pub fn path_regex(path: &str) -> Result<Regex, String> {
    build_regex(&format!("^(?:{path})"))
        .map_err(|e| format!("path {path:?} is not a valid regular expression: {e}"))
}

/// Case-insensitive, with a compiled-size bound so a hostile path cannot make
/// translation allocate without limit.
fn build_regex(pattern: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
}

enum Group<T> {
    Unset,
    Set(T),
    Invalid,
}

struct Reader<'a> {
    annotations: &'a BTreeMap<String, String>,
    /// Our annotations by (is `airgate.dev/`, name after the prefix) -> (full key, value).
    /// Built once per Ingress: the parsers look up dozens of names, and building each
    /// full key to probe `annotations` dominated translating thousands of Ingresses.
    ours: HashMap<(bool, &'a str), (&'a str, &'a str)>,
    object: ObjectRef,
    diags: Vec<Diagnostic>,
}

impl<'a> Reader<'a> {
    fn index(
        annotations: &'a BTreeMap<String, String>,
    ) -> HashMap<(bool, &'a str), (&'a str, &'a str)> {
        let mut ours = HashMap::new();
        for (key, value) in annotations {
            let name = if let Some(n) = key.strip_prefix(AIRGATE_PREFIX) {
                (true, n)
            } else if let Some(n) = key.strip_prefix(NGINX_PREFIX) {
                (false, n)
            } else {
                continue;
            };
            ours.insert(name, (key.as_str(), value.as_str()));
        }
        ours
    }

    fn lookup(&self, airgate: bool, name: &str) -> Option<(String, &'a str)> {
        // Most Ingresses have none of ours; skip hashing dozens of names for them.
        if self.ours.is_empty() {
            return None;
        }
        self.ours
            .get(&(airgate, name))
            .map(|(key, value)| (key.to_string(), value.trim()))
    }

    /// The value of `name` under `airgate.dev/`, else under the ingress-nginx prefix,
    /// with the full key found (for diagnostics).
    fn get(&self, name: &str) -> Option<(String, &'a str)> {
        self.get_airgate(name).or_else(|| self.lookup(false, name))
    }

    /// Like [`Reader::get`] for a name with aliases (ingress-nginx renamed `whitelist` to
    /// `allowlist`): any `airgate.dev/` spelling wins over any ingress-nginx one.
    fn get_aliased(&self, names: &[&str]) -> Option<(String, &'a str)> {
        names
            .iter()
            .find_map(|n| self.get_airgate(n))
            .or_else(|| names.iter().find_map(|n| self.get(n)))
    }

    fn get_airgate(&self, name: &str) -> Option<(String, &'a str)> {
        self.lookup(true, name)
    }

    fn push(&mut self, severity: Severity, key: &str, message: String, reason: &str) {
        self.diags.push(Diagnostic {
            severity,
            problem: Problem::Invalid,
            object: self.object.clone(),
            field: format!("metadata.annotations[{key}]"),
            message,
            reason: reason.into(),
        });
    }

    fn invalid(&mut self, key: &str, value: &str, expected: &str) {
        self.push(
            Severity::Error,
            key,
            format!("invalid value {value:?} for annotation {key}: {expected}"),
            "InvalidAnnotation",
        );
    }

    /// Parse `name` with `f`; on error report it (naming the key and the expected format)
    /// and clear `ok` so the caller drops the whole group.
    fn field<T>(
        &mut self,
        name: &str,
        ok: &mut bool,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let (key, value) = self.get(name)?;
        self.check(key, value, ok, f)
    }

    fn field_aliased<T>(
        &mut self,
        names: &[&str],
        ok: &mut bool,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let (key, value) = self.get_aliased(names)?;
        self.check(key, value, ok, f)
    }

    fn field_airgate<T>(
        &mut self,
        name: &str,
        ok: &mut bool,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let (key, value) = self.get_airgate(name)?;
        self.check(key, value, ok, f)
    }

    fn check<T>(
        &mut self,
        key: String,
        value: &str,
        ok: &mut bool,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        match f(value) {
            Ok(v) => Some(v),
            Err(expected) => {
                *ok = false;
                self.invalid(&key, value, &expected);
                None
            }
        }
    }
}

/// Refuse snippets and unenforceable access control; warn about everything else under
/// our prefixes that we do not implement.
fn check_keys(r: &mut Reader<'_>, ann: &mut IngressAnnotations) {
    let keys: Vec<(String, String)> = r
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, value) in keys {
        let (name, airgate) = if let Some(n) = key.strip_prefix(AIRGATE_PREFIX) {
            (n, true)
        } else if let Some(n) = key.strip_prefix(NGINX_PREFIX) {
            (n, false)
        } else {
            continue;
        };
        if name.ends_with("-snippet") {
            ann.refused = true;
            r.push(
                Severity::Error,
                &key,
                format!(
                    "annotation {key} is refused: snippets inject raw nginx configuration, \
                     which let anyone able to edit an Ingress read the controller's secrets \
                     (CVE-2021-25742) or run commands in it (CVE-2023-5043), and airgate \
                     has no nginx to inject into. Use the dedicated annotations (see \
                     docs/annotations.md) or an AIRoute instead; this Ingress is not served \
                     until the snippet is removed"
                ),
                "SnippetRefused",
            );
            continue;
        }
        if SUPPORTED.contains(&name) || (airgate && AIRGATE_ONLY.contains(&name)) {
            continue;
        }
        if !airgate && name == "canary" && parse_bool(value.trim()) == Ok(true) {
            // A canary Ingress repeats the main Ingress's hosts and paths; served as an
            // ordinary Ingress it could take all of the traffic instead of a share.
            ann.refused = true;
            r.push(
                Severity::Error,
                &key,
                format!(
                    "annotation {key}: canary releases are not supported by airgate; this \
                     canary Ingress is not served, so all traffic goes to the main Ingress"
                ),
                "UnsupportedAnnotation",
            );
            continue;
        }
        let enforces_access = UNSUPPORTED_ACCESS_CONTROL.contains(&name)
            && !(name == "auth-tls-verify-client" && value.trim().eq_ignore_ascii_case("off"));
        if enforces_access {
            ann.deny_all = true;
            r.push(
                Severity::Error,
                &key,
                format!(
                    "annotation {key} restricts access in a way airgate does not support \
                     (basic/digest auth, client certificates, deny lists); rather than serve \
                     the backend unprotected, this Ingress is not served until it is removed. \
                     Use auth-url with an auth service, or whitelist-source-range, instead"
                ),
                "UnsupportedAnnotation",
            );
        } else if airgate {
            r.push(
                Severity::Warning,
                &key,
                format!("unknown annotation {key}; it is ignored (see docs/annotations.md)"),
                "UnknownAnnotation",
            );
        } else {
            r.push(
                Severity::Warning,
                &key,
                format!(
                    "ingress-nginx annotation {key} is not supported by airgate; it is ignored \
                     (see docs/annotations.md for what is supported)"
                ),
                "UnsupportedAnnotation",
            );
        }
    }
}

fn parse_rate_limit(r: &mut Reader<'_>) -> Option<RateAnnotation> {
    let mut ok = true;
    let rps = r.field("limit-rps", &mut ok, parse_count).flatten();
    let rpm = r.field("limit-rpm", &mut ok, parse_count).flatten();
    let multiplier = r
        .field("limit-burst-multiplier", &mut ok, parse_positive)
        .unwrap_or(DEFAULT_BURST_MULTIPLIER);
    let exempt = r
        .field_aliased(
            &["limit-allowlist", "limit-whitelist"],
            &mut ok,
            parse_cidrs,
        )
        .flatten();
    let status = r
        .field_airgate("limit-status-code", &mut ok, parse_status)
        .unwrap_or(DEFAULT_LIMIT_STATUS);
    if !ok {
        return None;
    }
    // ingress-nginx enforces both limits; a route here has one, so keep the one with the
    // lower sustained rate (a warning says so).
    let (requests, per, suffix) = match (rps, rpm) {
        (None, None) => return None,
        (Some(s), None) => (s, Duration::from_secs(1), "rps"),
        (None, Some(m)) => (m, Duration::from_secs(60), "rpm"),
        (Some(s), Some(m)) => {
            let chosen = if u64::from(s) * 60 <= u64::from(m) {
                (s, Duration::from_secs(1), "rps")
            } else {
                (m, Duration::from_secs(60), "rpm")
            };
            let key = r.get("limit-rpm").map(|(k, _)| k).unwrap_or_default();
            r.push(
                Severity::Warning,
                &key,
                format!(
                    "both limit-rps ({s}) and limit-rpm ({m}) are set; airgate applies one \
                     limit per route and uses the stricter sustained rate, limit-{}",
                    chosen.2
                ),
                "RateLimitsMerged",
            );
            chosen
        }
    };
    let Some(burst) = requests.checked_mul(multiplier) else {
        let key = r
            .get("limit-burst-multiplier")
            .or_else(|| r.get(&format!("limit-{suffix}")))
            .map(|(k, _)| k)
            .unwrap_or_default();
        r.push(
            Severity::Error,
            &key,
            format!(
                "{key}: burst {requests} x {multiplier} is too large; lower the rate or \
                 limit-burst-multiplier"
            ),
            "InvalidAnnotation",
        );
        return None;
    };
    let object = &r.object;
    Some(RateAnnotation {
        zone: ZoneSpec {
            id: Arc::from(format!("{}/{}/{suffix}", object.namespace, object.name)),
            requests,
            per,
            key: ZoneKey::ClientIp,
            size_bytes: ZONE_SIZE_BYTES,
        },
        burst,
        reject_status: status,
        exempt,
    })
}

fn parse_cors(r: &mut Reader<'_>) -> Option<Arc<CorsPolicy>> {
    let mut ok = true;
    let enabled = r.field("enable-cors", &mut ok, parse_bool).unwrap_or(false);
    if !enabled {
        if ok {
            let stray = [
                "cors-allow-origin",
                "cors-allow-methods",
                "cors-allow-headers",
                "cors-expose-headers",
                "cors-allow-credentials",
                "cors-max-age",
            ]
            .iter()
            .find_map(|n| r.get(n).map(|(k, _)| k));
            if let Some(key) = stray {
                r.push(
                    Severity::Warning,
                    &key,
                    format!("{key} has no effect unless enable-cors is \"true\""),
                    "CorsNotEnabled",
                );
            }
        }
        return None;
    }
    let origins = r.field("cors-allow-origin", &mut ok, parse_origins);
    let methods = r.field("cors-allow-methods", &mut ok, |v| {
        parse_token_list(v, false, "a comma-separated list of methods like GET, POST")
    });
    let headers = r.field("cors-allow-headers", &mut ok, |v| {
        parse_token_list(v, true, "a comma-separated list of header names, or *")
    });
    let expose = r.field("cors-expose-headers", &mut ok, |v| {
        parse_token_list(v, true, "a comma-separated list of header names, or *")
    });
    let credentials_set = r.field("cors-allow-credentials", &mut ok, parse_bool);
    let max_age = r.field("cors-max-age", &mut ok, parse_seconds_or_duration);
    if !ok {
        return None;
    }
    let origins = origins.unwrap_or_else(|| vec![Origin::Any]);
    let allow_any_origin = origins.iter().any(|o| matches!(o, Origin::Any));
    let mut allow_credentials = credentials_set.unwrap_or(true);
    if allow_any_origin && allow_credentials {
        // ingress-nginx sends `*` with `Allow-Credentials: true`, which browsers refuse for
        // credentialed requests; echoing any origin with credentials would instead let
        // every site read responses with the user's cookies. Keep the browser-visible
        // behaviour: `*`, no credentials.
        allow_credentials = false;
        if credentials_set == Some(true) {
            let key = r
                .get("cors-allow-credentials")
                .map(|(k, _)| k)
                .unwrap_or_default();
            r.push(
                Severity::Warning,
                &key,
                "credentials are not allowed with cors-allow-origin \"*\" (browsers refuse \
                 it); list the allowed origins to allow credentials"
                    .into(),
                "CorsCredentialsWithAnyOrigin",
            );
        }
    }
    let mut exact_origins = Vec::new();
    let mut wildcard_origins = Vec::new();
    for o in origins {
        match o {
            Origin::Any => {}
            Origin::Exact(s) => exact_origins.push(s),
            Origin::Wildcard(scheme, suffix) => wildcard_origins.push((scheme, suffix)),
        }
    }
    let methods = methods.unwrap_or_else(|| DEFAULT_CORS_METHODS.to_string());
    let headers = headers.unwrap_or_else(|| DEFAULT_CORS_HEADERS.to_string());
    let max_age = max_age.unwrap_or(DEFAULT_CORS_MAX_AGE);
    // The values were validated as tokens, so these conversions cannot fail; map the
    // error anyway rather than panic.
    let hv = |s: &str| HeaderValue::from_str(s).ok();
    let policy = CorsPolicy {
        allow_any_origin,
        exact_origins,
        wildcard_origins,
        allow_methods: hv(&methods)?,
        allow_headers: hv(&headers)?,
        expose_headers: match expose.filter(|e| !e.is_empty()) {
            Some(e) => Some(hv(&e)?),
            None => None,
        },
        allow_credentials,
        max_age: HeaderValue::from(max_age),
    };
    Some(Arc::new(policy))
}

fn parse_body_and_buffering(r: &mut Reader<'_>, ann: &mut IngressAnnotations) {
    let mut ok = true;
    if let Some(size) = r.field("proxy-body-size", &mut ok, parse_nginx_size) {
        ann.max_body_size = Some((size != 0).then_some(size));
    }
    // airgate never buffers, so both values are accepted and `on` changes nothing.
    let _ = r.field("proxy-buffering", &mut ok, |v| match v {
        "on" | "off" => Ok(()),
        _ => Err("expected \"on\" or \"off\"".into()),
    });
}

fn parse_timeouts(r: &mut Reader<'_>) -> TimeoutAnnotations {
    let mut ok = true;
    let t = TimeoutAnnotations {
        connect: r.field("proxy-connect-timeout", &mut ok, parse_timeout),
        send: r.field("proxy-send-timeout", &mut ok, parse_timeout),
        read: r.field("proxy-read-timeout", &mut ok, parse_timeout),
    };
    if ok { t } else { TimeoutAnnotations::default() }
}

fn parse_redirects(r: &mut Reader<'_>, ann: &mut IngressAnnotations) {
    let mut ok = true;
    let ssl = r.field("ssl-redirect", &mut ok, parse_bool);
    let force = r.field("force-ssl-redirect", &mut ok, parse_bool);
    if ok {
        ann.ssl_redirect = ssl;
        ann.force_ssl_redirect = force.unwrap_or(false);
    }
}

fn parse_rewrite(r: &mut Reader<'_>, ann: &mut IngressAnnotations) {
    let mut ok = true;
    ann.use_regex = r.field("use-regex", &mut ok, parse_bool).unwrap_or(false);
    if let Some(target) = r.field("rewrite-target", &mut ok, parse_rewrite_target) {
        ann.rewrite_target = Some(target);
        // ingress-nginx turns the location into a `~*` regex whenever rewrite-target is
        // set, whatever use-regex says.
        ann.use_regex = true;
    }
}

fn parse_auth(r: &mut Reader<'_>) -> Group<Arc<AuthHookPolicy>> {
    let mut ok = true;
    let target = r.field("auth-url", &mut ok, auth_target);
    let method = r.field("auth-method", &mut ok, parse_method);
    let copy = r.field("auth-response-headers", &mut ok, parse_header_names);
    let cache_key = r.field("auth-cache-key", &mut ok, parse_cache_key);
    let cache_ttl = r.field("auth-cache-duration", &mut ok, parse_cache_duration);
    let forward = r.field_airgate("auth-forward-headers", &mut ok, parse_header_names);
    let timeout = r.field_airgate("auth-timeout", &mut ok, |v| {
        match units::parse_duration(v)? {
            d if d.is_zero() || d > MAX_DURATION => {
                Err("expected a positive duration like 2s or 500ms".into())
            }
            d => Ok(d),
        }
    });
    let failure_status = r.field_airgate("auth-failure-status", &mut ok, |v| match v {
        "500" => Ok(500),
        "503" => Ok(503),
        _ => Err("expected 500 or 503".into()),
    });
    let any_set = [
        "auth-url",
        "auth-method",
        "auth-response-headers",
        "auth-cache-key",
        "auth-cache-duration",
    ]
    .iter()
    .any(|n| r.get(n).is_some())
        || [
            "auth-forward-headers",
            "auth-timeout",
            "auth-failure-status",
        ]
        .iter()
        .any(|n| r.get_airgate(n).is_some());
    if !ok {
        return Group::Invalid;
    }
    let Some((upstream, path_and_query, target)) = target else {
        if any_set {
            let key = [
                "auth-method",
                "auth-response-headers",
                "auth-cache-key",
                "auth-cache-duration",
            ]
            .iter()
            .find_map(|n| r.get(n).map(|(k, _)| k))
            .unwrap_or_else(|| "airgate.dev/auth-*".into());
            r.push(
                Severity::Warning,
                &key,
                format!("{key} has no effect without auth-url"),
                "AuthUrlMissing",
            );
        }
        return Group::Unset;
    };
    let mut forward_headers: Vec<HeaderName> = forward.unwrap_or_else(|| {
        DEFAULT_AUTH_FORWARD_HEADERS
            .iter()
            .map(|h| HeaderName::from_static(h))
            .collect()
    });
    // The hook must see what its answer is cached under, or one client's answer could be
    // reused for a request the hook would have judged differently.
    let cache = match (cache_key, cache_ttl) {
        (Some(key), ttl) => {
            let ttl = ttl.unwrap_or_else(|| {
                parse_cache_duration(DEFAULT_AUTH_CACHE_DURATION)
                    .ok()
                    .flatten()
            });
            match ttl {
                Some(ttl) => {
                    for h in &key {
                        if !forward_headers.contains(h) {
                            forward_headers.push(h.clone());
                        }
                    }
                    Some(AuthCachePolicy { ttl, key })
                }
                None => {
                    let key = r
                        .get("auth-cache-duration")
                        .map(|(k, _)| k)
                        .unwrap_or_default();
                    r.push(
                        Severity::Warning,
                        &key,
                        format!(
                            "{key} caches no 2xx answer (or a zero duration); airgate caches \
                             allow and deny answers together, so nothing is cached"
                        ),
                        "AuthCacheDisabled",
                    );
                    None
                }
            }
        }
        (None, Some(_)) => {
            let key = r
                .get("auth-cache-duration")
                .map(|(k, _)| k)
                .unwrap_or_default();
            r.push(
                Severity::Warning,
                &key,
                format!("{key} has no effect without auth-cache-key; answers are not cached"),
                "AuthCacheKeyMissing",
            );
            None
        }
        (None, None) => None,
    };
    let object = &r.object;
    Group::Set(Arc::new(AuthHookPolicy {
        id: Arc::from(format!("{}/{}", object.namespace, object.name)),
        upstream: Arc::new(upstream),
        path_and_query,
        target,
        method: method.unwrap_or(Method::GET),
        forward_headers,
        copy_headers: copy.unwrap_or_default(),
        timeout: timeout.unwrap_or(DEFAULT_AUTH_TIMEOUT),
        cache,
        failure_status: failure_status.unwrap_or(DEFAULT_AUTH_FAILURE_STATUS),
        metrics: Default::default(),
    }))
}

fn parse_source_range(r: &mut Reader<'_>) -> Group<Arc<[IpNet]>> {
    let mut ok = true;
    let nets = r.field_aliased(
        &["allowlist-source-range", "whitelist-source-range"],
        &mut ok,
        parse_cidrs,
    );
    match (ok, nets) {
        (false, _) => Group::Invalid,
        (true, Some(Some(nets))) => Group::Set(nets),
        // An empty value means no restriction, as in ingress-nginx.
        (true, _) => Group::Unset,
    }
}

fn parse_backend_protocol(r: &mut Reader<'_>) -> UpstreamProtocol {
    let mut ok = true;
    r.field("backend-protocol", &mut ok, |v| {
        match v.to_ascii_uppercase().as_str() {
            "HTTP" => Ok(UpstreamProtocol::Http),
            "HTTPS" => Ok(UpstreamProtocol::Https),
            "GRPC" | "H2C" => Ok(UpstreamProtocol::H2c),
            "GRPCS" => Ok(UpstreamProtocol::H2),
            "AUTO_HTTP" | "FCGI" => Err(format!(
                "{v} backends are not supported by airgate; use HTTP, HTTPS, GRPC, GRPCS or H2C \
                 (the backend is spoken to over HTTP/1.1 meanwhile)"
            )),
            _ => Err("expected HTTP, HTTPS, GRPC, GRPCS or H2C".into()),
        }
    })
    .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Value parsers. Each returns the expected format as its error.

/// Go's `strconv.ParseBool`, which ingress-nginx uses.
fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err("expected \"true\" or \"false\"".into()),
    }
}

/// A non-negative request count; `0` turns the limit off as in ingress-nginx.
fn parse_count(v: &str) -> Result<Option<u32>, String> {
    let n: u32 = v
        .parse()
        .map_err(|_| "expected a whole number of requests, e.g. \"10\"".to_string())?;
    Ok((n > 0).then_some(n))
}

fn parse_positive(v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("expected a whole number of at least 1, e.g. \"5\"".into()),
    }
}

fn parse_status(v: &str) -> Result<u16, String> {
    match v.parse::<u16>() {
        Ok(n) if (400..=599).contains(&n) => Ok(n),
        _ => Err("expected an HTTP error status between 400 and 599, e.g. 429".into()),
    }
}

/// A comma-separated list of CIDRs or plain addresses; `None` when the list is empty.
fn parse_cidrs(v: &str) -> Result<Option<Arc<[IpNet]>>, String> {
    let mut nets = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let net = match item.parse::<IpNet>() {
            Ok(n) => n,
            Err(_) => item.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
                format!(
                    "{item:?} is not a CIDR or IP address; expected a comma-separated list \
                     like 10.0.0.0/8, 192.168.1.7"
                )
            })?,
        };
        nets.push(net);
    }
    Ok((!nets.is_empty()).then(|| Arc::from(nets)))
}

#[derive(Debug, Clone, PartialEq)]
enum Origin {
    Any,
    Exact(String),
    /// (`https://`, `.example.com[:port]`)
    Wildcard(String, String),
}

fn parse_origins(v: &str) -> Result<Vec<Origin>, String> {
    let expected = "expected a comma-separated list of origins like https://app.example.com, \
                    https://*.example.com:8443, or *";
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let lower = item.to_ascii_lowercase();
        if lower == "*" {
            out.push(Origin::Any);
            continue;
        }
        let bad = || format!("{item:?} is not an origin; {expected}");
        let (scheme, rest) = lower.split_once("://").ok_or_else(bad)?;
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        let host_ok = |h: &str| {
            !h.is_empty()
                && !h.starts_with(['.', ':'])
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        };
        if !scheme_ok {
            return Err(bad());
        }
        if let Some(suffix) = rest.strip_prefix("*.") {
            if !host_ok(suffix) {
                return Err(bad());
            }
            out.push(Origin::Wildcard(
                format!("{scheme}://"),
                format!(".{suffix}"),
            ));
        } else if host_ok(rest) {
            out.push(Origin::Exact(lower));
        } else {
            return Err(bad());
        }
    }
    if out.is_empty() {
        return Err(expected.into());
    }
    Ok(out)
}

/// A comma-separated list of tokens (methods or header names), re-joined with `, `.
fn parse_token_list(v: &str, allow_star: bool, expected: &str) -> Result<String, String> {
    let mut items = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let token = !item.is_empty()
            && item
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !(token || (allow_star && item == "*")) {
            return Err(format!("{item:?} is not valid; expected {expected}"));
        }
        items.push(item);
    }
    Ok(items.join(", "))
}

fn parse_seconds_or_duration(v: &str) -> Result<u64, String> {
    if let Ok(n) = v.parse::<u64>() {
        return Ok(n);
    }
    units::parse_duration(v)
        .map(|d| d.as_secs())
        .map_err(|_| "expected a number of seconds like 1728000, or a duration like 24h".into())
}

/// nginx `proxy_read_timeout`-style seconds (`60`), or a duration (`60s`, `5m`).
fn parse_timeout(v: &str) -> Result<Duration, String> {
    let d = match v.parse::<u64>() {
        Ok(n) => Duration::from_secs(n),
        Err(_) => units::parse_duration(v).map_err(|_| {
            "expected whole seconds like \"60\", or a duration like 60s".to_string()
        })?,
    };
    if d.is_zero() || d > MAX_DURATION {
        return Err("expected a timeout above zero and at most a year, e.g. \"60\"".into());
    }
    Ok(d)
}

/// An nginx size (`8m`, `512k`, `1g`, `1048576`; units are powers of 1024), or a
/// Kubernetes quantity (`10Mi`).
fn parse_nginx_size(v: &str) -> Result<u64, String> {
    let expected = || {
        "expected an nginx size like 8m, 512k, 1g or a byte count (0 = unlimited), \
         or a quantity like 10Mi"
            .to_string()
    };
    let (digits, mult) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult: u64 = match c {
                'k' | 'K' => 1 << 10,
                'm' | 'M' => 1 << 20,
                'g' | 'G' => 1 << 30,
                _ => 0,
            };
            (&v[..i], mult)
        }
        _ => (v, 1),
    };
    if mult != 0 && !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
        return digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(mult))
            .ok_or_else(expected);
    }
    units::parse_quantity(v).map_err(|_| expected())
}

/// Turn an nginx rewrite replacement into `regex` syntax: `$1` -> `${1}` (the `regex`
/// crate would read `$1a` as a group named `1a`), a lone `$` stays literal, and nginx
/// variables (`$host`, `$request_uri`...) are refused because airgate cannot evaluate them.
fn parse_rewrite_target(v: &str) -> Result<String, String> {
    if v.is_empty() {
        return Err("expected a path like / or /$2".into());
    }
    if v.starts_with("http://") || v.starts_with("https://") {
        return Err(
            "rewrite targets that are URLs (nginx redirects) are not supported; expected a \
             path like /$2"
                .into(),
        );
    }
    let mut out = String::with_capacity(v.len() + 4);
    let mut chars = v.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(&(_, d)) = chars.peek() {
            if !d.is_ascii_digit() {
                break;
            }
            digits.push(d);
            chars.next();
        }
        if !digits.is_empty() {
            out.push_str(&format!("${{{digits}}}"));
            continue;
        }
        match chars.peek() {
            Some(&(_, n)) if n.is_ascii_alphabetic() || n == '_' || n == '{' => {
                return Err(
                    "only capture groups ($1, $2...) can be used; nginx variables such as \
                     $host or $request_uri are not supported"
                        .into(),
                );
            }
            _ => out.push_str("$$"),
        }
    }
    Ok(out)
}

fn parse_method(v: &str) -> Result<Method, String> {
    const METHODS: &[&str] = &[
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
    ];
    let upper = v.to_ascii_uppercase();
    if !METHODS.contains(&upper.as_str()) {
        return Err(format!("expected one of {}", METHODS.join(", ")));
    }
    Method::from_bytes(upper.as_bytes()).map_err(|e| e.to_string())
}

fn parse_header_names(v: &str) -> Result<Vec<HeaderName>, String> {
    let mut out: Vec<HeaderName> = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let name = HeaderName::from_bytes(item.as_bytes()).map_err(|_| {
            format!("{item:?} is not a header name; expected a comma-separated list like X-User-Id, X-Email")
        })?;
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// ingress-nginx's `auth-cache-key` is an nginx expression such as
/// `$remote_user$http_authorization`. airgate's cache keys on request headers, so each
/// variable maps to the header it comes from; anything else is refused, because keying on
/// less than the user asked for would share one client's answer with another.
fn parse_cache_key(v: &str) -> Result<Vec<HeaderName>, String> {
    let mut out: Vec<HeaderName> = Vec::new();
    let mut rest = v;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let (var, after) = if let Some(braced) = rest.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| "unterminated ${...} variable".to_string())?;
            (&braced[..end], &braced[end + 1..])
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        rest = after;
        let lower = var.to_ascii_lowercase();
        let header = if lower == "remote_user" || lower == "http_authorization" {
            "authorization".to_string()
        } else if let Some(h) = lower.strip_prefix("http_") {
            h.replace('_', "-")
        } else if lower.starts_with("cookie_") {
            // Keying on the whole Cookie header is finer than one cookie: never shares.
            "cookie".to_string()
        } else {
            return Err(format!(
                "variable ${var} is not supported; airgate keys the auth cache on request \
                 headers only: use $http_<header> (e.g. $http_authorization, $http_x_api_key), \
                 $remote_user or $cookie_<name>"
            ));
        };
        let name = HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| format!("variable ${var} does not name a valid header"))?;
        if !out.contains(&name) {
            out.push(name);
        }
    }
    if out.is_empty() {
        return Err(
            "expected an expression with request variables like $http_authorization; a \
             constant key would share one cached answer among all clients"
                .into(),
        );
    }
    Ok(out)
}

/// `auth-cache-duration`: entries like `200 202 401 5m`, comma-separated (nginx
/// `proxy_cache_valid`). airgate caches allow and deny answers with one TTL: the shortest
/// duration given. `Ok(None)` when no entry covers a 2xx answer (nothing to cache safely).
fn parse_cache_duration(v: &str) -> Result<Option<Duration>, String> {
    let expected = "expected status codes and a duration, e.g. \"200 202 401 5m\" or \
                    \"200 10m, 401 1m\"";
    let mut shortest: Option<Duration> = None;
    let mut covers_success = false;
    let mut entries = 0;
    for entry in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        entries += 1;
        let mut words: Vec<&str> = entry.split_whitespace().collect();
        let time = words.pop().ok_or_else(|| expected.to_string())?;
        let d = parse_nginx_time(time)
            .ok()
            .filter(|d| *d <= MAX_DURATION)
            .ok_or_else(|| format!("{time:?} is not a duration of at most a year; {expected}"))?;
        if words.is_empty() {
            // nginx: a bare time caches 200, 301 and 302.
            covers_success = true;
        }
        for w in words {
            if w == "any" {
                covers_success = true;
                continue;
            }
            match w.parse::<u16>() {
                Ok(code) if (100..=599).contains(&code) => {
                    covers_success |= (200..300).contains(&code);
                }
                _ => return Err(format!("{w:?} is not a status code; {expected}")),
            }
        }
        shortest = Some(shortest.map_or(d, |s| s.min(d)));
    }
    if entries == 0 {
        return Err(expected.into());
    }
    Ok(shortest.filter(|d| covers_success && !d.is_zero()))
}

/// nginx time: `30s`, `5m`, `1h30m`, `1d`, `500ms`; a bare number is seconds.
fn parse_nginx_time(v: &str) -> Result<Duration, String> {
    if let Ok(n) = v.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total = Duration::ZERO;
    let mut rest = v;
    let mut parts = 0;
    while !rest.is_empty() && parts < 16 {
        parts += 1;
        let n_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("{v:?} lacks a unit"))?;
        let n: u64 = rest[..n_end]
            .parse()
            .map_err(|_| format!("invalid time {v:?}"))?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_secs: f64 = match &rest[..u_end] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "w" => 604_800.0,
            "M" => 2_592_000.0,
            "y" => 31_536_000.0,
            _ => return Err(format!("invalid time {v:?}")),
        };
        rest = &rest[u_end..];
        total += Duration::try_from_secs_f64(n as f64 * unit_secs)
            .map_err(|_| format!("time {v:?} is out of range"))?;
    }
    if !rest.is_empty() {
        return Err(format!("invalid time {v:?}"));
    }
    Ok(total)
}

/// The auth hook's upstream and request target from `auth-url`.
// The translate module's `endpoints::url_upstream` does the same for url backends;
// dedupe once both are on main.
fn auth_target(v: &str) -> Result<(Upstream, String, HookTarget), String> {
    let expected = "expected an http:// or https:// URL like http://auth.auth.svc:8080/verify";
    if v.contains('$') {
        return Err(format!(
            "nginx variables ($host, $request_uri...) are not supported in the URL; {expected}"
        ));
    }
    let uri: Uri = v.parse().map_err(|_| expected.to_string())?;
    let (protocol, default_port) = match uri.scheme_str() {
        Some("http") => (UpstreamProtocol::Http, 80),
        Some("https") => (UpstreamProtocol::Https, 443),
        _ => return Err(expected.into()),
    };
    let authority = uri.authority().ok_or_else(|| expected.to_string())?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "credentials in the URL are not supported; {expected}"
        ));
    }
    let host = authority.host();
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    if bare_host.is_empty() {
        return Err(expected.into());
    }
    let port = authority.port_u16().unwrap_or(default_port);
    let endpoints = match bare_host.parse::<IpAddr>() {
        Ok(ip) => Endpoints::Static(vec![SocketAddr::new(ip, port)]),
        Err(_) => Endpoints::Dns {
            host: bare_host.to_ascii_lowercase(),
            port,
        },
    };
    let host_override =
        HeaderValue::from_str(authority.as_str()).map_err(|_| expected.to_string())?;
    let path_and_query = uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .filter(|pq| pq.starts_with('/'))
        .unwrap_or("/")
        .to_string();
    let upstream = Upstream {
        name: Arc::from(v),
        protocol,
        endpoints,
        base_path: String::new(),
        host_override: Some(host_override),
        tls_server_name: (protocol == UpstreamProtocol::Https).then(|| bare_host.to_string()),
        next: AtomicUsize::new(0),
    };
    let target = HookTarget::new(&upstream, &path_and_query)?;
    Ok((upstream, path_and_query, target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn n(name: &str) -> String {
        format!("{NGINX_PREFIX}{name}")
    }

    fn a(name: &str) -> String {
        format!("{AIRGATE_PREFIX}{name}")
    }

    fn ingress(pairs: &[(String, &str)]) -> Ingress {
        Ingress {
            metadata: ObjectMeta {
                name: Some("chat".into()),
                namespace: Some("ai".into()),
                annotations: Some(
                    pairs
                        .iter()
                        .map(|(k, v)| (k.clone(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Parse and apply to one fresh route policy, as translate does per path.
    fn policy(
        pairs: &[(String, &str)],
        tls: bool,
    ) -> (RoutePolicy, Vec<ZoneSpec>, Vec<Diagnostic>) {
        let (ann, diags) = parse(&ingress(pairs));
        let mut p = RoutePolicy::default();
        let mut zones = Vec::new();
        apply(&ann, &mut p, &mut zones, tls);
        (p, zones, diags)
    }

    fn errors(diags: &[Diagnostic]) -> Vec<&Diagnostic> {
        diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .collect()
    }

    /// The one error diagnostic, which must name the Ingress and the exact key.
    fn single_error<'a>(diags: &'a [Diagnostic], key: &str) -> &'a Diagnostic {
        let errs = errors(diags);
        assert_eq!(errs.len(), 1, "expected one error, got {diags:#?}");
        let d = errs[0];
        assert_eq!(d.object.to_string(), "Ingress ai/chat");
        assert_eq!(d.field, format!("metadata.annotations[{key}]"));
        assert!(
            d.message.contains(key),
            "message must name {key}: {}",
            d.message
        );
        d
    }

    fn denies_all(p: &RoutePolicy) -> bool {
        p.allow_sources.as_ref().is_some_and(|s| s.is_empty())
    }

    // ---- rate limiting -----------------------------------------------------------------

    #[test]
    fn limit_rps_builds_a_zone_with_ingress_nginx_defaults() {
        let (p, zones, diags) = policy(&[(n("limit-rps"), "10")], false);
        assert!(diags.is_empty(), "{diags:#?}");
        assert_eq!(zones.len(), 1);
        assert_eq!(&*zones[0].id, "ai/chat/rps");
        assert_eq!(zones[0].requests, 10);
        assert_eq!(zones[0].per, Duration::from_secs(1));
        assert_eq!(zones[0].key, ZoneKey::ClientIp);
        assert_eq!(zones[0].size_bytes, 10 * 1024 * 1024);
        let rl = p.rate_limit.expect("rate limit");
        assert_eq!(rl.zone, 0);
        assert_eq!(rl.burst, 50, "burst = rate x default multiplier 5");
        assert!(rl.nodelay);
        assert_eq!(rl.reject_status, 503);
        assert!(rl.exempt.is_none());
    }

    #[test]
    fn limit_rpm_multiplier_allowlist_and_status() {
        let (p, zones, diags) = policy(
            &[
                (n("limit-rpm"), "4"),
                (n("limit-burst-multiplier"), "2"),
                (n("limit-whitelist"), "10.0.0.0/8, 192.168.1.7"),
                (a("limit-status-code"), "429"),
            ],
            false,
        );
        assert!(diags.is_empty(), "{diags:#?}");
        assert_eq!(&*zones[0].id, "ai/chat/rpm");
        assert_eq!(zones[0].per, Duration::from_secs(60));
        let rl = p.rate_limit.expect("rate limit");
        assert_eq!(rl.burst, 8);
        assert_eq!(rl.reject_status, 429);
        let exempt = rl.exempt.expect("exempt");
        assert_eq!(exempt.len(), 2);
        assert!(exempt[0].contains(&"10.1.2.3".parse::<IpAddr>().unwrap()));
        assert!(exempt[1].contains(&"192.168.1.7".parse::<IpAddr>().unwrap()));
        assert!(!exempt[1].contains(&"192.168.1.8".parse::<IpAddr>().unwrap()));
    }

    #[test]
    fn limit_allowlist_is_an_alias_of_limit_whitelist() {
        let (p, _, diags) = policy(
            &[(n("limit-rps"), "1"), (n("limit-allowlist"), "127.0.0.1")],
            false,
        );
        assert!(diags.is_empty(), "{diags:#?}");
        assert_eq!(p.rate_limit.unwrap().exempt.unwrap().len(), 1);
    }

    #[test]
    fn airgate_prefix_wins_over_ingress_nginx() {
        let (_, zones, _) = policy(&[(n("limit-rps"), "10"), (a("limit-rps"), "3")], false);
        assert_eq!(zones[0].requests, 3);
        // Also when the airgate value is invalid: it is the one reported, nothing applied.
        let (p, zones, diags) = policy(&[(n("limit-rps"), "10"), (a("limit-rps"), "ten")], false);
        single_error(&diags, &a("limit-rps"));
        assert!(p.rate_limit.is_none() && zones.is_empty());
    }

    #[test]
    fn both_rps_and_rpm_keep_the_stricter_and_warn() {
        let (_, zones, diags) = policy(&[(n("limit-rps"), "10"), (n("limit-rpm"), "60")], false);
        assert_eq!(
            &*zones[0].id, "ai/chat/rpm",
            "60 r/m is stricter than 10 r/s"
        );
        assert!(diags.iter().any(|d| d.severity == Severity::Warning));
        assert!(errors(&diags).is_empty());
        let (_, zones, _) = policy(&[(n("limit-rps"), "1"), (n("limit-rpm"), "600")], false);
        assert_eq!(&*zones[0].id, "ai/chat/rps");
    }

    #[test]
    fn invalid_rate_annotation_drops_all_rate_limiting() {
        for (key, value) in [
            (n("limit-rps"), "10r/s"),
            (n("limit-burst-multiplier"), "0"),
            (n("limit-whitelist"), "10.0.0.0/33"),
            (a("limit-status-code"), "200"),
        ] {
            let mut pairs = vec![(n("limit-rps"), "10")];
            pairs.retain(|(k, _)| *k != key);
            pairs.push((key.clone(), value));
            let (p, zones, diags) = policy(&pairs, false);
            single_error(&diags, &key);
            assert!(p.rate_limit.is_none(), "{key}={value} must not half-apply");
            assert!(zones.is_empty());
            assert!(!denies_all(&p), "rate limiting fails open, not closed");
        }
    }

    #[test]
    fn zero_rps_means_no_limit_and_huge_burst_is_an_error() {
        let (p, zones, diags) = policy(&[(n("limit-rps"), "0")], false);
        assert!(diags.is_empty() && p.rate_limit.is_none() && zones.is_empty());
        let (p, _, diags) = policy(
            &[
                (n("limit-rps"), "4000000000"),
                (n("limit-burst-multiplier"), "5"),
            ],
            false,
        );
        single_error(&diags, &n("limit-burst-multiplier"));
        assert!(p.rate_limit.is_none());
    }

    #[test]
    fn paths_of_one_ingress_share_its_zone() {
        let (ann, _) = parse(&ingress(&[(n("limit-rps"), "5")]));
        let mut zones = vec![ZoneSpec {
            id: Arc::from("other/zone"),
            requests: 1,
            per: Duration::from_secs(1),
            key: ZoneKey::ClientIp,
            size_bytes: 1,
        }];
        let mut first = RoutePolicy::default();
        let mut second = RoutePolicy::default();
        apply(&ann, &mut first, &mut zones, false);
        apply(&ann, &mut second, &mut zones, false);
        assert_eq!(zones.len(), 2);
        assert_eq!(first.rate_limit.unwrap().zone, 1);
        assert_eq!(second.rate_limit.unwrap().zone, 1);
    }

    // ---- CORS --------------------------------------------------------------------------

    #[test]
    fn cors_needs_enable_cors_true() {
        let (p, _, diags) = policy(&[(n("cors-allow-origin"), "https://a.example")], false);
        assert!(p.cors.is_none());
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].severity, Severity::Warning);
        let (p, _, _) = policy(&[(n("enable-cors"), "false")], false);
        assert!(p.cors.is_none());
    }

    #[test]
    fn cors_defaults_are_ingress_nginx_defaults_without_star_and_credentials() {
        let (p, _, diags) = policy(&[(n("enable-cors"), "true")], false);
        assert!(diags.is_empty(), "{diags:#?}");
        let c = p.cors.expect("cors");
        assert!(c.allow_any_origin);
        assert!(
            !c.allow_credentials,
            "`*` must never be combined with credentials"
        );
        assert_eq!(c.allow_methods, "GET, PUT, POST, DELETE, PATCH, OPTIONS");
        assert_eq!(c.allow_headers, DEFAULT_CORS_HEADERS);
        assert!(c.expose_headers.is_none());
        assert_eq!(c.max_age, "1728000");
    }

    #[test]
    fn cors_origins_methods_headers_and_credentials() {
        let (p, _, diags) = policy(
            &[
                (a("enable-cors"), "true"),
                (
                    n("cors-allow-origin"),
                    "https://App.Example.com, https://*.example.org:8443,http://localhost:3000",
                ),
                (n("cors-allow-methods"), "GET,POST"),
                (n("cors-allow-headers"), "Authorization, Content-Type"),
                (n("cors-expose-headers"), "X-Request-Id"),
                (n("cors-max-age"), "600"),
            ],
            false,
        );
        assert!(diags.is_empty(), "{diags:#?}");
        let c = p.cors.expect("cors");
        assert!(!c.allow_any_origin);
        assert!(c.allow_credentials, "ingress-nginx default is true");
        assert_eq!(
            c.exact_origins,
            vec!["https://app.example.com", "http://localhost:3000"]
        );
        assert_eq!(
            c.wildcard_origins,
            vec![("https://".to_string(), ".example.org:8443".to_string())]
        );
        assert_eq!(c.allow_methods, "GET, POST");
        assert_eq!(c.allow_headers, "Authorization, Content-Type");
        assert_eq!(c.expose_headers.as_ref().unwrap(), "X-Request-Id");
        assert_eq!(c.max_age, "600");
    }

    #[test]
    fn cors_explicit_credentials_with_star_warns_and_stays_off() {
        let (p, _, diags) = policy(
            &[
                (n("enable-cors"), "true"),
                (n("cors-allow-credentials"), "true"),
            ],
            false,
        );
        let c = p.cors.expect("cors");
        assert!(c.allow_any_origin && !c.allow_credentials);
        assert!(errors(&diags).is_empty());
        assert!(
            diags
                .iter()
                .any(|d| d.reason == "CorsCredentialsWithAnyOrigin")
        );
        let (p, _, _) = policy(
            &[
                (n("enable-cors"), "true"),
                (n("cors-allow-origin"), "https://a.example"),
                (n("cors-allow-credentials"), "false"),
            ],
            false,
        );
        assert!(!p.cors.unwrap().allow_credentials);
    }

    #[test]
    fn invalid_cors_annotation_drops_cors() {
        for (key, value) in [
            (n("enable-cors"), "yes"),
            (n("cors-allow-origin"), "app.example.com"),
            (n("cors-allow-origin"), "https://app.example.com/path"),
            (n("cors-allow-methods"), "GET;POST"),
            (n("cors-allow-headers"), "X-A B"),
            (n("cors-allow-credentials"), "sure"),
            (n("cors-max-age"), "forever"),
        ] {
            let mut pairs = vec![(n("enable-cors"), "true")];
            pairs.retain(|(k, _)| *k != key);
            pairs.push((key.clone(), value));
            let (p, _, diags) = policy(&pairs, false);
            single_error(&diags, &key);
            assert!(p.cors.is_none(), "{key}={value} must not half-apply");
        }
    }

    // ---- body size, buffering, timeouts ------------------------------------------------

    #[test]
    fn proxy_body_size_formats() {
        for (value, expected) in [
            ("8m", Some(8 << 20)),
            ("8M", Some(8 << 20)),
            ("512k", Some(512 << 10)),
            ("1g", Some(1 << 30)),
            ("1048576", Some(1_048_576)),
            ("10Mi", Some(10 << 20)),
            ("0", None),
        ] {
            let (p, _, diags) = policy(&[(n("proxy-body-size"), value)], false);
            assert!(diags.is_empty(), "{value}: {diags:#?}");
            assert_eq!(p.max_body_size, expected, "{value}");
        }
        let (p, _, _) = policy(&[], false);
        assert_eq!(
            p.max_body_size,
            Some(crate::config::DEFAULT_MAX_BODY_SIZE),
            "unset keeps airgate's default"
        );
        let (p, _, diags) = policy(&[(n("proxy-body-size"), "8mb")], false);
        single_error(&diags, &n("proxy-body-size"));
        assert_eq!(p.max_body_size, Some(crate::config::DEFAULT_MAX_BODY_SIZE));
    }

    #[test]
    fn proxy_buffering_accepts_on_and_off_and_always_streams() {
        for v in ["on", "off"] {
            let (p, _, diags) = policy(&[(n("proxy-buffering"), v)], false);
            assert!(diags.is_empty());
            assert!(p.streaming);
        }
        let (_, _, diags) = policy(&[(n("proxy-buffering"), "yes")], false);
        single_error(&diags, &n("proxy-buffering"));
    }

    #[test]
    fn proxy_timeouts_in_seconds_or_durations() {
        let (p, _, diags) = policy(
            &[
                (n("proxy-connect-timeout"), "3"),
                (n("proxy-send-timeout"), "120"),
                (n("proxy-read-timeout"), "1h"),
            ],
            false,
        );
        assert!(diags.is_empty(), "{diags:#?}");
        assert_eq!(p.timeouts.connect, Duration::from_secs(3));
        assert_eq!(p.timeouts.send, Duration::from_secs(120));
        assert_eq!(p.timeouts.read, Duration::from_secs(3600));
        let (_, _, diags) = policy(&[(n("proxy-read-timeout"), "18446744073709551615")], false);
        single_error(&diags, &n("proxy-read-timeout"));
        let (p, _, diags) = policy(
            &[
                (n("proxy-connect-timeout"), "3"),
                (n("proxy-read-timeout"), "-1"),
            ],
            false,
        );
        single_error(&diags, &n("proxy-read-timeout"));
        assert_eq!(
            p.timeouts,
            crate::config::Timeouts::default(),
            "none applied"
        );
        let (_, _, diags) = policy(&[(n("proxy-send-timeout"), "0")], false);
        single_error(&diags, &n("proxy-send-timeout"));
    }

    // ---- redirects ---------------------------------------------------------------------

    #[test]
    fn ssl_redirect_defaults_to_308_on_tls_hosts() {
        assert_eq!(policy(&[], true).0.https_redirect, Some(308));
        assert_eq!(policy(&[], false).0.https_redirect, None);
        let off = [(n("ssl-redirect"), "false")];
        assert_eq!(policy(&off, true).0.https_redirect, None);
        let force = [(n("force-ssl-redirect"), "true")];
        assert_eq!(policy(&force, false).0.https_redirect, Some(308));
        let both = [
            (n("ssl-redirect"), "false"),
            (a("force-ssl-redirect"), "true"),
        ];
        assert_eq!(policy(&both, true).0.https_redirect, Some(308));
        let (p, _, diags) = policy(&[(n("ssl-redirect"), "nope")], true);
        single_error(&diags, &n("ssl-redirect"));
        assert_eq!(p.https_redirect, Some(308), "invalid keeps the default");
    }

    // ---- rewrite -----------------------------------------------------------------------

    fn rewrite(pairs: &[(String, &str)], path: &str, request: &str) -> Option<String> {
        let (ann, diags) = parse(&ingress(pairs));
        assert!(errors(&diags).is_empty(), "{diags:#?}");
        match rewrite_for_path(&ann, path) {
            PathRewrite::Regex { regex, replacement } => {
                Some(regex.replace(request, replacement.as_str()).into_owned())
            }
            PathRewrite::None => None,
            PathRewrite::StripPrefix(_) => panic!("unexpected strip prefix"),
        }
    }

    #[test]
    fn rewrite_target_with_capture_groups() {
        let pairs = [(n("rewrite-target"), "/$2")];
        let path = "/something(/|$)(.*)";
        assert_eq!(
            rewrite(&pairs, path, "/something/new").as_deref(),
            Some("/new")
        );
        assert_eq!(rewrite(&pairs, path, "/something").as_deref(), Some("/"));
        assert_eq!(
            rewrite(&pairs, path, "/SomeThing/a/b").as_deref(),
            Some("/a/b"),
            "ingress-nginx regex locations are case-insensitive"
        );
        let (ann, _) = parse(&ingress(&pairs));
        assert!(
            ann.use_regex,
            "rewrite-target implies use-regex, as in ingress-nginx"
        );
    }

    #[test]
    fn rewrite_target_replaces_the_whole_path_like_nginx() {
        let pairs = [(n("rewrite-target"), "/")];
        assert_eq!(
            rewrite(&pairs, "/api", "/api/v1/models").as_deref(),
            Some("/")
        );
    }

    #[test]
    fn rewrite_target_group_followed_by_text_and_literal_dollar() {
        let pairs = [(a("rewrite-target"), "/v1/$1abc$")];
        assert_eq!(
            rewrite(&pairs, "/x/(.*)", "/x/q").as_deref(),
            Some("/v1/qabc$"),
            "$1 followed by letters is group 1, a trailing $ is literal"
        );
    }

    #[test]
    fn no_rewrite_without_target_and_use_regex_alone() {
        let (ann, diags) = parse(&ingress(&[(n("use-regex"), "true")]));
        assert!(diags.is_empty());
        assert!(ann.use_regex);
        assert!(matches!(rewrite_for_path(&ann, "/a.*"), PathRewrite::None));
        let (ann, _) = parse(&ingress(&[]));
        assert!(!ann.use_regex);
    }

    #[test]
    fn rewrite_target_with_nginx_variables_is_refused() {
        for v in ["/$host/x", "https://other.example/$1", "/${request_uri}"] {
            let (ann, diags) = parse(&ingress(&[(n("rewrite-target"), v)]));
            single_error(&diags, &n("rewrite-target"));
            assert!(
                matches!(rewrite_for_path(&ann, "/(.*)"), PathRewrite::None),
                "{v}"
            );
        }
    }

    #[test]
    fn path_regex_is_anchored_and_case_insensitive() {
        let re = path_regex("/api/v[0-9]+").unwrap();
        assert!(re.is_match("/API/v1/chat"));
        assert!(!re.is_match("/x/api/v1"));
        assert!(path_regex("/(").is_err());
    }

    // ---- auth --------------------------------------------------------------------------

    #[test]
    fn auth_url_builds_a_hook() {
        let (p, _, diags) = policy(
            &[
                (
                    n("auth-url"),
                    "http://auth.auth.svc.cluster.local:8080/verify?scope=llm",
                ),
                (n("auth-method"), "post"),
                (n("auth-response-headers"), "X-User-Id, X-Email"),
            ],
            false,
        );
        assert!(diags.is_empty(), "{diags:#?}");
        let hook = p.auth.clone().expect("hook");
        assert_eq!(&*hook.id, "ai/chat");
        assert_eq!(hook.path_and_query, "/verify?scope=llm");
        assert_eq!(hook.method, Method::POST);
        assert_eq!(hook.copy_headers, vec!["x-user-id", "x-email"]);
        assert_eq!(
            hook.forward_headers,
            vec!["authorization", "cookie", "x-api-key"]
        );
        assert!(hook.cache.is_none());
        assert_eq!(hook.failure_status, 500);
        assert_eq!(hook.timeout, Duration::from_secs(5));
        let up = &hook.upstream;
        assert_eq!(up.protocol, UpstreamProtocol::Http);
        assert!(
            matches!(&up.endpoints, Endpoints::Dns { host, port } if host == "auth.auth.svc.cluster.local" && *port == 8080)
        );
        assert_eq!(
            up.host_override.as_ref().unwrap(),
            "auth.auth.svc.cluster.local:8080"
        );
        assert!(up.tls_server_name.is_none());
        assert!(!denies_all(&p));
    }

    #[test]
    fn auth_url_https_ip_and_defaults() {
        let (p, _, diags) = policy(&[(a("auth-url"), "https://127.0.0.1")], false);
        assert!(diags.is_empty(), "{diags:#?}");
        let hook = p.auth.unwrap();
        assert_eq!(hook.path_and_query, "/");
        assert_eq!(hook.method, Method::GET);
        let up = &hook.upstream;
        assert_eq!(up.protocol, UpstreamProtocol::Https);
        assert_eq!(up.tls_server_name.as_deref(), Some("127.0.0.1"));
        assert!(
            matches!(&up.endpoints, Endpoints::Static(a) if a == &["127.0.0.1:443".parse::<SocketAddr>().unwrap()])
        );
    }

    #[test]
    fn auth_cache_key_and_duration() {
        let (p, _, diags) = policy(
            &[
                (n("auth-url"), "http://10.0.0.5/auth"),
                (
                    n("auth-cache-key"),
                    "$remote_user$http_authorization:$http_x_tenant_id",
                ),
                (n("auth-cache-duration"), "200 202 10m, 401 1m"),
                (a("auth-forward-headers"), "Authorization"),
                (a("auth-timeout"), "2s"),
                (a("auth-failure-status"), "503"),
            ],
            false,
        );
        assert!(diags.is_empty(), "{diags:#?}");
        let hook = p.auth.unwrap();
        let cache = hook.cache.as_ref().expect("cache");
        assert_eq!(cache.key, vec!["authorization", "x-tenant-id"]);
        assert_eq!(cache.ttl, Duration::from_secs(60), "shortest TTL");
        assert_eq!(
            hook.forward_headers,
            vec!["authorization", "x-tenant-id"],
            "the hook sees every header its answer is cached under"
        );
        assert_eq!(hook.timeout, Duration::from_secs(2));
        assert_eq!(hook.failure_status, 503);
        // Default duration: 200 202 401 5m.
        let (p, _, _) = policy(
            &[
                (n("auth-url"), "http://10.0.0.5/auth"),
                (n("auth-cache-key"), "$cookie_session"),
            ],
            false,
        );
        let cache = p.auth.unwrap().cache.clone().unwrap();
        assert_eq!(cache.ttl, Duration::from_secs(300));
        assert_eq!(cache.key, vec!["cookie"]);
    }

    #[test]
    fn auth_cache_only_for_denials_is_not_cached() {
        let (p, _, diags) = policy(
            &[
                (n("auth-url"), "http://10.0.0.5/auth"),
                (n("auth-cache-key"), "$http_authorization"),
                (n("auth-cache-duration"), "401 5m"),
            ],
            false,
        );
        assert!(errors(&diags).is_empty());
        assert!(diags.iter().any(|d| d.reason == "AuthCacheDisabled"));
        let hook = p.auth.expect("hook still applies");
        assert!(hook.cache.is_none());
    }

    #[test]
    fn invalid_auth_annotation_fails_closed() {
        for (key, value) in [
            (n("auth-url"), "auth.svc/verify"),
            (n("auth-url"), "ftp://auth/verify"),
            (n("auth-url"), "http://$host/oauth2/auth"),
            (n("auth-url"), "http://user:pw@auth/verify"),
            (n("auth-method"), "FETCH"),
            (n("auth-response-headers"), "X User"),
            (n("auth-cache-key"), "$remote_addr"),
            (n("auth-cache-key"), "static"),
            (n("auth-cache-duration"), "200 five minutes"),
            (a("auth-timeout"), "2"),
            (a("auth-failure-status"), "502"),
        ] {
            let mut pairs = vec![(n("auth-url"), "http://auth.svc/verify")];
            pairs.retain(|(k, _)| *k != key);
            pairs.push((key.clone(), value));
            let (p, _, diags) = policy(&pairs, false);
            single_error(&diags, &key);
            assert!(p.auth.is_none(), "{key}={value}");
            assert!(denies_all(&p), "{key}={value} must fail closed");
        }
    }

    #[test]
    fn auth_options_without_url_warn_and_do_nothing() {
        let (p, _, diags) = policy(&[(n("auth-method"), "GET")], false);
        assert!(p.auth.is_none() && !denies_all(&p));
        assert!(errors(&diags).is_empty());
        assert_eq!(diags.len(), 1);
    }

    // ---- source ranges -----------------------------------------------------------------

    #[test]
    fn whitelist_source_range_restricts_clients() {
        let (p, _, diags) = policy(
            &[(
                n("whitelist-source-range"),
                "10.0.0.0/8,  2001:db8::/32 ,192.168.0.1",
            )],
            false,
        );
        assert!(diags.is_empty(), "{diags:#?}");
        let nets = p.allow_sources.expect("allow list");
        assert_eq!(nets.len(), 3);
        assert!(
            nets.iter()
                .any(|n| n.contains(&"2001:db8::1".parse::<IpAddr>().unwrap()))
        );
        // Alias and precedence: airgate.dev/ wins over the ingress-nginx key.
        let (p, _, _) = policy(
            &[
                (n("allowlist-source-range"), "10.0.0.0/8"),
                (a("whitelist-source-range"), "127.0.0.1/32"),
            ],
            false,
        );
        let nets = p.allow_sources.unwrap();
        assert_eq!(nets.len(), 1);
        assert!(nets[0].contains(&"127.0.0.1".parse::<IpAddr>().unwrap()));
        // Empty means unrestricted, as in ingress-nginx.
        let (p, _, diags) = policy(&[(n("whitelist-source-range"), "")], false);
        assert!(diags.is_empty() && p.allow_sources.is_none());
    }

    #[test]
    fn invalid_source_range_fails_closed() {
        let key = n("whitelist-source-range");
        let (p, _, diags) = policy(&[(key.clone(), "10.0.0.0/8, everyone")], false);
        single_error(&diags, &key);
        assert!(denies_all(&p));
    }

    // ---- backend protocol, security headers --------------------------------------------

    #[test]
    fn backend_protocols() {
        for (v, expected) in [
            ("HTTP", UpstreamProtocol::Http),
            ("HTTPS", UpstreamProtocol::Https),
            ("GRPC", UpstreamProtocol::H2c),
            ("grpcs", UpstreamProtocol::H2),
            ("H2C", UpstreamProtocol::H2c),
        ] {
            let (ann, diags) = parse(&ingress(&[(n("backend-protocol"), v)]));
            assert!(diags.is_empty(), "{v}");
            assert_eq!(ann.backend_protocol, expected, "{v}");
        }
        for v in ["FCGI", "AUTO_HTTP", "SPDY"] {
            let (ann, diags) = parse(&ingress(&[(n("backend-protocol"), v)]));
            single_error(&diags, &n("backend-protocol"));
            assert_eq!(ann.backend_protocol, UpstreamProtocol::Http);
        }
    }

    #[test]
    fn security_headers_is_airgate_only() {
        assert!(
            policy(&[(a("security-headers"), "true")], false)
                .0
                .security_headers
        );
        let (p, _, diags) = policy(&[(n("security-headers"), "true")], false);
        assert!(!p.security_headers);
        assert_eq!(diags[0].reason, "UnsupportedAnnotation");
    }

    // ---- refused and unknown annotations -----------------------------------------------

    #[test]
    fn snippets_are_refused_and_the_ingress_serves_nothing() {
        for name in [
            "configuration-snippet",
            "server-snippet",
            "auth-snippet",
            "stream-snippet",
            "modsecurity-snippet",
        ] {
            for key in [n(name), a(name)] {
                let pairs = [
                    (key.clone(), "more_set_headers \"X: y\";"),
                    (n("limit-rps"), "5"),
                ];
                let (ann, diags) = parse(&ingress(&pairs));
                assert!(ann.refused(), "{key}");
                let d = single_error(&diags, &key);
                assert_eq!(d.reason, "SnippetRefused");
                assert!(d.message.contains("raw nginx configuration"));
                let mut p = RoutePolicy::default();
                apply(&ann, &mut p, &mut Vec::new(), false);
                assert!(denies_all(&p), "{key}");
            }
        }
    }

    #[test]
    fn unsupported_access_control_fails_closed() {
        let (ann, diags) = parse(&ingress(&[
            (n("auth-type"), "basic"),
            (n("auth-secret"), "basic-auth"),
        ]));
        assert_eq!(errors(&diags).len(), 2);
        assert!(!ann.refused());
        let mut p = RoutePolicy::default();
        apply(&ann, &mut p, &mut Vec::new(), false);
        assert!(denies_all(&p));
        let (_, diags) = parse(&ingress(&[(n("auth-tls-verify-client"), "off")]));
        assert!(errors(&diags).is_empty());
    }

    #[test]
    fn unknown_annotations_warn() {
        let (ann, diags) = parse(&ingress(&[
            (n("affinity"), "cookie"),
            (a("limit-rsp"), "5"),
            ("kubernetes.io/ingress.class".into(), "airgate"),
        ]));
        assert_eq!(diags.len(), 2, "{diags:#?}");
        assert!(diags.iter().all(|d| d.severity == Severity::Warning));
        assert!(diags.iter().any(|d| d.field.contains("limit-rsp")));
        let mut p = RoutePolicy::default();
        apply(&ann, &mut p, &mut Vec::new(), false);
        assert!(p.allow_sources.is_none());
    }

    #[test]
    fn no_annotations_leave_the_default_policy() {
        let (ann, diags) = parse(&ingress(&[]));
        assert!(diags.is_empty());
        let mut p = RoutePolicy::default();
        apply(&ann, &mut p, &mut Vec::new(), false);
        let d = RoutePolicy::default();
        assert_eq!(p.max_body_size, d.max_body_size);
        assert_eq!(p.timeouts, d.timeouts);
        assert!(p.cors.is_none() && p.auth.is_none() && p.rate_limit.is_none());
        assert!(p.allow_sources.is_none() && p.https_redirect.is_none());
        // An Ingress with no annotations map at all behaves the same.
        let bare = Ingress::default();
        assert!(parse(&bare).1.is_empty());
    }

    #[test]
    fn nginx_time_and_size_parsers() {
        assert_eq!(parse_nginx_time("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(
            parse_nginx_time("1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(parse_nginx_time("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_nginx_time("1d").unwrap(), Duration::from_secs(86400));
        assert!(parse_nginx_time("5x").is_err());
        assert!(parse_nginx_time("m").is_err());
        assert!(parse_nginx_size("99999999999999999g").is_err());
    }

    #[test]
    fn garbage_values_never_panic_and_errors_name_their_key() {
        let values = [
            "",
            " ",
            "\u{0}",
            "$",
            "$$",
            "${",
            "*",
            "-1",
            "99999999999999999999999",
            "🙂",
            "a,b,,",
            "/(",
            "http://",
            "https://[::1",
            "http://[::1]:99999/",
            "1.5",
            "0x10",
            "true,false",
            "200 202",
            ",",
            "$http_",
            "*.",
            "https://*.",
            "1e9s",
        ];
        let names: Vec<&str> = SUPPORTED
            .iter()
            .chain(AIRGATE_ONLY)
            .chain(UNSUPPORTED_ACCESS_CONTROL)
            .copied()
            .collect();
        for name in &names {
            for key in [n(name), a(name)] {
                for value in values {
                    let (ann, diags) = parse(&ingress(&[(key.clone(), value)]));
                    let mut p = RoutePolicy::default();
                    let mut zones = Vec::new();
                    apply(&ann, &mut p, &mut zones, true);
                    let _ = rewrite_for_path(&ann, value);
                    for d in errors(&diags) {
                        assert_eq!(d.field, format!("metadata.annotations[{key}]"), "{d}");
                    }
                }
            }
        }
    }

    /// Everything an Ingress's annotations decide, for comparing two annotation sets.
    fn fingerprint(pairs: &[(String, &str)]) -> String {
        let (ann, diags) = parse(&ingress(pairs));
        assert!(errors(&diags).is_empty(), "{pairs:?}: {diags:#?}");
        let mut p = RoutePolicy::default();
        let mut zones = Vec::new();
        apply(&ann, &mut p, &mut zones, true);
        let rewrite = rewrite_for_path(&ann, "/x/(.*)");
        format!(
            "{p:?} {zones:?} {rewrite:?} {} {:?}",
            ann.use_regex, ann.backend_protocol
        )
    }

    /// Every supported annotation: the airgate.dev/ and ingress-nginx spellings do the same
    /// thing, airgate.dev/ wins when both are set, and the value matters.
    #[test]
    fn every_annotation_under_both_prefixes_with_precedence() {
        let rps = [(n("limit-rps"), "10")];
        let cors = [(n("enable-cors"), "true")];
        let auth = [(n("auth-url"), "http://10.0.0.5/auth")];
        let cached = [
            (n("auth-url"), "http://10.0.0.5/auth"),
            (n("auth-cache-key"), "$http_authorization"),
        ];
        let none: [(String, &str); 0] = [];
        let cors_origin = [
            (n("enable-cors"), "true"),
            (n("cors-allow-origin"), "https://a.example"),
        ];
        let no_ssl = [(n("ssl-redirect"), "false")];
        // (name, other annotations it needs, value, another value, do the values differ?)
        type Case<'a> = (&'a str, &'a [(String, &'a str)], &'a str, &'a str, bool);
        let cases: Vec<Case> = vec![
            ("limit-rps", &none, "10", "3", true),
            ("limit-rpm", &none, "60", "30", true),
            ("limit-burst-multiplier", &rps, "2", "3", true),
            ("limit-whitelist", &rps, "10.0.0.0/8", "127.0.0.1", true),
            ("limit-allowlist", &rps, "10.0.0.0/8", "127.0.0.1", true),
            ("enable-cors", &none, "true", "false", true),
            (
                "cors-allow-origin",
                &cors,
                "https://a.example",
                "https://b.example",
                true,
            ),
            ("cors-allow-methods", &cors, "GET", "POST", true),
            ("cors-allow-headers", &cors, "X-A", "X-B", true),
            ("cors-expose-headers", &cors, "X-A", "X-B", true),
            (
                "cors-allow-credentials",
                &cors_origin,
                "true",
                "false",
                true,
            ),
            ("cors-max-age", &cors, "60", "120", true),
            ("proxy-body-size", &none, "1m", "2m", true),
            ("proxy-buffering", &none, "on", "off", false),
            ("proxy-connect-timeout", &none, "3", "4", true),
            ("proxy-send-timeout", &none, "30", "40", true),
            ("proxy-read-timeout", &none, "600", "700", true),
            ("ssl-redirect", &none, "false", "true", true),
            ("force-ssl-redirect", &no_ssl, "true", "false", true),
            ("rewrite-target", &none, "/$1", "/v1/$1", true),
            ("use-regex", &none, "true", "false", true),
            (
                "auth-url",
                &none,
                "http://10.0.0.5/a",
                "http://10.0.0.5/b",
                true,
            ),
            ("auth-method", &auth, "POST", "GET", true),
            ("auth-response-headers", &auth, "X-A", "X-B", true),
            ("auth-cache-key", &auth, "$http_x_a", "$http_x_b", true),
            ("auth-cache-duration", &cached, "200 1m", "200 2m", true),
            (
                "whitelist-source-range",
                &none,
                "10.0.0.0/8",
                "127.0.0.1",
                true,
            ),
            (
                "allowlist-source-range",
                &none,
                "10.0.0.0/8",
                "127.0.0.1",
                true,
            ),
            ("backend-protocol", &none, "GRPC", "HTTPS", true),
        ];
        assert_eq!(
            cases.len(),
            SUPPORTED.len(),
            "a case per supported annotation"
        );
        for (name, base, v1, v2, differ) in cases {
            let with = |extra: &[(String, &str)]| {
                let mut pairs = base.to_vec();
                pairs.extend_from_slice(extra);
                fingerprint(&pairs)
            };
            let airgate = with(&[(a(name), v1)]);
            assert_eq!(airgate, with(&[(n(name), v1)]), "{name}: prefixes differ");
            assert_eq!(
                airgate,
                with(&[(a(name), v1), (n(name), v2)]),
                "{name}: airgate.dev/ must win"
            );
            if differ {
                assert_ne!(airgate, with(&[(n(name), v2)]), "{name}: value ignored");
            }
        }
    }

    #[test]
    fn ingress_without_namespace_is_in_default() {
        let mut ing = ingress(&[(n("limit-rps"), "1"), (n("proxy-body-size"), "x")]);
        ing.metadata.namespace = None;
        let (ann, diags) = parse(&ing);
        assert_eq!(diags[0].object.to_string(), "Ingress default/chat");
        let mut zones = Vec::new();
        apply(&ann, &mut RoutePolicy::default(), &mut zones, false);
        assert_eq!(&*zones[0].id, "default/chat/rps");
    }

    #[test]
    fn canary_ingress_is_left_out() {
        let key = n("canary");
        let (ann, diags) = parse(&ingress(&[
            (key.clone(), "true"),
            (n("canary-weight"), "10"),
        ]));
        assert!(ann.refused());
        let d = single_error(&diags, &key);
        assert!(d.message.contains("not served"));
        let (ann, diags) = parse(&ingress(&[(key, "false")]));
        assert!(!ann.refused());
        assert!(errors(&diags).is_empty());
    }
}

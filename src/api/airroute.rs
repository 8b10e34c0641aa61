use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// Patterns the API server checks before anything reaches airgate. Translation checks
// the same rules again (file mode has no API server) with messages naming the field.
const HOST_PATTERN: &str =
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const RATE_PATTERN: &str = r"^[1-9][0-9]*r/[sm]$";
const DURATION_PATTERN: &str = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$";
const QUANTITY_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$";
const ZONE_KEY_PATTERN: &str = r"^(clientIP|header:[A-Za-z0-9!#$%&'*+.^_`|~-]+)$";
const HEADER_PATTERN: &str = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$";
const BACKEND_URL_PATTERN: &str = r"^https?://[^\s/?#@]+(/[^\s?#]*)?$";
const HOOK_URL_PATTERN: &str = r"^https?://[^\s/?#@]+(/[^\s#]*)?$";
const PATH_PATTERN: &str = r"^/[^\s?#]*$";
const LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
const ORIGIN_PATTERN: &str = r"^(\*|https?://(\*\.)?[A-Za-z0-9.-]+(:[0-9]+)?)$";
const METHOD_PATTERN: &str = r"^[A-Za-z]+$";

/// An AIRoute publishes AI model services (LLM, TTS, STT, embeddings...) behind airgate,
/// with the policies people used to hand-write in nginx: rate-limit zones, CORS, an auth
/// hook, body limits, long timeouts, streaming and WebSockets.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, KubeSchema, PartialEq)]
#[kube(
    group = "airgate.dev",
    version = "v1alpha1",
    kind = "AIRoute",
    namespaced,
    shortname = "air",
    status = "AIRouteStatus",
    printcolumn = r#"{"name":"Hosts","type":"string","jsonPath":".spec.hosts"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new(
        "self.routes.all(r, !has(r.rateLimit) || (has(self.rateZones) && self.rateZones.exists(z, z.name == r.rateLimit.zone)))"
    ).message("every routes[].rateLimit.zone must name a zone declared in spec.rateZones"),
    validation = Rule::new("self.routes.all(r, !has(r.auth) || !r.auth || has(self.authHook))")
        .message("routes[].auth is true but spec.authHook is not set"),
    validation = Rule::new("!has(self.tls) || (has(self.hosts) && size(self.hosts) > 0)")
        .message("spec.tls needs spec.hosts: certificates are chosen by host name (SNI)")
)]
#[serde(rename_all = "camelCase")]
pub struct AIRouteSpec {
    /// IngressClass that should serve this route; the default class when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub ingress_class_name: Option<String>,
    /// Host names, exact or `*.` wildcard of one label. Empty means any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 253), pattern(HOST_PATTERN)))]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<AIRouteTls>,
    /// Named rate-limit zones (nginx `limit_req_zone`) that routes refer to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(z, self.exists_one(y, y.name == z.name))").message("rateZones names must be unique"))]
    pub rate_zones: Vec<RateZone>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_hook: Option<AuthHook>,
    /// Add the standard security headers (nosniff, frame DENY, referrer policy, CSP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_headers: Option<bool>,
    #[schemars(length(min = 1, max = 64))]
    pub routes: Vec<AIRouteRule>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AIRouteTls {
    /// A `kubernetes.io/tls` Secret in the AIRoute's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Redirect plain HTTP to HTTPS with 308 (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<bool>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateZone {
    /// Zone name that `routes[].rateLimit.zone` refers to (a DNS label).
    #[schemars(length(min = 1, max = 63), pattern(LABEL_PATTERN))]
    pub name: String,
    /// `N r/s` or `N r/m`, written like `10r/s` or `4r/m`.
    #[schemars(length(max = 32), pattern(RATE_PATTERN))]
    pub rate: String,
    /// `clientIP` (default) or `header:<Name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), pattern(ZONE_KEY_PATTERN))]
    pub key: Option<String>,
    /// Memory bound as a Kubernetes quantity (`10Mi`); least recently used keys are evicted.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "scalar::opt_string"
    )]
    #[schemars(schema_with = "quantity_schema")]
    pub size: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, KubeSchema, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.allowCredentials) || !self.allowCredentials || !has(self.allowOrigins) || !self.allowOrigins.exists(o, o == '*')")
        .message("allowOrigins '*' cannot be combined with allowCredentials: true; list the origins")
)]
#[serde(rename_all = "camelCase")]
pub struct Cors {
    /// Exact origins (`https://app.example.com`), one-label wildcards
    /// (`https://*.example.com`), or `*` (only without credentials).
    #[schemars(
        length(min = 1, max = 32),
        inner(length(max = 256), pattern(ORIGIN_PATTERN))
    )]
    pub allow_origins: Vec<String>,
    /// Default `GET, POST, PUT, DELETE, PATCH, OPTIONS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), inner(length(max = 32), pattern(METHOD_PATTERN)))]
    pub allow_methods: Option<Vec<String>>,
    /// Default `Authorization, Content-Type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(max = 256), pattern(HEADER_PATTERN)))]
    pub allow_headers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 256), pattern(HEADER_PATTERN)))]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    /// Duration (`24h`) browsers may cache a preflight answer.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "scalar::opt_string"
    )]
    #[schemars(schema_with = "duration_schema")]
    pub max_age: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, KubeSchema, PartialEq)]
#[x_kube(
    validation = Rule::new("has(self.url) != has(self.service)")
        .message("set exactly one of authHook.url and authHook.service")
)]
#[serde(rename_all = "camelCase")]
pub struct AuthHook {
    /// Absolute http(s) URL of the hook. Exactly one of `url` and `service` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), pattern(HOOK_URL_PATTERN))]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<AuthHookService>,
    /// HTTP method of the sub-request (default GET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(METHOD_PATTERN))]
    pub method: Option<String>,
    /// Request headers sent to the hook; the body never is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 256), pattern(HEADER_PATTERN)))]
    pub forward_headers: Vec<String>,
    /// Hook response headers copied onto the upstream request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 256), pattern(HEADER_PATTERN)))]
    pub copy_headers: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "scalar::opt_string"
    )]
    #[schemars(schema_with = "duration_schema")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<AuthCache>,
    /// Status answered when the hook fails (error, timeout, unexpected status): 500 or 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 500, max = 599))]
    pub failure_status: Option<u16>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthHookService {
    /// A Service in the AIRoute's namespace.
    #[schemars(length(min = 1, max = 63), pattern(LABEL_PATTERN))]
    pub name: String,
    pub port: ServicePort,
    /// Path (and query) of the sub-request (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), pattern(r"^/[^\s#]*$"))]
    pub path: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthCache {
    #[serde(deserialize_with = "scalar::string")]
    #[schemars(schema_with = "duration_schema")]
    pub ttl: String,
    /// Request headers whose values, with the route, key the cache.
    #[serde(default)]
    #[schemars(length(max = 16), inner(length(max = 256), pattern(HEADER_PATTERN)))]
    pub key: Vec<String>,
}

/// A Service port, by number or by name.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum ServicePort {
    Number(u16),
    Name(String),
}

/// Kubernetes needs int-or-string spelled its own way to keep the schema structural.
impl JsonSchema for ServicePort {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ServicePort".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A Service port, by number (1-65535) or by name.",
            "x-kubernetes-int-or-string": true,
            // Length and pattern only constrain the string form (a port name).
            "maxLength": 15,
            "pattern": LABEL_PATTERN,
            "x-kubernetes-validations": [{
                "rule": "type(self) == string || (self >= 1 && self <= 65535)",
                "message": "port must be a number 1-65535 or a port name"
            }]
        })
    }
}

impl Default for ServicePort {
    fn default() -> Self {
        ServicePort::Number(80)
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AIRouteRule {
    /// Request path this route matches; starts with `/`.
    #[schemars(length(min = 1, max = 1024), pattern(PATH_PATTERN))]
    pub path: String,
    /// `Prefix` (default, element-wise like Ingress) or `Exact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "path_type_schema")]
    pub path_type: Option<PathType>,
    /// Remove the matched prefix before forwarding, like nginx `proxy_pass http://upstream/;`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_prefix: Option<bool>,
    pub backend: RouteBackend,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RouteRateLimit>,
    /// Largest request body as a quantity (`10Mi`); `0` means unlimited.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "scalar::opt_string"
    )]
    #[schemars(schema_with = "quantity_schema")]
    pub max_body_size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<RouteTimeouts>,
    /// Never buffer; flush each chunk as it arrives (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming: Option<bool>,
    /// Allow WebSocket upgrades; the read timeout is the idle limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<bool>,
    /// Apply `spec.authHook` (default true when it is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<bool>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, JsonSchema, PartialEq, Eq)]
pub enum PathType {
    #[default]
    Prefix,
    Exact,
}

/// Where a route sends requests: exactly one of `service` and `url`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, KubeSchema, PartialEq)]
#[x_kube(
    validation = Rule::new("has(self.service) != has(self.url)")
        .message("set exactly one of backend.service and backend.url")
)]
#[serde(rename_all = "camelCase")]
pub struct RouteBackend {
    /// A Service in the AIRoute's namespace, resolved through its EndpointSlices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<BackendService>,
    /// A fixed `http://` or `https://` URL instead of a Service; its path is a base
    /// path prepended to the request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), pattern(BACKEND_URL_PATTERN))]
    pub url: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendService {
    #[schemars(length(min = 1, max = 63), pattern(LABEL_PATTERN))]
    pub name: String,
    pub port: ServicePort,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteRateLimit {
    /// Name of a zone in `spec.rateZones`.
    #[schemars(length(min = 1, max = 63))]
    pub zone: String,
    /// Requests admitted above the rate (nginx `burst`, default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1000000))]
    pub burst: Option<u32>,
    /// Admit the burst at once instead of spacing it out (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodelay: Option<bool>,
    /// Status for rejected requests (default 429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 400, max = 599))]
    pub reject_status: Option<u16>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteTimeouts {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "scalar::opt_string"
    )]
    #[schemars(schema_with = "duration_schema")]
    pub connect: Option<String>,
    /// Longest silence between two bytes from the backend.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "scalar::opt_string"
    )]
    #[schemars(schema_with = "duration_schema")]
    pub read: Option<String>,
    /// Longest silence between two bytes sent to the backend.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "scalar::opt_string"
    )]
    #[schemars(schema_with = "duration_schema")]
    pub send: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AIRouteStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A status condition, shaped like `metav1.Condition`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Sizes and durations are strings, but YAML users write `maxBodySize: 0` or `read: 60`;
/// accept numbers so translation can say what is wrong instead of dropping the document.
mod scalar {
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{Error, Visitor};

    // A hand-written visitor rather than an untagged enum: untagged enums buffer the
    // value and their errors lose the field path that file mode reports.
    struct Scalar;

    impl<'de> Visitor<'de> for Scalar {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a number, such as 10Mi or 60s")
        }

        fn visit_str<E: Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }

        fn visit_string<E: Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }

    struct OptScalar;

    impl<'de> Visitor<'de> for OptScalar {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a number, such as 10Mi or 60s")
        }

        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Scalar).map(Some)
        }
    }

    pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_option(OptScalar)
    }

    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_any(Scalar)
    }
}

fn quantity_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "A Kubernetes quantity such as 10Mi, 512Ki or 1Gi.",
        "x-kubernetes-int-or-string": true,
        "pattern": QUANTITY_PATTERN
    })
}

fn duration_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "A Go duration such as 500ms, 60s, 5m or 1h30m.",
        "type": "string",
        "maxLength": 64,
        "pattern": DURATION_PATTERN
    })
}

fn path_type_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Prefix (default; element-wise, like Ingress) or Exact.",
        "type": "string",
        "enum": ["Prefix", "Exact"]
    })
}

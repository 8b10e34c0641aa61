use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An AIRoute publishes AI model services (LLM, TTS, STT, embeddings...) behind airgate,
/// with the policies people used to hand-write in nginx: rate-limit zones, CORS, an auth
/// hook, body limits, long timeouts, streaming and WebSockets.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
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
#[serde(rename_all = "camelCase")]
pub struct AIRouteSpec {
    /// IngressClass that should serve this route; the default class when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class_name: Option<String>,
    /// Host names, exact or `*.` wildcard of one label. Empty means any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<AIRouteTls>,
    /// Named rate-limit zones (nginx `limit_req_zone`) that routes refer to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_zones: Vec<RateZone>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_hook: Option<AuthHook>,
    /// Add the standard security headers (nosniff, frame DENY, referrer policy, CSP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_headers: Option<bool>,
    pub routes: Vec<AIRouteRule>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AIRouteTls {
    /// A `kubernetes.io/tls` Secret in the AIRoute's namespace.
    pub secret_name: String,
    /// Redirect plain HTTP to HTTPS with 308 (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<bool>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateZone {
    pub name: String,
    /// `N r/s` or `N r/m`, written like `10r/s` or `4r/m`.
    pub rate: String,
    /// `clientIP` (default) or `header:<Name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Memory bound as a Kubernetes quantity (`10Mi`); least recently used keys are evicted.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "scalar::opt_string"
    )]
    pub size: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Cors {
    #[serde(default)]
    pub allow_origins: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_methods: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_headers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    /// Duration (`24h`) browsers may cache a preflight answer.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "scalar::opt_string"
    )]
    pub max_age: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthHook {
    /// Absolute http(s) URL of the hook. Exactly one of `url` and `service` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<AuthHookService>,
    /// HTTP method of the sub-request (default GET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Request headers sent to the hook; the body never is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward_headers: Vec<String>,
    /// Hook response headers copied onto the upstream request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_headers: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "scalar::opt_string"
    )]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<AuthCache>,
    /// Status answered when the hook fails (error, timeout, unexpected status): 500 or 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_status: Option<u16>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthHookService {
    pub name: String,
    pub port: ServicePort,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthCache {
    #[serde(deserialize_with = "scalar::string")]
    pub ttl: String,
    #[serde(default)]
    pub key: Vec<String>,
}

/// A Service port, by number or by name.
#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema, PartialEq, Eq)]
#[serde(untagged)]
pub enum ServicePort {
    Number(u16),
    Name(String),
}

impl Default for ServicePort {
    fn default() -> Self {
        ServicePort::Number(80)
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AIRouteRule {
    pub path: String,
    /// `Prefix` (default, element-wise like Ingress) or `Exact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteBackend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<BackendService>,
    /// A fixed `http://` or `https://` URL instead of a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendService {
    pub name: String,
    pub port: ServicePort,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteRateLimit {
    pub zone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodelay: Option<bool>,
    /// Status for rejected requests (default 429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    pub connect: Option<String>,
    /// Longest silence between two bytes from the backend.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "scalar::opt_string"
    )]
    pub read: Option<String>,
    /// Longest silence between two bytes sent to the backend.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "scalar::opt_string"
    )]
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
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        U(u64),
        I(i64),
        F(f64),
    }

    impl Raw {
        fn into_string(self) -> String {
            match self {
                Raw::S(s) => s,
                Raw::U(n) => n.to_string(),
                Raw::I(n) => n.to_string(),
                Raw::F(n) => n.to_string(),
            }
        }
    }

    pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(Option::<Raw>::deserialize(d)?.map(Raw::into_string))
    }

    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(Raw::deserialize(d)?.into_string())
    }
}

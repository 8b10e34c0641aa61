//! Responses the proxy makes itself, in the OpenAI error shape so AI SDKs report them
//! well: `{"error":{"message":"...","type":"...","code":"..."}}`.
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};

use crate::upstream::ProxyBody;

/// `type` and `code` for a status, following the names OpenAI-compatible servers use.
fn classify(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 => ("invalid_request_error", "bad_request"),
        401 => ("authentication_error", "unauthorized"),
        403 => ("permission_error", "forbidden"),
        404 => ("not_found_error", "route_not_found"),
        408 => ("invalid_request_error", "request_timeout"),
        413 => ("invalid_request_error", "request_too_large"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        502 => ("server_error", "bad_gateway"),
        503 => ("server_error", "service_unavailable"),
        504 => ("server_error", "upstream_timeout"),
        s if s >= 500 => ("server_error", "internal_error"),
        _ => ("invalid_request_error", "request_error"),
    }
}

/// A JSON error response with `status` and a human-readable `message`.
pub fn json_error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let (kind, code) = classify(status);
    let body = serde_json::json!({
        "error": {"message": message, "type": kind, "code": code}
    });
    let mut response = Response::new(full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Same as [`json_error`] for a raw status code that may come from configuration.
pub fn json_error_code(status: u16, message: &str) -> Response<ProxyBody> {
    json_error(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        message,
    )
}

pub fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn error_body_is_openai_shaped_and_escaped() {
        let response = json_error(StatusCode::NOT_FOUND, "no route for \"x\"");
        assert_eq!(response.status(), 404);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"]["message"], "no route for \"x\"");
        assert_eq!(v["error"]["type"], "not_found_error");
        assert_eq!(v["error"]["code"], "route_not_found");
    }
}

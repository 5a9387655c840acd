//! Every API failure as OpenAI's error JSON, `{"error": {"message", "type",
//! "param", "code"}}`, with the matching HTTP status. This is the one place
//! statuses are chosen.

use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cocoon_protocol::openai::{ErrorBody, ErrorDetail};
use cocoon_protocol::{ErrorKind, WireError};

/// An API failure: its status, OpenAI's error type, message, and the
/// request field it names (if any).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    pub fn invalid(message: impl Into<String>, param: Option<&str>, code: &str) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message);
        e.param = param.map(str::to_string);
        e.code = Some(code.to_string());
        e
    }

    /// 402: the client contract cannot cover the request.
    pub fn payment_required(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::PAYMENT_REQUIRED, "insufficient_quota", message);
        e.code = Some("insufficient_balance".into());
        e
    }

    /// 503: something this node depends on cannot be reached.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            message,
        );
        e.code = Some("chain_unavailable".into());
        e
    }

    pub fn unauthorized(message: &str) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message);
        e.code = Some("invalid_api_key".into());
        e
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::FORBIDDEN, "invalid_request_error", message);
        e.code = Some("forbidden_origin".into());
        e
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message);
        e.code = Some("unknown_url".into());
        e
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            message,
        )
    }

    pub fn overloaded(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message);
        e.code = Some("overloaded".into());
        e
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout_error", message);
        e.code = Some("timeout".into());
        e
    }

    /// A body refused before the route read it (too large, too slow).
    pub fn from_body_error(error: cocoon_metrics::http::BodyError) -> Self {
        use cocoon_metrics::http::BodyError;
        match error {
            BodyError::TooLarge(_) => {
                let mut e = Self::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request_error",
                    "Request body is larger than this node accepts (see max_body_bytes).",
                );
                e.code = Some("request_too_large".into());
                e
            }
            BodyError::TooSlow(limit) => {
                let mut e = Self::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "invalid_request_error",
                    format!(
                        "The request body did not arrive within {} s.",
                        limit.as_secs()
                    ),
                );
                e.code = Some("request_timeout".into());
                e
            }
            BodyError::Broken(message) => Self::invalid(
                format!("Could not read the request body: {message}"),
                None,
                "invalid_body",
            ),
        }
    }

    pub fn from_body_rejection(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            let mut e = Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "Request body is larger than this node accepts (see max_body_bytes).",
            );
            e.code = Some("request_too_large".into());
            e
        } else {
            Self::invalid(
                format!("Could not read the request body: {rejection}"),
                None,
                "invalid_body",
            )
        }
    }

    /// The JSON object, for errors inside an SSE stream.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: self.kind.to_string(),
                param: self.param.clone(),
                code: self.code.clone(),
            },
        }
    }
}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        let (status, kind, code) = match e.kind {
            ErrorKind::InvalidRequest => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
            ),
            ErrorKind::ModelNotFound => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
            ),
            ErrorKind::NoWorker => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "no_worker",
            ),
            ErrorKind::KeysChanged => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "workers_changed",
            ),
            ErrorKind::Overloaded => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "overloaded",
            ),
            ErrorKind::PaymentRequired => (
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_quota",
                "insufficient_balance",
            ),
            ErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout_error", "timeout"),
            ErrorKind::Upstream => (StatusCode::BAD_GATEWAY, "server_error", "upstream_error"),
            ErrorKind::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
            ),
            ErrorKind::ChainUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "chain_unavailable",
            ),
            ErrorKind::FeatureNotServed => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "unsupported_parameter",
            ),
        };
        let mut out = Self::new(status, kind, e.message);
        out.code = Some(code.into());
        out.param = match e.kind {
            ErrorKind::ModelNotFound => Some("model".into()),
            ErrorKind::InvalidRequest | ErrorKind::FeatureNotServed => {
                named_field(&out.message).map(str::to_string)
            }
            _ => None,
        };
        out
    }
}

/// The request field a worker's or proxy's refusal names, in OpenAI's
/// wording: `'field' is ...` or `Invalid 'field': ...`.
fn named_field(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("Invalid '")
        .or_else(|| message.strip_prefix('\''))?;
    let field = &rest[..rest.find('\'')?];
    let plausible = !field.is_empty()
        && field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.[]".contains(&b));
    plausible.then_some(field)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            // The code only: an upstream engine's message may quote the request.
            tracing::warn!(status = self.status.as_u16(), code = ?self.code, "request failed");
        }
        let status = self.status;
        let mut response = (status, Json(self.body())).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_from_the_network_name_their_field() {
        let e = ApiError::from(WireError::new(
            ErrorKind::InvalidRequest,
            "Invalid 'response_format.json_schema.schema': Unimplemented keys: [\"if\"]",
        ));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.param.as_deref(),
            Some("response_format.json_schema.schema")
        );
        let e = ApiError::from(WireError::new(
            ErrorKind::FeatureNotServed,
            "'response_format' is not served by any worker serving 'm' now",
        ));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some("response_format"));
        assert_eq!(e.code.as_deref(), Some("unsupported_parameter"));
        // No field: no param, and nothing quoted is taken for one.
        let e = ApiError::from(WireError::new(ErrorKind::InvalidRequest, "'a b' is bad"));
        assert_eq!(e.param, None);
        let e = ApiError::from(WireError::new(ErrorKind::Upstream, "'x' failed"));
        assert_eq!(e.param, None);
    }
}

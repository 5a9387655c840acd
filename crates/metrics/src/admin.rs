//! A node's authenticated admin endpoints beside its status ones:
//! `GET /admin/status` and `POST /admin/ACTION` (JSON), for the node's
//! operator (`cocoon worker drain` ...). Every call needs
//! `Authorization: Bearer TOKEN`, the secret in the node's
//! `admin_token_file` (0600, made at first start); a request a browser
//! sends (it carries `Origin`) is refused whatever it holds, so a web page
//! open on the operator's machine cannot drive the node.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// What a node lets its operator do at run time.
pub trait Controls: Send + Sync + 'static {
    /// Its controllable state as JSON.
    fn status(&self) -> serde_json::Value;
    /// Do `action` with `args`; the new state, or why not (the HTTP status
    /// and a message naming the argument).
    fn act(
        &self,
        action: &str,
        args: &serde_json::Value,
    ) -> Result<serde_json::Value, (u16, String)>;
}

/// The admin secret: only its SHA-256 is kept in memory.
#[derive(Clone)]
pub struct AdminToken {
    sha256: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// The token `text` (what callers send).
    pub fn from_secret(text: &str) -> Self {
        Self {
            sha256: Sha256::digest(text.trim().as_bytes()).into(),
        }
    }

    /// Read the token in `path`, or make one there (32 random bytes, hex,
    /// mode 0600) when the file does not exist.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                if text.trim().len() < 32 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{}: an admin token of at least 32 characters",
                            path.display()
                        ),
                    ));
                }
                Ok(Self::from_secret(&text))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = Zeroizing::new([0u8; 32]);
                rand_core::TryRngCore::try_fill_bytes(&mut rand_core::OsRng, bytes.as_mut_slice())
                    .map_err(|e| {
                        std::io::Error::other(format!("no randomness from the OS: {e:?}"))
                    })?;
                let text = Zeroizing::new(hex::encode(bytes.as_slice()));
                cocoon_protocol::tls::write_secret_file(path, text.as_bytes())?;
                Ok(Self::from_secret(&text))
            }
            Err(e) => Err(e),
        }
    }

    /// Whether `presented` is this token (compared in constant time).
    fn accepts(&self, presented: &str) -> bool {
        let theirs: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        theirs
            .iter()
            .zip(self.sha256.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// The admin side of a node: its token and its controls.
#[derive(Clone)]
pub struct Admin {
    pub token: AdminToken,
    pub controls: Arc<dyn Controls>,
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({"error": message}))).into_response()
}

/// Why the caller may not act (a browser, or not the right token); `None`: it may.
fn refusal(admin: &Admin, headers: &HeaderMap) -> Option<Response> {
    if headers.contains_key(axum::http::header::ORIGIN) {
        return Some(refuse(
            StatusCode::FORBIDDEN,
            "admin endpoints do not answer browsers (the request carries Origin)",
        ));
    }
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if admin.token.accepts(token) => None,
        Some(_) => Some(refuse(StatusCode::UNAUTHORIZED, "wrong admin token")),
        None => Some(refuse(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer <the node's admin token>",
        )),
    }
}

/// The node's admin side when the caller may use it, else the answer.
fn admitted(admin: Option<Admin>, headers: &HeaderMap) -> Result<Admin, Box<Response>> {
    let Some(admin) = admin else {
        return Err(Box::new(refuse(
            StatusCode::NOT_FOUND,
            "this node has no admin endpoints (admin_token_file)",
        )));
    };
    match refusal(&admin, headers) {
        Some(refused) => Err(Box::new(refused)),
        None => Ok(admin),
    }
}

pub(crate) async fn status(State(admin): State<Option<Admin>>, headers: HeaderMap) -> Response {
    match admitted(admin, &headers) {
        Ok(admin) => Json(admin.controls.status()).into_response(),
        Err(refused) => *refused,
    }
}

pub(crate) async fn act(
    State(admin): State<Option<Admin>>,
    UrlPath(action): UrlPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let admin = match admitted(admin, &headers) {
        Ok(admin) => admin,
        Err(refused) => return *refused,
    };
    let args = if body.is_empty() {
        serde_json::Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(args) => args,
            Err(e) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    &format!("the body is not JSON: {e}"),
                )
            }
        }
    };
    match admin.controls.act(&action, &args) {
        Ok(state) => Json(state).into_response(),
        Err((code, message)) => refuse(
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
            &message,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        let made = AdminToken::load_or_create(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 64);
        assert!(made.accepts(&text));
        assert!(!made.accepts("0".repeat(64).as_str()));
        let again = AdminToken::load_or_create(&path).unwrap();
        assert!(again.accepts(&text));
        std::fs::write(&path, "short").unwrap();
        assert!(AdminToken::load_or_create(&path).is_err());
    }
}

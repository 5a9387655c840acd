//! Pieces every role's configuration shares: the error that names a bad key, range
//! checks, loading the node key, and connection timing from the keepalive setting.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::tls::Identity;
use crate::MuxOptions;

/// A configuration value that is wrong, named by its key.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    /// `message` (a string, or any error) says what is wrong with `field`.
    pub fn new(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self {
            field: field.into(),
            message: message.to_string(),
        }
    }
}

impl ConfigError {
    /// `field` must lie in `min..=max`.
    pub fn check_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
        if value < min || value > max {
            return Err(ConfigError::new(
                field,
                format!("must be between {min} and {max}, got {value}"),
            ));
        }
        Ok(())
    }
}

/// Load (or create) the node key named by the `identity_key` setting.
/// Listen on `address` for the config key `field`; the error names both.
pub async fn bind(
    field: &str,
    address: std::net::SocketAddr,
) -> Result<tokio::net::TcpListener, ConfigError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| ConfigError::new(field, format!("cannot listen on {address}: {e}")))
}

pub fn load_identity(path: &Path) -> Result<Arc<Identity>, ConfigError> {
    Identity::load_or_create(path)
        .map(Arc::new)
        .map_err(|e| ConfigError::new("identity_key", e.to_string()))
}

impl MuxOptions {
    /// Ping every `keepalive_secs`; drop a peer silent for three pings plus 5 s.
    pub fn from_keepalive(keepalive_secs: u64) -> Self {
        Self {
            keepalive_interval: Duration::from_secs(keepalive_secs),
            idle_timeout: Duration::from_secs(keepalive_secs * 3 + 5),
            ..MuxOptions::default()
        }
    }

    /// Give dialling (TCP, TLS, hello) `secs` seconds.
    pub fn with_connect_timeout(mut self, secs: u64) -> Self {
        self.connect_timeout = Duration::from_secs(secs);
        self
    }
}

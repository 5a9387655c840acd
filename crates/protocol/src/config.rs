//! Pieces every role's configuration shares: the error that names a bad key, and
//! connection timing derived from the keepalive setting.

use std::time::Duration;

use crate::MuxOptions;

/// A configuration value that is wrong, named by its key.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
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
}

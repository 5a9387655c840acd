//! What crosses a key manager's TLS connection: one [`Request`] and one
//! [`Answer`], each a length-delimited postcard frame. Secrets in answers
//! are zeroized by the receiver once taken.

use serde::{Deserialize, Serialize};

use crate::Authorization;

/// Bumped on any change to these types.
pub const VERSION: u16 = 1;
/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub version: u16,
    pub ask: Ask,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Ask {
    /// The key the owner's authorization names, for a node whose evidence
    /// passes the policy as `authorization.role`.
    Key { authorization: Authorization },
    /// The master secret, for a key manager whose evidence passes
    /// `key_manager_images`.
    Master,
}

#[derive(Serialize, Deserialize)]
pub enum Answer {
    Key { key: [u8; 32] },
    Master { secret: [u8; 32] },
    Refused(String),
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Key { .. } => f.write_str("Key(..)"),
            Answer::Master { .. } => f.write_str("Master(..)"),
            Answer::Refused(reason) => write!(f, "Refused({reason})"),
        }
    }
}

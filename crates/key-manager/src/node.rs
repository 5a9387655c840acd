//! A node's side (`[attestation] key_manager`): at start, before it serves
//! anything, a worker or a proxy asks the key manager for its lasting key
//! with an in-memory key whose certificate carries its evidence, and runs
//! with the released key from then on: the same at every start, never in a
//! file the host could read.

use std::sync::Arc;

use cocoon_attestation::PeerRole;
use cocoon_protocol::ra_tls::AttestationCheck;
use cocoon_protocol::tls::Identity;
use cocoon_protocol::{AttestationConfig, ConfigError};

use crate::Authorization;

/// The owner's authorization in `path` (JSON, as `cocoon key-manager
/// authorize` writes it).
pub fn read_authorization(path: &std::path::Path) -> Result<Authorization, ConfigError> {
    let fail = |m: String| {
        ConfigError::new(
            "attestation.key_authorization",
            format!("{}: {m}", path.display()),
        )
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| fail(e.to_string()))
}

/// This node's identity: `ephemeral` itself without a key manager, else
/// `ephemeral`'s TEE, configuration and chain with the key the key manager
/// releases to it as a `role`. Before asking, `ephemeral` is bound to a
/// configuration of `role` (unless it has one; the node binds its whole
/// configuration once it starts) and its chain is read.
pub async fn lasting_identity(
    attestation: &AttestationConfig,
    ephemeral: &Arc<Identity>,
    check: Option<&Arc<AttestationCheck>>,
    role: PeerRole,
) -> Result<Arc<Identity>, ConfigError> {
    let Some(address) = &attestation.key_manager else {
        return Ok(ephemeral.clone());
    };
    let path = attestation.key_authorization.as_ref().ok_or_else(|| {
        ConfigError::new(
            "attestation.key_authorization",
            "required with attestation.key_manager",
        )
    })?;
    let authorization = read_authorization(path)?;
    if authorization.role != role {
        return Err(ConfigError::new(
            "attestation.key_authorization",
            format!(
                "{}: it names a {}'s key; this node is a {role}",
                path.display(),
                authorization.role
            ),
        ));
    }
    let check = check.ok_or_else(|| {
        ConfigError::new(
            "attestation.key_manager",
            "needs attestation.policy, whose key_manager_images the key manager's evidence must pass",
        )
    })?;
    if ephemeral.configuration().is_none() {
        ephemeral.bind_configuration(&cocoon_attestation::Configuration::new(
            role,
            env!("CARGO_PKG_VERSION"),
        ));
    }
    cocoon_protocol::anchors_ready(ephemeral, Some(check)).await?;
    let seed = crate::fetch_key(address, ephemeral.clone(), check.clone(), authorization)
        .await
        .map_err(|e| ConfigError::new("attestation.key_manager", e.to_string()))?;
    let identity = ephemeral
        .with_key(&seed)
        .map_err(|e| ConfigError::new("attestation.key_manager", e.to_string()))?;
    tracing::info!(fingerprint = %identity.fingerprint(), %address, "lasting key from the key manager");
    Ok(Arc::new(identity))
}

//! `cocoon key-manager serve --config km.toml`: where it listens, its TEE
//! and policy (`[attestation]`, as every role's), and where its master
//! secret comes from: made here (`bootstrap = true`, the network's first key
//! manager only) or replicated from a running key manager
//! (`replicate_from`), or restored from its own `sealed_state` where its TEE
//! can seal (the simulated TEE only: see [`crate::sealed`]). Its own key is
//! made in memory at every start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cocoon_attestation::PeerRole;
use cocoon_protocol::{AttestationConfig, ConfigError, Profile, TeeChoice};
use serde::Deserialize;

use crate::{KeyManager, MasterSecret};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyManagerConfig {
    #[serde(default)]
    pub profile: Profile,
    pub listen: SocketAddr,
    /// Make a new master secret (the network's first key manager; every
    /// other replicates, or the keys it releases differ).
    #[serde(default)]
    pub bootstrap: bool,
    /// A running key manager (`host:port`) to take the master secret from.
    pub replicate_from: Option<String>,
    /// A file keeping the master secret sealed to this key manager's TEE:
    /// read at start when it exists (the same master secret as before the
    /// restart), written once it is made or replicated. Only a TEE that can
    /// seal keeps one: the simulated TEE (development; its sealing key is
    /// public), not TDX.
    #[serde(default)]
    pub sealed_state: Option<PathBuf>,
    #[serde(default)]
    pub attestation: AttestationConfig,
}

impl KeyManagerConfig {
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::new("config", e.to_string()))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match (self.bootstrap, &self.replicate_from) {
            (true, Some(_)) => Err(ConfigError::new(
                "replicate_from",
                "set either bootstrap = true (a new master secret) or replicate_from, not both",
            )),
            (false, None) => Err(ConfigError::new(
                "bootstrap",
                "a key manager needs its master secret: bootstrap = true (the network's first) or replicate_from = \"host:port\"",
            )),
            _ if self.attestation.policy.is_none() => Err(ConfigError::new(
                "attestation.policy",
                "required: the policy that decides who gets which key",
            )),
            _ if self.sealed_state.is_some() && self.attestation.tee != TeeChoice::Simulated => {
                Err(ConfigError::new(
                    "sealed_state",
                    format!(
                        "needs a TEE with a sealing key, and tee = {:?} has none (TDX gives a guest none): run two key managers and restart this one with replicate_from",
                        self.attestation.tee
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// A started key manager.
pub struct Running {
    pub address: SocketAddr,
    pub fingerprint: cocoon_protocol::tls::Fingerprint,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Serve until the process ends (or the listener fails).
    pub async fn wait(self) -> std::io::Result<()> {
        self.task.await.map_err(std::io::Error::other)?
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

/// Start the key manager `config` describes.
pub async fn start(config: KeyManagerConfig) -> Result<Running, ConfigError> {
    config.validate()?;
    let chain_api = config
        .attestation
        .ton_api
        .as_deref()
        .map(|api| ("attestation.ton_api", api, None));
    let agree = &config.attestation.ton_api_agree;
    let anchors = cocoon_chain::anchors::for_node(chain_api, agree)
        .map_err(|(field, e)| ConfigError::new(field, e))?;
    let (identity, check) =
        config
            .attestation
            .load_in_memory(config.profile, PeerRole::KeyManager, anchors)?;
    let check = check.ok_or_else(|| ConfigError::new("attestation.policy", "required"))?;
    cocoon_chain::published::read_through_node(
        check.published.as_deref(),
        chain_api,
        agree,
        config.attestation.root_refresh(),
    )
    .map_err(|(field, e)| ConfigError::new(field, e))?;
    identity.bind_configuration(&cocoon_attestation::Configuration {
        policy_sha256: Some(check.policy.sha256()),
        ..cocoon_attestation::Configuration::new(PeerRole::KeyManager, env!("CARGO_PKG_VERSION"))
    });
    cocoon_protocol::anchors_ready(&identity, Some(&check)).await?;
    let sealed_field = |e: String| ConfigError::new("sealed_state", e);
    let restored = match &config.sealed_state {
        Some(path) => crate::sealed::read(path, &identity).map_err(sealed_field)?,
        None => None,
    };
    let master = match (restored, &config.replicate_from) {
        (Some(master), _) => {
            tracing::warn!("master secret restored from the sealed state (a SIMULATED TEE's sealing protects it from nobody)");
            master
        }
        (None, None) => {
            tracing::warn!("bootstrap: a NEW master secret; keys released from it differ from any released before");
            let master = MasterSecret::generate();
            seal_into(&config, &master, &identity)?;
            master
        }
        (None, Some(from)) => {
            let master = replicate_with_retries(from, &identity, &check).await?;
            seal_into(&config, &master, &identity)?;
            master
        }
    };
    let listener = cocoon_protocol::bind("listen", config.listen).await?;
    let address = listener
        .local_addr()
        .map_err(|e| ConfigError::new("listen", e.to_string()))?;
    let fingerprint = identity.fingerprint();
    let km = Arc::new(KeyManager::new(master, identity, check));
    tracing::info!(%address, %fingerprint, "key manager serving");
    Ok(Running {
        address,
        fingerprint,
        task: tokio::spawn(km.serve(listener)),
    })
}

/// Keep `master` in the configured sealed state, if any.
fn seal_into(
    config: &KeyManagerConfig,
    master: &MasterSecret,
    identity: &cocoon_protocol::tls::Identity,
) -> Result<(), ConfigError> {
    match &config.sealed_state {
        Some(path) => crate::sealed::write(path, master, identity)
            .map_err(|e| ConfigError::new("sealed_state", e)),
        None => Ok(()),
    }
}

/// The master secret from `from`, trying for a minute (it may be starting).
async fn replicate_with_retries(
    from: &str,
    identity: &Arc<cocoon_protocol::tls::Identity>,
    check: &Arc<cocoon_protocol::ra_tls::AttestationCheck>,
) -> Result<MasterSecret, ConfigError> {
    let mut last = String::new();
    for _ in 0..30 {
        match crate::replicate(from, identity.clone(), check.clone()).await {
            Ok(master) => return Ok(master),
            Err(crate::AskError::Refused(reason)) => {
                return Err(ConfigError::new(
                    "replicate_from",
                    format!("{from} refused: {reason}"),
                ))
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Err(ConfigError::new("replicate_from", last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_parses_and_a_master_secret_source_is_required() {
        let example = include_str!("../../../config/key-manager.example.toml");
        let config = KeyManagerConfig::from_toml(example).unwrap();
        config.validate().unwrap();
        let both = KeyManagerConfig {
            replicate_from: Some("km:9300".into()),
            ..config.clone()
        };
        assert_eq!(both.validate().unwrap_err().field, "replicate_from");
        let neither = KeyManagerConfig {
            bootstrap: false,
            ..config.clone()
        };
        assert_eq!(neither.validate().unwrap_err().field, "bootstrap");
        let sealed_on_tdx = KeyManagerConfig {
            sealed_state: Some("km.sealed".into()),
            ..config.clone()
        };
        let err = sealed_on_tdx.validate().unwrap_err();
        assert_eq!(err.field, "sealed_state");
        assert!(err.message.contains("replicate_from"), "{err}");
        let err = KeyManagerConfig::from_toml("listen = \"127.0.0.1:1\"\nbootstrapp = true\n")
            .unwrap_err();
        assert!(err.message.contains("bootstrapp"), "{err}");
    }
}

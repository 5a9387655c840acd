//! `[attestation]`, the same in every role's configuration: which TEE vouches
//! for this node (none, TDX through configfs-tsm, or the development-only
//! simulated one), and what peers' evidence must satisfy (a policy file, and
//! DCAP collateral for TDX peers). Contradictions stop the node at start, naming
//! the key: a simulated TEE or a policy allowing simulated peers under the
//! production profile, `tee = "tdx"` on a machine without configfs-tsm.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cocoon_attestation::simulated::SimulatedTee;
use cocoon_attestation::tdx::{self, ConfigfsTsm};
use cocoon_attestation::{Attester, Policy};
use serde::Deserialize;

use crate::config::ConfigError;
use crate::ra_tls::AttestationCheck;
use crate::tls::Identity;

/// Whether test-only parts are allowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Real deployments: every test-only or simulated part is refused.
    #[default]
    Production,
    /// Local development and tests (the devnet uses this).
    Development,
}

/// This node's TEE.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeeChoice {
    /// No evidence in the certificate: plain TLS with pinned keys.
    #[default]
    None,
    /// Intel TDX: quotes from configfs-tsm.
    Tdx,
    /// SIMULATED: fake evidence, development profile only.
    Simulated,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationConfig {
    #[serde(default)]
    pub tee: TeeChoice,
    /// The network's root configuration (TOML: worker_images, proxy_images,
    /// models, accepted_tcb_statuses, allow_simulated; see
    /// `config/root.example.toml`) that peers' evidence must satisfy; without
    /// one, peers' evidence is not checked (key pins only).
    pub policy: Option<PathBuf>,
    /// DCAP collateral (dcap-qvl JSON) for verifying TDX peers.
    pub collateral: Option<PathBuf>,
    /// configfs-tsm reports folder (default `/sys/kernel/config/tsm/report`).
    pub configfs: Option<PathBuf>,
}

impl AttestationConfig {
    /// Load the node key with its TEE, and the check for peers.
    pub fn load(
        &self,
        identity_key: &Path,
        profile: Profile,
    ) -> Result<(Arc<Identity>, Option<Arc<AttestationCheck>>), ConfigError> {
        let identity = Identity::load_or_create(identity_key)
            .map_err(|e| ConfigError::new("identity_key", e.to_string()))?;
        let identity = match self.attester(profile)? {
            Some(attester) => identity.with_attester(attester),
            None => identity,
        };
        Ok((Arc::new(identity), self.check(profile)?))
    }

    fn attester(&self, profile: Profile) -> Result<Option<Arc<dyn Attester>>, ConfigError> {
        Ok(match self.tee {
            TeeChoice::None => None,
            TeeChoice::Simulated if profile == Profile::Production => {
                return Err(ConfigError::new(
                    "attestation.tee",
                    "\"simulated\" is a fake TEE for development; it is refused unless profile = \"development\"",
                ))
            }
            TeeChoice::Simulated => Some(Arc::new(SimulatedTee::new())),
            TeeChoice::Tdx => {
                let tsm = match &self.configfs {
                    Some(root) => ConfigfsTsm::new(root),
                    None => ConfigfsTsm::default(),
                };
                if !tsm.available() {
                    return Err(ConfigError::new(
                        "attestation.tee",
                        "\"tdx\": configfs-tsm reports are not available here (not a TDX guest, or configfs not mounted; see attestation.configfs)",
                    ));
                }
                Some(Arc::new(tsm))
            }
        })
    }

    fn check(&self, profile: Profile) -> Result<Option<Arc<AttestationCheck>>, ConfigError> {
        let Some(path) = &self.policy else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("attestation.policy", format!("{}: {e}", path.display()))
        })?;
        let policy: Policy = toml::from_str(&text).map_err(|e| {
            ConfigError::new("attestation.policy", format!("{}: {e}", path.display()))
        })?;
        if policy.allow_simulated && profile == Profile::Production {
            return Err(ConfigError::new(
                "attestation.policy",
                format!(
                    "{}: allow_simulated = true is refused unless profile = \"development\"",
                    path.display()
                ),
            ));
        }
        if policy.allow_simulated {
            tracing::warn!("this node ACCEPTS SIMULATED TEE evidence from peers: development only");
        }
        if policy.models.is_empty() && profile == Profile::Production {
            tracing::warn!(policy = %path.display(), "the root configuration lists no [[models]]: workers may serve any weights");
        }
        let collateral = match &self.collateral {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    ConfigError::new("attestation.collateral", format!("{}: {e}", path.display()))
                })?;
                Some(Arc::new(tdx::collateral_from_json(&bytes).map_err(
                    |e| {
                        ConfigError::new(
                            "attestation.collateral",
                            format!("{}: {e}", path.display()),
                        )
                    },
                )?))
            }
            None => None,
        };
        Ok(Some(Arc::new(AttestationCheck {
            policy,
            collateral,
            verify_at: None,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_file(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("policy.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn simulated_parts_are_refused_in_production_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("node.pem");
        let simulated = AttestationConfig {
            tee: TeeChoice::Simulated,
            ..Default::default()
        };
        let err = simulated.load(&key, Profile::Production).unwrap_err();
        assert_eq!(err.field, "attestation.tee");
        simulated.load(&key, Profile::Development).unwrap();

        let lenient = AttestationConfig {
            policy: Some(policy_file(dir.path(), "allow_simulated = true\n")),
            ..Default::default()
        };
        let err = lenient.load(&key, Profile::Production).unwrap_err();
        assert_eq!(err.field, "attestation.policy");
        let (_, check) = lenient.load(&key, Profile::Development).unwrap();
        assert!(check.unwrap().policy.allow_simulated);
    }

    #[test]
    fn tdx_without_configfs_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("node.pem");
        let tdx = AttestationConfig {
            tee: TeeChoice::Tdx,
            configfs: Some("/nonexistent/tsm".into()),
            ..Default::default()
        };
        let err = tdx.load(&key, Profile::Production).unwrap_err();
        assert!(
            err.field == "attestation.tee" && err.message.contains("configfs"),
            "{err}"
        );

        let typo = AttestationConfig {
            policy: Some(policy_file(dir.path(), "allowed_imagez = []\n")),
            ..Default::default()
        };
        let err = typo.load(&key, Profile::Production).unwrap_err();
        assert!(err.to_string().contains("allowed_imagez"), "{err}");

        let collateral = dir.path().join("collateral.json");
        std::fs::write(&collateral, "not json").unwrap();
        let bad_collateral = AttestationConfig {
            policy: Some(policy_file(dir.path(), "")),
            collateral: Some(collateral),
            ..Default::default()
        };
        let err = bad_collateral.load(&key, Profile::Production).unwrap_err();
        assert_eq!(err.field, "attestation.collateral");
    }
}

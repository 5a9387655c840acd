//! A worker's keys as client nodes see them: its identity (which signs usage
//! receipts) and its X25519 sealing key, bound together by TEE evidence whose
//! report data is SHA-256(sealing key ‖ identity key, "sealing", block
//! anchor). The worker makes the evidence at start and again before it ages
//! out (see [`cocoon_attestation::freshness`]); the proxy passes it on; each
//! client node verifies it before sealing anything to it, and again once the
//! verdict it keeps is older than the policy allows.

use cocoon_attestation::{report_data, PeerRole, Purpose, Verdict};
use serde::{Deserialize, Serialize};

use crate::ra_tls::{AttestationCheck, Presented, RaTlsRefusal};
use crate::tls::Fingerprint;

/// A worker's attested keys (announced to the proxy, listed to client nodes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerKey {
    /// DER SubjectPublicKeyInfo of the worker's Ed25519 identity; its SHA-256
    /// is the worker's fingerprint, pinned by its proxies.
    pub identity: Vec<u8>,
    /// X25519 public key requests are sealed to.
    pub sealing_key: [u8; 32],
    /// TEE evidence binding both keys (see [`sealing_binding`]) and the
    /// configuration; `None` from a worker without a TEE.
    pub evidence: Option<Vec<u8>>,
    /// The worker's effective configuration document (engine, upstream,
    /// models, policy, proxies), whose digest the evidence binds.
    pub configuration: Option<Vec<u8>>,
    /// The TON masterchain block the evidence binds (see
    /// [`cocoon_attestation::Anchor::to_bytes`]): it was made after it.
    pub anchor: Option<Vec<u8>>,
    /// Its GPUs' evidence, each answering the nonce derived from the report
    /// data of `evidence` ([`cocoon_attestation::gpu::binding_nonce`]);
    /// empty for a worker without confidential-computing GPUs.
    pub gpus: Vec<cocoon_attestation::gpu::GpuEvidence>,
}

/// What the evidence binds for `sealing_key` and `identity_spki`.
fn sealing_material(sealing_key: &[u8; 32], identity_spki: &[u8]) -> Vec<u8> {
    let mut keys = sealing_key.to_vec();
    keys.extend_from_slice(identity_spki);
    keys
}

/// The report data that binds a sealing key to an identity key, made after
/// the block `anchor` (its bytes) when given.
pub fn sealing_binding(
    sealing_key: &[u8; 32],
    identity_spki: &[u8],
    anchor: Option<&[u8]>,
) -> [u8; 64] {
    report_data(
        &sealing_material(sealing_key, identity_spki),
        Purpose::Sealing,
        anchor,
    )
}

impl WorkerKey {
    /// The worker's fingerprint.
    pub fn worker(&self) -> Fingerprint {
        Fingerprint::of_spki(&self.identity)
    }

    /// Check the evidence: valid, a worker image allowed by `check`'s policy,
    /// binding exactly these two keys; and its GPUs' evidence bound to it,
    /// as the policy requires.
    pub fn verify(&self, check: &AttestationCheck, now_secs: u64) -> Result<Verdict, RaTlsRefusal> {
        let evidence = self.evidence.as_deref().ok_or_else(|| {
            RaTlsRefusal("the worker's sealing key carries no TEE evidence".into())
        })?;
        let presented = Presented {
            evidence,
            configuration: self.configuration.as_deref(),
            anchor: self.anchor.as_deref(),
        };
        let mut verdict = check.check_evidence(
            &presented,
            PeerRole::Worker,
            (
                &sealing_material(&self.sealing_key, &self.identity),
                Purpose::Sealing,
            ),
            now_secs,
        )?;
        // The policy checked that the report data is this key's binding.
        verdict.gpus = check.check_gpus(&self.gpus, &verdict.report_data, now_secs)?;
        Ok(verdict)
    }
}

#[cfg(test)]
mod gpu_tests;

#[cfg(test)]
mod tests {
    use cocoon_attestation::simulated::SimulatedTee;
    use cocoon_attestation::{Attester, Policy};

    use super::*;
    use crate::sealed::SealingKey;
    use crate::tls::Identity;

    fn check() -> AttestationCheck {
        AttestationCheck {
            policy: Policy {
                worker_images: [SimulatedTee::measurements().image_hash()].into(),
                allow_simulated: true,
                // Freshness has its own tests (ra_tls::tests).
                require_fresh_evidence: false,
                ..Policy::default()
            },
            collateral: None,
            verify_at: None,
            anchors: None,
            gpu: None,
            published: None,
        }
    }

    /// A worker's configuration with an `openai-http` engine at `upstream`.
    fn configuration(upstream: &str) -> Vec<u8> {
        cocoon_attestation::Configuration {
            engine: Some(cocoon_attestation::EngineIdentity {
                kind: "openai-http".into(),
                upstream: Some(upstream.into()),
            }),
            ..cocoon_attestation::Configuration::new(PeerRole::Worker, "test")
        }
        .to_bytes()
    }

    /// Keys with evidence binding them and `configuration` (the document
    /// sent beside it is the same unless the caller changes it).
    fn attested_with(
        identity: &Identity,
        sealing: &SealingKey,
        configuration: Option<Vec<u8>>,
    ) -> WorkerKey {
        let tee = SimulatedTee::new();
        let binding = cocoon_attestation::configuration::bind(
            sealing_binding(&sealing.public(), identity.spki(), None),
            configuration.as_deref(),
        );
        WorkerKey {
            identity: identity.spki().to_vec(),
            sealing_key: sealing.public(),
            evidence: Some(tee.evidence(&binding).unwrap().to_bytes()),
            configuration,
            anchor: None,
            gpus: Vec::new(),
        }
    }

    fn attested(identity: &Identity, sealing: &SealingKey) -> WorkerKey {
        attested_with(
            identity,
            sealing,
            Some(configuration("http://127.0.0.1:8000/v1")),
        )
    }

    /// The GPU owner boots the allowed image but points its engine at a
    /// server on the host (which then reads every prompt). Evidence binding
    /// that configuration is refused; so is the same evidence shown with a
    /// harmless-looking document, or with none; and evidence that binds no
    /// configuration at all. Before configurations were bound, the image
    /// alone passed whatever the worker was told to do.
    #[test]
    fn a_worker_forwarding_prompts_outside_its_vm_is_refused_however_it_presents_it() {
        let identity = Identity::generate().unwrap();
        let sealing = SealingKey::generate();
        let remote = configuration("http://10.0.0.7:8000/v1");
        let honest_about_it = attested_with(&identity, &sealing, Some(remote.clone()));
        let err = honest_about_it.verify(&check(), 0).unwrap_err().to_string();
        assert!(err.contains("outside its measured VM"), "{err}");
        let disguised = WorkerKey {
            configuration: Some(configuration("http://127.0.0.1:8000/v1")),
            ..honest_about_it.clone()
        };
        let err = disguised.verify(&check(), 0).unwrap_err().to_string();
        assert!(err.contains("does not bind"), "{err}");
        let hidden = WorkerKey {
            configuration: None,
            ..honest_about_it
        };
        let err = hidden.verify(&check(), 0).unwrap_err().to_string();
        assert!(err.contains("does not bind"), "{err}");
        let unbound = attested_with(&identity, &sealing, None);
        let err = unbound.verify(&check(), 0).unwrap_err().to_string();
        assert!(err.contains("binds no configuration"), "{err}");
        // A network that trusts remote inference servers says so in its policy.
        let mut remote_ok = check();
        remote_ok.policy.engine_upstream_loopback_only = false;
        let verdict = attested_with(&identity, &sealing, Some(remote))
            .verify(&remote_ok, 0)
            .unwrap();
        let engine = verdict.configuration.unwrap().engine.unwrap();
        assert_eq!(engine.upstream.as_deref(), Some("http://10.0.0.7:8000/v1"));
    }

    #[test]
    fn evidence_must_bind_both_keys_and_name_a_worker_image() {
        let identity = Identity::generate().unwrap();
        let sealing = SealingKey::generate();
        let key = attested(&identity, &sealing);
        key.verify(&check(), 0).unwrap();
        assert_eq!(key.worker(), identity.fingerprint());

        // A proxy substituting its own sealing key, or another identity: refused.
        let mut swapped = key.clone();
        swapped.sealing_key = SealingKey::generate().public();
        let err = swapped.verify(&check(), 0).unwrap_err();
        assert!(err.to_string().contains("does not bind"), "{err}");
        let mut other = key.clone();
        other.identity = Identity::generate().unwrap().spki().to_vec();
        assert!(other.verify(&check(), 0).is_err());

        // No evidence, or evidence for an image that is not a worker's: refused.
        let bare = WorkerKey {
            evidence: None,
            ..key.clone()
        };
        assert!(bare
            .verify(&check(), 0)
            .unwrap_err()
            .to_string()
            .contains("no TEE evidence"));
        let mut proxies_only = check();
        proxies_only.policy.proxy_images = proxies_only.policy.worker_images.clone();
        proxies_only.policy.worker_images.clear();
        let err = key.verify(&proxies_only, 0).unwrap_err();
        assert!(err.to_string().contains("worker images"), "{err}");

        // Tampered evidence bytes (here the simulated signature): refused.
        let mut tampered = key.clone();
        let bytes = tampered.evidence.as_mut().unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(tampered.verify(&check(), 0).is_err());
    }
}

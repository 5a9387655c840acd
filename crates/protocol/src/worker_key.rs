//! A worker's keys as client nodes see them: its identity (which signs usage
//! receipts) and its X25519 sealing key, bound together by TEE evidence whose
//! report data is SHA-256(sealing key ‖ identity key, "sealing"). The worker
//! makes the evidence once at start; the proxy passes it on; each client node
//! verifies it once per key before sealing anything to it.

use cocoon_attestation::{report_data, PeerRole, Purpose, Verdict};
use serde::{Deserialize, Serialize};

use crate::ra_tls::{AttestationCheck, RaTlsRefusal};
use crate::tls::Fingerprint;

/// A worker's attested keys (announced to the proxy, listed to client nodes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerKey {
    /// DER SubjectPublicKeyInfo of the worker's Ed25519 identity; its SHA-256
    /// is the worker's fingerprint, pinned by its proxies.
    pub identity: Vec<u8>,
    /// X25519 public key requests are sealed to.
    pub sealing_key: [u8; 32],
    /// TEE evidence binding both keys (see [`sealing_binding`]); `None` from a
    /// worker without a TEE.
    pub evidence: Option<Vec<u8>>,
}

/// The report data that binds a sealing key to an identity key.
pub fn sealing_binding(sealing_key: &[u8; 32], identity_spki: &[u8]) -> [u8; 64] {
    let mut keys = sealing_key.to_vec();
    keys.extend_from_slice(identity_spki);
    report_data(&keys, Purpose::Sealing, None)
}

impl WorkerKey {
    /// The worker's fingerprint.
    pub fn worker(&self) -> Fingerprint {
        Fingerprint::of_spki(&self.identity)
    }

    /// Check the evidence: valid, a worker image allowed by `check`'s policy,
    /// and binding exactly these two keys.
    pub fn verify(&self, check: &AttestationCheck, now_secs: u64) -> Result<Verdict, RaTlsRefusal> {
        let evidence = self.evidence.as_deref().ok_or_else(|| {
            RaTlsRefusal("the worker's sealing key carries no TEE evidence".into())
        })?;
        let binding = sealing_binding(&self.sealing_key, &self.identity);
        check.check_evidence(evidence, PeerRole::Worker, &binding, now_secs)
    }
}

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
                ..Policy::default()
            },
            collateral: None,
            verify_at: None,
        }
    }

    fn attested(identity: &Identity, sealing: &SealingKey) -> WorkerKey {
        let tee = SimulatedTee::new();
        let evidence = tee
            .evidence(&sealing_binding(&sealing.public(), identity.spki()))
            .unwrap();
        WorkerKey {
            identity: identity.spki().to_vec(),
            sealing_key: sealing.public(),
            evidence: Some(evidence.to_bytes()),
        }
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

//! The owner's authorization: an Ed25519 signature by the owner's key (its
//! TON wallet's) naming the key a node may be given: role, purpose, name,
//! and until when. Not a secret (the host sees it); it keeps one owner from
//! asking for another's key, since the owner's public key is part of the
//! derivation and a forged signature does not verify.

use cocoon_attestation::PeerRole;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

const LABEL: &[u8] = b"cocoon/key-manager/authorize/v1";

/// Purposes a key may be released for.
pub const PURPOSES: &[&str] = &["identity", "payout"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    /// The owner's Ed25519 public key.
    pub owner: [u8; 32],
    pub role: PeerRole,
    /// `identity` (a node's Ed25519 seed) or `payout`.
    pub purpose: String,
    /// The owner's name for the key (e.g. `eu-1`).
    pub name: String,
    /// Unix seconds after which the authorization is refused.
    pub not_after: u64,
    /// Ed25519 over the label and the fields above (64 bytes).
    pub signature: Vec<u8>,
}

impl Authorization {
    /// Sign an authorization with the owner's key.
    pub fn sign(
        owner: &SigningKey,
        role: PeerRole,
        purpose: &str,
        name: &str,
        not_after: u64,
    ) -> Self {
        let mut authorization = Self {
            owner: owner.verifying_key().to_bytes(),
            role,
            purpose: purpose.to_string(),
            name: name.to_string(),
            not_after,
            signature: Vec::new(),
        };
        authorization.signature = owner.sign(&authorization.signed_bytes()).to_vec();
        authorization
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut out = LABEL.to_vec();
        for part in [
            &self.owner[..],
            self.role.to_string().as_bytes(),
            self.purpose.as_bytes(),
            self.name.as_bytes(),
            &self.not_after.to_be_bytes(),
        ] {
            out.extend_from_slice(&(part.len() as u64).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// Signed by its owner, for a known purpose and a node role, and not
    /// expired at `now`; the reason otherwise.
    pub fn verify(&self, now: u64) -> Result<(), String> {
        if !PURPOSES.contains(&self.purpose.as_str()) {
            return Err(format!(
                "unknown purpose {:?} (known: {})",
                self.purpose,
                PURPOSES.join(", ")
            ));
        }
        if self.role == PeerRole::KeyManager {
            return Err("keys are released to workers and proxies, not key managers".into());
        }
        if self.name.is_empty() || self.name.len() > 128 {
            return Err("the key's name must be 1 to 128 bytes".into());
        }
        if now > self.not_after {
            return Err(format!(
                "the authorization expired at {} (Unix)",
                self.not_after
            ));
        }
        let owner = VerifyingKey::from_bytes(&self.owner)
            .map_err(|_| "the owner's key is not an Ed25519 public key".to_string())?;
        let signature = Signature::from_slice(&self.signature)
            .map_err(|_| "the signature is not 64 bytes".to_string())?;
        owner
            .verify(&self.signed_bytes(), &signature)
            .map_err(|_| "the owner's signature does not verify".to_string())
    }
}

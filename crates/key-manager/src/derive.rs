//! The master secret and the keys derived from it: HKDF-SHA256 with the
//! role (as the requester's evidence was checked), the purpose, the owner's
//! public key and the key's name, each length-prefixed, as `info`. The same
//! inputs always give the same key, whichever replica derives it.

use cocoon_attestation::PeerRole;
use zeroize::Zeroizing;

/// 32 bytes made in a key manager's enclave; never written in the clear.
pub struct MasterSecret(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterSecret(..)")
    }
}

const SALT: &[u8] = b"cocoon/key-manager/v1";

impl MasterSecret {
    /// A new secret from the system's RNG (inside the enclave).
    pub fn generate() -> Self {
        use ring::rand::SecureRandom;
        let mut secret = Zeroizing::new([0u8; 32]);
        ring::rand::SystemRandom::new()
            .fill(&mut secret[..])
            .expect("the system RNG works");
        Self(secret)
    }

    /// A secret received from another key manager.
    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(bytes)
    }

    /// The secret itself, for replication to an attested key manager only.
    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key for `role`'s `purpose`, owned by `owner` and called `name`.
    pub fn derive(
        &self,
        role: PeerRole,
        purpose: &str,
        owner: &[u8; 32],
        name: &str,
    ) -> Zeroizing<[u8; 32]> {
        let mut info = Vec::new();
        for part in [
            role.to_string().as_bytes(),
            purpose.as_bytes(),
            &owner[..],
            name.as_bytes(),
        ] {
            info.extend_from_slice(&(part.len() as u64).to_be_bytes());
            info.extend_from_slice(part);
        }
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, SALT).extract(&self.0[..]);
        let mut out = Zeroizing::new([0u8; 32]);
        prk.expand(&[&info], Len32)
            .and_then(|okm| okm.fill(&mut out[..]))
            .expect("32 bytes is a valid HKDF-SHA256 length");
        out
    }
}

struct Len32;

impl ring::hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

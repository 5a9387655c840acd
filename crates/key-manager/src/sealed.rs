//! The master secret sealed to the key manager's own TEE (`sealed_state`),
//! so that a lone key manager restarts with the same master secret and
//! releases the same keys.
//!
//! Sealing needs a TEE with a sealing key: one only the same measured image
//! can derive again ([`cocoon_attestation::Attester::sealing_key`]). TDX has
//! none, so on TDX a key manager survives restarts by replication
//! (`replicate_from`) and `sealed_state` is refused. The SIMULATED TEE has
//! one, bound to its image like a real one but derived from a constant in
//! the source: its sealed state exercises the restart path in development
//! and protects the secret from nobody.
//!
//! The file: a magic line, a 12-byte random nonce, then the secret under
//! AES-256-GCM with the magic as associated data.

use std::path::Path;

use cocoon_protocol::tls::Identity;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use zeroize::Zeroizing;

use crate::MasterSecret;

/// What the sealing key is derived for.
const LABEL: &str = "cocoon/key-manager/sealed-master/v1";
/// The file's first bytes, also its associated data.
const MAGIC: &[u8] = b"cocoon key-manager sealed master secret v1\n";

/// Why a sealed state cannot be made or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("this node's TEE has no sealing key (TDX gives a guest none): run two key managers and start this one with replicate_from")]
    NoSealingKey,
    #[error("not a sealed master secret (wrong format or length)")]
    Malformed,
    #[error("it does not open here: sealed by another image or TEE, or altered")]
    DoesNotOpen,
}

/// `master` sealed to `identity`'s TEE.
pub fn seal(master: &MasterSecret, identity: &Identity) -> Result<Vec<u8>, SealError> {
    let key = aead_key(identity)?;
    let nonce: [u8; NONCE_LEN] = rand_nonce();
    let mut sealed = Zeroizing::new(master.expose().to_vec());
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(MAGIC),
        &mut *sealed,
    )
    .map_err(|_| SealError::DoesNotOpen)?;
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The master secret in `bytes`, opened with `identity`'s TEE.
pub fn unseal(bytes: &[u8], identity: &Identity) -> Result<MasterSecret, SealError> {
    let key = aead_key(identity)?;
    let rest = bytes.strip_prefix(MAGIC).ok_or(SealError::Malformed)?;
    if rest.len() != NONCE_LEN + 32 + AES_256_GCM.tag_len() {
        return Err(SealError::Malformed);
    }
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Malformed)?;
    let mut buffer = Zeroizing::new(sealed.to_vec());
    let opened = key
        .open_in_place(nonce, Aad::from(MAGIC), &mut buffer)
        .map_err(|_| SealError::DoesNotOpen)?;
    let mut secret = Zeroizing::new([0u8; 32]);
    secret.copy_from_slice(opened);
    Ok(MasterSecret::from_bytes(secret))
}

/// The master secret sealed in `path`, or `None` when there is no file yet.
pub fn read(path: &Path, identity: &Identity) -> Result<Option<MasterSecret>, String> {
    match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
        Ok(bytes) => unseal(&bytes, identity)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
    }
}

/// Seal `master` into a new file at `path` (owner-only; never over an
/// existing one).
pub fn write(path: &Path, master: &MasterSecret, identity: &Identity) -> Result<(), String> {
    let sealed = seal(master, identity).map_err(|e| e.to_string())?;
    cocoon_protocol::tls::write_secret_file(path, &sealed)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn aead_key(identity: &Identity) -> Result<LessSafeKey, SealError> {
    let secret = identity.sealing_key(LABEL).ok_or(SealError::NoSealingKey)?;
    let key = UnboundKey::new(&AES_256_GCM, &secret[..]).map_err(|_| SealError::NoSealingKey)?;
    Ok(LessSafeKey::new(key))
}

fn rand_nonce() -> [u8; NONCE_LEN] {
    use ring::rand::SecureRandom;
    let mut nonce = [0u8; NONCE_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut nonce)
        .expect("the system RNG works");
    nonce
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cocoon_attestation::simulated::SimulatedTee;

    use super::*;

    fn node_of(tee: SimulatedTee) -> Identity {
        Identity::generate().unwrap().with_attester(Arc::new(tee))
    }

    fn key_of(master: &MasterSecret) -> [u8; 32] {
        *master.derive(
            cocoon_attestation::PeerRole::Proxy,
            "identity",
            &[1; 32],
            "eu-1",
        )
    }

    #[test]
    fn the_same_image_opens_it_after_a_restart() {
        let master = MasterSecret::generate();
        let sealed = seal(&master, &node_of(SimulatedTee::new())).unwrap();
        // A new process: a new node key, the same image.
        let again = unseal(&sealed, &node_of(SimulatedTee::new())).unwrap();
        assert_eq!(key_of(&master), key_of(&again));
        // Nothing of the secret is in the file in the clear.
        assert!(!sealed.windows(32).any(|w| w == master.expose()));
    }

    /// The host runs another image (one that would print the secret) on the
    /// key manager's sealed state, or alters the file: nothing opens.
    #[test]
    fn another_image_or_an_altered_file_opens_nothing() {
        let sealed = seal(&MasterSecret::generate(), &node_of(SimulatedTee::new())).unwrap();
        let mut measurements = SimulatedTee::measurements();
        measurements.rtmr[3][7] ^= 0x40;
        let other = node_of(SimulatedTee::with_measurements(measurements));
        assert!(matches!(
            unseal(&sealed, &other),
            Err(SealError::DoesNotOpen)
        ));
        let home = node_of(SimulatedTee::new());
        for at in [MAGIC.len(), MAGIC.len() + NONCE_LEN, sealed.len() - 1] {
            let mut altered = sealed.clone();
            altered[at] ^= 1;
            assert!(matches!(
                unseal(&altered, &home),
                Err(SealError::DoesNotOpen)
            ));
        }
        assert!(matches!(
            unseal(&sealed[..sealed.len() - 1], &home),
            Err(SealError::Malformed)
        ));
        assert!(matches!(
            unseal(b"master = 0x1234", &home),
            Err(SealError::Malformed)
        ));
    }

    #[test]
    fn a_node_without_a_sealing_key_cannot_seal() {
        let bare = Identity::generate().unwrap();
        assert!(matches!(
            seal(&MasterSecret::generate(), &bare),
            Err(SealError::NoSealingKey)
        ));
    }
}

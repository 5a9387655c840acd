//! Key binding: the 64 bytes of report data a node asks its TEE to sign are
//! SHA-256(len ‖ public key ‖ len ‖ purpose ‖ len ‖ nonce) followed by 32 zero
//! bytes. A quote carrying them proves that key was made inside the measured
//! image (only code inside can ask the TEE for a quote).

use sha2::{Digest, Sha256};

/// What a bound key is for, so a key bound for one use cannot pass for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The node's TLS identity key (RA-TLS).
    Tls,
    /// The worker's X25519 key that requests are sealed to.
    Sealing,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Tls => b"cocoon/ra-tls/v1",
            Purpose::Sealing => b"cocoon/hpke-x25519/v1",
        }
    }
}

/// The report data binding `public_key` for `purpose` (and a verifier's nonce).
pub fn report_data(public_key: &[u8], purpose: Purpose, nonce: Option<&[u8]>) -> [u8; 64] {
    let mut h = Sha256::new();
    for part in [public_key, purpose.label(), nonce.unwrap_or(&[])] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&h.finalize());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_depends_on_key_purpose_and_nonce() {
        let a = report_data(b"key-a", Purpose::Tls, None);
        assert_eq!(a, report_data(b"key-a", Purpose::Tls, None));
        assert_ne!(a, report_data(b"key-b", Purpose::Tls, None));
        assert_ne!(a, report_data(b"key-a", Purpose::Sealing, None));
        assert_ne!(a, report_data(b"key-a", Purpose::Tls, Some(b"n")));
        // Length prefixes: moving bytes between fields changes the result.
        assert_ne!(
            report_data(b"ab", Purpose::Tls, Some(b"c")),
            report_data(b"a", Purpose::Tls, Some(b"bc"))
        );
        assert_eq!(&a[32..], &[0u8; 32]);
    }
}

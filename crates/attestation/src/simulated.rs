//! A SIMULATED TEE, for development networks only. It makes quote-shaped
//! evidence — fixed fake measurements and the caller's report data, signed by a
//! key made at start — so the whole trust path (evidence in certificates, key
//! binding, policy) runs on machines without TDX. It proves nothing about the
//! machine: anyone can run it. Policies refuse it unless `allow_simulated` is
//! set (the devnet sets it; production configuration never does), and creating
//! one logs a loud warning.
//!
//! Its sealing key ([`SimulatedTee::development_sealing_key`]) is derived from
//! a constant in this source and the image's measurements: it separates one
//! image's sealed data from another's, as a real sealing key would, but
//! anyone who reads this file can derive it. Sealed data of a simulated TEE
//! is protected from nobody.

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha384};

use crate::evidence::{TeeKind, VerifyError};
use crate::{Measurements, Verdict};

const DOMAIN: &[u8] = b"COCOON-SIMULATED-TEE-QUOTE-v1";

/// A simulated quote: measurements, report data, signer key and signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimulatedQuote {
    pub measurements: Measurements,
    pub report_data: Vec<u8>,
    pub signer: Vec<u8>,
    pub signature: Vec<u8>,
}

/// The simulated TEE of one process.
pub struct SimulatedTee {
    key: Ed25519KeyPair,
    measurements: Measurements,
}

impl SimulatedTee {
    /// A fresh signing key; the fake measurements are the same for every
    /// simulated node (so a development allow-list can name their image hash).
    pub fn new() -> Self {
        tracing::warn!(
            "SIMULATED TEE: this node's attestation is fake and proves nothing; development only"
        );
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("system randomness");
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("fresh key parses");
        Self {
            key,
            measurements: Self::measurements(),
        }
    }

    /// A simulated TEE reporting `measurements` instead of the development
    /// image's: another image, for tests where the image matters.
    pub fn with_measurements(measurements: Measurements) -> Self {
        Self {
            measurements,
            ..Self::new()
        }
    }

    /// The simulated sealing key for `label`: HKDF-SHA256 over a constant
    /// written in this file, with the image hash and `label` as info. Bound
    /// to the image like a real one, secret from NOBODY (development only).
    pub fn development_sealing_key(&self, label: &str) -> zeroize::Zeroizing<[u8; 32]> {
        const ROOT: &[u8] = b"COCOON-SIMULATED-TEE-SEALING-ROOT-v1: PUBLIC, DEVELOPMENT ONLY";
        let image = self.measurements.image_hash();
        let prk =
            ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"cocoon/simulated-tee/sealing/v1")
                .extract(ROOT);
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        prk.expand(
            &[image.as_bytes(), b"\0", label.as_bytes()],
            ring::hkdf::HKDF_SHA256,
        )
        .and_then(|okm| okm.fill(&mut key[..]))
        .expect("32 bytes is a valid HKDF-SHA256 length");
        key
    }

    /// The fake measurements every simulated TEE reports.
    pub fn measurements() -> Measurements {
        let register = |label: &str| -> [u8; 48] { Sha384::digest(label.as_bytes()).into() };
        Measurements {
            mrtd: register("cocoon simulated MRTD"),
            rtmr: [
                register("cocoon simulated RTMR0"),
                register("cocoon simulated RTMR1"),
                register("cocoon simulated RTMR2"),
                register("cocoon simulated RTMR3"),
            ],
        }
    }

    pub fn quote(&self, report_data: &[u8; 64]) -> SimulatedQuote {
        let signer = self.key.public_key().as_ref().to_vec();
        let signature = self
            .key
            .sign(&signed_bytes(&self.measurements, report_data, &signer))
            .as_ref()
            .to_vec();
        SimulatedQuote {
            measurements: self.measurements,
            report_data: report_data.to_vec(),
            signer,
            signature,
        }
    }
}

impl Default for SimulatedTee {
    fn default() -> Self {
        Self::new()
    }
}

fn signed_bytes(m: &Measurements, report_data: &[u8], signer: &[u8]) -> Vec<u8> {
    let mut out = DOMAIN.to_vec();
    out.extend_from_slice(&m.mrtd);
    for r in &m.rtmr {
        out.extend_from_slice(r);
    }
    out.extend_from_slice(report_data);
    out.extend_from_slice(signer);
    out
}

impl SimulatedQuote {
    /// Check the signature (integrity only: the signer is whoever made it).
    pub fn verify(&self) -> Result<Verdict, VerifyError> {
        let report_data: [u8; 64] = self
            .report_data
            .as_slice()
            .try_into()
            .map_err(|_| VerifyError::Simulated("report data must be 64 bytes".into()))?;
        UnparsedPublicKey::new(&ED25519, &self.signer)
            .verify(
                &signed_bytes(&self.measurements, &report_data, &self.signer),
                &self.signature,
            )
            .map_err(|_| VerifyError::Simulated("bad signature".into()))?;
        Ok(Verdict {
            tee: TeeKind::Simulated,
            tcb_status: "Simulated".into(),
            advisories: Vec::new(),
            image_hash: self.measurements.image_hash(),
            measurements: self.measurements,
            report_data,
            configuration: None,
            made_after: None,
            gpus: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{report_data, Evidence, Policy, Purpose, Refusal};

    #[test]
    fn the_sealing_key_is_the_images_and_the_labels() {
        let label = "cocoon/key-manager/master";
        let (one, two) = (SimulatedTee::new(), SimulatedTee::new());
        // Another start of the same image derives it again.
        assert_eq!(
            *one.development_sealing_key(label),
            *two.development_sealing_key(label)
        );
        assert_ne!(
            *one.development_sealing_key(label),
            *one.development_sealing_key("another purpose")
        );
        let mut other = SimulatedTee::measurements();
        other.rtmr[3][0] ^= 1;
        let other = SimulatedTee::with_measurements(other);
        assert_ne!(
            *one.development_sealing_key(label),
            *other.development_sealing_key(label)
        );
    }

    #[test]
    fn round_trip_binds_the_key_and_is_refused_by_production_policy() {
        let tee = SimulatedTee::new();
        let binding = report_data(b"node tls key", Purpose::Tls, None);
        let evidence = Evidence::Simulated(Box::new(tee.quote(&binding)));
        let evidence = Evidence::from_bytes(&evidence.to_bytes()).unwrap();
        let verdict = evidence.verify(None, 0).unwrap();
        assert_eq!(verdict.tee, crate::TeeKind::Simulated);
        assert_eq!(verdict.report_data, binding);
        assert_eq!(
            verdict.image_hash,
            SimulatedTee::measurements().image_hash()
        );

        let production = Policy {
            worker_images: [verdict.image_hash.clone()].into(),
            ..Policy::default()
        };
        assert_eq!(
            production.check(&verdict, crate::PeerRole::Worker, Some(&binding)),
            Err(Refusal::Simulated)
        );
        let development = Policy {
            allow_simulated: true,
            ..production
        };
        development
            .check(&verdict, crate::PeerRole::Worker, Some(&binding))
            .unwrap();
    }

    #[test]
    fn tampering_is_detected() {
        let tee = SimulatedTee::new();
        let quote = tee.quote(&[1; 64]);
        let mut bad = quote.clone();
        bad.report_data[0] ^= 1;
        assert!(bad.verify().is_err());
        let mut bad = quote.clone();
        bad.measurements.rtmr[3][0] ^= 1;
        assert!(bad.verify().is_err());
        let mut bad = quote;
        bad.report_data.pop();
        assert!(bad.verify().is_err());
        assert!(Evidence::from_bytes(b"\xff\xff garbage").is_err());
    }
}

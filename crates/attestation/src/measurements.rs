//! A node's identity is its measurements: for TDX the TD's initial contents
//! (MRTD) and the four runtime registers (RTMR0-3: firmware, kernel and command
//! line, application). They reduce to one *image hash*, the value the network's
//! allow-lists hold.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// 48-byte SHA-384 registers, as TDX reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measurements {
    #[serde(with = "hex_array")]
    pub mrtd: [u8; 48],
    #[serde(with = "hex48_4")]
    pub rtmr: [[u8; 48]; 4],
}

impl Measurements {
    /// SHA-256 over a domain tag, MRTD and RTMR0..3, as lowercase hex.
    pub fn image_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"cocoon-image-v1");
        h.update(self.mrtd);
        for r in &self.rtmr {
            h.update(r);
        }
        hex::encode(h.finalize())
    }
}

/// A fixed-size byte array as lowercase hex (report data, registers).
pub(crate) mod hex_array {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let bytes = hex::decode(String::deserialize(d)?).map_err(D::Error::custom)?;
        bytes
            .try_into()
            .map_err(|_| D::Error::custom(format!("expected {N} bytes ({} hex digits)", 2 * N)))
    }
}

mod hex48_4 {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[[u8; 48]; 4], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(hex::encode))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[[u8; 48]; 4], D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        let regs: Vec<[u8; 48]> = texts
            .iter()
            .map(|t| {
                hex::decode(t)
                    .map_err(D::Error::custom)?
                    .try_into()
                    .map_err(|_| D::Error::custom("expected 48 bytes (96 hex digits)"))
            })
            .collect::<Result<_, _>>()?;
        regs.try_into()
            .map_err(|_| D::Error::custom("expected 4 runtime registers"))
    }
}

//! The devnet's masterchain blocks as the HTTP API reports them: a number,
//! a time and a root hash. The emulator has no real block structure, but
//! what nodes rely on blocks for is real: each root hash chains the
//! previous one with fresh randomness, so nobody can know a block's hash
//! before it is made (what anchors TEE evidence in time), and a block once
//! made keeps its hash (saved with the chain's state).

use std::collections::BTreeMap;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Blocks older than this are forgotten (evidence is never accepted that
/// old; a day is the default maximum).
const KEEP_SECS: u32 = 3 * 24 * 3600;

/// One masterchain block's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    pub seqno: u32,
    #[serde(with = "hex_bytes")]
    pub root_hash: [u8; 32],
    pub gen_utime: u32,
}

/// The blocks made so far (the recent ones).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Blocks {
    headers: BTreeMap<u32, BlockHeader>,
}

impl Blocks {
    /// Make block `seqno` at `now`, its hash chained from the last one.
    pub fn make(&mut self, seqno: u32, now: u32) -> BlockHeader {
        let previous = self
            .headers
            .last_key_value()
            .map(|(_, h)| h.root_hash)
            .unwrap_or_default();
        let mut salt = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut salt);
        let mut h = Sha256::new();
        h.update(previous);
        h.update(seqno.to_be_bytes());
        h.update(now.to_be_bytes());
        h.update(salt);
        let header = BlockHeader {
            seqno,
            root_hash: h.finalize().into(),
            gen_utime: now,
        };
        self.headers.insert(seqno, header);
        let oldest = now.saturating_sub(KEEP_SECS);
        while self
            .headers
            .first_key_value()
            .is_some_and(|(_, h)| h.gen_utime < oldest && h.seqno != seqno)
        {
            self.headers.pop_first();
        }
        header
    }

    pub fn last(&self) -> Option<BlockHeader> {
        self.headers.last_key_value().map(|(_, h)| *h)
    }

    pub fn get(&self, seqno: u32) -> Option<BlockHeader> {
        self.headers.get(&seqno).copied()
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(&text)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| serde::de::Error::custom(format!("a 32-byte hex hash, got {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_chain_are_unpredictable_and_old_blocks_go() {
        let mut blocks = Blocks::default();
        let a = blocks.make(1, 1000);
        let mut again = Blocks::default();
        // The same number and time twice: different hashes (fresh randomness).
        assert_ne!(again.make(1, 1000).root_hash, a.root_hash);
        let b = blocks.make(2, 1005);
        assert_eq!(blocks.get(1), Some(a));
        assert_eq!(blocks.last(), Some(b));
        blocks.make(3, 1005 + KEEP_SECS + 1);
        assert_eq!(blocks.get(1), None, "older than kept");
        assert!(blocks.get(3).is_some());
    }
}

//! The compiled code of each contract, as committed in `contracts/build` (CI
//! checks those files are what the Tolk sources compile to).

use tycho_types::boc::Boc;
use tycho_types::cell::{Cell, CellBuilder, HashBytes};
use tycho_types::models::StdAddr;

use crate::Error;

/// Where a contract with `code` and initial `data` lives (basechain): the
/// hash of its state init.
pub fn contract_address(code: &Cell, data: &Cell) -> Result<StdAddr, Error> {
    let init = CellBuilder::build_from(crate::wallet::state_init(code.clone(), data.clone()))?;
    Ok(StdAddr::new(0, *init.repr_hash()))
}

/// The worker contract of `owner` (the GPU owner's wallet) with the proxy
/// contract `proxy` whose key is `proxy_key`, and its initial data.
pub fn worker_contract(
    proxy: &StdAddr,
    owner: &StdAddr,
    proxy_key: &HashBytes,
) -> Result<(StdAddr, Cell), Error> {
    let data = crate::worker_data(proxy, owner, proxy_key)?;
    Ok((contract_address(&Contract::Worker.code(), &data)?, data))
}

/// One of Cocoon's contracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Contract {
    Root,
    Proxy,
    Client,
    Worker,
}

impl Contract {
    pub const ALL: [Contract; 4] = [
        Contract::Root,
        Contract::Proxy,
        Contract::Client,
        Contract::Worker,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Contract::Root => "root",
            Contract::Proxy => "proxy",
            Contract::Client => "client",
            Contract::Worker => "worker",
        }
    }

    fn build_json(self) -> &'static str {
        match self {
            Contract::Root => include_str!("../../../contracts/build/root.json"),
            Contract::Proxy => include_str!("../../../contracts/build/proxy.json"),
            Contract::Client => include_str!("../../../contracts/build/client.json"),
            Contract::Worker => include_str!("../../../contracts/build/worker.json"),
        }
    }

    /// The contract's code cell.
    pub fn code(self) -> Cell {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Build {
            code_boc64: String,
        }
        let build: Build =
            serde_json::from_str(self.build_json()).expect("contracts/build JSON is valid");
        Boc::decode_base64(build.code_boc64).expect("contracts/build holds a valid BOC")
    }

    /// The code hash the Tolk compiler reported for the committed build.
    pub fn committed_hash(self) -> HashBytes {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Build {
            code_hash_hex: String,
        }
        let build: Build =
            serde_json::from_str(self.build_json()).expect("contracts/build JSON is valid");
        build
            .code_hash_hex
            .to_lowercase()
            .parse()
            .expect("a 32-byte hex hash")
    }
}

/// 32 bytes from the system's secure random source.
pub fn random_seed() -> Result<[u8; 32], Error> {
    use ring::rand::SecureRandom;
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| crate::ChainError::Key("no randomness".into()))?;
    Ok(seed)
}

/// A random nonce for a contract's terms (a fresh address per deployment).
pub fn random_nonce() -> Result<u64, Error> {
    let seed = random_seed()?;
    Ok(u64::from_be_bytes(seed[..8].try_into().expect("8 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_hashes_match_the_compilers() {
        for contract in Contract::ALL {
            assert_eq!(
                *contract.code().repr_hash(),
                contract.committed_hash(),
                "{}",
                contract.name()
            );
        }
    }
}

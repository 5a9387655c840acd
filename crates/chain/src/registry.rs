//! The root contract's proxy registry as nodes read it: which proxies the
//! network's operator publishes (`get_proxies`), each with its contract,
//! its Ed25519 key, the protocol version it runs and where it listens.

use tycho_types::cell::{Cell, CellSlice, HashBytes, Load};
use tycho_types::dict::Dict;
use tycho_types::models::StdAddr;
use tycho_vm::RcStackValue;

use crate::{Chain, Error};

/// One entry of the root contract's proxy registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredProxy {
    /// The proxy's contract (what clients' contracts pay).
    pub contract: StdAddr,
    /// The proxy's Ed25519 public key (its TLS identity and signing key).
    pub key: HashBytes,
    /// The protocol version it runs.
    pub version: u32,
    /// `host:port` it listens on.
    pub endpoint: String,
}

impl RegisteredProxy {
    /// `get_proxies`' result: a dictionary (address -> info cell), or null
    /// when no proxy is registered.
    pub fn list_from_stack(stack: &[RcStackValue]) -> Result<Vec<Self>, Error> {
        let value = stack
            .first()
            .ok_or_else(|| crate::ChainError::Unexpected("get_proxies returned nothing".into()))?;
        if value.is_null() {
            return Ok(Vec::new());
        }
        let root = value.as_cell().cloned().ok_or_else(|| {
            crate::ChainError::Unexpected("get_proxies did not return a cell".into())
        })?;
        Self::list_from_dict(root)
    }

    /// The registry's dictionary (address -> info cell), as a list.
    pub fn list_from_dict(root: Cell) -> Result<Vec<Self>, Error> {
        let dict: Dict<StdAddr, Cell> = Dict::from_raw(Some(root));
        let mut out = Vec::new();
        for entry in dict.iter() {
            let (contract, info) =
                entry.map_err(|e| crate::ChainError::Unexpected(format!("proxy registry: {e}")))?;
            out.push(Self::parse(contract, &info)?);
        }
        Ok(out)
    }

    fn parse(contract: StdAddr, info: &Cell) -> Result<Self, Error> {
        let bad = |e: tycho_types::error::Error| {
            crate::ChainError::Unexpected(format!("proxy {contract}: {e}"))
        };
        let mut slice = info.as_slice().map_err(bad)?;
        let key = HashBytes::load_from(&mut slice).map_err(bad)?;
        let version = slice.load_u32().map_err(bad)?;
        let endpoint = slice.load_reference_cloned().map_err(bad)?;
        let endpoint = read_snake(&endpoint).map_err(|e| {
            crate::ChainError::Unexpected(format!("proxy {contract}: endpoint: {e}"))
        })?;
        Ok(Self {
            contract,
            key,
            version,
            endpoint,
        })
    }
}

/// The proxies the root contract at `root` publishes.
pub async fn registered_proxies(
    chain: &dyn Chain,
    root: &StdAddr,
) -> Result<Vec<RegisteredProxy>, Error> {
    RegisteredProxy::list_from_stack(&chain.get(root, "get_proxies", &[]).await?)
}

/// The registry as every one of `endpoints` reads it, believed only when
/// all read the same root version and the same proxies (TON HTTP APIs
/// give no proofs of get-method results: endpoints run by independent
/// parties must agree); a read during which the root changed is an
/// error, to be tried again.
pub async fn registered_proxies_agreeing(
    endpoints: &[std::sync::Arc<dyn Chain>],
    root: &StdAddr,
) -> Result<Vec<RegisteredProxy>, Error> {
    let mut agreed: Option<(u128, Vec<RegisteredProxy>)> = None;
    for (i, chain) in endpoints.iter().enumerate() {
        let version = || async { crate::stack_int(&chain.get(root, "get_version", &[]).await?) };
        let before = version().await?;
        let mut listed = registered_proxies(chain.as_ref(), root).await?;
        let after = version().await?;
        if before != after {
            return Err(crate::ChainError::Unexpected(format!(
                "the root contract {root} changed while its proxy registry was read (version {before} to {after})"
            )));
        }
        listed.sort_by_key(|p| p.contract.to_string());
        match &agreed {
            None => agreed = Some((before, listed)),
            Some((version, first)) if (*version, first) != (before, &listed) => {
                return Err(crate::ChainError::Unexpected(format!(
                    "TON endpoints disagree on the root contract {root}'s proxy registry: the first reads version {version}, endpoint {i} reads version {before}{}",
                    if *version == before { " with other proxies" } else { "" }
                )));
            }
            Some(_) => {}
        }
    }
    agreed.map(|(_, listed)| listed).ok_or_else(|| {
        crate::ChainError::Unexpected("no TON endpoint to read the registry from".into())
    })
}

/// Whether the root contract at `root` publishes the proxy contract `proxy`
/// with the key `key`. The outer error is the chain's; the inner one says,
/// for a person, why this proxy contract is not one the network vouches for
/// (a proxy cannot have a client fund, or a worker trust, a contract that
/// pays someone else).
pub async fn check_proxy_listed(
    chain: &dyn Chain,
    root: &StdAddr,
    proxy: &StdAddr,
    key: &[u8; 32],
) -> Result<Result<(), String>, Error> {
    let listed = registered_proxies(chain, root).await?;
    Ok(match listed.iter().find(|p| &p.contract == proxy) {
        Some(p) if &p.key.0 == key => Ok(()),
        Some(_) => Err(format!(
            "proxy contract {proxy} is registered in the root contract {root} with another key than the proxy's"
        )),
        None => Err(format!(
            "proxy contract {proxy} is not in the root contract {root}'s proxy registry"
        )),
    })
}

/// Text from a snake string (the reverse of [`crate::snake`]), at most 4 KiB.
pub fn read_snake(cell: &Cell) -> Result<String, Error> {
    let mut bytes = Vec::new();
    let mut current = cell.clone();
    loop {
        let mut slice: CellSlice<'_> = current.as_slice()?;
        let bits = slice.size_bits();
        crate::error::ensure!(
            bits.is_multiple_of(8),
            Unexpected,
            "a snake string cell holds {bits} bits"
        );
        let mut chunk = vec![0u8; (bits / 8) as usize];
        slice.load_raw(&mut chunk, bits)?;
        bytes.extend_from_slice(&chunk);
        crate::error::ensure!(bytes.len() <= 4096, Unexpected, "longer than 4 KiB");
        if slice.size_refs() == 0 {
            break;
        }
        current = slice.load_reference_cloned()?;
    }
    String::from_utf8(bytes).map_err(|_| crate::ChainError::Unexpected("not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_strings_round_trip() {
        for text in ["", "127.0.0.1:9100", &"x".repeat(300)] {
            assert_eq!(read_snake(&crate::snake(text).unwrap()).unwrap(), text);
        }
    }
}

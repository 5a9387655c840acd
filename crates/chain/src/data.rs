//! The contracts' storage as deployed (initial data, which fixes each
//! contract's address) and their get-method results, mirroring the Tolk
//! structs in `contracts/src`.

use num_traits::ToPrimitive;
use tycho_types::cell::{Cell, HashBytes};
use tycho_types::models::StdAddr;
use tycho_vm::RcStackValue;

use crate::messages::{cell, store_addr, store_coins};
use crate::{Contract, Error};

/// A client contract's fixed terms.
#[derive(Debug, Clone)]
pub struct ClientTerms {
    pub proxy: StdAddr,
    pub owner: StdAddr,
    pub proxy_key: HashBytes,
    pub close_delay: u32,
    /// Random per deployment, so a channel deployed again has a new address
    /// (and the old channel's public signatures are worthless on it).
    pub nonce: u64,
    /// The fingerprint (SHA-256 of the SubjectPublicKeyInfo) of the client
    /// node's TLS key: the only node a proxy serves on this contract.
    pub client_key: HashBytes,
}

impl ClientTerms {
    /// Storage at deployment: the terms, nothing deposited or charged.
    pub fn initial_data(&self) -> Result<Cell, Error> {
        self.data_with(&ClientState {
            balance: 0,
            stake: 0,
            charged: 0,
            close_requested_at: 0,
        })
    }

    /// Storage holding these terms and `state` (what the contract's data
    /// looks like later; deployed as initial data it is a forgery, which
    /// [`ClientTerms::address`] tells apart).
    pub fn data_with(&self, state: &ClientState) -> Result<Cell, Error> {
        let terms = cell(|b| {
            store_addr(b, &self.proxy)?;
            store_addr(b, &self.owner)?;
            b.store_u256(&self.proxy_key)?;
            b.store_u32(self.close_delay)?;
            b.store_u64(self.nonce)
        })?;
        cell(|b| {
            b.store_reference(terms)?;
            b.store_u256(&self.client_key)?;
            store_coins(b, state.balance)?;
            store_coins(b, state.stake)?;
            store_coins(b, state.charged)?;
            b.store_u32(state.close_requested_at)
        })
    }

    /// Where a genuine client contract with these terms lives: the address
    /// of this code with these terms and nothing deposited or charged.
    pub fn address(&self) -> Result<StdAddr, Error> {
        crate::contract_address(&Contract::Client.code(), &self.initial_data()?)
    }
}

/// A worker contract's storage at deployment.
pub fn worker_data(proxy: &StdAddr, owner: &StdAddr, proxy_key: &HashBytes) -> Result<Cell, Error> {
    cell(|b| {
        store_addr(b, proxy)?;
        store_addr(b, owner)?;
        b.store_u256(proxy_key)?;
        store_coins(b, 0)
    })
}

/// A proxy contract's fixed terms.
#[derive(Debug, Clone)]
pub struct ProxyTerms {
    pub owner: StdAddr,
    pub proxy_key: HashBytes,
    pub root: StdAddr,
    pub close_delay: u32,
    /// Random per deployment (see [`ClientTerms::nonce`]).
    pub nonce: u64,
}

impl ProxyTerms {
    pub fn initial_data(&self) -> Result<Cell, Error> {
        let terms = cell(|b| {
            store_addr(b, &self.owner)?;
            b.store_u256(&self.proxy_key)?;
            store_addr(b, &self.root)?;
            b.store_u32(self.close_delay)?;
            b.store_u64(self.nonce)?;
            b.store_reference(Contract::Worker.code())
        })?;
        cell(|b| {
            b.store_reference(terms)?;
            store_coins(b, 0)?; // stake
            store_coins(b, 0)?; // received
            store_coins(b, 0)?; // workersPaid
            b.store_u64(0)?; // booksSeqno
            b.store_u256(&HashBytes::ZERO)?;
            b.store_u64(0)?; // paySeqno
            b.store_u32(0) // closeRequestedAt
        })
    }
}

/// The network's prices, as the root contract stores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prices {
    pub price_per_token: u128,
    pub worker_share_bps: u16,
    pub prompt_bps: u16,
    pub cached_prompt_bps: u16,
    pub completion_bps: u16,
    pub reasoning_bps: u16,
    pub min_client_stake: u128,
    pub min_proxy_stake: u128,
    pub client_close_delay: u32,
    pub proxy_close_delay: u32,
}

impl Prices {
    pub fn to_cell(&self) -> Result<Cell, Error> {
        cell(|b| {
            store_coins(b, self.price_per_token)?;
            for bps in [
                self.worker_share_bps,
                self.prompt_bps,
                self.cached_prompt_bps,
                self.completion_bps,
                self.reasoning_bps,
            ] {
                b.store_u16(bps)?;
            }
            store_coins(b, self.min_client_stake)?;
            store_coins(b, self.min_proxy_stake)?;
            b.store_u32(self.client_close_delay)?;
            b.store_u32(self.proxy_close_delay)
        })
    }

    /// The root contract's storage at deployment for `owner`.
    pub fn root_data(&self, owner: &StdAddr) -> Result<Cell, Error> {
        let images = cell(|b| {
            b.store_bit_zero()?; // worker images
            b.store_bit_zero()?; // proxy images
            b.store_bit_zero() // configuration rules: none
        })?;
        let prices = self.to_cell()?;
        cell(|b| {
            store_addr(b, owner)?;
            b.store_u32(0)?;
            b.store_reference(images)?;
            b.store_bit_zero()?; // models
            b.store_bit_zero()?; // proxies
            b.store_reference(prices)?;
            b.store_small_uint(0, 2) // pending owner: none (addr_none)
        })
    }
}

fn int(stack: &[RcStackValue], i: usize) -> Result<u128, Error> {
    stack
        .get(i)
        .and_then(|v| v.as_int())
        .and_then(|n| n.to_u128())
        .ok_or_else(|| {
            crate::ChainError::Unexpected(format!(
                "get-method result {i} is not a non-negative integer"
            ))
        })
}

/// An address in a get-method result (a slice from the TVM, a cell from the
/// HTTP API).
fn address(stack: &[RcStackValue], i: usize) -> Result<StdAddr, Error> {
    let value = stack.get(i).ok_or_else(|| {
        crate::ChainError::Unexpected(format!("get-method result {i} is missing"))
    })?;
    use tycho_types::cell::Load;
    let parsed = if let Some(slice) = value.as_cell_slice() {
        StdAddr::load_from(&mut slice.apply())
    } else if let Some(cell) = value.as_cell() {
        StdAddr::load_from(&mut cell.as_slice()?)
    } else {
        crate::error::fail!(Unexpected, "get-method result {i} is not an address");
    };
    parsed.map_err(|e| {
        crate::ChainError::Unexpected(format!("get-method result {i} is not an address: {e}"))
    })
}

/// `get_client_data` in full: the channel's terms and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientChannel {
    /// The proxy contract that receives charges.
    pub proxy: StdAddr,
    /// The client's wallet.
    pub owner: StdAddr,
    pub proxy_key: HashBytes,
    pub close_delay: u32,
    /// The client node's key fingerprint (see [`ClientTerms::client_key`]).
    pub client_key: HashBytes,
    pub nonce: u64,
    pub state: ClientState,
}

impl ClientChannel {
    pub fn from_stack(stack: &[RcStackValue]) -> Result<Self, Error> {
        Ok(Self {
            proxy: address(stack, 0)?,
            owner: address(stack, 1)?,
            proxy_key: HashBytes(uint256(stack, 2)?),
            close_delay: int(stack, 3)? as u32,
            client_key: HashBytes(uint256(stack, 8)?),
            nonce: u64::try_from(int(stack, 9)?).map_err(|_| {
                crate::ChainError::Unexpected("get_client_data: the nonce is not a uint64".into())
            })?,
            state: ClientState::from_stack(stack)?,
        })
    }

    /// The terms the contract reports. A contract that is not a genuine
    /// client contract can report anything: compare [`ClientTerms::address`]
    /// with the address read before trusting any of it.
    pub fn terms(&self) -> ClientTerms {
        ClientTerms {
            proxy: self.proxy.clone(),
            owner: self.owner.clone(),
            proxy_key: self.proxy_key,
            close_delay: self.close_delay,
            nonce: self.nonce,
            client_key: self.client_key,
        }
    }
}

/// `get_client_data` without the terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientState {
    pub balance: u128,
    pub stake: u128,
    pub charged: u128,
    pub close_requested_at: u32,
}

impl ClientState {
    pub fn from_stack(stack: &[RcStackValue]) -> Result<Self, Error> {
        Ok(Self {
            balance: int(stack, 4)?,
            stake: int(stack, 5)?,
            charged: int(stack, 6)?,
            close_requested_at: int(stack, 7)? as u32,
        })
    }
}

/// `get_proxy_data` without the terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyState {
    /// The operator's wallet: stake, close, payouts of earnings.
    pub owner: StdAddr,
    /// The key that signs for this proxy contract.
    pub proxy_key: HashBytes,
    /// Seconds between `RequestProxyClose` and `FinishProxyClose`.
    pub close_delay: u32,
    pub stake: u128,
    pub received: u128,
    pub workers_paid: u128,
    pub books_seqno: u64,
    /// The last committed books hash.
    pub books_hash: [u8; 32],
    pub pay_seqno: u64,
    pub close_requested_at: u32,
}

/// A uint256 result as 32 big-endian bytes.
fn uint256(stack: &[RcStackValue], i: usize) -> Result<[u8; 32], Error> {
    let n = stack.get(i).and_then(|v| v.as_int()).ok_or_else(|| {
        crate::ChainError::Unexpected(format!("get-method result {i} is not an integer"))
    })?;
    let (sign, bytes) = n.to_bytes_be();
    crate::error::ensure!(
        sign != num_bigint::Sign::Minus && bytes.len() <= 32,
        Unexpected,
        "get-method result {i} is not a uint256"
    );
    let mut out = [0u8; 32];
    out[32 - bytes.len()..].copy_from_slice(&bytes);
    Ok(out)
}

impl ProxyState {
    pub fn from_stack(stack: &[RcStackValue]) -> Result<Self, Error> {
        Ok(Self {
            owner: address(stack, 0)?,
            proxy_key: HashBytes(uint256(stack, 1)?),
            close_delay: int(stack, 3)? as u32,
            stake: int(stack, 4)?,
            received: int(stack, 5)?,
            workers_paid: int(stack, 6)?,
            books_seqno: int(stack, 7)? as u64,
            books_hash: uint256(stack, 8)?,
            pay_seqno: int(stack, 9)? as u64,
            close_requested_at: int(stack, 10)? as u32,
        })
    }
}

/// `get_prices` of the root contract.
impl Prices {
    pub fn from_stack(stack: &[RcStackValue]) -> Result<Self, Error> {
        Ok(Self {
            price_per_token: int(stack, 0)?,
            worker_share_bps: int(stack, 1)? as u16,
            prompt_bps: int(stack, 2)? as u16,
            cached_prompt_bps: int(stack, 3)? as u16,
            completion_bps: int(stack, 4)? as u16,
            reasoning_bps: int(stack, 5)? as u16,
            min_client_stake: int(stack, 6)?,
            min_proxy_stake: int(stack, 7)?,
            client_close_delay: int(stack, 8)? as u32,
            proxy_close_delay: int(stack, 9)? as u32,
        })
    }
}

/// The first value of a get-method result as an integer (e.g. `get_version`).
pub fn stack_int(stack: &[RcStackValue]) -> Result<u128, Error> {
    int(stack, 0)
}

/// The first value of a get-method result as an address (e.g. `get_owner`).
pub fn stack_address(stack: &[RcStackValue]) -> Result<StdAddr, Error> {
    address(stack, 0)
}

/// The first value of a get-method result as an address or null (e.g.
/// `get_pending_owner`).
pub fn stack_optional_address(stack: &[RcStackValue]) -> Result<Option<StdAddr>, Error> {
    match stack.first() {
        Some(value) if value.is_null() => Ok(None),
        _ => address(stack, 0).map(Some),
    }
}

/// `get_worker_data`: whose it is and what has been paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerState {
    pub proxy: StdAddr,
    pub owner: StdAddr,
    pub paid: u128,
}

impl WorkerState {
    pub fn from_stack(stack: &[RcStackValue]) -> Result<Self, Error> {
        Ok(Self {
            proxy: address(stack, 0)?,
            owner: address(stack, 1)?,
            paid: int(stack, 3)?,
        })
    }
}

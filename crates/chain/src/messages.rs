//! Every message body the contracts accept, and the payloads the proxy's
//! Ed25519 key signs (the hash of a cell with the payload's opcode, the
//! contract it is for, and the amounts), mirroring `contracts/src`.

use ring::signature::{Ed25519KeyPair, KeyPair};
use tycho_types::cell::{Cell, CellBuilder, CellFamily, HashBytes, Store};
use tycho_types::models::StdAddr;
use tycho_types::num::Tokens;

use crate::Error;

/// Message opcodes (the first 32 bits of a body).
pub mod ops {
    pub const CLIENT_TOP_UP: u32 = 0x7c1e0001;
    pub const CLIENT_INCREASE_STAKE: u32 = 0x7c1e0002;
    pub const CLIENT_WITHDRAW: u32 = 0x7c1e0003;
    pub const CLIENT_CHARGE: u32 = 0x7c1e0004;
    pub const CLIENT_COOPERATIVE_CLOSE: u32 = 0x7c1e0005;
    pub const CLIENT_REQUEST_CLOSE: u32 = 0x7c1e0006;
    pub const CLIENT_FINISH_CLOSE: u32 = 0x7c1e0007;
    pub const WORKER_CLAIM: u32 = 0x7c1e0011;
    pub const PROXY_ADD_STAKE: u32 = 0x7c1e0021;
    pub const PROXY_COMMIT_BOOKS: u32 = 0x7c1e0022;
    pub const PROXY_PAY: u32 = 0x7c1e0023;
    pub const PROXY_REQUEST_CLOSE: u32 = 0x7c1e0024;
    pub const PROXY_FINISH_CLOSE: u32 = 0x7c1e0025;
    pub const CLIENT_PAYMENT: u32 = 0x7c1e00a1;
    pub const WORKER_PAYOUT: u32 = 0x7c1e00b1;
    pub const ROOT_SET_IMAGE: u32 = 0x7c1e0031;
    pub const ROOT_SET_MODEL: u32 = 0x7c1e0032;
    pub const ROOT_SET_PROXY: u32 = 0x7c1e0033;
    pub const ROOT_SET_PRICES: u32 = 0x7c1e0034;
    pub const ROOT_CHANGE_OWNER: u32 = 0x7c1e0035;
    pub const ROOT_ACCEPT_OWNER: u32 = 0x7c1e0036;
    pub const ROOT_SET_RULES: u32 = 0x7c1e0037;
}

/// Opcodes of signed payloads.
pub mod signed {
    pub const CHARGE: u32 = 0x43484152;
    pub const CLOSE: u32 = 0x434c4f53;
    pub const OWED: u32 = 0x4f574544;
    pub const BOOKS: u32 = 0x424f4f4b;
    pub const PAY: u32 = 0x50415920;
}

/// Build a cell with `fill`.
pub(crate) fn cell(
    fill: impl FnOnce(&mut CellBuilder) -> Result<(), tycho_types::error::Error>,
) -> Result<Cell, Error> {
    let mut b = CellBuilder::new();
    fill(&mut b)?;
    Ok(b.build()?)
}

pub(crate) fn store_coins(
    b: &mut CellBuilder,
    nano: u128,
) -> Result<(), tycho_types::error::Error> {
    Tokens::new(nano).store_into(b, Cell::empty_context())
}

pub(crate) fn store_addr(
    b: &mut CellBuilder,
    addr: &StdAddr,
) -> Result<(), tycho_types::error::Error> {
    addr.store_into(b, Cell::empty_context())
}

fn op_only(op: u32) -> Result<Cell, Error> {
    cell(|b| b.store_u32(op))
}

fn op_amount(op: u32, nano: u128) -> Result<Cell, Error> {
    cell(|b| {
        b.store_u32(op)?;
        store_coins(b, nano)
    })
}

fn op_amount_signature(op: u32, nano: u128, signature: &[u8; 64]) -> Result<Cell, Error> {
    cell(|b| {
        b.store_u32(op)?;
        store_coins(b, nano)?;
        b.store_raw(signature, 512)
    })
}

/// Client contract messages.
pub mod client {
    use super::*;

    /// What the client contract keeps of every top-up for its own gas
    /// (`GAS_RESERVE` in `contracts/src/common.tolk`): attach it on top of
    /// the amount to deposit.
    pub const GAS_RESERVE: u128 = 20_000_000;

    pub fn top_up() -> Result<Cell, Error> {
        op_only(ops::CLIENT_TOP_UP)
    }
    pub fn increase_stake(nano: u128) -> Result<Cell, Error> {
        op_amount(ops::CLIENT_INCREASE_STAKE, nano)
    }
    pub fn withdraw(nano: u128) -> Result<Cell, Error> {
        op_amount(ops::CLIENT_WITHDRAW, nano)
    }
    pub fn charge(cumulative: u128, signature: &[u8; 64]) -> Result<Cell, Error> {
        op_amount_signature(ops::CLIENT_CHARGE, cumulative, signature)
    }
    pub fn cooperative_close(charged: u128, signature: &[u8; 64]) -> Result<Cell, Error> {
        op_amount_signature(ops::CLIENT_COOPERATIVE_CLOSE, charged, signature)
    }
    pub fn request_close() -> Result<Cell, Error> {
        op_only(ops::CLIENT_REQUEST_CLOSE)
    }
    pub fn finish_close() -> Result<Cell, Error> {
        op_only(ops::CLIENT_FINISH_CLOSE)
    }

    /// Attached to an owner's `IncreaseStake` for its gas (what is left
    /// stays with the contract as reserve).
    pub const STAKE_GAS: u128 = 10_000_000;

    /// Deposit `amount` into `contract` and stake `stake` of it (the credit
    /// a proxy extends between settlements): a `TopUp` (deploying the
    /// contract with `init`, if given) and the owner's `IncreaseStake`, to
    /// send in one wallet transfer (messages between two accounts arrive in
    /// the order sent).
    pub fn deposit(
        contract: &StdAddr,
        amount: u128,
        stake: u128,
        init: Option<(Cell, Cell)>,
    ) -> Result<Vec<crate::Outgoing>, Error> {
        let mut messages = vec![crate::Outgoing {
            to: contract.clone(),
            value: amount + GAS_RESERVE,
            bounce: init.is_none(),
            body: top_up()?,
            init,
        }];
        if stake > 0 {
            messages.push(crate::Outgoing {
                to: contract.clone(),
                value: STAKE_GAS,
                bounce: true,
                body: increase_stake(stake)?,
                init: None,
            });
        }
        Ok(messages)
    }
}

/// Worker contract messages.
pub mod worker {
    use super::*;

    pub fn claim(owed: u128, signature: &[u8; 64]) -> Result<Cell, Error> {
        op_amount_signature(ops::WORKER_CLAIM, owed, signature)
    }
}

/// Proxy contract messages.
pub mod proxy {
    use super::*;

    pub fn add_stake() -> Result<Cell, Error> {
        op_only(ops::PROXY_ADD_STAKE)
    }
    pub fn commit_books(
        seqno: u64,
        books: &HashBytes,
        signature: &[u8; 64],
    ) -> Result<Cell, Error> {
        cell(|b| {
            b.store_u32(ops::PROXY_COMMIT_BOOKS)?;
            b.store_u64(seqno)?;
            b.store_u256(books)?;
            b.store_raw(signature, 512)
        })
    }
    pub fn pay(
        dest: &StdAddr,
        nano: u128,
        seqno: u64,
        signature: &[u8; 64],
    ) -> Result<Cell, Error> {
        cell(|b| {
            b.store_u32(ops::PROXY_PAY)?;
            store_addr(b, dest)?;
            store_coins(b, nano)?;
            b.store_u64(seqno)?;
            b.store_raw(signature, 512)
        })
    }
    pub fn request_close() -> Result<Cell, Error> {
        op_only(ops::PROXY_REQUEST_CLOSE)
    }
    pub fn finish_close(signature: &[u8; 64]) -> Result<Cell, Error> {
        cell(|b| {
            b.store_u32(ops::PROXY_FINISH_CLOSE)?;
            b.store_raw(signature, 512)
        })
    }
}

/// Root contract messages (owner only; each bumps the config version).
pub mod root {
    use super::*;

    /// Which allow-list an image hash goes to.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ImageRole {
        Worker,
        Proxy,
    }

    pub fn set_image(
        role: ImageRole,
        image_hash: &HashBytes,
        allowed: bool,
    ) -> Result<Cell, Error> {
        cell(|b| {
            b.store_u32(ops::ROOT_SET_IMAGE)?;
            b.store_bit(role == ImageRole::Proxy)?;
            b.store_u256(image_hash)?;
            b.store_bit(allowed)
        })
    }

    /// `name: None` removes the model.
    pub fn set_model(weights_hash: &HashBytes, name: Option<&str>) -> Result<Cell, Error> {
        let name = name.map(snake).transpose()?;
        cell(|b| {
            b.store_u32(ops::ROOT_SET_MODEL)?;
            b.store_u256(weights_hash)?;
            store_maybe_ref(b, name)
        })
    }

    /// A registered proxy: its key, version and endpoint; `None` removes it.
    pub fn set_proxy(
        proxy: &StdAddr,
        info: Option<(&HashBytes, u32, &str)>,
    ) -> Result<Cell, Error> {
        let info = match info {
            None => None,
            Some((key, version, endpoint)) => {
                let endpoint = snake(endpoint)?;
                Some(cell(|b| {
                    b.store_u256(key)?;
                    b.store_u32(version)?;
                    b.store_reference(endpoint)
                })?)
            }
        };
        cell(|b| {
            b.store_u32(ops::ROOT_SET_PROXY)?;
            store_addr(b, proxy)?;
            store_maybe_ref(b, info)
        })
    }

    pub fn set_prices(prices: &crate::Prices) -> Result<Cell, Error> {
        let prices = prices.to_cell()?;
        cell(|b| {
            b.store_u32(ops::ROOT_SET_PRICES)?;
            b.store_reference(prices)
        })
    }

    /// From the owner: propose `owner` as the next owner (it must
    /// [`accept_owner`]); the owner's own address withdraws a proposal.
    pub fn change_owner(owner: &StdAddr) -> Result<Cell, Error> {
        cell(|b| {
            b.store_u32(ops::ROOT_CHANGE_OWNER)?;
            store_addr(b, owner)
        })
    }

    /// From the proposed owner: take the root contract over.
    pub fn accept_owner() -> Result<Cell, Error> {
        cell(|b| b.store_u32(ops::ROOT_ACCEPT_OWNER))
    }

    /// The rules every peer's configuration must follow; `None` clears
    /// them (no rules on chain).
    pub fn set_rules(
        rules: Option<&cocoon_attestation::ConfigurationRules>,
    ) -> Result<Cell, Error> {
        let rules = match rules {
            None => None,
            Some(rules) => {
                let engines = match rules.worker_engines.is_empty() {
                    true => None,
                    false => Some(snake(
                        &rules
                            .worker_engines
                            .iter()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(","),
                    )?),
                };
                Some(cell(|b| {
                    b.store_bit(rules.require_configuration)?;
                    b.store_bit(rules.upstream_loopback_only)?;
                    store_maybe_ref(b, engines)
                })?)
            }
        };
        cell(|b| {
            b.store_u32(ops::ROOT_SET_RULES)?;
            store_maybe_ref(b, rules)
        })
    }
}

fn store_maybe_ref(
    b: &mut CellBuilder,
    value: Option<Cell>,
) -> Result<(), tycho_types::error::Error> {
    match value {
        None => b.store_bit_zero(),
        Some(cell) => {
            b.store_bit_one()?;
            b.store_reference(cell)
        }
    }
}

/// Text as a snake string: bytes in a cell, continued in its first reference
/// when longer than 127 bytes (as `@ton/core`'s `storeStringTail`).
pub fn snake(text: &str) -> Result<Cell, Error> {
    fn chunk(bytes: &[u8]) -> Result<Cell, Error> {
        let (head, tail) = bytes.split_at(bytes.len().min(127));
        let rest = if tail.is_empty() {
            None
        } else {
            Some(chunk(tail)?)
        };
        cell(|b| {
            b.store_raw(head, (head.len() * 8) as u16)?;
            if let Some(rest) = rest {
                b.store_reference(rest)?;
            }
            Ok(())
        })
    }
    chunk(text.as_bytes())
}

fn amount_payload(op: u32, at: &StdAddr, nano: u128) -> Result<Cell, Error> {
    cell(|b| {
        b.store_u32(op)?;
        store_addr(b, at)?;
        store_coins(b, nano)
    })
}

/// Whether `signature` is the proxy key `public`'s over `nano` for `at` with
/// payload opcode `op`: what the contract will check, checked before paying
/// fees to send it.
pub fn verify_amount(
    public: &[u8; 32],
    op: u32,
    at: &StdAddr,
    nano: u128,
    signature: &[u8],
) -> bool {
    let Ok(payload) = amount_payload(op, at, nano) else {
        return false;
    };
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public)
        .verify(payload.repr_hash().as_slice(), signature)
        .is_ok()
}

/// The proxy's signing key (it lives in the proxy's enclave); signs the
/// payloads the contracts check. The proxy node signs with its own Ed25519
/// identity key ([`ProxySigner::from_fn`]); the secret stays where it is.
#[derive(Clone)]
pub struct ProxySigner {
    public: HashBytes,
    sign: std::sync::Arc<SignFn>,
}

/// Ed25519 over a message.
pub type SignFn = dyn Fn(&[u8]) -> [u8; 64] + Send + Sync;

impl std::fmt::Debug for ProxySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProxySigner({})", self.public)
    }
}

impl ProxySigner {
    /// A key from a 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, Error> {
        let key = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|e| crate::ChainError::Key(format!("bad Ed25519 seed: {e}")))?;
        let mut public = [0u8; 32];
        public.copy_from_slice(key.public_key().as_ref());
        Ok(Self::from_fn(public, move |message| {
            let mut out = [0u8; 64];
            out.copy_from_slice(key.sign(message).as_ref());
            out
        }))
    }

    /// A key held elsewhere: its public half and a function that signs.
    pub fn from_fn(
        public: [u8; 32],
        sign: impl Fn(&[u8]) -> [u8; 64] + Send + Sync + 'static,
    ) -> Self {
        Self {
            public: HashBytes(public),
            sign: std::sync::Arc::new(sign),
        }
    }

    /// The public key as the contracts store it (uint256).
    pub fn public_key(&self) -> HashBytes {
        self.public
    }

    fn sign_cell(&self, payload: Cell) -> [u8; 64] {
        (self.sign)(payload.repr_hash().as_slice())
    }

    /// Signature over `amount` for `at` with payload opcode `op` (charge,
    /// owed, close).
    pub fn sign_amount(&self, op: u32, at: &StdAddr, nano: u128) -> Result<[u8; 64], Error> {
        Ok(self.sign_cell(amount_payload(op, at, nano)?))
    }

    pub fn sign_books(
        &self,
        at: &StdAddr,
        seqno: u64,
        books: &HashBytes,
    ) -> Result<[u8; 64], Error> {
        Ok(self.sign_cell(cell(|b| {
            b.store_u32(signed::BOOKS)?;
            store_addr(b, at)?;
            b.store_u64(seqno)?;
            b.store_u256(books)
        })?))
    }

    pub fn sign_pay(
        &self,
        at: &StdAddr,
        dest: &StdAddr,
        nano: u128,
        seqno: u64,
    ) -> Result<[u8; 64], Error> {
        Ok(self.sign_cell(cell(|b| {
            b.store_u32(signed::PAY)?;
            store_addr(b, at)?;
            store_addr(b, dest)?;
            store_coins(b, nano)?;
            b.store_u64(seqno)
        })?))
    }
}

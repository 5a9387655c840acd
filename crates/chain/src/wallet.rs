//! TON's standard wallet v4r2 (the code `@ton/ton` ships, hash
//! `feb5ff68…d5c0`): its address and initial data for a key, and signed
//! external messages that make it send internal messages.

use ring::signature::{Ed25519KeyPair, KeyPair};
use tycho_types::boc::Boc;
use tycho_types::cell::{Cell, CellBuilder, HashBytes};
use tycho_types::models::{
    CurrencyCollection, ExtInMsgInfo, IntAddr, MsgInfo, OwnedMessage, OwnedRelaxedMessage,
    RelaxedIntMsgInfo, RelaxedMsgInfo, StateInit, StdAddr,
};
use tycho_types::num::Tokens;

use crate::messages::cell;
use crate::Error;

/// Send mode: pay forwarding fees separately from the value.
pub const SEND_PAY_FEES_SEPARATELY: u8 = 1;
/// Send mode: ignore errors in the action phase.
pub const SEND_IGNORE_ERRORS: u8 = 2;

/// A v4r2 wallet and its key. The secret never leaves this value.
pub struct Wallet {
    key: Ed25519KeyPair,
    public: HashBytes,
    /// Subwallet id (698983191 is the default for the basechain).
    pub wallet_id: u32,
    pub address: StdAddr,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wallet({})", self.address)
    }
}

impl Wallet {
    pub const DEFAULT_ID: u32 = 698_983_191;

    /// The v4r2 code.
    pub fn code() -> Cell {
        Boc::decode(include_bytes!("../res/wallet_v4r2.boc"))
            .expect("bundled wallet code is a valid BOC")
    }

    /// The wallet of the Ed25519 key with this 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, Error> {
        let key = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|e| crate::ChainError::Key(format!("bad Ed25519 seed: {e}")))?;
        let mut public = [0u8; 32];
        public.copy_from_slice(key.public_key().as_ref());
        let public = HashBytes(public);
        let wallet_id = Self::DEFAULT_ID;
        let data = initial_data(&public, wallet_id)?;
        let init = CellBuilder::build_from(state_init(Self::code(), data))?;
        Ok(Self {
            key,
            public,
            wallet_id,
            address: StdAddr::new(0, *init.repr_hash()),
        })
    }

    pub fn public_key(&self) -> HashBytes {
        self.public
    }

    /// The wallet whose 24-word mnemonic is in the file at `path`.
    pub fn from_mnemonic_file(path: &std::path::Path) -> Result<Self, Error> {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| crate::ChainError::Key(format!("{}: {e}", path.display())))?,
        );
        let mnemonic = crate::mnemonic::Mnemonic::parse(&text)
            .map_err(|e| crate::ChainError::Key(format!("{}: {e}", path.display())))?;
        Self::from_seed(&mnemonic.key_seed())
    }

    /// Code and data to deploy this wallet with its first message.
    pub fn state_init(&self) -> Result<(Cell, Cell), Error> {
        Ok((Self::code(), initial_data(&self.public, self.wallet_id)?))
    }

    /// The external message that makes this wallet (at `seqno`, deploying it
    /// when `seqno` is 0) send `messages` (send mode, internal message), valid
    /// until the Unix time `valid_until`.
    pub fn transfer(
        &self,
        seqno: u32,
        valid_until: u32,
        messages: &[(u8, Cell)],
    ) -> Result<Cell, Error> {
        crate::error::ensure!(
            messages.len() <= 4,
            Key,
            "a v4 wallet sends at most 4 messages at once"
        );
        let signed = cell(|b| {
            b.store_u32(self.wallet_id)?;
            b.store_u32(valid_until)?;
            b.store_u32(seqno)?;
            b.store_u8(0)?; // op: simple send
            for (mode, message) in messages {
                b.store_u8(*mode)?;
                b.store_reference(message.clone())?;
            }
            Ok(())
        })?;
        let signature = self.key.sign(signed.repr_hash().as_slice());
        let body = cell(|b| {
            b.store_raw(signature.as_ref(), 512)?;
            b.store_slice(signed.as_slice()?)
        })?;
        let init = if seqno == 0 {
            let (code, data) = self.state_init()?;
            Some(state_init(code, data))
        } else {
            None
        };
        Ok(CellBuilder::build_from(OwnedMessage {
            info: MsgInfo::ExtIn(ExtInMsgInfo {
                src: None,
                dst: IntAddr::Std(self.address.clone()),
                import_fee: Tokens::ZERO,
            }),
            init,
            body: body.into(),
            layout: None,
        })?)
    }
}

/// An internal message for a wallet to send: `value` to `dest` with `body`,
/// deploying `init` there if given.
pub fn internal_message(
    dest: &StdAddr,
    value: u128,
    bounce: bool,
    body: Cell,
    init: Option<(Cell, Cell)>,
) -> Result<Cell, Error> {
    Ok(CellBuilder::build_from(OwnedRelaxedMessage {
        info: RelaxedMsgInfo::Int(RelaxedIntMsgInfo {
            ihr_disabled: true,
            bounce,
            bounced: false,
            src: None,
            dst: IntAddr::Std(dest.clone()),
            value: CurrencyCollection::new(value),
            ..Default::default()
        }),
        init: init.map(|(code, data)| state_init(code, data)),
        body: body.into(),
        layout: None,
    })?)
}

fn initial_data(public: &HashBytes, wallet_id: u32) -> Result<Cell, Error> {
    cell(|b| {
        b.store_u32(0)?; // seqno
        b.store_u32(wallet_id)?;
        b.store_u256(public)?;
        b.store_bit_zero() // plugins
    })
}

pub fn state_init(code: Cell, data: Cell) -> StateInit {
    StateInit {
        split_depth: None,
        special: None,
        code: Some(code),
        data: Some(data),
        libraries: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_the_one_ton_sdks_derive() {
        // @ton/ton: WalletContractV4.create({workchain: 0, publicKey:
        // keyPairFromSeed(Buffer.alloc(32, 7)).publicKey}).address
        let wallet = Wallet::from_seed(&[7; 32]).unwrap();
        assert_eq!(
            wallet.address.to_string(),
            "0:2a6ee6b7ff41bfecafe383386325c7a895f4fe4ce346b18eb9c14a0152d6629c"
        );
    }

    #[test]
    fn the_bundled_code_is_wallet_v4r2() {
        assert_eq!(
            Wallet::code().repr_hash().to_string(),
            "feb5ff6820e2ff0d9483e7e0d62c817d846789fb4ae580c878866d959dabd5c0"
        );
    }
}

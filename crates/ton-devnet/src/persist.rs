//! Saving an [`Emulator`]'s state to a file and loading it back: every
//! account (as its `ShardAccount` BOC) and every account's transactions
//! (their BOCs and the fields the API reports), with the clock, the logical
//! time and the block number. Written to a temporary file and renamed, so a
//! crash leaves the previous state whole.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tycho_types::boc::Boc;
use tycho_types::cell::{Cell, CellBuilder, HashBytes};
use tycho_types::models::{ShardAccount, StdAddr};

use crate::emulator::{TxRecord, TxReport};
use crate::Emulator;
use anyhow::Error;

#[derive(Serialize, Deserialize)]
struct Saved {
    now: u32,
    lt: u64,
    block_seqno: u32,
    #[serde(default)]
    blocks: crate::blocks::Blocks,
    accounts: Vec<SavedAccount>,
}

#[derive(Serialize, Deserialize)]
struct SavedAccount {
    address: String,
    /// Base64 BOC of the `ShardAccount`.
    state: String,
    transactions: Vec<SavedTx>,
}

#[derive(Serialize, Deserialize)]
struct SavedTx {
    lt: u64,
    hash: String,
    cell: String,
    fees: String,
    now: u32,
    in_msg: String,
    out_msgs: Vec<String>,
    exit_code: Option<i32>,
    gas_used: u64,
    success: bool,
    bounced: bool,
}

fn boc(cell: &Cell) -> String {
    Boc::encode_base64(cell)
}

fn cell(text: &str) -> Result<Cell, Error> {
    Ok(Boc::decode_base64(text)?)
}

impl Emulator {
    /// Write the whole state to `path` (atomically: temporary file, rename).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let mut accounts = Vec::with_capacity(self.accounts.len());
        let mut addresses: Vec<&StdAddr> = self.accounts.keys().collect();
        addresses.sort_by_key(|a| a.address);
        for address in addresses {
            let state = CellBuilder::build_from(&self.accounts[address])?;
            let transactions = self
                .transactions
                .get(address)
                .map(|list| {
                    list.iter()
                        .map(|t| SavedTx {
                            lt: t.lt,
                            hash: hex::encode(t.hash.as_slice()),
                            cell: boc(&t.cell),
                            fees: t.fees.to_string(),
                            now: t.now,
                            in_msg: boc(&t.in_msg),
                            out_msgs: t.out_msgs.iter().map(boc).collect(),
                            exit_code: t.report.exit_code,
                            gas_used: t.report.gas_used,
                            success: t.report.success,
                            bounced: t.report.bounced,
                        })
                        .collect()
                })
                .unwrap_or_default();
            accounts.push(SavedAccount {
                address: address.to_string(),
                state: boc(&state),
                transactions,
            });
        }
        let saved = Saved {
            now: self.now,
            lt: self.lt,
            block_seqno: self.block_seqno,
            blocks: self.blocks.clone(),
            accounts,
        };
        let text = serde_json::to_vec(&saved)?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// A chain as `save` left it at `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let fail = |e: &dyn std::fmt::Display| anyhow::anyhow!("{}: {e}", path.display());
        let text = std::fs::read(path).map_err(|e| fail(&e))?;
        let saved: Saved = serde_json::from_slice(&text).map_err(|e| fail(&e))?;
        let mut chain = Emulator::new(saved.now)?;
        chain.lt = saved.lt;
        chain.block_seqno = saved.block_seqno;
        chain.blocks = saved.blocks;
        for account in saved.accounts {
            let address: StdAddr = account
                .address
                .parse()
                .map_err(|e| fail(&format!("address {}: {e}", account.address)))?;
            let state: ShardAccount = cell(&account.state)?.parse()?;
            let mut transactions = Vec::with_capacity(account.transactions.len());
            for t in account.transactions {
                let hash: [u8; 32] = hex::decode(&t.hash)
                    .ok()
                    .and_then(|h| h.try_into().ok())
                    .ok_or_else(|| fail(&format!("transaction hash {}", t.hash)))?;
                transactions.push(TxRecord {
                    lt: t.lt,
                    hash: HashBytes(hash),
                    cell: cell(&t.cell)?,
                    fees: t.fees.parse().map_err(|e| fail(&e))?,
                    now: t.now,
                    in_msg: cell(&t.in_msg)?,
                    out_msgs: t
                        .out_msgs
                        .iter()
                        .map(|m| cell(m))
                        .collect::<Result<_, _>>()?,
                    report: TxReport {
                        account: address.clone(),
                        exit_code: t.exit_code,
                        gas_used: t.gas_used,
                        success: t.success,
                        bounced: t.bounced,
                    },
                });
            }
            chain.accounts.insert(address.clone(), state);
            if !transactions.is_empty() {
                chain.transactions.insert(address, transactions);
            }
        }
        Ok(chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_chain::Wallet;

    #[test]
    fn a_saved_chain_loads_back_with_its_accounts_and_history() {
        let mut chain = Emulator::new(1_700_000_000).unwrap();
        let wallet = Wallet::from_seed(&[7; 32]).unwrap();
        chain.fund(&wallet.address, 5_000_000_000).unwrap();
        let to = StdAddr::new(0, HashBytes([9; 32]));
        let message = cocoon_chain::wallet::internal_message(
            &to,
            1_000_000_000,
            false,
            Cell::default(),
            None,
        )
        .unwrap();
        let transfer = wallet.transfer(0, chain.now + 60, &[(1, message)]).unwrap();
        chain.send_external(transfer).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.json");
        chain.save(&path).unwrap();

        let back = Emulator::load(&path).unwrap();
        for address in [&wallet.address, &to] {
            assert_eq!(
                back.balance(address).unwrap(),
                chain.balance(address).unwrap()
            );
            assert_eq!(back.transactions(address), chain.transactions(address));
        }
        assert!(back.is_active(&wallet.address).unwrap());
        let seqno = |c: &Emulator| {
            cocoon_chain::stack_int(&c.get(&wallet.address, "seqno", vec![]).unwrap()).unwrap()
        };
        assert_eq!(seqno(&back), 1);
        assert_eq!(back.now, chain.now);

        std::fs::write(&path, b"{not json").unwrap();
        let err = Emulator::load(&path).err().unwrap().to_string();
        assert!(err.contains("chain.json"), "{err}");
    }

    #[test]
    fn queued_messages_run_in_the_next_block_and_refused_ones_never_queue() {
        let mut chain = Emulator::new(1_700_000_000).unwrap();
        chain.in_blocks = true;
        let wallet = Wallet::from_seed(&[8; 32]).unwrap();
        chain.fund(&wallet.address, 5_000_000_000).unwrap();
        let to = StdAddr::new(0, HashBytes([9; 32]));
        let transfer = |seqno| {
            let message = cocoon_chain::wallet::internal_message(
                &to,
                1_000_000_000,
                false,
                Cell::default(),
                None,
            )
            .unwrap();
            wallet
                .transfer(seqno, 1_700_000_060, &[(1, message)])
                .unwrap()
        };
        chain.submit(transfer(0)).unwrap();
        assert_eq!(chain.pending(), 1);
        assert_eq!(
            chain.balance(&to).unwrap(),
            0,
            "nothing runs before the block"
        );
        // A transfer signed for a seqno the wallet is not at is refused now.
        assert!(chain.submit(transfer(5)).is_err());
        let block = chain.produce_block();
        assert_eq!(block.seqno, 1);
        assert_eq!(block.dropped, 0);
        assert!(block.transactions >= 2);
        assert_eq!(chain.balance(&to).unwrap(), 1_000_000_000);
        // Two transfers with one seqno: the second is dropped at the block.
        chain.submit(transfer(1)).unwrap();
        chain.submit(transfer(1)).unwrap();
        let block = chain.produce_block();
        assert_eq!(block.dropped, 1);
        assert_eq!(chain.balance(&to).unwrap(), 2_000_000_000);
    }
}

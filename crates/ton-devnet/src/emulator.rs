//! An in-process TON-compatible chain on `tycho-executor`: accounts in memory,
//! external and internal messages executed as real ordinary transactions
//! (storage, credit, compute, action and bounce phases, real signature checks),
//! every outgoing internal message delivered in turn, the transactions of each
//! account kept, and get-methods on the latest TVM version. The blockchain
//! configuration is TON mainnet's (`res/mainnet-config.boc`, as `@ton/sandbox`
//! ships it), so gas, forwarding and storage fees are mainnet's.
//!
//! External messages either run at once ([`Emulator::send_external`], for
//! genesis and tests) or, as on TON, are checked for acceptance and queued
//! for the next block ([`Emulator::submit`], [`Emulator::produce_block`]);
//! the whole state saves to and loads from a file (`persist`).

use std::collections::{HashMap, VecDeque};

use tycho_executor::{Executor, ExecutorParams, ParsedConfig};
use tycho_types::cell::{Cell, CellBuilder, CellFamily, HashBytes, Lazy};
use tycho_types::models::{
    Account, AccountState, BlockchainConfig, ComputePhase, CurrencyCollection, IntAddr, IntMsgInfo,
    Message, MsgInfo, OptionalAccount, ShardAccount, StateInit, StdAddr, TxInfo,
};
use tycho_types::num::Tokens;
use tycho_vm::{
    BehaviourModifiers, GasParams, RcStackValue, SmcInfoBase, VmStateBuilder, VmVersion,
};

use anyhow::Error;

/// What one transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxReport {
    pub account: StdAddr,
    /// The compute phase's exit code (`None` when it was skipped).
    pub exit_code: Option<i32>,
    pub gas_used: u64,
    /// Compute phase succeeded and the transaction was not aborted.
    pub success: bool,
    pub bounced: bool,
}

/// One executed transaction, as the HTTP API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxRecord {
    pub lt: u64,
    pub hash: HashBytes,
    /// The transaction itself (a BOC cell).
    pub cell: Cell,
    /// Total fees in nano-TON.
    pub fees: u128,
    pub now: u32,
    /// The incoming message (a BOC cell).
    pub in_msg: Cell,
    pub out_msgs: Vec<Cell>,
    pub report: TxReport,
}

/// Accounts and a clock; messages run to completion on `send`.
pub struct Emulator {
    config: BlockchainConfig,
    pub(crate) accounts: HashMap<StdAddr, ShardAccount>,
    pub(crate) transactions: HashMap<StdAddr, Vec<TxRecord>>,
    /// Unix time of the next transactions.
    pub now: u32,
    pub(crate) lt: u64,
    /// External messages accepted for the next block.
    pending: VecDeque<Cell>,
    /// Blocks produced so far.
    pub(crate) block_seqno: u32,
    /// Whether `sendBoc` queues for blocks (a block producer runs) rather
    /// than executing at once.
    pub in_blocks: bool,
    /// The masterchain blocks' headers (numbers, times, root hashes).
    pub(crate) blocks: crate::blocks::Blocks,
}

/// What one block did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockReport {
    pub seqno: u32,
    pub transactions: usize,
    /// Queued messages no longer accepted when the block ran (e.g. a second
    /// transfer with the same seqno).
    pub dropped: usize,
}

impl Emulator {
    /// An empty chain at Unix time `now`.
    pub fn new(now: u32) -> Result<Self, Error> {
        let mut config = mainnet_config()?;
        config.params.set_global_id(100)?;
        config
            .params
            .set_size_limits(&ParsedConfig::DEFAULT_SIZE_LIMITS_CONFIG)?;
        Ok(Self {
            config,
            accounts: HashMap::new(),
            transactions: HashMap::new(),
            now,
            lt: 1_000_000,
            pending: VecDeque::new(),
            block_seqno: 0,
            in_blocks: false,
            blocks: crate::blocks::Blocks::default(),
        })
    }

    /// Blocks produced so far (the devnet's masterchain seqno).
    pub fn block_seqno(&self) -> u32 {
        self.block_seqno
    }

    /// External messages waiting for the next block.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Take an external message for the next block if its destination would
    /// accept it now (the executor's check, nothing committed): what TON's
    /// `sendBoc` answers. Executes at once when no blocks are produced.
    pub fn submit(&mut self, message: Cell) -> Result<(), Error> {
        if !self.in_blocks {
            return self.send_external(message).map(|_| ());
        }
        let dst = external_destination(&message)?;
        let state = self.shard_account(&dst)?;
        let config = ParsedConfig::parse(self.config.clone(), self.now)?;
        let params = self.params();
        Executor::new(&params, &config)
            .with_min_lt(self.lt)
            .begin_ordinary(&dst, true, message.clone(), &state)
            .map_err(|e| anyhow::anyhow!("message not accepted: {e:?}"))?;
        anyhow::ensure!(
            self.pending.len() < 10_000,
            "too many messages waiting for the next block"
        );
        self.pending.push_back(message);
        Ok(())
    }

    /// Run every queued external message (and all that follows from them)
    /// as the next block at the current `now`.
    pub fn produce_block(&mut self) -> BlockReport {
        self.block_seqno += 1;
        self.blocks.make(self.block_seqno, self.now);
        let mut report = BlockReport {
            seqno: self.block_seqno,
            ..Default::default()
        };
        while let Some(message) = self.pending.pop_front() {
            match self.send_external(message) {
                Ok(txs) => report.transactions += txs.len(),
                Err(_) => report.dropped += 1,
            }
        }
        report
    }

    /// The newest masterchain block. Without a block producer a block is
    /// made whenever the clock has moved since the last one (as if one were
    /// made every second).
    pub fn masterchain_head(&mut self) -> crate::BlockHeader {
        match self.blocks.last() {
            Some(last) if self.in_blocks || last.gen_utime >= self.now => last,
            _ => {
                self.block_seqno += 1;
                self.blocks.make(self.block_seqno, self.now)
            }
        }
    }

    /// Masterchain block `seqno`, if made (and recent).
    pub fn masterchain_block(&self, seqno: u32) -> Option<crate::BlockHeader> {
        self.blocks.get(seqno)
    }

    fn params(&self) -> ExecutorParams {
        ExecutorParams {
            block_unixtime: self.now,
            block_lt: self.lt,
            strict_extra_currency: true,
            // Real signature checks (never `chksig_always_succeed`).
            vm_modifiers: BehaviourModifiers::default(),
            ..Default::default()
        }
    }

    /// The account at `address`, if it exists.
    pub fn account(&self, address: &StdAddr) -> Result<Option<Account>, Error> {
        match self.accounts.get(address) {
            None => Ok(None),
            Some(state) => Ok(state.load_account()?),
        }
    }

    /// Balance in nano-TON (0 for an account that does not exist).
    pub fn balance(&self, address: &StdAddr) -> Result<u128, Error> {
        Ok(self
            .account(address)?
            .map(|a| a.balance.tokens.into_inner())
            .unwrap_or(0))
    }

    /// Whether the account has code and data.
    pub fn is_active(&self, address: &StdAddr) -> Result<bool, Error> {
        Ok(matches!(
            self.account(address)?.map(|a| a.state),
            Some(AccountState::Active(_))
        ))
    }

    /// Send `value` nano-TON with `body` from `from` (an outside wallet) to
    /// `to`, deploying `init` there if given, and run every message that
    /// follows. Returns the reports of all transactions, the first being `to`'s.
    pub fn send(
        &mut self,
        from: &StdAddr,
        to: &StdAddr,
        value: u128,
        body: Cell,
        init: Option<(Cell, Cell)>,
    ) -> Result<Vec<TxReport>, Error> {
        let init = init.map(|(code, data)| cocoon_chain::wallet::state_init(code, data));
        let message = self.internal(from, to, value, true, init, &body)?;
        self.run(to.clone(), message, false)
    }

    /// Credit `value` to `address` from nowhere (a devnet's genesis funding):
    /// a non-bounceable message from the zero address, so an account that
    /// does not exist yet is created, uninitialised, holding it.
    pub fn fund(&mut self, address: &StdAddr, value: u128) -> Result<Vec<TxReport>, Error> {
        let genesis = StdAddr::new(0, HashBytes::ZERO);
        let message = self.internal(&genesis, address, value, false, None, &Cell::empty_cell())?;
        self.run(address.clone(), message, false)
    }

    /// An internal message as if `from` had sent it now.
    fn internal(
        &self,
        from: &StdAddr,
        to: &StdAddr,
        value: u128,
        bounce: bool,
        init: Option<StateInit>,
        body: &Cell,
    ) -> Result<Cell, Error> {
        let info = IntMsgInfo {
            ihr_disabled: true,
            bounce,
            bounced: false,
            src: IntAddr::Std(from.clone()),
            dst: IntAddr::Std(to.clone()),
            value: CurrencyCollection::new(value),
            fwd_fee: Tokens::ZERO,
            created_lt: self.lt,
            created_at: self.now,
            ..Default::default()
        };
        Ok(CellBuilder::build_from(Message {
            info: MsgInfo::Int(info),
            init,
            body: body.as_slice()?,
            layout: None,
        })?)
    }

    /// Execute an external message (e.g. a signed wallet transfer, as a BOC
    /// from `sendBoc`) and everything that follows. An external message the
    /// contract does not accept makes no transaction and is an error.
    pub fn send_external(&mut self, message: Cell) -> Result<Vec<TxReport>, Error> {
        let dst = external_destination(&message)?;
        self.run(dst, message, true)
    }

    fn shard_account(&self, address: &StdAddr) -> Result<ShardAccount, Error> {
        Ok(match self.accounts.get(address) {
            Some(state) => state.clone(),
            None => ShardAccount {
                account: Lazy::new(&OptionalAccount::EMPTY)?,
                last_trans_hash: HashBytes::ZERO,
                last_trans_lt: 0,
            },
        })
    }

    fn run(&mut self, to: StdAddr, message: Cell, external: bool) -> Result<Vec<TxReport>, Error> {
        let mut queue = VecDeque::from([(to, message, external)]);
        let mut reports = Vec::new();
        while let Some((dst, message, external)) = queue.pop_front() {
            let (report, out) = self.execute(&dst, message, external)?;
            reports.push(report);
            queue.extend(out.into_iter().map(|(dst, msg)| (dst, msg, false)));
            if reports.len() > 1000 {
                anyhow::bail!("more than 1000 transactions from one message");
            }
        }
        Ok(reports)
    }

    /// The transactions of `address`, newest first.
    pub fn transactions(&self, address: &StdAddr) -> Vec<TxRecord> {
        self.latest_transactions(address, None, usize::MAX)
    }

    /// The newest `limit` transactions of `address` at or before logical
    /// time `from_lt` (all when `None`), newest first, without copying the
    /// rest of its history: pages of toncenter's `getTransactions`.
    pub fn latest_transactions(
        &self,
        address: &StdAddr,
        from_lt: Option<u64>,
        limit: usize,
    ) -> Vec<TxRecord> {
        self.transactions
            .get(address)
            .map(|list| {
                list.iter()
                    .rev()
                    .filter(|t| from_lt.is_none_or(|lt| t.lt <= lt))
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One ordinary transaction of `message` at `address`; its outgoing
    /// internal messages.
    fn execute(
        &mut self,
        address: &StdAddr,
        message: Cell,
        external: bool,
    ) -> Result<(TxReport, Vec<(StdAddr, Cell)>), Error> {
        let state = self.shard_account(address)?;
        let config = ParsedConfig::parse(self.config.clone(), self.now)?;
        let params = self.params();
        let output = Executor::new(&params, &config)
            .with_min_lt(self.lt)
            .begin_ordinary(address, external, message.clone(), &state)
            .map_err(|e| anyhow::anyhow!("message not accepted: {e:?}"))?
            .commit()?;
        self.accounts.insert(address.clone(), output.new_state);
        let tx = output.transaction.load()?;
        self.lt = self.lt.max(tx.lt) + 1;
        let mut report = TxReport {
            account: address.clone(),
            exit_code: None,
            gas_used: 0,
            success: false,
            bounced: false,
        };
        if let TxInfo::Ordinary(info) = tx.load_info()? {
            if let ComputePhase::Executed(compute) = &info.compute_phase {
                report.exit_code = Some(compute.exit_code);
                report.gas_used = compute.gas_used.into_inner();
                report.success = compute.success && !info.aborted;
            }
            report.bounced = info.bounce_phase.is_some();
        }
        let mut out = Vec::new();
        let mut out_cells = Vec::new();
        for msg in tx.out_msgs.values() {
            let msg = msg?;
            out_cells.push(msg.clone());
            let parsed: Message<'_> = msg.parse()?;
            if let MsgInfo::Int(IntMsgInfo {
                dst: IntAddr::Std(dst),
                ..
            }) = &parsed.info
            {
                out.push((dst.clone(), msg.clone()));
            }
        }
        self.transactions
            .entry(address.clone())
            .or_default()
            .push(TxRecord {
                lt: tx.lt,
                hash: *output.transaction.repr_hash(),
                cell: output.transaction.inner().clone(),
                fees: tx.total_fees.tokens.into_inner(),
                now: self.now,
                in_msg: message,
                out_msgs: out_cells,
                report: report.clone(),
            });
        Ok((report, out))
    }

    /// Run get-method `method` of the contract at `address` with `args`;
    /// returns the result stack, first value first. A non-zero exit code is
    /// an error.
    pub fn get(
        &self,
        address: &StdAddr,
        method: &str,
        args: Vec<RcStackValue>,
    ) -> Result<Vec<RcStackValue>, Error> {
        let (exit_code, _, stack) = self.get_with_exit(address, method, args)?;
        if exit_code != 0 && exit_code != 1 {
            anyhow::bail!("get-method {method} failed with exit code {exit_code}");
        }
        Ok(stack)
    }

    /// Run a get-method: (exit code, gas used, result stack).
    pub fn get_with_exit(
        &self,
        address: &StdAddr,
        method: &str,
        args: Vec<RcStackValue>,
    ) -> Result<(i32, u64, Vec<RcStackValue>), Error> {
        let account = self
            .account(address)?
            .ok_or_else(|| anyhow::anyhow!("no account at {address}"))?;
        let AccountState::Active(state) = &account.state else {
            anyhow::bail!("the account at {address} is not active");
        };
        let code = state
            .code
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no code"))?;
        let data = state.data.clone().unwrap_or_default();
        let mut stack = args;
        stack.push(RcStackValue::new_dyn_value(num_bigint::BigInt::from(
            method_id(method),
        )));
        let smc_info = SmcInfoBase::new()
            .with_now(self.now)
            .with_block_lt(account.last_trans_lt)
            .with_tx_lt(account.last_trans_lt)
            .with_account_balance(account.balance.clone())
            .with_account_addr(account.address.clone())
            .with_config(self.config.params.clone())
            .require_ton_v4()
            .with_code(code.clone())
            .require_ton_v6()
            .fill_unpacked_config()?
            .require_ton_v11();
        // The latest TVM: Tolk emits v12 instructions (e.g. BTOS) in getters.
        let mut vm = VmStateBuilder::new()
            .with_smc_info(smc_info)
            .with_code(code)
            .with_data(data)
            .with_init_selector(false)
            .with_stack(stack)
            .with_gas(GasParams::getter())
            .with_version(VmVersion::LATEST_TON)
            .build();
        let exit_code = !vm.run();
        Ok((exit_code, vm.gas.consumed(), vm.stack.items.clone()))
    }
}

/// Where an external inbound message goes.
fn external_destination(message: &Cell) -> Result<StdAddr, Error> {
    let parsed: Message<'_> = message.parse()?;
    let MsgInfo::ExtIn(info) = &parsed.info else {
        anyhow::bail!("only external inbound messages can be sent to the chain");
    };
    let IntAddr::Std(dst) = &info.dst else {
        anyhow::bail!("the destination is not a standard address");
    };
    Ok(dst.clone())
}

/// A get-method's id: CRC16/XMODEM of its name, with bit 16 set.
pub fn method_id(name: &str) -> u32 {
    let mut crc: u16 = 0;
    for byte in name.bytes() {
        crc ^= (byte as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    (crc as u32) | 0x10000
}

/// TON mainnet's configuration as `@ton/sandbox` 0.41.0 ships it
/// (`defaultConfig`, recorded at masterchain block 52,956,904): its gas,
/// forwarding and storage prices, so fees here are mainnet's.
fn mainnet_config() -> Result<BlockchainConfig, Error> {
    let params = tycho_types::boc::Boc::decode(include_bytes!("../res/mainnet-config.boc"))?;
    let mut params = tycho_types::models::BlockchainConfigParams::from_raw(params);
    let address = params
        .get::<tycho_types::models::ConfigParam0>()?
        .ok_or_else(|| {
            anyhow::anyhow!("the mainnet configuration has no config address (param 0)")
        })?;
    // The workchain descriptions (param 12) in the layout tycho reads (TON's
    // differs; they only say which workchains exist, nothing about fees).
    let tycho: BlockchainConfig =
        tycho_types::boc::BocRepr::decode(include_bytes!("../res/config.boc"))?;
    let workchains = tycho.params.as_dict().get(12)?.ok_or_else(|| {
        anyhow::anyhow!("tycho's bundled configuration has no workchains (param 12)")
    })?;
    params.set_raw(12, workchains)?;
    Ok(BlockchainConfig { address, params })
}

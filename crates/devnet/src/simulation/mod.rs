//! A seeded, deterministic simulation of the money path (issue 20, item 7):
//! many clients, proxies and workers in one process, the real contracts on
//! the embedded TVM, each proxy's real settlement and books, simulated time,
//! and injected faults: the proxies' chain access cut, proxies crashed and
//! restarted from their books, answers cut mid-stream (billed at the last
//! running total), clients that overspend, withdraw everything they can
//! between settlements, top up, or register another client's contract.
//! After every step that touches the chain the invariants are checked
//! against an independent [`Ledger`]: no client contract is ever charged
//! more than it received, no worker contract pays more than was earned,
//! nobody registers a contract that is not theirs. At the end everything is
//! settled and claimed and the books must balance to the nano-TON: every
//! delivered token charged, every worker paid exactly its share, the
//! proxies' stakes whole, nothing locked in a proxy contract beyond a
//! reserve. A failure names its seed and step, and the same seed replays
//! the same run (TigerBeetle's VOPR and FoundationDB's simulator are the
//! references).

mod ledger;
mod world;

use cocoon_chain::pricing::TokenCounts;
use cocoon_chain::Chain;
use cocoon_chain::{client, worker as worker_msg, TON};
use cocoon_protocol::{ErrorKind, SealHeader, Usage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use ledger::Ledger;
use world::World;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub seed: u64,
    /// Requests to attempt (served or refused).
    pub requests: u64,
    pub clients: usize,
    pub proxies: usize,
    pub workers: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            seed: 1,
            requests: 100_000,
            clients: 4,
            proxies: 2,
            workers: 3,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SimReport {
    pub seed: u64,
    pub steps: u64,
    pub requests: u64,
    pub served: u64,
    /// Refused for lack of credit (402).
    pub refused: u64,
    /// Sent to a proxy that had crashed and could not start yet.
    pub unavailable: u64,
    /// Answers cut mid-stream (billed at the last running total).
    pub cut: u64,
    pub rounds: u64,
    /// Rounds that failed (the chain out of reach).
    pub failed_rounds: u64,
    pub claims: u64,
    pub restarts: u64,
    pub outages: u64,
    pub withdrawals: u64,
    pub overdrafts_refused: u64,
    pub top_ups: u64,
    pub foreign_registrations_refused: u64,
    /// Charged to client contracts in all, nano-TON.
    pub charged_nano: u128,
    /// Paid to workers in all, nano-TON.
    pub workers_paid_nano: u128,
    /// The proxies' earnings paid to their wallets, nano-TON.
    pub paid_out_nano: u128,
}

/// A run that broke an invariant (or could not run): replay with its seed.
#[derive(Debug, thiserror::Error)]
#[error("simulation seed {seed} failed at step {step}: {what} (replay: cocoon simulate --seed {seed} --requests {requests})")]
pub struct SimFailure {
    pub seed: u64,
    pub step: u64,
    pub requests: u64,
    pub what: String,
}

/// Run the simulation `options` describes.
pub async fn simulate(options: &SimOptions) -> Result<SimReport, SimFailure> {
    let mut sim = Sim {
        rng: ChaCha8Rng::seed_from_u64(options.seed),
        report: SimReport {
            seed: options.seed,
            ..SimReport::default()
        },
        ledger: Ledger::default(),
        outage_left: 0,
    };
    let fail = |step: u64, e: anyhow::Error| SimFailure {
        seed: options.seed,
        step,
        requests: options.requests,
        what: format!("{e:#}"),
    };
    let mut world = World::genesis(options, &mut sim.rng)
        .await
        .map_err(|e| fail(0, e))?;
    while sim.report.requests < options.requests {
        sim.report.steps += 1;
        let step = sim.report.steps;
        sim.step(&mut world).await.map_err(|e| fail(step, e))?;
    }
    sim.finish(&mut world)
        .await
        .map_err(|e| fail(sim.report.steps, e))?;
    Ok(sim.report)
}

struct Sim {
    rng: ChaCha8Rng,
    report: SimReport,
    ledger: Ledger,
    /// Steps until the proxies reach the chain again.
    outage_left: u64,
}

impl Sim {
    async fn step(&mut self, world: &mut World) -> anyhow::Result<()> {
        if self.rng.gen_ratio(1, 50) {
            world.advance(1)?;
        }
        if self.outage_left > 0 {
            self.outage_left -= 1;
            if self.outage_left == 0 {
                world.reconnect().await?;
            }
        }
        let p = self.rng.gen_range(0..world.proxies.len());
        if world.proxies[p].crashed {
            // Its clients find it down: they go elsewhere or wait.
            self.report.requests += 1;
            self.report.unavailable += 1;
            return Ok(());
        }
        match self.rng.gen_range(0..10_000u32) {
            0..=9_899 => self.request(world, p).await,
            9_900..=9_929 => self.settle(world, p).await,
            9_930..=9_949 => self.claim(world, p).await,
            9_950..=9_964 => self.withdraw(world, p).await,
            9_965..=9_979 => self.top_up(world, p).await,
            9_980..=9_984 => {
                self.report.restarts += 1;
                world.restart(p).await.map(|_| ())
            }
            9_985..=9_989 => {
                self.report.outages += 1;
                self.outage_left = self.rng.gen_range(10..500);
                world
                    .reach
                    .down
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }
            _ => self.foreign_registration(world, p).await,
        }
    }

    /// A client asks for an answer through proxy `p` from some worker: the
    /// proxy holds the worst cost against its credit (or refuses, 402), the
    /// answer is delivered whole or cut, and what was delivered is billed.
    async fn request(&mut self, world: &mut World, p: usize) -> anyhow::Result<()> {
        self.report.requests += 1;
        let c = self.rng.gen_range(0..world.clients.len());
        let w = self.rng.gen_range(0..world.workers.len());
        let max_tokens: u32 = self.rng.gen_range(1..=100_000);
        // The sealed request's size, and a prompt up to the most a receipt
        // may claim for it (what the proxy believes).
        let request_bytes: u64 = self.rng.gen_range(100..=4_000);
        let bound = cocoon_protocol::receipt::prompt_token_bound(request_bytes);
        let prompt: u64 = if self.rng.gen_ratio(1, 10) {
            bound
        } else {
            self.rng.gen_range(1..=bound)
        };
        let header = SealHeader {
            request_id: self.rng.gen(),
            model: "sim".into(),
            max_tokens: Some(max_tokens),
            sent_at_ms: 0,
        };
        let coefficient = world.workers[w].coefficient;
        let settlement = &world.proxies[p].settlement;
        let client = &world.clients[c];
        let held = match settlement
            .reserve(&client.key, &header, request_bytes, coefficient)
            .await
        {
            Ok(held) => held,
            Err(e) => {
                anyhow::ensure!(
                    e.kind == ErrorKind::PaymentRequired,
                    "a request was refused with {:?}: {}",
                    e.kind,
                    e.message
                );
                self.report.refused += 1;
                return Ok(());
            }
        };
        let mut completion = u64::from(self.rng.gen_range(1..=max_tokens));
        if self.rng.gen_ratio(1, 20) {
            // Cut mid-stream: billed at the last running total the worker
            // signed (every 16 tokens).
            self.report.cut += 1;
            let delivered = self.rng.gen_range(0..completion);
            completion = delivered - delivered % 16;
        }
        let tokens = TokenCounts {
            prompt,
            cached_prompt: 0,
            completion,
            reasoning: 0,
        };
        let usage = Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            ..Usage::default()
        };
        let payer = settlement
            .payer(&client.key)
            .map_err(|e| anyhow::anyhow!("a held request has no payer: {}", e.message))?;
        anyhow::ensure!(
            payer == client.contracts[p],
            "proxy {p} bills client {c} to {payer}, not its contract {}",
            client.contracts[p]
        );
        let (worker_contract, _) = &world.workers[w].contracts[p];
        let charge = settlement
            .books()
            .record(&payer, worker_contract, &usage, coefficient);
        let expected = self
            .ledger
            .deliver(&world.prices, (c, p, w), tokens, coefficient);
        anyhow::ensure!(
            charge == expected,
            "the books priced a request at {charge:?}, the ledger at {expected:?}"
        );
        drop(held);
        self.report.served += 1;
        Ok(())
    }

    /// Proxy `p` settles: charges, commits its books, pays out its earnings.
    async fn settle(&mut self, world: &mut World, p: usize) -> anyhow::Result<()> {
        self.report.rounds += 1;
        match world.proxies[p].settlement.settle_once().await {
            Ok(round) => self.report.paid_out_nano += round.paid_out,
            Err(e) => {
                anyhow::ensure!(
                    world.reach.down.load(std::sync::atomic::Ordering::SeqCst),
                    "a settlement round failed with the chain in reach: {e}"
                );
                self.report.failed_rounds += 1;
            }
        }
        self.check_channels(world, p).await
    }

    /// A worker claims what proxy `p`'s voucher allows.
    async fn claim(&mut self, world: &mut World, p: usize) -> anyhow::Result<()> {
        let w = self.rng.gen_range(0..world.workers.len());
        self.claim_for(world, w, p).await
    }

    /// Worker `w` claims what proxy `p`'s voucher allows beyond what its
    /// contract paid; never more than it earned is paid.
    async fn claim_for(&mut self, world: &mut World, w: usize, p: usize) -> anyhow::Result<()> {
        let (contract, data) = world.workers[w].contracts[p].clone();
        let voucher = world.proxies[p]
            .settlement
            .voucher(&contract)
            .map_err(|e| anyhow::anyhow!("a voucher: {}", e.message))?;
        let paid = world.paid(&contract).await?;
        if voucher.amount_nano <= paid {
            return Ok(());
        }
        self.report.claims += 1;
        let signature: [u8; 64] = voucher
            .signature
            .clone()
            .try_into()
            .map_err(|_| anyhow::anyhow!("a voucher's signature is not 64 bytes"))?;
        let deployed = world.reach.chain.account(&contract).await?.is_active();
        let init = (!deployed).then(|| (cocoon_chain::Contract::Worker.code(), data));
        let owner = world.workers[w].owner.clone();
        world.act(
            &owner,
            &contract,
            TON / 10,
            worker_msg::claim(voucher.amount_nano, &signature)?,
            init,
        )?;
        let now_paid = world.paid(&contract).await?;
        anyhow::ensure!(
            now_paid <= self.ledger.earned(w, p),
            "worker {w} was paid {now_paid} by proxy {p}'s contract, more than the {} it earned",
            self.ledger.earned(w, p)
        );
        Ok(())
    }

    /// A client first tries to take back more than is above its stake (the
    /// contract refuses), then takes everything above it.
    async fn withdraw(&mut self, world: &mut World, p: usize) -> anyhow::Result<()> {
        let c = self.rng.gen_range(0..world.clients.len());
        let contract = world.clients[c].contracts[p].clone();
        let owner = world.clients[c].owner.clone();
        let channel = world.channel(&contract).await?;
        let free = channel.state.balance - channel.state.stake;
        let took = world.act(
            &owner,
            &contract,
            TON / 20,
            client::withdraw(free + 1)?,
            None,
        )?;
        anyhow::ensure!(
            !took,
            "client {c} withdrew {} nano-TON, more than the {free} above its stake",
            free + 1
        );
        self.report.overdrafts_refused += 1;
        if free > 0 {
            let took = world.act(&owner, &contract, TON / 20, client::withdraw(free)?, None)?;
            anyhow::ensure!(
                took,
                "client {c} could not withdraw the {free} nano-TON above its stake"
            );
            self.report.withdrawals += 1;
        }
        self.check_channel(world, c, p).await
    }

    /// A client deposits more and stakes part of it.
    async fn top_up(&mut self, world: &mut World, p: usize) -> anyhow::Result<()> {
        let c = self.rng.gen_range(0..world.clients.len());
        let contract = world.clients[c].contracts[p].clone();
        let owner = world.clients[c].owner.clone();
        let amount = TON * self.rng.gen_range(1..=5u128);
        let stake = amount / self.rng.gen_range(1..=4u128);
        anyhow::ensure!(
            world.act(
                &owner,
                &contract,
                amount + client::GAS_RESERVE,
                client::top_up()?,
                None
            )?,
            "a top-up was refused"
        );
        anyhow::ensure!(
            world.act(
                &owner,
                &contract,
                client::STAKE_GAS,
                client::increase_stake(stake)?,
                None
            )?,
            "staking a top-up was refused"
        );
        self.report.top_ups += 1;
        // The node registers again (a contract whose stake had run out was
        // refused before).
        if !world.proxies[p].crashed && !world.reach.down.load(std::sync::atomic::Ordering::SeqCst)
        {
            world.register(c, p).await?;
        }
        Ok(())
    }

    /// A client registers another client's contract with proxy `p`: refused.
    async fn foreign_registration(&mut self, world: &mut World, p: usize) -> anyhow::Result<()> {
        if world.clients.len() < 2 {
            return Ok(());
        }
        let c = self.rng.gen_range(0..world.clients.len());
        let victim = (c + self.rng.gen_range(1..world.clients.len())) % world.clients.len();
        let attempt = world.proxies[p]
            .settlement
            .open_account(
                world.clients[c].key,
                Some(world.clients[victim].contracts[p].to_string()),
            )
            .await;
        match attempt {
            Ok(_) => {
                anyhow::bail!("client {c} registered client {victim}'s contract with proxy {p}")
            }
            Err(e) if e.kind == ErrorKind::PaymentRequired => {
                self.report.foreign_registrations_refused += 1;
                Ok(())
            }
            Err(e) => {
                // Only the chain being out of reach may stop the check itself.
                anyhow::ensure!(
                    world.reach.down.load(std::sync::atomic::Ordering::SeqCst),
                    "a foreign registration failed with {:?}: {}",
                    e.kind,
                    e.message
                );
                Ok(())
            }
        }
    }

    /// No contract of proxy `p`'s clients is charged more than it received.
    async fn check_channels(&self, world: &World, p: usize) -> anyhow::Result<()> {
        for c in 0..world.clients.len() {
            self.check_channel(world, c, p).await?;
        }
        Ok(())
    }

    async fn check_channel(&self, world: &World, c: usize, p: usize) -> anyhow::Result<()> {
        let channel = world.channel(&world.clients[c].contracts[p]).await?;
        anyhow::ensure!(
            channel.state.charged <= self.ledger.received(c, p),
            "client {c}'s contract with proxy {p} was charged {}, more than the {} it received",
            channel.state.charged,
            self.ledger.received(c, p)
        );
        Ok(())
    }

    /// The chain in reach again, every proxy settles until nothing is left,
    /// pays out its earnings, every worker claims; then the books balance.
    async fn finish(&mut self, world: &mut World) -> anyhow::Result<()> {
        world.reconnect().await?;
        for p in 0..world.proxies.len() {
            world.proxies[p].settlement.min_charge = 0;
            world.proxies[p].settlement.pay_out_above = Some(1);
            for _ in 0..2 {
                let round = world.proxies[p]
                    .settlement
                    .settle_once()
                    .await
                    .map_err(|e| anyhow::anyhow!("the final settlement of proxy {p}: {e}"))?;
                self.report.paid_out_nano += round.paid_out;
            }
            for w in 0..world.workers.len() {
                self.claim_for(world, w, p).await?;
            }
        }
        let mut charged = 0;
        for p in 0..world.proxies.len() {
            let mut proxy_received = 0;
            for c in 0..world.clients.len() {
                let channel = world.channel(&world.clients[c].contracts[p]).await?;
                anyhow::ensure!(
                    channel.state.charged == self.ledger.received(c, p),
                    "at the end client {c}'s contract with proxy {p} is charged {}, but it received {}: every delivered token must be charged",
                    channel.state.charged,
                    self.ledger.received(c, p)
                );
                proxy_received += channel.state.charged;
            }
            let mut vouched = 0;
            for w in 0..world.workers.len() {
                let paid = world.paid(&world.workers[w].contracts[p].0).await?;
                anyhow::ensure!(
                    paid == self.ledger.earned(w, p),
                    "at the end worker {w} was paid {paid} by proxy {p}'s contract, but earned {}",
                    self.ledger.earned(w, p)
                );
                vouched += paid;
            }
            let (state, balance) = world.proxy_state(p).await?;
            anyhow::ensure!(
                state.received == proxy_received,
                "proxy {p}'s contract counts {} received, its clients were charged {proxy_received}",
                state.received
            );
            anyhow::ensure!(
                state.workers_paid == vouched,
                "proxy {p}'s contract counts {} paid to workers, they hold {vouched}",
                state.workers_paid
            );
            // Its workers are backed by at least the minimum stake (claims
            // made before their clients paid are taken from the stake; the
            // charges that follow restore the backing before any payout).
            let backing = state.stake.max(world.prices.min_proxy_stake);
            anyhow::ensure!(
                balance >= world.prices.min_proxy_stake,
                "proxy {p}'s contract holds {balance}, less than the minimum stake"
            );
            // Nothing locked: beyond the backing only a reserve and what the
            // last round's messages left for gas.
            anyhow::ensure!(
                balance <= backing + TON / 5,
                "proxy {p}'s contract holds {balance} with a backing of {backing}: its earnings were not paid out"
            );
            charged += proxy_received;
            self.report.workers_paid_nano += vouched;
        }
        self.report.charged_nano = charged;
        Ok(())
    }
}

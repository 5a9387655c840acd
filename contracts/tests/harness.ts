// Test harness on @ton/sandbox: deploy the four contracts, send messages, read
// exit codes and gas, and keep a gas table per operation.

import { after } from "node:test";
import { Address, Cell, fromNano, toNano, Transaction } from "@ton/core";
import { Blockchain, SandboxContract, SendMessageResult, TreasuryContract } from "@ton/sandbox";
import { KeyPair, keyPairFromSeed } from "@ton/crypto";
import * as c from "./cocoon.ts";

export const prices: c.Prices = {
  pricePerToken: 20n, // nano-TON per token at multiplier 1x
  workerShareBps: 9000,
  promptBps: 10000,
  cachedPromptBps: 1000,
  completionBps: 40000,
  reasoningBps: 40000,
  minClientStake: toNano("1"),
  minProxyStake: toNano("100"),
  clientCloseDelay: 3600,
  proxyCloseDelay: 86400,
};

export const gasTable = new Map<string, bigint>();
/// Total fees (gas, storage, forwarding) of each labelled transaction, nano-TON.
export const feeTable = new Map<string, bigint>();
/// Most gas any one operation may use (docs/economics.md).
export const MAX_GAS = 10_000n;

// Each test file runs in its own process: print its gas table when it ends.
after(() => {
  if (gasTable.size === 0) return;
  console.log("\ngas per operation (compute phase, gas units) and the transaction's total fees (TON):");
  for (const [label, gas] of [...gasTable.entries()].sort()) {
    const fee = feeTable.get(label);
    console.log(`  ${label.padEnd(32)} ${String(gas).padStart(6)}  ${fee === undefined ? "" : fromNano(fee)}`);
  }
});

export type Network = {
  chain: Blockchain;
  operator: SandboxContract<TreasuryContract>;
  proxyOwner: SandboxContract<TreasuryContract>;
  clientOwner: SandboxContract<TreasuryContract>;
  workerOwner: SandboxContract<TreasuryContract>;
  relay: SandboxContract<TreasuryContract>;
  proxyKey: KeyPair;
  root: Address;
  proxy: Address;
  client: Address;
  worker: Address;
};

export function keyPair(seed: string): KeyPair {
  return keyPairFromSeed(Buffer.alloc(32, seed));
}

/// The compute phase of the transaction `result` caused at `at` (the first).
export function txAt(result: SendMessageResult, at: Address): Transaction {
  const tx = result.transactions.find(
    (t) => t.inMessage?.info.type === "internal" && (t.inMessage.info.dest as Address).equals(at),
  );
  if (!tx) throw new Error(`no transaction at ${at}`);
  return tx;
}

export function exitCode(tx: Transaction): number {
  const d = tx.description;
  if (d.type !== "generic" || d.computePhase.type !== "vm") return -1;
  return d.computePhase.exitCode;
}

export function gasUsed(tx: Transaction): bigint {
  const d = tx.description;
  if (d.type !== "generic" || d.computePhase.type !== "vm") return 0n;
  return d.computePhase.gasUsed;
}

export function succeeded(tx: Transaction): boolean {
  const d = tx.description;
  return d.type === "generic" && d.computePhase.type === "vm" && d.computePhase.success && !d.aborted;
}

/// Send `body` with `value` from `from` to `to` (optionally deploying it);
/// returns the exit code at `to`, recording gas under `label` on success.
export async function send(
  from: SandboxContract<TreasuryContract>,
  to: Address,
  value: bigint,
  body: Cell,
  label?: string,
  init?: { code: Cell; data: Cell },
): Promise<{ exit: number; result: SendMessageResult; tx: Transaction }> {
  const result = await from.send({ to, value, body, init, bounce: true });
  const tx = txAt(result, to);
  const exit = exitCode(tx);
  if (label && succeeded(tx)) {
    gasTable.set(label, gasUsed(tx));
    feeTable.set(label, tx.totalFees.coins);
    // Documented limit (docs/economics.md): gas is deterministic, so this is exact.
    if (gasUsed(tx) > MAX_GAS) throw new Error(`${label} used ${gasUsed(tx)} gas, above the ${MAX_GAS} limit`);
  }
  return { exit, result, tx };
}

export async function balance(chain: Blockchain, at: Address): Promise<bigint> {
  return (await chain.getContract(at)).balance;
}

export async function get(chain: Blockchain, at: Address, method: string, args: any[] = []) {
  const r = await chain.runGetMethod(at, method, args);
  return r.stackReader;
}

/// Deploy root, proxy, client and worker contracts for one proxy, one client
/// and one worker; the client has 10 TON deposited and the proxy 100 TON of stake.
export async function network(): Promise<Network> {
  const chain = await Blockchain.create();
  chain.now = 1_800_000_000;
  const operator = await chain.treasury("operator");
  const proxyOwner = await chain.treasury("proxy-owner");
  const clientOwner = await chain.treasury("client-owner");
  const workerOwner = await chain.treasury("worker-owner");
  const relay = await chain.treasury("relay");
  const proxyKey = keyPair("p");

  const rootInit = c.stateInit("root", c.rootData(operator.address, prices));
  const root = c.addressOf(rootInit);
  let r = await send(operator, root, toNano("1"), Cell.EMPTY, undefined, rootInit);
  if (!succeeded(r.tx)) throw new Error(`root deploy failed: ${exitCode(r.tx)}`);

  const proxyInit = c.stateInit("proxy", c.proxyData(proxyOwner.address, proxyKey.publicKey, root, prices.proxyCloseDelay));
  const proxy = c.addressOf(proxyInit);
  r = await send(proxyOwner, proxy, toNano("100"), c.proxy.addStake(), "proxy: deploy + add stake", proxyInit);
  if (!succeeded(r.tx)) throw new Error(`proxy deploy failed: ${exitCode(r.tx)}`);

  const clientInit = c.stateInit(
    "client",
    c.clientData(proxy, clientOwner.address, proxyKey.publicKey, prices.clientCloseDelay),
  );
  const client = c.addressOf(clientInit);
  r = await send(clientOwner, client, toNano("10.02"), c.client.topUp(), "client: deploy + top up", clientInit);
  if (!succeeded(r.tx)) throw new Error(`client deploy failed: ${exitCode(r.tx)}`);

  const worker = c.addressOf(c.stateInit("worker", c.workerData(proxy, workerOwner.address, proxyKey.publicKey)));
  return { chain, operator, proxyOwner, clientOwner, workerOwner, relay, proxyKey, root, proxy, client, worker };
}

export async function clientState(net: Network) {
  const s = await get(net.chain, net.client, "get_client_data");
  s.readAddress();
  s.readAddress();
  s.readBigNumber();
  s.readNumber();
  return {
    balance: s.readBigNumber(),
    stake: s.readBigNumber(),
    charged: s.readBigNumber(),
    closeRequestedAt: s.readNumber(),
    clientKey: s.readBigNumber(),
    nonce: s.readBigNumber(),
  };
}

export async function proxyState(net: Network) {
  const s = await get(net.chain, net.proxy, "get_proxy_data");
  s.readAddress();
  s.readBigNumber();
  s.readAddress();
  s.readNumber();
  return {
    stake: s.readBigNumber(),
    received: s.readBigNumber(),
    workersPaid: s.readBigNumber(),
    booksSeqno: s.readBigNumber(),
    booksHash: s.readBigNumber(),
    paySeqno: s.readBigNumber(),
    closeRequestedAt: s.readNumber(),
  };
}

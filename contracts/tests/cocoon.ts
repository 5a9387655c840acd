// Typed builders for Cocoon's contracts in @ton/core terms: initial data,
// message bodies, and the payloads the proxy's key signs. The layouts are the
// Tolk structs in ../src (fields in order; `Cell<T>` is a ref, `coins` is
// VarUInteger 16, maps are dictionaries).

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Address, beginCell, Cell, contractAddress, Dictionary, StateInit } from "@ton/core";
import { KeyPair, sign } from "@ton/crypto";

export type Name = "root" | "proxy" | "client" | "worker";

export function code(name: Name): Cell {
  const build = JSON.parse(readFileSync(join(import.meta.dirname, "..", "build", `${name}.json`), "utf-8"));
  return Cell.fromBase64(build.codeBoc64);
}

export const OP = {
  clientTopUp: 0x7c1e0001,
  clientIncreaseStake: 0x7c1e0002,
  clientWithdraw: 0x7c1e0003,
  clientCharge: 0x7c1e0004,
  clientCooperativeClose: 0x7c1e0005,
  clientRequestClose: 0x7c1e0006,
  clientFinishClose: 0x7c1e0007,
  workerClaim: 0x7c1e0011,
  proxyAddStake: 0x7c1e0021,
  proxyCommitBooks: 0x7c1e0022,
  proxyPay: 0x7c1e0023,
  proxyRequestClose: 0x7c1e0024,
  proxyFinishClose: 0x7c1e0025,
  clientPayment: 0x7c1e00a1,
  workerPayout: 0x7c1e00b1,
  rootSetImage: 0x7c1e0031,
  rootSetModel: 0x7c1e0032,
  rootSetProxy: 0x7c1e0033,
  rootSetPrices: 0x7c1e0034,
  rootChangeOwner: 0x7c1e0035,
  rootAcceptOwner: 0x7c1e0036,
  rootSetRules: 0x7c1e0037,
} as const;

export const SIGNED = {
  charge: 0x43484152,
  close: 0x434c4f53,
  owed: 0x4f574544,
  books: 0x424f4f4b,
  pay: 0x50415920,
} as const;

export const ERR = {
  notOwner: 100,
  badSignature: 101,
  stale: 102,
  insufficient: 103,
  belowStake: 104,
  closing: 105,
  notClosing: 106,
  notWorker: 107,
  tooLittleValue: 108,
  badValue: 109,
  unknownOp: 0xffff,
  cellUnderflow: 9,
} as const;

export function stateInit(name: Name, data: Cell): StateInit {
  return { code: code(name), data };
}

export function addressOf(init: StateInit): Address {
  return contractAddress(0, init);
}

// --- signed payloads -------------------------------------------------------

function signCell(cell: Cell, key: KeyPair): Buffer {
  return sign(cell.hash(), key.secretKey);
}

export function signAmount(op: number, at: Address, amount: bigint, key: KeyPair): Buffer {
  return signCell(beginCell().storeUint(op, 32).storeAddress(at).storeCoins(amount).endCell(), key);
}

export function signBooks(at: Address, seqno: bigint, books: bigint, key: KeyPair): Buffer {
  return signCell(
    beginCell().storeUint(SIGNED.books, 32).storeAddress(at).storeUint(seqno, 64).storeUint(books, 256).endCell(),
    key,
  );
}

export function signPay(at: Address, dest: Address, amount: bigint, seqno: bigint, key: KeyPair): Buffer {
  return signCell(
    beginCell()
      .storeUint(SIGNED.pay, 32)
      .storeAddress(at)
      .storeAddress(dest)
      .storeCoins(amount)
      .storeUint(seqno, 64)
      .endCell(),
    key,
  );
}

// --- client contract ---------------------------------------------------------

/// `clientKey`: the fingerprint (SHA-256 of the SubjectPublicKeyInfo) of
/// the client node's TLS key.
export function clientData(proxy: Address, owner: Address, proxyKey: Buffer, closeDelay: number, nonce = 1n, clientKey = 0xc1n): Cell {
  const terms = beginCell()
    .storeAddress(proxy)
    .storeAddress(owner)
    .storeBuffer(proxyKey, 32)
    .storeUint(closeDelay, 32)
    .storeUint(nonce, 64)
    .endCell();
  return beginCell().storeRef(terms).storeUint(clientKey, 256).storeCoins(0).storeCoins(0).storeCoins(0).storeUint(0, 32).endCell();
}

export const client = {
  topUp: () => beginCell().storeUint(OP.clientTopUp, 32).endCell(),
  increaseStake: (amount: bigint) => beginCell().storeUint(OP.clientIncreaseStake, 32).storeCoins(amount).endCell(),
  withdraw: (amount: bigint) => beginCell().storeUint(OP.clientWithdraw, 32).storeCoins(amount).endCell(),
  charge: (cumulative: bigint, signature: Buffer) =>
    beginCell().storeUint(OP.clientCharge, 32).storeCoins(cumulative).storeBuffer(signature, 64).endCell(),
  cooperativeClose: (charged: bigint, signature: Buffer) =>
    beginCell().storeUint(OP.clientCooperativeClose, 32).storeCoins(charged).storeBuffer(signature, 64).endCell(),
  requestClose: () => beginCell().storeUint(OP.clientRequestClose, 32).endCell(),
  finishClose: () => beginCell().storeUint(OP.clientFinishClose, 32).endCell(),
};

// --- worker contract ---------------------------------------------------------

export function workerData(proxy: Address, owner: Address, proxyKey: Buffer): Cell {
  return beginCell().storeAddress(proxy).storeAddress(owner).storeBuffer(proxyKey, 32).storeCoins(0).endCell();
}

export const worker = {
  claim: (owed: bigint, signature: Buffer) =>
    beginCell().storeUint(OP.workerClaim, 32).storeCoins(owed).storeBuffer(signature, 64).endCell(),
};

// --- proxy contract ----------------------------------------------------------

export function proxyData(owner: Address, proxyKey: Buffer, root: Address, closeDelay: number, nonce = 1n): Cell {
  const terms = beginCell()
    .storeAddress(owner)
    .storeBuffer(proxyKey, 32)
    .storeAddress(root)
    .storeUint(closeDelay, 32)
    .storeUint(nonce, 64)
    .storeRef(code("worker"))
    .endCell();
  return beginCell()
    .storeRef(terms)
    .storeCoins(0) // stake
    .storeCoins(0) // received
    .storeCoins(0) // workersPaid
    .storeUint(0, 64) // booksSeqno
    .storeUint(0, 256) // booksHash
    .storeUint(0, 64) // paySeqno
    .storeUint(0, 32) // closeRequestedAt
    .endCell();
}

export const proxy = {
  addStake: () => beginCell().storeUint(OP.proxyAddStake, 32).endCell(),
  commitBooks: (seqno: bigint, books: bigint, signature: Buffer) =>
    beginCell()
      .storeUint(OP.proxyCommitBooks, 32)
      .storeUint(seqno, 64)
      .storeUint(books, 256)
      .storeBuffer(signature, 64)
      .endCell(),
  pay: (dest: Address, amount: bigint, seqno: bigint, signature: Buffer) =>
    beginCell()
      .storeUint(OP.proxyPay, 32)
      .storeAddress(dest)
      .storeCoins(amount)
      .storeUint(seqno, 64)
      .storeBuffer(signature, 64)
      .endCell(),
  requestClose: () => beginCell().storeUint(OP.proxyRequestClose, 32).endCell(),
  finishClose: (signature: Buffer) => beginCell().storeUint(OP.proxyFinishClose, 32).storeBuffer(signature, 64).endCell(),
  workerPayout: (amount: bigint, owner: Address) =>
    beginCell().storeUint(OP.workerPayout, 32).storeCoins(amount).storeAddress(owner).endCell(),
};

// --- root contract -----------------------------------------------------------

export type Prices = {
  pricePerToken: bigint;
  workerShareBps: number;
  promptBps: number;
  cachedPromptBps: number;
  completionBps: number;
  reasoningBps: number;
  minClientStake: bigint;
  minProxyStake: bigint;
  clientCloseDelay: number;
  proxyCloseDelay: number;
};

export function pricesCell(p: Prices): Cell {
  return beginCell()
    .storeCoins(p.pricePerToken)
    .storeUint(p.workerShareBps, 16)
    .storeUint(p.promptBps, 16)
    .storeUint(p.cachedPromptBps, 16)
    .storeUint(p.completionBps, 16)
    .storeUint(p.reasoningBps, 16)
    .storeCoins(p.minClientStake)
    .storeCoins(p.minProxyStake)
    .storeUint(p.clientCloseDelay, 32)
    .storeUint(p.proxyCloseDelay, 32)
    .endCell();
}

export function rootData(owner: Address, prices: Prices): Cell {
  const images = beginCell().storeBit(0).storeBit(0).storeBit(0).endCell(); // workers, proxies, rules
  return beginCell()
    .storeAddress(owner)
    .storeUint(0, 32) // version
    .storeRef(images)
    .storeBit(0) // models
    .storeBit(0) // proxies
    .storeRef(pricesCell(prices))
    .storeUint(0, 2) // pending owner: none
    .endCell();
}

export function snake(text: string): Cell {
  return beginCell().storeStringTail(text).endCell();
}

export const root = {
  setImage: (role: "worker" | "proxy", hash: bigint, allowed: boolean) =>
    beginCell()
      .storeUint(OP.rootSetImage, 32)
      .storeUint(role === "worker" ? 0 : 1, 1)
      .storeUint(hash, 256)
      .storeBit(allowed)
      .endCell(),
  setModel: (weightsHash: bigint, name: string | null) =>
    beginCell()
      .storeUint(OP.rootSetModel, 32)
      .storeUint(weightsHash, 256)
      .storeMaybeRef(name === null ? null : snake(name))
      .endCell(),
  setProxy: (proxyContract: Address, info: { proxyKey: Buffer; version: number; endpoint: string } | null) =>
    beginCell()
      .storeUint(OP.rootSetProxy, 32)
      .storeAddress(proxyContract)
      .storeMaybeRef(
        info === null
          ? null
          : beginCell().storeBuffer(info.proxyKey, 32).storeUint(info.version, 32).storeRef(snake(info.endpoint)).endCell(),
      )
      .endCell(),
  setPrices: (p: Prices) => beginCell().storeUint(OP.rootSetPrices, 32).storeRef(pricesCell(p)).endCell(),
  changeOwner: (owner: Address) => beginCell().storeUint(OP.rootChangeOwner, 32).storeAddress(owner).endCell(),
  acceptOwner: () => beginCell().storeUint(OP.rootAcceptOwner, 32).endCell(),
  setRules: (rules: { requireConfiguration: boolean; upstreamLoopbackOnly: boolean; workerEngines: string[] } | null) =>
    beginCell()
      .storeUint(OP.rootSetRules, 32)
      .storeMaybeRef(
        rules === null
          ? null
          : beginCell()
              .storeBit(rules.requireConfiguration)
              .storeBit(rules.upstreamLoopbackOnly)
              .storeMaybeRef(rules.workerEngines.length === 0 ? null : snake(rules.workerEngines.join(",")))
              .endCell(),
      )
      .endCell(),
};

export function uint256Keys(dict: Cell | null): bigint[] {
  if (dict === null) return [];
  const d = Dictionary.loadDirect(Dictionary.Keys.BigUint(256), Dictionary.Values.Bool(), dict);
  return d.keys();
}

// One fixed life cycle, recorded: every step's exit code, gas and the
// contracts' get-method results. The Rust TVM (crates/chain, tycho) runs the
// same steps with the same addresses and keys and must produce the same
// record, so the committed fixture is checked here against the sandbox, the
// authority. `UPDATE_FIXTURE=1 npm test` rewrites it.

import { it } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Cell, toNano } from "@ton/core";
import * as c from "./cocoon.ts";
import { clientState, gasUsed, get, network, prices, proxyState, send } from "./harness.ts";

const FIXTURE = join(import.meta.dirname, "fixtures", "lifecycle.json");

it("the recorded life cycle is what the sandbox computes", async () => {
  const net = await network();
  const steps: any[] = [];
  const record = async (name: string, body: Cell, r: { exit: number; tx: any }) => {
    const client = await clientState(net);
    const proxy = await proxyState(net);
    let workerPaid = "0";
    if ((await net.chain.getContract(net.worker)).accountState?.type === "active") {
      const w = await get(net.chain, net.worker, "get_worker_data");
      w.readAddress();
      w.readAddress();
      w.readBigNumber();
      workerPaid = w.readBigNumber().toString();
    }
    steps.push({
      name,
      bodyHash: body.hash().toString("hex"),
      exit: r.exit,
      gas: gasUsed(r.tx).toString(),
      // The transaction's total fees (storage, gas, forwarding), nano-TON,
      // under the sandbox's mainnet configuration.
      fee: r.tx.totalFees.coins.toString(),
      client: { balance: `${client.balance}`, stake: `${client.stake}`, charged: `${client.charged}` },
      proxy: {
        stake: `${proxy.stake}`,
        received: `${proxy.received}`,
        workersPaid: `${proxy.workersPaid}`,
        booksSeqno: `${proxy.booksSeqno}`,
        paySeqno: `${proxy.paySeqno}`,
      },
      workerPaid,
      rootVersion: (await get(net.chain, net.root, "get_version")).readNumber(),
    });
  };
  const charge = (amount: bigint) => c.client.charge(amount, c.signAmount(c.SIGNED.charge, net.client, amount, net.proxyKey));
  const workerInit = c.stateInit("worker", c.workerData(net.proxy, net.workerOwner.address, net.proxyKey.publicKey));
  const owed = toNano("0.5");
  const pay = toNano("0.5");
  const script: [string, any, any, bigint, any, any?][] = [
    ["increase stake", net.clientOwner, net.client, toNano("0.05"), c.client.increaseStake(toNano("2"))],
    ["charge 1.5", net.relay, net.client, toNano("0.05"), charge(toNano("1.5"))],
    ["replayed charge", net.relay, net.client, toNano("0.05"), charge(toNano("1.5"))],
    ["charge 2", net.relay, net.client, toNano("0.05"), charge(toNano("2"))],
    ["worker claim", net.workerOwner, net.worker, toNano("0.1"), c.worker.claim(owed, c.signAmount(c.SIGNED.owed, net.worker, owed, net.proxyKey)), workerInit],
    // Enough to run the worker contract, not the payout: refused.
    ["starved claim", net.relay, net.worker, toNano("0.004"), c.worker.claim(toNano("1"), c.signAmount(c.SIGNED.owed, net.worker, toNano("1"), net.proxyKey))],
    ["commit books", net.relay, net.proxy, toNano("0.05"), c.proxy.commitBooks(1n, 0xabcn, c.signBooks(net.proxy, 1n, 0xabcn, net.proxyKey))],
    ["withdraw", net.clientOwner, net.client, toNano("0.05"), c.client.withdraw(toNano("3"))],
    ["withdraw into stake", net.clientOwner, net.client, toNano("0.05"), c.client.withdraw(toNano("4"))],
    ["signed pay", net.relay, net.proxy, toNano("0.05"), c.proxy.pay(net.proxyOwner.address, pay, 1n, c.signPay(net.proxy, net.proxyOwner.address, pay, 1n, net.proxyKey))],
    ["root: set worker image", net.operator, net.root, toNano("0.05"), c.root.setImage("worker", 0x1234n, true)],
    ["root: set model", net.operator, net.root, toNano("0.05"), c.root.setModel(0x5678n, "smollm2-135m-instruct")],
    ["root: set proxy", net.operator, net.root, toNano("0.05"), c.root.setProxy(net.proxy, { proxyKey: net.proxyKey.publicKey, version: 3, endpoint: "127.0.0.1:9100" })],
    ["root: set prices", net.operator, net.root, toNano("0.05"), c.root.setPrices({ ...prices, pricePerToken: 25n })],
    ["root: stranger", net.relay, net.root, toNano("0.05"), c.root.changeOwner(net.relay.address)],
  ];
  for (const [name, from, to, value, body, init] of script) {
    await record(name, body, await send(from, to, value, body, undefined, init));
  }

  const fixture = {
    note: "written by contracts/tests/lifecycle.test.ts from @ton/sandbox; read by crates/chain/tests/lifecycle.rs",
    now: net.chain.now,
    proxyKeySeed: "p",
    addresses: {
      operator: net.operator.address.toRawString(),
      proxyOwner: net.proxyOwner.address.toRawString(),
      clientOwner: net.clientOwner.address.toRawString(),
      workerOwner: net.workerOwner.address.toRawString(),
      relay: net.relay.address.toRawString(),
      root: net.root.toRawString(),
      proxy: net.proxy.toRawString(),
      client: net.client.toRawString(),
      worker: net.worker.toRawString(),
    },
    codeHashes: Object.fromEntries((["root", "proxy", "client", "worker"] as const).map((n) => [n, c.code(n).hash().toString("hex")])),
    steps,
  };
  const text = JSON.stringify(fixture, null, 2) + "\n";
  if (process.env.UPDATE_FIXTURE === "1" || !existsSync(FIXTURE)) {
    writeFileSync(FIXTURE, text);
  }
  assert.equal(readFileSync(FIXTURE, "utf-8"), text, "the committed fixture is stale: UPDATE_FIXTURE=1 npm test");
});

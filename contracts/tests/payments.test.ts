// The payment life cycle on TON's own emulator: deploy, top up, charge, pay a
// worker, commit books, withdraw, close with and without the proxy, and every
// refusal with its exit code. Gas per operation is printed at the end.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { beginCell, Cell, toNano } from "@ton/core";
import * as c from "./cocoon.ts";
import { balance, clientState, gasTable, get, keyPair, MAX_GAS, network, prices, proxyState, send, succeeded } from "./harness.ts";

const charge = (net: Awaited<ReturnType<typeof network>>, cumulative: bigint, key = net.proxyKey) =>
  c.client.charge(cumulative, c.signAmount(c.SIGNED.charge, net.client, cumulative, key));

describe("client contract", () => {
  it("takes deposits, is charged by the proxy's signature, and pays the proxy contract", async () => {
    const net = await network();
    assert.equal((await clientState(net)).balance, toNano("10"));

    let r = await send(net.clientOwner, net.client, toNano("1"), c.client.increaseStake(toNano("2")), "client: increase stake");
    assert.equal(r.exit, 0);
    assert.equal((await clientState(net)).stake, toNano("2"));

    const proxyBefore = await balance(net.chain, net.proxy);
    r = await send(net.relay, net.client, toNano("0.05"), charge(net, toNano("1.5")), "client: charge");
    assert.equal(r.exit, 0);
    let st = await clientState(net);
    assert.equal(st.charged, toNano("1.5"));
    assert.equal(st.balance, toNano("8.5"));
    assert.equal((await proxyState(net)).received, toNano("1.5"));
    // The charge, plus what was left of the relayer's 0.05 TON for gas.
    const gained = (await balance(net.chain, net.proxy)) - proxyBefore;
    assert.ok(gained > toNano("1.5") && gained < toNano("1.55"), `proxy gained ${gained}`);

    // Cumulative: a later signature for more charges only the difference.
    r = await send(net.relay, net.client, toNano("0.05"), charge(net, toNano("2")));
    assert.equal(r.exit, 0);
    st = await clientState(net);
    assert.equal(st.charged, toNano("2"));
    assert.equal(st.balance, toNano("8"));

    r = await send(net.clientOwner, net.client, toNano("0.05"), c.client.withdraw(toNano("6")), "client: withdraw");
    assert.equal(r.exit, 0);
    assert.equal((await clientState(net)).balance, toNano("2"));
  });

  it("records a tiny charge: the relayer's value pays the proxy contract's gas", async () => {
    const net = await network();
    const r = await send(net.relay, net.client, toNano("0.05"), charge(net, 2180n));
    assert.equal(r.exit, 0);
    const proxyTx = r.result.transactions.find((t) => t.inMessage?.info.dest?.toString() === net.proxy.toString());
    assert.ok(proxyTx && succeeded(proxyTx), "the proxy contract ran");
    assert.equal((await proxyState(net)).received, 2180n);
    // A forged ClientPayment claiming more than it carries counts only what it carries.
    const forged = beginCell().storeUint(c.OP.clientPayment, 32).storeCoins(toNano("1000")).storeAddress(net.relay.address).storeCoins(0).endCell();
    assert.equal((await send(net.relay, net.proxy, toNano("0.05"), forged)).exit, 0);
    const received = (await proxyState(net)).received;
    assert.ok(received <= 2180n + toNano("0.05"), `received ${received}`);
  });

  it("refuses replays, lower amounts, forged signatures, overdrafts and strangers", async () => {
    const net = await network();
    const ok = charge(net, toNano("1"));
    assert.equal((await send(net.relay, net.client, toNano("0.05"), ok)).exit, 0);
    assert.equal((await send(net.relay, net.client, toNano("0.05"), ok)).exit, c.ERR.stale, "replay");
    assert.equal((await send(net.relay, net.client, toNano("0.05"), charge(net, toNano("0.5")))).exit, c.ERR.stale, "lower");
    assert.equal(
      (await send(net.relay, net.client, toNano("0.05"), charge(net, toNano("3"), keyPair("x")))).exit,
      c.ERR.badSignature,
      "another key",
    );
    // A signature for another contract is worthless here.
    const elsewhere = c.client.charge(toNano("3"), c.signAmount(c.SIGNED.charge, net.proxy, toNano("3"), net.proxyKey));
    assert.equal((await send(net.relay, net.client, toNano("0.05"), elsewhere)).exit, c.ERR.badSignature);
    // A close signature is not a charge signature.
    const wrongPurpose = c.client.charge(toNano("3"), c.signAmount(c.SIGNED.close, net.client, toNano("3"), net.proxyKey));
    assert.equal((await send(net.relay, net.client, toNano("0.05"), wrongPurpose)).exit, c.ERR.badSignature);
    assert.equal((await send(net.relay, net.client, toNano("0.05"), charge(net, toNano("50")))).exit, c.ERR.insufficient);

    assert.equal((await send(net.relay, net.client, toNano("0.05"), c.client.withdraw(1n))).exit, c.ERR.notOwner);
    assert.equal((await send(net.relay, net.client, toNano("0.05"), c.client.increaseStake(1n))).exit, c.ERR.notOwner);
    assert.equal((await send(net.relay, net.client, toNano("0.05"), c.client.requestClose())).exit, c.ERR.notOwner);
    await send(net.clientOwner, net.client, toNano("0.05"), c.client.increaseStake(toNano("4")));
    assert.equal(
      (await send(net.clientOwner, net.client, toNano("0.05"), c.client.withdraw(toNano("6")))).exit,
      c.ERR.belowStake,
      "withdraw into the stake",
    );
    assert.equal(
      (await send(net.clientOwner, net.client, toNano("0.05"), c.client.increaseStake(toNano("20")))).exit,
      c.ERR.insufficient,
    );
    assert.equal((await send(net.clientOwner, net.client, toNano("0.01"), c.client.topUp())).exit, c.ERR.tooLittleValue);
    // Malformed bodies: unknown opcode, truncated fields.
    const unknown = beginCell().storeUint(0xdeadbeef, 32).endCell();
    assert.equal((await send(net.relay, net.client, toNano("0.05"), unknown)).exit, c.ERR.unknownOp);
    const truncated = beginCell().storeUint(c.OP.clientCharge, 32).storeUint(1, 4).endCell();
    assert.equal((await send(net.relay, net.client, toNano("0.05"), truncated)).exit, c.ERR.cellUnderflow);
    // Nothing moved by any of it.
    const st = await clientState(net);
    assert.equal(st.charged, toNano("1"));
    assert.equal(st.balance, toNano("9"));
  });

  it("closes at once with the proxy's signature", async () => {
    const net = await network();
    await send(net.relay, net.client, toNano("0.05"), charge(net, toNano("1")));
    const before = await balance(net.chain, net.clientOwner.address);
    const sig = c.signAmount(c.SIGNED.close, net.client, toNano("1.25"), net.proxyKey);
    const r = await send(net.relay, net.client, toNano("0.05"), c.client.cooperativeClose(toNano("1.25"), sig), "client: cooperative close");
    assert.equal(r.exit, 0);
    assert.equal((await proxyState(net)).received, toNano("1.25"));
    const refunded = (await balance(net.chain, net.clientOwner.address)) - before;
    // The client's 8.75 TON, plus what is left of the reserve and the relay's attached value.
    assert.ok(refunded > toNano("8.75") && refunded < toNano("8.9"), `refunded ${refunded}`);
    assert.equal((await net.chain.getContract(net.client)).accountState?.type ?? "uninit", "uninit");
  });

  it("names the client node's key: the address follows from the code and the terms its getter reports", async () => {
    const net = await network();
    const st = await clientState(net);
    assert.equal(st.clientKey, 0xc1n);
    assert.equal(st.nonce, 1n);
    // What a proxy does before it serves on a contract: rebuild the initial
    // data from the reported terms and check the address (a contract with
    // other code or other initial state, e.g. a forged balance, is elsewhere).
    const derived = c.addressOf(c.stateInit("client", c.clientData(net.proxy, net.clientOwner.address, net.proxyKey.publicKey, prices.clientCloseDelay, st.nonce, st.clientKey)));
    assert.ok(derived.equals(net.client));
    const otherKey = c.addressOf(c.stateInit("client", c.clientData(net.proxy, net.clientOwner.address, net.proxyKey.publicKey, prices.clientCloseDelay, st.nonce, 0xc2n)));
    assert.ok(!otherKey.equals(net.client));
  });

  it("a contract deployed again gets a new address: old signatures are worthless there", async () => {
    const net = await network();
    // The first channel: charged, then closed cooperatively (the contract is destroyed).
    const oldCharge = charge(net, toNano("1"));
    assert.equal((await send(net.relay, net.client, toNano("0.05"), oldCharge)).exit, 0);
    const closeSig = c.signAmount(c.SIGNED.close, net.client, toNano("1"), net.proxyKey);
    assert.equal((await send(net.relay, net.client, toNano("0.05"), c.client.cooperativeClose(toNano("1"), closeSig))).exit, 0);
    // The next channel with the same proxy: a fresh nonce, a new address.
    const init = c.stateInit("client", c.clientData(net.proxy, net.clientOwner.address, net.proxyKey.publicKey, prices.clientCloseDelay, 2n));
    const second = c.addressOf(init);
    assert.ok(!second.equals(net.client));
    assert.equal((await send(net.clientOwner, second, toNano("5.02"), c.client.topUp(), undefined, init)).exit, 0);
    // Replaying the old channel's public charge against it: refused.
    assert.equal((await send(net.relay, second, toNano("0.05"), oldCharge)).exit, c.ERR.badSignature);
  });

  it("closes without the proxy: free balance at once, the stake after the delay, chargeable meanwhile", async () => {
    const net = await network();
    await send(net.clientOwner, net.client, toNano("0.05"), c.client.increaseStake(toNano("3")));
    let before = await balance(net.chain, net.clientOwner.address);
    let r = await send(net.clientOwner, net.client, toNano("0.05"), c.client.requestClose(), "client: request close");
    assert.equal(r.exit, 0);
    const got = (await balance(net.chain, net.clientOwner.address)) - before;
    assert.ok(got > toNano("6.9") && got < toNano("7"), `got ${got}`);
    assert.equal((await clientState(net)).balance, toNano("3"));
    assert.equal((await send(net.clientOwner, net.client, toNano("0.05"), c.client.topUp())).exit, c.ERR.closing);

    // The proxy charges what the client still owes during the delay.
    assert.equal((await send(net.relay, net.client, toNano("0.05"), charge(net, toNano("1")))).exit, 0);
    assert.equal((await send(net.relay, net.client, toNano("0.05"), c.client.finishClose())).exit, c.ERR.notClosing);
    net.chain.now! += prices.clientCloseDelay;
    before = await balance(net.chain, net.clientOwner.address);
    r = await send(net.relay, net.client, toNano("0.05"), c.client.finishClose(), "client: finish close");
    assert.equal(r.exit, 0);
    const rest = (await balance(net.chain, net.clientOwner.address)) - before;
    // The 2 TON of stake left after the charge, plus the reserve and the relay's attached value.
    assert.ok(rest > toNano("2") && rest < toNano("2.25"), `rest ${rest}`);
  });
});

describe("worker and proxy contracts", () => {
  it("pays a worker's claim from the proxy contract to the worker's owner, once", async () => {
    const net = await network();
    await send(net.relay, net.client, toNano("0.05"), charge(net, toNano("5")));
    const workerInit = c.stateInit("worker", c.workerData(net.proxy, net.workerOwner.address, net.proxyKey.publicKey));
    const claim = (owed: bigint) => c.worker.claim(owed, c.signAmount(c.SIGNED.owed, net.worker, owed, net.proxyKey));
    const before = await balance(net.chain, net.workerOwner.address);
    let r = await send(net.workerOwner, net.worker, toNano("0.1"), claim(toNano("3")), "worker: deploy + claim", workerInit);
    assert.equal(r.exit, 0);
    const proxyTx = r.result.transactions.find((t) => t.inMessage?.info.dest?.toString() === net.proxy.toString());
    assert.ok(proxyTx && succeeded(proxyTx), "the proxy contract paid");
    const payoutGas = (proxyTx!.description as any).computePhase.gasUsed as bigint;
    gasTable.set("proxy: worker payout", payoutGas);
    assert.ok(payoutGas <= MAX_GAS);
    const paid = (await balance(net.chain, net.workerOwner.address)) - before;
    assert.ok(paid > toNano("2.95") && paid < toNano("3.1"), `paid ${paid}`);
    assert.equal((await proxyState(net)).workersPaid, toNano("3"));

    assert.equal((await send(net.workerOwner, net.worker, toNano("0.1"), claim(toNano("3")))).exit, c.ERR.stale, "replayed claim");
    r = await send(net.workerOwner, net.worker, toNano("0.1"), claim(toNano("4")), "worker: claim");
    assert.equal(r.exit, 0);
    assert.equal((await proxyState(net)).workersPaid, toNano("4"));
    const forged = c.worker.claim(toNano("9"), c.signAmount(c.SIGNED.owed, net.worker, toNano("9"), keyPair("x")));
    assert.equal((await send(net.workerOwner, net.worker, toNano("0.1"), forged)).exit, c.ERR.badSignature);
  });

  it("a stranger cannot burn a worker's claim with too little gas: paid on the contract is what reached the owner", async () => {
    const net = await network();
    await send(net.relay, net.client, toNano("0.05"), charge(net, toNano("5")));
    const workerInit = c.stateInit("worker", c.workerData(net.proxy, net.workerOwner.address, net.proxyKey.publicKey));
    const claim = (owed: bigint) => c.worker.claim(owed, c.signAmount(c.SIGNED.owed, net.worker, owed, net.proxyKey));
    // The owner's own first claim deploys the contract.
    assert.equal((await send(net.workerOwner, net.worker, toNano("0.1"), claim(toNano("1")), undefined, workerInit)).exit, 0);
    const paid = async () => {
      const s = await get(net.chain, net.worker, "get_worker_data");
      s.readAddress();
      s.readAddress();
      s.readBigNumber();
      return s.readBigNumber();
    };
    // Anyone holding the next voucher (vouchers are public once sent) relays
    // it with ever larger values, looking for one that runs the worker
    // contract but starves the payout (0.0019..0.004 TON did before claims
    // needed a minimum value: paid was set and nothing reached the owner).
    let delivered = toNano("1");
    for (const value of [...Array.from({ length: 40 }, (_, i) => (0.0005 + i * 0.0002).toFixed(4)), "0.02", "0.05"]) {
      const before = await balance(net.chain, net.workerOwner.address);
      const r = await send(net.relay, net.worker, toNano(value), claim(toNano("3")));
      delivered += (await balance(net.chain, net.workerOwner.address)) - before > toNano("1") ? toNano("2") : 0n;
      assert.equal(await paid(), delivered, `after a claim relayed with ${value} TON (exit ${r.exit})`);
      if (toNano(value) < toNano("0.05")) assert.equal(r.exit, c.ERR.tooLittleValue, `a claim relayed with ${value} TON`);
      if (succeeded(r.tx)) assert.equal(delivered, toNano("3"), `a claim relayed with ${value} TON ran`);
    }
    // The owner can still claim what it is owed.
    assert.equal((await send(net.workerOwner, net.worker, toNano("0.1"), claim(toNano("3")))).exit, delivered === toNano("3") ? c.ERR.stale : 0);
    assert.equal(await paid(), toNano("3"));
  });

  it("refuses payouts not from its worker contracts, and undoes a claim it cannot pay", async () => {
    const net = await network();
    // Anyone sending WorkerPayout directly: refused.
    const direct = await send(net.relay, net.proxy, toNano("0.1"), c.proxy.workerPayout(toNano("1"), net.relay.address));
    assert.equal(direct.exit, c.ERR.notWorker);

    // A claim above everything the proxy contract holds bounces back and is undone.
    const workerInit = c.stateInit("worker", c.workerData(net.proxy, net.workerOwner.address, net.proxyKey.publicKey));
    const owed = toNano("500");
    const claim = c.worker.claim(owed, c.signAmount(c.SIGNED.owed, net.worker, owed, net.proxyKey));
    const r = await send(net.workerOwner, net.worker, toNano("0.1"), claim, undefined, workerInit);
    assert.equal(r.exit, 0);
    const s = await (await net.chain.getContract(net.worker)).get("get_worker_data");
    s.stackReader.readAddress();
    s.stackReader.readAddress();
    s.stackReader.readBigNumber();
    assert.equal(s.stackReader.readBigNumber(), 0n, "paid rolled back after the bounce");
  });

  it("commits books with increasing sequence numbers only", async () => {
    const net = await network();
    const commit = (seqno: bigint, books: bigint) => c.proxy.commitBooks(seqno, books, c.signBooks(net.proxy, seqno, books, net.proxyKey));
    assert.equal((await send(net.relay, net.proxy, toNano("0.05"), commit(1n, 0xabcn), "proxy: commit books")).exit, 0);
    assert.equal((await send(net.relay, net.proxy, toNano("0.05"), commit(1n, 0xdefn))).exit, c.ERR.stale, "rolled back");
    assert.equal((await send(net.relay, net.proxy, toNano("0.05"), commit(7n, 0xdefn))).exit, 0);
    const st = await proxyState(net);
    assert.equal(st.booksSeqno, 7n);
    assert.equal(st.booksHash, 0xdefn);
    const forged = c.proxy.commitBooks(8n, 1n, c.signBooks(net.proxy, 8n, 1n, keyPair("x")));
    assert.equal((await send(net.relay, net.proxy, toNano("0.05"), forged)).exit, c.ERR.badSignature);
  });

  it("pays signed payments from earnings, never from the stake", async () => {
    const net = await network();
    await send(net.relay, net.client, toNano("0.05"), charge(net, toNano("5")));
    const pay = (amount: bigint, seqno: bigint) =>
      c.proxy.pay(net.proxyOwner.address, amount, seqno, c.signPay(net.proxy, net.proxyOwner.address, amount, seqno, net.proxyKey));
    const before = await balance(net.chain, net.proxyOwner.address);
    assert.equal((await send(net.relay, net.proxy, toNano("0.05"), pay(toNano("4"), 1n), "proxy: signed pay")).exit, 0);
    assert.ok((await balance(net.chain, net.proxyOwner.address)) - before > toNano("3.99"));
    assert.equal((await send(net.relay, net.proxy, toNano("0.05"), pay(toNano("1"), 1n))).exit, c.ERR.stale, "replay");
    assert.equal((await send(net.relay, net.proxy, toNano("0.05"), pay(toNano("2"), 2n))).exit, c.ERR.belowStake, "into the stake");
  });

  it("closes after the delay with the proxy's signature only", async () => {
    const net = await network();
    const closeSig = c.signAmount(c.SIGNED.close, net.proxy, 0n, net.proxyKey);
    assert.equal((await send(net.relay, net.proxy, toNano("0.05"), c.proxy.requestClose())).exit, c.ERR.notOwner);
    assert.equal((await send(net.proxyOwner, net.proxy, toNano("0.05"), c.proxy.requestClose(), "proxy: request close")).exit, 0);
    assert.equal((await send(net.relay, net.proxy, toNano("0.05"), c.proxy.finishClose(closeSig))).exit, c.ERR.notClosing);
    net.chain.now! += prices.proxyCloseDelay;
    const bad = c.proxy.finishClose(c.signAmount(c.SIGNED.close, net.proxy, 0n, keyPair("x")));
    assert.equal((await send(net.relay, net.proxy, toNano("0.05"), bad)).exit, c.ERR.badSignature);
    const before = await balance(net.chain, net.proxyOwner.address);
    assert.equal((await send(net.relay, net.proxy, toNano("0.05"), c.proxy.finishClose(closeSig), "proxy: finish close")).exit, 0);
    assert.ok((await balance(net.chain, net.proxyOwner.address)) - before > toNano("99"));
  });
});

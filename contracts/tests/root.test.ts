// The root contract on TON's own emulator: owner-only updates of images,
// models, proxies, prices and configuration rules, a version that increases on every change, and
// get-methods that return each part.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Address, beginCell, Cell, Dictionary, toNano } from "@ton/core";
import * as c from "./cocoon.ts";
import { get, keyPair, network, prices, send } from "./harness.ts";

const IMAGE = 0x8c2f36a0321868cee585bc10722d53b1667f1cfbf4b41120ec1e2160deecca42n;
const WEIGHTS = 0xab11ab11ab11ab11ab11ab11ab11ab11ab11ab11ab11ab11ab11ab11ab11ab11n;

describe("root contract", () => {
  it("lets the owner change every part, bumping the version each time", async () => {
    const net = await network();
    const version = async () => (await get(net.chain, net.root, "get_version")).readNumber();
    assert.equal(await version(), 0);

    assert.equal((await send(net.operator, net.root, toNano("0.05"), c.root.setImage("worker", IMAGE, true), "root: set image")).exit, 0);
    assert.equal((await send(net.operator, net.root, toNano("0.05"), c.root.setImage("proxy", IMAGE + 1n, true))).exit, 0);
    assert.equal((await get(net.chain, net.root, "is_worker_image_allowed", [{ type: "int", value: IMAGE }])).readBoolean(), true);
    assert.equal((await get(net.chain, net.root, "is_proxy_image_allowed", [{ type: "int", value: IMAGE }])).readBoolean(), false);
    const images = await get(net.chain, net.root, "get_images");
    assert.deepEqual(c.uint256Keys(images.readCellOpt()), [IMAGE]);
    assert.deepEqual(c.uint256Keys(images.readCellOpt()), [IMAGE + 1n]);

    assert.equal((await send(net.operator, net.root, toNano("0.05"), c.root.setModel(WEIGHTS, "smollm2-135m-instruct"), "root: set model")).exit, 0);
    const model = (await get(net.chain, net.root, "get_model", [{ type: "int", value: WEIGHTS }])).readCellOpt();
    assert.equal(model!.beginParse().loadStringTail(), "smollm2-135m-instruct");
    const unknown = (await get(net.chain, net.root, "get_model", [{ type: "int", value: 1n }])).readCellOpt();
    assert.equal(unknown, null);

    const endpoint = "proxy.example:9100";
    const setProxy = c.root.setProxy(net.proxy, { proxyKey: net.proxyKey.publicKey, version: 3, endpoint });
    assert.equal((await send(net.operator, net.root, toNano("0.05"), setProxy, "root: set proxy")).exit, 0);
    const proxies = (await get(net.chain, net.root, "get_proxies")).readCellOpt();
    const dict = Dictionary.loadDirect(Dictionary.Keys.Address(), Dictionary.Values.Cell(), proxies);
    const info = dict.get(net.proxy)!.beginParse();
    assert.deepEqual(info.loadBuffer(32), net.proxyKey.publicKey);
    assert.equal(info.loadUint(32), 3);
    assert.equal(info.loadRef().beginParse().loadStringTail(), endpoint);

    const newPrices = { ...prices, pricePerToken: 25n, workerShareBps: 8500 };
    assert.equal((await send(net.operator, net.root, toNano("0.05"), c.root.setPrices(newPrices), "root: set prices")).exit, 0);
    const p = await get(net.chain, net.root, "get_prices");
    assert.equal(p.readBigNumber(), 25n);
    assert.equal(p.readNumber(), 8500);

    // Removals.
    assert.equal((await send(net.operator, net.root, toNano("0.05"), c.root.setImage("worker", IMAGE, false))).exit, 0);
    assert.equal((await get(net.chain, net.root, "is_worker_image_allowed", [{ type: "int", value: IMAGE }])).readBoolean(), false);
    assert.equal((await send(net.operator, net.root, toNano("0.05"), c.root.setModel(WEIGHTS, null))).exit, 0);
    assert.equal((await send(net.operator, net.root, toNano("0.05"), c.root.setProxy(net.proxy, null))).exit, 0);
    assert.equal((await get(net.chain, net.root, "get_proxies")).readCellOpt(), null);
    assert.equal(await version(), 8);

    // Configuration rules: none at first, then set, then cleared.
    const rules = async () => {
      const r = await get(net.chain, net.root, "get_rules");
      const [config, loopback, engines] = [r.readBoolean(), r.readBoolean(), r.readCellOpt()];
      return { config, loopback, engines: engines === null ? null : engines.beginParse().loadStringTail() };
    };
    assert.deepEqual(await rules(), { config: false, loopback: false, engines: null });
    const strict = c.root.setRules({ requireConfiguration: true, upstreamLoopbackOnly: true, workerEngines: ["embedded", "openai-http"] });
    assert.equal((await send(net.operator, net.root, toNano("0.05"), strict, "root: set rules")).exit, 0);
    assert.deepEqual(await rules(), { config: true, loopback: true, engines: "embedded,openai-http" });
    // The images beside them are kept.
    assert.equal((await send(net.operator, net.root, toNano("0.05"), c.root.setImage("worker", IMAGE, true))).exit, 0);
    assert.equal((await get(net.chain, net.root, "is_worker_image_allowed", [{ type: "int", value: IMAGE }])).readBoolean(), true);
    assert.deepEqual(await rules(), { config: true, loopback: true, engines: "embedded,openai-http" });
    assert.equal((await send(net.operator, net.root, toNano("0.05"), c.root.setRules(null))).exit, 0);
    assert.deepEqual(await rules(), { config: false, loopback: false, engines: null });
    assert.equal((await send(net.operator, net.root, toNano("0.05"), c.root.setImage("worker", IMAGE, false))).exit, 0);
    assert.equal(await version(), 12);

    // A plain transfer tops up storage fees without a version change.
    assert.equal((await send(net.relay, net.root, toNano("1"), Cell.EMPTY)).exit, 0);
    assert.equal(await version(), 12);

    // Ownership moves in two steps: proposed by the owner (nothing moves
    // yet), accepted by the proposed owner alone; the old owner is then refused.
    const owner = async () => (await get(net.chain, net.root, "get_owner")).readAddress();
    const pending = async () => (await get(net.chain, net.root, "get_pending_owner")).readAddressOpt();
    assert.equal(await pending(), null);
    assert.equal((await send(net.operator, net.root, toNano("0.05"), c.root.changeOwner(net.relay.address), "root: propose owner")).exit, 0);
    assert.ok((await owner()).equals(net.operator.address));
    assert.ok((await pending())!.equals(net.relay.address));
    // Nobody else can accept: not the old owner, not a stranger.
    assert.equal((await send(net.operator, net.root, toNano("0.05"), c.root.acceptOwner())).exit, c.ERR.notOwner);
    assert.equal((await send(net.proxyOwner, net.root, toNano("0.05"), c.root.acceptOwner())).exit, c.ERR.notOwner);
    assert.ok((await owner()).equals(net.operator.address));
    assert.equal((await send(net.relay, net.root, toNano("0.05"), c.root.acceptOwner(), "root: accept owner")).exit, 0);
    assert.ok((await owner()).equals(net.relay.address));
    assert.equal(await pending(), null);
    assert.equal((await send(net.operator, net.root, toNano("0.05"), c.root.setImage("worker", IMAGE, true))).exit, c.ERR.notOwner);
    // A proposal can be withdrawn (proposing the owner itself): then nobody can accept.
    assert.equal((await send(net.relay, net.root, toNano("0.05"), c.root.changeOwner(net.operator.address))).exit, 0);
    assert.equal((await send(net.relay, net.root, toNano("0.05"), c.root.changeOwner(net.relay.address))).exit, 0);
    assert.equal(await pending(), null);
    assert.equal((await send(net.operator, net.root, toNano("0.05"), c.root.acceptOwner())).exit, c.ERR.notOwner);
    // Accepting with no proposal is refused.
    assert.equal((await send(net.relay, net.root, toNano("0.05"), c.root.acceptOwner())).exit, c.ERR.notOwner);
  });

  it("refuses strangers, out-of-range prices and malformed bodies", async () => {
    const net = await network();
    for (const body of [
      c.root.setImage("worker", IMAGE, true),
      c.root.setModel(WEIGHTS, "m"),
      c.root.setProxy(net.proxy, null),
      c.root.setPrices(prices),
      c.root.changeOwner(net.relay.address),
      c.root.acceptOwner(),
      c.root.setRules({ requireConfiguration: false, upstreamLoopbackOnly: false, workerEngines: ["instant"] }),
    ]) {
      assert.equal((await send(net.relay, net.root, toNano("0.05"), body)).exit, c.ERR.notOwner);
    }
    const overpaid = c.root.setPrices({ ...prices, workerShareBps: 10001 });
    assert.equal((await send(net.operator, net.root, toNano("0.05"), overpaid)).exit, c.ERR.badValue);
    const unknown = beginCell().storeUint(0x12345678, 32).endCell();
    assert.equal((await send(net.operator, net.root, toNano("0.05"), unknown)).exit, c.ERR.unknownOp);
    const truncated = beginCell().storeUint(c.OP.rootSetImage, 32).storeUint(0, 1).storeUint(5, 10).endCell();
    assert.equal((await send(net.operator, net.root, toNano("0.05"), truncated)).exit, c.ERR.cellUnderflow);
    // Rules that do not parse are refused (get_rules would fail for every node).
    const badRules = beginCell().storeUint(c.OP.rootSetRules, 32).storeMaybeRef(beginCell().storeBit(1).endCell()).endCell();
    assert.equal((await send(net.operator, net.root, toNano("0.05"), badRules)).exit, c.ERR.cellUnderflow);
    assert.equal((await get(net.chain, net.root, "get_version")).readNumber(), 0);
  });
});

// TON's own SDK against a TON HTTP API: `node scripts/tonclient-check.mjs
// <api base URL> <root contract>` prints what @ton/ton's TonClient reads
// (the Rust test of the embedded devnet runs this and checks the output).
import { TonClient } from "@ton/ton";
import { Address, Dictionary } from "@ton/core";

const [base, rootText] = process.argv.slice(2);
const client = new TonClient({ endpoint: `${base}/jsonRPC` });
const root = Address.parse(rootText);
const state = await client.getContractState(root);
const version = await client.runMethod(root, "get_version");
const prices = await client.runMethod(root, "get_prices");
const transactions = await client.getTransactions(root, { limit: 5 });
const owner = (await client.runMethod(root, "get_owner")).stack.readAddress();
const pendingOwner = (await client.runMethod(root, "get_pending_owner")).stack.readAddressOpt();
// The trust lists: dictionaries keyed by 256-bit hashes.
const images = (await client.runMethod(root, "get_images")).stack;
const hashes = (cell) =>
  cell
    ? Dictionary.loadDirect(Dictionary.Keys.BigUint(256), Dictionary.Values.Bool(), cell)
        .keys()
        .map((k) => k.toString(16).padStart(64, "0"))
    : [];
const workerImages = hashes(images.readCellOpt());
const proxyImages = hashes(images.readCellOpt());
const models = (await client.runMethod(root, "get_models")).stack.readCellOpt();
const rulesStack = (await client.runMethod(root, "get_rules")).stack;
const rules = {
  requireConfiguration: rulesStack.readBoolean(),
  upstreamLoopbackOnly: rulesStack.readBoolean(),
  workerEngines: rulesStack.readCellOpt()?.beginParse().loadStringTail() ?? null,
};
const modelHashes = models
  ? Dictionary.loadDirect(Dictionary.Keys.BigUint(256), Dictionary.Values.Cell(), models)
      .keys()
      .map((k) => k.toString(16).padStart(64, "0"))
  : [];
console.log(
  JSON.stringify({
    state: state.state,
    balance: state.balance.toString(),
    version: version.stack.readNumber(),
    owner: owner.toRawString(),
    pendingOwner: pendingOwner?.toRawString() ?? null,
    workerImages,
    proxyImages,
    models: modelHashes,
    rules,
    pricePerToken: prices.stack.readBigNumber().toString(),
    transactions: transactions.length,
    deployedBy: transactions[0]?.inMessage?.info.src?.toString({ urlSafe: true, bounceable: false }) ?? null,
  }),
);

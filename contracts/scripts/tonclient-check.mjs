// TON's own SDK against a TON HTTP API: `node scripts/tonclient-check.mjs
// <api base URL> <root contract>` prints what @ton/ton's TonClient reads
// (the Rust test of the embedded devnet runs this and checks the output).
import { TonClient } from "@ton/ton";
import { Address } from "@ton/core";

const [base, rootText] = process.argv.slice(2);
const client = new TonClient({ endpoint: `${base}/jsonRPC` });
const root = Address.parse(rootText);
const state = await client.getContractState(root);
const version = await client.runMethod(root, "get_version");
const prices = await client.runMethod(root, "get_prices");
const transactions = await client.getTransactions(root, { limit: 5 });
console.log(
  JSON.stringify({
    state: state.state,
    balance: state.balance.toString(),
    version: version.stack.readNumber(),
    pricePerToken: prices.stack.readBigNumber().toString(),
    transactions: transactions.length,
    deployedBy: transactions[0]?.inMessage?.info.src?.toString({ urlSafe: true, bounceable: false }) ?? null,
  }),
);

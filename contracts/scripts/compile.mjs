// Compiles every contract in src/ with @ton/tolk-js and writes build/<name>.json
// ({ name, tolkVersion, codeBoc64, codeHashHex }). With --check, compiles and
// fails if any committed build/*.json differs (CI runs this).
import { runTolkCompiler } from "@ton/tolk-js";
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
export const CONTRACTS = ["root", "proxy", "client", "worker"];
const check = process.argv.includes("--check");

let failed = false;
for (const name of CONTRACTS) {
  const result = await runTolkCompiler({
    entrypointFileName: `${name}.tolk`,
    fsReadCallback: (path) => readFileSync(join(root, "src", path), "utf-8"),
  });
  if (result.status !== "ok") {
    console.error(`${name}.tolk: ${result.message}`);
    failed = true;
    continue;
  }
  const out = {
    name,
    tolkVersion: result.tolkVersion,
    codeBoc64: result.codeBoc64,
    codeHashHex: result.codeHashHex,
  };
  const path = join(root, "build", `${name}.json`);
  const text = JSON.stringify(out, null, 2) + "\n";
  if (check) {
    const committed = existsSync(path) ? readFileSync(path, "utf-8") : "";
    if (committed !== text) {
      console.error(`build/${name}.json is not what src/${name}.tolk compiles to (run npm run build and commit)`);
      failed = true;
    } else {
      console.log(`${name}: ${result.codeHashHex} (matches the committed build)`);
    }
  } else {
    writeFileSync(path, text);
    console.log(`${name}: ${result.codeHashHex}`);
  }
}
process.exit(failed ? 1 : 0);

// Shared by every node's page (served at /cocoon.js): nano-TON as TON text.
// `missing` is what a null or absent amount shows ("–" unless given).
function ton(nano, missing = "–") {
  if (nano == null) return missing;
  const n = BigInt(nano), whole = n / 1000000000n, frac = (n % 1000000000n).toString().padStart(9, "0").replace(/0+$/, "");
  return frac ? `${whole}.${frac}` : `${whole}`;
}

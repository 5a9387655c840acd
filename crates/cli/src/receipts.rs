//! `cocoon receipts FILE`: check a client node's receipts journal (every
//! receipt it paid for) and sum it per proxy contract, to compare with what
//! each proxy charged on chain.

use std::collections::BTreeMap;
use std::path::Path;

use cocoon_client::ReceiptJournal;

/// Sums of one proxy contract's receipts.
#[derive(Default)]
struct Sum {
    receipts: u64,
    nano: u128,
    prompt_tokens: u64,
    completion_tokens: u64,
}

/// Print the check; `Ok(false)` when a receipt does not verify.
pub fn check(file: &Path) -> anyhow::Result<bool> {
    let entries = ReceiptJournal::read(file)?;
    let mut sums: BTreeMap<String, Sum> = BTreeMap::new();
    let mut bad = 0;
    for (i, entry) in entries.iter().enumerate() {
        if let Err(e) = entry.verify().and_then(|()| entry.cost().map(|_| ())) {
            println!(
                "receipt {} ({}): REFUSED: {e}",
                i + 1,
                hex::encode(entry.receipt.request_id)
            );
            bad += 1;
            continue;
        }
        let sum = sums.entry(entry.proxy_contract.clone()).or_default();
        sum.receipts += 1;
        sum.nano += entry.cost().unwrap_or(0);
        sum.prompt_tokens += entry.receipt.usage.prompt_tokens;
        sum.completion_tokens += entry.receipt.usage.completion_tokens;
    }
    println!(
        "{}: {} receipts, {} verified, {bad} refused",
        file.display(),
        entries.len(),
        entries.len() - bad
    );
    for (proxy, sum) in &sums {
        println!(
            "proxy contract {proxy}: {} receipts, {} nano-TON, {} prompt + {} completion tokens",
            sum.receipts, sum.nano, sum.prompt_tokens, sum.completion_tokens
        );
    }
    Ok(bad == 0)
}

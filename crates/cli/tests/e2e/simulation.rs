//! The seeded simulation of the money path (`cocoon_devnet::simulation`):
//! a million requests with every kind of fault, the books balanced to the
//! nano-TON at the end, and a seed that replays its run exactly.

use cocoon_devnet::simulation::{simulate, SimOptions};

/// The CI run: 10^6 simulated requests (served or refused) across four
/// clients, two proxies and three workers, with cut answers, withdrawals
/// between settlements, proxy restarts, outages of the proxies' chain
/// access and foreign registrations; every invariant holds after every
/// step that touches the chain, and at the end every delivered token is
/// charged and every worker paid its share exactly.
#[tokio::test(flavor = "current_thread")]
async fn a_million_simulated_requests_balance_to_the_nano_ton() {
    let options = SimOptions {
        seed: 20_261_206,
        requests: 1_000_000,
        ..SimOptions::default()
    };
    let report = simulate(&options).await.unwrap_or_else(|e| panic!("{e}"));
    println!("{}", serde_json::to_string(&report).unwrap());
    assert_eq!(report.requests, 1_000_000);
    // Every kind of event happened, or the run proves less than it says.
    for (what, n) in [
        ("served", report.served),
        ("refused for lack of credit", report.refused),
        ("cut mid-stream", report.cut),
        ("settlement rounds", report.rounds),
        ("rounds failed in an outage", report.failed_rounds),
        ("claims", report.claims),
        ("proxy restarts", report.restarts),
        ("outages", report.outages),
        ("withdrawals", report.withdrawals),
        ("overdrafts refused", report.overdrafts_refused),
        ("top-ups", report.top_ups),
        (
            "foreign registrations refused",
            report.foreign_registrations_refused,
        ),
    ] {
        assert!(n > 0, "no {what} in the run: {report:?}");
    }
    assert!(report.charged_nano > 0 && report.workers_paid_nano > 0 && report.paid_out_nano > 0);
}

/// The same seed gives the same run, to the last counter and nano-TON.
#[tokio::test(flavor = "current_thread")]
async fn a_seed_replays_its_run_exactly() {
    let options = SimOptions {
        seed: 7,
        requests: 20_000,
        ..SimOptions::default()
    };
    let first = simulate(&options).await.unwrap_or_else(|e| panic!("{e}"));
    let second = simulate(&options).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first, second);
    let other = simulate(&SimOptions { seed: 8, ..options })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(first, other);
}

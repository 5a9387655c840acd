//! `cocoon worker doctor` on a network of real `cocoon` processes
//! ([`ProcessNet`]): the running worker's own config passes every step
//! (its evidence judged by the policy as the proxy judges it, the proxy
//! dialled with its key and keeping the connection, its payout wallet read
//! on chain); a key the proxy does not admit, an unreachable proxy and an
//! image the policy does not allow each fail the step that names them,
//! with what to fix, and the command exits non-zero.

use std::path::Path;
use std::time::Duration;

use cocoon_devnet::process_net::{free_port, ProcessNet, ProcessNetOptions};
use cocoon_worker::WorkerConfig;

use crate::wallet::{cocoon, text};

const BIN: &str = env!("CARGO_BIN_EXE_cocoon");

async fn doctor(config: &Path) -> (bool, String) {
    let out = cocoon(vec![
        "worker".into(),
        "doctor".into(),
        "--config".into(),
        config.display().to_string(),
    ])
    .await;
    (out.status.success(), text(&out))
}

/// The line of `step` in the doctor's output.
fn line<'a>(out: &'a str, step: &str) -> &'a str {
    out.lines()
        .find(|l| l.get(5..).is_some_and(|rest| rest.starts_with(step)))
        .unwrap_or_else(|| panic!("no {step:?} step in:\n{out}"))
}

#[tokio::test]
async fn the_doctor_passes_a_working_worker_and_names_what_is_wrong_with_others() {
    let mut net = ProcessNet::start(ProcessNetOptions::new(BIN.into(), "echo"))
        .await
        .expect("network starts");
    net.wait_ready(Duration::from_secs(60)).await.unwrap();
    let config = net.workers[0].node.config().to_path_buf();

    let (ok, out) = doctor(&config).await;
    assert!(ok, "{out}");
    assert!(
        line(&out, "evidence accepted by the policy").starts_with("ok"),
        "{out}"
    );
    assert!(line(&out, "proxy 127.0.0.1").starts_with("ok"), "{out}");
    assert!(line(&out, "payout wallet").starts_with("ok"), "{out}");
    assert!(line(&out, "TEE").starts_with("WARN"), "{out}");
    assert!(line(&out, "TEE").contains("SIMULATED"), "{out}");

    // Another key, which the proxy (pinning its workers) does not admit,
    // and a second proxy nobody listens for.
    let dir = net.dir.path().to_path_buf();
    let mut stranger = WorkerConfig::from_toml(&std::fs::read_to_string(&config).unwrap()).unwrap();
    stranger.identity_key = dir.join("stranger.pem");
    let mut dead = stranger.proxies[0].clone();
    dead.address = format!("127.0.0.1:{}", free_port().unwrap());
    stranger.proxies.push(dead.clone());
    let stranger_file = dir.join("stranger.toml");
    std::fs::write(&stranger_file, stranger.to_toml().unwrap()).unwrap();
    let (ok, out) = doctor(&stranger_file).await;
    assert!(!ok, "{out}");
    let refused = line(&out, &format!("proxy {}", stranger.proxies[0].address));
    assert!(
        refused.starts_with("FAIL") && refused.contains("does not admit"),
        "{out}"
    );
    assert!(out.contains("allowed_workers"), "{out}");
    let unreachable = line(&out, &format!("proxy {}", dead.address));
    assert!(
        unreachable.starts_with("FAIL") && unreachable.contains("cannot connect"),
        "{out}"
    );
    assert!(out.contains("step(s) failed"), "{out}");

    // A policy that does not list this worker's image.
    let mut other_image =
        WorkerConfig::from_toml(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let policy = dir.join("other-policy.toml");
    std::fs::write(
        &policy,
        format!(
            "allow_simulated = true\nworker_images = [\"{}\"]\nproxy_images = [\"{}\"]\n",
            "ab".repeat(32),
            cocoon_attestation::simulated::SimulatedTee::measurements().image_hash()
        ),
    )
    .unwrap();
    other_image.attestation.policy = Some(policy);
    let other_file = dir.join("other-image.toml");
    std::fs::write(&other_file, other_image.to_toml().unwrap()).unwrap();
    let (ok, out) = doctor(&other_file).await;
    assert!(!ok, "{out}");
    // The worker's own start refuses it first (its evidence checked against
    // its policy when its identity loads): the doctor names the image.
    assert!(
        out.lines().any(|l| l.starts_with("FAIL")
            && l.contains("attestation.policy")
            && l.contains("is not in the allowed worker images")),
        "{out}"
    );
    net.shutdown().await;
}

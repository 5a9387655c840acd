//! `cocoon attest verify` as an auditor runs it: the real binary on the real
//! recorded TDX quotes (shared/testdata/tdx), JSON out, exit status as verdict.

use std::path::PathBuf;
use std::process::{Command, Output};

fn testdata(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/tdx")
        .join(name)
        .display()
        .to_string()
}

fn attest(extra: &[&str]) -> Output {
    let quote = testdata("tdx_quote");
    let collateral = testdata("tdx_quote_collateral.json");
    let mut args = vec![
        "attest",
        "verify",
        "--quote",
        &quote,
        "--collateral",
        &collateral,
    ];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args(&args)
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn a_valid_quote_inside_its_window_is_accepted() {
    let out = attest(&["--at", "2025-06-20T00:00:00Z"]);
    assert!(out.status.success());
    let v = json(&out);
    assert_eq!(v["accepted"], true);
    assert_eq!(v["verdict"]["tcb_status"], "UpToDate");
    assert_eq!(v["verdict"]["image_hash"].as_str().unwrap().len(), 64);
}

#[test]
fn expired_collateral_and_policies_refuse_with_reasons() {
    let out = attest(&["--at", "2025-08-01T00:00:00Z"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(json(&out)["reason"].as_str().unwrap().contains("expired"));

    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!("worker_images = [\"{}\"]\n", "ab".repeat(32)),
    )
    .unwrap();
    let out = attest(&[
        "--at",
        "2025-06-20T00:00:00Z",
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(json(&out)["reason"]
        .as_str()
        .unwrap()
        .contains("not in the allowed worker images"));

    let image = json(&attest(&["--at", "2025-06-20T00:00:00Z"]))["verdict"]["image_hash"].clone();
    std::fs::write(&policy, format!("worker_images = [{image}]\n")).unwrap();
    // Allowed for workers, not for proxies.
    let out = attest(&[
        "--at",
        "2025-06-20T00:00:00Z",
        "--policy",
        policy.to_str().unwrap(),
        "--role",
        "proxy",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(json(&out)["reason"]
        .as_str()
        .unwrap()
        .contains("not in the allowed proxy images"));
    let out = attest(&[
        "--at",
        "2025-06-20T00:00:00Z",
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn bad_arguments_are_named() {
    let out = attest(&["--at", "yesterday"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--at"));

    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "allow_simulatd = true\n").unwrap();
    let out = attest(&["--policy", policy.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_simulatd"));
}

/// `cocoon attest show-cert` against a running devnet's proxy: its certificate
/// carries simulated evidence bound to its key; a production-like policy
/// refuses it, a development policy accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_cert_reads_a_running_nodes_evidence() {
    let net = cocoon_devnet::Devnet::start(cocoon_devnet::DevnetOptions::instant("echo"))
        .await
        .unwrap();
    let addr = net.proxy_addr().to_string();
    let show = |extra: Vec<String>| {
        let addr = addr.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                Command::new(env!("CARGO_BIN_EXE_cocoon"))
                    .args(["attest", "show-cert", &addr])
                    .args(extra)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let out = show(vec![]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["evidence"], "simulated");
    assert_eq!(v["key_bound"], true);
    assert_eq!(v["key"], net.proxy().fingerprint.to_string());
    // What the proxy was told to do, bound by the same evidence.
    assert_eq!(v["configuration"]["role"], "proxy", "{v}");
    assert_eq!(v["configuration"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["configuration"]["policy_sha256"].is_string(), "{v}");

    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("production.toml");
    let image = cocoon_attestation::simulated::SimulatedTee::measurements().image_hash();
    std::fs::write(&policy, format!("proxy_images = [\"{image}\"]\n")).unwrap();
    let out = show(vec!["--policy".into(), policy.display().to_string()]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(json(&out)["reason"].as_str().unwrap().contains("simulated"));

    std::fs::write(
        &policy,
        format!("allow_simulated = true\nproxy_images = [\"{image}\"]\n"),
    )
    .unwrap();
    // The policy requires fresh evidence: dating it needs the chain.
    let out = show(vec!["--policy".into(), policy.display().to_string()]).await;
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert!(v["reason"].as_str().unwrap().contains("--ton-api"), "{v}");
    // The certificate's evidence binds a block of the devnet's chain, made
    // moments ago (looked up through its TON HTTP API).
    let out = show(vec![
        "--policy".into(),
        policy.display().to_string(),
        "--ton-api".into(),
        net.ton_api_url.clone(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v = json(&out);
    assert!(v["anchor"]["seqno"].as_u64().unwrap() > 0, "{v}");
    assert!(v["anchor"]["age_secs"].as_u64().unwrap() < 600, "{v}");
    assert!(v["verdict"]["report_data"].is_string(), "{v}");
    net.shutdown().await;
}

/// `cocoon attest verify-gpu` on real recorded H100 evidence: NVIDIA's older
/// sample passes against the shared RIMs; the shared report (another
/// driver) is refused naming the versions; another nonce is refused; a bad
/// `--nonce` is named.
#[test]
fn verify_gpu_judges_recorded_h100_evidence() {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/nvidia");
    let older =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../attestation/testdata/nvidia-older");
    let run = |report: PathBuf, certs: PathBuf, nonce: &str| {
        Command::new(env!("CARGO_BIN_EXE_cocoon"))
            .args(["attest", "verify-gpu", "--report"])
            .arg(report)
            .arg("--certs")
            .arg(certs)
            .arg("--rims")
            .arg(&shared)
            .args(["--nonce", nonce, "--at", "2024-06-01T00:00:00Z"])
            .output()
            .unwrap()
    };
    let older_nonce = "4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e";
    let out = run(
        older.join("attestationReport.txt"),
        older.join("gpuAkCertChain.txt"),
        older_nonce,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v = json(&out);
    assert_eq!(v["verdict"]["driver_version"], "545.00");
    assert_eq!(v["verdict"]["measurements_checked"], 33);

    let out = run(
        shared.join("hopperAttestationReport.txt"),
        shared.join("hopperCertChain.txt"),
        "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb",
    );
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(v["refusal"]["Version"]["reported"], "550.90.07", "{v}");

    let mut other = older_nonce.to_string();
    other.replace_range(0..2, "00");
    let out = run(
        older.join("attestationReport.txt"),
        older.join("gpuAkCertChain.txt"),
        &other,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(json(&out)["reason"].as_str().unwrap().contains("nonce"));

    let out = run(
        older.join("attestationReport.txt"),
        older.join("gpuAkCertChain.txt"),
        "abc",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--nonce"));
}

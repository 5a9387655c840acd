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
        format!("allowed_images = [\"{}\"]\n", "ab".repeat(32)),
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
        .contains("not in the allowed list"));

    let image = json(&attest(&["--at", "2025-06-20T00:00:00Z"]))["verdict"]["image_hash"].clone();
    std::fs::write(&policy, format!("allowed_images = [{image}]\n")).unwrap();
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

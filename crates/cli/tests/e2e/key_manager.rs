//! A proxy's lasting key from a key manager (docs/key-manager.md), with
//! simulated TEEs and evidence dated by an embedded chain's TON HTTP API:
//! the owner authorizes the key with `cocoon key-manager authorize`, the
//! proxy gets the same key at every start (never in a file), also from a
//! key manager that replicated the first; a lone key manager restarts
//! from its sealed state with the same keys, and refuses a sealed state
//! that was altered; an authorization for another role is refused at
//! start, naming the key.

use std::path::Path;
use std::process::Command;

use cocoon_key_manager::config::{start, KeyManagerConfig};
use cocoon_proxy::{ProxyConfig, ProxyNode};

const BIN: &str = env!("CARGO_BIN_EXE_cocoon");

fn authorize(dir: &Path, role: &str, out: &str) -> std::process::Output {
    Command::new(BIN)
        .args(["key-manager", "authorize", "--mnemonic"])
        .arg(dir.join("owner.words"))
        .args(["--role", role, "--name", "eu-1", "--out"])
        .arg(dir.join(out))
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_gets_the_same_key_at_every_start_from_a_key_manager_and_its_replica() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ton_api = cocoon_devnet::kit::embedded_chain_api().await;
    let image = cocoon_attestation::simulated::SimulatedTee::measurements().image_hash();
    let policy = d.join("policy.toml");
    std::fs::write(
        &policy,
        format!("allow_simulated = true\nproxy_images = [\"{image}\"]\nworker_images = [\"{image}\"]\nkey_manager_images = [\"{image}\"]\n"),
    )
    .unwrap();
    let attestation = format!(
        "[attestation]\ntee = \"simulated\"\npolicy = \"{}\"\nton_api = \"{ton_api}\"\n",
        policy.display()
    );

    // The owner's wallet and authorizations (bad input named first).
    let mnemonic = cocoon_chain::mnemonic::Mnemonic::generate().unwrap();
    std::fs::write(d.join("owner.words"), mnemonic.phrase()).unwrap();
    let bad = Command::new(BIN)
        .args(["key-manager", "authorize", "--mnemonic"])
        .arg(d.join("owner.words"))
        .args([
            "--role",
            "proxy",
            "--name",
            "x",
            "--purpose",
            "everything",
            "--out",
        ])
        .arg(d.join("bad.json"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--purpose"));
    assert!(authorize(d, "proxy", "proxy.json").status.success());
    assert!(authorize(d, "worker", "worker.json").status.success());

    let km = start(
        KeyManagerConfig::from_toml(&format!(
            "profile = \"development\"\nlisten = \"127.0.0.1:0\"\nbootstrap = true\n{attestation}"
        ))
        .unwrap(),
    )
    .await
    .unwrap();
    let proxy_config = |km: std::net::SocketAddr, authorization: &str| {
        ProxyConfig::from_toml(&format!(
            "profile = \"development\"\nlisten = \"127.0.0.1:0\"\nidentity_key = \"{}\"\nallowed_clients = []\nallowed_workers = []\n{attestation}key_manager = \"{km}\"\nkey_authorization = \"{}\"\n",
            d.join("proxy.pem").display(),
            d.join(authorization).display()
        ))
        .unwrap()
    };
    let fingerprint = |km, authorization: &'static str| {
        let config = proxy_config(km, authorization);
        async move {
            let node = ProxyNode::from_config(config).await?;
            let key = node.handle.fingerprint;
            node.stop().await;
            Ok::<_, cocoon_protocol::ConfigError>(key)
        }
    };
    let first = fingerprint(km.address, "proxy.json").await.unwrap();
    let again = fingerprint(km.address, "proxy.json").await.unwrap();
    assert_eq!(first, again, "the same key after a restart");
    assert!(!d.join("proxy.pem").exists(), "the key is never in a file");

    // A second key manager replicates the first's master secret.
    let replica = start(
        KeyManagerConfig::from_toml(&format!(
            "profile = \"development\"\nlisten = \"127.0.0.1:0\"\nreplicate_from = \"{}\"\n{attestation}",
            km.address
        ))
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        fingerprint(replica.address, "proxy.json").await.unwrap(),
        first
    );

    // A lone key manager keeps its master secret sealed to its TEE (the
    // simulated one's sealing key: development only) and restarts with it.
    let sealed = d.join("km.sealed");
    let lone_config = || {
        KeyManagerConfig::from_toml(&format!(
            "profile = \"development\"\nlisten = \"127.0.0.1:0\"\nbootstrap = true\nsealed_state = \"{}\"\n{attestation}",
            sealed.display()
        ))
        .unwrap()
    };
    let lone = start(lone_config()).await.unwrap();
    let lone_key = fingerprint(lone.address, "proxy.json").await.unwrap();
    assert_ne!(lone_key, first, "a new master secret");
    lone.stop();
    assert!(sealed.exists());
    let restarted = start(lone_config()).await.unwrap();
    assert_eq!(
        fingerprint(restarted.address, "proxy.json").await.unwrap(),
        lone_key,
        "the same keys after a restart from the sealed state"
    );
    restarted.stop();
    // The host alters the sealed state: the key manager does not start
    // (and does not make a new master secret over it).
    let mut bytes = std::fs::read(&sealed).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&sealed, &bytes).unwrap();
    let err = start(lone_config()).await.err().expect("refused");
    assert_eq!(err.field, "sealed_state", "{err}");
    assert!(err.message.contains("does not open"), "{err}");

    // The owner's authorization for a worker's key does not make a proxy's.
    let err = fingerprint(km.address, "worker.json").await.unwrap_err();
    assert_eq!(err.field, "attestation.key_authorization", "{err}");
    km.stop();
    replica.stop();
}

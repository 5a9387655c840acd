//! The real `cocoon` binary: help, config validation, and the three roles run as
//! separate processes from TOML files, answering a request together.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_cocoon");

fn cocoon(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn help_lists_every_subcommand() {
    let out = cocoon(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in [
        "devnet", "client", "proxy", "worker", "keygen", "engine", "bench",
    ] {
        assert!(text.contains(sub), "--help lacks {sub}: {text}");
    }
    for sub in ["devnet", "client", "proxy", "worker", "bench"] {
        assert!(cocoon(&[sub, "--help"]).status.success(), "{sub} --help");
    }
}

/// `cocoon simulate`: one line per seed with its report; bad counts named.
#[test]
fn simulate_runs_each_seed_and_names_bad_flags() {
    let out = cocoon(&[
        "simulate",
        "--requests",
        "2000",
        "--seed",
        "3",
        "--seeds",
        "2",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("seed 3: ok") && text.contains("seed 4: ok"),
        "{text}"
    );
    assert!(text.contains("\"requests\":2000"), "{text}");
    let out = cocoon(&["simulate", "--proxies", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--proxies"));
}

#[test]
fn bench_routing_prints_a_row_per_worker_count_and_names_bad_flags() {
    let out = cocoon(&["bench-routing", "--workers", "10,200", "--iterations", "20"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("10 ") || l.trim_start().starts_with("200 "))
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    let out = cocoon(&["bench-routing", "--workers", "ten"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--workers"));
}

#[test]
fn bench_load_runs_a_proxy_process_under_load_and_prints_its_row() {
    let out = cocoon(&[
        "bench-load",
        "--workers",
        "3",
        "--clients",
        "2",
        "--concurrency",
        "4",
        "--requests",
        "40",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("3 "))
        .unwrap_or_else(|| panic!("no row for 3 workers: {text}"));
    // Every request answered; the proxy's memory was read from /proc.
    assert!(row.trim_end().ends_with(" 0"), "{row}");
    assert!(row.contains("idle") && !row.contains(" 0 idle"), "{row}");
    let out = cocoon(&["bench-load", "--workers", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--workers"));
}

#[test]
fn soak_runs_for_its_time_and_checks_the_money() {
    let out = cocoon(&[
        "soak",
        "--seconds",
        "2",
        "--workers",
        "3",
        "--concurrency",
        "4",
        "--cut-percent",
        "20",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("errors 0"), "{text}");
    // Some answers were cut mid-stream, and their billing checked too.
    assert!(!text.contains(" 0 cut"), "{text}");
    // Each node is its own process, its memory read from /proc.
    for node in ["proxy-0: ", "client: ", "workers (3): max "] {
        assert!(text.contains(&format!("peak memory {node}")), "{text}");
    }
    assert!(!text.contains("? MiB"), "{text}");
    assert!(text.contains("money checks: PASS"), "{text}");
}

#[test]
fn example_configs_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let read = |name: &str| std::fs::read_to_string(root.join(name)).unwrap();
    cocoon_proxy::ProxyConfig::from_toml(&read("proxy.example.toml")).unwrap();
    cocoon_worker::WorkerConfig::from_toml(&read("worker.example.toml")).unwrap();
    cocoon_client::ClientConfig::from_toml(&read("client.example.toml")).unwrap();
    let root: cocoon_attestation::Policy = toml::from_str(&read("root.example.toml")).unwrap();
    assert!(!root.allow_simulated && root.models.len() == 1);
}

#[test]
fn bad_config_fails_fast_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("worker.toml");
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/worker.example.toml"),
    )
    .unwrap();
    std::fs::write(
        &path,
        example.replace("max_sequences = 8", "max_sequences = 0"),
    )
    .unwrap();
    let out = cocoon(&["worker", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("engine.max_sequences"), "{err}");

    // Production never runs unverified: a client node without a policy (it
    // would seal prompts to whatever keys a proxy lists), a proxy without TDX.
    let client = dir.path().join("client.toml");
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/client.example.toml"),
    )
    .unwrap();
    let start = example.find("[attestation]").unwrap();
    let end = start + example[start..].find("\n\n").unwrap();
    std::fs::write(&client, format!("{}{}", &example[..start], &example[end..])).unwrap();
    let out = cocoon(&["client", "--config", client.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("attestation.policy") && err.contains("production"),
        "{err}"
    );
    let proxy = dir.path().join("proxy.toml");
    let policy = dir.path().join("root.toml");
    std::fs::write(&policy, "").unwrap();
    std::fs::write(
        &proxy,
        format!(
            "listen = \"127.0.0.1:9\"\nallowed_clients = []\nallowed_workers = []\nidentity_key = \"{}\"\n[attestation]\ntee = \"none\"\npolicy = \"{}\"\n",
            dir.path().join("p.pem").display(),
            policy.display()
        ),
    )
    .unwrap();
    let out = cocoon(&["proxy", "--config", proxy.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("attestation.tee") && err.contains("TDX guest"),
        "{err}"
    );

    let out = cocoon(&["proxy", "--config", "/nonexistent/proxy.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/proxy.toml"));
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    cocoon_devnet::process_net::free_port().unwrap()
}

fn keygen(path: &Path) -> String {
    let out = cocoon(&["keygen", "--out", path.to_str().unwrap()]);
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn three_processes_from_config_files_answer_a_request() {
    three_processes(false).await;
}

/// The same with `[attestation]`: each process has a simulated TEE and checks
/// the others' evidence under a development policy (RA-TLS on both hops).
#[tokio::test]
async fn three_processes_with_simulated_ra_tls_answer_a_request() {
    three_processes(true).await;
}

async fn three_processes(attested: bool) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (profile, attestation) = if attested {
        // The nodes date their evidence by a chain's blocks: an embedded
        // chain's TON HTTP API, as `attestation.ton_api`.
        let ton_api = cocoon_devnet::kit::embedded_chain_api().await;
        let policy = d.join("dev-policy.toml");
        std::fs::write(
            &policy,
            format!(
                "allow_simulated = true\nworker_images = [\"{image}\"]\nproxy_images = [\"{image}\"]\n",
                image = cocoon_attestation::simulated::SimulatedTee::measurements().image_hash()
            ),
        )
        .unwrap();
        (
            "profile = \"development\"\n".to_string(),
            format!(
                "[attestation]\ntee = \"simulated\"\npolicy = \"{}\"\nton_api = \"{ton_api}\"\n",
                policy.display()
            ),
        )
    } else {
        // Key pins only: development, announced loudly by every node.
        ("profile = \"development\"\n".to_string(), String::new())
    };
    let (proxy_key, worker_key, client_key) = (
        keygen(&d.join("p.pem")),
        keygen(&d.join("w.pem")),
        keygen(&d.join("c.pem")),
    );
    let (proxy_port, api_port) = (free_port(), free_port());
    let (proxy_status, worker_status) = (free_port(), free_port());
    std::fs::write(
        d.join("proxy.toml"),
        format!(
            "{profile}listen = \"127.0.0.1:{proxy_port}\"\nstatus_listen = \"127.0.0.1:{proxy_status}\"\nidentity_key = \"{}\"\nallowed_clients = [\"{client_key}\"]\nallowed_workers = [\"{worker_key}\"]\n{attestation}",
            d.join("p.pem").display()
        ),
    )
    .unwrap();
    let proxies = format!(
        "[[proxies]]\naddress = \"127.0.0.1:{proxy_port}\"\nfingerprint = \"{proxy_key}\"\n"
    );
    std::fs::write(
        d.join("worker.toml"),
        format!(
            "profile = \"development\"\nstatus_listen = \"127.0.0.1:{worker_status}\"\nidentity_key = \"{}\"\n{proxies}[engine]\nkind = \"instant\"\nmodel = \"echo\"\n{attestation}",
            d.join("w.pem").display()
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("client.toml"),
        format!(
            "{profile}listen = \"127.0.0.1:{api_port}\"\nidentity_key = \"{}\"\n{proxies}{attestation}",
            d.join("c.pem").display()
        ),
    )
    .unwrap();
    let spawn = |role: &str| {
        Killed(
            Command::new(BIN)
                .args([
                    role,
                    "--config",
                    d.join(format!("{role}.toml")).to_str().unwrap(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let _proxy = spawn("proxy");
    let _worker = spawn("worker");
    let _client = spawn("client");

    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{api_port}/v1/chat/completions");
    let body = serde_json::json!({"model": "echo", "messages": [{"role": "user", "content": "hello from a process"}]});
    let mut last = String::new();
    for _ in 0..300 {
        if let Ok(resp) = http.post(&url).json(&body).send().await {
            let status = resp.status();
            last = resp.text().await.unwrap_or_default();
            if status == 200 {
                let answer: serde_json::Value = serde_json::from_str(&last).unwrap();
                assert_eq!(
                    answer["choices"][0]["message"]["content"],
                    "hello from a process"
                );
                // The proxy's and the worker's operator endpoints saw it.
                for (port, role) in [(proxy_status, "proxy"), (worker_status, "worker")] {
                    let base = format!("http://127.0.0.1:{port}");
                    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
                    assert_eq!(ready.status(), 200, "{role} not ready");
                    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap();
                    let metrics = metrics.text().await.unwrap();
                    let line = format!(
                        r#"cocoon_requests_total{{role="{role}",model="echo",outcome="ok"}} 1"#
                    );
                    assert!(metrics.contains(&line), "{role}: {metrics}");
                }
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the three processes never answered; last response: {last}");
}

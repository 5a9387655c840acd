use super::*;

const FP: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

fn config(engine: &str, extra: &str) -> String {
    format!(
        r#"{extra}
identity_key = "/tmp/w.pem"
[[proxies]]
address = "127.0.0.1:9100"
fingerprint = "{FP}"
[engine]
{engine}
"#
    )
}

const HTTP: &str = "kind = \"openai-http\"\nbase_url = \"http://127.0.0.1:8000/v1\"\nmodel = \"m\"";
const INSTANT: &str = "kind = \"instant\"\nmodel = \"m\"";

#[test]
fn openai_http_in_production_is_fine() {
    let c = WorkerConfig::from_toml(&config(HTTP, "")).unwrap();
    assert_eq!(c.profile, Profile::Production);
    assert!(c.engine.build().is_ok());
}

/// The GPU owner points the engine at a server on the host, which would
/// read every prompt: refused at start in production, naming the key (and
/// by every verifier, through the configuration the evidence binds).
#[test]
fn an_openai_http_engine_outside_the_vm_is_refused_in_production() {
    let remote = HTTP.replace("127.0.0.1", "10.0.0.7");
    let err = WorkerConfig::from_toml(&config(&remote, ""))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("engine.base_url") && err.contains("measured VM"),
        "{err}"
    );
    WorkerConfig::from_toml(&config(&remote, "profile = \"development\"")).unwrap();
    let local = HTTP.replace("127.0.0.1", "localhost");
    WorkerConfig::from_toml(&config(&local, "")).unwrap();
}

/// An `openai-http` worker names the directory its upstream loads the model
/// from: hashed at start into the weights hash it announces.
#[test]
fn an_openai_http_model_directory_is_hashed_into_its_offer() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.safetensors"), "weights").unwrap();
    let with_dir = format!(
        "{HTTP}\nweights_dir = {:?}",
        dir.path().display().to_string()
    );
    let c = WorkerConfig::from_toml(&config(&with_dir, "")).unwrap();
    let offer = &c.engine.build().unwrap().models()[0];
    assert_eq!(
        offer.weights_sha256.as_deref(),
        Some(
            cocoon_inference::model_hash::sha256_dir_manifest(dir.path())
                .unwrap()
                .as_str()
        )
    );
    let missing = format!("{HTTP}\nweights_dir = \"/no/such/dir\"");
    let err = WorkerConfig::from_toml(&config(&missing, ""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("engine.weights_dir"), "{err}");
}

#[test]
fn instant_engine_is_refused_in_production() {
    let err = WorkerConfig::from_toml(&config(INSTANT, ""))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("engine.kind") && err.contains("development"),
        "{err}"
    );
    WorkerConfig::from_toml(&config(INSTANT, "profile = \"development\"")).unwrap();
}

fn tiny_model() -> std::path::PathBuf {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cocoon-worker-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tiny.gguf");
        cocoon_inference::tiny_model::write_model(
            &path,
            cocoon_inference::tiny_model::ModelShape::TINY,
            3,
        )
        .unwrap();
        path
    })
    .clone()
}

#[test]
fn embedded_engine_loads_a_gguf_file_and_announces_its_hash() {
    let path = tiny_model();
    let engine = format!(
        "kind = \"embedded\"\nmodel = \"tiny\"\npath = {:?}\nmax_sequences = 3\ncontext_tokens = 128",
        path.display().to_string()
    );
    let c = WorkerConfig::from_toml(&config(&engine, "")).unwrap();
    let built = c.engine.build().unwrap();
    let offer = &built.models()[0];
    assert_eq!(offer.max_concurrent, 3);
    let expected = cocoon_inference::model_hash::sha256_file(&path, |_, _| {}).unwrap();
    assert_eq!(offer.weights_sha256.as_deref(), Some(expected.as_str()));
}

#[test]
fn embedded_engine_errors_name_the_field() {
    let path = format!("{:?}", tiny_model().display().to_string());
    let base = "kind = \"embedded\"\nmodel = \"tiny\"";
    let cases = [
        (base.to_string(), "engine.path is missing"),
        (
            format!("{base}\npath = \"/nonexistent/m.gguf\""),
            "engine.path",
        ),
        (
            format!("{base}\nstore_model = \"nope\"\nstore_dir = \"/nonexistent\""),
            "engine.store_model",
        ),
        (
            format!("{base}\npath = {path}\nstore_model = \"x\""),
            "not both",
        ),
        (
            format!("{base}\npath = {path}\nmax_sequences = 0"),
            "engine.max_sequences",
        ),
        (
            format!("{base}\npath = {path}\nmax_sequences = 64\nbatch_tokens = 8"),
            "engine.batch_tokens",
        ),
        (format!("{base}\npath = {path}\ncolour = 1"), "colour"),
        (
            format!("{base}\npath = {path}\nthreads = \"all\""),
            "engine.threads",
        ),
    ];
    for (engine, needle) in cases {
        let err = WorkerConfig::from_toml(&config(&engine, ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "error does not name {needle}: {err}");
    }
}

#[test]
fn errors_name_the_field() {
    let cases = [
        (config(HTTP, "colour = 1"), "colour"),
        (
            config(&HTTP.replace("http://127", "ftp://127"), ""),
            "engine.base_url",
        ),
        (
            config(&format!("{HTTP}\nmax_concurrent = 0"), ""),
            "engine.max_concurrent",
        ),
        (config(&HTTP.replace("openai-http", "magic"), ""), "magic"),
        (
            config(HTTP, "").replace("127.0.0.1:9100", "nowhere"),
            "proxies[0].address",
        ),
        (config(HTTP, "").replace(FP, "sha256:12"), "fingerprint"),
        (config(HTTP, "keepalive_secs = 0"), "keepalive_secs"),
        (
            config(HTTP, "connect_timeout_secs = 0"),
            "connect_timeout_secs",
        ),
        (
            config(
                &format!("{HTTP}\napi_key_env = \"COCOON_TEST_SURELY_UNSET\""),
                "",
            ),
            "api_key_env",
        ),
        (
            config(
                &format!("{INSTANT}\nmax_concurrent = \"x\""),
                "profile = \"development\"",
            ),
            "max_concurrent",
        ),
        (
            format!(
                "{}\n[payout]\nton_api = \"testnet\"\nton_api_agree = [\"mainnet\", \"ftp://x\"]\nwallet_mnemonic = \"/tmp/w.words\"\nearnings = \"/tmp/e.json\"\n",
                config(HTTP, "")
            ),
            "payout.ton_api_agree[1]",
        ),
        (
            format!(
                "{}\n[payout]\nton_api = \"testnet\"\nton_api_agree = [\"testnet\"]\nwallet_mnemonic = \"/tmp/w.words\"\nearnings = \"/tmp/e.json\"\n",
                config(HTTP, "")
            ),
            "payout.ton_api_agree[0]",
        ),
    ];
    for (text, field) in cases {
        let err = WorkerConfig::from_toml(&text).unwrap_err().to_string();
        assert!(
            err.contains(field),
            "error for {field} does not name it: {err}"
        );
    }
}

#[test]
fn configs_survive_a_round_trip_through_to_toml() {
    let payout = "[payout]\nton_api = \"testnet\"\nwallet_mnemonic = \"/tmp/w.words\"\nearnings = \"/tmp/e.json\"\n";
    let http = format!(
        "{HTTP}\nupstream_model = \"Qwen/Qwen2.5\"\napi_key_env = \"PATH\"\nmax_concurrent = 3\n{payout}"
    );
    for (engine, extra) in [
        (http.as_str(), ""),
        (
            INSTANT,
            "profile = \"development\"\nprice_coefficient = 800",
        ),
    ] {
        let c = WorkerConfig::from_toml(&config(engine, extra)).unwrap();
        let written = c.to_toml().unwrap();
        let again = WorkerConfig::from_toml(&written).unwrap();
        assert_eq!(again.to_toml().unwrap(), written, "{written}");
        assert_eq!(format!("{:?}", again.engine), format!("{:?}", c.engine));
        assert_eq!(again.price_coefficient, c.price_coefficient);
    }
}

/// The admin endpoints are served on `status_listen`; the token file is
/// made (0600) at the first start and read back after.
#[test]
fn the_admin_token_needs_status_listen_and_is_made_once() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    let alone = format!("admin_token_file = {:?}", token.display().to_string());
    let err = WorkerConfig::from_toml(&config(HTTP, &alone)).unwrap_err();
    assert!(
        err.to_string().contains("admin_token_file") && err.to_string().contains("status_listen"),
        "{err}"
    );
    let with_status =
        format!("profile = \"development\"\n{alone}\nstatus_listen = \"127.0.0.1:0\"");
    let mut c = WorkerConfig::from_toml(&config(HTTP, &with_status)).unwrap();
    c.identity_key = dir.path().join("w.pem");
    let settings = c.clone().into_settings().unwrap();
    assert!(settings.admin_token.is_some());
    let made = std::fs::read_to_string(&token).unwrap();
    assert_eq!(made.len(), 64);
    c.into_settings().unwrap();
    assert_eq!(std::fs::read_to_string(&token).unwrap(), made);
}

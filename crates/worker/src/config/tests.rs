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
    ];
    for (text, field) in cases {
        let err = WorkerConfig::from_toml(&text).unwrap_err().to_string();
        assert!(
            err.contains(field),
            "error for {field} does not name it: {err}"
        );
    }
}
